"""RedisHealth: two replicas' boards kept in step on Redis (circuits, latency marks), and alone while Redis is down."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from clock_support import Clock

from switchman._config_server import CircuitBreaker, LiveLatency
from switchman._streaks import ONCE_LIMIT
from switchman.state import HealthBoard, HealthStore, RedisHealth, RedisLink
from switchman.testing import RedisServer, forget_prefix, unique_prefix

SHARED_URL = "redis://127.0.0.1:6379/0"


class Wall:
    """Wall-clock seconds, moved by the test together with the boards' clock."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def __call__(self) -> float:
        return 1_700_000_000.0 + self.clock.now


@asynccontextmanager
async def replicas(url: str, prefix: str, clock: Clock, count: int = 2) -> AsyncIterator[list[RedisHealth]]:
    made = []
    for _ in range(count):
        link = RedisLink(url, prefix=prefix, timeout_s=0.5, ping_s=0.05)
        board = HealthBoard(CircuitBreaker(failures=3, cooldown_s=10), latency=LiveLatency(reprobe_s=30),
                            clock=clock)
        health = RedisHealth(link, board, wall=Wall(clock))
        await link.check()
        made.append(health)
    try:
        yield made
    finally:
        for health in made:
            await health.aclose()
            await health.link.aclose()


def run(test: Callable[[str], object]) -> None:
    prefix = unique_prefix()
    try:
        anyio.run(test, prefix)  # type: ignore[arg-type]
    finally:
        forget_prefix(SHARED_URL, prefix)


def test_is_a_health_store() -> None:
    store: HealthStore = RedisHealth(RedisLink(SHARED_URL), HealthBoard())
    assert store.state("m") == "closed"


def test_failures_on_two_replicas_open_the_circuit_on_both(clock: Clock) -> None:
    async def main(prefix: str) -> None:
        async with replicas(SHARED_URL, prefix, clock) as (a, b):
            a.record("m@x", ok=False)
            a.record("m@x", ok=False)
            b.record("m@x", ok=False)  # three in all: the threshold, though neither counted three alone
            for health in (a, b, a, b):
                await health.sync()
            assert a.state("m@x") == b.state("m@x") == "open"
            assert a.unhealthy() == b.unhealthy() == {"m@x"}
            clock.now += 10
            assert a.allow("m@x") and b.allow("m@x")  # one probe per replica after the cooldown
            a.record("m@x", ok=True)
            b.abandon("m@x")
            await a.sync()
            await b.sync()
            assert a.state("m@x") == b.state("m@x") == "closed"  # a's probe closed it for b too

    run(main)


def test_a_latency_mark_measured_on_one_replica_serves_the_other(clock: Clock) -> None:
    async def main(prefix: str) -> None:
        async with replicas(SHARED_URL, prefix, clock) as (a, b):
            a.observe("m@x", 800.0, output_tokens=50, stream_s=1.0)
            await a.sync()
            await b.sync()
            assert b.live_ttft("m@x") == 800.0 and b.tokens_per_s["m@x"] == 50.0
            clock.now += 5
            b.observe("m@x", 40.0)  # b re-measured it: fresher, so a adopts b's mark
            await b.sync()
            await a.sync()
            assert a.live_ttft("m@x") == b.live_ttft("m@x") < 800.0

    run(main)


def test_redis_down_each_board_goes_on_alone_and_resyncs(clock: Clock) -> None:
    async def main(prefix: str) -> None:
        with RedisServer() as server:
            async with replicas(server.url, prefix, clock) as (a, b):
                server.stop()
                for _ in range(3):
                    a.record("m@x", ok=False)
                await a.sync()  # no error: Redis is simply skipped
                assert a.state("m@x") == "open" and b.state("m@x") == "closed"
                assert not a.link.up
                server.start()
                for health in (a, b):
                    with anyio.fail_after(10):
                        while not await health.link.check():
                            await anyio.sleep(0.05)
                await a.sync()  # the resync wrote a's open circuit back ...
                await b.sync()
                assert b.state("m@x") == "open"  # ... so b sees it

    run(main)


def test_a_batch_of_outcomes_counts_the_failures_after_its_last_answer(clock: Clock) -> None:
    async def main(prefix: str) -> None:
        async with replicas(SHARED_URL, prefix, clock) as (a, b):
            for ok in (False, False, True, False):  # one sync later: the answer reset the count, one failure after
                a.record("m@x", ok=ok)
            await a.sync()
            b.record("m@x", ok=False)
            await b.sync()
            await a.sync()
            assert a.state("m@x") == b.state("m@x") == "closed"  # 2 of 3
            b.record("m@x", ok=False)
            await b.sync()
            await a.sync()
            assert a.state("m@x") == b.state("m@x") == "open"

    run(main)


def test_a_sync_that_fails_unexpectedly_does_not_end_the_loop(clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    async def main(prefix: str) -> None:
        async with replicas(SHARED_URL, prefix, clock) as (a, b):
            a.sync_s = 0.02
            await a.start()
            real_run, calls = a.link.run, []

            async def fails_once(action: Any) -> Any:
                calls.append(1)
                if len(calls) == 1:
                    raise RuntimeError("a bug")
                return await real_run(action)

            a.link.run = fails_once  # type: ignore[method-assign]
            for _ in range(3):
                b.record("m@x", ok=False)
            await b.sync()
            with anyio.fail_after(10):  # a later sync of a's loop pulls the circuit b opened
                while a.state("m@x") != "open":
                    await anyio.sleep(0.01)
            assert len(calls) >= 2

    with caplog.at_level(logging.ERROR, logger="switchman.state"):
        run(main)
    assert "redis health sync failed" in caplog.text


@pytest.mark.parametrize(("field", "value", "keys"), [("open_until", "garbage", 1), ("open_until", "nan", 1),
                                                      ("ttft", "fast", 1), ("at", "inf", 1),
                                                      ("open_until", "garbage", ONCE_LIMIT + 20)])
def test_one_malformed_shared_value_is_skipped_and_the_other_keys_still_sync(
        clock: Clock, field: str, value: str, keys: int, caplog: pytest.LogCaptureFixture) -> None:
    """A value no number (another writer, a version skew) under one key: before, its ValueError ended every pull
    (and the replica's start) before the keys after it, for as long as it stayed in Redis. Logged once; and when a
    writer keeps adding such keys, the first ONCE_LIMIT only (`OnceLog`: before, every one was logged and kept)."""
    import redis

    async def main(prefix: str) -> None:
        async with replicas(SHARED_URL, prefix, clock) as (a, b):
            for _ in range(3):
                a.record("good@x", ok=False)
            await a.sync()
            raw = redis.Redis.from_url(SHARED_URL)
            try:
                pipe = raw.pipeline(transaction=False)
                for bad in ("bad@x", *(f"bad{i}@x" for i in range(1, keys))):  # sorted first: pulled before good@x
                    pipe.sadd(a.link.key("health", "keys"), bad)
                    if field == "open_until":
                        pipe.hset(a._circuit_key(bad), "open_until", value)
                    else:
                        pipe.hset(a._mark_key(bad), mapping={"ttft": 100.0, "at": 1_700_000_000.0, field: value})
                pipe.execute()
            finally:
                raw.close()
            with caplog.at_level(logging.WARNING, logger="switchman.state"):
                await b.sync()
                await b.sync()
            assert b.state("good@x") == "open"
            assert b.state("bad@x") == "closed"
            logged = [r.getMessage() for r in caplog.records if "malformed shared state for bad" in r.getMessage()]
            assert len(logged) == min(keys, ONCE_LIMIT)  # once, not at every sync

    run(main)


def test_a_malformed_failure_count_does_not_fail_every_push(clock: Clock) -> None:
    """A circuit's failure count no integer (another writer): before, the push script failed on it at every push
    with a failure of that key, and the pull after it (every other key's state) was skipped each time."""
    import redis

    async def main(prefix: str) -> None:
        async with replicas(SHARED_URL, prefix, clock) as (a, b):
            raw = redis.Redis.from_url(SHARED_URL)
            try:
                raw.hset(a._circuit_key("bad@x"), "failures", "abc")
            finally:
                raw.close()
            for _ in range(3):
                b.record("good@x", ok=False)
            await b.sync()
            a.record("bad@x", ok=False)
            await a.sync()
            assert a.state("good@x") == "open"
            for _ in range(2):
                a.record("bad@x", ok=False)
            await a.sync()
            await b.sync()
            assert b.state("bad@x") == "open"  # counted afresh from the malformed count: three failures

    run(main)
