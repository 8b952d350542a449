"""Online mode: traffic moves toward the model with better feedback; the exploration floor holds."""

from __future__ import annotations

import random

import numpy as np
import pytest

from switchman import ModelSpec, RouteRequest
from switchman._config import OnlineOptions
from switchman._tokens import count_tokens
from switchman.learn import get_embedder
from switchman.learn._artifact import TrainedRouter
from switchman.learn._online import BetaCounts, OnlineStrategy, kmeans, thompson_choice
from switchman.learn._strategy import LearnedStrategy
from switchman.routing import DecisionContext

CHEAP = ModelSpec("cheap-model", "local", 0.1, 0.2)
STRONG = ModelSpec("strong-model", "local", 10.0, 30.0)
GREETINGS = ["Hello, good evening to you!", "Hi! Lovely to meet you, how have you been?",
             "Good afternoon Maria, hope you are well."]


def _online(router: TrainedRouter, exploration: float) -> OnlineStrategy:
    options = OnlineOptions(enabled=True, exploration=exploration, clusters=2, prior_strength=2.0)
    return OnlineStrategy(LearnedStrategy(router, get_embedder(router.embedder)), options)


def _simulate(strategy: OnlineStrategy, success: dict[str, float], rounds: int, seed: int = 0) -> list[str]:
    """Route greetings for `rounds` turns; each answer gets feedback 1 with the model's success rate."""
    rng = random.Random(seed)
    chosen = []
    for i in range(rounds):
        request = RouteRequest.from_prompt(GREETINGS[i % len(GREETINGS)], count_tokens=count_tokens)
        decision = strategy.decide(request, [CHEAP, STRONG], DecisionContext(route="r", random_value=rng.random()))
        assert strategy.observe(decision.cluster, decision.model, 1.0 if rng.random() < success[decision.model] else 0.0)
        chosen.append(decision.model)
    return chosen


def test_traffic_moves_to_the_model_with_better_feedback(math_greeting_router: TrainedRouter) -> None:
    # Trained on data where both models answer greetings perfectly; live feedback says the cheap
    # one now fails most of them.
    strategy = _online(math_greeting_router, exploration=0.05)
    chosen = _simulate(strategy, {"cheap-model": 0.2, "strong-model": 0.9}, rounds=600)
    first, last = chosen[:100], chosen[-200:]
    assert last.count("strong-model") / len(last) > 0.85
    assert last.count("strong-model") / len(last) > first.count("strong-model") / len(first)


@pytest.mark.parametrize("exploration", [0.1, 0.25])
def test_the_exploration_floor_holds(math_greeting_router: TrainedRouter, exploration: float) -> None:
    strategy = _online(math_greeting_router, exploration=exploration)
    chosen = _simulate(strategy, {"cheap-model": 0.0, "strong-model": 1.0}, rounds=1000, seed=3)
    share = chosen[200:].count("cheap-model") / 800
    assert share >= exploration * 0.8  # the floor (minus sampling noise), although it always fails
    assert share <= exploration * 1.5  # and not much more: Thompson sampling has given up on it


def test_thompson_choice_is_pure_given_its_randomness() -> None:
    alpha, beta, cost = np.array([2.0, 30.0]), np.array([30.0, 2.0]), np.array([1.0, 2.0])
    picks = [thompson_choice(alpha, beta, cost, np.random.default_rng(s), exploration=0.0)[0] for s in range(50)]
    assert picks == [thompson_choice(alpha, beta, cost, np.random.default_rng(s), exploration=0.0)[0]
                     for s in range(50)]
    assert set(picks) == {1}
    # Exploration 0.5 over two candidates: every pick is uniform.
    explored = [thompson_choice(alpha, beta, cost, np.random.default_rng(s), exploration=0.5) for s in range(400)]
    assert all(flag for _, flag in explored)
    assert 150 < sum(i == 0 for i, _ in explored) < 250
    # A tolerance takes the cheapest model among draws close to the best.
    assert thompson_choice(np.array([50.0, 50.0]), np.array([50.0, 50.0]), cost, np.random.default_rng(0),
                           exploration=0.0, tolerance=0.5)[0] == 0


def test_counts_and_clusters() -> None:
    counts = BetaCounts.from_prior(np.array([[1.0, np.nan]]), strength=2.0)
    assert counts.alpha.tolist() == [[3.0, 2.0]] and counts.beta.tolist() == [[1.0, 2.0]]
    counts.observe(0, 1, 0.25)
    assert counts.row(0)[0].tolist() == [3.0, 2.25] and counts.row(0)[1].tolist() == [1.0, 2.75]
    x = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    centroids = kmeans(x, 2)
    assign = (x @ centroids.T).argmax(axis=1)
    assert assign[0] == assign[1] != assign[2] == assign[3]


def test_feedback_for_other_decisions_is_ignored(math_greeting_router: TrainedRouter) -> None:
    strategy = _online(math_greeting_router, exploration=0.05)
    assert not strategy.observe(None, "cheap-model", 1.0)  # decided by another strategy: no cluster
    assert not strategy.observe(0, "unknown-model", 1.0)
    assert not strategy.observe(99, "cheap-model", 1.0)


def test_online_needs_a_learned_route() -> None:
    from switchman._config import RouteConfig, parse_config
    from switchman._exceptions import ConfigError

    with pytest.raises(ConfigError, match="'online' needs strategy 'learned'"):
        parse_config({"models": {"a": {"provider": "p", "input_price": 1, "output_price": 1}},
                      "routes": {"r": {"candidates": ["a"], "strategy": "cheapest", "online": {"enabled": True}}}})
    assert RouteConfig(candidates=["a"], online={"enabled": False}).online is not None  # type: ignore[arg-type]


def test_feedback_on_a_session_steered_turn_still_reaches_its_cluster(math_greeting_router: TrainedRouter) -> None:
    from switchman.routing._sessions import SessionPolicy, SessionState, steer

    strategy = _online(math_greeting_router, 0.05)
    request = RouteRequest.from_prompt(GREETINGS[0], count_tokens=count_tokens)
    decision = strategy.decide(request, [CHEAP, STRONG], DecisionContext(route="r", random_value=0.5))
    cluster = decision.cluster
    assert cluster is not None and decision.reason.startswith(f"online cluster {cluster}:")
    state = SessionState(model=decision.model, updated_at=0.0, context_tokens=10, turns=1)
    kept = steer(decision, state, request, {s.name: s for s in (CHEAP, STRONG)}, SessionPolicy(), now=1.0)
    assert kept.reason.startswith("session kept")  # the session's reason comes first
    column = [CHEAP.name, STRONG.name].index(kept.model)
    alpha_before = strategy.counts.row(cluster)[0][column]
    assert kept.cluster == cluster  # the session keeps the decision's cluster
    assert strategy.observe(kept.cluster, kept.model, 1.0)
    assert strategy.counts.row(cluster)[0][column] == alpha_before + 1.0
