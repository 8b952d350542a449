"""The rate-limit admission and the budget reservation started side by side: a cancellation stays a cancellation."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from switchman import BudgetExceededError, CallerLimitError
from switchman.gateway import Dispatcher
from switchman.ledger import BudgetManager
from switchman.state import RedisLink, SharedBudgets


def _dispatcher(reserve: Any) -> Any:
    link = RedisLink("redis://127.0.0.1:6379/0", prefix="unused:")
    link.up = True  # never called: the admission and the reservation here are the test's own

    async def admit(context: object, tokens: int) -> None:
        await asyncio.sleep(0)
        raise CallerLimitError("rate limit used up", retry_after=1.0)

    return SimpleNamespace(callers=SimpleNamespace(admit=admit, admit_soon=lambda *_: None), budgets=SharedBudgets(BudgetManager([]), link),
                           _reserve=reserve)


def test_a_request_cancelled_while_reserving_stays_cancelled_though_its_rate_limit_refused() -> None:
    async def main() -> None:
        async def reserve(*_: object) -> None:
            await asyncio.sleep(10)

        exchange = SimpleNamespace(context=None)
        task = asyncio.ensure_future(Dispatcher._admit_and_reserve(  # noqa: SLF001
            _dispatcher(reserve), exchange, SimpleNamespace(input_tokens=5, max_tokens=10), None))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())


def test_a_budget_refusal_with_the_rate_limit_used_up_is_the_rate_limit() -> None:
    async def main() -> None:
        async def reserve(*_: object) -> None:
            raise BudgetExceededError("over budget")

        exchange = SimpleNamespace(context=None)
        with pytest.raises(CallerLimitError):
            await Dispatcher._admit_and_reserve(  # noqa: SLF001
                _dispatcher(reserve), exchange, SimpleNamespace(input_tokens=5, max_tokens=10), None)

    asyncio.run(main())


def test_one_shared_limit_is_admitted_without_a_task_and_refuses_as_admit_does() -> None:
    """On Redis, a request under one limit (an agent's) has its admission script queued at once and read in a
    callback (no task of its own): admitted with the limit's headers, then refused with CallerLimitError once the
    minute's requests are used up; under two limits `admit_soon` declines (they are taken one after the other)."""
    from switchman.gateway._caller_limits import CallerLimits  # noqa: PLC2701
    from switchman.gateway._context import RequestContext  # noqa: PLC2701
    from switchman.state import RedisRateLimiter
    from switchman.testing import forget_prefix, unique_prefix

    url, prefix = "redis://127.0.0.1:6379/0", unique_prefix()
    config: Any = SimpleNamespace(server=SimpleNamespace(key_limits=SimpleNamespace(rpm=None, tpm=None)),
                                  agents={"a": SimpleNamespace(rpm=2, tpm=None)})

    async def main() -> None:
        link = RedisLink(url, prefix=prefix, timeout_s=0.5)
        await link.start()
        await link.command("PING")  # the batches' connection is open: a round trip needs no task now
        callers = CallerLimits(RedisRateLimiter(link), config)
        context = RequestContext(request_id="r", agent="a")
        tasks = len(asyncio.all_tasks())
        first = callers.admit_soon(context, 10)
        assert first is not None and len(asyncio.all_tasks()) == tasks
        admission = await first
        assert admission is not None and admission.limit_requests == 2 and admission.remaining_requests == 1
        second, third = callers.admit_soon(context, 10), callers.admit_soon(context, 10)
        assert second is not None and third is not None
        assert (await second) is not None
        with pytest.raises(CallerLimitError):
            await third
        unlimited = callers.admit_soon(RequestContext(request_id="r"), 10)  # no limit applies
        assert unlimited is not None and await unlimited is None
        config.server.key_limits.rpm = 5  # a key's limit and the agent's: one after the other, with a task
        both = CallerLimits(RedisRateLimiter(link), config)
        assert both.admit_soon(RequestContext(request_id="r", agent="a", key_id="k1"), 10) is None
        await link.aclose()

    try:
        asyncio.run(main())
    finally:
        forget_prefix(url, prefix)


def test_an_admission_queued_while_redis_is_down_is_taken_from_the_local_buckets() -> None:
    """The link down: the queued admission script fails at once and the callback falls back to this process's
    buckets (as `admit` does), so the limit still holds."""
    from switchman.gateway._caller_limits import CallerLimits  # noqa: PLC2701
    from switchman.gateway._context import RequestContext  # noqa: PLC2701
    from switchman.state import RedisRateLimiter

    config: Any = SimpleNamespace(server=SimpleNamespace(key_limits=SimpleNamespace(rpm=None, tpm=None)),
                                  agents={"a": SimpleNamespace(rpm=1, tpm=None)})

    async def main() -> None:
        link = RedisLink("redis://127.0.0.1:6379/0", prefix="unused:")  # never started: down
        callers = CallerLimits(RedisRateLimiter(link), config)
        context = RequestContext(request_id="r", agent="a")
        first = callers.admit_soon(context, 10)
        assert first is not None
        admission = await first
        assert admission is not None and admission.remaining_requests == 0
        again = callers.admit_soon(context, 10)
        assert again is not None
        with pytest.raises(CallerLimitError):
            await again

    asyncio.run(main())
