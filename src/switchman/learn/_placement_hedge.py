"""Hedging a route's calibration against the error of placing models by their public score.

A model the router never saw is placed by its score (θ = z + the scored models' median residual,
`AbilityPredictor.score_offset`). That placement is off by as much as the router's own scored models
stray from the score line: on RouterBench a held-out gpt-4-1106-preview, the top of the score range,
is predicted at 0.855 against a true 0.880. When such a model is the best candidate, the quality
target (a share of the best model's quality) is set too low; when a cheap placed model is
over-rated, prompts go to it that it fails. Either way the route lands under its target.

The hedge calibrates the knob in the least favourable world within ±k·σ of each placed model's
ability, σ being the leave-one-model-out spread of the router's scored models (ability units): the
best candidate, if placed, at θ̂ + k·σ (the target is a share of its quality: do not under-rate
it), every other placed model at θ̂ − k·σ (do not over-rate a model routed to without evidence).
Routing itself still predicts with θ̂; only the outcomes the knob is scored against change. With
no placed candidate, nothing changes. k was chosen by leave-models-out CV inside RouterBench's
train split (`bench_routing.py hedge`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ._ability_predictor import AbilityPredictor

__all__ = ["PLACEMENT_HEDGE", "least_favourable", "placement_spread"]

#: k: how many leave-one-model-out spreads a placed model's ability is moved against the route's
#: target when calibrating (0: no hedge). Chosen by leave-models-out CV inside RouterBench's train split.
PLACEMENT_HEDGE = 0.5


def placement_spread(placement: AbilityPredictor) -> float:
    """RMS error, in ability units, of placing each scored trained model from the others' median residual.

    Residual r_m = fitted θ_m − z_m; model m placed without its own outcomes would get
    z_m + median(r of the others), an error of r_m − median(r of the others). Read from the router
    file (no refit): fitted residuals are shrunk by the residual penalty, so this understates the
    refitted error somewhat; the hedge's k absorbs the scale. Under two scored models: 0 (no measure).
    """
    z = np.asarray(placement.z, dtype=np.float64)
    theta = np.asarray(placement.ability.theta, dtype=np.float64)
    if len(z) != len(theta):
        return 0.0
    scored = ~np.isnan(z)
    residual = theta[scored] - z[scored]
    if len(residual) < 2:
        return 0.0
    errors = [r - np.median(np.delete(residual, i)) for i, r in enumerate(residual)]
    return float(np.sqrt(np.mean(np.square(errors))))


def least_favourable(truth: np.ndarray, upper: np.ndarray, lower: np.ndarray, placed: Sequence[int],
                     weights: np.ndarray) -> tuple[np.ndarray, float]:
    """The outcomes to calibrate against, and the best candidate's mean quality, in the least favourable world.

    `truth` (rows × candidates) holds the calibration outcomes; `upper` and `lower` the placed
    candidates' predicted quality at θ̂ ± k·σ (same shape; only the `placed` columns are read). The
    best candidate is chosen with every placed model at its upper value; if it is placed it keeps the
    upper value (the target, a share of its quality, is not set low), and every other placed model
    takes its lower value (it is not routed to on an optimistic guess).
    """
    w = np.asarray(weights, dtype=np.float64) / max(float(np.sum(weights)), 1e-12)
    hedged = np.array(truth, dtype=np.float64, copy=True)
    placed = list(placed)
    if not placed:
        return hedged, float(np.max(w @ hedged))
    optimistic = hedged.copy()
    optimistic[:, placed] = upper[:, placed]
    means = w @ optimistic
    best = int(np.argmax(means))
    others = [j for j in placed if j != best]
    hedged[:, others] = lower[:, others]
    if best in placed:
        hedged[:, best] = upper[:, best]
    return hedged, float(means[best])
