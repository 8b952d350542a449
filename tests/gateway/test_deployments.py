"""Several deployments of one model behind a real gateway: weights, failover, per-deployment limits, live latency.

Two fake upstreams stand for two endpoints of the same models (say OpenAI and an Azure-style
OpenAI-compatible one). The health board and the rate limiter run on a clock the tests move.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from clock_support import Clock

from switchman._config import parse_config
from switchman._config_server import CircuitBreaker
from switchman.gateway import Gateway, build_app
from switchman.state import HealthBoard, LocalRateLimiter
from switchman.testing import FakeUpstream

from .conftest import ASK, CAPS, ServerThread, ledger_row

KEYS = {"EAST_KEY": "sk-east-0123456789abcdef", "WEST_KEY": "sk-west-fedcba9876543210"}


def lb_config(east: FakeUpstream, west: FakeUpstream, ledger_url: str) -> dict[str, Any]:
    def provider(upstream: FakeUpstream, key: str) -> dict[str, str]:
        return {"kind": "openai", "base_url": upstream.openai_base_url, "api_key_env": key}

    priced = {"input_price": 1.0, "output_price": 2.0, "capabilities": CAPS}
    return {
        "providers": {"east": provider(east, "EAST_KEY"), "west": provider(west, "WEST_KEY")},
        "models": {
            "gpt": {"deployments": [{"provider": "east", "weight": 3}, {"provider": "west", "weight": 1}], **priced},
            "capped": {"deployments": [{"name": "a", "provider": "east", "model": "capped-a", "rpm": 2},
                                       {"name": "b", "provider": "west", "model": "capped-b", "rpm": 1}], **priced},
            "metered": {"provider": "east", "tpm": 500, **priced},
            "spare": {"provider": "west", "input_price": 3.0, "output_price": 6.0, "capabilities": CAPS},
            "cheap": {"provider": "east", "input_price": 0.1, "output_price": 0.2, "capabilities": CAPS},
            "dear": {"provider": "west", "input_price": 5.0, "output_price": 10.0, "capabilities": CAPS},
        },
        "routes": {
            "default": {"candidates": ["gpt"], "strategy": "cheapest"},
            "capped": {"candidates": ["capped"], "strategy": "cheapest"},
            "capped_spare": {"candidates": ["capped", "spare"], "strategy": "cheapest"},
            "metered": {"candidates": ["metered"], "strategy": "cheapest"},
            "snappy": {"candidates": ["cheap", "dear"], "strategy": "cheapest", "max_ttft_ms": 30},
        },
        "server": {
            "ledger_url": ledger_url,
            "retries": {"attempts": 2, "backoff_s": 0.01, "max_backoff_s": 1.0},
            "circuit_breaker": {"failures": 3, "cooldown_s": 30.0},
            "timeouts": {"connect": 2.0, "first_byte": 5.0, "total": 20.0},
        },
    }


@dataclass
class Setup:
    gateway: Gateway
    url: str
    east: FakeUpstream
    west: FakeUpstream


@pytest.fixture(scope="module")
def lb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    ledger = f"sqlite:///{tmp_path_factory.mktemp('lb') / 'ledger.sqlite3'}"
    with FakeUpstream(api_keys={KEYS["EAST_KEY"]}) as east, FakeUpstream(api_keys={KEYS["WEST_KEY"]}) as west:
        gateway = Gateway.from_config(parse_config(lb_config(east, west, ledger)), env=KEYS)
        with ServerThread(build_app(gateway)) as url:
            yield Setup(gateway, url, east, west)


@pytest.fixture
def setup(lb: Setup, clock: Clock) -> Iterator[Setup]:
    """A clean slate per test: no faults, a fresh health board and rate limiter on the test's clock."""
    lb.east.clear()
    lb.west.clear()
    dispatcher = lb.gateway.dispatcher
    dispatcher.health = HealthBoard(CircuitBreaker(failures=3, cooldown_s=30.0), clock=clock)
    dispatcher.balancer.limiter = LocalRateLimiter(clock=clock)

    async def no_wait(seconds: float) -> None:
        pass

    dispatcher.sleep = no_wait
    yield lb


@pytest.fixture
def http(setup: Setup) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=setup.url, timeout=30) as client:
        yield client


def chat(http: httpx.Client, model: str = "auto", **fields: Any) -> httpx.Response:
    return http.post("/v1/chat/completions", json={"model": model, "messages": ASK, **fields})


def test_weights_3_to_1_share_2000_requests_within_5_points(setup: Setup) -> None:
    deployments: Counter[str] = Counter()

    async def worker(client: httpx.AsyncClient, count: int) -> None:
        for _ in range(count):
            response = await client.post("/v1/chat/completions", json={"model": "gpt", "messages": ASK})
            assert response.status_code == 200
            deployments[response.headers["x-switchman-deployment"]] += 1

    async def main() -> None:
        async with httpx.AsyncClient(base_url=setup.url, timeout=30) as client, anyio.create_task_group() as group:
            for _ in range(20):
                group.start_soon(worker, client, 100)

    anyio.run(main)
    assert sum(deployments.values()) == 2000
    # What each endpoint really received agrees with what the gateway said.
    assert (len(setup.east.requests), len(setup.west.requests)) == (deployments["gpt@east"], deployments["gpt@west"])
    assert 0.70 <= deployments["gpt@east"] / 2000 <= 0.80
    assert all(s.in_flight == 0 for s in setup.gateway.dispatcher.balancer.status())


def test_a_failing_deployment_cools_down_and_its_traffic_moves(setup: Setup, http: httpx.Client,
                                                              clock: Clock) -> None:
    setup.east.inject("server_error", times=None)
    responses = [chat(http, "gpt") for _ in range(40)]
    assert [r.status_code for r in responses] == [200] * 40  # no user-visible error
    assert {r.headers["x-switchman-deployment"] for r in responses} == {"gpt@west"}
    assert len(setup.east.requests) == 3  # three failures open its circuit; each was retried on west at once
    health = setup.gateway.dispatcher.health
    assert health.state("gpt@east") == "open" and health.state("gpt@west") == "closed"
    row = ledger_row(setup.gateway, responses[0].headers["x-switchman-request-id"])
    assert (row.model, row.deployment, row.status, row.fallback_chain) == ("gpt", "gpt@west", "ok", ("gpt",))
    # The model as a whole stays healthy, so routing never moves away from it.
    assert http.get("/health").json()["models"]["gpt"] == "closed"
    assert 'switchman_deployment_requests_total{deployment="gpt@west",status="ok"}' in http.get("/metrics").text
    # After the cooldown a probe goes to east; it answers, and east takes its share again.
    setup.east.clear()
    clock.now += 31
    # 100 draws at 3:1: east falls to half or less with a chance of ~1e-7 (40 draws: 3e-4, seen once in CI)
    served = Counter(chat(http, "gpt").headers["x-switchman-deployment"] for _ in range(100))
    assert health.state("gpt@east") == "closed" and served["gpt@east"] > served["gpt@west"], served


def test_a_stream_fails_over_to_another_deployment_before_its_first_byte(setup: Setup, http: httpx.Client) -> None:
    setup.east.inject("server_error", times=3)
    for _ in range(3):
        response = chat(http, "gpt", stream=True)
        assert response.status_code == 200 and response.text.endswith("data: [DONE]\n\n")
        assert response.headers["x-switchman-model"] == "gpt"
        row = ledger_row(setup.gateway, response.headers["x-switchman-request-id"])
        assert row.deployment == response.headers["x-switchman-deployment"] and row.status == "ok"
    assert all(s.in_flight == 0 for s in setup.gateway.dispatcher.balancer.status())


def test_deployments_over_their_rpm_are_skipped_then_429_with_openai_headers(setup: Setup, http: httpx.Client,
                                                                           clock: Clock) -> None:
    served = [chat(http, "auto:capped").headers["x-switchman-deployment"] for _ in range(3)]
    assert sorted(served) == ["capped@a", "capped@a", "capped@b"]  # a: rpm 2, b: rpm 1
    refused = chat(http, "auto:capped")
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    # The soonest to free up is a: one request every 30 s, its bucket full again in a minute.
    headers = refused.headers
    assert headers["retry-after"] == "30"
    assert (headers["x-ratelimit-limit-requests"], headers["x-ratelimit-remaining-requests"],
            headers["x-ratelimit-reset-requests"]) == ("2", "0", "1m0s")
    assert len(setup.east.requests) + len(setup.west.requests) == 3  # nothing was sent for the refused one
    row = ledger_row(setup.gateway, headers["x-switchman-request-id"])
    assert row.status == "error" and row.deployment is None and row.cost_usd == 0
    clock.now += 30
    again = chat(http, "auto:capped")
    assert again.status_code == 200 and again.headers["x-switchman-deployment"] == "capped@a"


def test_a_model_over_its_limits_falls_back_to_the_next_model(setup: Setup, http: httpx.Client) -> None:
    models = [chat(http, "auto:capped_spare").headers["x-switchman-model"] for _ in range(5)]
    assert models == ["capped", "capped", "capped", "spare", "spare"]


def test_tpm_counts_the_prompt_and_max_tokens(setup: Setup, http: httpx.Client) -> None:
    first = chat(http, "auto:metered", max_tokens=300)
    assert first.status_code == 200
    second = chat(http, "auto:metered", max_tokens=300)
    assert second.status_code == 429
    remaining = int(second.headers["x-ratelimit-remaining-tokens"])
    assert second.headers["x-ratelimit-limit-tokens"] == "500" and 150 < remaining < 200
    assert "x-ratelimit-limit-requests" not in second.headers  # no rpm on this deployment
    assert chat(http, "auto:metered", max_tokens=100).status_code == 200  # a smaller request still fits


def test_a_recovered_model_wins_its_traffic_back(setup: Setup, http: httpx.Client, clock: Clock) -> None:
    """The issue's scenario: a cheap model behind an 80 ms upstream, a dearer fast one, max_ttft_ms 30.

    The test's clock moves 0.2 s per request (traffic at 5 requests/s).
    """

    def run(requests: int) -> list[str]:
        served = []
        for _ in range(requests):
            served.append(chat(http, "auto:snappy").headers["x-switchman-model"])
            clock.now += 0.2
        return served

    # The premise: dear is fast (well within max_ttft_ms). Its first answer counts as it is, and on a loaded
    # machine that one can be slow (34 ms seen in a loop: a new connection's setup); were dear's mark over 30
    # ms too, nobody would qualify and the cheapest would win. So dear is measured until its mark says fast.
    health = setup.gateway.dispatcher.health
    for _ in range(20):
        if (health.live_ttft("dear") or math.inf) < 30:
            break
        assert chat(http, "dear").headers["x-switchman-model"] == "dear"
        clock.now += 0.2
    assert (health.live_ttft("dear") or math.inf) < 30, health.ttft_ms
    setup.east.inject("latency", model="cheap", times=None, seconds=0.08)
    assert run(1) == ["cheap"]  # unmeasured: the cheapest
    slow = run(60)  # 12 s while cheap stays slow: every request on dear, but one re-probe per 10 s
    assert slow.count("cheap") == 1 and slow[0] == "dear"
    setup.east.clear()  # cheap's upstream is fast again
    recovered = run(300)  # the next minute
    first = recovered.index("cheap")
    assert first <= 55  # re-probed within ~10 s of recovering
    assert recovered[-100:].count("cheap") >= 95  # and it has its traffic back
    setup.east.inject("latency", model="cheap", seconds=0.3)  # one slow answer, a provider's tail
    after_spike = run(20)
    assert after_spike.count("cheap") == 20  # a lone slow answer sets nothing aside (the median of three counts)


def test_health_lists_each_deployment(setup: Setup, http: httpx.Client) -> None:
    chat(http, "gpt")
    body = http.get("/health").json()
    assert set(body["deployments"]) >= {"gpt@east", "gpt@west", "capped@a", "capped@b", "metered", "cheap"}
    east = body["deployments"]["gpt@east"]
    assert (east["model"], east["provider"], east["state"], east["weight"]) == ("gpt", "east", "closed", 3.0)
    assert all(key not in str(body) for key in KEYS.values())


def test_the_readme_example_loads_as_written(tmp_path: Path) -> None:
    import yaml

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    match = re.search(r"<!-- config: deployments -->\n```yaml\n(.*?)```", readme, re.S)
    assert match is not None
    data = yaml.safe_load(match.group(1))
    data["server"] = {"ledger_url": f"sqlite:///{tmp_path / 'ledger.sqlite3'}"}
    gateway = Gateway.from_config(parse_config(data), env={})
    deployments = gateway.dispatcher.deployments
    assert [(d.id, d.provider.name, d.wire_name, d.weight, d.limit.rpm, d.cooldown_s, d.first_byte_s)
            for d in deployments["gpt-4o"]] == [
        ("gpt-4o@openai", "openai", "gpt-4o", 3.0, 500, None, 60.0),
        ("gpt-4o@azure-east", "azure-east", "gpt-4o-prod", 1.0, 100, 60.0, 60.0),
        ("gpt-4o@west-backup", "azure-west", "gpt-4o-prod", 1.0, None, None, 20.0),
    ]
    assert [(d.id, d.limit.rpm) for d in deployments["gpt-4o-mini"]] == [("gpt-4o-mini", 3000)]
    anyio.run(gateway.aclose)
