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

    return SimpleNamespace(callers=SimpleNamespace(admit=admit), budgets=SharedBudgets(BudgetManager([]), link),
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
