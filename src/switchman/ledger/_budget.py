"""Spending limits per agent, virtual key and route, enforced before the upstream call.

A request reserves its estimated cost in every budget that applies to it before it is sent;
the check counts spend so far plus every outstanding reservation, under one lock, so concurrent
requests cannot all pass a check that only one of them fits. When the answer arrives the
reservation is settled with the actual cost (or released if the call failed before any cost).

Spend so far is loaded from the ledger when the manager starts and kept in memory after that;
periods are UTC calendar days and months, rolled over by the injected clock. Each gateway worker
keeps its own counters: with N workers, call `refresh()` every few seconds so each counts what the
others wrote to the ledger; between refreshes the workers can together overshoot by what the others
spent since (one worker is exact). A key-scoped budget's `name` is the key's id (`switchman keys list`).

A budget whose `on_exceed` is "downgrade" does not reject: `reserve` returns a Reservation whose
`downgrade_to` names the model to use instead, holding nothing; the caller reserves again with
`model=` that model and its estimate. Requests already on a budget's `downgrade_to` model pass that
budget (their spend still counts), so a downgraded agent keeps working on the cheaper model.

The gateway reserves a request's worst case (`routing.worst_case_cost`), so with N requests in
flight the budgets are never overspent by more than what the upstreams bill beyond their own
limits; a request that moves to a dearer model, or a stream that runs past its reservation,
`resize`s it first and stops when a budget cannot take the increase. `Budgets` is the whole surface
the gateway uses (reserve, then resize / settle / release the Reservation), so a shared store can
replace this in-process manager: `switchman.state.SharedBudgets` holds spend and reservations in
Redis (`server.redis_url`), using this manager for the budgets' definitions and as its fallback;
the gateway calls the coroutines `areserve` and `Reservation.aresize` for that reason.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy.exc import SQLAlchemyError

from .._config import BudgetConfig
from .._exceptions import BudgetLimitError
from ._ledger import Ledger
from ._period import period_bounds

__all__ = ["BudgetManager", "Budgets", "Reservation"]

logger = logging.getLogger("switchman.ledger")

#: Slack for float rounding, so ten $0.10 requests fit a $1.00 budget.
_EPSILON_USD = 1e-9


@dataclass(slots=True)
class _BudgetState:
    budget: BudgetConfig
    start: float
    end: float
    spent: float = 0.0
    reserved: float = 0.0

    def roll(self, now: float) -> None:
        if now >= self.end or now < self.start:
            self.start, self.end = period_bounds(now, self.budget.period)
            self.spent = 0.0


class Reservation:
    """An estimated cost held against budgets until `settle` (actual cost) or `release` (no cost).

    One reservation is one request's: resize it from one task at a time (await an `aresize` before the next resize).
    Two resizes of it at once are not supported: in Redis each is computed from the estimate it started from.
    """

    __slots__ = ("_done", "_manager", "_model", "_states", "downgrade_to", "estimated_usd")

    def __init__(
        self,
        manager: BudgetManager | None,
        states: tuple[_BudgetState, ...],
        estimated_usd: float,
        downgrade_to: str | None = None,
        model: str | None = None,
    ) -> None:
        self._manager = manager
        self._states = states
        self.estimated_usd = estimated_usd
        self.downgrade_to = downgrade_to
        self._model = model
        self._done = not states

    @property
    def held(self) -> bool:
        """Whether any budget holds this reservation (False once settled or released, or when none applies)."""
        return not self._done

    def resize(self, estimated_usd: float, *, model: str | None = None) -> bool:
        """Hold `estimated_usd` instead (for `model`, when the request moved to another); False, and nothing
        changed, when a budget cannot take the increase. Always True when no budget holds the reservation."""
        if self._manager is None or self._done:
            return True
        estimate = max(estimated_usd, 0.0)
        if not math.isfinite(estimate):  # held, a NaN would disable the budget
            return False
        return self._manager._resize(self, estimate, model or self._model)

    async def aresize(self, estimated_usd: float, *, model: str | None = None) -> bool:
        """`resize`, as a coroutine (a shared store checks the increase in Redis)."""
        return self.resize(estimated_usd, model=model)

    @property
    def budgets(self) -> tuple[BudgetConfig, ...]:
        """The budgets this reservation is held against."""
        return tuple(state.budget for state in self._states)

    def settle(self, actual_usd: float) -> None:
        """Replace the estimate with the actual cost (idempotent: a second call does nothing)."""
        if self._manager is not None and not self._done:  # a cost no number counts the estimate (a NaN spend
            actual = actual_usd if math.isfinite(actual_usd) else self.estimated_usd  # would pass every check)
            self._manager._finish(self, actual)

    def release(self) -> None:
        """Drop the reservation without charging anything (the call failed before any cost)."""
        if self._manager is not None and not self._done:
            self._manager._finish(self, 0.0)

    def __repr__(self) -> str:
        state = "done" if self._done else "held"
        return f"<Reservation ${self.estimated_usd:.6f} {state} downgrade_to={self.downgrade_to!r}>"


class Budgets(Protocol):
    """What the gateway needs of budgets: reserve a request's cost, keep counters current, report usage.

    The Reservation it returns is resized, then settled (actual cost) or released (no cost).
    """

    def reserve(
        self, *, agent: str | None, key_id: str | None, route: str | None, estimated_usd: float,
        model: str | None = None,
    ) -> Reservation: ...

    async def areserve(
        self, *, agent: str | None, key_id: str | None, route: str | None, estimated_usd: float,
        model: str | None = None,
    ) -> Reservation: ...

    def refresh(self) -> bool: ...

    def set_scope(self, scope: str, budgets: Sequence[BudgetConfig]) -> bool: ...

    def add(self, budget: BudgetConfig) -> None: ...

    def usage(self) -> list[tuple[BudgetConfig, float, float]]: ...


class BudgetManager:
    """Checks and holds spend against the configured budgets; thread- and asyncio-safe (no awaits).

    budgets = BudgetManager(config.budgets, ledger)
    r = budgets.reserve(agent="triage", key_id=None, route="default", estimated_usd=0.002, model="gpt-4o")
    if r.downgrade_to: ...reserve again with model=r.downgrade_to and its estimate...
    r.settle(actual_usd)          # or r.release() when the call failed before any cost
    """

    def __init__(
        self, budgets: Sequence[BudgetConfig], ledger: Ledger | None = None, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        now = clock()
        self._states: dict[tuple[str, str], list[_BudgetState]] = {}
        for budget in budgets:
            start, end = period_bounds(now, budget.period)
            self._states.setdefault((budget.scope, budget.name), []).append(_BudgetState(budget, start, end))
        self._ledger = ledger
        if ledger is not None and self._states:
            if ledger.stats.queued:
                ledger.flush_sync(timeout=5.0)
            if not self.refresh():
                logger.warning("budgets start from zero: cannot read spend so far from the ledger")

    def add(self, budget: BudgetConfig) -> None:
        """Start enforcing one more budget (a key created while the gateway runs), from zero spend."""
        now = self._clock()
        start, end = period_bounds(now, budget.period)
        with self._lock:
            self._states.setdefault((budget.scope, budget.name), []).append(_BudgetState(budget, start, end))

    def set_scope(self, scope: str, budgets: Sequence[BudgetConfig]) -> bool:
        """Replace every budget of one scope (e.g. the keys' budgets after a key change); True if any changed.

        A budget that stays keeps its spend and reservations, one whose limit changed keeps them under
        the new limit (same name and period), a new one starts from zero until `refresh()` loads its spend.
        """
        wanted = [b for b in budgets if b.scope == scope]
        with self._lock:
            current = {(k, s.budget.period): s for k, states in self._states.items() if k[0] == scope for s in states}
            if sorted(map(repr, (s.budget for s in current.values()))) == sorted(map(repr, wanted)):
                return False
            now = self._clock()
            for key in [k for k in self._states if k[0] == scope]:
                del self._states[key]
            for budget in wanted:
                state = current.get(((scope, budget.name), budget.period))
                if state is not None:
                    state.budget = budget  # the same state: reservations in flight settle against it
                else:
                    state = _BudgetState(budget, *period_bounds(now, budget.period))
                self._states.setdefault((scope, budget.name), []).append(state)
            return True

    def ledger_spend(self, now: float | None = None) -> dict[tuple[str, str], dict[str | None, float]] | None:
        """Spend in the ledger per (scope, period) and name, for each budget's current period (None: unreadable).

        Blocking (a database query): call it from a thread.
        """
        if self._ledger is None:
            return None
        now = self._clock() if now is None else now
        with self._lock:
            groups = {(state.budget.scope, state.budget.period) for states in self._states.values() for state in states}
        totals: dict[tuple[str, str], dict[str | None, float]] = {}
        try:
            for scope, period in sorted(groups):
                start, _ = period_bounds(now, period)
                totals[(scope, period)] = {
                    row.group: row.cost_usd for row in self._ledger.query_spend(scope, since=start)
                }
        except SQLAlchemyError as exc:
            logger.warning("cannot read budget spend from the ledger (%s)", type(exc).__name__)
            return None
        return totals

    @property
    def has_ledger(self) -> bool:
        """Whether spend is read from a ledger (without one, `ledger_spend` is always None)."""
        return self._ledger is not None

    def budgets(self) -> list[BudgetConfig]:
        """Every budget enforced now."""
        with self._lock:
            return [state.budget for states in self._states.values() for state in states]

    def applying(self, *, agent: str | None, key_id: str | None, route: str | None) -> list[BudgetConfig]:
        """The budgets a request of this agent, key and route counts against."""
        with self._lock:
            return [state.budget for scope, name in (("agent", agent), ("key", key_id), ("route", route))
                    if name is not None for state in self._states.get((scope, name), ())]

    def refresh(self) -> bool:
        """Raise each budget's spend to what the ledger holds for its current period; False if unreadable.

        At startup this loads spend so far. Gateway workers that share a ledger can call it every few
        seconds (from a thread: it queries the database) to count each other's spend; what one worker
        spent since the others last refreshed is the most they can overshoot by.
        """
        now = self._clock()
        totals = self.ledger_spend(now)
        if totals is None:
            return False
        with self._lock:
            for states in self._states.values():
                for state in states:
                    state.roll(now)
                    in_ledger = totals.get((state.budget.scope, state.budget.period), {}).get(state.budget.name, 0.0)
                    state.spent = max(state.spent, in_ledger)
        return True

    def reserve(
        self,
        *,
        agent: str | None,
        key_id: str | None,
        route: str | None,
        estimated_usd: float,
        model: str | None = None,
    ) -> Reservation:
        """Hold `estimated_usd` in every budget that applies, or raise/downgrade when one would overflow.

        Raises BudgetLimitError (a BudgetExceededError) naming the budget; a "downgrade" budget
        returns a Reservation with `downgrade_to` set and nothing held instead.
        """
        states: list[_BudgetState] = []
        for scope, name in (("agent", agent), ("key", key_id), ("route", route)):
            if name is not None:
                states.extend(self._states.get((scope, name), ()))
        if not states:
            return Reservation(None, (), estimated_usd)
        estimate = max(estimated_usd, 0.0)
        with self._lock:
            now = self._clock()
            if not math.isfinite(estimate):  # refused (not downgraded): held, a NaN would disable the budget
                first_state = states[0]
                first_state.roll(now)
                raise BudgetLimitError(first_state.budget, spent_usd=first_state.spent,
                                       reserved_usd=first_state.reserved, estimated_usd=estimate,
                                       resets_at=first_state.end)
            over: list[_BudgetState] = []
            for state in states:
                state.roll(now)
                budget = state.budget
                if budget.on_exceed == "downgrade" and model is not None and model == budget.downgrade_to:
                    continue
                if state.spent + state.reserved + estimate > budget.usd + _EPSILON_USD:
                    over.append(state)
            if over:
                for state in over:
                    if state.budget.on_exceed == "downgrade" and state.budget.downgrade_to is not None:
                        return Reservation(None, (), estimated_usd, downgrade_to=state.budget.downgrade_to)
                first = over[0]
                raise BudgetLimitError(
                    first.budget,
                    spent_usd=first.spent,
                    reserved_usd=first.reserved,
                    estimated_usd=estimate,
                    resets_at=first.end,
                )
            for state in states:
                state.reserved += estimate
            return Reservation(self, tuple(states), estimate, model=model)

    async def areserve(
        self, *, agent: str | None, key_id: str | None, route: str | None, estimated_usd: float,
        model: str | None = None,
    ) -> Reservation:
        """`reserve`, as a coroutine (the interface a shared store implements)."""
        return self.reserve(agent=agent, key_id=key_id, route=route, estimated_usd=estimated_usd, model=model)

    def _resize(self, reservation: Reservation, estimate: float, model: str | None) -> bool:
        with self._lock:
            if reservation._done:
                return True
            delta = estimate - reservation.estimated_usd
            now = self._clock()
            for state in reservation._states:
                state.roll(now)
                budget = state.budget
                if budget.on_exceed == "downgrade" and model is not None and model == budget.downgrade_to:
                    continue
                if delta > 0 and state.spent + state.reserved + delta > budget.usd + _EPSILON_USD:
                    return False
            for state in reservation._states:
                state.reserved = max(state.reserved + delta, 0.0)
            reservation.estimated_usd = estimate
            reservation._model = model
            return True

    def _finish(self, reservation: Reservation, actual_usd: float) -> None:
        with self._lock:
            if reservation._done:
                return
            reservation._done = True
            now = self._clock()
            for state in reservation._states:
                state.reserved = max(state.reserved - reservation.estimated_usd, 0.0)
                state.roll(now)
                state.spent += max(actual_usd, 0.0)

    def usage(self) -> list[tuple[BudgetConfig, float, float]]:
        """(budget, spent, reserved) for every budget in its current period."""
        with self._lock:
            now = self._clock()
            result = []
            for states in self._states.values():
                for state in states:
                    state.roll(now)
                    result.append((state.budget, state.spent, state.reserved))
            return result
