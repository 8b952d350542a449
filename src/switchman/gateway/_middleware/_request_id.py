"""Every request's id: the client's X-Request-Id (or X-Switchman-Request-Id) when it is sane, else a new one.

The id is echoed in `x-switchman-request-id` and names the request's ledger row. A new id is 32 hex
characters from os.urandom (what uuid4().hex carries, without building a UUID object per request).
"""

from __future__ import annotations

import os

__all__ = ["INBOUND_ID_HEADERS", "REQUEST_ID_HEADER", "new_request_id", "sane_request_id"]

REQUEST_ID_HEADER = b"x-switchman-request-id"
#: The request headers a client's own id may come in (the first sane one counts).
INBOUND_ID_HEADERS = frozenset({b"x-request-id", REQUEST_ID_HEADER})
_SANE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")


def new_request_id() -> str:
    """A fresh random id, 32 lowercase hex characters."""
    return os.urandom(16).hex()


def sane_request_id(value: bytes) -> bool:
    """Whether a client's id may be used as ours: 1-64 characters of letters, digits, `.`, `_` and `-`."""
    return 0 < len(value) <= 64 and _SANE.issuperset(value)
