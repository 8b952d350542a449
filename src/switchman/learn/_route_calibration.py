"""A learned route's knob for its own candidates, chosen on the router's training population.

A router file's calibrated knob holds for the models it was calibrated on. A route over other
candidates (a subset, models placed by score, or the bundled router's unseen models) needs its
own: the knob is swept over the router's clusters of training prompts (each weighted by the
number of prompts it stands for, priced at its prompts' mean routing input tokens), scoring each candidate with
its clusters' true mean quality where the router has outcomes for it and with its prediction
where it does not. No per-request work: this runs once, when the route is built.

When some candidates are placed by score beside a majority with outcome data, two corrections apply
(the first with `POPULATION_OFFSET`; both chosen by leave-models-out CV inside RouterBench's train split, `bench_routing.py hedge` and
`bench_hedge_methods.py`):
- the quality target is raised by the population's optimism (`population_optimism`): the router's
  own knob, calibrated out of fold, lands that much above its target on the population, whose
  cluster means are of the very prompts the router was trained on. Without it a route calibrated on
  the population landed 2.4 points under its target in the CV even with each placed model at the
  ability that matched its true mean quality;
- the knob must meet the (raised) target in each least favourable world within the placement's
  measured error (`_placement_hedge`): a placed best candidate not under-rated, the other placed
  models not over-rated.
Only where at least half the candidates have outcome data: that is the case the hedge's k was chosen
on (RouterBench, 3 of 11 placed). With every candidate placed (the bundled router over a user's
models) k = 3 made the target unreachable — each model's band taken independently — and the route sent
every prompt to its top model; with one known model among placed ones (one bundled model name beside
three new ones) it multiplied the route's cost by four. Where the hedged target cannot be met (a placed
gpt-4 at the top of the score range), the largest k' ≤ k of `HEDGE_STEPS` whose hedged target can be
met is used, down to no hedge (then the target as given) — never a knob that only maximises the worst
world's quality at several times the cost.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from .._catalog import ModelSpec
from .._exceptions import ArtifactError
from ..routing import select
from ._ability import SCORE_SCALE
from ._artifact import TrainedRouter
from ._calibrate import CalibrationResult, Target, calibrate, parse_target, sweep
from ._placement_hedge import PLACEMENT_HEDGE, hedged_worlds, placement_spread, robust_points
from ._profiles import ModelProfile

__all__ = ["HEDGE_STEPS", "POPULATION_OFFSET", "RoutePopulation", "population_optimism", "route_knob", "route_population"]

#: Whether hedged routes aim at their target plus the population's optimism (`population_optimism`).
POPULATION_OFFSET = False

#: The k values tried, largest first, when the hedged target cannot be met at the route's k (the grid of
#: `bench_routing.py hedge`).
HEDGE_STEPS = (4.0, 3.0, 2.0, 1.5, 1.0, 0.5, 0.0)


@dataclass(frozen=True, slots=True)
class RoutePopulation:
    """What a route's knob is calibrated on: the router's clusters of training prompts, for its candidates."""

    features: np.ndarray  # the clusters' centroids, as the router predicts from them
    quality: np.ndarray  # predicted quality (clusters × candidates): what routing decides on
    cost: np.ndarray  # expected cost per call
    truth: np.ndarray  # the clusters' mean outcomes where the router has them, else the prediction
    weights: np.ndarray  # prompts each cluster stands for
    placed: list[int]  # candidates placed by score (no outcome data)
    keys: list[int | float]  # `TrainedRouter.predict_columns` keys of the candidates
    spread: float  # σ of `placement_spread`, on the public-score scale

    @property
    def hedged(self) -> bool:
        """Placed candidates beside a majority with outcome data, and a measured spread: where the hedge acts."""
        return bool(self.placed) and 2 * len(self.placed) <= len(self.keys) and self.spread > 0

    def placed_at(self, router: TrainedRouter, offsets: Sequence[float]) -> np.ndarray:
        """Predicted quality (clusters × placed) with each placed model moved `offsets` spreads from θ̂."""
        keys = [float(self.keys[j]) + d * self.spread for j, d in zip(self.placed, offsets, strict=True)]
        return router.predict_columns(self.features, keys)[0]


def route_population(router: TrainedRouter, profiles: Sequence[ModelProfile],
                     specs: Sequence[ModelSpec]) -> RoutePopulation:
    """The calibration population of a route over `specs` (profiled in `profiles`, same order)."""
    if router.placement is None:
        raise ArtifactError("this router file has no calibration population (format version 1); retrain it")
    evidence = router.placement.evidence
    x = evidence.centroids
    keys = [p.key for p in profiles]
    quality, output = router.predict_columns(x, keys)
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
    placed = [j for j, p in enumerate(profiles) if p.column is None]
    spread = placement_spread(router.placement) * SCORE_SCALE  # σ on the public-score scale
    return RoutePopulation(x, quality, cost, truth, evidence.population.astype(np.float64), placed, keys, spread)


def population_optimism(router: TrainedRouter) -> float:
    """How far above its target the router's own knob lands on its calibration population, as a share of the best
    model's quality (0 where it cannot be measured: no quality target, or a model without prices).

    The router's own knob was calibrated out of fold (and corrected by its nested check), so it is expected to land
    on its target on unseen prompts; on the population — cluster means of the very prompts the router was trained
    on — its in-sample predictions look better. A route calibrated on the population inherits that optimism."""
    if router.placement is None or router.target is None:
        return 0.0
    target = parse_target(router.target)
    if target.kind != "quality" or any(m not in router.prices for m in router.models):
        return 0.0
    profiles = [ModelProfile(m, None, "outcome data", column=j) for j, m in enumerate(router.model_names)]
    specs = [ModelSpec(name=p.name, provider="router", input_price=router.prices[m][0],
                       output_price=router.prices[m][1], capabilities=frozenset())
             for p, m in zip(profiles, router.models, strict=True)]
    pop = route_population(router, profiles, specs)
    w = pop.weights / max(float(pop.weights.sum()), 1e-12)
    best = float(np.max(w @ pop.truth))
    if best <= 0:
        return 0.0
    rows = np.arange(len(w))

    def quality_at(knob: float) -> float:
        return float(w @ pop.truth[rows, select(pop.quality, pop.cost, knob, router.rule)])

    knob = router.knob
    quality = quality_at(knob.value)
    if knob.alternate is not None and knob.alternate_share > 0:
        quality += knob.alternate_share * (quality_at(knob.alternate) - quality)
    return quality / best - target.value


def route_knob(router: TrainedRouter, profiles: Sequence[ModelProfile], specs: Sequence[ModelSpec],
               targets: Sequence[Target], *, hedge: float = PLACEMENT_HEDGE, offset: bool = POPULATION_OFFSET) -> CalibrationResult:
    """The knob meeting `targets` when routing among `specs` (profiled in `profiles`, same order).

    Only where placed candidates sit beside a majority with outcome data (`RoutePopulation.hedged`): quality
    targets are raised by the population's optimism (`population_optimism`, when positive; `offset`) and placed
    candidates scored at θ̂ ± k·σ of `_placement_hedge` (`hedge` = k; 0: at θ̂); where that cannot be met, the
    largest smaller k of `HEDGE_STEPS` that meets it, then the plain calibration for `targets`."""
    pop = route_population(router, profiles, specs)
    names = [s.name for s in specs]
    if pop.hedged:
        optimism = max(population_optimism(router), 0.0) if offset else 0.0
        raised = [replace(t, value=t.value + optimism) if t.kind == "quality" else t for t in targets]
        for k in (hedge, *(step for step in HEDGE_STEPS if step < hedge)):
            result = _hedged(router, pop, raised, names, k)
            if result is None:  # no world with a positive reference: any quality meets a share of it
                break
            if result.met:
                return result
    points = sweep(pop.quality, pop.cost, pop.truth, pop.cost, router.rule, weights=pop.weights)
    return calibrate(points, targets, names, float(np.max(pop.weights @ pop.truth / pop.weights.sum())))


def _hedged(router: TrainedRouter, pop: RoutePopulation, targets: Sequence[Target], names: Sequence[str],
            k: float) -> CalibrationResult | None:
    """The calibration meeting `targets` in every world of `hedged_worlds` at k (k = 0: the central one)."""
    if k <= 0:
        points = sweep(pop.quality, pop.cost, pop.truth, pop.cost, router.rule, weights=pop.weights)
        return calibrate(points, targets, names, float(np.max(pop.weights @ pop.truth / pop.weights.sum())))
    upper, lower = pop.quality.copy(), pop.quality.copy()
    upper[:, pop.placed] = pop.placed_at(router, [k] * len(pop.placed))
    lower[:, pop.placed] = pop.placed_at(router, [-k] * len(pop.placed))
    worlds = hedged_worlds(pop.truth, upper, lower, pop.placed, pop.weights)
    if not worlds:
        return None
    sweeps = [sweep(pop.quality, pop.cost, outcomes, pop.cost, router.rule, weights=pop.weights)
              for outcomes, _ in worlds]
    points = robust_points(sweeps, [reference for _, reference in worlds])
    return calibrate(points, targets, names, max(reference for _, reference in worlds))
