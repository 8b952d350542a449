"""Where cached responses are kept: an interface, and a bounded in-memory backend with a TTL.

    cache = MemoryCache(max_entries=10_000, max_bytes=64 << 20)
    await cache.set("key", b"...", ttl_s=3600)
    value = await cache.get("key")          # None when absent or expired

The gateway's response cache decides what is cached under which key; a backend only stores bytes.
A backend that cannot answer (a remote store that is down or slow) answers None and drops the
write: a cache outage costs hits, never a request.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

__all__ = ["CacheBackend", "MemoryCache"]


class CacheBackend(Protocol):
    """Bytes by key, each with a time to live."""

    async def get(self, key: str) -> bytes | None:
        """The value, or None when absent, expired or unreachable."""
        ...

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        """Store `value` for `ttl_s` seconds (best effort)."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


class MemoryCache:
    """Least-recently-used entries in this process, bounded by count and by total bytes."""

    def __init__(
        self, *, max_entries: int = 10_000, max_bytes: int = 64 * 1024 * 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size_bytes(self) -> int:
        """Bytes held in values."""
        return self._bytes

    async def get(self, key: str) -> bytes | None:
        """The value if present and not expired (and mark it recently used)."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, value = entry
        if self._clock() >= expires:
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return value

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        """Store, evicting the least recently used entries beyond the bounds; a value over max_bytes is not kept."""
        if key in self._entries:
            self._drop(key)
        if len(value) > self.max_bytes:
            return
        self._entries[key] = (self._clock() + ttl_s, value)
        self._bytes += len(value)
        while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
            self._drop(next(iter(self._entries)))

    async def aclose(self) -> None:
        """Nothing to release."""

    def _drop(self, key: str) -> None:
        _, value = self._entries.pop(key)
        self._bytes -= len(value)
