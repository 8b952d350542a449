"""Sessions' pure core (switch cost, steering, expiry) and the in-memory store with an injected clock."""

from __future__ import annotations

from typing import Any

import pytest

from switchman import ModelSpec
from switchman.gateway._sessions import MemorySessionStore, answer_signal
from switchman.routing import CandidateScore, Decision, RouteRequest
from switchman.routing._sessions import (
    SessionPolicy,
    SessionState,
    advance,
    is_expired,
    repeated_tool_call,
    steer,
    switch_cost_usd,
)

SPECS = {
    "mini": ModelSpec("mini", "p", input_price=0.15, output_price=0.6, cached_input_price=0.075),
    "big": ModelSpec("big", "p", input_price=2.5, output_price=10.0, cached_input_price=1.25),
    "opus": ModelSpec("opus", "p", input_price=15.0, output_price=75.0, cached_input_price=1.5),
    "nocache": ModelSpec("nocache", "p", input_price=3.0, output_price=15.0),
}
REQUEST = RouteRequest(prompt="next step", input_tokens=1000, session="s")
POLICY = SessionPolicy(ttl_s=600.0, value_per_quality_point_usd=1.0)


def _fresh(model: str = "mini", quality: dict[str, float] | None = None, **kw: Any) -> Decision:
    names = ["mini", "big", "opus"]
    scores = tuple(CandidateScore(m, predicted_quality=(quality or {}).get(m)) for m in names)
    return Decision(model=model, reason="cheapest capable candidate", strategy=kw.pop("strategy", "cheapest"),
                    route="default", candidates=scores, fallbacks=tuple(m for m in names if m != model), **kw)


def _state(model: str = "mini", context_tokens: int = 50_000, **kw: Any) -> SessionState:
    return SessionState(model=model, updated_at=100.0, context_tokens=context_tokens, turns=3, **kw)


# -- switch cost: context tokens × (input − cached input price) of the new model, per 1M tokens --------
@pytest.mark.parametrize(("model", "tokens", "expected"), [
    ("big", 50_000, 0.0625),        # 50k × (2.50 − 1.25) / 1e6
    ("opus", 200_000, 2.7),         # 200k × (15.00 − 1.50) / 1e6
    ("mini", 1_000_000, 0.075),     # 1M × (0.15 − 0.075) / 1e6
    ("big", 0, 0.0),                # nothing said yet: nothing to re-read
    ("nocache", 500_000, 0.0),      # no cached price: no cache to lose
])
def test_switch_cost_hand_computed(model: str, tokens: int, expected: float) -> None:
    assert switch_cost_usd(SPECS[model], tokens) == pytest.approx(expected)


def test_no_session_state_takes_the_fresh_decision() -> None:
    fresh = _fresh()
    assert steer(fresh, None, REQUEST, SPECS, POLICY, now=100.0) is fresh


def test_a_model_no_longer_configured_starts_afresh() -> None:
    fresh = _fresh()
    assert steer(fresh, _state("retired"), REQUEST, SPECS, POLICY, now=110.0, signal="x") is fresh


def test_keeps_its_model_while_things_go_well() -> None:
    decision = steer(_fresh("mini"), _state("big"), REQUEST, SPECS, POLICY, now=110.0)
    assert decision.model == "big" and decision.strategy == "session"
    assert decision.reason.startswith("session kept big")
    assert decision.fallbacks == ("mini", "opus")


def test_signal_escalates_one_step_by_price_when_nothing_predicts_quality() -> None:
    decision = steer(_fresh("mini"), _state("mini"), REQUEST, SPECS, POLICY, now=110.0, signal="empty answer")
    assert decision.model == "big"  # the next better, not the best
    assert decision.reason == ("session escalated mini → big: empty answer (switch cost $0.062500 ≤ benefit $1.000000)"
                               "; route: cheapest capable candidate")  # the route's own reason follows the session's


def test_pending_signal_from_the_previous_turn_escalates() -> None:
    state = _state("big", pending="upstream error on big")
    decision = steer(_fresh("mini"), state, REQUEST, SPECS, POLICY, now=110.0)
    assert decision.model == "opus" and "upstream error on big" in decision.reason


def test_escalation_by_predicted_quality() -> None:
    quality = {"mini": 0.5, "big": 0.9, "opus": 0.8}  # ranked by quality, not price: mini < opus < big
    decision = steer(_fresh("mini", quality), _state("mini"), REQUEST, SPECS, POLICY, now=110.0, signal="x")
    assert decision.model == "opus"  # one step up: the next better, not the best
    # opus's switch: 50k × (15 − 1.5) / 1e6 = $0.675; the failing model counts as 0: gain = 0.8 × $1
    assert "(switch cost $0.675000 ≤ benefit $0.800000)" in decision.reason


def test_escalation_declined_when_the_lost_cache_costs_more() -> None:
    # 200k tokens into the conversation, moving to opus costs $2.70; a turn is worth $1 at most.
    decision = steer(_fresh("mini"), _state("big", context_tokens=200_000), REQUEST, SPECS, POLICY, now=110.0,
                     signal="empty answer")
    assert decision.model == "big"
    assert "would cost $2.700000 in lost cache > benefit $1.000000" in decision.reason


def test_already_on_the_best_model() -> None:
    decision = steer(_fresh("mini"), _state("opus"), REQUEST, SPECS, POLICY, now=110.0, signal="empty answer")
    assert decision.model == "opus" and "no better candidate" in decision.reason


def test_unprompted_escalation_needs_predicted_gain_over_switch_cost() -> None:
    quality = {"mini": 0.5, "big": 0.56, "opus": 0.6}
    small_gain = steer(_fresh("big", quality), _state("mini"), REQUEST, SPECS, POLICY, now=110.0)
    assert small_gain.model == "mini"  # gain 0.06 × $1 = $0.06 < $0.0625
    quality["big"] = 0.6
    pays = steer(_fresh("big", quality), _state("mini"), REQUEST, SPECS, POLICY, now=110.0)
    assert pays.model == "big" and "predicted gain $0.100000 ≥ switch cost $0.062500" in pays.reason


def test_escalate_only_never_downgrades() -> None:
    decision = steer(_fresh("mini"), _state("opus", context_tokens=10), REQUEST, SPECS, POLICY, now=110.0)
    assert decision.model == "opus"


def test_downgrade_when_allowed_and_the_saving_pays() -> None:
    policy = SessionPolicy(escalate_only=False, expected_remaining_turns=5.0)
    request = RouteRequest(input_tokens=10_000, max_tokens=1000)
    # per turn: opus 10k×15 + 1k×75 = $0.225; mini 10k×0.15 + 1k×0.6 = $0.0021 → saving $0.2229 × 5 turns = $1.1145
    # switch cost on mini: 20k × (0.15 − 0.075) / 1e6 = $0.0015
    decision = steer(_fresh("mini"), _state("opus", context_tokens=20_000), request, SPECS, policy, now=110.0)
    assert decision.model == "mini"
    assert decision.reason == "session downgraded opus → mini: expected saving $1.114500 ≥ switch cost $0.001500; route: cheapest capable candidate"
    no_turns_left = SessionPolicy(escalate_only=False, expected_remaining_turns=0.0)
    assert steer(_fresh("mini"), _state("opus", context_tokens=20_000), request, SPECS, no_turns_left,
                 now=110.0).model == "opus"


def test_explicit_rule_for_the_step_wins() -> None:
    fresh = Decision(model="opus", reason="agent coder rule 0", strategy="rules", route="default")
    assert steer(fresh, _state("mini"), REQUEST, SPECS, POLICY, now=110.0) is fresh
    after = advance(_state("mini"), fresh, now=120.0, context_tokens=5, signal=None, policy=POLICY)
    assert after.model == "mini"  # the step's pin does not move the session's own model


def test_expiry_with_an_injected_clock() -> None:
    state = _state("big")  # updated at t=100
    assert not is_expired(state, 700.0, 600.0)
    assert is_expired(state, 700.5, 600.0)
    assert steer(_fresh("mini"), state, REQUEST, SPECS, POLICY, now=700.5).model == "mini"
    restarted = advance(state, _fresh("mini"), now=700.5, context_tokens=10, signal=None, policy=POLICY)
    assert restarted.turns == 1 and restarted.model == "mini"


def test_advance_counts_turns_and_carries_the_outcome() -> None:
    state = advance(None, _fresh("mini"), now=1.0, context_tokens=120, signal=None, request_id="r1")
    assert (state.model, state.turns, state.context_tokens, state.pending) == ("mini", 1, 120, None)
    state = advance(state, _fresh("mini"), now=2.0, context_tokens=300, signal="empty answer", request_id="r2")
    assert (state.turns, state.context_tokens, state.pending, state.last_request_id) == (2, 300, "empty answer", "r2")


def _call(name: str, args: str) -> dict[str, Any]:
    return {"role": "assistant", "content": None,
            "tool_calls": [{"id": "x", "type": "function", "function": {"name": name, "arguments": args}}]}


def test_repeated_tool_call() -> None:
    tool = {"role": "tool", "tool_call_id": "x", "content": "r"}
    same = RouteRequest(messages=({"role": "user", "content": "go"}, _call("f", "{}"), tool, _call("f", "{}"), tool))
    assert repeated_tool_call(same)
    other_args = RouteRequest(messages=(_call("f", '{"a":1}'), tool, _call("f", '{"a":2}'), tool))
    assert not repeated_tool_call(other_args)
    broken = RouteRequest(messages=(_call("f", "{}"), tool, _call("f", "{}"), tool, {"role": "assistant", "content": "ok"}))
    assert not repeated_tool_call(broken)
    assert not repeated_tool_call(RouteRequest(messages=(_call("f", "{}"),)))


def test_memory_store_expires_and_evicts() -> None:
    store = MemorySessionStore(ttl_s=10.0, max_sessions=2)
    store.put("a", SessionState("mini", updated_at=0.0))
    store.put("b", SessionState("mini", updated_at=5.0))
    assert store.get("a", 9.0) is not None
    assert store.get("a", 10.5) is None and len(store) == 1  # expired on read
    store.put("c", SessionState("mini", updated_at=11.0))
    store.put("d", SessionState("mini", updated_at=12.0))
    assert len(store) == 2 and store.get("b", 12.0) is None  # evicted, oldest first
    assert store.expire(22.5) == 2 and len(store) == 0


@pytest.mark.parametrize(("body", "signal"), [
    (b'{"choices":[{"message":{"content":"hi"},"finish_reason":"stop"}]}', None),
    (b'{"choices":[{"message":{"content":"cut"},"finish_reason":"length"}]}', "truncated answer (finish_reason length)"),
    (b'{"choices":[{"message":{"content":"  "},"finish_reason":"stop"}]}', "empty answer"),
    (b'{"choices":[{"message":{"content":null,"tool_calls":[{"id":"1"}]},"finish_reason":"tool_calls"}]}', None),
    (b'{"choices":[]}', "empty answer (no choices)"),
    (b"not json", None),
])
def test_answer_signal(body: bytes, signal: str | None) -> None:
    assert answer_signal(body) == signal


def test_keeper_truncated_answer_escalates_the_next_turn() -> None:
    from switchman._config import parse_config
    from switchman.gateway._context import RequestContext
    from switchman.gateway._exchange import Exchange
    from switchman.gateway._sessions import SessionKeeper
    from switchman.gateway._wire import Usage

    config = parse_config({"models": {m: {"provider": "p", "input_price": s.input_price, "output_price": s.output_price,
                                           "cached_input_price": s.cached_input_price} for m, s in SPECS.items()},
                           "routes": {"default": {"candidates": ["mini", "big", "opus"]}}})
    now = [50.0]
    keeper = SessionKeeper.from_config(config, config.model_specs(), clock=lambda: now[0])
    request = RouteRequest(prompt="go", input_tokens=1000, session="s1")
    context = RequestContext(request_id="r1", session="s1")
    first = keeper.steer(request, _fresh("mini"), context)
    assert first.model == "mini"
    exchange = Exchange(context, 0.0)
    exchange.request, exchange.decision, exchange.model = request, first, "mini"
    exchange.tried, exchange.usage = ["mini"], Usage(1000, 4000)
    keeper.observe(exchange, b'{"choices":[{"message":{"content":"partial"},"finish_reason":"length"}]}')
    state = keeper.store.get("s1", now[0])
    assert state is not None and state.context_tokens == 5000  # what the next turn re-reads
    assert state.pending == "truncated answer (finish_reason length)"
    now[0] += 1
    second = keeper.steer(request, _fresh("mini"), RequestContext(request_id="r2", session="s1"))
    # switch cost on big: 5000 × (2.5 − 1.25) / 1e6 = $0.00625
    assert second.model == "big"
    assert second.reason == ("session escalated mini → big: truncated answer (finish_reason length) "
                             "(switch cost $0.006250 ≤ benefit $1.000000); route: cheapest capable candidate")


def test_when_the_route_picks_the_sessions_model_it_is_kept_not_downgraded() -> None:
    # A model without a cached price costs nothing to "switch" to; staying on it is not a downgrade.
    policy = SessionPolicy(escalate_only=False)
    decision = steer(_fresh("nocache"), _state("nocache"), REQUEST, SPECS, policy, now=110.0)
    assert decision.model == "nocache"
    assert decision.reason.startswith("session kept nocache") and "downgraded" not in decision.reason
