"""One request's bookkeeping, from arrival to its single ledger record."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .._catalog import ModelSpec
from .._exceptions import (
    CallerLimitError,
    BudgetExceededError,
    ContentPolicyViolationError,
    ContextWindowExceededError,
    InvalidRequestError,
    RoutingError,
    UpstreamBadRequestError,
)
from ..ledger import LedgerRecord, Reservation
from ..routing import Decision, RouteRequest
from ..state import Admission
from ._context import RequestContext
from ._errors import Scrubber
from ._wire import Usage

if TYPE_CHECKING:
    from ._balancer import Lease

__all__ = ["CUT_BY_SERVER", "Exchange", "ExchangeFacts", "status_for"]

#: The error of a stream the server cancelled mid-answer (a shutdown whose grace ran out): not the client's doing.
CUT_BY_SERVER = "cancelled: the server shut down before the stream ended"

#: How a session's escalation reason starts (routing._sessions writes it; the ledger counts these turns).
ESCALATED_PREFIX = "session escalated"
_CLIENT_ERRORS = (InvalidRequestError, RoutingError, UpstreamBadRequestError, ContextWindowExceededError,
                  ContentPolicyViolationError)


def status_for(error: BaseException) -> str:
    """The ledger status of a request that ended with this error."""
    if isinstance(error, BudgetExceededError):
        return "rejected_budget"
    if isinstance(error, CallerLimitError):
        return "rejected_rate_limit"  # the key's or agent's own rpm/tpm: refused before anything was sent
    if isinstance(error, _CLIENT_ERRORS):
        return "bad_request"
    return "error"


class Exchange:
    """What happened to one request: decision, models tried, usage, timing, outcome."""

    __slots__ = ("admission", "cache", "cache_key", "choices", "context", "decision", "deployment", "error", "first_token_at",
                 "lease", "model", "request", "reservation", "session_unread", "span", "spent_usd", "started", "started_wall",
                 "status", "tried", "usage", "usage_estimated")

    def __init__(self, context: RequestContext, started: float) -> None:
        self.context = context
        self.started = started
        self.started_wall = time.time()
        self.request: RouteRequest | None = None
        self.decision: Decision | None = None
        self.reservation: Reservation | None = None
        self.admission: Admission | None = None  # the caller's tightest rpm/tpm limit, for x-ratelimit-* headers
        self.choices = 1  # the request's `n`: answers it asks for (and the budget reserves)
        self.model: str | None = None
        self.deployment: str | None = None  # the id of the deployment that answered
        self.lease: Lease | None = None  # a stream's deployment, held until the stream ends
        self.cache: str | None = None  # "hit" or "miss" when the response cache was consulted
        self.cache_key: str | None = None  # where a missed answer is to be kept
        self.tried: list[str] = []
        self.spent_usd = 0.0  # answers a cascade paid for and rejected
        self.usage: Usage | None = None
        self.usage_estimated = False
        self.first_token_at: float | None = None
        self.status = "ok"
        self.error: str | None = None
        self.span: Any = None  # the request's trace span, when tracing is on
        #: Ended (cancelled) before its session's shared state was read: it writes no session state, since one built
        #: from this replica's older copy could overwrite a newer turn of another replica.
        self.session_unread = False

    @property
    def input_bound(self) -> int:
        """Input tokens a budget reserves: the request's count, or a quarter of its bytes when that is more."""
        counted = self.request.input_tokens if self.request is not None else 0
        quarter = self.context.body_bytes // 4
        return quarter if quarter > counted else counted  # max(counted, quarter), without the builtin's parsing

    def fail(self, error: BaseException, scrub: Scrubber) -> None:
        """Note the error that ended the request."""
        self.status = status_for(error)
        self.error = scrub(str(error))[:500]

    def cost(self, specs: Mapping[str, ModelSpec]) -> float:
        """USD cost on the model that answered, plus any answers a cascade rejected on the way (0 for a cache hit)."""
        if self.cache == "hit":
            return 0.0
        if self.model is None or self.usage is None:
            return self.spent_usd
        u = self.usage
        return self.spent_usd + specs[self.model].cost(u.input_tokens, u.output_tokens, u.cached_input_tokens)

    def baseline_cost(
        self, specs: Mapping[str, ModelSpec], candidates: tuple[str, ...], baseline: str | None = None
    ) -> float | None:
        """What the same tokens would have cost on the route's `baseline` model, else its dearest candidate.

        Computed once, here, at the prices of the moment, so reports never re-price old rows.
        """
        if self.usage is None or not (candidates or baseline):
            return None
        u = self.usage
        if baseline is not None:
            return specs[baseline].cost(u.input_tokens, u.output_tokens, u.cached_input_tokens)
        dearest: float | None = None  # max(... for m in candidates): the first of the largest, no generator
        for m in candidates:
            cost = specs[m].cost(u.input_tokens, u.output_tokens, u.cached_input_tokens)
            if dearest is None or cost > dearest:
                dearest = cost
        return dearest

    def record(
        self, specs: Mapping[str, ModelSpec], route_candidates: tuple[str, ...], now: float,
        baseline: str | None = None,
    ) -> LedgerRecord:
        """The ledger record (also settles or releases the budget reservation)."""
        cost = self.cost(specs)
        if self.reservation is not None:
            if self.usage is not None or cost > 0:  # a failed cascade still paid for its rejected answers
                self.reservation.settle(cost)
            else:
                self.reservation.release()
        decision, ctx, usage = self.decision, self.context, self.usage
        return LedgerRecord(
            time=self.started_wall,
            request_id=ctx.request_id,
            agent=ctx.agent,
            session=ctx.session,
            key_id=ctx.key_id,
            route=decision.route if decision else None,
            model=self.model or (decision.model if decision else None),
            reason=decision.reason if decision else None,
            cluster=decision.cluster if decision else None,
            strategy=decision.strategy if decision else None,
            candidates=route_candidates,
            input_tokens=usage.input_tokens if usage else 0,
            output_tokens=usage.output_tokens if usage else 0,
            tokens_estimated=self.usage_estimated,
            cost_usd=cost,
            baseline_cost_usd=self.baseline_cost(specs, route_candidates, baseline),
            latency_ms=(now - self.started) * 1000.0,
            ttft_ms=(self.first_token_at - self.started) * 1000.0 if self.first_token_at is not None else None,
            status=self.status,
            error=self.error,
            fallback_chain=tuple(self.tried),
            tags=ctx.tags,
            api=ctx.api,
            deployment=self.deployment,
            cache=self.cache,
            task=self.request.task if self.request is not None else ctx.task,
            scores=tuple([(c.model, c.predicted_quality, c.predicted_cost_usd) for c in decision.candidates])
            if decision else (),
            excluded=decision.excluded if decision else (),
            escalated=decision is not None and decision.reason.startswith(ESCALATED_PREFIX),
        )


class ExchangeFacts:
    """What a stream tells about its request, read from its exchange: the same for a live stream and a cached
    replay (the route headers, the SDK's stream object)."""

    _exchange: Exchange

    @property
    def reason(self) -> str:
        """Why the model was chosen."""
        decision = self._exchange.decision
        return decision.reason if decision is not None else ""

    @property
    def limits(self) -> Admission | None:
        """The caller's tightest rpm/tpm limit after this request (for x-ratelimit-* headers)."""
        return self._exchange.admission

    @property
    def request_id(self) -> str:
        """switchman's id of the request (its ledger row)."""
        return self._exchange.context.request_id

    @property
    def decision(self) -> Decision | None:
        """The decision that chose the model (for a cache hit: the one that found the entry)."""
        return self._exchange.decision
