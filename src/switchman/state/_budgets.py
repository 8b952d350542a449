"""Budget spend and reservations in Redis, so every replica checks one counter per budget.

    budgets = SharedBudgets(BudgetManager(config.budgets, ledger), link)
    link.on_resync(budgets.rebuild)                        # counters rebuilt from the ledger
    r = await budgets.areserve(agent="triage", key_id=None, route="default", estimated_usd=0.002, model="gpt-4o")
    await r.aresize(0.004, model="gpt-4o")                 # a dearer fallback, checked again
    r.settle(actual_usd)                                   # or r.release(); written in the background, batched
    await budgets.drain()                                  # at shutdown: the settles in flight reach Redis

Each budget's current period has four keys under one hash tag, `<prefix>{budget:<scope>:<name>}:<period>:<start>`
(a hash: `spent`, `reserved`), `...:held` (reservation id -> amount), `...:deadlines` (id -> deadline, Redis
time) and `...:done` (ids settled lately). One Lua script checks `spent + reserved + estimate <= limit` and
adds the estimate to the reservation in one step, so concurrent requests on any replica cannot all pass a
check only one of them fits: the most a budget is overspent by is what answers cost beyond their reserved
worst case. A request under several budgets (agent, key, route; several periods each) is held in all of them or
in none by one script over all their keys, one round trip: no replica ever sees a part of it held. On a Cluster
each budget is a slot of its own, so it is one script per slot in turn, what the earlier ones took given back
when a later one refuses or the request is cancelled meanwhile (as the rate limits' `admit_all`). A refusal is
decided as by the local check, whether Redis is up or not: a downgrade budget over its limit wins over a reject
budget checked before it (on a Cluster the later slots are checked, holding nothing), and a $0 estimate on a budget
spent past its limit is refused. Two budgets of one scope, name and period share their counter: held once, each
checked against its own limit.

A smaller `aresize` gives the difference back in Redis before it returns, a smaller `resize` at once in the
background (an `aresize` after it waits for that give-back), so other requests fit the room it frees.

Every reservation has an id and a deadline (`hold_s` after it was taken or last resized): each script first
drops the reservations past their deadline, so a reservation nobody settles (a replica killed mid-request, a
settle lost at a timeout) stops counting after `hold_s` instead of for the whole period. Settling is
idempotent per id: it removes the reservation, adds the actual cost and records the id as done, so a settle
sent again (a replay after a timeout that Redis had in fact run) counts nothing twice. Settles are written in
the background in batches, one script per budget every `SETTLE_EVERY_S` (20 ms) whatever the request rate,
so a settled reservation goes on counting that much longer (a check is then stricter, never looser).

The ledger stays the record. `rebuild` (at start, after Redis comes back, and when budgets are added)
replays the settles Redis missed, then raises each `spent` to the ledger's spend for the period; it never
touches reservations. The marker key holds an epoch, new each time Redis lost its data: settles missed
before that are not replayed (the ledger the counters restart from has them, and so would count them twice
with another replica's rebuild). When the ledger cannot be read and Redis lost its data (the marker key is gone) the
counters would start from $0, so the rebuild fails instead: the replica stays on the local check
(`BudgetManager`, the ledger-based fallback that also decides while Redis is down) and the link tries again.

The Lua scripts themselves are in `_redis_budget_lua`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import os
import time
import uuid
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import anyio.to_thread

from .._config import BudgetConfig
from .._exceptions import BudgetLimitError
from .._streaks import OnceLog
from ..ledger import BudgetManager, Period, Reservation, period_bounds
from ._redis_budget_lua import FAIL, KEEP, REBUILD, REPAIR, RESERVE, SETTLE_MANY, UNKNOWN
from ._redis_link import RedisLink, RedisRefused, RedisUnavailable

__all__ = ["SharedBudgets"]

logger = logging.getLogger("switchman.state")

#: Slack for float rounding, as in the local manager.
_EPSILON_USD = 1e-9
#: Settles kept for replay while Redis is down (beyond this, the rebuild from the ledger covers them).
_MAX_UNSENT = 100_000
#: How long a settled id is remembered (a settle replayed later than this is dropped: the rebuild raises `spent`
#: to the ledger, which has it). Redis keeps ~150 bytes per settled request and budget for this long (measured).
DONE_KEEP_S = 600.0
#: A reservation nobody settles, resizes or gives back to stops counting this long after it was taken or last resized
#: (a growth and a give-back both move its deadline; longer than a request).
HOLD_S = 900.0
#: Settles are written in batches this often (one script per budget per batch).
SETTLE_EVERY_S = 0.02


class _ReservationIds:
    """Reservation ids: a random prefix per process (drawn anew in a forked child) and a serial number — unique
    across replicas, workers and restarts, and cheaper than a uuid4 per request (which reads the random source)."""

    def __init__(self) -> None:
        self.renew()

    def renew(self) -> None:
        """A new prefix (at import, and in a forked child: its parent's serials would repeat)."""
        self.prefix = uuid.uuid4().hex[:16] + "-"
        self.serials = itertools.count()

    def next(self) -> str:
        """The next id."""
        return f"{self.prefix}{next(self.serials):x}"


_IDS = _ReservationIds()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_IDS.renew)

_Hold = tuple[str, BudgetConfig, float]  # the counter key, the budget, the period's end
#: The TTL of a counter a missed settle is written to (its period's end is not kept with it).
_REPLAY_TTL_S = 86_400 * 32
_Unsent = tuple[str, str, float, float, str | None]  # a settle Redis missed: key, id, actual, when (monotonic), epoch


class _Pending:
    """What budgets replaced by a reload share with their successor: settles to replay, tasks, Redis's epoch."""

    def __init__(self) -> None:
        self.unsent: list[_Unsent] = []
        self.tasks: set[asyncio.Task[None]] = set()
        #: Settles waiting for the next flush: counter key -> (ttl, [(id, actual)]).
        self.batch: dict[str, tuple[int, list[tuple[str, float]]]] = {}
        #: A flush of the batch is on its way (cleared when it ran or never could: the next settle schedules one).
        self.flushing = False
        #: The marker's value at the last rebuild: a new one means Redis lost its data (and the settles
        #: missed before that are in the ledger the new counters were rebuilt from: replaying them would
        #: count them twice).
        self.epoch: str | None = None


def _keys(key: str) -> list[str]:
    """A budget period's four keys (one hash tag: one Cluster slot)."""
    return [key, f"{key}:held", f"{key}:deadlines", f"{key}:done"]


async def _after(before: asyncio.Task[None] | None, work: Coroutine[Any, Any, None]) -> None:
    """`work` once `before` is over (a resize's give-back after the one before it: the last is the one to wait for);
    cancelled before, `work` is closed (not left never awaited)."""
    try:
        if before is not None:
            await asyncio.wait([before])
    except BaseException:
        work.close()
        raise
    await work


class SharedReservation(Reservation):
    """An estimate held in Redis against budgets under one id; settled or released in the background. Not resized by
    two tasks at once (as every `Reservation`): each resize in flight gives back or adds from the estimate it read."""

    __slots__ = ("_giving", "_holds", "_in_redis", "_shared", "id")

    def __init__(
        self, shared: SharedBudgets, holds: Sequence[_Hold], estimated_usd: float, model: str | None, rid: str,
    ) -> None:
        super().__init__(None, (), estimated_usd, model=model)
        self._shared = shared
        self._holds = tuple(holds)
        self._done = False
        #: What Redis is known to hold for it (less than the estimate after a growth only the local check let
        #: through): a shrink gives back no more than this beyond the new estimate.
        self._in_redis = estimated_usd
        #: The give-back of the last `resize` still on its way (a later one, and `aresize`, wait for it).
        self._giving: asyncio.Task[None] | None = None
        self.id = rid

    @property
    def budgets(self) -> tuple[BudgetConfig, ...]:
        """The budgets this reservation is held against."""
        return tuple(budget for _, budget, _ in self._holds)

    def resize(self, estimated_usd: float, *, model: str | None = None) -> bool:
        """Synchronously only a decrease can be held (a growth needs Redis: use `aresize`); what it gives back is
        given back in Redis in the background."""
        if self._done:
            return True
        estimate = max(estimated_usd, 0.0)
        if not estimate <= self.estimated_usd:  # a growth (or a NaN)
            return False
        shrink = self._shrink_to(estimate, model or self._model)
        if shrink is not None:
            self._giving = self._shared.shrink_soon(_after(self._giving, shrink))
            if self._giving is None:  # no event loop: `_after` closed before it began, `shrink` with it
                shrink.close()
        return True

    async def _given(self) -> None:
        """Wait for the give-back of a `resize` on its way: a growth sent before it would be checked in Redis against
        the larger hold, and refused what the local check holds."""
        if self._giving is not None:
            await asyncio.wait([self._giving])
            self._giving = None

    async def aresize(self, estimated_usd: float, *, model: str | None = None) -> bool:
        """Hold `estimated_usd` instead, checked in Redis (by the local check while Redis is down); False and
        nothing changed when a budget cannot take it. A decrease is given back in Redis before it returns."""
        if self._done:
            return True
        model = model or self._model
        estimate = max(estimated_usd, 0.0)
        if not math.isfinite(estimate):  # held, a NaN would disable the budget
            return False
        await self._given()
        delta = estimate - self.estimated_usd
        if delta <= 0:
            shrink = self._shrink_to(estimate, model)
            if shrink is not None:
                await shrink
            return True
        grown = await self._shared.grow(self._holds, self.id, delta, estimate, model)
        if grown is None:
            return False
        self.estimated_usd, self._model = estimate, model
        self._in_redis += grown
        return True

    def _shrink_to(self, estimate: float, model: str | None) -> Coroutine[Any, Any, None] | None:
        """Hold `estimate` (no more than now) for `model` here at once; the give-back in Redis to run (None when
        there is none), so Redis holds what the reservation estimates: a larger hold kept there until the settle
        would refuse other requests the room it gave back. (The give-back moves the hold's deadline, as a growth.)
        Only what Redis is known to hold beyond `estimate` goes back: a growth it never held (let through by the local
        check) given back would leave it holding less than the estimate, and other requests would take that room."""
        given = max(0.0, min(self.estimated_usd - estimate, self._in_redis - estimate))
        self.estimated_usd, self._model = estimate, model  # as the local check: a later growth is for this model
        self._in_redis -= given  # (lowered even when the give-back fails: Redis then holds more, stricter)
        return self._shared.shrink(self._holds, self.id, given) if given > 0 else None

    def settle(self, actual_usd: float) -> None:
        """Replace what Redis holds for this reservation with the actual cost (idempotent, here and in Redis)."""
        if not self._done:
            self._done = True
            actual = actual_usd if math.isfinite(actual_usd) else self.estimated_usd  # a cost no number: the estimate
            self._shared.settle(self._holds, self.id, max(actual, 0.0))

    def release(self) -> None:
        """Drop the reservation without charging anything."""
        self.settle(0.0)


class SharedBudgets:
    """The `Budgets` interface on Redis, with a local `BudgetManager` for definitions and as the fallback.

    `carry` (the budgets a reload replaces) hands over the settles still to be written, so none is lost.
    """

    def __init__(
        self, local: BudgetManager, link: RedisLink, *, clock: Callable[[], float] = time.time,
        hold_s: float = HOLD_S, carry: SharedBudgets | None = None,
    ) -> None:
        self.local = local
        self.link = link
        self.hold_s = hold_s
        self._clock = clock
        # Shared with the budgets this one replaced: their reservations settle through them.
        self._pending: _Pending = carry._pending if carry is not None else _Pending()
        self._unsent = self._pending.unsent
        self._tasks = self._pending.tasks
        self._ledger_unread = False  # logged once while the ledger cannot be read for a rebuild
        self._repairing = False  # a rebuild for a spend in Redis that is no number is on its way
        self._repair_after = 0.0  # (monotonic) no such rebuild tried again before then
        self._unknown_logged = OnceLog()  # counters whose spend no number was logged (bounded: another writer's)
        self._periods: dict[str, tuple[float, float]] = {}  # each period's current (start, end)
        #: One script per Cluster slot (the keys of one script must share one); on a single Redis, one for all.
        self.per_slot = link.cluster

    def _key(self, budget: BudgetConfig, start: float) -> str:
        return self.link.key(f"budget:{budget.scope}:{budget.name}", budget.period, str(int(start)))

    def _bounds(self, now: float, period: Period) -> tuple[float, float]:
        """`period_bounds`, kept until the period ends (calendar arithmetic on every request is a measurable cost)."""
        bounds = self._periods.get(period)
        if bounds is None or not bounds[0] <= now < bounds[1]:
            bounds = self._periods[period] = period_bounds(now, period)
        return bounds

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
        if not self.link.up or not math.isfinite(estimated_usd):  # the local check refuses a NaN, holding nothing
            return self.reserve(agent=agent, key_id=key_id, route=route, estimated_usd=estimated_usd, model=model)
        now, estimate, rid = self._clock(), max(estimated_usd, 0.0), _IDS.next()
        holds: list[_Hold] = []
        for budget in budgets:
            start, end = self._bounds(now, budget.period)
            holds.append((self._key(budget, start), budget, end))
        try:
            refused = await self._hold_all(holds, rid, estimate, model, first=True)
        except RedisUnavailable:
            return self.reserve(agent=agent, key_id=key_id, route=route, estimated_usd=estimated_usd, model=model)
        if refused is None:
            return SharedReservation(self, holds, estimate, model, rid)
        (_, budget, end), spent, reserved = refused
        if budget.on_exceed == "downgrade" and budget.downgrade_to is not None:
            return Reservation(None, (), estimated_usd, downgrade_to=budget.downgrade_to)
        raise BudgetLimitError(budget, spent_usd=spent, reserved_usd=reserved, estimated_usd=estimate, resets_at=end)

    def _groups(self, holds: Sequence[_Hold]) -> list[list[_Hold]]:
        """The budgets each script holds in: all in one, or one script per Cluster slot (in order)."""
        if not self.per_slot:
            return [list(holds)]
        from redis.crc import key_slot

        groups: list[list[_Hold]] = []
        last = -1
        for hold in holds:  # runs of one slot, in order: a script's first over its limit is the first overall
            slot = key_slot(hold[0].encode())
            if slot != last:
                groups.append([])
                last = slot
            groups[-1].append(hold)
        return groups

    async def _hold(
        self, group: Sequence[_Hold], rid: str, amount: float, model: str | None, *, hold: bool = True,
    ) -> list[Any]:
        """One RESERVE over `group`'s budgets: `amount` added to reservation `rid` in all of them, or in none (with
        `hold` False only checked: which budget would refuse)."""
        keys: list[str] = []
        args: list[str | int | float] = [amount, rid, int(self.hold_s * 1000), 1 if hold else 0]
        for key, budget, end in group:
            exempt = budget.on_exceed == "downgrade" and model is not None and model == budget.downgrade_to
            keys += _keys(key)
            check = 0 if exempt else 2 if self._downgrades(budget, model) else 1
            args += [budget.usd + _EPSILON_USD, self._ttl(end), check]
        reply: list[Any] = await self.link.eval(RESERVE, keys, args)
        return reply

    async def _hold_all(
        self, holds: Sequence[_Hold], rid: str, amount: float, model: str | None, *, first: bool,
    ) -> tuple[_Hold, float, float] | None:
        """Add `amount` to reservation `rid` in every budget, or in none; on a refusal say which budget refused.

        On a single Redis that is one script over every budget's keys: checked and held in one step, so no other
        replica sees a part of it held. On a Cluster each budget's keys hash to a slot of their own, and one script
        reaches one slot: one script per slot, in order, each all-or-nothing, and what the slots before a refusal
        took is given back (as `RedisRateLimiter.admit_all` does). On any failure (Redis, a timeout after Redis ran
        the script, a cancellation) what may have been taken is given back too: the whole reservation when it is
        new, the growth the slots before took otherwise (the rest is settled later).
        """
        taken: list[list[_Hold]] = []
        unknown: str | None = None
        groups = self._groups(holds)
        try:
            for group in groups:
                ok, index, spent, reserved = await self._hold(group, rid, amount, model)
                if int(ok) == UNKNOWN:  # this script wrote nothing: only the slots before give back (below)
                    unknown = group[int(index) - 1][0]
                    break
                if not int(ok):
                    given, taken = taken, []  # handed over: a cancellation meanwhile must not give it back again
                    await self._give_back_now(given, rid, amount)
                    if first:
                        self._give_back(given, rid, amount, first=True)
                    refused = group[int(index) - 1], float(spent), float(reserved)
                    return await self._decider(holds, groups[len(given) + 1:], refused, rid, amount, model, first)
                taken.append(group)
        except RedisRefused:  # an error reply: the script failed before its first write (only the slots before took)
            given, taken = taken, []
            await self._give_back_soon(given, rid, amount, first=first)
            raise
        except BaseException:
            # The call that failed may have run in Redis: a new reservation is released everywhere it may be. (In
            # the background: a timeout or a cancellation is not to wait for another script.)
            self._give_back([list(holds)] if first else taken, rid, amount, first=first)
            raise
        if unknown is not None:  # the local check decides
            await self._give_back_soon(taken, rid, amount, first=first)
            self._spend_unknown(unknown)
            raise RedisUnavailable(f"budget spend in Redis unknown: {unknown}")
        return None

    async def _give_back_now(self, groups: Sequence[Sequence[_Hold]], rid: str, amount: float) -> None:
        """Give `amount` back in `groups` before returning: the caller's next reserve (a downgrade) or growth must not
        be checked against it. The give-back is a task of its own (`drain` waits for it) awaited shielded: cancelled
        meanwhile, it still runs, once — not twice (given back again by the caller's cleanup), not never."""
        task = self._background(self._shrink_all(groups, rid, amount)) if groups else None
        if task is not None:
            await asyncio.shield(task)

    async def _give_back_soon(self, groups: Sequence[Sequence[_Hold]], rid: str, amount: float, *, first: bool) -> None:
        """What the slots in `groups` took given back after a failure: a new reservation is settled (in the background,
        as every settle), a growth given back before returning (so the next growth is not checked against it)."""
        if first:
            self._give_back(groups, rid, amount, first=True)
        else:
            await self._give_back_now(groups, rid, amount)

    async def _decider(
        self, holds: Sequence[_Hold], later: Sequence[Sequence[_Hold]], refused: tuple[_Hold, float, float],
        rid: str, amount: float, model: str | None, first: bool,
    ) -> tuple[_Hold, float, float]:
        """The budget that decides a refusal, as the local check picks it: the first over its limit (in the order the
        budgets apply) that downgrades, else the first over its limit. One script sees its own slot's: on a Cluster,
        a refusal by a budget that does not downgrade is checked (nothing held) in the later slots' downgrade
        budgets too. Best effort: the refusal stands if Redis fails meanwhile."""
        if not first or not later or self._downgrades(refused[0][1], model):
            return refused
        order = {hold[0]: n for n, hold in reversed(list(enumerate(holds)))}
        best: tuple[_Hold, float, float] | None = None
        for group in later:
            if not any(self._downgrades(budget, model) for _, budget, _ in group):
                continue
            try:
                ok, index, spent, reserved = await self._hold(group, rid, amount, model, hold=False)
            except RedisUnavailable:
                break
            if int(ok) == 0 and self._downgrades(group[int(index) - 1][1], model):
                found = group[int(index) - 1], float(spent), float(reserved)
                if best is None or order[found[0][0]] < order[best[0][0]]:
                    best = found
        return best or refused

    @staticmethod
    def _downgrades(budget: BudgetConfig, model: str | None) -> bool:
        """Over its limit, `budget` downgrades the request (rather than refusing it or not being checked)."""
        return (budget.on_exceed == "downgrade" and budget.downgrade_to is not None
                and (model is None or model != budget.downgrade_to))

    def _give_back(self, groups: Sequence[Sequence[_Hold]], rid: str, amount: float, *, first: bool) -> None:
        if first:
            self.settle([hold for group in groups for hold in group], rid, 0.0)
        else:
            for group in groups:
                self._background(self._shrink(group, rid, amount))

    async def shrink(self, holds: Sequence[_Hold], rid: str, amount: float) -> None:
        """Give `amount` of reservation `rid` back in every budget: one script a slot, side by side; one that fails
        leaves the larger hold (stricter, never looser) until the settle or its deadline."""
        await self._shrink_all(self._groups(holds), rid, amount)

    def shrink_soon(self, shrink: Coroutine[Any, Any, None]) -> asyncio.Task[None] | None:
        """Run a `shrink` in the background (a synchronous resize; `drain` waits for it): its task (None without an
        event loop: nothing given back, the larger hold stays until the settle)."""
        return self._background(shrink)

    async def _shrink_all(self, groups: Sequence[Sequence[_Hold]], rid: str, amount: float) -> None:
        await asyncio.gather(*(self._shrink(group, rid, amount) for group in groups), return_exceptions=True)

    async def _shrink(self, group: Sequence[_Hold], rid: str, amount: float) -> None:
        try:  # failing, the larger hold stays until the reservation settles (or its deadline): stricter
            await self._hold(group, rid, -amount, None)
        except RedisUnavailable:
            pass
        except Exception:  # a bug: not lost in a gather or a background task
            logger.exception("budget give-back of %s for reservation %s not written; held until its settle",
                             amount, rid)

    async def grow(
        self, holds: Sequence[_Hold], rid: str, amount: float, estimate: float, model: str | None,
    ) -> float | None:
        """Grow reservation `rid` by `amount` in every budget, or in none; while Redis is down the local check
        decides whether the whole `estimate` still fits (its counters come from the ledger). None when refused, else
        what Redis now holds more: `amount`, or 0.0 when the local check let it through (a slot's growth that may
        have run before its call failed is not counted: Redis holds more than known, stricter)."""
        if self.link.up:
            try:
                return amount if await self._hold_all(holds, rid, amount, model, first=False) is None else None
            except RedisUnavailable:
                pass
        usage = {id(budget): (spent, reserved) for budget, spent, reserved in self.local.usage()}
        for _, budget, _ in holds:
            if budget.on_exceed == "downgrade" and model is not None and model == budget.downgrade_to:
                continue
            spent, reserved = usage.get(id(budget), (0.0, 0.0))
            if spent + reserved + estimate > budget.usd + _EPSILON_USD:
                return None
        return 0.0

    def settle(self, holds: Sequence[_Hold], rid: str, actual: float) -> None:
        """Drop reservation `rid` and count `actual` in each budget, in the background (once per id): settles are
        written in batches, one script per budget every `SETTLE_EVERY_S`, so their Redis cost does not grow with
        the request rate (a reservation counts as held until then, a few tens of ms longer)."""
        batch = self._pending.batch
        for key, _, end in holds:
            ttl, entries = batch.setdefault(key, (self._ttl(end), []))
            entries.append((rid, actual))
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if self._pending.flushing or not self._pending.batch:
            return
        self._pending.flushing = True
        task = self._background(self._flush_soon())
        if task is None:
            self._pending.flushing = False  # no event loop: the next settle (or drain) writes the batch
        else:
            task.add_done_callback(self._flushed)

    def _flushed(self, task: asyncio.Task[None]) -> None:
        """Run, failed or cancelled (even before it started): the next settle schedules a flush again."""
        self._pending.flushing = False
        if not task.cancelled():
            self._schedule_flush()  # settles that came during the flush

    async def _flush_soon(self) -> None:
        await asyncio.sleep(SETTLE_EVERY_S)
        await self.flush()

    async def flush(self) -> None:
        """Write the settles waiting for a batch now, with those Redis missed earlier while the link stayed up (a
        settle is once per id: written twice, it counts once). Those Redis misses are kept for the next flush or
        the rebuild's replay."""
        batch, self._pending.batch = self._pending.batch, {}
        missed = self._missed() if self.link.up else {}
        keep_ms = int(DONE_KEEP_S * 1000)
        for key in missed:
            batch.setdefault(key, (_REPLAY_TTL_S, []))
        for key, (ttl, entries) in batch.items():
            args: list[str | int | float] = [FAIL, ttl, keep_ms]
            for rid, actual in entries:
                args += [rid, actual]
            for _, rid, actual, _, _ in missed.get(key, []):
                args += [rid, actual]
            try:
                if await self.link.eval(SETTLE_MANY, _keys(key), args) == UNKNOWN:
                    self._spend_unknown(key)
                    raise RedisUnavailable(f"budget spend in Redis unknown: {key}")
            except Exception as exc:  # RedisUnavailable; or a bug: kept for the replay, the other keys still go
                if not isinstance(exc, RedisUnavailable):
                    logger.exception("budget settles for %s not written; kept for the replay", key)
                for rid, actual in entries:
                    if len(self._unsent) < _MAX_UNSENT:
                        self._unsent.append((key, rid, actual, time.monotonic(), self._pending.epoch))
                self._unsent.extend(missed.get(key, []))

    def _missed(self) -> dict[str, list[_Unsent]]:
        """The missed settles a flush may write again (taken out of the unsent list), by key: those the replay
        would write — younger than DONE_KEEP_S, and of the current epoch."""
        oldest = time.monotonic() - DONE_KEEP_S
        epoch = self._pending.epoch
        missed: dict[str, list[_Unsent]] = {}
        kept: list[_Unsent] = []
        for entry in self._unsent:
            _, _, _, when, then = entry
            if when >= oldest and (then == epoch or not self.local.has_ledger):
                missed.setdefault(entry[0], []).append(entry)
            else:
                kept.append(entry)
        self._unsent[:] = kept
        return missed

    def _background(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None] | None:
        """Run `work` as a task; None (and `work` dropped) without a running event loop."""
        try:
            task = asyncio.get_running_loop().create_task(work)
        except RuntimeError:  # no event loop: nothing to write with
            work.close()
            return None
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def drain(self, timeout_s: float = 5.0) -> None:
        """Wait (at most `timeout_s`) for the settles in flight: at shutdown, so none is lost — also those made, or
        flushes scheduled, while it waits."""
        deadline = time.monotonic() + timeout_s
        while True:
            if self._pending.batch:
                self._background(self.flush())
            left = deadline - time.monotonic()
            if not self._tasks or left <= 0:
                return
            await asyncio.wait(list(self._tasks), timeout=left)

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
        """Replay missed settles, then raise every counter to the ledger's spend. Raises RedisUnavailable when
        Redis goes away meanwhile, or when Redis lost its data and the ledger cannot be read (counters would
        restart at $0: the link stays down, requests keep to the local check, and it tries again)."""
        totals = await anyio.to_thread.run_sync(self.local.ledger_spend)
        marker = self.link.key("budgets", "epoch")
        found = await self.link.run(lambda r: r.get(marker))
        lost = found is None
        if totals is None and lost and self.local.has_ledger and self.local.budgets():
            if not self._ledger_unread:
                self._ledger_unread = True
                logger.warning("budget counters not rebuilt: Redis lost them and the ledger cannot be read; "
                               "keeping to the local budget check until it can")
            raise RedisUnavailable("ledger unreadable for the budget rebuild")
        self._ledger_unread = False
        epoch = found.decode("utf-8", "replace") if found is not None else uuid.uuid4().hex
        known = totals is not None or not self.local.has_ledger  # (else a spend no number stays unknown: KEEP)
        await self._replay(epoch, known)
        now = self._clock()
        for budget in self.local.budgets():
            start, end = period_bounds(now, budget.period)
            spend = (totals or {}).get((budget.scope, budget.period), {}).get(budget.name, 0.0)
            await self.link.eval(REBUILD, _keys(self._key(budget, start)),
                                 [REPAIR if known else KEEP, spend, self._ttl(end)])
        if lost:  # another replica may have made the new epoch meanwhile: keep the first
            await self.link.run(lambda r: r.set(marker, epoch.encode(), nx=True))
            found = await self.link.run(lambda r: r.get(marker))
            epoch = found.decode("utf-8", "replace") if found is not None else epoch
        self._pending.epoch = epoch
        if totals is None and self.local.has_ledger:
            logger.warning("budget counters in Redis kept as they are: the ledger could not be read")

    async def _replay(self, epoch: str, known: bool = True) -> None:
        """The settles Redis missed, each removed once written (a failure keeps the rest for the next try).

        Skipped: those older than DONE_KEEP_S (Redis may have forgotten they were done) and those from before
        Redis lost its data (another epoch): the ledger the counters are rebuilt from counts them already."""
        oldest = time.monotonic() - DONE_KEEP_S
        while self._unsent:
            key, rid, actual, when, then = self._unsent[0]
            if when >= oldest and (then == epoch or not self.local.has_ledger):
                await self.link.eval(SETTLE_MANY, _keys(key),
                                     [REPAIR if known else KEEP, _REPLAY_TTL_S, int(DONE_KEEP_S * 1000), rid, actual])
            self._unsent.pop(0)

    def _spend_unknown(self, key: str) -> None:
        """A counter's spend in Redis is no number (another writer): rebuild the counters from the ledger (once at
        a time); until then the scripts refuse that budget and its requests keep to the local check."""
        now = time.monotonic()
        if self._repairing or now < self._repair_after:
            return
        self._repair_after = now + 1.0  # one try a second at most (the ledger may be unreadable: it stays unknown)
        if self._unknown_logged.first(key):
            logger.warning("budget counter %s in Redis holds a spend that is no number; rebuilding the counters from "
                           "the ledger (its requests keep to the local check meanwhile)", key)
        self._repairing = True
        task = self._background(self._rebuild_quietly())
        if task is None:
            self._repairing = False
        else:
            task.add_done_callback(lambda _: setattr(self, "_repairing", False))

    def rebuild_soon(self) -> None:
        """Rebuild in the background (budgets defined anew by a reload), when Redis is up."""
        if self.link.up:
            self._background(self._rebuild_quietly())

    async def _rebuild_quietly(self) -> None:
        try:
            await self.rebuild()
        except RedisUnavailable:
            pass  # the link's resync rebuilds when Redis is back
