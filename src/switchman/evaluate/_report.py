"""Evaluation of routers and baselines on outcome data: the numbers behind `switchman eval`.

A router under evaluation is reduced to its predictions on the evaluation prompts (predicted
quality and cost per model) plus the knob it was calibrated to. Sweeping the knob gives its
cost–quality frontier; the calibrated knob gives the operating point a user would actually get.
Baselines (single models, random mixes, the hull of single models, the oracle) come from the
true outcomes alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..learn import knob_grid, sweep
from ..routing import SelectionRule, select
from ._cost_quality import (
    aiq,
    apgr,
    cpt,
    evaluate_choices,
    nondecreasing_convex_hull,
    oracle_point,
    pareto_frontier,
    random_mix_points,
    savings_at,
    single_model_points,
)
from ._datasets import OutcomeTable

__all__ = ["RouterPredictions", "baselines", "evaluate_predictions", "reference_points"]


@dataclass(frozen=True)
class RouterPredictions:
    """A router's view of the evaluation prompts.

    `knobs` is the calibrated knob per prompt (one value, or per-fold values under CV).
    `target` names the calibration goal.
    """

    name: str
    quality: np.ndarray
    cost: np.ndarray
    rule: SelectionRule
    knobs: np.ndarray
    target: str | None = None


@dataclass(frozen=True)
class References:
    """The best single model (highest mean quality) and the most expensive one, on these prompts."""

    best_model: str
    best_quality: float
    best_cost: float
    priciest_model: str
    priciest_quality: float
    priciest_cost: float
    max_cost: float


def reference_points(table: OutcomeTable) -> References:
    """Reference models on a complete table."""
    points = single_model_points(table.quality, table.cost_usd, table.models)
    best = max(points, key=lambda m: (points[m][1], -points[m][0]))
    priciest = max(points, key=lambda m: points[m][0])
    return References(
        best_model=str(best), best_quality=points[best][1], best_cost=points[best][0],
        priciest_model=str(priciest), priciest_quality=points[priciest][1], priciest_cost=points[priciest][0],
        max_cost=max(c for c, _ in points.values()),
    )


def _relative(point: tuple[float, float], ref: References) -> dict[str, float]:
    cost, quality = point
    return {"rel_quality": quality / ref.best_quality, "rel_cost": cost / ref.best_cost}


def _frontier_metrics(points: Sequence[tuple[float, float]], ref: References) -> dict[str, Any]:
    frontier = pareto_frontier(points)
    return {
        "aiq": aiq(points, 0.0, ref.max_cost),
        "savings_at_95": savings_at(points, 0.95 * ref.best_quality, ref.best_cost),
        "savings_at_100": savings_at(points, ref.best_quality, ref.best_cost),
        "vs_most_expensive": {
            "model": ref.priciest_model,
            "savings_at_95": savings_at(points, 0.95 * ref.priciest_quality, ref.priciest_cost),
            "savings_at_100": savings_at(points, ref.priciest_quality, ref.priciest_cost),
        },
        "frontier": [[c, q] for c, q in frontier],
    }


def _calibrated_point(pred: RouterPredictions, table: OutcomeTable) -> tuple[tuple[float, float], np.ndarray]:
    chosen = np.empty(len(table), dtype=np.int64)
    for knob in np.unique(pred.knobs):
        rows = pred.knobs == knob
        chosen[rows] = select(pred.quality[rows], pred.cost[rows], float(knob), pred.rule)
    return evaluate_choices(chosen, table.quality, table.cost_usd), chosen


def _two_model_metrics(pred: RouterPredictions, table: OutcomeTable, ref: References) -> dict[str, float | None]:
    if len(table.models) != 2:
        return {"apgr": None, "cpt50": None, "cpt80": None}
    strong = table.models.index(ref.best_model)
    weak = 1 - strong
    scores = pred.quality[:, strong] - pred.quality[:, weak]
    q_strong, q_weak = table.quality[:, strong], table.quality[:, weak]
    if np.isclose(q_strong.mean(), q_weak.mean()):
        return {"apgr": None, "cpt50": None, "cpt80": None}
    return {
        "apgr": apgr(q_strong, q_weak, scores),
        "cpt50": cpt(q_strong, q_weak, scores, 0.5),
        "cpt80": cpt(q_strong, q_weak, scores, 0.8),
    }


def evaluate_predictions(pred: RouterPredictions, table: OutcomeTable, ref: References) -> dict[str, Any]:
    """Everything `eval --json` reports for one router."""
    sweep_points = sweep(pred.quality, pred.cost, table.quality, table.cost_usd, pred.rule, knob_grid(pred.rule))
    points = [(p.cost_per_1k, p.quality) for p in sweep_points]
    (cost, quality), chosen = _calibrated_point(pred, table)
    shares = np.bincount(chosen, minlength=len(table.models)) / len(chosen)
    result: dict[str, Any] = {
        "quality": quality,
        "cost_per_1k": cost,
        **_relative((cost, quality), ref),
        **_frontier_metrics(points, ref),
        "calibrated": {
            "target": pred.target,
            "quality": quality,
            "cost_per_1k": cost,
            **_relative((cost, quality), ref),
        },
        "shares": {m: float(s) for m, s in zip(table.models, shares, strict=True) if s > 0},
        **_two_model_metrics(pred, table, ref),
    }
    return result


def baselines(table: OutcomeTable, ref: References, *, seed: int = 0) -> dict[str, Any]:
    """Single models, uniform random routing, random mixes, the single-model hull and the oracle."""
    singles = single_model_points(table.quality, table.cost_usd, table.models)
    out: dict[str, Any] = {}
    for model, point in singles.items():
        out[f"model:{model}"] = _point_entry(point, ref)
    rng = np.random.default_rng(seed)
    random_choice = rng.integers(0, len(table.models), size=len(table))
    out["random"] = _point_entry(evaluate_choices(random_choice, table.quality, table.cost_usd), ref)
    cheapest = min(singles, key=lambda m: singles[m][0])
    mix = random_mix_points(singles[cheapest], singles[ref.best_model], steps=10)
    out["random_mix"] = {
        "between": [str(cheapest), ref.best_model],
        **_frontier_metrics(mix, ref),
    }
    hull_points = list(singles.values())
    out["single_model_hull"] = {
        **_frontier_metrics(hull_points, ref),
        "hull": [[c, q] for c, q in nondecreasing_convex_hull(hull_points)],
    }
    oracle = oracle_point(table.quality, table.cost_usd)
    out["oracle"] = _point_entry(oracle, ref)
    return out


def _point_entry(point: tuple[float, float], ref: References) -> dict[str, Any]:
    cost, quality = point
    return {"quality": quality, "cost_per_1k": cost, **_relative(point, ref)}


def summary_rows(report: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(name, entry) rows for printing: routers first, then baselines."""
    rows = [(name, entry) for name, entry in report["routers"].items()]
    rows += [(f"baseline: {name}", entry) for name, entry in report["baselines"].items() if "quality" in entry]
    return rows
