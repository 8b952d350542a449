"""A learned route's knob for its own candidates, chosen on the router's training population.

A router file's calibrated knob holds for the models it was calibrated on. A route over other
candidates (a subset, models placed by score, or the bundled router's unseen models) needs its
own: the knob is swept over the router's clusters of training prompts (each weighted by the
number of prompts it stands for, priced at its prompts' mean routing input tokens), scoring each candidate with
its clusters' true mean quality where the router has outcomes for it and with its prediction
where it does not. No per-request work: this runs once, when the route is built.

When some candidates are placed by score, the knob must meet the target in each least favourable
world within the placement's measured error (`_placement_hedge`): a placed best candidate not
under-rated, the other placed models not over-rated. Only when at least half the candidates have
outcome data: that is the case the hedge's k was chosen on (RouterBench, 3 of 11 placed). With every
candidate placed (the bundled router over a user's models) k = 3 made the target unreachable — each
model's band taken independently — and the route sent every prompt to its top model; with one known
model among placed ones (one bundled model name beside three new ones) it multiplied the route's cost
by four. Where the hedge applies and its target still cannot be met (a placed gpt-4 at the top of
the score range), the largest k' ≤ k of `HEDGE_STEPS` whose
hedged target can be met is used, down to no hedge — never a knob that only maximises the worst
world's quality at several times the cost. (In the CV that chose k this rule scored as the plain
one: mean miss −0.89 vs −0.80 points, RMS 1.93 vs 1.76, `bench_routing.py hedge`'s variant table.)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .._catalog import ModelSpec
from .._exceptions import ArtifactError
from ._artifact import TrainedRouter
from ._ability import SCORE_SCALE
from ._calibrate import CalibrationResult, Target, calibrate, sweep
from ._placement_hedge import PLACEMENT_HEDGE, hedged_worlds, placement_spread, robust_points
from ._profiles import ModelProfile

__all__ = ["HEDGE_STEPS", "route_knob"]

#: The k values tried, largest first, when the hedged target cannot be met at the route's k (the grid of
#: `bench_routing.py hedge`).
HEDGE_STEPS = (4.0, 3.0, 2.0, 1.5, 1.0, 0.5, 0.0)


def route_knob(router: TrainedRouter, profiles: Sequence[ModelProfile], specs: Sequence[ModelSpec],
               targets: Sequence[Target], *, hedge: float = PLACEMENT_HEDGE) -> CalibrationResult:
    """The knob meeting `targets` when routing among `specs` (profiled in `profiles`, same order).

    `hedge` is k of `_placement_hedge`: placed candidates are scored at θ̂ ± k·σ (0: at θ̂), only when at
    least half the candidates have outcome data; where the targets cannot be met so, the largest smaller k of
    `HEDGE_STEPS` that meets them (0 at the least)."""
    if router.placement is None:
        raise ArtifactError("this router file has no calibration population (format version 1); retrain it")
    evidence = router.placement.evidence
    x = evidence.centroids
    quality, output = router.predict_columns(x, [p.key for p in profiles])
    truth = quality.copy()
    with np.errstate(invalid="ignore", divide="ignore"):
        for j, profile in enumerate(profiles):
            if profile.column is not None:
                counts = evidence.counts[:, profile.column]
                means = evidence.quality_sums[:, profile.column] / counts
                truth[:, j] = np.where(counts > 0, means, quality[:, j])
    tokens = evidence.input_means.astype(np.float64)
    cost = np.column_stack([[spec.cost(t, o) for t, o in zip(tokens, output[:, j], strict=True)]
                            for j, spec in enumerate(specs)])
    weights = evidence.population.astype(np.float64)
    placed = [j for j, p in enumerate(profiles) if p.column is None]
    names = [s.name for s in specs]
    spread = placement_spread(router.placement) * SCORE_SCALE  # σ on the public-score scale
    if placed and 2 * len(placed) <= len(profiles) and spread > 0:  # most candidates with outcome data (above)
        for k in (hedge, *(step for step in HEDGE_STEPS if step < hedge)):
            if k <= 0:
                break
            upper, lower = quality.copy(), quality.copy()
            upper[:, placed] = router.predict_columns(x, [float(profiles[j].key) + k * spread for j in placed])[0]
            lower[:, placed] = router.predict_columns(x, [float(profiles[j].key) - k * spread for j in placed])[0]
            worlds = hedged_worlds(truth, upper, lower, placed, weights)
            if not worlds:  # no world with a positive reference: any quality meets a share of it
                break
            sweeps = [sweep(quality, cost, outcomes, cost, router.rule, weights=weights) for outcomes, _ in worlds]
            points = robust_points(sweeps, [reference for _, reference in worlds])
            result = calibrate(points, targets, names, max(reference for _, reference in worlds))
            if result.met:
                return result
    points = sweep(quality, cost, truth, cost, router.rule, weights=weights)
    return calibrate(points, targets, names, float(np.max(weights @ truth / weights.sum())))
