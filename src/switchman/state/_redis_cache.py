"""A cache backend on Redis (redis-py's asyncio client with the hiredis parser), shared by every replica.

    cache = RedisCache("redis://127.0.0.1:6379/0", prefix="switchman:cache:", timeout_s=0.1)

Every call is bounded by `timeout_s` and never retried: a slow or absent Redis is a miss, and a
failed write is dropped. After a failure Redis is left alone for `pause_s` (one log line when it
goes, one when it is back), so an outage costs no request more than one timeout.
Entries expire after their TTL; total memory is bounded by the server's `maxmemory` policy.
Every call is one key's GET or SET, so a Redis Cluster (`redis+cluster://`) spreads entries over
its primaries by key.
The client is opened on first use, in the event loop that serves requests.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from .._exceptions import ConfigError
from ._redis_client import async_client, failures, shown_redis_url

__all__ = ["RedisCache"]

logger = logging.getLogger("switchman.state")

T = TypeVar("T")


class RedisCache:
    """Cache entries in Redis under a key prefix."""

    def __init__(
        self, url: str, *, prefix: str = "switchman:cache:", timeout_s: float = 0.1, pause_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        try:
            import redis.asyncio  # noqa: F401  (fail at startup, not at the first request)
        except ImportError:
            raise ConfigError("cache backend 'redis' needs the redis client: pip install 'switchman[redis]'") from None
        self.url = url
        self.display_url = shown_redis_url(url)  # what its log lines show: never the password
        self.prefix = prefix
        self.timeout_s = timeout_s
        self.pause_s = pause_s
        self._clock = clock
        self._client: Any = None
        self._paused_until = 0.0
        self.failures = 0  # calls that failed or timed out (for metrics and tests)

    def _redis(self) -> Any:
        if self._client is None:
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff

            self._client = async_client(
                self.url, socket_timeout=self.timeout_s, socket_connect_timeout=self.timeout_s,
                retry=Retry(NoBackoff(), 0), health_check_interval=0,
            )
        return self._client

    async def _call(self, action: Callable[[Any], Awaitable[T]]) -> T | None:
        if self._clock() < self._paused_until:
            return None
        try:
            async with asyncio.timeout(self.timeout_s):
                result = await action(self._redis())
        except failures() as exc:
            self.failures += 1
            if self._paused_until == 0.0:
                logger.warning("response cache: Redis at %s unavailable (%s); serving without it",
                               self.display_url, type(exc).__name__)
            self._paused_until = self._clock() + self.pause_s
            return None
        if self._paused_until:
            logger.warning("response cache: Redis at %s is back", self.display_url)
            self._paused_until = 0.0
        return result

    async def get(self, key: str) -> bytes | None:
        """The value, or None when absent or Redis is unavailable."""
        value = await self._call(lambda r: r.get(self.prefix + key))
        return bytes(value) if value is not None else None

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        """Store with a TTL in milliseconds (dropped when Redis is unavailable)."""
        await self._call(lambda r: r.set(self.prefix + key, value, px=max(int(ttl_s * 1000), 1)))

    async def aclose(self) -> None:
        """Close the connection pool."""
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()
