"""Router quality-vs-cost metrics, as defined by RouterBench and RouteLLM.

Pure functions on numpy arrays. Conventions shared by every function here:

* An operating point is ``(cost, quality)``: ``cost`` in USD per 1,000 requests (1000 x the
  mean per-call cost), ``quality`` the mean quality over the same prompts.
* Outcome matrices are ``(n_prompts, n_models)``: ``quality`` in [0, 1] and ``cost`` in USD
  per call, as in ``OutcomeTable.quality`` / ``OutcomeTable.cost_usd``.

Definitions:

* **Pareto frontier**: the points no other point beats on both axes (cost <= and quality >=,
  one strictly); sorted by cost, so quality is strictly increasing along it.
* **Non-decreasing convex hull** R~ (RouterBench, Hu et al. 2024, sec. 3): a router that can
  run at operating points A and B can also flip a biased coin between them and run at any
  point on the segment AB, and it can always spend less than its budget. So the quality it
  can reach at cost c is the upper convex hull of its points, starting at the cheapest point
  and kept only while it rises: R~(c) = max {q : (c', q) in conv(points), c' <= c} for c >= the
  cheapest point's cost; R~ is constant after the hull's last (best-quality) vertex.
* **AIQ** (Average Improvement in Quality, RouterBench eq. 3):
  AIQ = 1 / (c_max - c_min) * integral from c_min to c_max of R~(c) dc.
  R~ is undefined below the cheapest point; that span counts as quality 0 (no operating point
  exists there). This matches RouterBench's code, which integrates from the cheapest point
  and normalises by the largest cost, i.e. c_min = 0.
* **PGR / APGR / CPT** (RouteLLM, Ong et al. 2024, sec. 5): a router between a strong and a
  weak model sends the fraction x of prompts it scores highest to the strong model.
  PGR(x) = (q_router(x) - q_weak) / (q_strong - q_weak); APGR = integral from 0 to 1 of
  PGR(x) dx; CPT(p) = the smallest x with PGR(x) >= p (e.g. CPT(50%), CPT(80%)).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = [
    "aiq",
    "apgr",
    "cost_at_quality",
    "cpt",
    "evaluate_choices",
    "nondecreasing_convex_hull",
    "oracle_choices",
    "oracle_point",
    "pareto_frontier",
    "pgr_curve",
    "random_mix_points",
    "savings_at",
    "single_model_points",
]

Point = tuple[float, float]
"""``(cost in USD per 1k requests, mean quality)``."""


def pareto_frontier(points: Sequence[Point]) -> list[Point]:
    """The non-dominated ``(cost, quality)`` points, sorted by cost (quality strictly rising).

    A point is dominated when another is no more expensive and no worse, and better on one
    axis. Duplicates appear once.
    """
    frontier: list[Point] = []
    for cost, quality in _sorted_points(points):
        if not frontier or quality > frontier[-1][1]:  # best of equal costs comes first
            frontier.append((cost, quality))
    return frontier


def nondecreasing_convex_hull(points: Sequence[Point]) -> list[Point]:
    """RouterBench's R~: vertices of the upper convex hull, cheapest point to best quality.

    Mixing two operating points at random reaches every point between them, so the upper
    hull is reachable; it is cut at its highest-quality vertex (the cheapest one if tied),
    because spending more never has to lower quality. The result is sorted by cost with
    quality strictly increasing; collinear middle points are dropped. Evaluate it with
    linear interpolation between vertices and constant after the last one.
    """
    hull: list[Point] = []
    for cost, quality in _sorted_points(points):
        if hull and cost == hull[-1][0]:
            continue  # same cost, lower (or equal) quality
        while len(hull) >= 2 and _cross(hull[-2], hull[-1], (cost, quality)) >= 0:
            hull.pop()  # hull[-1] is on or under the chord: mixing beats it
        hull.append((cost, quality))
    best = max(range(len(hull)), key=lambda i: (hull[i][1], -i), default=-1)
    return hull[: best + 1]


def aiq(points: Sequence[Point], cost_min: float, cost_max: float) -> float:
    """Average Improvement in Quality: the mean of R~(c) over c in [cost_min, cost_max].

    AIQ = 1 / (cost_max - cost_min) * integral_{cost_min}^{cost_max} R~(c) dc, with R~ the
    non-decreasing convex hull (``nondecreasing_convex_hull``) interpolated linearly between
    vertices, constant after the last vertex, and 0 below the cheapest point (the router has
    no operating point there). Integrated exactly (R~ is piecewise linear).
    """
    if not cost_max > cost_min:
        raise ValueError(f"cost_max ({cost_max}) must be greater than cost_min ({cost_min})")
    hull = nondecreasing_convex_hull(points)
    if not hull:
        raise ValueError("aiq needs at least one point")
    xs = np.array([c for c, _ in hull])
    ys = np.array([q for _, q in hull])
    low = max(cost_min, xs[0])
    if low >= cost_max:
        return 0.0
    grid = np.concatenate(([low], xs[(xs > low) & (xs < cost_max)], [cost_max]))
    values = np.interp(grid, xs, ys)  # constant beyond the last vertex
    return _trapezoid(values, grid) / (cost_max - cost_min)


def cost_at_quality(points: Sequence[Point], target_quality: float) -> float | None:
    """The least cost at which R~ reaches ``target_quality``; None when no mix reaches it.

    Interpolates linearly along the non-decreasing convex hull (a random mix of the two
    vertices around the target). A target at or below the cheapest point's quality costs
    the cheapest point's cost.
    """
    hull = nondecreasing_convex_hull(points)
    if not hull:
        raise ValueError("cost_at_quality needs at least one point")
    xs = np.array([c for c, _ in hull])
    ys = np.array([q for _, q in hull])
    if target_quality > ys[-1]:
        return None
    return float(np.interp(target_quality, ys, xs))


def savings_at(points: Sequence[Point], target_quality: float, reference_cost: float) -> float | None:
    """``1 - cost_at_quality(points, target) / reference_cost``; None when unreachable.

    E.g. the share of the best single model's spend saved while matching its quality.
    """
    if not reference_cost > 0:
        raise ValueError(f"reference_cost must be > 0, got {reference_cost}")
    cost = cost_at_quality(points, target_quality)
    return None if cost is None else 1.0 - cost / reference_cost


def pgr_curve(q_strong: np.ndarray, q_weak: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Performance Gap Recovered against the fraction of calls sent to the strong model.

    Prompts are sent to the strong model in order of decreasing ``scores`` (higher = more
    likely to need the strong model), sweeping from 0 to all prompts. Returns
    ``(call_pct, pgr)``: ``call_pct`` is the strong-call *fraction* in [0, 1] (0 and 1
    included), ``pgr[i] = (q_router - mean(q_weak)) / (mean(q_strong) - mean(q_weak))``.
    Prompts with equal scores move together (a threshold cannot split them), so the points
    sit at tie-group boundaries; linear interpolation between them is the expected value
    when a tie group is split at random.
    """
    strong, weak, score = _pair_arrays(q_strong, q_weak, scores)
    gap = strong.mean() - weak.mean()
    if gap == 0:
        raise ValueError("PGR is undefined: the strong and weak models have the same mean quality")
    order = np.argsort(-score, kind="stable")
    gains = np.concatenate(([0.0], np.cumsum(strong[order] - weak[order])))
    sorted_scores = score[order]
    last_of_group = np.concatenate((sorted_scores[1:] != sorted_scores[:-1], [True]))
    counts = np.concatenate(([0], np.flatnonzero(last_of_group) + 1))
    n = len(strong)
    pgr = gains[counts] / n / gap
    return counts / n, pgr


def apgr(q_strong: np.ndarray, q_weak: np.ndarray, scores: np.ndarray) -> float:
    """Average PGR: the area under ``pgr_curve`` over strong-call fractions [0, 1].

    RouteLLM approximates the integral with the trapezoid rule over 10 threshold quantiles;
    here every tie-group boundary is a point, so the trapezoid rule gives the exact area of
    the expected curve. A random router scores 0.5 in expectation, a perfect one close to 1.
    """
    calls, pgr = pgr_curve(q_strong, q_weak, scores)
    return _trapezoid(pgr, calls)


def cpt(q_strong: np.ndarray, q_weak: np.ndarray, scores: np.ndarray, pgr_target: float) -> float | None:
    """Call-Performance Threshold: the least strong-call fraction with PGR >= ``pgr_target``.

    ``pgr_target`` is a fraction (0.5 for RouteLLM's CPT(50%)). The PGR curve is interpolated
    linearly and its first crossing of the target is returned, a fraction in [0, 1]. PGR at
    100% strong calls is 1, so targets <= 1 are always reached; None if the target is not.
    (RouteLLM interpolates call% as a function of quality with ``np.interp``, which assumes
    a rising curve; for such curves the two agree.)
    """
    calls, pgr = pgr_curve(q_strong, q_weak, scores)
    reached = np.flatnonzero(pgr >= pgr_target)
    if reached.size == 0:
        return None
    i = int(reached[0])
    if i == 0:
        return float(calls[0])
    x0, x1, y0, y1 = calls[i - 1], calls[i], pgr[i - 1], pgr[i]
    return float(x0 + (pgr_target - y0) * (x1 - x0) / (y1 - y0))


def single_model_points(
    quality: np.ndarray, cost: np.ndarray, models: Sequence[str] | None = None
) -> dict[str | int, Point]:
    """Each model's ``(cost per 1k requests, mean quality)``, keyed by name (or column index).

    NaN cells are skipped, so a model is averaged over the prompts it answered; pass a
    complete table (``OutcomeTable.complete()``) so all models are averaged over the same
    prompts. A model with no answers gets ``(nan, nan)``.
    """
    q, c = _matrices(quality, cost)
    keys: Sequence[str | int] = list(models) if models is not None else list(range(q.shape[1]))
    if len(keys) != q.shape[1]:
        raise ValueError(f"{len(keys)} model names for {q.shape[1]} columns")
    return {
        key: (1000.0 * _nanmean(c[:, j]), _nanmean(q[:, j])) for j, key in enumerate(keys)
    }


def oracle_choices(quality: np.ndarray, cost: np.ndarray) -> np.ndarray:
    """Per prompt, the column of the cheapest model among those with the highest quality.

    NaN cells are never chosen; ties on cost go to the lower column index. This is the
    RouterBench/README oracle: a perfect router that also never overpays.
    """
    q, c = _matrices(quality, cost)
    answered = ~np.isnan(q)
    if not answered.any(axis=1).all():
        row = int(np.argmin(answered.any(axis=1)))
        raise ValueError(f"prompt row {row} has no model with a quality value")
    best = np.where(answered, q, -np.inf).max(axis=1, keepdims=True)
    candidates = answered & (q == best)
    return np.asarray(np.where(candidates, np.where(np.isnan(c), np.inf, c), np.inf).argmin(axis=1))


def oracle_point(quality: np.ndarray, cost: np.ndarray) -> Point:
    """``(cost per 1k requests, mean quality)`` of ``oracle_choices``."""
    return evaluate_choices(oracle_choices(quality, cost), quality, cost)


def random_mix_points(points_a: Point, points_b: Point, steps: int = 10) -> list[Point]:
    """Operating points of sending each request to B with probability p, else to A.

    ``points_a`` and ``points_b`` are each one ``(cost, quality)`` point (e.g. two single
    models). Expected cost and quality are linear in p, so the result is ``steps + 1``
    evenly spaced points on the segment from A (p = 0) to B (p = 1).
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    p = np.linspace(0.0, 1.0, steps + 1)
    (ca, qa), (cb, qb) = points_a, points_b
    return [(float(x), float(y)) for x, y in zip((1 - p) * ca + p * cb, (1 - p) * qa + p * qb, strict=True)]


def evaluate_choices(choice: np.ndarray, quality: np.ndarray, cost: np.ndarray) -> Point:
    """``(cost per 1k requests, mean quality)`` when prompt i goes to column ``choice[i]``.

    Choosing a cell with no result (NaN) is an error: the outcome is unknown.
    """
    q, c = _matrices(quality, cost)
    picks = np.asarray(choice)
    if picks.shape != (q.shape[0],) or not np.issubdtype(picks.dtype, np.integer):
        raise ValueError(f"choice must be {q.shape[0]} integer column indices, got shape {picks.shape} {picks.dtype}")
    if q.shape[0] == 0:
        raise ValueError("no prompts to evaluate")
    if picks.min() < 0 or picks.max() >= q.shape[1]:
        raise ValueError(f"choice indices must be in [0, {q.shape[1]})")
    rows = np.arange(q.shape[0])
    chosen_q, chosen_c = q[rows, picks], c[rows, picks]
    missing = np.isnan(chosen_q) | np.isnan(chosen_c)
    if missing.any():
        row = int(np.argmax(missing))
        raise ValueError(f"prompt row {row} is routed to column {picks[row]}, which has no result")
    return 1000.0 * float(chosen_c.mean()), float(chosen_q.mean())


def _sorted_points(points: Sequence[Point] | Mapping[object, Point]) -> list[Point]:
    """Finite points as float pairs, by cost ascending then quality descending."""
    array = np.asarray(list(points.values()) if isinstance(points, Mapping) else list(points), dtype=np.float64)
    if array.size == 0:
        return []
    if array.ndim != 2 or array.shape[1] != 2:
        raise ValueError(f"points must be (cost, quality) pairs, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError("points must be finite (drop models with no results first)")
    order = np.lexsort((-array[:, 1], array[:, 0]))
    return [(float(c), float(q)) for c, q in array[order]]


def _cross(o: Point, a: Point, b: Point) -> float:
    """z of (a - o) x (b - o): negative when o -> a -> b turns clockwise (right)."""
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])


def _trapezoid(y: np.ndarray, x: np.ndarray) -> float:
    """Trapezoid-rule integral (np.trapezoid needs numpy >= 2, np.trapz is gone in 2.4)."""
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2.0))


def _nanmean(values: np.ndarray) -> float:
    """Mean of the non-NaN values, NaN (without a warning) when there are none."""
    present = values[~np.isnan(values)]
    return float(present.mean()) if present.size else float("nan")


def _matrices(quality: np.ndarray, cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    q = np.asarray(quality, dtype=np.float64)
    c = np.asarray(cost, dtype=np.float64)
    if q.ndim != 2 or q.shape != c.shape:
        raise ValueError(f"quality and cost must be 2-D of the same shape, got {q.shape} and {c.shape}")
    return q, c


def _pair_arrays(q_strong: np.ndarray, q_weak: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, ...]:
    arrays = tuple(np.asarray(a, dtype=np.float64) for a in (q_strong, q_weak, scores))
    n = arrays[0].shape
    if len(n) != 1 or n[0] == 0 or any(a.shape != n for a in arrays):
        raise ValueError("q_strong, q_weak and scores must be non-empty 1-D arrays of the same length")
    if any(np.isnan(a).any() for a in arrays):
        raise ValueError("q_strong, q_weak and scores must not contain NaN")
    return arrays
