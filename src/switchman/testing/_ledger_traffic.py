"""Synthetic ledger traffic: plausible request records for dashboards, benchmarks and tests.

    for rec in synthetic_records(1_000_000, days=30, seed=0):
        ledger.record(rec)

Agents belong to routes and keys, pick models the way a cheapest/learned route would, fail now and
then, fall back, run sessions that escalate, and get a shadow decision on the learned route. Costs
and baselines come from the prices below (per 1M tokens), so the saving is what routing would give.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass

from ..ledger import LedgerRecord

__all__ = ["SYNTHETIC_PRICES", "SYNTHETIC_ROUTES", "synthetic_records"]

#: (input, output) USD per 1M tokens of the synthetic models.
SYNTHETIC_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.6), "gpt-4o": (2.5, 10.0), "claude-haiku": (0.8, 4.0), "claude-sonnet": (3.0, 15.0),
    "deepseek-chat": (0.27, 1.1), "llama-3.1-8b": (0.05, 0.08),
}
#: Route → (strategy, candidates cheapest first, share of traffic to each candidate).
SYNTHETIC_ROUTES: dict[str, tuple[str, tuple[str, ...], tuple[float, ...]]] = {
    "default": ("learned", ("llama-3.1-8b", "gpt-4o-mini", "deepseek-chat", "gpt-4o"), (0.25, 0.45, 0.15, 0.15)),
    "code": ("cheapest", ("deepseek-chat", "claude-sonnet"), (0.8, 0.2)),
    "support": ("rules", ("gpt-4o-mini", "claude-haiku"), (0.7, 0.3)),
}
_TASKS = ("chat", "classification", "extraction", "summarisation", "code", "reasoning", "tool_use")


@dataclass(frozen=True, slots=True)
class _Agent:
    name: str
    route: str
    key_id: str
    weight: float
    tokens_in: int


def _agents(count: int) -> list[_Agent]:
    base = [("triage", "support", 6.0, 600), ("coder", "code", 4.0, 3000), ("researcher", "default", 3.0, 4000),
            ("support-bot", "support", 5.0, 900), ("summarizer", "default", 2.0, 6000)]
    agents = [_Agent(n, r, f"key-{i:04x}{i:04x}", w, t) for i, (n, r, w, t) in enumerate(base)]
    routes = list(SYNTHETIC_ROUTES)
    for i in range(len(base), count):
        agents.append(_Agent(f"agent-{i:02d}", routes[i % len(routes)], f"key-{i:04x}{i:04x}", 0.5, 400 + 150 * i))
    return agents


def _cost(model: str, tin: int, tout: int) -> float:
    pin, pout = SYNTHETIC_PRICES[model]
    return (tin * pin + tout * pout) / 1e6


def synthetic_records(n: int, *, days: float = 30.0, seed: int = 0, now: float | None = None,
                      agents: int = 20) -> Iterator[LedgerRecord]:
    """`n` records spread over the last `days` (oldest first), reproducible from `seed`."""
    rng = random.Random(seed)
    end = time.time() if now is None else now
    start = end - days * 86_400
    cast = _agents(agents)
    weights = [a.weight for a in cast]
    for i in range(n):
        moment = start + (end - start) * (i + rng.random()) / n
        agent = rng.choices(cast, weights)[0]
        strategy, candidates, shares = SYNTHETIC_ROUTES[agent.route]
        model = rng.choices(candidates, shares)[0]
        tin = max(int(rng.lognormvariate(math.log(agent.tokens_in), 0.6)), 5)
        tout = max(int(rng.lognormvariate(math.log(250), 0.7)), 1)
        roll = rng.random()
        status = "ok" if roll > 0.03 else ("error" if roll > 0.01 else rng.choice(("rejected_budget", "bad_request",
                                                                                   "client_disconnected")))
        chain: tuple[str, ...] = (model,)
        if status == "ok" and rng.random() < 0.02:  # the first choice failed; the next candidate answered
            first = model
            model = candidates[min(candidates.index(model) + 1, len(candidates) - 1)]
            chain = (first, model) if first != model else chain
        answered = status == "ok"
        cost = _cost(model, tin, tout) if answered else 0.0
        baseline = _cost(candidates[-1], tin, tout) if answered else None
        learned = strategy == "learned"
        scores = tuple((m, round(0.55 + 0.1 * j + rng.random() * 0.05, 3) if learned else None,
                        round(_cost(m, tin, tout), 8)) for j, m in enumerate(candidates))
        session = f"{agent.name}-s{rng.randrange(max(n // 200, 1))}" if rng.random() < 0.6 else None
        escalated = session is not None and rng.random() < 0.015
        shadow = learned and answered and rng.random() < 0.5
        shadow_model = rng.choice(candidates[:2]) if shadow else None
        latency = rng.lognormvariate(math.log(400 + tout * 8), 0.45)
        yield LedgerRecord(
            time=moment, request_id=f"{seed:04x}{i:028x}", agent=agent.name, session=session, key_id=agent.key_id,
            route=agent.route, model=model if status not in ("bad_request",) else None,
            reason=f"{strategy}: {'escalated' if escalated else 'predicted within target'} → {model}",
            strategy="session" if escalated else strategy, candidates=candidates,
            input_tokens=tin if answered else 0, output_tokens=tout if answered else 0, cost_usd=cost,
            baseline_cost_usd=baseline, latency_ms=latency if status != "bad_request" else 1.0,
            ttft_ms=latency * 0.3 if rng.random() < 0.5 and answered else None, status=status,
            error=None if answered else f"synthetic {status}", fallback_chain=chain if status != "bad_request" else (),
            task=rng.choice(_TASKS), scores=scores, escalated=escalated,
            shadow_model=shadow_model, shadow_quality=0.6 if shadow else None,
            shadow_cost_usd=_cost(shadow_model, tin, tout) if shadow_model else None,
        )
