"""Calibration: targets → the selection knob, on hand-made sweeps and on RouterBench."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from switchman import ConfigError
from switchman.evaluate._load import load_data
from switchman.evaluate import OutcomeTable
from switchman.evaluate._run import predict_with_router
from switchman.learn._artifact import TrainedRouter
from switchman.learn._calibrate import (
    SweepPoint,
    Target,
    calibrate,
    knob_grid,
    parse_target,
    sweep,
)
from switchman.learn._train import TrainSettings, shrunk_bias, train_router

# --------------------------------------------------------------------------- parse_target


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("quality=0.95", Target("quality", 0.95)),
        (" quality = 1 ", Target("quality", 1.0)),
        ("cost=0.50", Target("cost", 0.5)),
        ("cost=2e-1", Target("cost", 0.2)),
        ("share:gpt-4-1106-preview=0.2", Target("share", 0.2, "gpt-4-1106-preview")),
        ("share:meta/llama-2-70b-chat=0", Target("share", 0.0, "meta/llama-2-70b-chat")),
    ],
)
def test_parse_target(text: str, expected: Target) -> None:
    assert parse_target(text) == expected


def test_target_str_round_trips() -> None:
    for text in ("quality=0.95", "cost=0.5", "share:gpt-4=0.2"):
        assert str(parse_target(text)) == text
        assert parse_target(str(parse_target(text))) == parse_target(text)


@pytest.mark.parametrize(
    "text",
    ["nonsense", "quality", "quality=", "quality=high", "latency=3", "cost=0", "cost=-1", "quality=0",
     "quality=3", "share:gpt-4=1.5", "share:gpt-4=-0.1", "share:=0.2", "share=0.2"],
)
def test_bad_targets_are_config_errors(text: str) -> None:
    with pytest.raises(ConfigError, match="bad target"):
        parse_target(text)


# --------------------------------------------------------------------------- calibrate on a hand-made sweep

MODELS = ("strong", "weak")
BEST = 0.90  # the best single model's mean quality
# knob, mean quality, cost per 1k, share of [strong, weak]
POINTS = [
    SweepPoint(0.0, 0.90, 10.0, np.array([1.0, 0.0])),
    SweepPoint(1.0, 0.88, 6.0, np.array([0.6, 0.4])),
    SweepPoint(2.0, 0.86, 4.0, np.array([0.4, 0.6])),
    SweepPoint(3.0, 0.80, 2.0, np.array([0.2, 0.8])),
    SweepPoint(4.0, 0.60, 1.0, np.array([0.0, 1.0])),
]


def run(*targets: str) -> tuple[float, bool]:
    result = calibrate(POINTS, [parse_target(t) for t in targets], MODELS, BEST, mix=False)
    assert result.knob.alternate is None
    return result.knob.value, result.met


def test_quality_target_takes_the_cheapest_point_that_meets_it() -> None:
    # 95% of 0.90 = 0.855: knobs 0, 1, 2 qualify; knob 2 is the cheapest of them.
    assert run("quality=0.95") == (2.0, True)
    assert run("quality=0.97") == (1.0, True)  # 0.873: only knobs 0 and 1
    assert run("quality=1.0") == (0.0, True)
    result = calibrate(POINTS, [parse_target("quality=0.95")], MODELS, BEST, mix=False)
    assert (result.quality, result.cost_per_1k) == (0.86, 4.0)
    assert result.rel_quality == pytest.approx(0.86 / 0.90)


def test_a_quality_target_between_two_knobs_is_hit_exactly_by_mixing_them() -> None:
    # 0.855 lies between knob 2 (0.86 at 4.0) and knob 3 (0.80 at 2.0): a share p = (0.855 − 0.80) / 0.06
    # of prompts on knob 2 lands on it at 2 + p × 2 ≈ 3.833 per 1k — cheaper than knob 2 alone, and
    # cheaper than mixing knob 2 with knob 4 (p' = 0.255 / 0.26, cost 1 + 3p' ≈ 3.942).
    result = calibrate(POINTS, [parse_target("quality=0.95")], MODELS, BEST)
    share = (0.855 - 0.80) / 0.06
    assert result.knob.value == 3.0 and result.knob.alternate == 2.0
    assert result.knob.alternate_share == pytest.approx(share)
    assert result.quality == pytest.approx(0.855)
    assert result.cost_per_1k == pytest.approx(2.0 + share * 2.0)
    assert result.met is True


def test_a_cost_target_between_two_knobs_is_spent_exactly_by_mixing_them() -> None:
    # cost ≤ 5: knob 2 (4.0, 0.86) mixed with knob 1 (6.0, 0.88) on half the prompts spends exactly 5.
    result = calibrate(POINTS, [parse_target("cost=5")], MODELS, BEST)
    assert (result.knob.value, result.knob.alternate) == (1.0, 2.0)
    assert result.knob.alternate_share == pytest.approx(0.5)
    assert (result.cost_per_1k, result.quality) == (pytest.approx(5.0), pytest.approx(0.87))


def test_a_mixed_knob_decides_its_share_of_prompts_by_their_text() -> None:
    # Knob.choose sends the prompts whose draw is below the share to the alternate value; the draw is a
    # hash of the prompt, so the share over many prompts is the calibrated one and repeats exactly.
    from switchman.learn import Knob, prompt_draws

    prompts = [f"prompt number {i}" for i in range(4000)]
    draws = prompt_draws(prompts)
    knob = Knob(1e9, 0.0, 0.3)  # value: always the cheap column 1; alternate: always the better column 0
    quality = np.tile([[0.9, 0.5]], (len(prompts), 1))
    cost = np.tile([[0.01, 0.001]], (len(prompts), 1))
    chosen = knob.choose(quality, cost, "tradeoff", draws)
    assert abs(float(np.mean(chosen == 0)) - 0.3) < 0.03
    assert np.array_equal(chosen, knob.choose(quality, cost, "tradeoff", prompt_draws(prompts)))
    assert all(knob.for_draw(d) == (0.0 if d < 0.3 else 1e9) for d in draws[:50])


def test_cost_target_takes_the_best_quality_under_it() -> None:
    assert run("cost=5") == (2.0, True)  # knobs 2, 3, 4 cost ≤ 5; knob 2 has the best quality
    assert run("cost=2") == (3.0, True)  # the bound is inclusive
    assert run("cost=100") == (0.0, True)


def test_share_target_caps_the_calls_to_a_model() -> None:
    assert run("share:strong=0.3") == (3.0, True)  # knobs 3 and 4 send ≤ 30% to strong; 3 is better
    assert run("share:strong=0.4") == (2.0, True)
    assert run("share:weak=0.5") == (0.0, True)  # knobs 0 and 1 send ≤ 50% to weak; 0 has the best quality
    assert run("share:strong=0") == (4.0, True)


def test_combined_targets_must_all_hold() -> None:
    # quality ≥ 0.855 → {0, 1, 2}; share of strong ≤ 0.5 → {2, 3, 4}; both → {2}.
    assert run("quality=0.95", "share:strong=0.5") == (2.0, True)


def test_unreachable_quality_reports_the_closest_point() -> None:
    # 150% of the best model's quality: no point qualifies; the highest-quality one is kept.
    assert run("quality=1.5") == (0.0, False)
    assert run("quality=0.95", "share:strong=0.3") == (0.0, False)


def test_unreachable_cost_reports_the_cheapest_point() -> None:
    result = calibrate(POINTS, [parse_target("cost=0.5")], MODELS, BEST)
    assert (result.knob.value, result.met, result.cost_per_1k) == (4.0, False, 1.0)


def test_share_of_an_unknown_model_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="gpt-5"):
        calibrate(POINTS, [parse_target("share:gpt-5=0.2")], MODELS, BEST)


def test_sweep_scores_each_knob_with_true_outcomes() -> None:
    # Two prompts, two models. Predicted: model 0 better on both; true: model 1 right on prompt 0 only.
    predicted_q = np.array([[0.9, 0.8], [0.9, 0.3]])
    predicted_c = np.array([[0.01, 0.001], [0.01, 0.001]])
    true_q = np.array([[1.0, 1.0], [1.0, 0.0]])
    true_c = np.array([[0.02, 0.002], [0.04, 0.004]])
    points = sweep(predicted_q, predicted_c, true_q, true_c, "tolerance", knobs=[0.0, 0.2, 1.0])
    # τ=0: both → model 0: quality 1, cost (0.02 + 0.04)/2 × 1000 = 30 per 1k
    # τ=0.2: prompt 0 → model 1 (0.8 ≥ 0.7), prompt 1 → model 0: quality 1, cost (0.002 + 0.04)/2 × 1000 = 21
    # τ=1: both → model 1: quality 0.5, cost (0.002 + 0.004)/2 × 1000 = 3
    assert [p.quality for p in points] == [1.0, 1.0, 0.5]
    assert [p.cost_per_1k for p in points] == pytest.approx([30.0, 21.0, 3.0])
    assert [p.shares.tolist() for p in points] == [[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]]


def test_knob_grids_start_at_always_best() -> None:
    for rule in ("tolerance", "tradeoff"):
        grid = knob_grid(rule)
        assert grid[0] == 0.0 and np.all(np.diff(grid) > 0) and len(grid) > 100


# --------------------------------------------------------------------------- calibration reaching its target on data

GPT4 = "gpt-4-1106-preview"


@pytest.fixture(scope="module")
def routerbench(shared_data: Path) -> tuple[OutcomeTable, OutcomeTable]:
    everything = load_data([shared_data / "routerbench"])
    return everything.where_split("train"), everything.where_split("test").complete()


def train(train_table: OutcomeTable, target: str) -> TrainedRouter:
    settings = TrainSettings(embedder="wordllama-256", algorithm="knn", targets=(parse_target(target),))
    return train_router(train_table, settings)


@pytest.mark.usefixtures("cache_dir")
def test_quality_target_is_met_on_routerbench(routerbench: tuple[OutcomeTable, OutcomeTable]) -> None:
    trained = train(routerbench[0], "quality=0.9")
    calibration = trained.summary["calibration"]
    assert calibration["met"] is True
    assert calibration["rel_quality"] >= 0.9
    # Checked against the data directly too: gpt-4 is the best single model on the training prompts.
    gpt4 = routerbench[0].quality[:, routerbench[0].models.index(GPT4)]
    assert trained.summary["best_model"] == GPT4
    assert calibration["quality"] >= 0.9 * float(gpt4.mean()) - 1e-12
    # Giving up 10% of gpt-4's quality buys a large saving: well under half of always calling it.
    assert calibration["cost_per_1k"] < 0.5 * _mean_cost_per_1k(routerbench[0], GPT4)


@pytest.mark.usefixtures("cache_dir")
def test_cost_target_is_met_on_routerbench(routerbench: tuple[OutcomeTable, OutcomeTable]) -> None:
    calibration = train(routerbench[0], "cost=0.5").summary["calibration"]
    assert calibration["met"] is True
    assert calibration["cost_per_1k"] <= 0.5


@pytest.mark.usefixtures("cache_dir")
def test_share_target_holds_on_the_test_split(routerbench: tuple[OutcomeTable, OutcomeTable]) -> None:
    train_table, test_table = routerbench
    trained = train(train_table, f"share:{GPT4}=0.2")
    assert trained.summary["calibration"]["met"] is True
    pred = predict_with_router(trained, test_table)
    share = float(np.mean(pred.chosen == test_table.models.index(GPT4)))
    # The knob was chosen on out-of-fold training predictions, so on 946 unseen prompts the share can
    # drift: one binomial standard error at p = 0.2 is sqrt(0.2 × 0.8 / 946) ≈ 0.013, and the final fit
    # on all training prompts shifts predictions a little more. 0.05 is about 4 standard errors.
    assert share <= 0.2 + 0.05
    assert share > 0  # the cap is not met trivially by never calling gpt-4


def _mean_cost_per_1k(table: OutcomeTable, model: str) -> float:
    j = table.models.index(model)
    return float(np.nanmean(table.cost_usd[:, j]) * 1000)


@pytest.mark.parametrize(
    ("bias", "se", "expected"),
    [
        (0.0, 0.01, 0.0),
        (0.01, 0.02, 0.0),  # within its standard error of 0: not corrected
        (-0.01, 0.01, 0.0),  # exactly one standard error: the positive part is 0
        (0.03, 0.01, 0.03 * (1 - 1 / 9)),  # three standard errors: 8/9 of it
        (-0.03, 0.01, -0.03 * (1 - 1 / 9)),
        (0.02, 0.0, 0.02),  # measured without noise: corrected in full
        (float("nan"), 0.01, 0.0),  # nothing measured: no correction, never a NaN target
        (0.02, float("nan"), 0.0),
    ],
)
def test_nested_bias_is_shrunk_by_its_standard_error(bias: float, se: float, expected: float) -> None:
    assert shrunk_bias(bias, se) == pytest.approx(expected)
