"""The cascade generator and its checks (pure core)."""

from __future__ import annotations

import json

import pytest

from switchman._config import parse_config
from switchman._router import Router
from switchman.routing._cascade import (
    AcceptanceCheck,
    Attempt,
    CascadeStrategy,
    Expectations,
    JsonCheck,
    LogprobCheck,
    OracleCheck,
    Outcome,
    ToolArgsCheck,
    ToolCall,
    build_ladder,
    cascade,
    drive,
)
from switchman.routing._decision import CandidateScore

LADDER = (Attempt("small", 0, 0.4), Attempt("mid", 1, 0.6), Attempt("big", 2, 0.9))
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}, "n": {"type": "integer"}},
          "required": ["city"]}
JSON_SCHEMA = Expectations(response_format={"type": "json_schema", "json_schema": {"name": "p", "schema": SCHEMA}})
TOOLS = Expectations(tools=({"type": "function", "function": {
    "name": "search", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}}},))


def test_accepts_on_the_first_rung() -> None:
    result, attempts = drive(cascade(LADDER, [OracleCheck(0.5)]), lambda a: Outcome(quality=1.0))
    assert [a.model for a, _ in attempts] == ["small"]
    assert result.model == "small" and result.accepted and result.rung == 0


def test_escalates_when_a_check_fails() -> None:
    quality = {"small": 0.0, "mid": 1.0, "big": 1.0}
    result, attempts = drive(cascade(LADDER, [OracleCheck(0.5)]), lambda a: Outcome(quality=quality[a.model]))
    assert [a.model for a, _ in attempts] == ["small", "mid"]
    assert result.model == "mid" and result.accepted
    assert [(m, v.accepted) for m, v in result.trace] == [("small", False), ("mid", True)]


def test_stops_at_the_last_rung_and_serves_it_unchecked() -> None:
    result, attempts = drive(cascade(LADDER, [OracleCheck(0.5)]), lambda a: Outcome(quality=0.0))
    assert [a.model for a, _ in attempts] == ["small", "mid", "big"]
    assert result.model == "big" and not result.accepted
    assert "served unchecked" in result.summary()


def test_the_generator_protocol_by_hand() -> None:
    flow = cascade(LADDER, [JsonCheck()], Expectations(response_format={"type": "json_object"}))
    assert next(flow).model == "small"
    assert flow.send(Outcome(text="nope")).model == "mid"
    with pytest.raises(StopIteration) as stop:
        flow.send(Outcome(text='{"ok": true}'))
    assert stop.value.value.model == "mid"


def test_an_upstream_error_escalates() -> None:
    outcomes = {"small": Outcome(error="UpstreamServerError: 500"), "mid": Outcome(text="fine")}
    result, _ = drive(cascade(LADDER, []), lambda a: outcomes[a.model])
    assert result.model == "mid" and result.trace[0][1].check == "upstream"


def test_checks_compose_all_must_pass() -> None:
    checks = [JsonCheck(), LogprobCheck(min_mean=-0.5)]
    expect = Expectations(response_format={"type": "json_object"})
    outcomes = {"small": Outcome(text='{"a": 1}', logprobs=(-2.0, -1.0)), "mid": Outcome(text='{"a": 1}',
                                                                                         logprobs=(-0.1, -0.2))}
    result, _ = drive(cascade(LADDER, checks, expect), lambda a: outcomes[a.model])
    assert result.model == "mid"
    assert result.trace[0][1].check == "logprobs"


@pytest.mark.parametrize(("text", "ok"), [
    ('{"city": "Paris"}', True),
    ('{"city": "Paris", "n": 3}', True),
    ('{"city": 3}', False),          # wrong type
    ('{"town": "Paris"}', False),    # missing required key
    ('{"city": "Paris", "n": "x"}', False),
    ("Paris", False),                # not JSON
    ('["Paris"]', False),
])
def test_json_schema_check(text: str, ok: bool) -> None:
    assert JsonCheck()(LADDER[0], Outcome(text=text), JSON_SCHEMA).accepted is ok


def test_json_object_check_and_no_format() -> None:
    expect = Expectations(response_format={"type": "json_object"})
    assert JsonCheck()(LADDER[0], Outcome(text='{"x": 1}'), expect).accepted
    assert not JsonCheck()(LADDER[0], Outcome(text="[1, 2]"), expect).accepted
    assert not JsonCheck()(LADDER[0], Outcome(text="{x: 1}"), expect).accepted
    assert JsonCheck()(LADDER[0], Outcome(text="plain prose"), Expectations()).accepted  # nothing asked


@pytest.mark.parametrize(("calls", "ok"), [
    ((), True),
    ((ToolCall("search", '{"q": "weather"}'),), True),
    ((ToolCall("search", '{"q": 3}'),), False),       # schema type
    ((ToolCall("search", "{}"),), False),             # missing required
    ((ToolCall("search", '{"q": "x"'),), False),      # not JSON
    ((ToolCall("search", '"q"'),), False),            # not an object
    ((ToolCall("delete_all", '{"q": "x"}'),), False),  # not an offered tool
    ((ToolCall("search", '{"q": "a"}'), ToolCall("search", '{"q": 1}')), False),
])
def test_tool_args_check(calls: tuple[ToolCall, ...], ok: bool) -> None:
    assert ToolArgsCheck()(LADDER[0], Outcome(tool_calls=calls), TOOLS).accepted is ok


def test_logprob_check_thresholds() -> None:
    check = LogprobCheck(min_mean=-1.0, min_token=-3.0)
    assert check(LADDER[0], Outcome(logprobs=(-0.5, -1.0)), Expectations()).accepted  # mean -0.75
    assert not check(LADDER[0], Outcome(logprobs=(-1.0, -1.5)), Expectations()).accepted  # mean -1.25
    assert not check(LADDER[0], Outcome(logprobs=(-0.1, -0.1, -0.1, -3.5)), Expectations()).accepted  # min
    assert check(LADDER[0], Outcome(logprobs=None), Expectations()).accepted  # none returned: no opinion
    assert LogprobCheck(min_mean=None, min_token=None)(LADDER[0], Outcome(logprobs=(-9.0,)), Expectations()).accepted


def test_acceptance_check_uses_the_prediction_or_a_given_score() -> None:
    assert not AcceptanceCheck(0.5)(Attempt("a", 0, 0.4), Outcome(), Expectations()).accepted
    assert AcceptanceCheck(0.5)(Attempt("a", 0, 0.6), Outcome(), Expectations()).accepted
    assert AcceptanceCheck(0.5)(Attempt("a", 0, None), Outcome(), Expectations()).accepted  # no prediction
    by_length = AcceptanceCheck(0.5, score=lambda a, o: 0.9 if (o.output_tokens or 0) > 3 else 0.1)
    assert not by_length(Attempt("a"), Outcome(output_tokens=2), Expectations()).accepted
    assert by_length(Attempt("a"), Outcome(output_tokens=20), Expectations()).accepted


def test_ladder_cheapest_first_skipping_dominated_rungs() -> None:
    scores = [CandidateScore("big", 0.9, 5.0), CandidateScore("dominated", 0.5, 2.0),
              CandidateScore("mid", 0.7, 1.0), CandidateScore("small", 0.6, 0.1)]
    assert [a.model for a in build_ladder(scores, max_attempts=5)] == ["small", "mid", "big"]
    assert [a.model for a in build_ladder(scores, max_attempts=2)] == ["small", "big"]  # ends on the strongest
    assert [a.model for a in build_ladder(scores, max_attempts=5, adequate=0.75)] == ["mid", "big"]
    assert [a.model for a in build_ladder(scores, order=["mid", "small"])] == ["mid", "small"]
    unscored = [CandidateScore("b", predicted_cost_usd=2.0), CandidateScore("a", predicted_cost_usd=1.0)]
    assert [a.model for a in build_ladder(unscored)] == ["a", "b"]


def _router(**cascade_options: object) -> Router:
    caps = ["tools", "json"]
    return Router.from_dict({
        "models": {n: {"provider": "p", "input_price": p, "output_price": p, "capabilities": caps}
                   for n, p in (("small", 0.1), ("mid", 1.0), ("big", 5.0))},
        "routes": {"default": {"candidates": ["big", "mid", "small"], "strategy": "cascade",
                               "cascade": cascade_options}},
    })


def test_config_builds_a_cascade_route() -> None:
    router = _router(checks=["json"], max_attempts=2)
    decision = router.route("hello", response_format={"type": "json_object"})
    assert decision.strategy == "cascade" and decision.model == "small"
    assert decision.fallbacks[0] == "big"  # two attempts: the cheapest, then the strongest
    strategy = router.strategy("default")
    assert isinstance(strategy, CascadeStrategy)
    flow = strategy.start(decision, Expectations(response_format={"type": "json_object"}))
    result, attempts = drive(flow, lambda a: Outcome(text=json.dumps({"m": a.model}) if a.model == "big" else "?"))
    assert [a.model for a, _ in attempts] == ["small", "big"] and result.accepted


def test_config_rejects_acceptance_without_router_and_unknown_ladder() -> None:
    from switchman._exceptions import ConfigError

    base = {"models": {"a": {"provider": "p", "input_price": 1, "output_price": 1}},
            "routes": {"r": {"candidates": ["a"], "strategy": "cascade"}}}
    parse_config(base)
    with pytest.raises(ConfigError, match="acceptance"):
        parse_config({**base, "routes": {"r": {"candidates": ["a"], "strategy": "cascade",
                                               "cascade": {"checks": ["acceptance"]}}}})
    with pytest.raises(ConfigError, match="ladder"):
        parse_config({**base, "routes": {"r": {"candidates": ["a"], "strategy": "cascade",
                                               "cascade": {"ladder": ["zzz"]}}}})
