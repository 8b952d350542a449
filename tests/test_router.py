"""Router: the decision core assembled from a configuration (`Router.from_dict/from_config(...).route`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from switchman import (
    ArtifactError,
    ConfigError,
    NoCapableModelError,
    Router,
    UnknownModelError,
)
from switchman.learn._artifact import TrainedRouter


def model(input_price: float, output_price: float, **extra: Any) -> dict[str, Any]:
    return {"provider": "local", "input_price": input_price, "output_price": output_price,
            "context_window": 100_000, **extra}


MODELS = {
    "small": model(0.1, 0.2),
    "medium": model(1.0, 2.0, capabilities=["tools", "json", "vision"]),
    "large": model(10.0, 30.0, capabilities=["tools", "json", "vision"]),
    "backup": model(5.0, 5.0),
}
CONFIG: dict[str, Any] = {
    "models": MODELS,
    "routes": {
        "first": {"candidates": ["large"], "strategy": "fixed", "model": "large"},
        "default": {"candidates": ["small", "medium", "large"], "strategy": "cheapest", "fallbacks": ["backup", "large"]},
        "premium": {"candidates": ["medium", "large"], "strategy": "fixed", "model": "large"},
    },
    "agents": {
        "triage": {"model": "small"},
        "coder": {"route": "premium"},
        "writer": {"rules": [{"when": {"tags": ["long"]}, "model": "large"}]},
        "careful": {"allow": ["medium", "large"]},
        "frugal": {"deny": ["small"]},
    },
}
HELLO = [{"role": "user", "content": "Hello!"}]


@pytest.fixture
def router() -> Router:
    return Router.from_dict(CONFIG, seed=0)


def test_auto_uses_the_default_route(router: Router) -> None:
    decision = router.route(HELLO)
    # The route named "default" wins over the first-declared route.
    assert (decision.model, decision.route, decision.strategy) == ("small", "default", "cheapest")


def test_route_accepts_a_plain_string(router: Router) -> None:
    assert router.route("Hello!").model == router.route(HELLO).model == "small"


def test_auto_colon_route(router: Router) -> None:
    decision = router.route(HELLO, model="auto:premium")
    assert (decision.model, decision.route) == ("large", "premium")
    assert decision.fallbacks == ("medium",)


def test_concrete_model_name_is_used_as_is(router: Router) -> None:
    decision = router.route(HELLO, model="medium")
    assert decision.model == "medium"
    # Still the default route's request (its budget counts it), without the route's fallbacks.
    assert decision.route == "default" and decision.fallbacks == () and decision.strategy == "fixed"


@pytest.mark.parametrize("name", ["gpt-17", "auto:nowhere", "AUTO"])
def test_unknown_model_or_route(router: Router, name: str) -> None:
    with pytest.raises(UnknownModelError) as info:
        router.route(HELLO, model=name)
    assert name.removeprefix("auto:") in str(info.value)


def test_agent_pinned_model(router: Router) -> None:
    decision = router.route(HELLO, agent="triage")
    assert decision.model == "small" and "pinned" in decision.reason


def test_agent_route(router: Router) -> None:
    decision = router.route(HELLO, agent="coder")
    assert (decision.model, decision.route) == ("large", "premium")


def test_agent_rules_apply_before_the_route_strategy(router: Router) -> None:
    tagged = router.route(HELLO, agent="writer", tags=["long"])
    assert (tagged.model, tagged.strategy, tagged.route) == ("large", "rules", "default")
    assert tagged.fallbacks == ("small", "medium")
    untagged = router.route(HELLO, agent="writer", tags=["short"])
    assert (untagged.model, untagged.strategy) == ("small", "cheapest")


def test_agent_allow_list(router: Router) -> None:
    decision = router.route(HELLO, agent="careful")
    assert decision.model == "medium"
    assert ("small", "not in the allow-list") in decision.excluded


def test_agent_deny_list(router: Router) -> None:
    decision = router.route(HELLO, agent="frugal")
    assert decision.model == "medium"
    assert ("small", "in the deny-list") in decision.excluded


def test_unknown_agent_uses_the_default_route(router: Router) -> None:
    assert router.route(HELLO, agent="nobody").route == "default"


def test_route_fallbacks_are_appended_in_order_without_repeats(router: Router) -> None:
    decision = router.route(HELLO)
    # Strategy ranking (medium, large), then the route's fallbacks (backup, large) minus repeats.
    assert decision.fallbacks == ("medium", "large", "backup")


def test_policy_filters_apply_to_routes(router: Router) -> None:
    image = [{"role": "user", "content": [{"type": "text", "text": "what is this?"}, {"type": "image_url"}]}]
    decision = router.route(image)
    assert decision.model == "medium"
    assert ("small", "lacks vision") in decision.excluded
    with pytest.raises(NoCapableModelError):
        router.route(HELLO, max_tokens=200_000)


def test_first_route_is_the_default_when_none_is_named_default() -> None:
    config = {**CONFIG, "routes": {k: v for k, v in CONFIG["routes"].items() if k != "default"}, "agents": {}}
    assert Router.from_dict(config).route(HELLO).route == "first"


def test_no_routes_at_all() -> None:
    with pytest.raises(ConfigError, match="no routes"):
        Router.from_dict({"models": MODELS}).route(HELLO)


# --------------------------------------------------------------------------- learned routes

MATH = "Calculate the square root of 1764 and explain each step."
GREETING = "Hello, good evening to you!"


def learned_config(router_path: str, aliases: dict[str, str] | None) -> dict[str, Any]:
    route: dict[str, Any] = {"candidates": ["budget", "premium"], "strategy": "learned", "router": router_path}
    if aliases is not None:
        route["aliases"] = aliases
    return {"models": {"budget": model(0.1, 0.2), "premium": model(10.0, 30.0)}, "routes": {"default": route}}


@pytest.fixture
def router_file(tmp_path: Path, math_greeting_router: TrainedRouter) -> Path:
    return math_greeting_router.save(tmp_path / "router.safetensors")


def test_learned_route_with_aliases_from_a_config_file(tmp_path: Path, router_file: Path) -> None:
    aliases = {"cheap-model": "budget", "strong-model": "premium"}
    config_path = tmp_path / "switchman.yaml"
    config_path.write_text(yaml.safe_dump(learned_config(router_file.name, aliases)))  # relative to the config
    router = Router.from_config(config_path)
    router.warm_up()

    greeting, math = router.route(GREETING), router.route(MATH)
    assert (greeting.model, greeting.strategy, greeting.route) == ("budget", "learned", "default")
    assert math.model == "premium" and math.fallbacks == ("budget",)
    scores = {c.model: c.predicted_quality for c in math.candidates}
    assert scores["premium"] is not None and scores["budget"] is not None
    assert scores["premium"] > scores["budget"]


def test_learned_route_whose_models_cannot_be_placed_fails_at_startup_naming_the_fixes(router_file: Path) -> None:
    # The trained names (cheap-model, strong-model) are not the configured ones, and neither configured
    # name has a public or configured score: the route is refused when built (the gateway builds every
    # route at startup), naming each model and the three fixes, never silently routed to the cheapest.
    router = Router.from_dict(learned_config(str(router_file), None))
    with pytest.raises(ConfigError) as info:
        router.warm_up()
    message = str(info.value)
    assert "routes.default" in message and "budget" in message and "premium" in message
    assert "(1) outcome data" in message and "(2) a public score" in message and "score_name" in message
    assert "(3) your own number" in message and "score: 1250" in message
    assert "trained: cheap-model, strong-model" in message


def test_alias_for_a_model_the_router_was_not_trained_on(router_file: Path) -> None:
    router = Router.from_dict(learned_config(str(router_file), {"gpt-99": "premium"}))
    with pytest.raises(ArtifactError, match="gpt-99"):
        router.route(MATH)


def test_missing_router_file(tmp_path: Path) -> None:
    router = Router.from_dict(learned_config(str(tmp_path / "absent.safetensors"), None))
    with pytest.raises(ArtifactError, match="not found"):
        router.warm_up()
