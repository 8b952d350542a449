"""Calibration: turn a stated goal into the selection knob, on training data only.

Targets (several may be combined; all must hold):

- ``quality=0.95``  mean quality ≥ 95% of the best single model's (minimise cost subject to it);
- ``cost=0.50``     mean cost ≤ $0.50 per 1k requests (maximise quality subject to it);
- ``share:MODEL=0.2`` at most 20% of calls go to MODEL (maximise quality subject to it).

The knob is swept over out-of-fold predictions on the training prompts, scored with the prompts'
true outcomes, and the best knob that meets every target is kept. The test split never takes part.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from .._exceptions import ConfigError
from ..routing import SelectionRule, select

__all__ = ["CalibrationResult", "Target", "calibrate", "knob_grid", "parse_target", "sweep"]

_TARGET = re.compile(r"^\s*(quality|cost|share:(?P<model>.+?))\s*=\s*(?P<value>[0-9.eE+-]+)\s*$")


@dataclass(frozen=True, slots=True)
class Target:
    """One calibration goal."""

    kind: Literal["quality", "cost", "share"]
    value: float
    model: str | None = None

    def __str__(self) -> str:
        name = f"share:{self.model}" if self.kind == "share" else self.kind
        return f"{name}={self.value:g}"


def parse_target(text: str) -> Target:
    """`quality=0.95`, `cost=0.50` or `share:MODEL=0.2` → Target."""
    match = _TARGET.match(text)
    if match is None:
        raise ConfigError(f"bad target {text!r}: use quality=0.95, cost=0.50 (USD per 1k requests) or share:MODEL=0.2")
    value = float(match.group("value"))
    if match.group("model") is not None:
        if not 0 <= value <= 1:
            raise ConfigError(f"bad target {text!r}: a share is a fraction in [0, 1]")
        return Target("share", value, match.group("model").strip())
    kind: Literal["quality", "cost"] = "quality" if text.strip().startswith("quality") else "cost"
    if value <= 0 or (kind == "quality" and value > 2):
        raise ConfigError(f"bad target {text!r}: quality is a fraction of the best model's (e.g. 0.95), cost > 0")
    return Target(kind, value)


def knob_grid(rule: SelectionRule) -> np.ndarray:
    """Knob values swept for a rule, from 'always best predicted' toward 'always cheapest'."""
    if rule == "tolerance":
        return np.linspace(0.0, 1.0, 201)
    return np.concatenate([[0.0], np.geomspace(1e-4, 1e4, 321)])


@dataclass(frozen=True, slots=True)
class SweepPoint:
    """Outcome of one knob value."""

    knob: float
    quality: float
    cost_per_1k: float
    shares: np.ndarray


def sweep(
    predicted_quality: np.ndarray,
    predicted_cost: np.ndarray,
    true_quality: np.ndarray,
    true_cost: np.ndarray,
    rule: SelectionRule,
    knobs: Sequence[float] | None = None,
) -> list[SweepPoint]:
    """Mean true quality, cost per 1k and model shares for each knob value."""
    rows = np.arange(true_quality.shape[0])
    points = []
    for knob in knob_grid(rule) if knobs is None else knobs:
        chosen = select(predicted_quality, predicted_cost, float(knob), rule)
        shares = np.bincount(chosen, minlength=true_quality.shape[1]) / max(len(chosen), 1)
        points.append(
            SweepPoint(
                float(knob),
                float(np.mean(true_quality[rows, chosen])),
                float(np.mean(true_cost[rows, chosen]) * 1000),
                shares,
            )
        )
    return points


@dataclass(frozen=True, slots=True)
class CalibrationResult:
    """The knob chosen and what it reached on the calibration data."""

    knob: float
    quality: float
    cost_per_1k: float
    best_model_quality: float
    met: bool

    @property
    def rel_quality(self) -> float:
        return self.quality / self.best_model_quality if self.best_model_quality else float("nan")


def calibrate(
    points: Sequence[SweepPoint],
    targets: Sequence[Target],
    models: Sequence[str],
    best_model_quality: float,
) -> CalibrationResult:
    """The knob that meets every target at the lowest cost (quality target) or highest quality."""
    index = {m: i for i, m in enumerate(models)}
    for t in targets:
        if t.kind == "share" and t.model not in index:
            raise ConfigError(f"target {t}: model {t.model!r} is not among the router's models {list(models)}")

    def meets(p: SweepPoint) -> bool:
        for t in targets:
            if t.kind == "quality" and p.quality < t.value * best_model_quality - 1e-12:
                return False
            if t.kind == "cost" and p.cost_per_1k > t.value + 1e-12:
                return False
            if t.kind == "share" and p.shares[index[t.model or ""]] > t.value + 1e-12:
                return False
        return True

    ok = [p for p in points if meets(p)]
    has_quality_target = any(t.kind == "quality" for t in targets)
    if ok:
        if has_quality_target:
            chosen = min(ok, key=lambda p: (p.cost_per_1k, -p.quality))
        else:
            chosen = max(ok, key=lambda p: (p.quality, -p.cost_per_1k))
        return CalibrationResult(chosen.knob, chosen.quality, chosen.cost_per_1k, best_model_quality, True)
    # Unreachable: the closest point (highest quality for a quality target, else the cheapest).
    if has_quality_target:
        chosen = max(points, key=lambda p: (p.quality, -p.cost_per_1k))
    else:
        chosen = min(points, key=lambda p: (p.cost_per_1k, -p.quality))
    return CalibrationResult(chosen.knob, chosen.quality, chosen.cost_per_1k, best_model_quality, False)
