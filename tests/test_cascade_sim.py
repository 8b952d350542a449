"""The cascade simulation: the routing core's generator fed known outcomes; `eval --strategy cascade`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from switchman.cli import app
from switchman.evaluate._cascade_sim import (
    CascadeParams,
    calibrate_cascade,
    ladders_for,
    simulate,
    sweep_cascade,
)
from switchman.learn._acceptance import fit_acceptance
from switchman.routing._cascade import AcceptanceCheck, Attempt, OracleCheck, Outcome

MODELS = ("small", "mid", "big")
# Three prompts: every model right; only mid and big right; only big right.
QUALITY = np.array([[1.0, 1.0, 1.0], [0.0, 1.0, 1.0], [0.0, 0.0, 1.0]])
COST = np.tile([0.001, 0.01, 0.1], (3, 1))
Q_HAT = np.tile([0.3, 0.6, 0.9], (3, 1))
TOKENS = np.full((3, 3), 10.0)
PARAMS = CascadeParams("test", 0.5, 0.0, 3)


def test_ladders_come_from_the_predictions() -> None:
    (ladder, *_) = ladders_for(Q_HAT, COST, MODELS, max_attempts=3, adequate=0.0)
    assert [a.model for a in ladder] == ["small", "mid", "big"]
    (short, *_) = ladders_for(Q_HAT, COST, MODELS, max_attempts=2, adequate=0.0)
    assert [a.model for a in short] == ["small", "big"]


def test_oracle_check_cost_counts_every_attempt() -> None:
    ladders = ladders_for(Q_HAT, COST, MODELS, max_attempts=3, adequate=0.0)
    point = simulate(ladders, [OracleCheck(0.5)], MODELS, QUALITY, COST, TOKENS, PARAMS)
    # p0: small (0.001); p1: small + mid (0.011); p2: small + mid + big (0.111) → mean 0.041 → 41 per 1k.
    assert point.cost_per_1k == pytest.approx(41.0)
    assert point.quality == pytest.approx(1.0)
    assert point.attempts == pytest.approx(2.0)
    assert point.first_rung_share == pytest.approx(1 / 3)


def test_predicted_quality_check_by_hand() -> None:
    ladders = ladders_for(Q_HAT, COST, MODELS, max_attempts=3, adequate=0.0)
    point = simulate(ladders, [AcceptanceCheck(0.5)], MODELS, QUALITY, COST, TOKENS, PARAMS)
    # q̂ small 0.3 < 0.5 rejected, mid 0.6 accepted: every prompt pays small + mid = 0.011; p2 is served wrong.
    assert point.cost_per_1k == pytest.approx(11.0)
    assert point.quality == pytest.approx(2 / 3)


def test_answer_aware_score_and_the_last_rung() -> None:
    ladders = ladders_for(Q_HAT, COST, MODELS, max_attempts=3, adequate=0.0)
    tokens = np.array([[5.0, 5.0, 5.0], [500.0, 5.0, 5.0], [500.0, 500.0, 500.0]])

    def score(attempt: Attempt, outcome: Outcome) -> float:
        return 1.0 if (outcome.output_tokens or 0) < 100 else 0.0

    point = simulate(ladders, [AcceptanceCheck(0.5, score)], MODELS, QUALITY, COST, tokens, PARAMS)
    # p0 small; p1 small + mid; p2 rejected everywhere, so the last rung (big) is served: same as the oracle.
    assert point.cost_per_1k == pytest.approx(41.0)
    assert point.quality == pytest.approx(1.0)


def test_sweep_and_calibration() -> None:
    points = sweep_cascade(Q_HAT, COST, MODELS, QUALITY, COST, TOKENS, check="oracle", thresholds=(0.5,),
                           adequate=(0.0, 0.8), max_attempts=(2, 3))
    assert len(points) == 4
    chosen = calibrate_cascade(points, 0.99)
    # All reach quality 1. adequate 0.8 keeps only big (q̂ 0.9 ≥ 0.72): 100 per 1k; two rungs (small → big):
    # (0.001 + 0.101 + 0.101) / 3 → 67.7 per 1k; the full ladder: 41 per 1k, the cheapest.
    by_params = {(p.params.max_attempts, p.params.adequate): p.cost_per_1k for p in points}
    assert by_params[(2, 0.0)] == pytest.approx(203 / 3)
    assert by_params[(3, 0.8)] == pytest.approx(100.0)
    assert chosen.params.max_attempts == 3 and chosen.params.adequate == 0.0
    assert chosen.cost_per_1k == pytest.approx(41.0)
    assert calibrate_cascade(points, 2.0).quality == pytest.approx(1.0)  # unreachable: the best quality


def test_acceptance_predictor_learns_from_answer_length() -> None:
    rng = np.random.default_rng(0)
    n = 400
    tokens = rng.integers(1, 200, size=(n, 2)).astype(float)
    quality = (tokens > 20).astype(float)  # short answers ("I do") are wrong
    q_hat = np.full((n, 2), 0.5)
    predictor = fit_acceptance(q_hat, tokens, quality, ("a", "b"))
    short = predictor.probability("a", 0.5, 3)
    long = predictor.probability("a", 0.5, 150)
    assert short is not None and long is not None and short < 0.3 and long > 0.7
    assert predictor.probability("unknown", 0.5, 3) is None
    assert predictor.score(Attempt("b", 0, 0.5), Outcome(output_tokens=150)) == pytest.approx(
        predictor.probability("b", 0.5, 150))


def test_eval_strategy_cascade_on_a_slice(shared_data: Path, tmp_path: Path, embedding_cache_dir: Path) -> None:
    out = tmp_path / "report.json"
    env = {"COLUMNS": "200", "SWITCHMAN_CACHE_DIR": str(embedding_cache_dir)}
    result = CliRunner().invoke(app, ["eval", "--data", str(shared_data / "routerbench"), "--task", "mbpp",
                                      "--strategy", "cascade", "--json", str(out)], env=env)
    assert result.exit_code == 0, result.stdout + str(result.exception)
    report = json.loads(out.read_text())
    routers = report["routers"]
    assert set(routers) == {"learned (single-shot)", "cascade (learned check)", "cascade (oracle check, upper bound)"}
    for name in ("cascade (learned check)", "cascade (oracle check, upper bound)"):
        entry = routers[name]
        assert 0 <= entry["quality"] <= 1 and entry["cost_per_1k"] > 0
        assert 1 <= entry["calibrated"]["mean_attempts"] <= entry["calibrated"]["max_attempts"]
        assert entry["equal_quality"]["single_shot"]["quality"] == routers["learned (single-shot)"]["quality"]
    # Paying for every attempt, a cascade never costs less than its cheapest rung would alone.
    cheapest = min(v["cost_per_1k"] for k, v in report["baselines"].items() if k.startswith("model:"))
    assert routers["cascade (oracle check, upper bound)"]["cost_per_1k"] >= cheapest
    assert "cascade (learned check)" in " ".join(result.stdout.split())
