"""RedisOnlineCounts: feedback given to one replica's online route moves every replica's counts."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import anyio
import numpy as np
import pytest

from switchman._config import OnlineOptions
from switchman._streaks import ONCE_LIMIT
from switchman.learn import LearnedStrategy, OnlineStrategy, TrainedRouter, get_embedder
from switchman.state import RedisLink, RedisOnlineCounts, RedisUnavailable
from switchman.testing import RedisServer

SHARED_URL = "redis://127.0.0.1:6379/0"


def online(router: TrainedRouter) -> OnlineStrategy:
    options = OnlineOptions(enabled=True, exploration=0.05, clusters=2, prior_strength=2.0)
    return OnlineStrategy(LearnedStrategy(router, get_embedder(router.embedder)), options)


async def linked(url: str, prefix: str, timeout_s: float = 2.0, count: int = 2) -> list[RedisLink]:
    """`count` replicas' links to one Redis, checked (up) before the test goes on."""
    links = [RedisLink(url, prefix=prefix, timeout_s=timeout_s) for _ in range(count)]
    for link in links:
        await link.check()
    return links


def counts_of(links: list[RedisLink], strategies: tuple[OnlineStrategy, ...]) -> list[RedisOnlineCounts]:
    """Each replica's shared online counts (route "r")."""
    return [RedisOnlineCounts(link, "r", strategy) for link, strategy in zip(links, strategies, strict=True)]


@asynccontextmanager
async def replicas(
    strategies: tuple[OnlineStrategy, ...], prefix: str, url: str | None = None, timeout_s: float = 2.0,
) -> AsyncIterator[tuple[list[RedisLink], list[RedisOnlineCounts]]]:
    """One replica a strategy on one Redis (the shared one by default, read now: the Cluster tests swap it): their
    links (up) and shared counts (`counts_of`), closed afterwards."""
    links = await linked(url or SHARED_URL, prefix, timeout_s, count=len(strategies))
    shared = counts_of(links, strategies)
    try:
        yield links, shared
    finally:
        for replica in shared:
            await replica.aclose()
        for link in links:
            await link.aclose()


def written_by_another(key: str, fields: Mapping[str | bytes, str]) -> None:
    """`fields` set in the hash at `key` on the shared Redis, as another writer (a version skew) would."""
    import redis

    raw = redis.Redis.from_url(SHARED_URL)
    try:
        raw.hset(key, mapping=dict(fields))
    finally:
        raw.close()


def test_feedback_on_one_replica_reaches_the_others(math_greeting_router: TrainedRouter, prefix: str) -> None:
    a, b = online(math_greeting_router), online(math_greeting_router)
    prior = a.counts.snapshot()
    model = math_greeting_router.model_names[0]

    async def main() -> None:
        async with replicas((a, b), prefix) as (_, shared):
            for _ in range(10):
                assert a.observe(0, model, 1.0)
            assert b.observe(1, model, 0.0)
            for replica in (*shared, *shared):
                await replica.sync()
            for strategy in (a, b):
                alpha, beta = strategy.counts.snapshot()
                assert alpha[0, 0] == prior[0][0, 0] + 10 and beta[0, 0] == prior[1][0, 0]
                assert alpha[1, 0] == prior[0][1, 0] and beta[1, 0] == prior[1][1, 0] + 1

    anyio.run(main)


def test_redis_down_a_replica_learns_alone_and_pushes_later(math_greeting_router: TrainedRouter, prefix: str) -> None:
    a, b = online(math_greeting_router), online(math_greeting_router)
    prior = a.counts.snapshot()
    model = math_greeting_router.model_names[1]

    async def main() -> None:
        with RedisServer() as server:
            async with replicas((a, b), prefix, server.url, timeout_s=0.5) as (links, shared):
                server.stop()
                assert a.observe(0, model, 1.0)
                await shared[0].sync()  # no error; the score counts here at once
                assert a.counts.snapshot()[0][0, 1] == prior[0][0, 1] + 1
                server.start()
                for link in links:
                    with anyio.fail_after(10):
                        while not await link.check():
                            await anyio.sleep(0.05)
                await shared[0].sync()
                await shared[1].sync()
                assert np.array_equal(b.counts.snapshot()[0], a.counts.snapshot()[0])
                assert b.counts.snapshot()[0][0, 1] == prior[0][0, 1] + 1

    anyio.run(main)


def test_replicas_on_different_routers_keep_apart(math_greeting_router: TrainedRouter) -> None:
    a = online(math_greeting_router)
    link = RedisLink(SHARED_URL, prefix="x:")
    key = RedisOnlineCounts(link, "r", a).key
    assert key.startswith("x:{online:r:") and len(key) == len("x:{online:r:}") + 16


def test_a_push_sent_again_after_a_timeout_redis_had_run_counts_once(
        math_greeting_router: TrainedRouter, prefix: str) -> None:
    a, b = online(math_greeting_router), online(math_greeting_router)
    prior = a.counts.snapshot()
    model = math_greeting_router.model_names[0]

    async def main() -> None:
        async with replicas((a, b), prefix) as (links, shared):
            real_eval = links[0].eval

            async def ran_then_timed_out(*args: Any) -> Any:
                await real_eval(*args)  # Redis ran the push ...
                raise RedisUnavailable("timed out")  # ... but its answer came too late

            assert a.observe(0, model, 1.0)
            links[0].eval = ran_then_timed_out  # type: ignore[method-assign]
            await shared[0].sync()
            links[0].eval = real_eval  # type: ignore[method-assign]
            await shared[0].sync()  # the same push again
            await shared[1].sync()
            for strategy in (a, b):
                assert strategy.counts.snapshot()[0][0, 0] == prior[0][0, 0] + 1

    anyio.run(main)


def test_a_sync_that_fails_unexpectedly_does_not_end_the_loop(math_greeting_router: TrainedRouter, prefix: str,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    a, b = online(math_greeting_router), online(math_greeting_router)
    prior = a.counts.snapshot()
    model = math_greeting_router.model_names[0]

    async def main() -> None:
        links = await linked(SHARED_URL, prefix)
        looping = RedisOnlineCounts(links[0], "r", a, sync_s=0.02)
        other = RedisOnlineCounts(links[1], "r", b)
        await looping.start()
        real_eval, calls = links[0].eval, []

        async def fails_once(*args: Any) -> Any:
            calls.append(1)
            if len(calls) == 1:
                raise RuntimeError("a bug")
            return await real_eval(*args)

        links[0].eval = fails_once  # type: ignore[method-assign]
        assert b.observe(0, model, 1.0)
        await other.sync()
        with anyio.fail_after(10):  # a later sync of the loop brings b's feedback to a
            while a.counts.snapshot()[0][0, 0] != prior[0][0, 0] + 1:
                await anyio.sleep(0.01)
        assert len(calls) >= 2
        await looping.aclose()
        await other.aclose()
        for link in links:
            await link.aclose()

    with caplog.at_level(logging.ERROR, logger="switchman.state"):
        anyio.run(main)
    assert "redis online counts sync failed" in caplog.text


@pytest.mark.parametrize(("value", "spellings"), [("garbage", 1), ("nan", 1), ("inf", 1), ("garbage", ONCE_LIMIT + 20)])
def test_one_malformed_shared_count_is_skipped_and_the_others_still_sync(
        math_greeting_router: TrainedRouter, value: str, spellings: int, caplog: pytest.LogCaptureFixture,
        prefix: str) -> None:
    """A count no finite number (another writer, a version skew): before, its ValueError ended every sync (and the
    replica's start) after the push, so no replica's counts moved again while it stayed in Redis (a NaN or an
    infinity went into the counts). Logged once; and when a writer spells the field ever anew (`a:01:m`, `a:001:m`,
    ...), the first ONCE_LIMIT spellings only (`OnceLog`: before, every one was logged and remembered)."""
    a, b = online(math_greeting_router), online(math_greeting_router)
    prior = b.counts.snapshot()
    models = math_greeting_router.model_names

    async def main() -> None:
        async with replicas((a, b), prefix) as (_, shared):
            written_by_another(shared[0].key, {f"a:{'0' * i}1:{models[0]}": value for i in range(spellings)})
            for _ in range(4):
                assert a.observe(0, models[0], 1.0)
            await shared[0].sync()
            caplog.clear()
            with caplog.at_level(logging.WARNING, logger="switchman.state"):
                await shared[1].sync()
                await shared[1].sync()
            alpha, _ = b.counts.snapshot()
            assert alpha[0, 0] == prior[0][0, 0] + 4
            assert alpha[1, 0] == prior[0][1, 0]  # the malformed count left out
            malformed = [r for r in caplog.records if "malformed count" in r.getMessage()]
            assert len(malformed) == min(spellings, ONCE_LIMIT)

    anyio.run(main)


@pytest.mark.parametrize("value", ["garbage", "1e400"])
def test_a_malformed_count_a_push_adds_to_is_dropped_and_the_push_goes_through(
        math_greeting_router: TrainedRouter, value: str, prefix: str) -> None:
    """Before, HINCRBYFLOAT failed on it halfway through the push script: the push was sent again at every sync
    and failed again, the fields before it counted once more each time, and no replica saw this one's feedback."""
    a, b = online(math_greeting_router), online(math_greeting_router)
    prior = b.counts.snapshot()
    models = math_greeting_router.model_names

    async def main() -> None:
        async with replicas((a, b), prefix) as (_, shared):
            written_by_another(shared[0].key, {f"b:0:{models[0]}": value})
            for _ in range(4):
                assert a.observe(0, models[0], 1.0)
            for replica in (shared[0], shared[0], shared[1]):
                await replica.sync()
            alpha, _ = b.counts.snapshot()
            assert alpha[0, 0] == pytest.approx(prior[0][0, 0] + 4)  # counted once, not once a sync

    anyio.run(main)


@pytest.mark.parametrize("field", [b"a:\xff:m", "a:\u00b2:{model}"])
def test_a_malformed_shared_field_name_is_skipped_and_the_others_still_sync(
        math_greeting_router: TrainedRouter, field: str | bytes, prefix: str) -> None:
    """A field name no UTF-8, or a cluster number no int() takes (a superscript digit passes isdigit): before,
    its UnicodeDecodeError / ValueError ended every sync the way a malformed count did."""
    a, b = online(math_greeting_router), online(math_greeting_router)
    prior = b.counts.snapshot()
    models = math_greeting_router.model_names
    name = field.format(model=models[0]) if isinstance(field, str) else field

    async def main() -> None:
        async with replicas((a, b), prefix) as (_, shared):
            written_by_another(shared[0].key, {name: "1"})
            for _ in range(4):
                assert a.observe(0, models[0], 1.0)
            await shared[0].sync()
            await shared[1].sync()
            alpha, _ = b.counts.snapshot()
            assert alpha[0, 0] == prior[0][0, 0] + 4

    anyio.run(main)


def test_a_push_redis_refuses_for_memory_keeps_the_learned_counts_and_is_sent_again(
        math_greeting_router: TrainedRouter, prefix: str) -> None:
    """Under maxmemory (noeviction) Redis refuses the push's first write. Before, the script took any refusal for
    a malformed count: it deleted the field and wrote the push's amount alone ({a: 10} + 1 -> {a: 1}), a
    learned count lost. Now the push fails whole (the link down: OOM refuses every write) and is sent again, counted
    once, when Redis has room and the link is back."""
    import redis

    a = online(math_greeting_router)
    models = math_greeting_router.model_names
    alpha_field, beta_field = f"a:0:{models[0]}", f"b:0:{models[0]}"

    async def main() -> None:
        with RedisServer() as server:
            raw = redis.Redis.from_url(server.url)
            try:
                async with replicas((a,), prefix, server.url) as ([link], [shared]):
                    raw.hset(shared.key, mapping={alpha_field: "10", beta_field: "20"})
                    raw.set("filler", "x" * 2_000_000)
                    raw.config_set("maxmemory-policy", "noeviction")
                    raw.config_set("maxmemory", int(raw.info("memory")["used_memory"]) - 1000)
                    assert a.observe(0, models[0], 1.0)
                    await shared.sync()  # refused: the batch stays unsent
                    assert raw.hgetall(shared.key) == {alpha_field.encode(): b"10", beta_field.encode(): b"20"}
                    assert not link.up  # OOM is the server's condition: the link goes down until Redis can write
                    raw.config_set("maxmemory", 0)
                    assert await link.check()  # (the watcher's check)
                    await shared.sync()
                    await shared.sync()  # nothing sent twice
                    kept = {k.decode(): float(v) for k, v in raw.hgetall(shared.key).items()}
                    assert kept == {alpha_field: 11.0, beta_field: 20.0}
            finally:
                raw.close()

    anyio.run(main)
