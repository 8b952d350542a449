"""Evaluation of routers and baselines on outcome data: the numbers behind `switchman eval`, as typed values.

A router under evaluation is reduced to its predictions on the evaluation prompts (predicted
quality and cost per model) plus the knob it was calibrated to. Sweeping the knob gives its
cost–quality frontier; the calibrated knob gives the operating point a user would actually get.
Baselines (single models, random mixes, the hull of single models, the oracle) come from the
true outcomes alone. `EvalReport.to_dict()` is the JSON `eval --json` writes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..learn import knob_grid, sweep
from ..routing import SelectionRule, select
from ._cascade_sim import CascadeParams
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

__all__ = [
    "Baselines",
    "CascadeCalibration",
    "EqualQuality",
    "EvalReport",
    "Frontier",
    "OperatingPoint",
    "References",
    "RouterPredictions",
    "RouterResult",
    "TargetCalibration",
    "baselines",
    "evaluate_predictions",
    "frontier_of",
    "reference_points",
]

XY = tuple[float, float]
"""``(cost in USD per 1k requests, mean quality)``."""


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


@dataclass(frozen=True)
class OperatingPoint:
    """Mean quality and cost per 1k requests, and both relative to the best single model."""

    quality: float
    cost_per_1k: float
    rel_quality: float
    rel_cost: float

    @classmethod
    def at(cls, point: XY, ref: References) -> OperatingPoint:
        """The point `(cost, quality)` measured against the references."""
        cost, quality = point
        return cls(quality, cost, quality / ref.best_quality, cost / ref.best_cost)

    def to_dict(self) -> dict[str, float]:
        """JSON-ready form."""
        return asdict(self)


@dataclass(frozen=True)
class Frontier:
    """A sweep's frontier and what it buys: AIQ and the savings at 95% and 100% of a reference's quality."""

    points: tuple[XY, ...]
    aiq: float
    savings_at_95: float | None
    savings_at_100: float | None
    priciest_model: str
    savings_at_95_vs_priciest: float | None
    savings_at_100_vs_priciest: float | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the frontier as [[cost, quality], ...])."""
        return {
            "aiq": self.aiq,
            "savings_at_95": self.savings_at_95,
            "savings_at_100": self.savings_at_100,
            "vs_most_expensive": {
                "model": self.priciest_model,
                "savings_at_95": self.savings_at_95_vs_priciest,
                "savings_at_100": self.savings_at_100_vs_priciest,
            },
            "frontier": [[c, q] for c, q in self.points],
        }


@dataclass(frozen=True)
class TargetCalibration:
    """Where a router's calibrated knob lands on the evaluation prompts, and the goal it was set for."""

    target: str | None
    point: OperatingPoint

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"target": self.target, **self.point.to_dict()}


@dataclass(frozen=True)
class CascadeCalibration:
    """A cascade's calibrated parameters and what they reach: quality, cost, attempts."""

    params: CascadeParams
    quality: float
    cost_per_1k: float
    mean_attempts: float
    accepted_on_first_rung: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {**asdict(self.params), "quality": self.quality, "cost_per_1k": self.cost_per_1k,
                "mean_attempts": self.mean_attempts, "accepted_on_first_rung": self.accepted_on_first_rung}


@dataclass(frozen=True)
class EqualQuality:
    """A cascade against the single-shot router at each other's quality (costs per 1k; None: unreachable)."""

    single_shot_cost_at_cascade_quality: float | None
    cascade_cost_at_single_shot_quality: float | None
    single_shot_quality: float
    single_shot_cost_per_1k: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "single_shot_cost_at_cascade_quality": self.single_shot_cost_at_cascade_quality,
            "cascade_cost_at_single_shot_quality": self.cascade_cost_at_single_shot_quality,
            "single_shot": {"quality": self.single_shot_quality, "cost_per_1k": self.single_shot_cost_per_1k},
        }


@dataclass(frozen=True)
class RouterResult:
    """One router's or strategy's line of the report.

    A strategy without a knob (cheapest, random, fixed) has no frontier and no calibration; the
    two-model metrics (APGR, CPT) exist only for a pair of models.
    """

    point: OperatingPoint
    frontier: Frontier | None = None
    calibrated: TargetCalibration | CascadeCalibration | None = None
    shares: Mapping[str, float] | None = None
    apgr: float | None = None
    cpt50: float | None = None
    cpt80: float | None = None
    check: str | None = None
    equal_quality: EqualQuality | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the keys `eval --json` has always written)."""
        out: dict[str, Any] = self.point.to_dict()
        if self.frontier is not None:
            out.update(self.frontier.to_dict())
        else:
            out.update({"aiq": None, "savings_at_95": None, "savings_at_100": None, "frontier": []})
        out["calibrated"] = self.calibrated.to_dict() if self.calibrated is not None else None
        if self.shares is not None:
            out["shares"] = dict(self.shares)
        if self.check is not None:
            out["check"] = self.check
        out.update({"apgr": self.apgr, "cpt50": self.cpt50, "cpt80": self.cpt80})
        if self.equal_quality is not None:
            out["equal_quality"] = self.equal_quality.to_dict()
        return out


@dataclass(frozen=True)
class Baselines:
    """What routing is measured against: single models, random routing and mixes, their hull, the oracle."""

    models: Mapping[str, OperatingPoint]
    random: OperatingPoint
    random_mix_between: tuple[str, str]
    random_mix: Frontier
    hull: tuple[XY, ...]
    hull_frontier: Frontier
    oracle: OperatingPoint

    def points(self) -> list[tuple[str, OperatingPoint]]:
        """The baselines that are one operating point, by report name (`model:NAME`, random, oracle)."""
        return [*((f"model:{m}", p) for m, p in self.models.items()), ("random", self.random), ("oracle", self.oracle)]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        out: dict[str, Any] = {f"model:{m}": p.to_dict() for m, p in self.models.items()}
        out["random"] = self.random.to_dict()
        out["random_mix"] = {"between": list(self.random_mix_between), **self.random_mix.to_dict()}
        out["single_model_hull"] = {**self.hull_frontier.to_dict(), "hull": [[c, q] for c, q in self.hull]}
        out["oracle"] = self.oracle.to_dict()
        return out


@dataclass(frozen=True)
class EvalReport:
    """Everything `switchman eval` measured: each router and strategy, and the baselines."""

    n_prompts: int
    best_model: str
    most_expensive_model: str
    split: str | None
    cv: int | None
    routers: Mapping[str, RouterResult] = field(default_factory=dict)
    baselines: Baselines | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON `eval --json` writes."""
        return {
            "n_prompts": self.n_prompts, "best_model": self.best_model,
            "most_expensive_model": self.most_expensive_model, "split": self.split, "cv": self.cv,
            "routers": {name: result.to_dict() for name, result in self.routers.items()},
            "baselines": self.baselines.to_dict() if self.baselines is not None else {},
        }


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


def frontier_of(points: Sequence[XY], ref: References) -> Frontier:
    """The frontier of swept `(cost, quality)` points and its metrics against the references."""
    return Frontier(
        points=tuple(pareto_frontier(points)),
        aiq=aiq(points, 0.0, ref.max_cost),
        savings_at_95=savings_at(points, 0.95 * ref.best_quality, ref.best_cost),
        savings_at_100=savings_at(points, ref.best_quality, ref.best_cost),
        priciest_model=ref.priciest_model,
        savings_at_95_vs_priciest=savings_at(points, 0.95 * ref.priciest_quality, ref.priciest_cost),
        savings_at_100_vs_priciest=savings_at(points, ref.priciest_quality, ref.priciest_cost),
    )


def _calibrated_point(pred: RouterPredictions, table: OutcomeTable) -> tuple[XY, np.ndarray]:
    chosen = np.empty(len(table), dtype=np.int64)
    for knob in np.unique(pred.knobs):
        rows = pred.knobs == knob
        chosen[rows] = select(pred.quality[rows], pred.cost[rows], float(knob), pred.rule)
    return evaluate_choices(chosen, table.quality, table.cost_usd), chosen


def _two_model_metrics(
    pred: RouterPredictions, table: OutcomeTable, ref: References
) -> tuple[float | None, float | None, float | None]:
    """APGR, CPT(50%) and CPT(80%) for a pair of models of different mean quality; None otherwise."""
    none = (None, None, None)
    if len(table.models) != 2:
        return none
    strong = table.models.index(ref.best_model)
    weak = 1 - strong
    scores = pred.quality[:, strong] - pred.quality[:, weak]
    q_strong, q_weak = table.quality[:, strong], table.quality[:, weak]
    if np.isclose(q_strong.mean(), q_weak.mean()):
        return none
    return apgr(q_strong, q_weak, scores), cpt(q_strong, q_weak, scores, 0.5), cpt(q_strong, q_weak, scores, 0.8)


def evaluate_predictions(pred: RouterPredictions, table: OutcomeTable, ref: References) -> RouterResult:
    """Everything `eval` reports for one router: its calibrated point, frontier, shares, APGR/CPT."""
    sweep_points = sweep(pred.quality, pred.cost, table.quality, table.cost_usd, pred.rule,
                         knob_grid(pred.rule).tolist())
    (cost, quality), chosen = _calibrated_point(pred, table)
    shares = np.bincount(chosen, minlength=len(table.models)) / len(chosen)
    point = OperatingPoint.at((cost, quality), ref)
    pgr, cpt50, cpt80 = _two_model_metrics(pred, table, ref)
    return RouterResult(
        point=point,
        frontier=frontier_of([(p.cost_per_1k, p.quality) for p in sweep_points], ref),
        calibrated=TargetCalibration(pred.target, point),
        shares={m: float(s) for m, s in zip(table.models, shares, strict=True) if s > 0},
        apgr=pgr, cpt50=cpt50, cpt80=cpt80,
    )


def baselines(table: OutcomeTable, ref: References, *, seed: int = 0) -> Baselines:
    """Single models, uniform random routing, random mixes, the single-model hull and the oracle."""
    singles = single_model_points(table.quality, table.cost_usd, table.models)
    rng = np.random.default_rng(seed)
    random_choice = rng.integers(0, len(table.models), size=len(table))
    cheapest = min(singles, key=lambda m: singles[m][0])
    hull_points = list(singles.values())
    return Baselines(
        models={str(m): OperatingPoint.at(point, ref) for m, point in singles.items()},
        random=OperatingPoint.at(evaluate_choices(random_choice, table.quality, table.cost_usd), ref),
        random_mix_between=(str(cheapest), ref.best_model),
        random_mix=frontier_of(random_mix_points(singles[cheapest], singles[ref.best_model], steps=10), ref),
        hull=tuple(nondecreasing_convex_hull(hull_points)),
        hull_frontier=frontier_of(hull_points, ref),
        oracle=OperatingPoint.at(oracle_point(table.quality, table.cost_usd), ref),
    )
