"""Model profiles: one ability scale for every model, its source, and the startup error for unplaced models."""

from __future__ import annotations

import pytest

from switchman import ConfigError, Router
from switchman.learn import ScoreTable, model_profile, require_placed
from switchman.learn._artifact import TrainedRouter

TABLE = ScoreTable.bundled()


def test_the_ability_comes_from_outcome_data_then_config_then_public_score(
    math_greeting_router: TrainedRouter,
) -> None:
    router = math_greeting_router.with_aliases({"strong-model": "gpt-4o"})
    # 1. The router was trained on it: its ability from the outcome data, even though gpt-4o has a public
    #    score and a configured one.
    trained = model_profile("gpt-4o", router=router, table=TABLE, config_score=1000.0)
    assert (trained.source, trained.column) == ("outcome data", 1)
    assert trained.ability == pytest.approx(router.abilities()["gpt-4o"])
    assert "60 prompts" in trained.detail
    # 2. Not trained on, configured: the user's number wins over the table.
    configured = model_profile("gpt-4o-mini", router=router, table=TABLE, config_score=1250.0)
    assert (configured.source, configured.ability, configured.column) == ("config score", 1250.0, None)
    # 3. Neither: the public score, found by the normaliser (and then by score_name or the upstream name).
    public = model_profile("gpt-4o-mini", router=router, table=TABLE)
    assert (public.source, public.ability) == ("public score", 1317.3)
    assert "gpt-4o-mini-2024-07-18" in public.detail
    by_score_name = model_profile("prod", router=None, table=TABLE, score_name="claude-sonnet-4-5")
    by_upstream = model_profile("prod", router=None, table=TABLE, upstream="openai/gpt-4o")
    assert by_score_name.ability == 1445.4 and by_upstream.ability == 1335.8
    # 4. Nothing: not placed.
    none = model_profile("in-house-7b", router=router, table=TABLE)
    assert (none.source, none.ability, none.placed) == ("none", None, False)


def test_an_unplaced_model_is_refused_naming_it_and_the_three_fixes() -> None:
    profiles = [model_profile(n, router=None, table=TABLE) for n in ("gpt-4o-mini", "in-house-7b", "gpt-4o-minni")]
    with pytest.raises(ConfigError) as info:
        require_placed(profiles, where="routes.default", table=TABLE)
    message = str(info.value)
    assert "routes.default" in message and "in-house-7b" in message and "gpt-4o-minni" in message
    assert "gpt-4o-mini:" not in message  # placed models are not listed
    assert "(1) outcome data" in message and "--from-ledger" in message
    assert "(2) a public score" in message and "score_name" in message
    assert "(3) your own number" in message and "score: 1250" in message
    assert "close names in the table: gpt-4o-mini" in message  # a typo gets a hint


def test_a_learned_route_over_unplaceable_models_fails_when_the_gateway_starts() -> None:
    config = {
        "models": {"known": {"provider": "p", "input_price": 1, "output_price": 2, "score_name": "gpt-4o-mini"},
                   "mystery": {"provider": "p", "input_price": 0.1, "output_price": 0.2}},
        "routes": {"default": {"candidates": ["known", "mystery"], "strategy": "learned"}},
    }
    router = Router.from_dict(config)
    with pytest.raises(ConfigError, match="mystery") as info:
        router.warm_up()  # what `switchman serve` does before it listens
    assert "known:" not in str(info.value)
    config["models"]["mystery"]["score"] = 1100  # fix (3)
    fixed = Router.from_dict(config)
    fixed.warm_up()
    decision = fixed.route("Write a limerick about routers.")
    assert decision.model in ("known", "mystery") and decision.strategy == "learned"
    assert all(c.predicted_quality is not None for c in decision.candidates)


def test_switchman_models_lists_abilities_and_their_sources() -> None:
    from switchman._decider import Decider

    decider = Decider.from_dict({
        "models": {"a": {"provider": "p", "input_price": 1, "output_price": 2, "score": 1180},
                   "gpt-4o": {"provider": "p"}, "z": {"provider": "p", "input_price": 1, "output_price": 1}},
        "routes": {"default": {"candidates": ["a", "gpt-4o"], "strategy": "learned"}},
    })
    profiles = decider.model_profiles()
    assert (profiles["a"].source, profiles["a"].ability) == ("config score", 1180)
    assert (profiles["gpt-4o"].source, profiles["gpt-4o"].ability) == ("public score", 1335.8)
    assert profiles["z"].source == "none"
