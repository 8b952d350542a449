"""Cascades measured offline: the same generator the gateway drives, fed the outcomes table's answers.

For each prompt the ladder comes from the learned router's predictions (as in serving); the
driver answers each attempt with that (prompt, model)'s known outcome, and the cascade's check
decides. Cost counts every attempt; quality is the served answer's.

Two checks are measured:

- **learned**: the dedicated acceptance predictor (`learn._acceptance`: q̂ plus the answer's
  length), trained on the training split's out-of-fold predictions; its threshold (and the ladder's
  `adequate` floor) is swept for a frontier and calibrated on the training split to the same
  target as the single-shot router;
- **oracle** (an upper bound, not a method): accept iff the answer's true quality ≥ threshold.
  Real checks never see the truth; this bounds what any check could achieve with these ladders.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..routing import (
    AcceptanceCheck,
    Attempt,
    CandidateScore,
    Check,
    OracleCheck,
    Outcome,
    build_ladder,
    cascade,
    drive,
)

__all__ = ["CascadeParams", "SimPoint", "ladders_for", "simulate", "sweep_cascade"]

#: Thresholds and ladder floors swept for the frontier.
THRESHOLDS = tuple(float(t) for t in np.round(np.linspace(0.05, 0.95, 19), 3))
ADEQUATE = (0.0, 0.5, 0.8)


@dataclass(frozen=True, slots=True)
class CascadeParams:
    """One operating point's settings."""

    check: str  # "learned" or "oracle"
    threshold: float
    adequate: float
    max_attempts: int


@dataclass(frozen=True, slots=True)
class SimPoint:
    """What a cascade setting reached: mean quality, cost per 1k (every attempt), mean attempts, shares."""

    params: CascadeParams
    quality: float
    cost_per_1k: float
    attempts: float
    first_rung_share: float


def ladders_for(
    predicted_quality: np.ndarray, predicted_cost: np.ndarray, models: Sequence[str], *, max_attempts: int,
    adequate: float,
) -> list[tuple[Attempt, ...]]:
    """Each prompt's ladder, built by the routing core from its predictions (as the strategy does)."""
    out = []
    for q_row, c_row in zip(predicted_quality, predicted_cost, strict=True):
        scores = [CandidateScore(m, float(q), float(c)) for m, q, c in zip(models, q_row, c_row, strict=True)]
        out.append(build_ladder(scores, max_attempts=max_attempts, adequate=adequate))
    return out


def simulate(
    ladders: Sequence[tuple[Attempt, ...]], checks: Sequence[Check], models: Sequence[str],
    quality: np.ndarray, cost: np.ndarray, output_tokens: np.ndarray, params: CascadeParams,
) -> SimPoint:
    """Drive the cascade generator over every prompt with the known outcomes."""
    column = {m: j for j, m in enumerate(models)}
    served = np.empty(len(ladders))
    spent = np.zeros(len(ladders))
    tries = np.zeros(len(ladders))
    for i, ladder in enumerate(ladders):

        def answer(attempt: Attempt, i: int = i) -> Outcome:
            j = column[attempt.model]
            return Outcome(quality=float(quality[i, j]), output_tokens=int(output_tokens[i, j]))

        result, attempts = drive(cascade(ladder, checks), answer)
        served[i] = quality[i, column[result.model]]
        spent[i] = sum(cost[i, column[a.model]] for a, _ in attempts)
        tries[i] = len(attempts)
    return SimPoint(params, float(served.mean()), float(spent.mean() * 1000), float(tries.mean()),
                    float(np.mean(tries == 1)))


def sweep_cascade(
    predicted_quality: np.ndarray, predicted_cost: np.ndarray, models: Sequence[str], quality: np.ndarray,
    cost: np.ndarray, output_tokens: np.ndarray, *, check: str,
    score: Callable[[Attempt, Outcome], float | None] | None = None, max_attempts: Sequence[int] = (2, 3),
    thresholds: Sequence[float] = THRESHOLDS, adequate: Sequence[float] = ADEQUATE,
) -> list[SimPoint]:
    """Every (max attempts, adequate, threshold) setting of one check on one table."""
    points = []
    for rungs, floor in ((r, f) for r in max_attempts for f in adequate):
        ladders = ladders_for(predicted_quality, predicted_cost, models, max_attempts=rungs, adequate=floor)
        for t in thresholds:
            if check == "oracle":
                checks: tuple[Check, ...] = (OracleCheck(t),)
            elif score is not None:
                checks = (AcceptanceCheck(t, score),)
            else:
                checks = (AcceptanceCheck(t),)
            params = CascadeParams(check, t, floor, rungs)
            points.append(simulate(ladders, checks, models, quality, cost, output_tokens, params))
    return points


def calibrate_cascade(points: Sequence[SimPoint], min_quality: float) -> SimPoint:
    """The cheapest setting reaching `min_quality` (else the best quality): chosen on training data."""
    ok = [p for p in points if p.quality >= min_quality - 1e-12]
    if ok:
        return min(ok, key=lambda p: (p.cost_per_1k, -p.quality))
    return max(points, key=lambda p: (p.quality, -p.cost_per_1k))
