"""The learned strategy: predicted quality and cost per candidate → the calibrated choice.

The same `TrainedRouter.predict` and `routing.select` that `switchman eval` sweeps over thousands
of prompts run here for one request, so what evaluation measures is what serving does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .._catalog import ModelSpec
from ..routing import CandidateScore, Decision, DecisionContext, RouteRequest, estimated_cost, expected_ttft_ms, select
from ._artifact import TrainedRouter
from ._embedding import Embedder

__all__ = ["LearnedStrategy"]


@dataclass
class LearnedStrategy:
    """Choose with a trained router; candidates it was not trained on are priced but not scored."""

    router: TrainedRouter
    embedder: Embedder
    knob: float | None = None
    name: str = "learned"

    def __post_init__(self) -> None:
        self._column = {name: i for i, name in enumerate(self.router.model_names)}

    def features(self, request: RouteRequest) -> np.ndarray:
        """The router's feature row for one request: its prompt's embedding (plus task columns)."""
        embedding = self.embedder.embed(self.router.texts([request.prompt]))
        return self.router.features(embedding, [request.task])

    def predict(self, request: RouteRequest) -> tuple[np.ndarray, np.ndarray]:
        """Predicted quality and output tokens for every trained model, for one request."""
        quality, output_tokens = self.router.predict(self.features(request))
        return quality[0], output_tokens[0]

    def decide(self, request: RouteRequest, candidates: Sequence[ModelSpec], context: DecisionContext) -> Decision:
        # Faster candidates first: `select` breaks exact ties by position, so among equally good
        # and equally cheap candidates the one with the lower live time to first token wins.
        known = sorted((s for s in candidates if s.name in self._column), key=lambda s: expected_ttft_ms(s, context))
        unknown = [s for s in candidates if s.name not in self._column]
        if not known:
            ranked = sorted(candidates, key=lambda s: estimated_cost(s, request))
            return Decision(
                model=ranked[0].name, strategy=self.name, route=context.route,
                reason="no candidate is known to the trained router; cheapest capable candidate",
                candidates=tuple(CandidateScore(s.name, predicted_cost_usd=estimated_cost(s, request)) for s in ranked),
                fallbacks=tuple(s.name for s in ranked[1:]),
            )
        quality, output_tokens = self.predict(request)
        cols = [self._column[s.name] for s in known]
        q = quality[cols]
        out = output_tokens[cols]
        cost = np.array([s.cost(request.input_tokens, o) for s, o in zip(known, out, strict=True)])
        knob = self.router.knob if self.knob is None else self.knob
        chosen = int(select(q[None, :], cost[None, :], knob, self.router.rule)[0])
        order = sorted(range(len(known)), key=lambda i: (-q[i], cost[i], expected_ttft_ms(known[i], context)))
        scores = tuple(
            CandidateScore(known[i].name, float(q[i]), float(cost[i]), float(out[i])) for i in order
        ) + tuple(CandidateScore(s.name, predicted_cost_usd=estimated_cost(s, request)) for s in unknown)
        fallbacks = tuple(known[i].name for i in order if i != chosen) + tuple(s.name for s in unknown)
        best = order[0]
        reason = (
            f"learned ({self.router.rule} {knob:.4g}): predicted quality {q[chosen]:.3f} "
            f"(best {known[best].name} {q[best]:.3f}), predicted cost ${cost[chosen]:.6f}"
        )
        return Decision(
            model=known[chosen].name, reason=reason, strategy=self.name, route=context.route,
            candidates=scores, fallbacks=fallbacks,
        )
