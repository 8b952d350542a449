"""Sessions: keep a conversation on one model, and price every switch by the prompt cache it loses.

Pure: the session's last state, the fresh per-turn decision, the model specs, the policy and the
clock value come in as arguments; `steer` returns the turn's decision and `advance` the next state.
Storing states is the I/O shell's job (`switchman.gateway._sessions`).

The cost of a switch. Providers bill a conversation's repeated prefix at the cached input price
while the session stays on one model. A move to another model reads the whole conversation so far
uncached once, on the NEW model, so the switch turn costs

    switch_cost = context_tokens × (input_price − cached_input_price) / 1e6      (new model's prices)

more than the same turn would with a warm cache on that model. `context_tokens` are the input tokens
of the conversation before this turn (the previous turn's input plus its answer: what is re-read).
A model without a cached price has no cache to miss, so its switch cost is 0. The per-turn price
difference between the models is not part of it: that is the benefit side of a downgrade.

When a switch pays:
- escalation (to a better model): predicted quality gain × `value_per_quality_point_usd` ≥ switch_cost.
  After an escalation signal (an error, an empty or truncated answer, a repeated tool call, an
  explicit request, negative feedback) the current model has just failed this conversation, so its
  quality counts as 0 and the gain is the target's predicted quality (1.0 where nothing predicts it).
  Without a signal a switch needs predicted qualities from a learned route showing a gain.
- downgrade (only when `escalate_only` is off): per-turn saving × `expected_remaining_turns` −
  predicted quality loss × value ≥ switch_cost.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from .._catalog import ModelSpec
from ._decision import Decision
from ._policy import estimated_cost
from ._request import RouteRequest

__all__ = ["SessionPolicy", "SessionState", "advance", "is_expired", "repeated_tool_call", "steer", "switch_cost_usd"]


@dataclass(frozen=True, slots=True)
class SessionPolicy:
    """The knobs of `sessions:` in the configuration, as the core reads them."""

    ttl_s: float = 1800.0
    escalate_only: bool = True
    value_per_quality_point_usd: float = 1.0
    expected_remaining_turns: float = 5.0


@dataclass(frozen=True, slots=True)
class SessionState:
    """What a session remembers between turns."""

    model: str
    updated_at: float
    context_tokens: int = 0
    turns: int = 0
    pending: str | None = None  # an escalation signal seen after the last turn (its reason)
    last_request_id: str | None = None


def is_expired(state: SessionState, now: float, ttl_s: float) -> bool:
    """A session idle longer than its TTL starts afresh (its cache has gone cold too)."""
    return now - state.updated_at > ttl_s


def switch_cost_usd(new: ModelSpec, context_tokens: float) -> float:
    """USD the switch turn pays on `new` for re-reading `context_tokens` uncached instead of cached."""
    if new.cached_input_price is None:
        return 0.0
    return context_tokens * max(new.input_price - new.cached_input_price, 0.0) / 1e6


def _tool_calls(message: Mapping[str, object]) -> tuple[tuple[str, str], ...] | None:
    calls = message.get("tool_calls")
    if not isinstance(calls, list) or not calls:
        return None
    out: list[tuple[str, str]] = []
    for call in calls:
        function = call.get("function") if isinstance(call, Mapping) else None
        if isinstance(function, Mapping):
            out.append((str(function.get("name")), str(function.get("arguments"))))
    return tuple(out) or None


def repeated_tool_call(request: RouteRequest) -> bool:
    """The conversation's last two assistant turns made the same tool calls (name and arguments).

    An agent that gets the same call back after seeing its result is looping: the model is stuck.
    Only the last two assistant turns count, so once a better model breaks the loop it stops firing.
    """
    seen: list[tuple[tuple[str, str], ...] | None] = []
    for message in reversed(request.messages):
        if message.get("role") == "assistant":
            seen.append(_tool_calls(message))
            if len(seen) == 2:
                break
    return len(seen) == 2 and seen[0] is not None and seen[0] == seen[1]


def _eligible(fresh: Decision) -> list[str]:
    set_aside = {name for name, _ in fresh.excluded}
    return [m for m in dict.fromkeys((fresh.model, *fresh.fallbacks)) if m not in set_aside]


def _qualities(fresh: Decision) -> dict[str, float]:
    return {c.model: c.predicted_quality for c in fresh.candidates if c.predicted_quality is not None}


def _rank_key(
    specs: Mapping[str, ModelSpec], request: RouteRequest, quality: Mapping[str, float]
) -> Callable[[str], tuple[float, float, str]]:
    """Better = higher predicted quality where a learned route gives it, else higher price (a proxy)."""
    return lambda m: (quality.get(m, -1.0), estimated_cost(specs[m], request), m)


def _switch(fresh: Decision, model: str, reason: str) -> Decision:
    rest = tuple(m for m in dict.fromkeys((fresh.model, *fresh.fallbacks)) if m != model)
    # The route's own reason stays after the session's: it carries what the strategy decided
    # (e.g. an online route's prompt cluster, which its feedback learning reads back).
    return replace(fresh, model=model, reason=f"{reason}; route: {fresh.reason}", strategy="session", fallbacks=rest)


def _escalate(
    fresh: Decision, state: SessionState, signal: str, request: RouteRequest,
    specs: Mapping[str, ModelSpec], policy: SessionPolicy,
) -> Decision:
    eligible = _eligible(fresh)
    quality = _qualities(fresh)
    key = _rank_key(specs, request, quality)
    current = key(state.model)
    better = sorted((m for m in eligible if m != state.model and key(m) > current), key=key)
    stuck = state.model not in eligible  # e.g. its circuit opened after the error: it cannot stay
    if not better:
        if stuck:
            return replace(fresh, reason=f"session model {state.model} cannot serve this request; {fresh.reason}")
        return _switch(fresh, state.model, f"session kept {state.model}: {signal}, but no better candidate")
    target = better[0]
    cost = switch_cost_usd(specs[target], state.context_tokens)
    benefit = quality.get(target, 1.0) * policy.value_per_quality_point_usd
    if benefit < cost and not stuck:
        return _switch(fresh, state.model, f"session kept {state.model}: {signal}; escalating to {target} "
                                           f"would cost ${cost:.6f} in lost cache > benefit ${benefit:.6f}")
    return _switch(fresh, target, f"session escalated {state.model} → {target}: {signal} "
                                  f"(switch cost ${cost:.6f} ≤ benefit ${benefit:.6f})")


def _reconsider(
    fresh: Decision, state: SessionState, request: RouteRequest,
    specs: Mapping[str, ModelSpec], policy: SessionPolicy,
) -> Decision:
    """No signal: keep the session's model unless the fresh choice pays for the lost cache."""
    keep_reason = f"session kept {state.model} (turn {state.turns + 1})"
    if fresh.model == state.model:  # the route chose the session's model anyway: nothing to switch
        return _switch(fresh, state.model, keep_reason)
    quality = _qualities(fresh)
    key = _rank_key(specs, request, quality)
    cost = switch_cost_usd(specs[fresh.model], state.context_tokens)
    q_new, q_cur = quality.get(fresh.model), quality.get(state.model)
    keep = keep_reason
    if key(fresh.model) > key(state.model):  # the fresh choice is better
        if q_new is None or q_cur is None:
            return _switch(fresh, state.model, keep)
        benefit = (q_new - q_cur) * policy.value_per_quality_point_usd
        if benefit < cost:
            return _switch(fresh, state.model, keep)
        return _switch(fresh, fresh.model, f"session escalated {state.model} → {fresh.model}: predicted gain "
                                           f"${benefit:.6f} ≥ switch cost ${cost:.6f}")
    if policy.escalate_only:
        return _switch(fresh, state.model, keep)
    saving = (estimated_cost(specs[state.model], request) - estimated_cost(specs[fresh.model], request))
    loss = max((q_cur or 0.0) - (q_new if q_new is not None else q_cur or 0.0), 0.0)
    benefit = saving * policy.expected_remaining_turns - loss * policy.value_per_quality_point_usd
    if benefit < cost:
        return _switch(fresh, state.model, keep)
    return _switch(fresh, fresh.model, f"session downgraded {state.model} → {fresh.model}: expected saving "
                                       f"${benefit:.6f} ≥ switch cost ${cost:.6f}")


def steer(
    fresh: Decision,
    state: SessionState | None,
    request: RouteRequest,
    specs: Mapping[str, ModelSpec],
    policy: SessionPolicy,
    *,
    now: float,
    signal: str | None = None,
) -> Decision:
    """This turn's decision for a session, given the fresh per-turn decision.

    `signal` is an escalation reason seen on this request (explicit header, repeated tool call);
    a signal from the previous turn's outcome waits in `state.pending`. A decision an explicit rule
    made (an agent or route rule that matched) is the user's instruction for this step and stands.
    """
    if state is None or is_expired(state, now, policy.ttl_s) or state.model not in specs:
        return fresh  # no session yet, a cold one, or one whose model is no longer configured
    if fresh.strategy == "rules" and not fresh.reason.startswith("no rule matched"):
        return fresh
    reason = signal or state.pending
    if reason is not None:
        return _escalate(fresh, state, reason, request, specs, policy)
    if state.model not in _eligible(fresh):
        return replace(fresh, reason=f"session model {state.model} cannot serve this request; {fresh.reason}")
    return _reconsider(fresh, state, request, specs, policy)


def advance(
    state: SessionState | None,
    decision: Decision,
    *,
    now: float,
    context_tokens: int,
    signal: str | None,
    request_id: str | None = None,
    policy: SessionPolicy | None = None,
) -> SessionState:
    """The session after a turn: on the decided model, with this turn's outcome signal pending."""
    fresh = state is None or (policy is not None and is_expired(state, now, policy.ttl_s))
    turns = 1 if fresh or state is None else state.turns + 1
    # A turn an explicit rule pinned to another model does not move the session's own model.
    model = decision.model
    if state is not None and not fresh and decision.strategy == "rules" \
            and not decision.reason.startswith("no rule matched"):
        model = state.model
    return SessionState(model=model, updated_at=now, context_tokens=context_tokens, turns=turns,
                        pending=signal, last_request_id=request_id)
