"""Budget spend and reservations in Redis, so every replica checks one counter per budget.

    budgets = SharedBudgets(BudgetManager(config.budgets, ledger), link)
    link.on_resync(budgets.rebuild)                        # counters rebuilt from the ledger
    r = await budgets.areserve(agent="triage", key_id=None, route="default", estimated_usd=0.002, model="gpt-4o")
    await r.aresize(0.004, model="gpt-4o")                 # a dearer fallback, checked again
    r.settle(actual_usd)                                   # or r.release(); written in the background

Each budget's current period is one Redis hash, `<prefix>{budget:<scope>:<name>}:<period>:<start>`,
with `spent` and `reserved`; one Lua script checks `spent + reserved + estimate <= limit` and adds
the estimate to `reserved` in one step, so concurrent requests on any replica cannot all pass a
check only one of them fits: the most a budget is overspent by is what answers cost beyond their
reserved worst case. A request under several budgets (agent, key, route) reserves in each in turn
(each budget on its own Cluster slot) and gives back what it took if a later one refuses.
Settling replaces the estimate with the actual cost.

The ledger stays the record. `rebuild` (at start, after Redis comes back, and when budgets are
added) raises each counter to the ledger's spend for the period; when Redis lost its data (the
marker key is gone) counters restart from the ledger with nothing reserved. Settles that could not
be written while Redis was down are replayed first. While Redis is down, `BudgetManager` (the
ledger-based local check, refreshed from the ledger every few seconds) decides.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import anyio.to_thread

from .._config import BudgetConfig
from .._exceptions import BudgetLimitError
from ..ledger import BudgetManager, Reservation, period_bounds
from ._redis_link import RedisLink, RedisUnavailable

__all__ = ["SharedBudgets"]

logger = logging.getLogger("switchman.state")

#: Slack for float rounding, as in the local manager.
_EPSILON_USD = 1e-9
#: Settles kept for replay while Redis is down (beyond this, the rebuild from the ledger covers them).
_MAX_UNSENT = 100_000

# KEYS[1] the budget's hash; ARGV: limit, amount, ttl_s, check (1) or not (0).
# Adds `amount` to reserved when spent + reserved + amount fits the limit; returns {ok, spent, reserved}.
_RESERVE = """
local spent = tonumber(redis.call('HGET', KEYS[1], 'spent') or '0')
local reserved = tonumber(redis.call('HGET', KEYS[1], 'reserved') or '0')
local amount = tonumber(ARGV[2])
if ARGV[4] == '1' and amount > 0 and spent + reserved + amount > tonumber(ARGV[1]) then
  return {0, tostring(spent), tostring(reserved)}
end
reserved = reserved + amount
if reserved < 0 then reserved = 0 end
redis.call('HSET', KEYS[1], 'reserved', tostring(reserved))
redis.call('EXPIRE', KEYS[1], ARGV[3])
return {1, tostring(spent), tostring(reserved)}
"""

# KEYS[1]; ARGV: reserved amount to drop, actual cost, ttl_s.
_SETTLE = """
local reserved = tonumber(redis.call('HGET', KEYS[1], 'reserved') or '0') - tonumber(ARGV[1])
if reserved < 0 then reserved = 0 end
redis.call('HSET', KEYS[1], 'reserved', tostring(reserved))
redis.call('HINCRBYFLOAT', KEYS[1], 'spent', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""

# KEYS[1]; ARGV: the ledger's spend, lost (1: Redis lost its data: restart from the ledger), ttl_s.
_REBUILD = """
local ledger = tonumber(ARGV[1])
if ARGV[2] == '1' then
  redis.call('HSET', KEYS[1], 'spent', tostring(ledger), 'reserved', '0')
else
  local spent = tonumber(redis.call('HGET', KEYS[1], 'spent') or '0')
  if ledger > spent then redis.call('HSET', KEYS[1], 'spent', tostring(ledger)) end
end
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""

_Hold = tuple[str, BudgetConfig, float]  # the hash key, the budget, the period's end


class SharedReservation(Reservation):
    """An estimate held in Redis against budgets; settled or released in the background."""

    __slots__ = ("_holds", "_shared")

    def __init__(self, shared: SharedBudgets, holds: Sequence[_Hold], estimated_usd: float, model: str | None):
        super().__init__(None, (), estimated_usd, model=model)
        self._shared = shared
        self._holds = tuple(holds)
        self._done = False

    @property
    def budgets(self) -> tuple[BudgetConfig, ...]:
        """The budgets this reservation is held against."""
        return tuple(budget for _, budget, _ in self._holds)

    def resize(self, estimated_usd: float, *, model: str | None = None) -> bool:
        """Synchronously only a decrease can be held (a growth needs Redis: use `aresize`)."""
        if self._done or estimated_usd > self.estimated_usd:
            return self._done
        return True  # the smaller estimate is given back when the reservation is settled

    async def aresize(self, estimated_usd: float, *, model: str | None = None) -> bool:
        """Hold `estimated_usd` instead, checked in Redis; False and nothing changed when a budget cannot take it."""
        if self._done:
            return True
        model = model or self._model
        delta = max(estimated_usd, 0.0) - self.estimated_usd
        if delta <= 0:
            return True
        if not await self._shared.hold(self._holds, delta, model):
            return False
        self.estimated_usd, self._model = max(estimated_usd, 0.0), model
        return True

    def settle(self, actual_usd: float) -> None:
        """Replace the estimate with the actual cost (idempotent)."""
        if not self._done:
            self._done = True
            self._shared.settle(self._holds, self.estimated_usd, max(actual_usd, 0.0))

    def release(self) -> None:
        """Drop the reservation without charging anything."""
        self.settle(0.0)


class SharedBudgets:
    """The `Budgets` interface on Redis, with a local `BudgetManager` for definitions and as the fallback."""

    def __init__(self, local: BudgetManager, link: RedisLink, *, clock: Callable[[], float] = time.time) -> None:
        self.local = local
        self.link = link
        self._clock = clock
        self._unsent: list[tuple[str, float, float]] = []  # settles Redis missed: (key, reserved, actual)
        self._tasks: set[asyncio.Task[None]] = set()

    def _key(self, budget: BudgetConfig, start: float) -> str:
        return self.link.key(f"budget:{budget.scope}:{budget.name}", budget.period, str(int(start)))

    def _ttl(self, end: float) -> int:
        return max(int(end - self._clock()), 0) + 86_400  # kept a day past the period, then gone

    # -- the Budgets interface ---------------------------------------------------------------------
    def reserve(
        self, *, agent: str | None, key_id: str | None, route: str | None, estimated_usd: float,
        model: str | None = None,
    ) -> Reservation:
        """The local check (synchronous callers; the gateway uses `areserve`)."""
        return self.local.reserve(agent=agent, key_id=key_id, route=route, estimated_usd=estimated_usd, model=model)

    async def areserve(
        self, *, agent: str | None, key_id: str | None, route: str | None, estimated_usd: float,
        model: str | None = None,
    ) -> Reservation:
        """Hold `estimated_usd` in every budget that applies, in Redis (locally while Redis is down)."""
        budgets = self.local.applying(agent=agent, key_id=key_id, route=route)
        if not budgets:
            return Reservation(None, (), estimated_usd)
        if not self.link.up:
            return self.reserve(agent=agent, key_id=key_id, route=route, estimated_usd=estimated_usd, model=model)
        now, estimate = self._clock(), max(estimated_usd, 0.0)
        holds: list[_Hold] = []
        for budget in budgets:
            start, end = period_bounds(now, budget.period)
            holds.append((self._key(budget, start), budget, end))
        try:
            refused = await self._hold_each(holds, estimate, model)
        except RedisUnavailable:
            return self.reserve(agent=agent, key_id=key_id, route=route, estimated_usd=estimated_usd, model=model)
        if refused is None:
            return SharedReservation(self, holds, estimate, model)
        (_, budget, end), spent, reserved = refused
        if budget.on_exceed == "downgrade" and budget.downgrade_to is not None:
            return Reservation(None, (), estimated_usd, downgrade_to=budget.downgrade_to)
        raise BudgetLimitError(budget, spent_usd=spent, reserved_usd=reserved, estimated_usd=estimate, resets_at=end)

    async def _hold_each(
        self, holds: Sequence[_Hold], amount: float, model: str | None
    ) -> tuple[_Hold, float, float] | None:
        """Add `amount` to each budget's reservations; on a refusal give back what was taken and say which."""
        taken: list[_Hold] = []
        try:
            for hold in holds:
                key, budget, end = hold
                exempt = budget.on_exceed == "downgrade" and model is not None and model == budget.downgrade_to
                ok, spent, reserved = await self.link.eval(
                    _RESERVE, [key], [budget.usd + _EPSILON_USD, amount, self._ttl(end), 0 if exempt else 1])
                if not int(ok):
                    self.settle(taken, amount, 0.0)
                    return hold, float(spent), float(reserved)
                taken.append(hold)
        except RedisUnavailable:
            self.settle(taken, amount, 0.0)
            raise
        return None

    async def hold(self, holds: Sequence[_Hold], amount: float, model: str | None) -> bool:
        """Grow a reservation by `amount` in every budget, or in none (True while Redis is down)."""
        try:
            return await self._hold_each(holds, amount, model) is None
        except RedisUnavailable:
            return True  # degraded: new requests meet the local check

    def settle(self, holds: Sequence[_Hold], reserved: float, actual: float) -> None:
        """Give back `reserved` and count `actual` in each budget, in the background."""
        for key, _, end in holds:
            self._background(self._settle_one(key, reserved, actual, self._ttl(end)))

    async def _settle_one(self, key: str, reserved: float, actual: float, ttl: int) -> None:
        try:
            await self.link.eval(_SETTLE, [key], [reserved, actual, ttl])
        except RedisUnavailable:
            if len(self._unsent) < _MAX_UNSENT:
                self._unsent.append((key, reserved, actual))

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        try:
            task = asyncio.get_running_loop().create_task(work)
        except RuntimeError:  # no event loop: nothing to write with
            work.close()
            return
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def refresh(self) -> bool:
        """The local fallback's counters from the ledger (blocking: run it in a thread)."""
        return self.local.refresh()

    def set_scope(self, scope: str, budgets: Sequence[BudgetConfig]) -> bool:
        """Replace one scope's budgets; new ones get their counters from the ledger."""
        changed = self.local.set_scope(scope, budgets)
        if changed:
            self.rebuild_soon()
        return changed

    def add(self, budget: BudgetConfig) -> None:
        """Start enforcing one more budget (a key created while the gateway runs)."""
        self.local.add(budget)
        self.rebuild_soon()

    def usage(self) -> list[tuple[BudgetConfig, float, float]]:
        """(budget, spent, reserved) as the local fallback counts them."""
        return self.local.usage()

    # -- resync --------------------------------------------------------------------------------
    async def rebuild(self) -> None:
        """Replay missed settles, then raise every counter to the ledger's spend (restart from it if Redis lost
        its data). Raises RedisUnavailable when Redis goes away meanwhile."""
        totals = await anyio.to_thread.run_sync(self.local.ledger_spend)
        marker = self.link.key("budgets", "epoch")
        lost = not await self.link.run(lambda r: r.exists(marker))
        unsent, self._unsent = self._unsent, []
        for key, reserved, actual in unsent:
            await self.link.eval(_SETTLE, [key], [reserved, actual, 86_400 * 32])
        now = self._clock()
        for budget in self.local.budgets():
            start, end = period_bounds(now, budget.period)
            spend = (totals or {}).get((budget.scope, budget.period), {}).get(budget.name, 0.0)
            await self.link.eval(_REBUILD, [self._key(budget, start)], [spend, int(lost), self._ttl(end)])
        await self.link.run(lambda r: r.set(marker, b"1"))
        if totals is None:
            logger.warning("budget counters in Redis kept as they are: the ledger could not be read")

    def rebuild_soon(self) -> None:
        """Rebuild in the background (budgets defined anew by a reload), when Redis is up."""
        if self.link.up:
            self._background(self._rebuild_quietly())

    async def _rebuild_quietly(self) -> None:
        try:
            await self.rebuild()
        except RedisUnavailable:
            pass  # the link's resync rebuilds when Redis is back
