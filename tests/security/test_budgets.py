"""Budgets under concurrency: worst-case reservations, fallbacks that must fit, streams stopped at the limit."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from security_support import ASK, config_data, running_gateway

from switchman._catalog import ModelSpec
from switchman.gateway import Gateway
from switchman.routing import RESERVE_OUTPUT_TOKENS, RouteRequest, worst_case_cost
from switchman.testing import FakeUpstream

ANSWER_WORDS = 1000  # the fake counts one token per word
BUDGET_USD = 0.01


def budgeted(upstream: FakeUpstream, ledger_url: str, **cheap: Any) -> dict[str, Any]:
    data = config_data(upstream, ledger_url)
    data["models"]["cheap"].update(cheap)
    data["budgets"] = [{"scope": "agent", "name": "spender", "usd": BUDGET_USD}]
    upstream.set_reply("cheap", " ".join(["word"] * ANSWER_WORDS))
    return data


async def fire(url: str, count: int, **fields: Any) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=count, max_keepalive_connections=count)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:
        return list(await asyncio.gather(*(
            http.post("/v1/chat/completions", json={"model": "auto", "messages": ASK, **fields},
                      headers={"x-switchman-agent": "spender"})
            for _ in range(count))))


def spent_by(gateway: Gateway, agent: str) -> float:
    assert gateway.ledger is not None
    gateway.ledger.flush_sync(timeout=10)
    return sum(r.cost_usd for r in gateway.ledger.records() if r.agent == agent)


def one_request_worst_case(gateway: Gateway, max_output_tokens: int = ANSWER_WORDS) -> float:
    """The most one request can cost: the input the upstream billed for it, and the most output it can get."""
    assert gateway.ledger is not None
    billed = max(r.input_tokens for r in gateway.ledger.records() if r.agent == "spender")
    return gateway.decider.models["cheap"].cost(billed, max_output_tokens)


def test_200_concurrent_requests_never_overspend_by_more_than_one_request(upstream: FakeUpstream,
                                                                         ledger_url: str) -> None:
    with running_gateway(budgeted(upstream, ledger_url, max_output_tokens=ANSWER_WORDS)) as (gateway, server):
        responses = asyncio.run(fire(server.url, 200))
        statuses = [r.status_code for r in responses]
        assert statuses.count(200) >= 1 and statuses.count(429) >= 150, statuses
        refused = next(r for r in responses if r.status_code == 429).json()["error"]
        assert refused["code"] == "budget_exceeded" and "spender" in refused["message"]
        spent = spent_by(gateway, "spender")
        assert spent <= BUDGET_USD + one_request_worst_case(gateway), spent
        assert spent >= BUDGET_USD * 0.5  # the budget was used, not refused wholesale
        assert gateway.budgets is not None
        [(_, _, reserved)] = gateway.budgets.usage()
        assert abs(reserved) < 1e-12  # every reservation settled (float sums leave dust)


def test_200_concurrent_streams_past_their_reservation_are_stopped_at_the_budget(upstream: FakeUpstream,
                                                                                ledger_url: str) -> None:
    # The model claims 50 output tokens at most and the upstream sends 1,000: only the running check holds.
    with running_gateway(budgeted(upstream, ledger_url, max_output_tokens=50)) as (gateway, server):
        responses = asyncio.run(fire(server.url, 200, stream=True))
        stopped = [r for r in responses if r.status_code == 200 and '"code":"budget_exceeded"' in r.text]
        assert stopped and all(r.text.rstrip().endswith("data: [DONE]") for r in stopped)
        spent = spent_by(gateway, "spender")
        assert spent <= BUDGET_USD + one_request_worst_case(gateway, max_output_tokens=50), spent
        assert gateway.ledger is not None
        rows = [r for r in gateway.ledger.records() if r.agent == "spender" and r.status == "stream_error"]
        assert rows and all("running cost passed" in (r.error or "") for r in rows)
        assert gateway.dispatcher.health.state("cheap") == "closed"  # a budget stop is not the upstream's fault


def test_a_fallback_that_the_budget_cannot_take_is_not_called(upstream: FakeUpstream, ledger_url: str) -> None:
    data = budgeted(upstream, ledger_url, max_output_tokens=ANSWER_WORDS)
    with running_gateway(data) as (gateway, server):
        upstream.inject("server_error", model="cheap", times=None)
        [response] = asyncio.run(fire(server.url, 1, max_tokens=2000))  # cheap's worst case fits, big's does not
        assert response.status_code == 429 and "moving to big" in response.json()["error"]["message"]
        assert upstream.requests_for("big") == [] and len(upstream.requests_for("cheap")) == 1


def test_the_worst_case_is_the_tightest_output_bound_times_n() -> None:
    spec = ModelSpec(name="m", provider="p", input_price=1.0, output_price=2.0, max_output_tokens=1000)
    request = RouteRequest(input_tokens=100, max_tokens=None)
    assert worst_case_cost(spec, request) == spec.cost(100, 1000)
    assert worst_case_cost(spec, RouteRequest(input_tokens=100, max_tokens=40), choices=3) == spec.cost(100, 120)
    assert worst_case_cost(spec, RouteRequest(input_tokens=100, max_tokens=5000)) == spec.cost(100, 1000)
    unbounded = ModelSpec(name="u", provider="p", input_price=1.0, output_price=2.0)
    assert worst_case_cost(unbounded, request, choices=2) == unbounded.cost(100, 2 * RESERVE_OUTPUT_TOKENS)
