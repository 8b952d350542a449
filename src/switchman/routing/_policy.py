"""Policy filters that run before any strategy: allow/deny lists, capabilities, context window.

A strategy only ever sees candidates that can serve the request, so no strategy can pick a model
that lacks tools for a tool call or whose window the prompt overflows.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from .._catalog import ModelSpec
from .._exceptions import NoCapableModelError
from .._slots import slot_init
from ._request import RouteRequest

__all__ = ["DEFAULT_OUTPUT_TOKENS", "RESERVE_OUTPUT_TOKENS", "PolicyResult", "filter_candidates", "prefer_live",
           "worst_case_cost"]

#: Output tokens assumed when a request gives no max_tokens, for window checks and cost estimates.
DEFAULT_OUTPUT_TOKENS = 256
#: Output tokens a budget reserves for one answer when neither the request (max_tokens) nor the
#: model (`max_output_tokens`) bounds it. Set `max_output_tokens` on a model for an exact bound.
RESERVE_OUTPUT_TOKENS = 4096


@slot_init
@dataclass(frozen=True, slots=True)
class PolicyResult:
    """Candidates that may serve the request, and why the others may not."""

    eligible: tuple[ModelSpec, ...]
    excluded: tuple[tuple[str, str], ...]


def _exclusion(
    spec: ModelSpec, request: RouteRequest, needs: frozenset[str], allow: Collection[str] | None,
    deny: Collection[str], max_price_usd: float | None,
) -> str | None:
    if allow is not None and spec.name not in allow:
        return "not in the allow-list"
    if spec.name in deny:
        return "in the deny-list"
    missing = needs - spec.capabilities
    if missing:
        return "lacks " + ", ".join(sorted(missing))
    if spec.context_window is not None:
        needed = request.input_tokens + (request.max_tokens or 0)
        if needed > spec.context_window:
            return f"needs {needed} tokens, context window is {spec.context_window}"
    if max_price_usd is not None:
        # Priced as the caller could be billed: every input token plus max_tokens (or the default) out.
        cost = estimated_cost(spec, request)
        if cost > max_price_usd:
            return f"estimated ${cost:.6f} exceeds max_price_usd ${max_price_usd:g}"
    return None


def filter_candidates(
    request: RouteRequest,
    candidates: Sequence[ModelSpec],
    *,
    allow: Collection[str] | None = None,
    deny: Collection[str] = (),
    max_price_usd: float | None = None,
) -> PolicyResult:
    """Keep the candidates that may and can serve the request; raise when none is left.

    `max_price_usd` drops candidates whose estimated cost for this request exceeds it (an agent's
    or route's ceiling per request), so no strategy can pick a model the caller refuses to pay for.
    """
    eligible: list[ModelSpec] = []
    excluded: list[tuple[str, str]] = []
    needs = request.needs  # a property that builds a set: once, not once per candidate
    for spec in candidates:
        why = _exclusion(spec, request, needs, allow, deny, max_price_usd)
        if why is None:
            eligible.append(spec)
        else:
            excluded.append((spec.name, why))
    if not eligible:
        detail = "; ".join(f"{name}: {why}" for name, why in excluded) or "the route has no candidates"
        have = frozenset().union(*(spec.capabilities for spec in candidates))
        raise NoCapableModelError(f"no candidate can serve this request ({detail})", missing=request.needs - have)
    return PolicyResult(tuple(eligible), tuple(excluded))


def prefer_live(
    policy: PolicyResult,
    *,
    unhealthy: Collection[str] = (),
    ttft_ms: Mapping[str, float] | None = None,
    max_ttft_ms: float | None = None,
) -> tuple[PolicyResult, tuple[str, ...]]:
    """Set aside unhealthy candidates and those whose live TTFT exceeds `max_ttft_ms`, while another qualifies.

    Returns the narrowed result and the names set aside (slow ones, then unhealthy ones), which
    remain usable as last-resort fallbacks.
    """
    if (max_ttft_ms is None or not ttft_ms) and (not unhealthy or all(s.name not in unhealthy for s in policy.eligible)):
        return policy, ()  # nothing to set aside (the usual case): what the general path below returns
    healthy = [s for s in policy.eligible if s.name not in unhealthy] or list(policy.eligible)
    fast = healthy
    if max_ttft_ms is not None and ttft_ms:
        fast = [s for s in healthy if ttft_ms.get(s.name, 0.0) <= max_ttft_ms] or healthy
    fast_names = {s.name for s in fast}
    healthy_names = {s.name for s in healthy}
    slow = [s.name for s in healthy if s.name not in fast_names]  # by name: O(n), not O(n²) dataclass ==
    sick = [s.name for s in policy.eligible if s.name not in healthy_names]
    if not slow and not sick:
        return policy, ()
    why = [(n, f"live TTFT {ttft_ms[n]:.0f} ms > max_ttft_ms {max_ttft_ms:g}") for n in slow if ttft_ms]
    why += [(n, "circuit open (unhealthy)") for n in sick]
    return PolicyResult(tuple(fast), policy.excluded + tuple(why)), (*slow, *sick)


def estimated_cost(spec: ModelSpec, request: RouteRequest, output_tokens: float | None = None) -> float:
    """USD cost of the request on `spec`, with output tokens predicted or assumed."""
    out = output_tokens if output_tokens is not None else (request.max_tokens or DEFAULT_OUTPUT_TOKENS)
    return spec.cost(request.input_tokens, out)


def worst_case_cost(
    spec: ModelSpec, request: RouteRequest, choices: int = 1, *, input_tokens: int | None = None
) -> float:
    """USD the request can cost on `spec`: every input token plus the most output it allows, `choices` times.

    The most output is the request's max_tokens, capped by the model's `max_output_tokens`; with
    neither, RESERVE_OUTPUT_TOKENS. `input_tokens` overrides the request's own count with a safer
    bound (the gateway's: a quarter of the request's bytes when that is more). What a budget
    reserves, so concurrent requests cannot together pass a limit that only some of them fit.
    """
    # min(the limits given) and max(choices, 1), spelled out: the builtins parse their arguments (per request)
    out, cap = request.max_tokens, spec.max_output_tokens
    if out is None:
        out = RESERVE_OUTPUT_TOKENS if cap is None else cap
    elif cap is not None and cap < out:
        out = cap
    return spec.cost(request.input_tokens if input_tokens is None else input_tokens,
                     out * (1 if 1 > choices else choices))
