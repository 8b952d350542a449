"""A clock the state tests move by hand, a key prefix of their own on the shared Redis, and a shared budget's keys
and hold deadlines read and moved there."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import anyio
import pytest
from clock_support import Clock

from switchman._config import BudgetConfig
from switchman.ledger import period_bounds
from switchman.state import RedisLink
from switchman.testing import forget_prefix, unique_prefix

from .redis_support import SHARED_REDIS_URL


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def prefix() -> Iterator[str]:
    """A key prefix no other test uses on the shared Redis; its keys are deleted afterwards."""
    prefix = unique_prefix()
    yield prefix
    forget_prefix(SHARED_REDIS_URL, prefix)


async def kill_idle_connection(link: RedisLink) -> int:
    """Redis closes the link's own connection while it is idle (CLIENT KILL, as its `timeout` setting would), and the
    event loop has seen the close (the connection no longer usable); its client id."""
    own = int(await link.command("CLIENT", "ID"))
    with anyio.fail_after(2):
        while not link._idle:  # noqa: SLF001  (back once its round trip is done)
            await asyncio.sleep(0)
    pipe = link._idle[0]  # noqa: SLF001
    assert await link.run(lambda r: r.client_kill_filter(_id=own)) == 1
    with anyio.fail_after(2):
        while pipe.usable:
            await asyncio.sleep(0.01)
    return own


def budget_key(link: RedisLink, budget: BudgetConfig, now: float | None = None) -> str:
    """The Redis hash of `budget`'s period at `now` (a test's injected clock; the wall clock's period by default)."""
    start, _ = period_bounds(time.time() if now is None else now, budget.period)
    return link.key(f"budget:{budget.scope}:{budget.name}", budget.period, str(int(start)))


async def hold_deadline(link: RedisLink, budget: BudgetConfig, rid: str, now: float | None = None) -> float:
    """Reservation `rid`'s deadline in `budget` (Redis time, ms)."""
    return float(await link.command("ZSCORE", f"{budget_key(link, budget, now)}:deadlines", rid))


async def move_deadline(link: RedisLink, budget: BudgetConfig, rid: str, at_ms: float = 0,
                        now: float | None = None) -> None:
    """Set reservation `rid`'s deadline in `budget` (the past by default: as if `hold_s` had passed; the next script
    sweeps it). The deadline is Redis's own time, so a test that slept past a short `hold_s` raced it under load."""
    assert await link.command("ZADD", f"{budget_key(link, budget, now)}:deadlines", "XX", "CH", at_ms, rid) == 1
