"""Admitting a decided request: the caller's rate limits, the budget's reservation, and (for a shared session)
the session's state read in the same round trip.

`Admitter` is the part of `Dispatcher` that runs between the decision and the first upstream call; it is kept
apart because its ordering (what refuses first, what a cancellation leaves behind) is its own subject.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from .._decider import Decider
from .._exceptions import BudgetExceededError, CallerLimitError, NoCapableModelError, SwitchmanError, UpstreamError
from ..ledger import Budgets, Metrics
from ..routing import DEFAULT_OUTPUT_TOKENS, Decision, RouteRequest, worst_case_cost
from ..state import SharedBudgets
from ._advice import capability_advice
from ._balancer import Balancer
from ._caller_limits import CallerLimits
from ._context import RequestContext, scoped_session
from ._exchange import Exchange
from ._sessions import SessionKeeper

__all__ = ["Admitter", "admitted_tokens"]


class Admitter:
    """Deciding, admitting and reserving for `Dispatcher` (its base): the attributes below are the dispatcher's."""

    decider: Decider
    balancer: Balancer
    callers: CallerLimits
    budgets: Budgets | None
    metrics: Metrics | None
    sessions: SessionKeeper
    clock: Callable[[], float]

    def _decide_core(
        self, body: Mapping[str, Any], context: RequestContext, unhealthy: frozenset[str], ttft_ms: Mapping[str, float]
    ) -> tuple[RouteRequest, Decision]:
        """The request and the decision core's answer: pure, so it may run in a worker thread."""
        request = self.decider.request(
            body["messages"], tools=body.get("tools"), response_format=body.get("response_format"),
            max_tokens=body.get("max_completion_tokens") or body.get("max_tokens"),
            agent=context.agent, session=scoped_session(context.key_id, context.session), tags=context.tags,
            task=context.task,
        )
        try:
            decision = self.decider.decide(request, model=body["model"], unhealthy=unhealthy, ttft_ms=ttft_ms)
        except NoCapableModelError as exc:
            advice = capability_advice(exc.missing, self.decider.models)
            if not advice:
                raise
            raise NoCapableModelError(f"{exc}.{advice}", missing=exc.missing) from None
        return request, decision

    async def _reserve(self, exchange: Exchange, request: RouteRequest, decision: Decision) -> Decision:
        """Hold the request's worst case (all input, the most output it allows, times `n`) in its budgets."""
        if self.budgets is None:
            return decision
        ctx, specs, n, tokens = exchange.context, self.decider.models, exchange.choices, exchange.input_bound
        reserve = self.budgets.areserve
        reservation = await reserve(agent=ctx.agent, key_id=ctx.key_id, route=decision.route, model=decision.model,
                              estimated_usd=worst_case_cost(specs[decision.model], request, n, input_tokens=tokens))
        if reservation.downgrade_to is not None and reservation.downgrade_to in specs:
            target = reservation.downgrade_to
            reservation = await reserve(agent=ctx.agent, key_id=ctx.key_id, route=decision.route, model=target,
                                  estimated_usd=worst_case_cost(specs[target], request, n, input_tokens=tokens))
            decision = Decision(model=target, reason=f"budget downgrade from {decision.model}", strategy="budget",
                                route=decision.route, candidates=decision.candidates, excluded=decision.excluded)
        exchange.reservation = reservation
        return decision

    async def _hold(self, exchange: Exchange, model: str, error: UpstreamError | None) -> None:
        """Grow the reservation to `model`'s worst case (plus what a cascade already paid) before calling it."""
        reservation, request = exchange.reservation, exchange.request
        if reservation is None or not reservation.held or request is None:
            return
        spec = self.decider.models[model]
        needed = exchange.spent_usd + worst_case_cost(spec, request, exchange.choices, input_tokens=exchange.input_bound)
        if needed > reservation.estimated_usd and not await reservation.aresize(needed, model=model):
            after = f" after {error}" if error is not None else ""
            raise BudgetExceededError(f"moving to {model}{after} could cost ${needed:.4f}, more than the request's "
                                      "budget has left")

    async def _admit_and_reserve(
        self, exchange: Exchange, request: RouteRequest, decision: Decision,
        lookup: Callable[[Exchange], Awaitable[bool]] | None = None,
    ) -> None:
        """The caller's rate limits, then the budget reservation. On Redis the two are started side by side, so
        their scripts share one round trip (the link batches calls of one event-loop turn); the outcome is the
        same as one after the other: a rate limit used up is the error (429) even when the budget refused too,
        and a reservation taken meanwhile is released when the exchange finishes. A response cache hit (`lookup`)
        is admitted and not reserved."""
        if lookup is not None and await lookup(exchange):
            if self.callers:
                try:
                    exchange.admission = await self.callers.admit(exchange.context, admitted_tokens(request))
                except BaseException:  # refused (or cancelled): no answer given, the row has no hit and no tokens
                    exchange.cache, exchange.model, exchange.usage = None, None, None
                    raise
            return
        if not self.callers:
            exchange.decision = await self._reserve(exchange, request, decision)
            return
        tokens = admitted_tokens(request)
        budgets = self.budgets
        if not (isinstance(budgets, SharedBudgets) and budgets.link.up):
            exchange.admission = await self.callers.admit(exchange.context, tokens)
            exchange.decision = await self._reserve(exchange, request, decision)
            return
        admitting = asyncio.ensure_future(self.callers.admit(exchange.context, tokens))
        try:
            reserved = await self._reserve(exchange, request, decision)
        except BaseException as exc:
            if not admitting.done():
                await asyncio.wait([admitting])
            refused = None if admitting.cancelled() else admitting.exception()
            if isinstance(exc, SwitchmanError) and isinstance(refused, CallerLimitError):
                raise refused from None  # the budget refused too: the rate limit is the error (429)
            if isinstance(exc, SwitchmanError) and refused is None and not admitting.cancelled():
                exchange.admission = admitting.result()  # admitted: a reservation taken anew keeps its headers
            raise  # a cancellation (the client left) or a bug goes on unchanged
        try:
            exchange.admission = await admitting
        except SwitchmanError:
            raise
        except BaseException:  # cancelled with the reservation answered: the row has its decision (a downgrade)
            exchange.decision = reserved
            raise
        exchange.decision = reserved

    async def _decide_pulled(self, exchange: Exchange, body: Mapping[str, Any], context: RequestContext) -> Decision:
        """Decide, admit and reserve with the session's shared state read in the same round trip as the admission
        and the reservation: the reservation is for the model this replica's copy of the session steers to, and
        the decision is steered again with the state read. The outcome is the one of reading first: when the read
        moves the turn to another model (its last turn was on another replica), the reservation is taken anew for
        that model, and a budget refusal of the first guess counts only when the read kept its model."""
        started = self.clock()
        request, fresh = self._decide_core(body, context, self.balancer.unhealthy_models(), self.balancer.live_ttft())
        guess = self.sessions.steer(request, fresh, context)  # this replica's copy of the session
        deciding = self.clock() - started
        exchange.request, exchange.decision = request, guess
        session = request.session
        assert session is not None  # `shares` chose this path
        pulling = self.sessions.pull_soon(session)  # its read joins the next round trip
        refused: SwitchmanError | None = None
        try:
            await self._admit_and_reserve(exchange, request, guess)
        except SwitchmanError as exc:  # answered in the same round trip as the read: no wait for it
            refused = exc
        except BaseException:  # cancelled (or a bug): the ledger row has the decision after the read, if it came
            self._ended_before_read(exchange, session, pulling, guess, fresh)
            raise
        try:
            await self.sessions.pulled(session, pulling)
        except BaseException:  # cancelled while the read was on its way (or just back)
            self._ended_before_read(exchange, session, pulling, guess, fresh)
            raise
        started = self.clock()
        # Steered again whatever the read found: a concurrent turn of this session on this replica may have moved
        # the local copy since the guess (steering is pure and cheap; an unchanged state gives the guess again).
        decision = self.sessions.steer(request, fresh, context)
        if self.metrics is not None:
            self.metrics.observe_decision(deciding + self.clock() - started)
        moved = decision.model != guess.model
        if refused is not None and not (moved and isinstance(refused, BudgetExceededError)):
            exchange.decision = decision  # refused as it would have been after the read (a rate limit: any model)
            raise refused
        if not moved:  # the reservation stands; so does a budget downgrade, else the read's reason (turns) is the one
            return decision if exchange.decision is guess or exchange.decision is None else exchange.decision
        if exchange.reservation is not None:  # held for the guess: the read moved the turn to another model
            exchange.reservation.release()
            exchange.reservation = None
            if isinstance(self.budgets, SharedBudgets):
                await self.budgets.flush()  # the guess's hold leaves Redis before the new model's is checked
        exchange.decision = decision
        return await self._reserve(exchange, request, decision)

    def _ended_before_read(
        self, exchange: Exchange, session: str, pulling: asyncio.Future[Any], guess: Decision, fresh: Decision,
    ) -> None:
        """A turn that ends (cancelled) before it used its session read. The read, when it came, is adopted (the
        turn's session write builds on it) and the ledger row gets the decision after it (a budget downgrade
        stands). Else it is abandoned, and the turn, which never saw the shared state, writes no session state: one
        built from this replica's older copy could overwrite a newer turn of another replica."""
        if pulling.done() and not pulling.cancelled() and pulling.exception() is None:
            self.sessions.adopt(session, pulling.result())
            if exchange.decision is guess and exchange.request is not None:
                exchange.decision = self.sessions.steer(exchange.request, fresh, exchange.context)
            return
        exchange.session_unread = not pulling.done() or pulling.cancelled()  # Redis down: the local copy decides
        self.sessions.drop_pull(pulling)  # the session's next turn reads it again


def admitted_tokens(request: RouteRequest | None) -> int:
    """Tokens a rate limit counts for a request, as providers do: the prompt plus the most it may answer."""
    if request is None:
        return 0
    return request.input_tokens + (DEFAULT_OUTPUT_TOKENS if request.max_tokens is None else request.max_tokens)
