"""Metric functions against small cases worked out by hand (the arithmetic is in comments)."""

from __future__ import annotations

import numpy as np
import pytest

from switchman.evaluate import (
    aiq,
    apgr,
    cost_at_quality,
    cpt,
    evaluate_choices,
    nondecreasing_convex_hull,
    oracle_choices,
    oracle_point,
    pareto_frontier,
    pgr_curve,
    random_mix_points,
    savings_at,
    single_model_points,
)

# Four operating points (cost per 1k requests, quality):
#   A (1, 0.5)  B (2, 0.6)  C (3, 0.9)  D (4, 0.8)
# D is dominated by C (dearer and worse). B is not dominated (C costs more), but B lies under
# the chord A-C (at cost 2 the chord is 0.5 + 0.2 * 1 = 0.7 > 0.6), so mixing A and C beats B.
A, B, C, D = (1.0, 0.5), (2.0, 0.6), (3.0, 0.9), (4.0, 0.8)
POINTS = [D, B, A, C]  # unsorted on purpose


def test_pareto_frontier_drops_dominated_points_and_sorts_by_cost() -> None:
    assert pareto_frontier(POINTS) == [A, B, C]


def test_pareto_frontier_keeps_best_of_equal_costs_and_drops_duplicates() -> None:
    # (1, 0.4) loses to A at the same cost; the duplicate A appears once; (2, 0.5) ties A's quality at a higher cost.
    assert pareto_frontier([A, (1.0, 0.4), A, (2.0, 0.5)]) == [A]


def test_hull_mixes_past_points_under_the_chord_and_stops_at_best_quality() -> None:
    # Upper hull A, C, D; B is under chord A-C; D comes after the top (C), so it is cut.
    assert nondecreasing_convex_hull(POINTS) == [A, C]


def test_hull_drops_collinear_middle_points() -> None:
    # (2, 0.7) lies exactly on the chord A-C.
    assert nondecreasing_convex_hull([A, (2.0, 0.7), C]) == [A, C]


def test_hull_of_cheapest_best_point_is_that_point() -> None:
    # The cheapest point also has the best quality: nothing dearer helps.
    assert nondecreasing_convex_hull([(1.0, 0.9), (2.0, 0.8), (3.0, 0.9)]) == [(1.0, 0.9)]
    assert nondecreasing_convex_hull([]) == []


def test_aiq_over_full_cost_range_counts_zero_below_cheapest_point() -> None:
    # R~: 0 on [0, 1); linear 0.5 -> 0.9 on [1, 3] (area 2 * 0.7 = 1.4); 0.9 on [3, 4] (area 0.9).
    # AIQ = (0 + 1.4 + 0.9) / 4 = 0.575
    assert aiq(POINTS, 0.0, 4.0) == pytest.approx(0.575)


def test_aiq_inside_the_hull_range() -> None:
    # [1, 3]: the mean of a line from 0.5 to 0.9 is 0.7.
    assert aiq(POINTS, 1.0, 3.0) == pytest.approx(0.7)
    # [2, 5]: line 0.7 -> 0.9 on [2, 3] (area 0.8), then flat 0.9 on [3, 5] (area 1.8); 2.6 / 3
    assert aiq(POINTS, 2.0, 5.0) == pytest.approx(2.6 / 3)


def test_aiq_below_every_point_is_zero_and_bad_range_is_rejected() -> None:
    assert aiq(POINTS, 0.0, 0.5) == 0.0
    with pytest.raises(ValueError, match="cost_max"):
        aiq(POINTS, 2.0, 2.0)


def test_aiq_of_a_dominating_router_is_higher() -> None:
    better = [(c, q + 0.05) for c, q in POINTS]
    assert aiq(better, 0.0, 4.0) > aiq(POINTS, 0.0, 4.0)


def test_cost_at_quality_interpolates_along_the_hull() -> None:
    # On A-C quality rises 0.2 per unit cost: 0.7 is reached at 1 + (0.7 - 0.5) / 0.2 = 2.0.
    assert cost_at_quality(POINTS, 0.7) == pytest.approx(2.0)
    # At or below the cheapest point's quality, the cheapest point's cost.
    assert cost_at_quality(POINTS, 0.4) == pytest.approx(1.0)
    assert cost_at_quality(POINTS, 0.9) == pytest.approx(3.0)
    assert cost_at_quality(POINTS, 0.95) is None


def test_savings_at_target_quality() -> None:
    # Quality 0.7 costs 2.0; against a reference of 4.0 that saves 1 - 2/4 = 0.5.
    assert savings_at(POINTS, 0.7, reference_cost=4.0) == pytest.approx(0.5)
    # Matching C's quality (0.9) against D's cost: 1 - 3/4 = 0.25.
    assert savings_at(POINTS, 0.9, reference_cost=4.0) == pytest.approx(0.25)
    assert savings_at(POINTS, 0.95, reference_cost=4.0) is None
    with pytest.raises(ValueError):
        savings_at(POINTS, 0.7, reference_cost=0.0)


# Two-model case: 4 prompts.
#   q_strong = [1, 1, 1, 0]  mean 0.75
#   q_weak   = [0, 1, 0, 0]  mean 0.25      gap 0.5
#   gain (strong - weak) = [1, 0, 1, 0]
Q_STRONG = np.array([1.0, 1.0, 1.0, 0.0])
Q_WEAK = np.array([0.0, 1.0, 0.0, 0.0])
PERFECT = np.array([0.9, 0.1, 0.8, 0.2])  # ranks the two prompts that gain first


def test_pgr_curve_of_a_perfect_router() -> None:
    # Strong order 0, 2, 3, 1: cumulative gains 1, 2, 2, 2 -> PGR = gain / 4 / 0.5.
    calls, pgr = pgr_curve(Q_STRONG, Q_WEAK, PERFECT)
    np.testing.assert_allclose(calls, [0, 0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(pgr, [0, 0.5, 1.0, 1.0, 1.0])


def test_apgr_of_perfect_and_reversed_routers() -> None:
    # Perfect: trapezoids 0.25 * (0 + .5)/2 + 0.25 * (.5 + 1)/2 + 0.25 + 0.25 = 0.0625 + 0.1875 + 0.5 = 0.75
    assert apgr(Q_STRONG, Q_WEAK, PERFECT) == pytest.approx(0.75)
    # Reversed: PGR 0, 0, 0, 0.5, 1 -> 0.25 * 0.25 + 0.25 * 0.75 = 0.25
    assert apgr(Q_STRONG, Q_WEAK, -PERFECT) == pytest.approx(0.25)


def test_apgr_of_a_random_router_is_one_half() -> None:
    # Constant scores: one tie group, curve (0, 0) -> (1, 1), area exactly 0.5.
    assert apgr(Q_STRONG, Q_WEAK, np.zeros(4)) == pytest.approx(0.5)
    rng = np.random.default_rng(0)
    strong = (rng.random(4000) < 0.8).astype(float)
    weak = (rng.random(4000) < 0.5).astype(float)
    assert apgr(strong, weak, rng.random(4000)) == pytest.approx(0.5, abs=0.03)
    # ...while an informed router on the same data does much better.
    assert apgr(strong, weak, strong - weak + 0.01 * rng.random(4000)) > 0.8


def test_ties_move_together_and_interpolate_as_random_split() -> None:
    # Scores [1, 0, 1, 0]: first group is prompts 0 and 2 (gain 2) -> (0.5, PGR 1); then all.
    calls, pgr = pgr_curve(Q_STRONG, Q_WEAK, np.array([1.0, 0.0, 1.0, 0.0]))
    np.testing.assert_allclose(calls, [0, 0.5, 1.0])
    np.testing.assert_allclose(pgr, [0, 1.0, 1.0])


def test_cpt_interpolates_the_first_crossing() -> None:
    # Perfect router: PGR 0.5 at 25% calls; 0.8 between (0.25, 0.5) and (0.5, 1.0): 0.25 + 0.3/0.5 * 0.25 = 0.4
    assert cpt(Q_STRONG, Q_WEAK, PERFECT, 0.5) == pytest.approx(0.25)
    assert cpt(Q_STRONG, Q_WEAK, PERFECT, 0.8) == pytest.approx(0.4)
    # Random router (one tie group): PGR = x, so CPT(50%) = 0.5.
    assert cpt(Q_STRONG, Q_WEAK, np.zeros(4), 0.5) == pytest.approx(0.5)
    assert cpt(Q_STRONG, Q_WEAK, PERFECT, 0.0) == 0.0
    assert cpt(Q_STRONG, Q_WEAK, PERFECT, 1.5) is None


def test_pgr_needs_a_quality_gap() -> None:
    with pytest.raises(ValueError, match="same mean quality"):
        pgr_curve(np.array([1.0, 0.0]), np.array([0.0, 1.0]), np.array([0.1, 0.2]))


# Outcome matrix: 3 prompts x 3 models, cost in USD per call.
QUALITY = np.array([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
COST = np.array([[3.0, 2.0, 1.0], [1.0, 5.0, 4.0], [2.0, 1.0, 3.0]]) / 1000


def test_single_model_points_are_per_1k_costs_and_mean_quality() -> None:
    # model a: cost (3 + 1 + 2) / 3 per call in thousandths -> 2.0 per 1k; quality 1/3
    points = single_model_points(QUALITY, COST, ["a", "b", "c"])
    assert points["a"] == pytest.approx((2.0, 1 / 3))
    assert points["b"] == pytest.approx((8 / 3, 2 / 3))
    assert points["c"] == pytest.approx((8 / 3, 1 / 3))
    assert set(single_model_points(QUALITY, COST)) == {0, 1, 2}


def test_single_model_points_skip_missing_cells() -> None:
    quality = QUALITY.copy()
    quality[0, 0] = np.nan
    cost = COST.copy()
    cost[0, 0] = np.nan
    # model a over prompts 1 and 2 only: cost (1 + 2) / 2 = 1.5 per 1k, quality 0
    assert single_model_points(quality, cost, ["a", "b", "c"])["a"] == pytest.approx((1.5, 0.0))


def test_oracle_picks_cheapest_of_the_best() -> None:
    # Prompt 0: a and b score 1, b is cheaper -> 1. Prompt 1: b and c score 1, c cheaper -> 2.
    # Prompt 2: all score 0, b is cheapest -> 1.
    np.testing.assert_array_equal(oracle_choices(QUALITY, COST), [1, 2, 1])
    # Cost (2 + 4 + 1) / 3 thousandths per call = 7/3 per 1k; quality 2/3.
    assert oracle_point(QUALITY, COST) == pytest.approx((7 / 3, 2 / 3))


def test_oracle_never_picks_a_missing_cell() -> None:
    quality = QUALITY.copy()
    quality[0, 1] = np.nan  # b has no result on prompt 0: a is the only model with quality 1
    assert oracle_choices(quality, COST)[0] == 0


def test_evaluate_choices_and_missing_cells() -> None:
    # Everything to model a: cost 2.0 per 1k, quality 1/3.
    assert evaluate_choices(np.zeros(3, dtype=int), QUALITY, COST) == pytest.approx((2.0, 1 / 3))
    quality = QUALITY.copy()
    quality[1, 0] = np.nan
    with pytest.raises(ValueError, match="no result"):
        evaluate_choices(np.zeros(3, dtype=int), quality, COST)
    with pytest.raises(ValueError):
        evaluate_choices(np.array([0, 1, 3]), QUALITY, COST)


def test_random_mix_points_lie_on_the_segment() -> None:
    # p = 0, 0.5, 1 between A (1, 0.5) and C (3, 0.9): midpoint (2, 0.7).
    np.testing.assert_allclose(random_mix_points(A, C, steps=2), [A, (2.0, 0.7), C])
    mixes = random_mix_points(A, C, steps=10)
    assert len(mixes) == 11
    # Mixing A and C beats B at B's cost, which is why the hull drops B.
    assert np.interp(B[0], [m[0] for m in mixes], [m[1] for m in mixes]) > B[1]
