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

from .._exceptions import ConfigError
from ..learn import TrainingRecord, knob_grid, sweep
from ..routing import SelectionRule
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
    "ScorePick",
    "TargetCalibration",
    "aiq_cost_max",
    "baselines",
    "evaluate_predictions",
    "frontier_of",
    "reference_points",
    "sweep_points",
    "target_miss",
]

XY = tuple[float, float]
"""``(cost in USD per 1k requests, mean quality)``."""


@dataclass(frozen=True)
class RouterPredictions:
    """A router's view of the evaluation prompts.

    `chosen` is the column the router's calibrated knob picks per prompt (what serving would send);
    `knob` describes that knob, `target` names the calibration goal, `placed` the models it predicts
    from their scores alone, `training` what it was trained on (None: unknown).
    """

    name: str
    quality: np.ndarray
    cost: np.ndarray
    rule: SelectionRule
    chosen: np.ndarray
    knob: str = ""
    target: str | None = None
    placed: tuple[str, ...] = ()
    training: TrainingRecord | None = None


@dataclass(frozen=True)
class References:
    """The best single model and the most expensive one, measured on the evaluated prompts.

    The best single model is named before evaluation (`best_from` says how: the training split's
    best, or given); only its quality and cost are measured on the evaluated prompts.
    """

    best_model: str
    best_quality: float
    best_cost: float
    priciest_model: str
    priciest_quality: float
    priciest_cost: float
    max_cost: float
    best_from: str = "the evaluated prompts"


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
    """Where a router's calibrated knob lands on the evaluation prompts, and the goal it was set for.

    `miss` is achieved − target: relative quality minus the quality target (e.g. 0.962 − 0.95), or
    cost per 1k minus the cost target; None when the target is neither.
    """

    target: str | None
    point: OperatingPoint
    knob: str = ""
    miss: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"target": self.target, "knob": self.knob, "achieved_minus_target": self.miss, **self.point.to_dict()}


def target_miss(target: str | None, point: OperatingPoint) -> float | None:
    """Achieved − target for a single quality or cost target."""
    if not target or "," in target:
        return None
    kind, _, value = target.partition("=")
    try:
        goal = float(value)
    except ValueError:
        return None
    if kind.strip() == "quality":
        return point.rel_quality - goal
    if kind.strip() == "cost":
        return point.cost_per_1k - goal
    return None


@dataclass(frozen=True)
class ScorePick:
    """The baseline a user without outcome data would pick: the best public score within the router's spend."""

    model: str
    score: float
    point: OperatingPoint

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"model": self.model, "score": self.score, **self.point.to_dict()}


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
    score_pick: ScorePick | None = None
    placed: tuple[str, ...] = ()

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
        if self.score_pick is not None:
            out["best_by_public_score_within_spend"] = self.score_pick.to_dict()
        if self.placed:
            out["placed_by_score"] = list(self.placed)
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
    best_model_from: str = "the evaluated prompts"
    aiq_cost_max: float | None = None
    warnings: tuple[str, ...] = ()
    #: Per router, its per-prompt choices (`evaluate.Decisions`, for `eval --decisions`); not in the JSON.
    decisions: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON `eval --json` writes."""
        return {
            "n_prompts": self.n_prompts, "best_model": self.best_model, "best_model_from": self.best_model_from,
            "most_expensive_model": self.most_expensive_model, "split": self.split, "cv": self.cv,
            "aiq_cost_max": self.aiq_cost_max, "warnings": list(self.warnings),
            "routers": {name: result.to_dict() for name, result in self.routers.items()},
            "baselines": self.baselines.to_dict() if self.baselines is not None else {},
        }


def reference_points(table: OutcomeTable, *, best_model: str | None = None,
                     best_from: str = "the evaluated prompts") -> References:
    """Reference models on a complete table; `best_model` names the best single model when it was chosen
    elsewhere (on the training split, or by the user), else it is the best on `table`."""
    points = single_model_points(table.quality, table.cost_usd, table.models)
    best = best_model if best_model is not None else max(points, key=lambda m: (points[m][1], -points[m][0]))
    if best not in points:
        raise ConfigError(f"--reference: model {best!r} is not in the evaluated data {list(table.models)}")
    priciest = max(points, key=lambda m: points[m][0])
    return References(
        best_model=str(best), best_quality=points[best][1], best_cost=points[best][0],
        priciest_model=str(priciest), priciest_quality=points[priciest][1], priciest_cost=points[priciest][0],
        max_cost=max(c for c, _ in points.values()), best_from=best_from,
    )


def aiq_cost_max(curves: Sequence[Sequence[XY]]) -> float:
    """RouterBench's AIQ normaliser: the largest cost among the compared curves' non-decreasing hulls
    (each hull ends where its curve reaches its best quality)."""
    return max(nondecreasing_convex_hull(list(points))[-1][0] for points in curves if len(points))


def frontier_of(points: Sequence[XY], ref: References, cost_max: float | None = None) -> Frontier:
    """The frontier of swept `(cost, quality)` points and its metrics against the references.

    AIQ integrates over [0, cost_max]: pass `aiq_cost_max` of every compared curve, as RouterBench's
    code does; the default is the dearest single model's cost.
    """
    return Frontier(
        points=tuple(pareto_frontier(points)),
        aiq=aiq(points, 0.0, ref.max_cost if cost_max is None else cost_max),
        savings_at_95=savings_at(points, 0.95 * ref.best_quality, ref.best_cost),
        savings_at_100=savings_at(points, ref.best_quality, ref.best_cost),
        priciest_model=ref.priciest_model,
        savings_at_95_vs_priciest=savings_at(points, 0.95 * ref.priciest_quality, ref.priciest_cost),
        savings_at_100_vs_priciest=savings_at(points, ref.priciest_quality, ref.priciest_cost),
    )


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


def sweep_points(pred: RouterPredictions, table: OutcomeTable) -> list[XY]:
    """The router's `(cost, quality)` at every knob value on the evaluated prompts (swept on them)."""
    points = sweep(pred.quality, pred.cost, table.quality, table.cost_usd, pred.rule, knob_grid(pred.rule).tolist())
    return [(p.cost_per_1k, p.quality) for p in points]


def evaluate_predictions(pred: RouterPredictions, table: OutcomeTable, ref: References,
                         cost_max: float | None = None, score_pick: ScorePick | None = None) -> RouterResult:
    """Everything `eval` reports for one router: its calibrated point, frontier, shares, APGR/CPT."""
    cost, quality = evaluate_choices(pred.chosen, table.quality, table.cost_usd)
    shares = np.bincount(pred.chosen, minlength=len(table.models)) / len(pred.chosen)
    point = OperatingPoint.at((cost, quality), ref)
    pgr, cpt50, cpt80 = _two_model_metrics(pred, table, ref)
    return RouterResult(
        point=point,
        frontier=frontier_of(sweep_points(pred, table), ref, cost_max),
        calibrated=TargetCalibration(pred.target, point, pred.knob, target_miss(pred.target, point)),
        shares={m: float(s) for m, s in zip(table.models, shares, strict=True) if s > 0},
        apgr=pgr, cpt50=cpt50, cpt80=cpt80, score_pick=score_pick, placed=pred.placed,
    )


def baselines(table: OutcomeTable, ref: References, *, seed: int = 0, cost_max: float | None = None) -> Baselines:
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
        random_mix=frontier_of(random_mix_points(singles[cheapest], singles[ref.best_model], steps=10), ref,
                               cost_max),
        hull=tuple(nondecreasing_convex_hull(hull_points)),
        hull_frontier=frontier_of(hull_points, ref, cost_max),
        oracle=OperatingPoint.at(oracle_point(table.quality, table.cost_usd), ref),
    )
