"""`is_loopback`, the one check the gateway, the dashboard, the local model tier and the LiteLLM import share."""

from __future__ import annotations

import pytest

from switchman._hosts import is_loopback


@pytest.mark.parametrize(("host", "loopback"), [
    ("localhost", True), ("127.0.0.1", True), ("127.8.0.2", True), ("::1", True), ("[::1]", True),
    ("0.0.0.0", False), ("::", False), ("10.0.0.1", False), ("example.com", False), ("", False),
    ("localhost.example.com", False),
])
def test_only_this_machines_own_addresses_are_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
