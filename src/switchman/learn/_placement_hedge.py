"""Hedging a route's calibration against the error of placing models by their public score.

A model the router never saw is placed by its score (θ = z + the scored models' median residual,
`AbilityPredictor.score_offset`). That placement is off by as much as the router's own scored models
stray from the score line: on RouterBench a held-out gpt-4-1106-preview, the top of the score range,
is predicted at 0.855 against a true 0.880. When such a model is the best candidate, the quality
target (a share of the best model's quality) is set too low; when a cheap placed model is
over-rated, prompts go to it that it fails. Either way the route lands under its target.

The hedge calibrates the knob so the target holds wherever within ±k·σ of θ̂ the placed models
truly are, σ being the leave-one-model-out spread of the router's scored models (ability units).
Which placement is worst depends on which model is the best, the one the target is a share of: if
a placed model is, the worst case has it high (θ̂ + k·σ: a higher reference, which a route sending
it a share under 1 of the prompts falls behind) and every other placed model low (θ̂ − k·σ: not
routed to on an optimistic guess); if a known model is, every placed model low. The knob must meet
the target in each of these worlds (`hedged_worlds`, `robust_points`). Routing itself still
predicts with θ̂; only what the knob is scored against changes. It applies only where most
candidates have outcome data and a few are placed (the case k was chosen on); where the hedged target
cannot be met, a smaller k is used (`_route_calibration.route_knob`). (Two simpler versions failed in the CV: the reference high but every placed model low as
a destination made a placed best model's target unreachable, and one world with the best-if-high
placed model high let a cheap placed model, "best" only at its upper bound, draw most prompts.)
k was chosen by leave-models-out CV inside RouterBench's train split (`bench_routing.py hedge`), together
with and without the route's population-optimism offset (`_route_calibration.population_optimism`):
with the offset k = 2 (RMS miss 1.81 points over 24 triples × 3 folds), without it k = 3 (2.47). Expected quality over
θ ~ N(θ̂, σ²), chance constraints over sampled worlds, a robust σ, a fixed band and separate k for the
reference and the destinations traced the same cost–quality curve as this one in that CV
(`bench_hedge_methods.py`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ._ability_predictor import AbilityPredictor
from ._calibrate import SweepPoint

__all__ = ["PLACEMENT_HEDGE", "hedged_worlds", "placement_spread", "robust_points"]

#: k: how many leave-one-model-out spreads a placed model's ability is moved against the route's
#: target when calibrating (0: no hedge). Chosen by leave-models-out CV inside RouterBench's train split
#: (least RMS miss; 3 without the population-optimism offset of `route_knob`, 2 with it).
PLACEMENT_HEDGE = 3.0


def placement_spread(placement: AbilityPredictor) -> float:
    """RMS error, in ability units, of placing each scored trained model from the others' median residual.

    Residual r_m = fitted θ_m − z_m, z_m its standardised public score (as `score_offset` takes it:
    `public_z`, else `z` in files without it); model m placed without its own outcomes would get
    z_m + median(r of the others), an error of r_m − median(r of the others). Read from the router
    file (no refit): fitted residuals are shrunk by the residual penalty, so this understates the
    refitted error somewhat; the hedge's k absorbs the scale. Under two scored models: 0 (no measure).
    """
    z = np.asarray(placement.z if placement.public_z is None else placement.public_z, dtype=np.float64)
    theta = np.asarray(placement.ability.theta, dtype=np.float64)
    if len(z) != len(theta):
        return 0.0
    scored = ~np.isnan(z)
    residual = theta[scored] - z[scored]
    if len(residual) < 2:
        return 0.0
    errors = [r - np.median(np.delete(residual, i)) for i, r in enumerate(residual)]
    return float(np.sqrt(np.mean(np.square(errors))))


def hedged_worlds(truth: np.ndarray, upper: np.ndarray, lower: np.ndarray, placed: Sequence[int],
                  weights: np.ndarray) -> list[tuple[np.ndarray, float]]:
    """Each world the route's target must hold in: (outcomes per row and candidate, the best candidate's mean).

    `truth` (rows × candidates) holds the calibration outcomes; `upper` and `lower` the placed
    candidates' predicted quality at θ̂ ± k·σ (same shape; only the `placed` columns are read).
    One world has every placed model low and the best known model as the reference; one more per
    placed model whose upper bound beats that reference, with it high (and the reference) and the
    other placed models low. Worlds whose reference is not positive are left out (every route meets a
    share of 0), so the list may be empty. (A placed model whose lower bound beats every known model
    still has its own high world, which asks more.)
    """
    w = np.asarray(weights, dtype=np.float64) / max(float(np.sum(weights)), 1e-12)
    placed = list(placed)
    low = np.array(truth, dtype=np.float64, copy=True)
    low[:, placed] = lower[:, placed]
    known = [j for j in range(truth.shape[1]) if j not in placed]
    reference = float(np.max(w @ low[:, known])) if known else -np.inf
    worlds = [(low, reference)] if known and reference > 0 else []  # a reference of 0: any quality meets it
    for j in placed:
        high = float(w @ upper[:, j])
        if high > max(reference, 0.0):
            world = low.copy()
            world[:, j] = upper[:, j]
            worlds.append((world, high))
    return worlds


def robust_points(sweeps: Sequence[Sequence[SweepPoint]], references: Sequence[float]) -> list[SweepPoint]:
    """One sweep whose quality at each knob is its worst share of the reference over the worlds, in units of
    the highest reference (so `calibrate` with that reference asks the target of every world)."""
    top = max(references)
    points = []
    for at_knob in zip(*sweeps, strict=True):
        share = min(p.quality / r for p, r in zip(at_knob, references, strict=True))
        first = at_knob[0]
        points.append(SweepPoint(first.knob, share * top, first.cost_per_1k, first.shares))
    return points
