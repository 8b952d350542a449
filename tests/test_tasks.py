"""Task types (caller's or detected), per-agent rules by task, and the per-request price ceiling."""

from __future__ import annotations

from typing import Any

import pytest

from switchman import ConfigError, NoCapableModelError, Router, RouteRequest
from switchman.routing._tasks import TASKS, detect_task, resolve_task, task_from_tags


def _request(text: str, **kw: Any) -> RouteRequest:
    return RouteRequest.from_prompt(text, count_tokens=lambda t: len(t.split()), **kw)


@pytest.mark.parametrize(("text", "task"), [
    ("Write a Python function that returns the n-th Fibonacci number.", "code"),
    ("Fix this:\n```js\nconst x = ;\n```", "code"),
    ("def f(x):\n    return x +\nWhy does this raise a syntax error?", "code"),
    ("Classify the sentiment of this review as positive, negative or neutral: 'Great phone.'", "classification"),
    ("Which planet is largest?\nA) Mars\nB) Jupiter\nC) Venus\nAnswer with the letter.", "classification"),
    ("Extract every person's name and email from the text below as JSON.\n\nAnn <ann@x.io> met Bo.", "extraction"),
    ("Summarize the following article in three sentences:\n\nThe council met on Monday ...", "summarisation"),
    ("TL;DR of this thread please: ...", "summarisation"),
    ("Solve for x: 3x + 7 = 22. Show your steps.", "reasoning"),
    ("If a train travels 60 km/h for 2.5 hours, how many km does it cover?", "reasoning"),
    ("What are some good places to visit in Lisbon in spring?", "chat"),
    ("Hi! How are you today?", "chat"),
])
def test_detect_task(text: str, task: str) -> None:
    assert detect_task(_request(text)) == task


def test_tool_use_steps() -> None:
    tools = [{"type": "function", "function": {"name": "f"}}]
    assert detect_task(_request("Write a function", tools=tools)) == "tool_use"
    after_tool = RouteRequest.from_messages(
        [{"role": "user", "content": "weather?"}, {"role": "assistant", "content": None, "tool_calls": []},
         {"role": "tool", "tool_call_id": "1", "content": "12C"}], count_tokens=len)
    assert detect_task(after_tool) == "tool_use"


def test_system_prompt_counts_and_long_text_is_bounded() -> None:
    request = RouteRequest.from_messages(
        [{"role": "system", "content": "You summarise documents."}, {"role": "user", "content": "word " * 50_000}],
        count_tokens=len)
    assert detect_task(request) == "summarisation"


def test_every_detected_task_is_a_known_one() -> None:
    assert {detect_task(_request(t)) for t in ("", "x", "solve it", "extract it")} <= set(TASKS)


def test_caller_task_wins() -> None:
    assert resolve_task(_request("Write a Python function", task="synthesis")) == "synthesis"
    assert resolve_task(_request("Write a Python function", tags=["team:a", "task:extraction"])) == "extraction"
    assert resolve_task(_request("Write a Python function")) == "code"
    assert task_from_tags(["task:"]) is None


def _model(price: float) -> dict[str, Any]:
    return {"provider": "local", "input_price": price, "output_price": price * 2, "context_window": 100_000}


CONFIG: dict[str, Any] = {
    "models": {"mini": _model(0.15), "mid": _model(1.0), "strong": _model(10.0)},
    "routes": {"default": {"candidates": ["mini", "mid", "strong"], "strategy": "cheapest"},
               "byrule": {"candidates": ["mini", "mid", "strong"], "strategy": "rules", "default": "mid",
                          "rules": [{"when": {"task": "code"}, "model": "strong"}]}},
    "agents": {
        "planner": {"rules": [{"when": {"task": "classification"}, "model": "mini"},
                              {"when": {"task": ["synthesis", "code"]}, "model": "strong"}]},
        "capped": {"max_price_usd": 0.001},
        "tiny": {"max_price_usd": 1e-9},
    },
}


def test_agent_rules_by_detected_and_given_task() -> None:
    router = Router.from_dict(CONFIG)
    classify = router.route("Classify this ticket: billing, bug or feature? 'I was charged twice'", agent="planner")
    assert (classify.model, classify.reason) == ("mini", "agent planner rule 0")
    code = router.route("Write a Python function to parse dates", agent="planner")
    assert code.model == "strong"
    synthesis = router.route("Bring the findings together", agent="planner", task="synthesis")
    assert synthesis.model == "strong"
    chat = router.route("Hello there", agent="planner")
    assert chat.model == "mini" and chat.strategy == "cheapest"  # no rule: the route's strategy


def test_route_rule_matches_detected_task() -> None:
    router = Router.from_dict(CONFIG)
    assert router.route("Implement a function that reverses a list", model="auto:byrule").model == "strong"
    assert router.route("Tell me a joke", model="auto:byrule").model == "mid"


def test_max_price_filters_candidates() -> None:
    router = Router.from_dict(CONFIG)
    messages = [{"role": "user", "content": "word " * 996}]
    tokens = router.request(messages).input_tokens
    assert 900 < tokens < 1200  # ~1,000 cl100k tokens; the routing count estimates within ~15% on English
    decision = router.route(messages, agent="capped")
    assert decision.model == "mini"
    excluded = dict(decision.excluded)
    assert set(excluded) == {"mid", "strong"}
    # input tokens × $1/M + 256 default output tokens × $2/M
    assert excluded["mid"] == f"estimated ${(tokens * 1.0 + 256 * 2.0) / 1e6:.6f} exceeds max_price_usd $0.001"
    # a larger max_tokens prices the output higher: mini too is over the ceiling now
    with pytest.raises(NoCapableModelError, match=r"mini: estimated \$0\.00\d+ exceeds max_price_usd"):
        router.route([{"role": "user", "content": "word " * 996}], agent="capped", max_tokens=5000)


def test_max_price_on_a_route() -> None:
    data = {**CONFIG, "routes": {**CONFIG["routes"], "default": {**CONFIG["routes"]["default"],
                                                                  "strategy": "fixed", "model": "strong",
                                                                  "max_price_usd": 0.01}}}
    decision = Router.from_dict(data).route("hello")
    assert decision.model == "strong"
    with pytest.raises(ConfigError, match="max_price_usd"):
        Router.from_dict({**CONFIG, "agents": {"bad": {"max_price_usd": 0}}})


def test_the_built_request_carries_its_task_so_every_consumer_sees_the_same_one() -> None:
    router = Router.from_dict(CONFIG)
    ask = [{"role": "user", "content": "Write a python function that reverses a linked list."}]
    assert router.request(ask).task == "code"
    assert router.request(ask, task="summarisation").task == "summarisation"  # the caller's wins


def test_a_long_system_prompt_does_not_hide_the_users_instruction() -> None:
    system = {"role": "system", "content": "You are a helpful assistant of the ACME support desk. " * 60}
    user = {"role": "user", "content": "Please summarise the following report in three bullet points: " + "x " * 1500}
    request = RouteRequest.from_messages([system, user], count_tokens=len)
    assert detect_task(request) == "summarisation"
