"""A request a later limit refuses (the agent's) never holds an earlier one's capacity (the key's), not even for a
moment: concurrent requests under the key alone are all admitted. Before, each limit was admitted in turn and given
back on a refusal (admit-then-refund): on Redis the refused requests' takes from the key's bucket went in the same
round trip as the others' and those saw 429s no limit called for."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any, cast

import anyio
import pytest

from switchman._exceptions import CallerLimitError
from switchman.gateway._caller_limits import CallerLimits
from switchman.gateway._context import RequestContext
from switchman.state import LocalRateLimiter, RateLimiter, RedisLink, RedisRateLimiter
from switchman.testing import forget_prefix, unique_prefix

SHARED_REDIS = "redis://127.0.0.1:6379/0"


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> Iterator[str]:
    prefix = unique_prefix()
    yield request.param if request.param == "memory" else prefix
    if request.param != "memory":
        forget_prefix(SHARED_REDIS, prefix)


def _config(key_rpm: int, agent_rpm: int) -> Any:
    return SimpleNamespace(server=SimpleNamespace(key_limits=SimpleNamespace(rpm=key_rpm, tpm=None)),
                           agents={"metered": SimpleNamespace(rpm=agent_rpm, tpm=None)})


async def _limiter(backend: str) -> tuple[RateLimiter, RedisLink | None]:
    if backend == "memory":
        return LocalRateLimiter(), None
    link = RedisLink(SHARED_REDIS, prefix=backend, timeout_s=2.0)
    await link.check()
    assert link.up
    return RedisRateLimiter(link), link


def test_concurrent_requests_a_later_limit_refuses_take_nothing_from_an_earlier_one(backend: str) -> None:
    async def main() -> None:
        limiter, link = await _limiter(backend)
        callers = CallerLimits(limiter, cast(Any, _config(key_rpm=5, agent_rpm=1)))
        metered = RequestContext(key_id="k", agent="metered")
        plain = RequestContext(key_id="k")
        assert await callers.admit(metered, 10) is not None  # the agent's one a minute is used: the key has 4
        contexts = [context for _ in range(4) for context in (metered, plain)]  # interleaved
        outcomes = await asyncio.gather(*(callers.admit(context, 10) for context in contexts), return_exceptions=True)
        for context, outcome in zip(contexts, outcomes, strict=True):
            if context is plain:
                assert not isinstance(outcome, BaseException), outcome  # the key had room for each of them
            else:
                assert isinstance(outcome, CallerLimitError) and outcome.limits["limit-requests"] == 1  # the agent's
        refused = await asyncio.gather(callers.admit(plain, 10), return_exceptions=True)
        assert isinstance(refused[0], CallerLimitError) and refused[0].limits["limit-requests"] == 5  # now used up
        if link is not None:
            await link.aclose()

    anyio.run(main)
