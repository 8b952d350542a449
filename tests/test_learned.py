"""LearnedStrategy.decide: a trained router choosing between candidates for one request."""

from __future__ import annotations

import pytest

from switchman import ModelSpec, RouteRequest
from switchman._tokens import count_tokens
from switchman.learn import get_embedder
from switchman.learn._artifact import TrainedRouter
from switchman.learn._strategy import LearnedStrategy
from switchman.routing import DecisionContext, estimated_cost

CHEAP = ModelSpec("cheap-model", "local", 0.1, 0.2)
STRONG = ModelSpec("strong-model", "local", 10.0, 30.0)
OTHER = ModelSpec("other-model", "local", 1.0, 1.0)  # configured, but not in the trained router
FREE = ModelSpec("free-model", "local", 0.0, 0.0)  # likewise, and the cheapest of all
CTX = DecisionContext(route="default")

# Unseen phrasings: none of these strings is in the training table.
MATH = [
    "Calculate the square root of 1764 and explain each step.",
    "Differentiate 3x^4 - 2x and evaluate it at x = 2.",
    "How many prime numbers are there between 50 and 70?",
]
GREETINGS = [
    "Hello, good evening to you!",
    "Hi! Lovely to meet you, how have you been?",
    "Good afternoon Maria, hope you are well.",
]


@pytest.fixture
def strategy(math_greeting_router: TrainedRouter) -> LearnedStrategy:
    return LearnedStrategy(math_greeting_router, get_embedder(math_greeting_router.embedder))


def request(prompt: str) -> RouteRequest:
    return RouteRequest.from_prompt(prompt, count_tokens=count_tokens)


@pytest.mark.parametrize("prompt", GREETINGS)
def test_greetings_go_to_the_cheap_model(strategy: LearnedStrategy, prompt: str) -> None:
    decision = strategy.decide(request(prompt), [STRONG, CHEAP], CTX)
    assert decision.model == "cheap-model"
    assert decision.fallbacks == ("strong-model",)
    assert (decision.strategy, decision.route) == ("learned", "default")


@pytest.mark.parametrize("prompt", MATH)
def test_math_goes_to_the_expensive_model(strategy: LearnedStrategy, prompt: str) -> None:
    decision = strategy.decide(request(prompt), [CHEAP, STRONG], CTX)
    assert decision.model == "strong-model"
    scores = {c.model: c for c in decision.candidates}
    assert scores["strong-model"].predicted_quality > scores["cheap-model"].predicted_quality  # type: ignore[operator]
    assert decision.candidates[0].model == "strong-model"  # ranked by predicted quality


def test_scores_carry_predicted_quality_tokens_and_cost(strategy: LearnedStrategy) -> None:
    req = request(GREETINGS[0])
    decision = strategy.decide(req, [CHEAP, STRONG], CTX)
    for score in decision.candidates:
        spec = CHEAP if score.model == "cheap-model" else STRONG
        assert score.predicted_quality is not None and 0.0 <= score.predicted_quality <= 1.0
        # The training data had 50 (cheap) and 80 (strong) output tokens on every prompt.
        expected_tokens = 50.0 if spec is CHEAP else 80.0
        assert score.predicted_output_tokens == pytest.approx(expected_tokens, rel=1e-3)
        assert score.predicted_cost_usd == pytest.approx(spec.cost(req.input_tokens, expected_tokens), rel=1e-3)


def test_a_zero_knob_override_always_takes_the_best_predicted(math_greeting_router: TrainedRouter) -> None:
    # tradeoff with λ = 0 is "highest predicted quality": math goes to the strong model; with a huge λ
    # the cost term dominates and even math goes to the cheap one. The override beats the calibrated knob.
    strategy = LearnedStrategy(math_greeting_router, get_embedder("wordllama-256"), knob=0.0)
    assert strategy.decide(request(MATH[0]), [CHEAP, STRONG], CTX).model == "strong-model"
    huge = LearnedStrategy(math_greeting_router, get_embedder("wordllama-256"), knob=1e9)
    assert huge.decide(request(MATH[0]), [CHEAP, STRONG], CTX).model == "cheap-model"


def test_unknown_candidates_are_priced_not_scored_and_last_in_fallbacks(strategy: LearnedStrategy) -> None:
    req = request(MATH[0])
    decision = strategy.decide(req, [OTHER, CHEAP, STRONG], CTX)
    assert decision.model == "strong-model"
    assert decision.fallbacks == ("cheap-model", "other-model")
    other = next(c for c in decision.candidates if c.model == "other-model")
    assert other.predicted_quality is None
    assert other.predicted_cost_usd == pytest.approx(estimated_cost(OTHER, req))
    assert decision.candidates[-1].model == "other-model"


def test_no_known_candidate_means_the_cheapest(strategy: LearnedStrategy) -> None:
    req = request(MATH[0])
    decision = strategy.decide(req, [OTHER, FREE], CTX)
    assert decision.model == "free-model"
    assert decision.fallbacks == ("other-model",)
    assert "no candidate can be placed" in decision.reason
    assert all(c.predicted_quality is None for c in decision.candidates)


def test_aliases_make_configured_names_known(math_greeting_router: TrainedRouter) -> None:
    aliased = math_greeting_router.with_aliases({"cheap-model": "budget", "strong-model": "premium"})
    strategy = LearnedStrategy(aliased, get_embedder(aliased.embedder))
    budget, premium = ModelSpec("budget", "local", 0.1, 0.2), ModelSpec("premium", "local", 10.0, 30.0)
    assert strategy.decide(request(MATH[0]), [budget, premium], CTX).model == "premium"
    assert strategy.decide(request(GREETINGS[0]), [budget, premium], CTX).model == "budget"
