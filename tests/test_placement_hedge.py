"""The placement hedge: a route's knob calibrated in the least favourable world of its placed models' error."""

from __future__ import annotations

import numpy as np
import pytest

from switchman._catalog import ModelSpec
from switchman.learn import SCORE_CENTER, SCORE_SCALE, AbilityPredictor, ModelProfile, Target, TrainedRouter, route_knob
from switchman.learn._calibrate import SweepPoint
from switchman.learn._knob import Knob
from switchman.learn._placement_hedge import hedged_worlds, placement_spread, robust_points
from switchman.learn._route_calibration import population_optimism, route_population


def test_the_spread_is_the_rms_leave_one_model_out_error_of_the_scored_models() -> None:
    predictor = AbilityPredictor()
    predictor.z = np.array([0.0, 1.0, 2.0, np.nan], np.float32)
    predictor.ability.theta = np.array([0.1, 1.0, 2.5, 0.3], np.float32)  # residuals 0.1, 0, 0.5; unscored ignored
    # each placed from the others' median residual: 0.1 − 0.25, 0 − 0.3, 0.5 − 0.05
    assert placement_spread(predictor) == pytest.approx(np.sqrt((0.15**2 + 0.3**2 + 0.45**2) / 3), rel=1e-5)
    # A router trained from a prior is tied to the prior's abilities (`z`); the spread is against public scores.
    predictor.public_z, predictor.z = predictor.z.copy(), predictor.ability.theta.copy()
    assert placement_spread(predictor) == pytest.approx(np.sqrt((0.15**2 + 0.3**2 + 0.45**2) / 3), rel=1e-5)
    predictor.public_z = np.array([0.0, np.nan, np.nan, np.nan], np.float32)
    assert placement_spread(predictor) == 0.0  # one scored model: no measure, no hedge


def test_each_model_that_may_be_the_best_has_a_world_where_it_is_high_and_the_other_placed_models_low() -> None:
    truth = np.array([[0.5, 0.6, 0.7], [0.5, 0.6, 0.7]])  # column 0 known; 1 and 2 placed
    upper = truth + np.array([0.0, 0.05, 0.1])
    lower = truth - np.array([0.0, 0.05, 0.1])
    worlds = hedged_worlds(truth, upper, lower, [1, 2], np.array([1.0, 3.0]))
    assert [round(reference, 6) for _, reference in worlds] == [0.5, 0.65, 0.8]
    np.testing.assert_allclose(worlds[0][0][0], [0.5, 0.55, 0.6])  # every placed model low, the known best
    np.testing.assert_allclose(worlds[1][0][0], [0.5, 0.65, 0.6])  # model 1 high (the best), model 2 low
    np.testing.assert_allclose(worlds[2][0][0], [0.5, 0.55, 0.8])
    truth[:, 0] = 0.95  # a known model better than any placed one's upper bound: one world, every placed model low
    worlds = hedged_worlds(truth, upper, lower, [1, 2], np.ones(2))
    assert len(worlds) == 1 and worlds[0][1] == pytest.approx(0.95)
    np.testing.assert_allclose(worlds[0][0][:, 1:], lower[:, 1:])


def test_the_robust_sweep_keeps_each_knobs_worst_share_of_its_worlds_reference() -> None:
    shares = np.array([0.5, 0.5])
    a = [SweepPoint(0.0, 0.9, 10.0, shares), SweepPoint(1.0, 0.6, 2.0, shares)]
    b = [SweepPoint(0.0, 0.56, 10.0, shares), SweepPoint(1.0, 0.65, 2.0, shares)]
    points = robust_points([a, b], [1.0, 0.7])
    assert [p.quality for p in points] == pytest.approx([0.8, 0.6])  # min(0.9, 0.8) and min(0.6, 0.929), × 1.0
    assert [p.cost_per_1k for p in points] == [10.0, 2.0]


def _router() -> tuple[TrainedRouter, list[ModelProfile], list[ModelSpec]]:
    """Four trained models of abilities −1.5 … 0.5 whose scores sit off the score line (so the spread is
    not 0), and a fifth, the best and the dearest, placed by its score alone."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(800, 8)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    theta = np.array([-1.5, -0.5, 0.0, 0.5])
    p = 1 / (1 + np.exp(-(3.0 * x[:, :1] + 1.2 * theta[None, :])))
    quality = (rng.random(p.shape) < p).astype(float)
    z = theta + np.array([0.4, -0.4, 0.3, -0.3])
    predictor = AbilityPredictor().fit(x, quality, np.full(quality.shape, 50.0), z=z,
                                       input_tokens=np.full(len(x), 100.0))
    names = ("m0", "m1", "m2", "m3")
    router = TrainedRouter(embedder="wordllama-256", models=names, algorithm="ability", predictor=predictor,
                           lengths=predictor, placement=predictor, target="quality=0.95")
    profiles = [ModelProfile(m, None, "outcome data", column=j) for j, m in enumerate(names)]
    profiles.append(ModelProfile("top", SCORE_CENTER + 1.5 * SCORE_SCALE, "public score"))
    prices = (0.1, 0.3, 1.0, 3.0, 30.0)
    specs = [ModelSpec(name=p.name, provider="p", input_price=c, output_price=c, capabilities=frozenset())
             for p, c in zip(profiles, prices, strict=True)]
    return router, profiles, specs


def test_a_route_with_a_placed_best_model_is_calibrated_for_more_quality_and_a_route_without_is_unchanged() -> None:
    router, profiles, specs = _router()
    target = [Target("quality", 0.95)]
    plain = route_knob(router, profiles, specs, target, hedge=0.0)
    hedged = route_knob(router, profiles, specs, target, hedge=1.0)
    # The placed best model is taken at θ̂ + σ: the reference quality is higher, and so is the quality bought.
    assert hedged.best_model_quality > plain.best_model_quality + 0.005
    assert hedged.quality > plain.quality and hedged.cost_per_1k > plain.cost_per_1k
    # Only placed candidates are hedged: over the trained models alone, k changes nothing.
    known, known_specs = profiles[:4], specs[:4]
    assert route_knob(router, known, known_specs, target, hedge=1.0) == route_knob(router, known, known_specs, target,
                                                                                    hedge=0.0)
    # Nor when every candidate is placed (no model with outcome data to anchor the band; see route_knob).
    placed = [ModelProfile(f"p{j}", SCORE_CENTER + z * SCORE_SCALE, "public score") for j, z in enumerate((-1.0, 1.5))]
    ends = [specs[0], specs[4]]
    assert route_knob(router, placed, ends, target, hedge=1.0) == route_knob(router, placed, ends, target, hedge=0.0)


def test_a_hedged_target_that_cannot_be_met_falls_back_to_the_largest_k_that_can() -> None:
    router, profiles, specs = _router()
    target = [Target("quality", 0.95)]
    plain = route_knob(router, profiles, specs, target, hedge=0.0)
    far = route_knob(router, profiles, specs, target, hedge=50.0)  # a reference no route can reach at k = 50
    assert far.met  # not a knob that only maximises the worst world's quality
    assert far.best_model_quality > plain.best_model_quality  # still hedged, at a smaller k
    assert far == route_knob(router, profiles, specs, target, hedge=4.0)  # the largest step that meets it


def test_a_known_model_that_failed_every_prompt_is_no_reference_to_divide_by() -> None:
    router, profiles, specs = _router()
    router.placement.evidence.quality_sums[:, 0] = 0.0  # its every calibration outcome a failure
    result = route_knob(router, [profiles[0], profiles[4]], [specs[0], specs[4]], [Target("quality", 0.95)])
    assert result.met and np.isfinite(result.quality)


def test_a_route_mostly_of_placed_models_keeps_the_central_estimates() -> None:
    """One model with outcome data beside two placed ones: not the case k was chosen on, no hedge."""
    router, profiles, specs = _router()
    target = [Target("quality", 0.95)]
    other = ModelProfile("mid", SCORE_CENTER + 0.2 * SCORE_SCALE, "public score")
    mixed, mixed_specs = [profiles[0], other, profiles[4]], [specs[0], specs[2], specs[4]]
    assert route_knob(router, mixed, mixed_specs, target, hedge=3.0) == route_knob(router, mixed, mixed_specs, target,
                                                                                   hedge=0.0)


def test_cluster_shares_count_each_prompt_once_and_old_files_weigh_by_size() -> None:
    from switchman.learn._centroids import CentroidEvidence

    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 8)).astype(np.float32)
    quality = rng.random((300, 2))
    evidence = CentroidEvidence(clusters=64).fit(x, quality, np.full(quality.shape, 10.0))
    assert evidence.shares is not None and int(evidence.shares.sum()) == 300  # each prompt in one cluster
    assert float(evidence.sizes.sum()) > 300  # small clusters aggregate their nearest prompts: counted again
    np.testing.assert_array_equal(evidence.population, evidence.shares)
    evidence.shares = None  # a file written before shares: the old weights
    np.testing.assert_array_equal(evidence.population, evidence.sizes)


def _priced(router: TrainedRouter, knob: Knob) -> TrainedRouter:
    """The test router with prices for its own models and a given knob of its own."""
    from dataclasses import replace

    return replace(router, prices={m: (p, p) for m, p in zip(router.models, (0.1, 0.3, 1.0, 3.0), strict=True)},
                   knob=knob)


def test_the_population_optimism_is_where_the_routers_own_knob_lands_on_its_population_over_its_target() -> None:
    router, profiles, specs = _router()
    assert population_optimism(router) == 0.0  # no prices for its models: nothing to measure
    always_best = _priced(router, Knob(0.0))  # tradeoff rule, knob 0: every prompt to the best predicted model
    own, own_specs = profiles[:4], specs[:4]  # priced as `_priced` prices them
    pop = route_population(always_best, own, own_specs)
    w = pop.weights / pop.weights.sum()
    chosen = pop.quality.argmax(axis=1)
    share = float(w @ pop.truth[np.arange(len(w)), chosen]) / float(np.max(w @ pop.truth))
    assert population_optimism(always_best) == pytest.approx(share - 0.95)
    # A knob calibrated on the population itself for 0.95 lands there: no optimism to correct.
    calibrated = route_knob(always_best, own, own_specs, [Target("quality", 0.95)]).knob
    assert population_optimism(_priced(router, calibrated)) == pytest.approx(0.0, abs=1e-9)
    from dataclasses import replace

    assert population_optimism(replace(always_best, target="cost=1.0")) == 0.0  # not a quality target


def test_a_hedged_route_aims_higher_by_the_population_optimism_and_no_other_route_does() -> None:
    router, profiles, specs = _router()
    optimistic = _priced(router, Knob(0.0))
    gap = population_optimism(optimistic)
    assert gap > 0.01
    target = [Target("quality", 0.90)]
    for k in (0.0, 1.0):
        raised = route_knob(optimistic, profiles, specs, target, hedge=k, offset=True)
        plain = route_knob(optimistic, profiles, specs, target, hedge=k, offset=False)
        assert raised.met and raised.quality > plain.quality and raised.cost_per_1k > plain.cost_per_1k
    # At k = 0 the raised route is the plain calibration for target + optimism.
    assert route_knob(optimistic, profiles, specs, target, hedge=0.0, offset=True) == route_knob(
        optimistic, profiles, specs, [Target("quality", 0.90 + gap)], hedge=0.0, offset=False)
    # Over the router's own models, or with every candidate placed, the offset changes nothing.
    known, known_specs = profiles[:4], specs[:4]
    assert route_knob(optimistic, known, known_specs, target, offset=True) == route_knob(
        optimistic, known, known_specs, target, offset=False)
    placed = [ModelProfile(f"p{j}", SCORE_CENTER + z * SCORE_SCALE, "public score") for j, z in enumerate((-1.0, 1.5))]
    ends = [specs[0], specs[4]]
    assert route_knob(optimistic, placed, ends, target, offset=True) == route_knob(optimistic, placed, ends, target,
                                                                                  offset=False)
