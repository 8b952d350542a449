"""Every request's id: the client's X-Request-Id (or X-Switchman-Request-Id) when it is sane, else a new one.

The id is echoed in `x-switchman-request-id` and names the request's ledger row. A new id is 32 hex
characters from os.urandom (what uuid4().hex carries, without building a UUID object per request).
The random bytes are read 64 ids at a time: `os.urandom` releases the GIL for its system call, and
on a busy gateway the event loop then waits for the ledger writer thread to hand it back (up to the
switch interval) on every request.
"""

from __future__ import annotations

import os
import threading

__all__ = ["INBOUND_ID_HEADERS", "REQUEST_ID_HEADER", "new_request_id", "sane_request_id"]

REQUEST_ID_HEADER = b"x-switchman-request-id"
#: The request headers a client's own id may come in (the first sane one counts).
INBOUND_ID_HEADERS = frozenset({b"x-request-id", REQUEST_ID_HEADER})
_SANE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")


_BATCH = 64


class _RandomIds:
    """32-hex-character ids cut from one os.urandom read per `_BATCH` ids (thread-safe: each id once)."""

    __slots__ = ("_ids", "_lock")

    def __init__(self) -> None:
        self._ids: list[str] = []
        self._lock = threading.Lock()

    def __call__(self) -> str:
        with self._lock:
            if not self._ids:
                block = os.urandom(16 * _BATCH).hex()
                self._ids = [block[i:i + 32] for i in range(0, 32 * _BATCH, 32)]
            return self._ids.pop()

    def forget(self) -> None:
        """Drop the ids cut so far (a forked child must not hand out its parent's)."""
        self._ids = []
        self._lock = threading.Lock()


_random_ids = _RandomIds()
os.register_at_fork(after_in_child=_random_ids.forget)


def new_request_id() -> str:
    """A fresh random id, 32 lowercase hex characters."""
    return _random_ids()


def sane_request_id(value: bytes) -> bool:
    """Whether a client's id may be used as ours: 1-64 characters of letters, digits, `.`, `_` and `-`."""
    return 0 < len(value) <= 64 and _SANE.issuperset(value)
