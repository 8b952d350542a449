"""Online routing: Thompson sampling over per-cluster success rates, shifted by feedback as it arrives.

Prompts fall into clusters (k-means centroids of the trained router's own training features);
each (cluster, model) pair has a Beta(α, β) belief about the model's success there, started from
the router's trained quality on that cluster (worth `prior_strength` pieces of feedback) and moved
by every score: α += score, β += 1 − score. A decision draws one success rate per candidate and
takes the best (or the cheapest within `tolerance` of the best draw). An exploration floor keeps
learning alive: with probability exploration × candidates the choice is uniform, so every
candidate keeps at least `exploration` of each cluster's traffic.

`thompson_choice` is the pure core (its randomness is a Generator passed in); `BetaCounts` is the
state the shell owns and updates when feedback comes (`POST /v1/feedback`). A decision carries its
cluster (`Decision.cluster`, kept in the ledger), so feedback finds the counts it belongs to.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from .._catalog import ModelSpec
from .._config import OnlineOptions
from ..routing import CandidateScore, Decision, DecisionContext, RouteRequest
from ._strategy import LearnedStrategy

__all__ = ["BetaCounts", "OnlineStrategy", "kmeans", "thompson_choice"]


def kmeans(x: np.ndarray, k: int, *, seed: int = 0, iterations: int = 25) -> np.ndarray:
    """k centroids of the rows of `x` (cosine: rows are normalised first); fewer when x has fewer rows."""
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    k = max(1, min(k, len(x)))
    rng = np.random.default_rng(seed)
    centroids = x[rng.choice(len(x), size=k, replace=False)].copy()
    for _ in range(iterations):
        assign = (x @ centroids.T).argmax(axis=1)
        for c in range(k):
            members = x[assign == c]
            if len(members):
                mean = members.mean(axis=0)
                centroids[c] = mean / max(float(np.linalg.norm(mean)), 1e-12)
    return centroids


def thompson_choice(
    alpha: np.ndarray, beta: np.ndarray, cost: np.ndarray, rng: np.random.Generator, *,
    exploration: float, tolerance: float = 0.0,
) -> tuple[int, bool]:
    """The candidate to use and whether it was an exploration pick (pure: randomness comes from `rng`)."""
    k = len(alpha)
    if rng.random() < min(exploration * k, 1.0):
        return int(rng.integers(k)), True
    draws = rng.beta(alpha, beta)
    ok = draws >= draws.max() - tolerance
    return int(np.where(ok, cost, np.inf).argmin()), False


@dataclass
class BetaCounts:
    """Beta(α, β) per (cluster, model); updated by the shell when feedback arrives (thread-safe)."""

    alpha: np.ndarray
    beta: np.ndarray
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _listeners: list[Callable[[int, int, float], None]] = field(default_factory=list, repr=False)

    @classmethod
    def from_prior(cls, mean_quality: np.ndarray, strength: float) -> BetaCounts:
        """Counts worth `strength` observations at the given (clusters × models) mean quality."""
        q = np.clip(np.nan_to_num(mean_quality, nan=0.5), 0.0, 1.0)
        return cls(1.0 + strength * q, 1.0 + strength * (1.0 - q))

    def observe(self, cluster: int, column: int, score: float) -> None:
        """One piece of feedback: a score in [0, 1] counts as that much success."""
        with self._lock:
            self.alpha[cluster, column] += score
            self.beta[cluster, column] += 1.0 - score
        for listener in self._listeners:
            listener(cluster, column, score)

    def on_observe(self, listener: Callable[[int, int, float], None]) -> None:
        """Call `listener(cluster, column, score)` after each observation (a shared store forwards them)."""
        self._listeners.append(listener)

    def assign(self, alpha: np.ndarray, beta: np.ndarray) -> None:
        """Replace every count at once (with what the replicas learned together)."""
        with self._lock:
            self.alpha, self.beta = alpha, beta

    def snapshot(self) -> tuple[np.ndarray, np.ndarray]:
        """A consistent copy of every count."""
        with self._lock:
            return self.alpha.copy(), self.beta.copy()

    def row(self, cluster: int) -> tuple[np.ndarray, np.ndarray]:
        """A consistent copy of one cluster's counts."""
        with self._lock:
            return self.alpha[cluster].copy(), self.beta[cluster].copy()


class OnlineStrategy:
    """Thompson sampling per prompt cluster over a learned route's candidates."""

    name = "online"

    def __init__(self, learned: LearnedStrategy, options: OnlineOptions, counts: BetaCounts | None = None) -> None:
        self.learned = learned
        self.options = options
        router = learned.router
        x, quality = router.training_points()
        x, quality = x.astype(np.float32), quality.astype(np.float64)
        self.centroids = kmeans(x, options.clusters).astype(np.float32)
        assign = self.assign(x)
        prior = np.full((len(self.centroids), quality.shape[1]), np.nan)
        for c in range(len(self.centroids)):
            members = quality[assign == c]
            if len(members):
                with np.errstate(all="ignore"):
                    prior[c] = np.nanmean(np.where(np.isnan(members), np.nan, members), axis=0)
        self.counts = counts or BetaCounts.from_prior(prior, options.prior_strength)
        self._column = {name: i for i, name in enumerate(router.model_names)}

    def assign(self, features: np.ndarray) -> np.ndarray:
        """The nearest centroid of each feature row."""
        x = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
        return np.asarray((x @ self.centroids.T).argmax(axis=1))

    def decide(self, request: RouteRequest, candidates: Sequence[ModelSpec], context: DecisionContext) -> Decision:
        known = [s for s in candidates if s.name in self._column]
        if not known:
            return self.learned.decide(request, candidates, context)
        features = self.learned.features(request)
        cluster = int(self.assign(features)[0])
        _, output_tokens = self.learned.router.predict(features)
        cols = [self._column[s.name] for s in known]
        cost = np.array([s.cost(request.input_tokens, float(output_tokens[0, c])) for s, c in zip(known, cols,
                                                                                                 strict=True)])
        alpha, beta = self.counts.row(cluster)
        # The draw comes from the context, so the same inputs give the same decision (a pure core).
        rng = np.random.default_rng(int(context.random_value * 2**53))
        chosen, explored = thompson_choice(alpha[cols], beta[cols], cost, rng, exploration=self.options.exploration,
                                           tolerance=self.options.tolerance)
        means = alpha[cols] / (alpha[cols] + beta[cols])
        order = sorted(range(len(known)), key=lambda i: (-means[i], cost[i]))
        how = "exploration" if explored else "thompson draw"
        return Decision(
            model=known[chosen].name, strategy=self.name, route=context.route,
            cluster=cluster,
            reason=f"online cluster {cluster}: {how}; success rate {means[chosen]:.3f} "
                   f"(best {known[order[0]].name} {means[order[0]]:.3f})",
            candidates=tuple(CandidateScore(known[i].name, float(means[i]), float(cost[i]),
                                            float(output_tokens[0, cols[i]])) for i in order),
            fallbacks=tuple(known[i].name for i in order if i != chosen)
            + tuple(s.name for s in candidates if s.name not in self._column),
        )

    def observe(self, cluster: int | None, model: str, score: float) -> bool:
        """Count feedback on a request this strategy decided in `cluster` (its decision's cluster)."""
        if cluster is None or not 0 <= cluster < len(self.centroids) or model not in self._column:
            return False
        self.counts.observe(cluster, self._column[model], score)
        return True
