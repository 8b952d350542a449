"""Balancer: which deployment of a model takes the next request, by policy, health, limits and latency."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import anyio
import pytest
from clock_support import Clock

from switchman._config import parse_config
from switchman._config_server import CircuitBreaker
from switchman._exceptions import DeploymentLimitError
from switchman.gateway import Balancer, Lease
from switchman.gateway._providers import build_deployments
from switchman.state import HealthBoard, LocalRateLimiter


def balancer(clock: Clock, policy: str = "weighted", **first: Any) -> Balancer:
    """A model `m` on three endpoints (a: weight 2, b and c: weight 1), and a plain model `solo`."""
    providers = {name: {"base_url": f"https://{name}.example.com/v1"} for name in ("a", "b", "c")}
    config = parse_config({
        "providers": providers,
        "models": {
            "m": {"balance": policy, "input_price": 1, "output_price": 1, "deployments": [
                {"provider": "a", "weight": 2, **first}, {"provider": "b"}, {"provider": "c", "model": "m-c"}]},
            "solo": {"provider": "a", "input_price": 1, "output_price": 1},
        },
    })
    _, deployments = build_deployments(config, config.model_specs(), {})
    policies = {name: model.balance for name, model in config.models.items()}
    return Balancer(deployments, policies, health=HealthBoard(CircuitBreaker(failures=1, cooldown_s=10), clock=clock),
                    limiter=LocalRateLimiter(clock=clock), rng=random.Random(7))


def picks(b: Balancer, n: int, model: str = "m", **options: Any) -> list[str]:
    """The deployments `n` requests in a row go to (each released before the next)."""

    async def go() -> list[str]:
        chosen = []
        for _ in range(n):
            lease = await b.acquire(model, **options)
            lease.release()
            chosen.append(lease.deployment.id)
        return chosen

    return anyio.run(go)


def pick(b: Balancer, model: str = "m", **options: Any) -> str:
    return picks(b, 1, model, **options)[0]


def test_ids_and_wire_names(clock: Clock) -> None:
    b = balancer(clock)
    assert [(d.id, d.wire_name) for d in b.deployments["m"]] == [("m@a", "m"), ("m@b", "m"), ("m@c", "m-c")]
    assert [d.id for d in b.deployments["solo"]] == ["solo"]


def test_weighted_follows_the_weights(clock: Clock) -> None:
    b = balancer(clock)
    counts = Counter(picks(b, 4000))
    assert counts["m@a"] / 4000 == pytest.approx(0.5, abs=0.03)
    assert counts["m@b"] / 4000 == pytest.approx(0.25, abs=0.03)


def test_open_circuits_are_passed_over_then_a_last_resort(clock: Clock) -> None:
    b = balancer(clock)
    b.health.record("m@a", ok=False)
    b.health.record("m@b", ok=False)
    assert set(picks(b, 50)) == {"m@c"}
    assert b.available("m") and b.unhealthy_models() == frozenset()
    b.health.record("m@c", ok=False)
    assert not b.available("m") and b.unhealthy_models() == {"m"} and b.model_state("m") == "open"
    assert pick(b) in {"m@a", "m@b", "m@c"}  # nothing healthy: still tried
    clock.now += 10
    assert b.model_state("m") == "half_open"
    first = pick(b)  # the probe of one deployment; the others' probes are free too
    assert b.health.state(first) == "half_open"


def test_tried_deployments_come_last(clock: Clock) -> None:
    b = balancer(clock)
    assert set(picks(b, 30, tried=["m@a", "m@b"])) == {"m@c"}
    assert b.untried("m", ["m@a", "m@b"]) and not b.untried("m", ["m@a", "m@b", "m@c"])


def test_least_busy(clock: Clock) -> None:
    b = balancer(clock, "least_busy")

    async def hold(n: int) -> list[Lease]:
        return [await b.acquire("m") for _ in range(n)]

    leases = anyio.run(hold, 3)
    assert sorted(lease.deployment.id for lease in leases) == ["m@a", "m@b", "m@c"]  # one each
    leases[0].release()
    assert pick(b) == leases[0].deployment.id  # the one with nothing in flight
    assert {s.id: s.in_flight for s in b.status()}[leases[1].deployment.id] == 1


def test_latency_prefers_the_fastest_and_measures_the_unmeasured(clock: Clock) -> None:
    b = balancer(clock, "latency")
    b.health.observe("m@a", 50.0)
    b.health.observe("m@b", 20.0)
    assert pick(b) == "m@c"  # unmeasured first
    b.health.observe("m@c", 90.0)
    assert set(picks(b, 20)) == {"m@b"}
    assert b.live_ttft() == {"m": 20.0}


def test_a_stale_slow_mark_is_reprobed_by_one_request(clock: Clock) -> None:
    b = balancer(clock, "latency")
    for d, ms in (("m@a", 20.0), ("m@b", 30.0), ("m@c", 500.0)):
        b.health.observe(d, ms)
    clock.now += 5
    b.health.observe("m@a", 20.0)
    b.health.observe("m@b", 30.0)
    clock.now += 6  # c's mark is 11 s old: stale
    assert b.live_ttft() == {}  # the model reads as unmeasured until the re-probe goes out
    assert pick(b) == "m@c"  # the re-probe
    assert picks(b, 10) == ["m@a"] * 10  # the others see c's old slow mark again
    assert b.live_ttft() == {"m": 20.0}


def test_max_ttft_sets_slow_deployments_after_fast_ones(clock: Clock) -> None:
    b = balancer(clock)
    b.health.observe("m@a", 400.0)
    b.health.observe("m@b", 300.0)
    b.health.observe("m@c", 10.0)
    assert set(picks(b, 30, max_ttft_ms=100)) == {"m@c"}
    b.health.record("m@c", ok=False)
    assert pick(b, max_ttft_ms=100) in {"m@a", "m@b"}  # none qualifies: the policy decides among the rest


def test_usage_prefers_the_least_used_share_of_its_limits(clock: Clock) -> None:
    b = balancer(clock, "usage", rpm=10)
    # b and c have no limits (never "used"); a's rpm makes it the fuller one once it has taken a request.
    assert picks(b, 8).count("m@a") <= 1


def test_over_the_limit_is_skipped_and_then_refused(clock: Clock) -> None:
    b = balancer(clock, rpm=1, tpm=1000)
    b.health.record("m@b", ok=False)
    b.health.record("m@c", ok=False)
    assert pick(b, tokens=10) == "m@a"
    with pytest.raises(DeploymentLimitError) as refused:
        pick(b, tokens=10)
    error = refused.value
    assert error.retry_after == pytest.approx(60.0)
    assert error.limits["limit-requests"] == 1 and error.limits["remaining-tokens"] == 990
    clock.now += 60
    b.health.record("m@b", ok=False)  # their cooldowns are over: open them again
    b.health.record("m@c", ok=False)
    assert pick(b, tokens=10) == "m@a"
