"""RedisOnlineCounts: feedback given to one replica's online route moves every replica's counts."""

from __future__ import annotations

import anyio
import numpy as np

from switchman._config import OnlineOptions
from switchman.learn import LearnedStrategy, OnlineStrategy, TrainedRouter, get_embedder
from switchman.state import RedisLink, RedisOnlineCounts
from switchman.testing import RedisServer, forget_prefix, unique_prefix

SHARED_URL = "redis://127.0.0.1:6379/0"


def online(router: TrainedRouter) -> OnlineStrategy:
    options = OnlineOptions(enabled=True, exploration=0.05, clusters=2, prior_strength=2.0)
    return OnlineStrategy(LearnedStrategy(router, get_embedder(router.embedder)), options)


def test_feedback_on_one_replica_reaches_the_others(math_greeting_router: TrainedRouter) -> None:
    prefix = unique_prefix()
    a, b = online(math_greeting_router), online(math_greeting_router)
    prior = a.counts.snapshot()
    model = math_greeting_router.model_names[0]

    async def main() -> None:
        links = [RedisLink(SHARED_URL, prefix=prefix, timeout_s=0.5) for _ in range(2)]
        for link in links:
            await link.check()
        shared = [RedisOnlineCounts(link, "r", strategy) for link, strategy in zip(links, (a, b), strict=True)]
        for _ in range(10):
            assert a.observe(0, model, 1.0)
        assert b.observe(1, model, 0.0)
        for replica in (*shared, *shared):
            await replica.sync()
        for strategy in (a, b):
            alpha, beta = strategy.counts.snapshot()
            assert alpha[0, 0] == prior[0][0, 0] + 10 and beta[0, 0] == prior[1][0, 0]
            assert alpha[1, 0] == prior[0][1, 0] and beta[1, 0] == prior[1][1, 0] + 1
        for replica in shared:
            await replica.aclose()
        for link in links:
            await link.aclose()

    try:
        anyio.run(main)
    finally:
        forget_prefix(SHARED_URL, prefix)


def test_redis_down_a_replica_learns_alone_and_pushes_later(math_greeting_router: TrainedRouter) -> None:
    prefix = unique_prefix()
    a, b = online(math_greeting_router), online(math_greeting_router)
    prior = a.counts.snapshot()
    model = math_greeting_router.model_names[1]

    async def main() -> None:
        with RedisServer() as server:
            links = [RedisLink(server.url, prefix=prefix, timeout_s=0.5) for _ in range(2)]
            for link in links:
                await link.check()
            shared = [RedisOnlineCounts(link, "r", strategy) for link, strategy in zip(links, (a, b), strict=True)]
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
            for link in links:
                await link.aclose()

    anyio.run(main)


def test_replicas_on_different_routers_keep_apart(math_greeting_router: TrainedRouter) -> None:
    a = online(math_greeting_router)
    link = RedisLink(SHARED_URL, prefix="x:")
    key = RedisOnlineCounts(link, "r", a).key
    assert key.startswith("x:{online:r:") and len(key) == len("x:{online:r:}") + 16
