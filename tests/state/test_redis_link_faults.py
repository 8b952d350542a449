"""The link's own read path (`Pipe`, `Trip`) against faults: error replies, misbehaving servers, stalls, leaks.

A misbehaving Redis is a small asyncio server here: hiredis parses what the client sends (no hand-written protocol),
the test says what goes back.
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import sys
from typing import Any

import anyio
import pytest

from switchman._exceptions import ConfigError
from switchman.state import RedisLink, RedisUnavailable
from switchman.testing import RedisServer

from .conftest import kill_idle_connection
from .redis_support import RESET, echo, fake_link, handshake_then

SHARED_URL = "redis://127.0.0.1:6379/0"


def test_a_rate_limit_falls_back_when_redis_is_loading() -> None:
    """A rate limit admitted while Redis answers -LOADING falls back to the local limiter (no TypeError, no 500)."""
    from switchman.state._limits import RateLimit  # noqa: PLC2701
    from switchman.state._redis_limits import RedisRateLimiter  # noqa: PLC2701

    async def main() -> None:
        loading = b"-LOADING Redis is loading the dataset in memory\r\n"
        async with fake_link(handshake_then(lambda _: loading), timeout_s=0.5, ping_s=5.0) as link:
            limiter = RedisRateLimiter(link)
            with anyio.fail_after(2):
                admission = await limiter.admit("key:k1", RateLimit(rpm=10), 5)
            assert admission.admitted

    anyio.run(main)


#: A RESP3 push frame: Redis sends these on a RESP3 connection outside the request/reply order (client tracking's
#: invalidations; a managed Redis's maintenance notifications, which redis-py 8 asks for by default: "auto").
PUSH = b">3\r\n$9\r\nMIGRATING\r\n:1\r\n:15\r\n"


def test_a_resp3_push_frame_between_replies_is_not_taken_for_a_reply() -> None:
    """RESP3 (redis-py 8's default) lets Redis send push frames (`>`) between replies; hiredis hands them out like
    replies. They are dropped, as redis-py's reader skips them: taken for a reply, every caller after one in the
    round trip would get its neighbour's reply."""
    def answer(words: list[bytes]) -> bytes:
        return PUSH + echo(words) if words[1] == b"a" else echo(words)

    async def main() -> None:
        async with fake_link(handshake_then(answer), timeout_s=0.5, ping_s=5.0) as link:
            with anyio.fail_after(2):
                outcomes = await asyncio.gather(link.command("ECHO", "a"), link.command("ECHO", "b"),
                                                link.command("ECHO", "c"), return_exceptions=True)
            assert outcomes == [b"a", b"b", b"c"], outcomes

    anyio.run(main)


def test_an_invalidation_pushed_by_a_real_redis_mid_round_trip_is_not_taken_for_a_reply(prefix: str) -> None:
    """The same on the shared Redis (7.0): the batches' connection tracks keys (CLIENT TRACKING ON, as a managed
    Redis's maintenance notifications would push unasked), and a round trip's SET of a key its GET read makes Redis
    push an invalidation between two replies: the ECHO after it must still get its own reply."""

    async def main() -> None:
        link = RedisLink(SHARED_URL, prefix=prefix, timeout_s=0.5, ping_s=5.0)
        try:
            await link.start()
            key = link.key("t", "tracked")
            assert await link.command("CLIENT", "TRACKING", "ON") == b"OK"  # on the batches' own connection
            with anyio.fail_after(2):
                outcomes = await asyncio.gather(link.command("GET", key), link.command("SET", key, "v"),
                                                link.command("ECHO", "a"), link.command("ECHO", "b"),
                                                return_exceptions=True)
            assert outcomes == [None, b"OK", b"a", b"b"], outcomes
        finally:
            await link.aclose()

    anyio.run(main)


def test_without_hiredis_the_link_is_refused_at_startup(monkeypatch: pytest.MonkeyPatch) -> None:
    """`Pipe` needs hiredis's Reader: without hiredis the link is a ConfigError at startup saying what to install,
    not an ImportError in every batched call (a 500 per request with the link still up)."""
    monkeypatch.setitem(sys.modules, "hiredis", None)  # `import hiredis` raises ImportError
    with pytest.raises(ConfigError, match="switchman\\[redis\\]"):
        RedisLink(SHARED_URL)


def test_a_connection_lost_while_the_event_loop_is_busy_is_opened_again() -> None:
    """A connection's opening (TCP connect and handshake: several turns of the event loop) ends under its own bound
    (max(timeout_s, 0.5), as the ping's), one at a time, and is parked for the next round trip: with a loop that
    spends 20 ms a turn, a round trip's timeout that cancelled the opening would leave no connection ever opened,
    every call failing while the pings keep `switchman_redis_up` at 1."""
    import time

    async def main() -> None:
        link = RedisLink(SHARED_URL, timeout_s=0.05, ping_s=5.0)
        await link.start()
        await kill_idle_connection(link)
        stop = asyncio.Event()

        async def busy() -> None:  # each turn of the loop costs 20 ms of CPU
            while not stop.is_set():
                time.sleep(0.02)
                await asyncio.sleep(0)

        hog = asyncio.ensure_future(busy())
        try:
            outcomes = [(await asyncio.gather(link.command("PING"), return_exceptions=True))[0] for _ in range(20)]
        finally:
            stop.set()
            await hog
            await link.aclose()
        assert b"PONG" in outcomes, outcomes

    anyio.run(main)


def _restart_in_place(url: str) -> None:
    """What a restart without persistence leaves: no keys, every connection closed (no moment it refuses one)."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        client.flushall()
        client.client_kill_filter(_type="normal", skipme=True)
    finally:
        client.close()


def test_a_redis_restarted_between_two_pings_while_the_link_is_idle_is_resynced() -> None:
    """Redis restarts between two pings while the link is idle (here its data flushed and every client's connection
    closed at once, as a restart without persistence leaves it, so no ping falls in the gap): redis-py's pool
    reconnects quietly, but the watcher's read of the marker finds it gone, so the link goes down, logs it, resyncs
    (budget counters rebuilt from the ledger) and comes back up."""
    with RedisServer() as server:
        async def main() -> None:
            link = RedisLink(server.url, timeout_s=0.2, ping_s=0.1)
            resyncs: list[bool] = []

            async def resync() -> None:
                resyncs.append(True)

            link.on_resync(resync)
            await link.start()
            assert resyncs == [True]
            assert await link.command("SET", "k", "1") == b"OK"
            _restart_in_place(server.url)
            try:
                with anyio.fail_after(5):
                    while len(resyncs) < 2:  # the watcher pings every 0.1 s
                        await asyncio.sleep(0.05)
            finally:
                await link.aclose()

        anyio.run(main)


# -- probes that pass: kept as regression tests for the worst failure modes ---------------------------------------

def test_a_reply_read_after_its_round_trip_timed_out_never_reaches_a_later_caller(prefix: str) -> None:
    """A round trip [ECHO, BLPOP 0.3 s, ECHO] times out at 0.1 s: the connection is discarded, so neither the BLPOP's
    late nil nor anything else on it is handed to the callers of the round trips after it."""

    async def main() -> None:
        link = RedisLink(SHARED_URL, prefix=prefix, timeout_s=0.1, ping_s=5.0)
        await link.start()
        first = await asyncio.gather(link.command("ECHO", "a"), link.command("BLPOP", link.key("t", "none"), "0.3"),
                                     link.command("ECHO", "b"), return_exceptions=True)
        assert first[0] == b"a" and isinstance(first[1], RedisUnavailable), first
        assert isinstance(first[2], RedisUnavailable) or first[2] == b"b", first
        for i in range(20):  # across the moment the BLPOP's nil comes back (0.3 s after it was sent)
            assert await link.command("ECHO", f"after-{i}") == f"after-{i}".encode()
            await asyncio.sleep(0.02)
        assert link.up
        await link.aclose()

    anyio.run(main)


def test_replies_split_at_every_byte_by_the_server_reach_their_callers_whole() -> None:
    """The server writes every reply one byte at a time (one send per byte): nested arrays, nil, an error, a large
    bulk; each caller gets its own, whole."""
    big = b"y" * 70_000

    def answer(words: list[bytes]) -> bytes:
        return {b"A": b"*3\r\n*2\r\n:1\r\n$-1\r\n$1\r\nx\r\n*0\r\n", b"E": b"-WRONGTYPE Operation against a key\r\n",
                b"N": b"$-1\r\n", b"B": b"$%d\r\n%s\r\n" % (len(big), big)}[words[0]]

    async def main() -> None:
        import hiredis

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            parser = hiredis.Reader()
            while data := await reader.read(65536):
                parser.feed(data)
                while (words := parser.gets()) is not False:
                    out = handshake_then(answer)(words)
                    step = 1 if len(out) < 1000 else 4096
                    for at in range(0, len(out), step):
                        writer.write(out[at:at + step])
                        await writer.drain()
                        await asyncio.sleep(0)
            writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        url = f"redis://127.0.0.1:{server.sockets[0].getsockname()[1]}/0"
        link = RedisLink(url, timeout_s=5.0, ping_s=5.0)
        await link.start()
        with anyio.fail_after(10):
            got = await asyncio.gather(link.command("A"), link.command("E"), link.command("N"), link.command("B"),
                                       link.command("A"), return_exceptions=True)
        assert got[0] == got[4] == [[1, None], b"x", []]
        assert isinstance(got[1], RedisUnavailable) and "WRONGTYPE" in str(got[1])
        assert got[2] is None and got[3] == big
        assert link.up
        await link.aclose()
        server.close()

    anyio.run(main)


def test_many_callers_from_many_tasks_with_cancellations_and_errors_each_get_their_own_reply() -> None:
    """Twenty tasks issue ECHOs of their own tokens, some with an error reply between them and some callers
    cancelled mid-way: every reply read is the one its caller sent."""
    async def main() -> None:
        link = RedisLink(SHARED_URL, timeout_s=1.0, ping_s=5.0)
        await link.start()
        mismatches: list[tuple[str, Any]] = []

        async def worker(n: int) -> None:
            for i in range(100):
                token = f"{n}:{i}"
                if i % 7 == 0:
                    with pytest.raises(RedisUnavailable):
                        await link.command("GET")  # wrong number of arguments
                future = link.command_soon("ECHO", token)
                if i % 11 == 0:
                    future.cancel()
                    continue
                reply = await future
                if reply != token.encode():
                    mismatches.append((token, reply))

        with anyio.fail_after(30):
            await asyncio.gather(*(worker(n) for n in range(20)))
        assert mismatches == []
        assert link.up
        await link.aclose()

    anyio.run(main)


def test_a_busy_event_loop_longer_than_the_timeout_does_not_fail_a_call_answered_meanwhile() -> None:
    """The event loop is blocked for three timeouts after the write: the reply is read (I/O before timers in the
    loop's turn) and the caller gets it; the link stays up."""
    import time

    async def main() -> None:
        link = RedisLink(SHARED_URL, timeout_s=0.05, ping_s=5.0)
        await link.start()
        assert await link.command("ECHO", "warm") == b"warm"  # a connection of the batches' own, idle
        call = link.command_soon("ECHO", "busy")
        for _ in range(3):  # the round trip is written two turns on
            await asyncio.sleep(0)
        time.sleep(0.15)  # blocks the loop (a CPU-bound step of a request)
        assert await call == b"busy"
        assert link.up and link.errors == 0
        await link.aclose()

    anyio.run(main)


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_stopped_redis_resumed_leaves_no_caller_waiting_and_leaks_nothing() -> None:
    """Redis stopped (SIGSTOP) for longer than `stall_s` while five tasks keep calling: every call ends (its reply
    or RedisUnavailable), the link goes down once and comes back after SIGCONT, calls succeed again, and no task,
    connection or file descriptor is left behind by the many failed round trips (each on a new connection)."""
    with RedisServer() as server:
        process = server._process  # noqa: SLF001
        assert process is not None

        async def main() -> None:
            link = RedisLink(server.url, timeout_s=0.05, ping_s=0.1, stall_s=0.4)
            await link.start()
            assert await link.command("PING") == b"PONG"
            gc.collect()
            fds, tasks = _fds(), len(asyncio.all_tasks())
            futures: list[asyncio.Future[Any]] = []
            stop = asyncio.Event()
            went_down = asyncio.Event()

            async def caller() -> None:
                while not stop.is_set():
                    future = link.command_soon("PING")
                    futures.append(future)
                    with anyio.fail_after(1):  # never waits past a round trip's bound
                        await asyncio.gather(future, return_exceptions=True)
                    if not link.up:
                        went_down.set()
                    await asyncio.sleep(0.005)

            callers = [asyncio.ensure_future(caller()) for _ in range(5)]
            os.kill(process.pid, signal.SIGSTOP)
            try:
                with anyio.fail_after(10):
                    await went_down.wait()
                await asyncio.sleep(0.3)
            finally:
                os.kill(process.pid, signal.SIGCONT)
            with anyio.fail_after(10):
                while not link.up:
                    await asyncio.sleep(0.02)
            stop.set()
            with anyio.fail_after(5):
                await asyncio.gather(*callers)
            assert all(future.done() for future in futures)
            assert await link.command("PING") == b"PONG"
            assert len(link._idle) <= 1  # noqa: SLF001
            await link.aclose()
            gc.collect()
            await asyncio.sleep(0.05)
            assert len(asyncio.all_tasks()) <= tasks - 1  # the watcher is gone too
            assert _fds() <= fds, (fds, _fds())

        anyio.run(main)


def test_a_connection_reset_mid_batch_answers_what_was_read_and_fails_the_rest() -> None:
    """The server answers the first command of a round trip, then resets the connection (RST): the first caller has
    its reply, the others RedisUnavailable (not a bare ConnectionResetError), the link goes down and comes back."""
    def answer(words: list[bytes]) -> bytes:
        return RESET if words[:2] == [b"ECHO", b"reset"] else echo(words)

    async def main() -> None:
        async with fake_link(handshake_then(answer), timeout_s=1.0, ping_s=0.05) as link:
            with anyio.fail_after(2):
                outcomes = await asyncio.gather(link.command("ECHO", "first"), link.command("ECHO", "reset"),
                                                link.command("ECHO", "after"), return_exceptions=True)
            assert outcomes[0] == b"first", outcomes
            assert all(isinstance(outcome, RedisUnavailable) for outcome in outcomes[1:]), outcomes
            assert not link.up
            with anyio.fail_after(5):
                while not link.up:
                    await asyncio.sleep(0.02)
            assert await link.command("ECHO", "again") == b"again"

    anyio.run(main)


def test_no_connection_asks_for_maintenance_notifications() -> None:
    """redis-py 8's handshake asks a Redis for maintenance notifications (CLIENT MAINT_NOTIFICATIONS) unless told not
    to: the link's client and its own connections never ask (a managed Redis would push them to be dropped)."""
    pytest.importorskip("redis.maint_notifications")  # a redis-py with the setting (7 on)

    seen: list[bytes] = []

    def record(words: list[bytes]) -> bytes:
        seen.append(b" ".join(words[:2]).upper())
        return handshake_then(echo)(words)

    async def main() -> None:
        async with fake_link(record, timeout_s=0.5, ping_s=5.0) as link:
            assert await link.command("ECHO", "x") == b"x"  # on a connection of the link's own

    anyio.run(main)
    assert seen.count(b"HELLO 3") >= 2 and b"ECHO X" in seen, seen  # the client's and the link's handshakes
    assert not [words for words in seen if b"MAINT" in words], seen


def test_round_trips_timing_out_on_a_stalled_handshake_open_one_connection_not_one_each() -> None:
    """Redis accepts connections but stops answering (a handshake that never ends) while the link is up and only slow
    (`stall_s` long): ten round trips in a row each time out, on the one connection being opened, not on ten."""
    accepted: list[asyncio.StreamWriter] = []
    stalled = [False]
    answered = handshake_then(echo)

    async def main() -> None:
        async with fake_link(lambda words: b"" if stalled[0] else answered(words), accepted,
                             timeout_s=0.05, ping_s=3600) as link:
            assert await link.command("ECHO", "a") == b"a"  # the link's own connection, idle now
            stalled[0] = True
            for writer in accepted:
                writer.transport.abort()  # every connection so far closed: the next round trip opens a new one
            with anyio.fail_after(5):
                while any(pipe.usable for pipe in link._idle):  # noqa: SLF001  (the close seen by the event loop)
                    await asyncio.sleep(0.01)
            before = len(accepted)
            for _ in range(10):
                with pytest.raises(RedisUnavailable):
                    await link.command("ECHO", "b")
            assert link.up  # slow, not down: the stall bound is long
            assert len(accepted) - before == 1, len(accepted) - before

    anyio.run(main)
