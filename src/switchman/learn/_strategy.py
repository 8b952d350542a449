"""The learned strategy: predicted quality and cost per candidate → the calibrated choice.

The same `TrainedRouter.predict_columns`, `Knob.choose` and prompt draw that `switchman eval`
sweeps over thousands of prompts run here for one request, so what evaluation measures is what
serving does. A candidate the router was trained on is predicted from its outcome data; any other
is placed by its ability (public or configured score).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .._catalog import ModelSpec
from ..routing import CandidateScore, Decision, DecisionContext, RouteRequest, estimated_cost, expected_ttft_ms
from ._artifact import TrainedRouter
from ._embedding import Embedder
from ._knob import Knob, prompt_draw
from ._profiles import ModelProfile

__all__ = ["LearnedStrategy", "trained_profiles"]


def trained_profiles(router: TrainedRouter) -> tuple[ModelProfile, ...]:
    """Profiles of the router's own models (their abilities from its outcome data)."""
    abilities = router.abilities()
    return tuple(ModelProfile(name, abilities.get(name), "outcome data", "trained", j)
                 for j, name in enumerate(router.model_names))


@dataclass
class LearnedStrategy:
    """Choose with a trained router among candidates it can place; others are priced but not scored."""

    router: TrainedRouter
    embedder: Embedder
    knob: Knob | float | None = None
    profiles: Sequence[ModelProfile] = ()
    name: str = "learned"

    def __post_init__(self) -> None:
        if self.knob is None:
            self._knob = self.router.knob
        else:
            self._knob = self.knob if isinstance(self.knob, Knob) else Knob(float(self.knob))
        self._profiles = {p.name: p for p in (self.profiles or trained_profiles(self.router)) if p.placed}

    @property
    def calibrated_knob(self) -> Knob:
        """The knob this strategy decides with."""
        return self._knob

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
        known = sorted((s for s in candidates if s.name in self._profiles), key=lambda s: expected_ttft_ms(s, context))
        unknown = [s for s in candidates if s.name not in self._profiles]
        if not known:
            ranked = sorted(candidates, key=lambda s: estimated_cost(s, request))
            return Decision(
                model=ranked[0].name, strategy=self.name, route=context.route,
                reason="no candidate can be placed by the trained router; cheapest capable candidate",
                candidates=tuple(CandidateScore(s.name, predicted_cost_usd=estimated_cost(s, request)) for s in ranked),
                fallbacks=tuple(s.name for s in ranked[1:]),
            )
        quality, output = self.router.predict_columns(self.features(request),
                                                      [self._profiles[s.name].key for s in known])
        q, out = quality[0], output[0]
        cost = np.array([s.cost(request.input_tokens, o) for s, o in zip(known, out, strict=True)])
        draw = prompt_draw(request.prompt)
        knob = self._knob.for_draw(draw)
        chosen = int(self._knob.choose(q[None, :], cost[None, :], self.router.rule, np.array([draw]))[0])
        order = sorted(range(len(known)), key=lambda i: (-q[i], cost[i], expected_ttft_ms(known[i], context)))
        scores = tuple(
            CandidateScore(known[i].name, float(q[i]), float(cost[i]), float(out[i])) for i in order
        ) + tuple(CandidateScore(s.name, predicted_cost_usd=estimated_cost(s, request)) for s in unknown)
        fallbacks = tuple(known[i].name for i in order if i != chosen) + tuple(s.name for s in unknown)
        return Decision(
            model=known[chosen].name, reason=self._reason(known, q, cost, chosen, order[0], knob), strategy=self.name,
            route=context.route, candidates=scores, fallbacks=fallbacks,
        )

    def _reason(self, known: Sequence[ModelSpec], q: np.ndarray, cost: np.ndarray, chosen: int, best: int,
                knob: float) -> str:
        """Why the chosen candidate won, in the selection rule's own terms."""
        picked = f"predicted quality {q[chosen]:.3f} at ${cost[chosen]:.6f}"
        if chosen == best:
            return f"learned ({self.router.rule} {knob:.4g}): {known[chosen].name} has the best {picked}"
        extra_q, extra_cost = q[best] - q[chosen], cost[best] - cost[chosen]
        if self.router.rule == "tradeoff":
            why = (f"{known[best].name} would add {extra_q:+.3f} quality for ${extra_cost:+.6f}, worth "
                   f"{knob * extra_cost * 1000:.3f} at {knob:.4g} quality per $ per 1k requests")
        else:
            why = f"within {knob:.3f} of the best predicted ({known[best].name} {q[best]:.3f}) and cheapest"
        return f"learned ({self.router.rule} {knob:.4g}): {known[chosen].name}, {picked}; {why}"
