"""Whether a host is this machine's own: what decides that the gateway and dashboard may run without keys, and
which upstreams count as local (a local model server switchman may manage, a self-hosted LiteLLM entry)."""

from __future__ import annotations

import ipaddress

__all__ = ["is_loopback"]


def is_loopback(host: str) -> bool:
    """Whether `host` (a name, an IP address, an IPv6 one in brackets or not) reaches this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
