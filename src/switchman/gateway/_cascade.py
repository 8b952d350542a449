"""The gateway's driver for cascade routes: send each rung the generator yields, hand back the answer.

The cascade itself (`routing._cascade`) is pure; this module is its I/O shell for non-stream
requests. Each rung is sent through the dispatcher's usual path (retries, circuit breaker,
fallback chain), so every attempt lands in the ledger's fallback chain; the cost of every answer
paid for and rejected is added to the request's cost.

Streaming requests are not cascaded: an answer already relayed to the client cannot be taken
back, and holding the whole stream to check it would give up what streaming is for. They go to
the first rung (the ladder's other rungs remain upstream-error fallbacks) and the decision's
reason says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import orjson

from .._exceptions import UpstreamError
from ..routing import CascadeResult, CascadeStrategy, Decision, Expectations, Outcome, ToolCall
from ._exchange import Exchange
from ._wire import Usage, estimate_output_tokens

if TYPE_CHECKING:
    from ._dispatcher import Dispatcher

__all__ = ["STREAM_NOTE", "cascade_strategy", "outcome_from_completion", "run_cascade"]

STREAM_NOTE = "; stream: not cascaded, first rung served unchecked"


def cascade_strategy(dispatcher: Dispatcher, decision: Decision | None) -> CascadeStrategy | None:
    """The route's cascade strategy when this decision came from one (not pinned, not downgraded)."""
    if decision is None or decision.strategy != "cascade" or decision.route is None:
        return None
    strategy = dispatcher.decider.strategy(decision.route)
    return strategy if isinstance(strategy, CascadeStrategy) else None


def outcome_from_completion(content: bytes, usage: Usage | None) -> Outcome:
    """What the checks read from an OpenAI chat.completion body: text, tool calls, finish, logprobs."""
    data = orjson.loads(content)
    choices = data.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], Mapping) else {}
    message = choice.get("message") or {}
    calls = tuple(
        ToolCall(str((c.get("function") or {}).get("name") or ""), str((c.get("function") or {}).get("arguments") or ""))
        for c in message.get("tool_calls") or () if isinstance(c, Mapping)
    )
    tokens = (choice.get("logprobs") or {}).get("content") or ()
    logprobs = tuple(float(t["logprob"]) for t in tokens if isinstance(t, Mapping) and "logprob" in t) or None
    return Outcome(
        text=str(message.get("content") or ""), tool_calls=calls, finish_reason=choice.get("finish_reason"),
        logprobs=logprobs, output_tokens=usage.output_tokens if usage is not None else None,
    )


def _usage(content: bytes, usage: Usage | None, exchange: Exchange) -> Usage:
    if usage is not None:
        return usage
    exchange.usage_estimated = True
    return Usage(exchange.request.input_tokens if exchange.request else 0, estimate_output_tokens(content))


async def run_cascade(
    dispatcher: Dispatcher, exchange: Exchange, body: Mapping[str, Any], strategy: CascadeStrategy
) -> tuple[bytes, Usage | None]:
    """Drive the cascade's generator with real upstream calls; the accepted (or last) answer."""
    base = exchange.decision
    assert base is not None
    specs = dispatcher.decider.models
    flow = strategy.start(base, Expectations.from_body(body))
    attempt = next(flow)
    answer: tuple[bytes, Usage | None] | None = None
    error: UpstreamError | None = None
    # The last answer a check rejected, its model and what it cost: served if a later rung fails,
    # since it is paid for and better than an error.
    fallback: tuple[str, tuple[bytes, Usage | None], float] | None = None
    while True:
        # One rung at a time through the usual path (retries, circuit breaker); no other fallback.
        exchange.decision = replace(base, model=attempt.model, fallbacks=())
        try:
            answer = await dispatcher.send(exchange, body)
            outcome = outcome_from_completion(*answer)
        except UpstreamError as exc:
            answer, error = None, exc
            outcome = Outcome(error=f"{type(exc).__name__}: {exc}")
        try:
            next_attempt = flow.send(outcome)
        except StopIteration as stop:
            result: CascadeResult = stop.value
            break
        if answer is not None:  # paid for and rejected: it counts in the request's cost
            used = _usage(answer[0], answer[1], exchange)
            paid = specs[attempt.model].cost(used.input_tokens, used.output_tokens, used.cached_input_tokens)
            exchange.spent_usd += paid
            fallback = (attempt.model, answer, paid)
        attempt = next_attempt
    reason = f"{base.reason}; {result.summary()}"
    if answer is None and fallback is not None:
        model, answer, paid = fallback
        exchange.spent_usd -= paid  # it is the served answer now, costed as such
        exchange.model = model
        exchange.decision = replace(base, model=model, reason=f"{reason}; last rung failed, served {model}'s answer")
        return answer
    exchange.decision = replace(base, model=result.model, reason=reason)
    if answer is None:
        assert error is not None
        raise error
    return answer
