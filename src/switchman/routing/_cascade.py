"""Cascades: try the cheapest adequate model, accept its answer if the checks pass, else move up.

The strategy is a generator (the shape of httpx's `Auth.auth_flow`): it yields an `Attempt` ("try
model X"), receives the `Outcome` of that attempt, runs its checks and either stops with the answer
or yields the next rung. It never sends anything itself, so the gateway (real upstream calls), the
offline simulation (known outcomes from a table) and replay drive the very same code::

    flow = cascade(ladder, checks, expect)
    attempt = next(flow)
    while True:
        outcome = run(attempt)                    # the driver's I/O
        try:
            attempt = flow.send(outcome)
        except StopIteration as stop:
            result = stop.value                   # CascadeResult: which answer, and why
            break

Checks are small pure callables `(attempt, outcome, expect) -> Verdict`; they compose by listing
them (all must pass). A check that cannot judge (no schema asked, no logprobs returned, no
prediction) passes, so adding a check never rejects answers it knows nothing about.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from .._catalog import ModelSpec
from ._decision import CandidateScore, Decision
from ._policy import estimated_cost
from ._request import RouteRequest
from ._strategies import DecisionContext, Strategy

__all__ = [
    "AcceptanceCheck",
    "Attempt",
    "CascadeResult",
    "CascadeStrategy",
    "Check",
    "Expectations",
    "JsonCheck",
    "LogprobCheck",
    "OracleCheck",
    "Outcome",
    "ToolArgsCheck",
    "ToolCall",
    "Verdict",
    "build_ladder",
    "cascade",
    "drive",
]


@dataclass(frozen=True, slots=True)
class Attempt:
    """'Try this model': the rung's model and what was predicted for it (None where unknown)."""

    model: str
    rung: int = 0
    predicted_quality: float | None = None
    predicted_cost_usd: float | None = None


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One tool call in an answer: the function name and its raw JSON arguments."""

    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one attempt produced.

    `quality` is known only in simulation (the outcome table's score); `error` marks an attempt
    whose upstream failed after its retries and fallbacks, which always escalates.
    """

    text: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    finish_reason: str | None = None
    logprobs: tuple[float, ...] | None = None
    output_tokens: int | None = None
    quality: float | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Expectations:
    """What the caller asked the answer to be: its response format and the tools it offered."""

    response_format: Mapping[str, Any] | None = None
    tools: tuple[Mapping[str, Any], ...] = ()

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Expectations:
        """From an OpenAI chat-completions body (pure: reads fields only)."""
        fmt = body.get("response_format")
        return cls(response_format=fmt if isinstance(fmt, Mapping) else None, tools=tuple(body.get("tools") or ()))


@dataclass(frozen=True, slots=True)
class Verdict:
    """A check's judgement of one answer."""

    accepted: bool
    check: str
    detail: str = ""


class Check(Protocol):
    """Judges one answer; pure."""

    @property
    def name(self) -> str: ...

    def __call__(self, attempt: Attempt, outcome: Outcome, expect: Expectations) -> Verdict: ...


def _validate(instance: Any, schema: Mapping[str, Any]) -> str | None:
    """The first schema violation, or None (jsonschema loads only when a schema is checked)."""
    import jsonschema  # type: ignore[import-untyped]

    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(instance))
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path) or "<root>"
    return f"{where}: {error.message}"[:200]


@dataclass(frozen=True, slots=True)
class JsonCheck:
    """With `response_format` json_object the answer must parse to an object; with json_schema, validate."""

    name: str = "json"

    def __call__(self, attempt: Attempt, outcome: Outcome, expect: Expectations) -> Verdict:
        fmt = expect.response_format or {}
        kind = fmt.get("type")
        if kind not in ("json_object", "json_schema"):
            return Verdict(True, self.name, "no JSON requested")
        try:
            value = json.loads(outcome.text)
        except json.JSONDecodeError as exc:
            return Verdict(False, self.name, f"not JSON ({exc.msg} at {exc.pos})")
        spec = fmt.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, Mapping) else None
        if kind == "json_object" or not isinstance(schema, Mapping):
            ok = isinstance(value, dict)
            return Verdict(ok, self.name, "JSON object" if ok else f"JSON {type(value).__name__}, not an object")
        problem = _validate(value, schema)
        return Verdict(problem is None, self.name, problem or "matches the schema")


def _tool_schemas(tools: Sequence[Mapping[str, Any]]) -> dict[str, Mapping[str, Any] | None]:
    schemas: dict[str, Mapping[str, Any] | None] = {}
    for tool in tools:
        function = tool.get("function") if tool.get("type", "function") == "function" else None
        if isinstance(function, Mapping) and isinstance(function.get("name"), str):
            params = function.get("parameters")
            schemas[function["name"]] = params if isinstance(params, Mapping) else None
    return schemas


@dataclass(frozen=True, slots=True)
class ToolArgsCheck:
    """Each tool call names an offered tool and its arguments parse and match that tool's parameters."""

    name: str = "tool_args"

    def __call__(self, attempt: Attempt, outcome: Outcome, expect: Expectations) -> Verdict:
        if not outcome.tool_calls:
            return Verdict(True, self.name, "no tool calls")
        schemas = _tool_schemas(expect.tools)
        for call in outcome.tool_calls:
            if schemas and call.name not in schemas:
                return Verdict(False, self.name, f"unknown tool {call.name!r}")
            try:
                args = json.loads(call.arguments or "{}")
            except json.JSONDecodeError as exc:
                return Verdict(False, self.name, f"{call.name}: arguments are not JSON ({exc.msg})")
            if not isinstance(args, dict):
                return Verdict(False, self.name, f"{call.name}: arguments are not a JSON object")
            schema = schemas.get(call.name)
            problem = _validate(args, schema) if schema else None
            if problem is not None:
                return Verdict(False, self.name, f"{call.name}: {problem}")
        return Verdict(True, self.name, f"{len(outcome.tool_calls)} tool call(s) valid")


@dataclass(frozen=True, slots=True)
class LogprobCheck:
    """Token log-probabilities, where the upstream returned them: mean and minimum above thresholds."""

    min_mean: float | None = -1.0
    min_token: float | None = None
    name: str = "logprobs"

    def __call__(self, attempt: Attempt, outcome: Outcome, expect: Expectations) -> Verdict:
        if not outcome.logprobs:
            return Verdict(True, self.name, "no logprobs returned")
        mean = sum(outcome.logprobs) / len(outcome.logprobs)
        low = min(outcome.logprobs)
        if self.min_mean is not None and mean < self.min_mean:
            return Verdict(False, self.name, f"mean logprob {mean:.3f} < {self.min_mean:g}")
        if self.min_token is not None and low < self.min_token:
            return Verdict(False, self.name, f"min token logprob {low:.3f} < {self.min_token:g}")
        return Verdict(True, self.name, f"mean logprob {mean:.3f}, min {low:.3f}")


def _predicted_quality(attempt: Attempt, outcome: Outcome) -> float | None:
    return attempt.predicted_quality


@dataclass(frozen=True, slots=True)
class AcceptanceCheck:
    """A learned acceptance predictor: P(answer acceptable | prompt, model[, answer]) ≥ threshold.

    `score` defaults to the learned router's predicted quality for (prompt, model); a dedicated
    predictor that also reads the answer (e.g. its length) is passed as `score`. No score: passes.
    """

    threshold: float
    score: Callable[[Attempt, Outcome], float | None] = _predicted_quality
    name: str = "acceptance"

    def __call__(self, attempt: Attempt, outcome: Outcome, expect: Expectations) -> Verdict:
        p = self.score(attempt, outcome)
        if p is None or math.isnan(p):
            return Verdict(True, self.name, "no acceptance prediction")
        return Verdict(p >= self.threshold, self.name, f"P(acceptable) {p:.3f} vs {self.threshold:g}")


@dataclass(frozen=True, slots=True)
class OracleCheck:
    """Simulation only, an upper bound: accept iff the answer's true quality ≥ threshold."""

    threshold: float
    name: str = "oracle"

    def __call__(self, attempt: Attempt, outcome: Outcome, expect: Expectations) -> Verdict:
        if outcome.quality is None:
            raise ValueError("the oracle check needs the true quality (simulation only)")
        return Verdict(outcome.quality >= self.threshold, self.name, f"true quality {outcome.quality:.3f}")


@dataclass(frozen=True, slots=True)
class CascadeResult:
    """How the cascade ended: the answer to serve, whether a check accepted it, each rung's verdict."""

    model: str
    rung: int
    accepted: bool
    trace: tuple[tuple[str, Verdict], ...] = field(default_factory=tuple)

    def summary(self) -> str:
        """One line for the ledger's reason: what each rung got."""
        steps = [f"{m} {'✓' if v.accepted else '✗'} {v.check}: {v.detail}" for m, v in self.trace]
        tail = "accepted" if self.accepted else "last rung, served unchecked"
        return f"cascade {' → '.join(steps)} ({tail})"


def cascade(
    ladder: Sequence[Attempt], checks: Sequence[Check], expect: Expectations = Expectations()
) -> Generator[Attempt, Outcome, CascadeResult]:
    """Yield rungs cheapest first; stop at the first answer every check accepts, or at the last rung."""
    if not ladder:
        raise ValueError("a cascade needs at least one rung")
    trace: list[tuple[str, Verdict]] = []
    for i, attempt in enumerate(ladder):
        outcome = yield attempt
        if outcome.error is not None:
            verdict = Verdict(False, "upstream", outcome.error[:200])
        else:
            verdicts = (check(attempt, outcome, expect) for check in checks)
            verdict = next((v for v in verdicts if not v.accepted), Verdict(True, "checks", "all passed"))
        trace.append((attempt.model, verdict))
        if verdict.accepted or i == len(ladder) - 1:
            return CascadeResult(attempt.model, i, verdict.accepted, tuple(trace))
    raise AssertionError("unreachable")


def drive(
    flow: Generator[Attempt, Outcome, CascadeResult], run: Callable[[Attempt], Outcome]
) -> tuple[CascadeResult, list[tuple[Attempt, Outcome]]]:
    """Drive a cascade synchronously (simulation, tests): the result and every attempt made."""
    attempts: list[tuple[Attempt, Outcome]] = []
    attempt = next(flow)
    while True:
        outcome = run(attempt)
        attempts.append((attempt, outcome))
        try:
            attempt = flow.send(outcome)
        except StopIteration as stop:
            return stop.value, attempts


def build_ladder(
    scores: Sequence[CandidateScore], *, max_attempts: int = 3, adequate: float = 0.0,
    order: Sequence[str] | None = None,
) -> tuple[Attempt, ...]:
    """The rungs: cheapest first by predicted cost, each predicted better than every cheaper one.

    A rung more expensive than another yet predicted no better is never worth trying after it.
    `adequate` drops rungs predicted below that fraction of the best predicted quality (no point
    paying for an answer the predictor already expects to fail). Past `max_attempts`, the first
    `max_attempts − 1` rungs and the top one are kept, so the cascade still ends on its strongest.
    An explicit `order` (configured ladder) is kept as given, restricted to the scored candidates.
    """
    by_name = {s.model: s for s in scores}
    if order is not None:
        ranked = [by_name[m] for m in order if m in by_name] or [*scores]
    else:
        ranked = sorted(scores, key=lambda s: (s.predicted_cost_usd or 0.0, -(s.predicted_quality or 0.0)))
        known = [s.predicted_quality for s in ranked if s.predicted_quality is not None]
        if known:
            floor = adequate * max(known)
            kept: list[CandidateScore] = []
            for s in ranked:
                q = s.predicted_quality
                if q is None or (q >= floor and (not kept or q > max(k.predicted_quality or -1.0 for k in kept))):
                    kept.append(s)
            ranked = kept or ranked[-1:]
    if len(ranked) > max_attempts:
        ranked = [*ranked[: max(max_attempts - 1, 0)], ranked[-1]]
    return tuple(
        Attempt(s.model, i, s.predicted_quality, s.predicted_cost_usd) for i, s in enumerate(ranked)
    )


@dataclass
class CascadeStrategy:
    """Decides the ladder (first rung = the Decision's model) and starts the generator for a request.

    `scorer` (a learned strategy) supplies predicted quality and cost per candidate; without one,
    rungs are ordered by the catalog's estimated cost and the acceptance check has nothing to read.
    """

    checks: tuple[Check, ...]
    scorer: Strategy | None = None
    max_attempts: int = 3
    adequate: float = 0.0
    order: tuple[str, ...] | None = None
    name: str = "cascade"

    def _scores(self, request: RouteRequest, candidates: Sequence[ModelSpec],
                context: DecisionContext) -> tuple[CandidateScore, ...]:
        if self.scorer is not None:
            return self.scorer.decide(request, candidates, context).candidates
        return tuple(CandidateScore(s.name, predicted_cost_usd=estimated_cost(s, request)) for s in candidates)

    def ladder(self, scores: Sequence[CandidateScore]) -> tuple[Attempt, ...]:
        """The rungs for these candidate scores."""
        return build_ladder(scores, max_attempts=self.max_attempts, adequate=self.adequate, order=self.order)

    def decide(self, request: RouteRequest, candidates: Sequence[ModelSpec], context: DecisionContext) -> Decision:
        scores = self._scores(request, candidates, context)
        ladder = self.ladder(scores)
        rungs = [a.model for a in ladder]
        rest = tuple(s.model for s in sorted(scores, key=lambda s: s.predicted_cost_usd or 0.0) if s.model not in rungs)
        checks = ", ".join(c.name for c in self.checks) or "none"
        return Decision(
            model=rungs[0], strategy=self.name, route=context.route, candidates=tuple(scores),
            fallbacks=(*rungs[1:], *rest), reason=f"cascade {' → '.join(rungs)} (checks: {checks})",
        )

    def start(self, decision: Decision, expect: Expectations) -> Generator[Attempt, Outcome, CascadeResult]:
        """The generator for a decision this strategy made (its ladder rebuilt from the decision's scores)."""
        return cascade(self.ladder(decision.candidates), self.checks, expect)
