"""The link's markers: a Redis that lost its data (restart, FLUSHALL, failover to an empty replica) while the link was
up is resynced by every replica once, on a single Redis and on each primary of a Cluster.

The watcher is left asleep (`ping_s` long) and `check()` is called by hand: one call is one watcher ping.
"""

from __future__ import annotations

import logging

import anyio
import pytest

from switchman.state import RedisLink
from switchman.testing import RedisClusterServer, RedisServer


def _flushall(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        client.flushall()
    finally:
        client.close()


def test_a_flush_is_resynced_once_by_every_replica_sharing_the_prefix(caplog: pytest.LogCaptureFixture) -> None:
    """Two replicas, one prefix: after FLUSHALL the first to ping writes a new marker, the second sees a token that is
    not its own and resyncs too (not fooled by the marker the first rewrote); then neither resyncs again."""
    caplog.set_level(logging.WARNING, "switchman.state")
    with RedisServer() as server:
        async def main() -> None:
            links = [RedisLink(server.url, prefix="p:", timeout_s=0.5, ping_s=3600) for _ in range(2)]
            resyncs = [0, 0]
            for i, link in enumerate(links):
                async def resync(i: int = i) -> None:
                    resyncs[i] += 1
                link.on_resync(resync)
                await link.start()
            assert resyncs == [1, 1] and all(link.up for link in links)
            assert links[0]._markers == links[1]._markers  # noqa: SLF001  (one marker, one token: the first's)
            for link in links:
                assert await link.check()
            assert resyncs == [1, 1]  # markers in place: nothing to do

            _flushall(server.url)
            caplog.clear()
            for link in links:
                assert await link.check()  # down (the one line), resynced, up again in the same ping
            assert resyncs == [2, 2]
            lines = [r.getMessage() for r in caplog.records]
            assert lines == [f"redis at {server.url} lost its data (restart or flush); resyncing"] * 2, lines
            for _ in range(3):
                for link in links:
                    assert await link.check()
            assert resyncs == [2, 2]  # no ping-pong between the two replicas' markers
            for link in links:
                await link.aclose()

        anyio.run(main)


def test_a_link_that_cannot_resync_after_a_loss_stays_down_and_says_so_when_it_comes_back(
        caplog: pytest.LogCaptureFixture) -> None:
    """A resync that fails after the loss keeps the link down (requests on local state, `switchman_redis_up` 0); the
    resync that succeeds later announces the link up."""
    caplog.set_level(logging.WARNING, "switchman.state")
    with RedisServer() as server:
        async def main() -> None:
            link = RedisLink(server.url, timeout_s=0.5, ping_s=3600)
            fail = [False]

            async def resync() -> None:
                if fail[0]:
                    raise RuntimeError("a bug in a callback")
            link.on_resync(resync)
            await link.start()
            fail[0] = True
            _flushall(server.url)
            assert not await link.check()
            up = {m.name: m.samples[0].value for m in link.collector().collect()}["switchman_redis_up"]
            assert up == 0.0
            fail[0] = False
            caplog.clear()
            assert await link.check()
            assert [r.getMessage() for r in caplog.records] == [f"redis at {server.url} is up; shared state in use"]
            await link.aclose()

        anyio.run(main)


def test_on_a_cluster_each_primary_holds_a_marker_and_a_flushed_primary_is_resynced() -> None:
    """One marker per primary (a hash tag in one of its slots): FLUSHALL on one primary alone is seen."""
    import redis

    with RedisClusterServer() as cluster:
        async def main() -> None:
            link = RedisLink(cluster.url, timeout_s=0.5, ping_s=3600)
            resyncs: list[bool] = []

            async def resync() -> None:
                resyncs.append(True)
            link.on_resync(resync)
            await link.start()
            assert link.up and resyncs == [True]
            nodes = {link.client.get_node_from_key(key).name for key in link._markers}  # noqa: SLF001
            primaries = link.client.get_primaries()
            assert nodes == {node.name for node in primaries} and len(nodes) == 3
            assert await link.check() and resyncs == [True]

            last = primaries[-1]
            client = redis.Redis(host=last.host, port=int(last.port))
            try:
                client.flushall()
            finally:
                client.close()
            assert await link.check()
            assert resyncs == [True, True]
            await link.aclose()

        anyio.run(main)


def test_a_marker_that_is_no_utf8_does_not_keep_the_link_down(prefix: str) -> None:
    """A marker another writer set to bytes no UTF-8: before, its UnicodeDecodeError escaped every check (the
    link stayed down for good, the watcher logging at every ping, and a gateway starting raised)."""
    import redis

    async def main() -> None:
        link = RedisLink("redis://127.0.0.1:6379/0", prefix=prefix, timeout_s=2.0, ping_s=0.05)
        raw = redis.Redis.from_url("redis://127.0.0.1:6379/0")
        try:
            raw.set(link.key("switchman-link", "marker"), b"\xff\xfe")
        finally:
            raw.close()
        try:
            await link.start()
            assert link.up
            await anyio.sleep(0.2)  # pings read the marker back
            assert link.up
        finally:
            await link.aclose()

    anyio.run(main)
