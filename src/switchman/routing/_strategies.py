"""Routing strategies: one protocol, one method, pure.

`decide(request, candidates, context) -> Decision`. Candidates have already passed the policy
filters; the context carries everything from outside the core (a random draw, live latency), so a
strategy reads no clock, network or database.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from .._catalog import ModelSpec
from .._config import RuleConfig, RuleMatch
from .._slots import slot_init
from ._decision import CandidateScore, Decision
from ._policy import estimated_cost
from ._request import RouteRequest

__all__ = [
    "CheapestStrategy",
    "DecisionContext",
    "FixedStrategy",
    "RandomStrategy",
    "RulesStrategy",
    "Strategy",
    "expected_ttft_ms",
    "rule_matches",
]


@slot_init
@dataclass(frozen=True, slots=True)
class DecisionContext:
    """Inputs from outside the pure core."""

    route: str | None = None
    random_value: float = 0.5
    ttft_ms: Mapping[str, float] = field(default_factory=dict)


class Strategy(Protocol):
    """Chooses one model among capable candidates."""

    @property
    def name(self) -> str:
        """The strategy's name, as decisions and the ledger record it."""
        ...

    def decide(
        self, request: RouteRequest, candidates: Sequence[ModelSpec], context: DecisionContext
    ) -> Decision: ...


def expected_ttft_ms(spec: ModelSpec, context: DecisionContext) -> float:
    """Live time to first token if measured, else the catalog prior, else unknown (infinite)."""
    live = context.ttft_ms.get(spec.name)
    if live is not None:
        return live
    return spec.ttft_ms if spec.ttft_ms is not None else float("inf")


#: A candidate and its estimated cost for the request (computed once per candidate and decision).
Priced = tuple[ModelSpec, float]


def _by_cost(
    request: RouteRequest, candidates: Sequence[ModelSpec], context: DecisionContext | None = None
) -> list[Priced]:
    """Cheapest first; among equally cheap, the faster (live TTFT), then the larger window, then the name."""
    ctx = context or DecisionContext()
    keyed = sorted([  # i: equal keys keep their order (as a stable sort does), and specs are never compared
        (estimated_cost(s, request), expected_ttft_ms(s, ctx), -(s.context_window or 0), s.name, i, s)
        for i, s in enumerate(candidates)
    ])
    return [(k[5], k[0]) for k in keyed]


def _decision(
    chosen: ModelSpec,
    ranked: Sequence[Priced],
    *,
    strategy: str,
    reason: str,
    context: DecisionContext,
) -> Decision:
    name = chosen.name
    return Decision(  # positional (model, reason, strategy, route, candidates, fallbacks): once per request
        name, reason, strategy, context.route,
        tuple([CandidateScore(s.name, None, cost) for s, cost in ranked]),
        tuple([s.name for s, _ in ranked if s.name != name]),
    )


@dataclass(frozen=True, slots=True)
class FixedStrategy:
    """Always the same model (falls back to the cheapest capable one if it was filtered out)."""

    model: str
    name: str = "fixed"

    def decide(self, request: RouteRequest, candidates: Sequence[ModelSpec], context: DecisionContext) -> Decision:
        ranked = _by_cost(request, candidates, context)
        chosen = next((s for s, _ in ranked if s.name == self.model), None)
        if chosen is None:
            return _decision(
                ranked[0][0], ranked, strategy=self.name, context=context,
                reason=f"fixed model {self.model} cannot serve this request; cheapest capable candidate",
            )
        return _decision(chosen, ranked, strategy=self.name, reason=f"fixed: {self.model}", context=context)


def _as_set(value: str | list[str] | None) -> set[str] | None:
    if value is None:
        return None
    return {value} if isinstance(value, str) else set(value)


def rule_matches(match: RuleMatch, request: RouteRequest) -> bool:
    """Every condition the rule gives holds for the request."""
    agents, tasks = _as_set(match.agent), _as_set(match.task)
    checks = (
        agents is None or request.agent in agents,
        tasks is None or request.task in tasks,
        match.tags is None or bool(request.tags.intersection(match.tags)),
        match.min_input_tokens is None or request.input_tokens >= match.min_input_tokens,
        match.max_input_tokens is None or request.input_tokens <= match.max_input_tokens,
        match.tools is None or request.has_tools == match.tools,
        match.images is None or request.has_images == match.images,
        match.code is None or request.has_code == match.code,
    )
    return all(checks)


def _describe(match: RuleMatch) -> str:
    parts = [f"{k}={v}" for k, v in match.model_dump(exclude_none=True).items()]
    return ", ".join(parts) or "always"


@dataclass(frozen=True, slots=True)
class RulesStrategy:
    """First matching rule wins; then the default; then the cheapest capable candidate."""

    rules: tuple[RuleConfig, ...]
    default: str | None = None
    name: str = "rules"

    def decide(self, request: RouteRequest, candidates: Sequence[ModelSpec], context: DecisionContext) -> Decision:
        ranked = _by_cost(request, candidates, context)
        by_name = {s.name: s for s, _ in ranked}
        for i, rule in enumerate(self.rules):
            if rule.model in by_name and rule_matches(rule.match, request):
                return _decision(
                    by_name[rule.model], ranked, strategy=self.name, context=context,
                    reason=f"rule {i} ({_describe(rule.match)}) → {rule.model}",
                )
        if self.default is not None and self.default in by_name:
            return _decision(
                by_name[self.default], ranked, strategy=self.name, context=context,
                reason=f"no rule matched; default {self.default}",
            )
        return _decision(
            ranked[0][0], ranked, strategy=self.name, context=context,
            reason="no rule matched and no usable default; cheapest capable candidate",
        )


@dataclass(frozen=True, slots=True)
class CheapestStrategy:
    """The cheapest capable candidate for this request's tokens."""

    name: str = "cheapest"

    def decide(self, request: RouteRequest, candidates: Sequence[ModelSpec], context: DecisionContext) -> Decision:
        ranked = _by_cost(request, candidates, context)
        cheapest, cost = ranked[0]
        return _decision(
            cheapest, ranked, strategy=self.name, context=context,
            reason=f"cheapest capable candidate (${cost:.6f} estimated)",
        )


@dataclass(frozen=True, slots=True)
class RandomStrategy:
    """A uniform random candidate: the baseline every router must beat."""

    name: str = "random"

    def decide(self, request: RouteRequest, candidates: Sequence[ModelSpec], context: DecisionContext) -> Decision:
        ranked = _by_cost(request, candidates, context)
        index = min(int(context.random_value * len(ranked)), len(ranked) - 1)
        return _decision(
            ranked[index][0], ranked, strategy=self.name, context=context,
            reason=f"random draw {context.random_value:.3f}",
        )
