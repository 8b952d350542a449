"""Cache backends: the bounded in-memory one, and Redis (the machine's, under a key prefix of this test's own)."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator

import anyio
import pytest
from clock_support import Clock
from serve_support import free_port

from switchman.state import MemoryCache, RedisCache

REDIS_URL = "redis://127.0.0.1:6379/0"


def test_memory_ttl_and_lru_bounds(clock: Clock) -> None:
    async def main() -> None:
        cache = MemoryCache(max_entries=2, max_bytes=10, clock=clock)
        await cache.set("a", b"1234", ttl_s=5)
        await cache.set("b", b"5678", ttl_s=5)
        assert await cache.get("a") == b"1234"  # a is now the most recently used
        await cache.set("c", b"90", ttl_s=5)  # over two entries: b (least recently used) goes
        assert await cache.get("b") is None and len(cache) == 2 and cache.size_bytes == 6
        await cache.set("d", b"123456", ttl_s=5)  # over 10 bytes: a goes
        assert await cache.get("a") is None and await cache.get("c") == b"90"
        await cache.set("huge", b"x" * 11, ttl_s=5)  # larger than the whole cache: not kept
        assert await cache.get("huge") is None
        clock.now += 5
        assert await cache.get("c") is None and await cache.get("d") is None
        assert len(cache) == 0 and cache.size_bytes == 0

    anyio.run(main)


@pytest.fixture
def prefix() -> Iterator[str]:
    prefix = f"switchman-test:{uuid.uuid4().hex}:"
    yield prefix
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(prefix + "*"))
    if keys:
        client.delete(*keys)
    client.close()


def test_redis_stores_under_its_prefix_with_a_ttl(prefix: str) -> None:
    async def main() -> None:
        cache = RedisCache(REDIS_URL, prefix=prefix, timeout_s=1.0)
        await cache.set("k", b"\x00value", ttl_s=30)
        assert await cache.get("k") == b"\x00value"
        assert await cache.get("other") is None
        await cache.aclose()

    anyio.run(main)
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    assert 0 < client.pttl(prefix + "k") <= 30_000
    client.close()


def test_redis_down_is_a_miss_not_an_error(caplog: pytest.LogCaptureFixture) -> None:
    """A Redis that does not answer: every call is a miss, one log line, and no call waits past the pause."""
    port = free_port()
    clock = Clock()

    async def main() -> None:
        cache = RedisCache(f"redis://127.0.0.1:{port}/0", timeout_s=0.2, clock=clock)
        assert await cache.get("k") is None
        await cache.set("k", b"v", ttl_s=5)  # paused: not even tried
        assert cache.failures == 1
        clock.now += 5
        assert await cache.get("k") is None and cache.failures == 2
        await cache.aclose()

    anyio.run(main)
    assert [r.message for r in caplog.records].count(
        f"response cache: Redis at redis://127.0.0.1:{port}/0 unavailable (ConnectionError); serving without it") == 1


def test_redis_comes_back(caplog: pytest.LogCaptureFixture) -> None:
    """A Redis of this test's own, started after a miss: the cache resumes and says so."""
    port = free_port()
    clock = Clock()
    server: subprocess.Popen[bytes] | None = None

    async def main() -> None:
        nonlocal server
        cache = RedisCache(f"redis://127.0.0.1:{port}/0", timeout_s=0.5, clock=clock)
        assert await cache.get("k") is None
        server = subprocess.Popen(["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            clock.now += 5
            await cache.set("k", b"v", ttl_s=5)
            if await cache.get("k") == b"v":
                break
            await anyio.sleep(0.05)
        assert await cache.get("k") == b"v"
        await cache.aclose()

    try:
        anyio.run(main)
    finally:
        if server is not None:
            server.terminate()
            server.wait(10)
    assert any("is back" in r.message for r in caplog.records)
