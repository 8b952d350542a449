"""Choosing a deployment of a model: healthy, within its own limits, by the model's `balance` policy.

    lease = await balancer.acquire("gpt-4o", tokens=1_200)       # DeploymentLimitError if all are over limit
    try: ...send to lease.deployment...
    finally: lease.release()

Policies (`models.<name>.balance`), ties broken at random in proportion to `weight`:
- `weighted` (default): at random in proportion to `weight` (3 and 1: three requests in four);
- `least_busy`: fewest requests in flight from this process;
- `latency`: lowest live time to first token; unmeasured deployments, and those due a re-probe,
  first (so each is measured);
- `usage`: lowest share of its `rpm`/`tpm` used (a deployment without limits counts as unused).

Whatever the policy:
- a deployment whose circuit is open (cooling down) is passed over while another can take the
  request; when none can, they are tried anyway (a last resort, as models are);
- with the route's `max_ttft_ms`, deployments whose live TTFT is above it come after those below;
- deployments this request already tried come after those it has not;
- a deployment over its `rpm`/`tpm` is skipped; when every one is, `DeploymentLimitError` (the
  fallback chain moves on to the next model; a 429 with `retry-after` and `x-ratelimit-*` headers
  when no model is left).

For the decision core a model is unhealthy when every deployment is, and its live TTFT is its
fastest healthy deployment's (unmeasured while any healthy one is unmeasured or due a re-probe).
"""

from __future__ import annotations

import random
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from .._config import BalancePolicy
from .._exceptions import DeploymentLimitError
from .._urls import shown_url
from ..state import Admission, CircuitState, HealthStore, LocalRateLimiter, RateLimiter
from ._providers import Deployment

__all__ = ["Balancer", "DeploymentStatus", "Lease"]


@dataclass(frozen=True, slots=True)
class DeploymentStatus:
    """One deployment as /health and the dashboard show it (no key, no credentials in the endpoint)."""

    model: str
    id: str
    provider: str
    endpoint: str
    upstream_model: str
    weight: float
    policy: BalancePolicy
    state: CircuitState
    ttft_ms: float | None
    tokens_per_s: float | None
    in_flight: int
    rpm: int | None
    tpm: int | None
    usage: float


class Lease:
    """A deployment chosen for one call; `release()` when the call (or its stream) is over."""

    __slots__ = ("_balancer", "_held", "deployment")

    def __init__(self, balancer: Balancer, deployment: Deployment) -> None:
        self._balancer = balancer
        self.deployment = deployment
        self._held = True

    def release(self) -> None:
        """No longer in flight (idempotent)."""
        if self._held:
            self._held = False
            self._balancer._in_flight[self.deployment.id] -= 1


class Balancer:
    """Each model's deployments, and which one takes the next request."""

    def __init__(
        self, deployments: Mapping[str, Sequence[Deployment]], policies: Mapping[str, BalancePolicy], *,
        health: HealthStore, limiter: RateLimiter | None = None, rng: random.Random | None = None,
    ) -> None:
        self.deployments: dict[str, tuple[Deployment, ...]] = {m: tuple(ds) for m, ds in deployments.items()}
        self.policies = dict(policies)
        self.health = health
        self.limiter: RateLimiter = limiter or LocalRateLimiter()
        self._random = rng or random.Random()
        self._model_of = {d.id: m for m, ds in self.deployments.items() for d in ds}
        self._single = [(m, ds[0].id) for m, ds in self.deployments.items() if len(ds) == 1]
        self._several = [(m, ds) for m, ds in self.deployments.items() if len(ds) > 1]
        self._in_flight = dict.fromkeys(self._model_of, 0)

    # -- what the decision core sees -----------------------------------------------------------
    def unhealthy_models(self) -> frozenset[str]:
        """Models none of whose deployments should take traffic now."""
        sick = self.health.unhealthy()
        if not sick:
            return frozenset()
        models = {self._model_of[k] for k in sick if k in self._model_of}
        return frozenset(m for m in models if all(d.id in sick for d in self.deployments[m]))

    def live_ttft(self) -> dict[str, float]:
        """Each measured model's live TTFT: its fastest healthy deployment's (absent: unmeasured or re-probing)."""
        health = self.health
        measured = health.ttft_ms
        if not measured:
            return {}
        live = health.live_ttft
        result: dict[str, float] = {}
        for model, key in self._single:
            if key in measured and (mark := live(key)) is not None:
                result[model] = mark
        if self._several:
            sick = health.unhealthy()
            for model, deployments in self._several:
                usable = [d.id for d in deployments if d.id not in sick] or [d.id for d in deployments]
                marks = [live(key) if key in measured else None for key in usable]
                if None not in marks:
                    result[model] = min(mark for mark in marks if mark is not None)
        return result

    def available(self, model: str) -> bool:
        """Whether a deployment of the model may take a request now (claims nothing)."""
        sick = self.health.unhealthy()
        return not sick or any(d.id not in sick for d in self.deployments[model])

    def untried(self, model: str, tried: Collection[str]) -> bool:
        """Whether a deployment the request has not tried yet may take it now."""
        sick = self.health.unhealthy()
        return any(d.id not in tried and d.id not in sick for d in self.deployments[model])

    def any_closed(self, model: str) -> bool:
        """Whether some deployment of the model has a closed circuit (a retry may go there)."""
        return any(self.health.state(d.id) == "closed" for d in self.deployments[model])

    def model_state(self, model: str) -> CircuitState:
        """closed if any deployment is, else half_open if any is, else open."""
        states = {self.health.state(d.id) for d in self.deployments[model]}
        return "closed" if "closed" in states else "half_open" if "half_open" in states else "open"

    # -- choosing ------------------------------------------------------------------------------
    def _order(
        self, model: str, deployments: Sequence[Deployment], tried: Collection[str], max_ttft_ms: float | None
    ) -> list[Deployment]:
        policy, health, draw = self.policies.get(model, "weighted"), self.health, self._random.random

        def key(d: Deployment) -> tuple[bool, bool, float, float]:
            mark = health.live_ttft(d.id)
            slow = max_ttft_ms is not None and mark is not None and mark > max_ttft_ms
            if policy == "least_busy":
                score = float(self._in_flight[d.id])
            elif policy == "latency":
                score = -1.0 if mark is None else mark
            elif policy == "usage":
                score = self.limiter.usage(d.id, d.limit) if d.limit else 0.0
            else:
                score = 0.0
            # Efraimidis-Spirakis: sorting by -u^(1/w) is a random order weighted by w.
            return d.id in tried, slow, score, -(draw() ** (1.0 / d.weight))

        return sorted(deployments, key=key)

    async def acquire(
        self, model: str, *, tried: Collection[str] = (), tokens: int = 0, max_ttft_ms: float | None = None
    ) -> Lease:
        """Choose the deployment for the next call to `model`, taking its probe slot and its rate-limit share."""
        deployments = self.deployments[model]
        sick = self.health.unhealthy()
        ready: Sequence[Deployment] = [d for d in deployments if d.id not in sick] if sick else deployments
        if len(ready) > 1:
            ready = self._order(model, ready, tried, max_ttft_ms)
        refused: list[tuple[Deployment, Admission]] = []
        for deployment in ready:
            if not self.health.allow(deployment.id):  # its half-open probe went to another request
                continue
            if deployment.limit:
                admission = await self.limiter.admit(deployment.id, deployment.limit, tokens)
                if not admission.admitted:
                    self.health.abandon(deployment.id)
                    refused.append((deployment, admission))
                    continue
            return self._lease(deployment)
        if refused:
            raise _limit_error(model, refused)
        # Nothing healthy: the last resort is a deployment cooling down, in policy order.
        rest = [d for d in deployments if d.id in sick] or list(deployments)
        return self._lease(self._order(model, rest, tried, max_ttft_ms)[0] if len(rest) > 1 else rest[0])

    def _lease(self, deployment: Deployment) -> Lease:
        self.health.sent(deployment.id)
        self._in_flight[deployment.id] += 1
        return Lease(self, deployment)

    # -- reporting -----------------------------------------------------------------------------
    def status(self) -> list[DeploymentStatus]:
        """Every deployment with its circuit state, live latency, requests in flight and limit usage."""
        health = self.health
        return [
            DeploymentStatus(
                model=model, id=d.id, provider=d.provider.name, endpoint=shown_url(d.provider.base_url),
                upstream_model=d.wire_name, weight=d.weight, policy=self.policies.get(model, "weighted"),
                state=health.state(d.id), ttft_ms=health.ttft_ms.get(d.id), tokens_per_s=health.tokens_per_s.get(d.id),
                in_flight=self._in_flight[d.id], rpm=d.limit.rpm, tpm=d.limit.tpm,
                usage=self.limiter.usage(d.id, d.limit) if d.limit else 0.0,
            )
            for model, deployments in self.deployments.items() for d in deployments
        ]


def _limit_error(model: str, refused: Sequence[tuple[Deployment, Admission]]) -> DeploymentLimitError:
    """The error for a model whose every usable deployment is over its limit: the soonest to free up."""
    deployment, soonest = min(refused, key=lambda pair: pair[1].retry_after_s)
    names = ", ".join(d.id for d, _ in refused)
    return DeploymentLimitError(
        f"{model}: every deployment is at its own rate limit ({names}); retry in {soonest.retry_after_s:.2f}s",
        model=model, retry_after=soonest.retry_after_s, limits=soonest.limits(),
    )
