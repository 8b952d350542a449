"""The pure decision core: requests, policy filters, strategies, selection, decisions."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from switchman import ModelSpec, NoCapableModelError, RouteRequest
from switchman._config import RuleConfig, RuleMatch
from switchman._tokens import count_tokens
from switchman.routing import (
    CODE_SCAN_CHARS,
    CandidateScore,
    CheapestStrategy,
    Decision,
    DecisionContext,
    FixedStrategy,
    RandomStrategy,
    RulesStrategy,
    estimated_cost,
    filter_candidates,
    looks_like_code,
    select,
)


def words(text: str) -> int:
    """A transparent token counter for hand-computed counts."""
    return len(text.split())


# --------------------------------------------------------------------------- RouteRequest


def test_token_count_is_positive_and_grows_with_text() -> None:
    short = RouteRequest.from_prompt("Hello there.", count_tokens=count_tokens)
    long = RouteRequest.from_prompt("Hello there. " * 50, count_tokens=count_tokens)
    assert short.input_tokens > 0
    assert long.input_tokens > short.input_tokens
    assert long.input_tokens - short.input_tokens >= 49  # at least a token per added repetition


def test_token_count_by_hand() -> None:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "be brief"},  # 2 words
        {"role": "user", "content": [{"type": "text", "text": "what is this"}, {"type": "image_url", "image_url": {}}]},
    ]
    request = RouteRequest.from_messages(messages, count_tokens=words, tools=[{"name": "x"}])
    # text 2 + 3, framing 4 per message × 2, one image 85, the tool's str() "{'name': 'x'}" is 2 words
    assert request.input_tokens == 2 + 3 + 8 + 85 + 2


def test_plain_text_request_needs_nothing() -> None:
    request = RouteRequest.from_prompt("Tell me a joke.", count_tokens=words)
    assert request.needs == frozenset()
    assert not (request.has_tools or request.has_images or request.has_code)
    assert request.response_format is None


def test_tools_mean_tools_are_needed() -> None:
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": {}}}
    request = RouteRequest.from_messages([{"role": "user", "content": "weather?"}], count_tokens=words, tools=[tool])
    assert request.has_tools and request.needs == frozenset({"tools"})


@pytest.mark.parametrize("kind", ["image_url", "image", "input_image"])
def test_image_parts_mean_vision(kind: str) -> None:
    content = [{"type": "text", "text": "what is in this picture?"}, {"type": kind, "image_url": {"url": "data:,"}}]
    request = RouteRequest.from_messages([{"role": "user", "content": content}], count_tokens=words)
    assert request.has_images and request.needs == frozenset({"vision"})


@pytest.mark.parametrize(("fmt", "needs_json"), [({"type": "json_object"}, True), ({"type": "json_schema"}, True),
                                                 ({"type": "text"}, False), ("json_object", True)])
def test_json_response_format_means_json(fmt: object, needs_json: bool) -> None:
    request = RouteRequest.from_messages([{"role": "user", "content": "list"}], count_tokens=words,
                                         response_format=fmt)  # type: ignore[arg-type]
    assert ("json" in request.needs) is needs_json


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("Fix this:\n```python\nprint(1)\n```", True),
        ("def add(a, b):\n    return a + b", True),
        ("import numpy as np\nwhy is this slow?", True),
        ("int x = 1;", True),
        ("What is the capital of France?", False),
        ("I'd like to define a plan; then execute it", False),
        ("a plan;  \nthen", True),  # ";" ends a line (trailing spaces allowed)
        ("a plan;\u00a0x", False),
        ("prose first\n\t  from pkg.mod import thing", True),  # a keyword after a line's indentation
        ("  \n\n   const x = 1", True),
        ("prose then def f", False),  # a keyword inside a line is not code
        ("we came from home to import it", False),
        ("from here import nothing", True),
        ("one\rdef x", False),  # "\r" alone does not start a line
        ("x" * (CODE_SCAN_CHARS - 3) + "\ndef f():", False),  # past the bounded scan
        ("x" * (CODE_SCAN_CHARS - 9) + "\ndef f():", True),
    ],
)
def test_code_detection(text: str, code: bool) -> None:
    assert RouteRequest.from_prompt(text, count_tokens=words).has_code is code
    assert looks_like_code(text) is code


def test_prompt_is_the_last_user_text() -> None:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": [{"type": "text", "text": "second"}, {"type": "text", "text": "question"}]},
        {"role": "assistant", "content": "thinking..."},
    ]
    request = RouteRequest.from_messages(messages, count_tokens=words, agent="a", tags=["x", "y"], task="qa",
                                         max_tokens=64)
    assert request.prompt == "second\nquestion"
    assert (request.agent, request.tags, request.task, request.max_tokens) == ("a", frozenset({"x", "y"}), "qa", 64)


# --------------------------------------------------------------------------- policy

TINY = ModelSpec("tiny", "p", 0.1, 0.2, context_window=1_000, capabilities=frozenset({"tools", "json"}))
MID = ModelSpec("mid", "p", 1.0, 2.0, context_window=32_000, capabilities=frozenset({"tools", "json", "vision"}))
BIG = ModelSpec("big", "p", 10.0, 30.0, context_window=200_000, capabilities=frozenset({"tools", "json", "vision"}))
BARE = ModelSpec("bare", "p", 0.05, 0.05, context_window=None, capabilities=frozenset())
ALL = (BIG, TINY, MID, BARE)


def req(input_tokens: int = 100, **kwargs: object) -> RouteRequest:
    return RouteRequest(prompt="p", input_tokens=input_tokens, **kwargs)  # type: ignore[arg-type]


def names(specs: tuple[ModelSpec, ...]) -> list[str]:
    return [s.name for s in specs]


def test_policy_allow_and_deny_lists() -> None:
    result = filter_candidates(req(), ALL, allow={"big", "tiny", "mid"}, deny={"tiny"})
    assert names(result.eligible) == ["big", "mid"]
    assert dict(result.excluded) == {"tiny": "in the deny-list", "bare": "not in the allow-list"}


def test_policy_capabilities() -> None:
    result = filter_candidates(req(has_images=True, has_tools=True), ALL)
    assert names(result.eligible) == ["big", "mid"]
    assert dict(result.excluded) == {"tiny": "lacks vision", "bare": "lacks tools, vision"}


def test_policy_context_window_counts_input_plus_max_tokens() -> None:
    # 900 input + 200 output = 1,100 > tiny's 1,000; a window of None is never exceeded.
    result = filter_candidates(req(900, max_tokens=200), ALL)
    assert names(result.eligible) == ["big", "mid", "bare"]
    assert dict(result.excluded) == {"tiny": "needs 1100 tokens, context window is 1000"}
    assert "tiny" in names(filter_candidates(req(900, max_tokens=100), ALL).eligible)  # 1,000 fits exactly


def test_no_capable_model_lists_every_reason() -> None:
    with pytest.raises(NoCapableModelError) as info:
        filter_candidates(req(5_000, has_images=True), (TINY, BARE), deny={"bare"})
    message = str(info.value)
    assert "tiny: lacks vision" in message
    assert "bare: in the deny-list" in message


def test_estimated_cost_uses_max_tokens_or_the_default() -> None:
    assert estimated_cost(MID, req(1_000, max_tokens=500)) == pytest.approx((1_000 * 1.0 + 500 * 2.0) / 1e6)
    assert estimated_cost(MID, req(1_000)) == pytest.approx((1_000 * 1.0 + 256 * 2.0) / 1e6)  # 256 assumed
    assert estimated_cost(MID, req(1_000), output_tokens=10) == pytest.approx((1_000 + 20) / 1e6)


# --------------------------------------------------------------------------- strategies

CTX = DecisionContext(route="r")
BY_COST = ["bare", "tiny", "mid", "big"]  # all four at 100 in / 256 out


def test_cheapest_picks_the_cheapest_and_ranks_the_rest_as_fallbacks() -> None:
    decision = CheapestStrategy().decide(req(), ALL, CTX)
    assert decision.model == "bare"
    assert decision.fallbacks == tuple(BY_COST[1:])
    assert [c.model for c in decision.candidates] == BY_COST
    assert decision.candidates[0].predicted_cost_usd == pytest.approx(estimated_cost(BARE, req()))
    assert (decision.strategy, decision.route) == ("cheapest", "r")


def test_cheapest_breaks_price_ties_by_larger_context_window() -> None:
    a = ModelSpec("a", "p", 1.0, 1.0, context_window=8_000)
    b = ModelSpec("b", "p", 1.0, 1.0, context_window=128_000)
    assert CheapestStrategy().decide(req(), (a, b), CTX).model == "b"


def test_fixed_strategy_uses_its_model() -> None:
    decision = FixedStrategy("mid").decide(req(), ALL, CTX)
    assert decision.model == "mid"
    assert decision.fallbacks == ("bare", "tiny", "big")


def test_fixed_strategy_falls_back_to_cheapest_when_its_model_was_filtered_out() -> None:
    request = req(has_images=True)
    eligible = filter_candidates(request, ALL).eligible  # tiny and bare lack vision
    decision = FixedStrategy("tiny").decide(request, eligible, CTX)
    assert decision.model == "mid"
    assert "cannot serve" in decision.reason
    assert decision.fallbacks == ("big",)


def rule(model: str, **match: object) -> RuleConfig:
    return RuleConfig.model_validate({"when": RuleMatch(**match), "model": model})  # type: ignore[arg-type]


RULES = RulesStrategy(
    rules=(
        rule("big", agent="planner"),
        rule("mid", task=["summarise", "translate"]),
        rule("tiny", tags=["cheap", "bulk"]),
        rule("big", min_input_tokens=10_000),
        rule("mid", tools=True),
        rule("big", images=True, code=True),
        rule("mid", max_input_tokens=5),
    ),
    default="tiny",
)


@pytest.mark.parametrize(
    ("request_", "expected", "rule_index"),
    [
        (req(agent="planner"), "big", 0),
        (req(task="translate"), "mid", 1),
        (req(tags=frozenset({"bulk", "other"})), "tiny", 2),
        (req(20_000), "big", 3),
        (req(has_tools=True), "mid", 4),
        (req(has_images=True, has_code=True), "big", 5),
        (req(3), "mid", 6),
    ],
)
def test_rules_match_each_condition(request_: RouteRequest, expected: str, rule_index: int) -> None:
    decision = RULES.decide(request_, ALL, CTX)
    assert decision.model == expected
    assert decision.reason.startswith(f"rule {rule_index} ")


def test_rules_first_match_wins() -> None:
    # Matches rule 0 (agent) and rule 2 (tags): rule 0 comes first.
    decision = RULES.decide(req(agent="planner", tags=frozenset({"cheap"})), ALL, CTX)
    assert decision.model == "big" and decision.reason.startswith("rule 0 ")


def test_rules_conditions_must_all_hold() -> None:
    only_images = RULES.decide(req(has_images=True), ALL, CTX)  # rule 5 also needs code
    assert only_images.model == "tiny" and "default" in only_images.reason


def test_rules_skip_a_rule_whose_model_was_filtered_out() -> None:
    eligible = (TINY, BIG)  # mid filtered out by policy
    decision = RULES.decide(req(task="summarise"), eligible, CTX)
    assert decision.model == "tiny" and "default" in decision.reason


def test_rules_without_usable_default_take_the_cheapest() -> None:
    strategy = RulesStrategy(rules=(rule("big", agent="planner"),), default="mid")
    decision = strategy.decide(req(), (TINY, BIG), CTX)  # default mid is not eligible
    assert decision.model == "tiny" and "cheapest" in decision.reason


@pytest.mark.parametrize(("draw", "expected"), [(0.0, "bare"), (0.3, "tiny"), (0.5, "mid"), (0.99, "big"),
                                                (1.0, "big")])
def test_random_strategy_uses_the_context_draw(draw: float, expected: str) -> None:
    # Four candidates in cost order: [0, .25) → bare, [.25, .5) → tiny, [.5, .75) → mid, [.75, 1] → big.
    decision = RandomStrategy().decide(req(), ALL, DecisionContext(random_value=draw))
    assert decision.model == expected
    assert expected not in decision.fallbacks and len(decision.fallbacks) == 3


# --------------------------------------------------------------------------- selection

# One prompt, three models. Cost in USD per call → per 1k requests: 10, 2, 0.1.
Q = np.array([[0.90, 0.85, 0.50]])
C = np.array([[0.010, 0.002, 0.0001]])


@pytest.mark.parametrize(("tau", "expected"), [(0.0, 0), (0.04, 0), (0.05, 1), (0.39, 1), (0.40, 2), (1.0, 2)])
def test_tolerance_picks_the_cheapest_within_tau_of_the_best(tau: float, expected: int) -> None:
    assert select(Q, C, tau, "tolerance").tolist() == [expected]


@pytest.mark.parametrize(("lam", "expected"), [(0.0, 0), (0.01, 1), (1e6, 2)])
def test_tradeoff_lambda(lam: float, expected: int) -> None:
    # λ = 0.01: 0.90 − 0.1 = 0.80, 0.85 − 0.02 = 0.83, 0.50 − 0.001 = 0.499 → model 1.
    assert select(Q, C, lam, "tradeoff").tolist() == [expected]


def test_select_is_row_wise_and_skips_ineligible_cells() -> None:
    quality = np.array([[0.9, 0.85, 0.5], [-np.inf, 0.7, 0.8], [0.2, -np.inf, 0.1]])
    cost = np.tile(C, (3, 1))
    assert select(quality, cost, 0.1, "tolerance").tolist() == [1, 2, 2]
    assert select(quality, cost, 0.0, "tradeoff").tolist() == [0, 2, 0]


def test_select_rejects_an_unknown_rule() -> None:
    with pytest.raises(ValueError, match="unknown selection rule"):
        select(Q, C, 0.1, "greedy")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- Decision


def test_decision_to_dict_is_json_serialisable() -> None:
    decision = Decision(
        model="mid", reason="because", strategy="learned", route="default",
        candidates=(CandidateScore("mid", 0.8, 0.001, 120.0), CandidateScore("big")),
        fallbacks=("big",), excluded=(("tiny", "lacks vision"),),
    )
    data = json.loads(json.dumps(decision.to_dict()))
    assert data["model"] == "mid" and data["route"] == "default"
    assert data["fallbacks"] == ["big"]
    assert data["excluded"] == [{"model": "tiny", "why": "lacks vision"}]
    assert data["candidates"][0] == {"model": "mid", "predicted_quality": 0.8, "predicted_cost_usd": 0.001,
                                     "predicted_output_tokens": 120.0}
    assert data["candidates"][1]["predicted_quality"] is None


def test_a_real_decision_serialises_too() -> None:
    request = req(has_images=True)
    policy = filter_candidates(request, ALL)
    decision = CheapestStrategy().decide(request, policy.eligible, CTX)
    data = json.loads(json.dumps(decision.to_dict()))
    assert data["model"] == "mid" and [c["model"] for c in data["candidates"]] == ["mid", "big"]


def test_equally_cheap_candidates_go_to_the_faster_one() -> None:
    from switchman._catalog import ModelSpec
    from switchman.routing import CheapestStrategy, DecisionContext, RouteRequest

    a = ModelSpec(name="a", provider="p", input_price=1.0, output_price=1.0)
    b = ModelSpec(name="b", provider="p", input_price=1.0, output_price=1.0)
    request = RouteRequest(prompt="hi", input_tokens=10)
    # Same price: with no latency known the name decides; the live TTFT overrides it.
    assert CheapestStrategy().decide(request, [a, b], DecisionContext()).model == "a"
    slow_a = DecisionContext(ttft_ms={"a": 900.0, "b": 120.0})
    decision = CheapestStrategy().decide(request, [a, b], slow_a)
    assert decision.model == "b" and decision.fallbacks == ("a",)
    # A cheaper model still wins over a faster, dearer one.
    c = ModelSpec(name="c", provider="p", input_price=0.5, output_price=0.5)
    assert CheapestStrategy().decide(request, [a, b, c], DecisionContext(ttft_ms={"c": 5000.0})).model == "c"
