"""The Redis link: keys laid out for Cluster, calls bounded, one log line and a metric when Redis goes, resync when it returns."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import anyio
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from switchman._config_server import ServerConfig
from switchman._streaks import ONCE_LIMIT
from switchman.state import RedisLink, RedisUnavailable
from switchman.testing import RedisServer

from .conftest import kill_idle_connection

SHARED_URL = "redis://127.0.0.1:6379/0"


def test_no_url_no_link() -> None:
    assert RedisLink.from_config(ServerConfig()) is None
    link = RedisLink.from_config(ServerConfig(redis_url=SHARED_URL, redis={"timeout_s": 0.2, "key_prefix": "x:"}))
    assert link is not None and link.timeout_s == 0.2 and link.prefix == "x:"


def test_keys_share_a_hash_slot_per_entity() -> None:
    link = RedisLink(SHARED_URL, prefix="sm:")
    assert link.key("budget:agent:triage", "day", "spent") == "sm:{budget:agent:triage}:day:spent"
    assert link.key("session:s1") == "sm:{session:s1}"
    assert link.channel("revoked") == "sm:revoked"


def test_calls_on_the_shared_redis(prefix: str) -> None:

    async def main() -> None:
        link = RedisLink(SHARED_URL, prefix=prefix, timeout_s=0.5)
        await link.start()
        assert link.up
        key = link.key("t", "k")
        await link.run(lambda r: r.set(key, b"v"))
        assert await link.run(lambda r: r.get(key)) == b"v"
        await link.aclose()

    anyio.run(main)


def test_outage_logs_once_counts_and_resyncs(caplog: pytest.LogCaptureFixture) -> None:
    """Redis killed: calls fail fast with RedisUnavailable, one line, the metric; restarted: resync runs, calls resume."""
    caplog.set_level(logging.WARNING, "switchman.state")
    resyncs: list[bool] = []
    with RedisServer() as server:
        url = server.url.replace("redis://", "redis://:hunter2@")  # a password must never be logged

        async def main() -> None:
            link = RedisLink(url, timeout_s=0.2, ping_s=0.05)

            async def resync() -> None:  # its calls reach Redis while requests still keep to local state
                resyncs.append(bool(await link.run(lambda r: r.ping())) and not link.up)

            link.on_resync(resync)
            registry = CollectorRegistry()
            registry.register(link.collector())
            server.stop()  # down before the first ping: the gateway still starts, locally
            await link.start()
            assert not link.up and resyncs == []
            with pytest.raises(RedisUnavailable):
                await link.run(lambda r: r.get("k"))
            assert b"switchman_redis_up 0.0" in generate_latest(registry)
            server.start()
            with anyio.fail_after(10):
                while not link.up:
                    await anyio.sleep(0.05)
            assert resyncs == [True]  # the resync ran (its calls allowed) before the link served again
            assert await link.run(lambda r: r.ping())
            server.stop()
            for _ in range(3):  # the first call notices; the rest fail without waiting on the network
                with pytest.raises(RedisUnavailable):
                    await link.run(lambda r: r.get("k"))
            text = generate_latest(registry)
            assert b"switchman_redis_up 0.0" in text and b"switchman_redis_errors_total" in text
            await link.aclose()

        anyio.run(main)
    lines = [r.getMessage() for r in caplog.records if "unavailable" in r.getMessage()]
    assert len(lines) == 2, lines  # one per outage
    assert lines[0].startswith(f"redis unavailable at redis://127.0.0.1:{server.port}/0: ")
    assert lines[0].endswith("; degrading to local state")
    assert not any("hunter2" in r.getMessage() for r in caplog.records)


BUSY = """local t = redis.call('TIME'); local s = t[1] * 1e6 + t[2]
while true do local u = redis.call('TIME'); if u[1] * 1e6 + u[2] - s > tonumber(ARGV[1]) then return 1 end end"""


def _block(url: str, seconds: float) -> None:
    """Keep Redis busy for `seconds` (a script spinning on TIME): every other call waits meanwhile."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=seconds + 5)
    try:
        client.eval(BUSY, 0, int(seconds * 1e6))
    finally:
        client.close()


def test_one_slow_call_fails_alone_and_only_a_stall_takes_the_link_down(caplog: pytest.LogCaptureFixture) -> None:
    """Redis busy for a moment: the call waiting on it fails, the link stays up. Busy for longer than `stall_s`:
    the link goes down (one line), and comes back when Redis answers again."""
    caplog.set_level(logging.WARNING, "switchman.state")
    with RedisServer() as server:
        async def main() -> None:
            link = RedisLink(server.url, timeout_s=0.1, ping_s=0.5, stall_s=1.0)
            await link.start()
            assert link.up
            async with anyio.create_task_group() as tg:
                tg.start_soon(anyio.to_thread.run_sync, _block, server.url, 0.4)
                await anyio.sleep(0.1)  # the script runs
                with pytest.raises(RedisUnavailable):
                    await link.run(lambda r: r.get("k"))
            assert link.up and link.errors == 1  # that call failed; the replica stays on shared state
            assert await link.run(lambda r: r.set("k", b"v"))
            failed_up = 0
            async with anyio.create_task_group() as tg:
                tg.start_soon(anyio.to_thread.run_sync, _block, server.url, 3.0)
                await anyio.sleep(0.1)
                with anyio.fail_after(10):
                    while link.up:
                        with pytest.raises(RedisUnavailable):
                            await link.run(lambda r: r.get("k"))
                        failed_up += link.up
            assert failed_up >= 2  # several timeouts before the stall took it down
            with anyio.fail_after(10):  # the watcher brings it back
                while not link.up:
                    await anyio.sleep(0.02)
            await link.aclose()

        anyio.run(main)
    assert sum("degrading to local state" in r.getMessage() for r in caplog.records) == 1


def test_the_watcher_survives_a_failing_resync(caplog: pytest.LogCaptureFixture) -> None:
    """A resync callback that raises (a bug) is logged, at start too; the watcher keeps trying and the link
    comes up."""
    caplog.set_level(logging.WARNING, "switchman.state")
    failures = [ValueError("a bug"), None]

    async def resync() -> None:
        failure = failures.pop(0) if failures else None
        if failure is not None:
            raise failure

    with RedisServer() as server:
        async def main() -> None:
            link = RedisLink(server.url, timeout_s=0.5, ping_s=0.05)
            link.on_resync(resync)
            await link.start()  # the resync fails at start: the gateway still starts, on local state
            assert not link.up
            with anyio.fail_after(10):
                while not link.up:
                    await anyio.sleep(0.02)
            await link.aclose()

        anyio.run(main)
    assert any("redis resync failed" in r.getMessage() and r.exc_info for r in caplog.records)


@pytest.mark.parametrize(("url", "shown"), [
    ("redis://:hunter2@10.0.0.5:6379/0", "redis://10.0.0.5:6379/0"),
    ("rediss://user:hunter2@h:6380/1", "rediss://h:6380/1"),
    ("redis://h:6379/0?password=hunter2&socket_timeout=1", "redis://h:6379/0"),
    ("unix:///run/redis.sock?db=0&password=hunter2", "unix:///run/redis.sock"),
    ("redis://h/0#hunter2", "redis://h/0"),
    ("redis://:hun%2Fter2@h:6379/0", "redis://h:6379/0"),
])
def test_the_shown_url_never_carries_a_password(url: str, shown: str) -> None:
    assert RedisLink(url).display_url == shown


@pytest.mark.parametrize("url", ["redis://:s3c/ret@127.0.0.1:1/0", "redis://:s3c?ret@127.0.0.1:1/0",
                                 "redis://:s3cret@[::1:1/0"])
def test_a_url_no_message_could_show_is_refused_at_once_without_the_password(url: str) -> None:
    """Before, the link showed `redis://:s3c/ret@127.0.0.1:1/0` whole as its URL, and its start failed on
    redis-py's ValueError quoting the password as the port."""
    from switchman import ConfigError
    from switchman.state import RedisCache

    for make in (RedisLink, RedisCache):
        with pytest.raises(ConfigError, match="percent-escape") as caught:
            make(url)
        assert "s3c" not in str(caught.value)


@pytest.mark.parametrize("url", ["redis://:s3cret@127.0.0.1:1/0", "redis://user:s3cret@127.0.0.1:1/0",
                                 "redis://127.0.0.1:1/0?password=s3cret", "redis://:s3c%2Fret@127.0.0.1:1/0",
                                 "redis+cluster://:s3cret@127.0.0.1:1"])
def test_an_unreachable_redis_is_named_without_its_password(url: str, caplog: pytest.LogCaptureFixture) -> None:
    """The link's and the cache's error path (nothing listens on port 1): every line and error names the URL as
    `shown_url` shows it."""
    from switchman.state import RedisCache

    caplog.set_level(logging.DEBUG)

    async def main() -> list[str]:
        link = RedisLink(url, timeout_s=0.5, ping_s=0.05)
        await link.start()
        with pytest.raises(RedisUnavailable) as caught:
            await link.run(lambda r: r.ping())
        await link.aclose()
        cache = RedisCache(url, timeout_s=0.5)
        assert await cache.get("k") is None and cache.failures == 1
        await cache.aclose()
        return [str(caught.value), link.display_url, cache.display_url]

    shown = anyio.run(main)
    assert shown[0] == shown[1] == shown[2] == url.split("://")[0] + "://127.0.0.1:1" + ("/0" if "/0" in url else "")
    assert any(shown[0] in r.getMessage() for r in caplog.records if "redis unavailable at" in r.getMessage())
    assert any(shown[0] in r.getMessage() for r in caplog.records if "response cache: Redis at" in r.getMessage())
    assert "s3c" not in caplog.text


@pytest.fixture
def trips(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of calls in each round trip the link makes from now on."""
    import switchman.state._redis_wire as module  # noqa: PLC2701  (counting the round trips)

    counts: list[int] = []
    real = module.Trip.send

    def counted(trip: Any, pipe: Any) -> None:
        counts.append(len(trip.batch))
        real(trip, pipe)

    monkeypatch.setattr(module.Trip, "send", counted)
    return counts


def test_calls_of_one_turn_share_one_round_trip_and_keep_their_own_replies(trips: list[int], prefix: str) -> None:

    async def main() -> None:
        link = RedisLink(SHARED_URL, prefix=prefix, timeout_s=0.5)
        await link.start()
        key = link.key("t", "k")
        await link.run(lambda r: r.set(key, b"v"))
        echo = "return ARGV[1]"
        replies = await asyncio.gather(*(link.eval(echo, [key], [str(i)]) for i in range(10)),
                                       link.command("GET", key), link.eval("return redis.call('NOPE')", [key], []),
                                       return_exceptions=True)
        assert trips == [12]
        assert replies[:11] == [str(i).encode() for i in range(10)] + [b"v"]
        assert isinstance(replies[11], RedisUnavailable)  # a script that fails fails its caller alone
        assert link.up
        await link.run(lambda r: r.script_flush())  # Redis forgot the scripts (a restart): loaded again
        assert await link.eval(echo, [key], ["again"]) == b"again"
        assert trips == [12, 1]
        await link.aclose()

    anyio.run(main)


def test_calls_issued_while_a_round_trip_is_on_its_way_go_together_in_the_next(trips: list[int], prefix: str) -> None:
    """One round trip at a time: the calls of later turns of the event loop wait for the one on its way and then
    share one; a call issued after the last round trip ended (one caller awaiting each reply in turn) still goes."""

    async def main() -> None:
        link = RedisLink(SHARED_URL, prefix=prefix, timeout_s=0.5)
        await link.start()
        key = link.key("t", "k")
        first = link.command_soon("SET", key, "0")
        later: list[asyncio.Future[Any]] = []
        for _ in range(5):  # five later turns of the loop, while the first round trip is on its way
            await asyncio.sleep(0)
            later.append(link.command_soon("INCR", key))
        assert await first == b"OK"
        assert await asyncio.gather(*later) == [1, 2, 3, 4, 5]
        assert sum(trips) == 6 and len(trips) < 6  # the later calls shared round trips
        with anyio.fail_after(5):  # each call awaited before the next is issued: every one is sent
            for i in range(50):
                assert await link.command("ECHO", str(i)) == str(i).encode()
        await link.aclose()

    anyio.run(main)


def test_a_slow_call_in_a_round_trip_fails_only_the_calls_not_yet_answered() -> None:
    """Two SETs and a BLPOP that waits 0.3 s share a round trip with a 50 ms timeout: Redis ran the SETs and sent
    their replies, so their callers get them; only the BLPOP's caller sees RedisUnavailable (and the link stays up)."""
    with RedisServer() as server:
        async def main() -> None:
            link = RedisLink(server.url, timeout_s=0.05, ping_s=5.0)
            await link.start()
            assert link.up
            outcomes = await asyncio.gather(link.command("SET", "a", "1"), link.command("SET", "b", "2"),
                                            link.command("BLPOP", "nothing", "0.3"), return_exceptions=True)
            assert outcomes[:2] == [b"OK", b"OK"]
            assert isinstance(outcomes[2], RedisUnavailable)
            assert link.up
            assert await link.command("GET", "b") == b"2"
            await link.aclose()

        anyio.run(main)


def test_a_call_queued_at_close_is_sent_and_calls_after_it_open_nothing(prefix: str) -> None:

    async def main() -> None:
        link = RedisLink(SHARED_URL, prefix=prefix, timeout_s=0.5)
        await link.start()
        key = link.key("t", "closing")
        queued = asyncio.ensure_future(link.command("SET", key, "v"))
        await asyncio.sleep(0)  # in the queue of this turn, not yet sent
        await link.aclose()
        assert queued.done() and queued.result() == b"OK"  # sent before the client closed
        with pytest.raises(RedisUnavailable):
            await link.command("GET", key)
        with pytest.raises(RedisUnavailable):
            await link.run(lambda r: r.get(key))
        assert link._client is None  # noqa: SLF001  (no client opened after the close)

    anyio.run(main)


def test_scripts_redis_forgot_are_loaded_once_each_in_one_more_round_trip(monkeypatch: pytest.MonkeyPatch) -> None:
    """Redis lost its scripts (a restart): forty calls of two scripts cost two SCRIPT LOADs, not forty."""
    import switchman.state._redis_wire as module  # noqa: PLC2701  (counting what each write packs)

    loads: list[int] = []
    real = module.pack

    def counted(connection: Any, commands: list[tuple[Any, ...]]) -> list[bytes]:
        loads.append(sum(1 for args in commands if args[:2] == ("SCRIPT", "LOAD")))
        return real(connection, commands)

    monkeypatch.setattr(module, "pack", counted)
    with RedisServer() as server:
        async def main() -> None:
            link = RedisLink(server.url, timeout_s=1.0, ping_s=5.0)
            await link.start()
            one, two = "return 'one:' .. ARGV[1]", "return 'two:' .. ARGV[1]"
            replies = await asyncio.gather(*(link.eval(one if i % 2 else two, [], [i]) for i in range(40)))
            assert replies == [f"{'one' if i % 2 else 'two'}:{i}".encode() for i in range(40)]
            assert link.up and sum(loads) == 2 and len(loads) == 2  # the batch, then the two loads and the resends
            await link.aclose()

        anyio.run(main)


def test_a_script_redis_refuses_is_logged_once(caplog: pytest.LogCaptureFixture, prefix: str) -> None:
    caplog.set_level(logging.WARNING, "switchman.state")

    async def main() -> None:
        link = RedisLink(SHARED_URL, prefix=prefix, timeout_s=0.5)
        await link.start()
        for _ in range(3):
            with pytest.raises(RedisUnavailable):
                await link.eval("return redis.call('NOPE')", [link.key("t", "k")], [])
        assert link.up and link.errors == 3
        await link.aclose()

    anyio.run(main)
    lines = [r.getMessage() for r in caplog.records if "redis refused script" in r.getMessage()]
    assert len(lines) == 1 and "Unknown Redis command called from script" in lines[0], lines


def test_ever_new_refused_scripts_are_logged_a_bounded_number_of_times(caplog: pytest.LogCaptureFixture) -> None:
    """Before, each refused script was remembered for the link's life; now the first ONCE_LIMIT are (`OnceLog`), and
    every refusal is still counted."""
    caplog.set_level(logging.WARNING, "switchman.state")
    count = ONCE_LIMIT + 20
    with RedisServer() as server:  # its own: the scripts stay out of the shared Redis's script cache
        async def main() -> None:
            link = RedisLink(server.url, timeout_s=2.0)
            await link.start()
            for start in range(0, count, 100):
                calls = [link.eval(f"return redis.call('NOPE{i}')", [], []) for i in range(start, min(start + 100, count))]
                replies = await asyncio.gather(*calls, return_exceptions=True)
                assert all(isinstance(reply, RedisUnavailable) for reply in replies)
            assert link.up and link.errors == count
            await link.aclose()

        anyio.run(main)
    assert len([r for r in caplog.records if "redis refused script" in r.getMessage()]) == ONCE_LIMIT


def test_a_cluster_link_is_down_while_any_primary_is_lost() -> None:
    """The watcher pings every primary: one lost takes the link down (its slots' calls would fail) until it is back,
    whichever node the client asks by default."""
    from switchman.testing import RedisClusterServer

    with RedisClusterServer() as cluster:
        async def main() -> None:
            link = RedisLink(cluster.url, timeout_s=0.5, ping_s=0.05)
            await link.start()
            assert link.up
            default = link.client.get_default_node().port
            lost = next(index for index, port in enumerate(cluster.ports) if port != default)
            cluster.kill_node(lost)
            with anyio.fail_after(10):
                while link.up:
                    await anyio.sleep(0.02)
            cluster.restart_node(lost)
            with anyio.fail_after(20):
                while not link.up:
                    await anyio.sleep(0.02)
            await link.aclose()

        anyio.run(main)


def test_an_idle_connection_redis_closed_is_dropped_and_the_next_call_opens_another(prefix: str) -> None:
    """Redis closes the link's idle connection (its `timeout` setting, here CLIENT KILL): the event loop sees the close,
    the connection is no longer offered, and the next call goes on a new one with the link up and no error counted."""

    async def main() -> None:
        link = RedisLink(SHARED_URL, prefix=prefix, timeout_s=0.5)
        await link.start()
        own = await kill_idle_connection(link)
        assert await link.command("CLIENT", "ID") != own
        assert link.up and link.errors == 0
        await link.aclose()

    anyio.run(main)


def test_a_connection_closed_mid_round_trip_takes_the_link_down_and_fails_its_callers(prefix: str) -> None:
    """The batches' connection is killed while a round trip waits on it: its callers get RedisUnavailable (no one is
    left waiting for a reply that will not come), the link goes down, and the watcher brings it back."""

    async def main() -> None:
        link = RedisLink(SHARED_URL, prefix=prefix, timeout_s=2.0, ping_s=0.05)
        await link.start()
        own = await link.command("CLIENT", "ID")
        waiting = link.command_soon("BLPOP", link.key("t", "nothing"), "1")
        echoed = link.command_soon("ECHO", "behind")  # in the same round trip, behind the BLPOP
        await asyncio.sleep(0.05)
        assert await link.run(lambda r: r.client_kill_filter(_id=own)) == 1
        with anyio.fail_after(1):
            outcomes = await asyncio.gather(waiting, echoed, return_exceptions=True)
        assert all(isinstance(outcome, RedisUnavailable) for outcome in outcomes), outcomes
        assert not link.up and link.errors >= 1
        with anyio.fail_after(5):
            while not link.up:
                await asyncio.sleep(0.02)
        assert await link.command("ECHO", "again") == b"again"
        await link.aclose()

    anyio.run(main)


def test_error_replies_fail_their_own_callers_only(prefix: str) -> None:
    """Redis refuses one command of a round trip (INCR of a word, a wrong number of arguments): those callers get
    RedisUnavailable with Redis's message, the others their replies, and the link stays up."""

    async def main() -> None:
        link = RedisLink(SHARED_URL, prefix=prefix, timeout_s=0.5)
        await link.start()
        key = link.key("t", "word")
        outcomes = await asyncio.gather(link.command("SET", key, "word"), link.command("INCR", key),
                                        link.command("GET"), link.command("GET", key), return_exceptions=True)
        assert outcomes[0] == b"OK" and outcomes[3] == b"word"
        assert isinstance(outcomes[1], RedisUnavailable) and "not an integer" in str(outcomes[1])
        assert isinstance(outcomes[2], RedisUnavailable) and "wrong number of arguments" in str(outcomes[2])
        assert link.up and link.errors == 2
        await link.aclose()

    anyio.run(main)


def test_replies_split_over_several_reads_reach_their_callers_whole(prefix: str) -> None:
    """A reply arrives in pieces (a large value; here also bytes handed over one by one): each caller gets its whole
    reply once its last byte is read, in the order sent."""
    big = b"x" * (3 << 20)  # several reads of the socket

    async def main() -> None:
        link = RedisLink(SHARED_URL, prefix=prefix, timeout_s=2.0)
        await link.start()
        key = link.key("t", "big")
        assert await link.command("SET", key, big) == b"OK"
        replies = await asyncio.gather(link.command("ECHO", "a"), link.command("GET", key), link.command("ECHO", "b"))
        assert replies == [b"a", big, b"b"]
        pipe = await link._connect()  # noqa: SLF001  (fed by hand: the split is the test's, not the socket's)
        got: list[tuple[int, Any]] = []
        ends: list[BaseException | None] = []
        pipe.exchange([b""], 3, lambda index, reply: got.append((index, reply)), ends.append)
        for byte in b"+OK\r\n$3\r\nabc\r\n*2\r\n:1\r\n$-1\r\n":
            assert not ends
            pipe.data_received(bytes([byte]))
        assert ends == [None] and got == [(0, b"OK"), (1, b"abc"), (2, [1, None])]
        assert pipe.usable
        pipe.close()
        await link.aclose()

    anyio.run(main)


def test_a_call_behind_a_round_trip_to_a_stalled_redis_fails_within_twice_the_timeout() -> None:
    """Redis stopped (SIGSTOP) with a round trip on its way: a call queued behind it waits for it, then for its own,
    and fails with RedisUnavailable within twice the timeout (the documented bound); the link stays up (a stall is
    not an outage until nothing answered for `stall_s`) and serves again once Redis resumes."""
    import os
    import signal
    import time

    timeout = 0.1
    with RedisServer() as server:
        process = server._process  # noqa: SLF001  (stopped and resumed: a slow Redis, not a dead one)
        assert process is not None

        async def main() -> None:
            link = RedisLink(server.url, timeout_s=timeout, ping_s=5.0)
            await link.start()
            os.kill(process.pid, signal.SIGSTOP)
            try:
                first = link.command_soon("PING")
                await asyncio.sleep(timeout / 2)  # its round trip on its way
                queued = time.monotonic()
                behind = link.command_soon("PING")
                for call in (first, behind):
                    with pytest.raises(RedisUnavailable), anyio.fail_after(2):
                        await call
                waited = time.monotonic() - queued
                assert timeout <= waited < 2 * timeout + 0.05, waited
                assert link.up
            finally:
                os.kill(process.pid, signal.SIGCONT)
            with anyio.fail_after(2):
                assert await link.command("PING") == b"PONG"
            await link.aclose()

        anyio.run(main)


def test_a_close_with_a_round_trip_on_its_way_and_calls_behind_it_leaves_no_caller_waiting() -> None:
    """`aclose` while a round trip to a stalled Redis is on its way and a call waits behind it: both callers get
    RedisUnavailable (none waits forever) and the sender is gone; a call after the close fails at once."""
    import os
    import signal

    with RedisServer() as server:
        process = server._process  # noqa: SLF001
        assert process is not None

        async def main() -> None:
            link = RedisLink(server.url, timeout_s=0.1, ping_s=5.0)
            await link.start()
            os.kill(process.pid, signal.SIGSTOP)
            try:
                first = link.command_soon("PING")
                await asyncio.sleep(0.02)
                behind = link.command_soon("PING")
                with anyio.fail_after(2):
                    await link.aclose()
                    outcomes = await asyncio.gather(first, behind, return_exceptions=True)
                assert all(isinstance(outcome, RedisUnavailable) for outcome in outcomes), outcomes
                assert not link._busy  # noqa: SLF001
                with pytest.raises(RedisUnavailable):
                    await link.command("PING")
            finally:
                os.kill(process.pid, signal.SIGCONT)

        anyio.run(main)


def test_a_caller_cancelled_while_its_round_trip_is_on_its_way_leaves_the_others_their_replies(prefix: str) -> None:
    """A caller gives up (its request was cancelled) while its call is on its way: the calls sharing its round trip
    and those queued behind it still get their replies, and the reply nobody waits for is read and dropped."""

    async def main() -> None:
        link = RedisLink(SHARED_URL, prefix=prefix, timeout_s=1.0)
        await link.start()
        given_up = link.command_soon("BLPOP", link.key("t", "nothing"), "0.1")
        beside = link.command_soon("ECHO", "beside")
        await asyncio.sleep(0.02)
        behind = link.command_soon("ECHO", "behind")
        given_up.cancel()
        with anyio.fail_after(2):
            assert await asyncio.gather(beside, behind) == [b"beside", b"behind"]
        assert link.up and link.errors == 0
        assert await link.command("ECHO", "next") == b"next"  # the connection's replies are in step
        await link.aclose()

    anyio.run(main)
