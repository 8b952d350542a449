"""Faults injected by the fake upstream, and what the gateway does about each."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import orjson
import pytest
from clock_support import Clock

from switchman._config import parse_config
from switchman.gateway import Gateway, build_app
from switchman.ledger import LedgerRecord
from switchman.testing import FakeUpstream

from .conftest import ASK, ENV, ServerThread, config_data


def chat(http: httpx.Client, model: str = "auto", **fields: object) -> httpx.Response:
    return http.post("/v1/chat/completions", json={"model": model, "messages": ASK, **fields})


def models_called(upstream: FakeUpstream) -> list[str | None]:
    return [r.model for r in upstream.requests]


def sse(response: httpx.Response) -> list[object]:
    events = [line.removeprefix("data: ") for line in response.text.split("\n\n") if line.startswith("data: ")]
    return [e if e == "[DONE]" else orjson.loads(e) for e in events]


def test_rate_limit_is_retried_after_retry_after(http: httpx.Client, upstream: FakeUpstream,
                                                 sleeps: list[float]) -> None:
    upstream.inject("rate_limit", model="cheap", times=1, retry_after=0.25)
    response = chat(http)
    assert response.status_code == 200 and response.headers["x-switchman-model"] == "cheap"
    assert models_called(upstream) == ["cheap", "cheap"]
    assert sleeps == [0.25]


def test_retry_after_beyond_the_cap_moves_to_the_next_model(http: httpx.Client, upstream: FakeUpstream,
                                                            sleeps: list[float],
                                                            ledger_record: Callable[[str], LedgerRecord]) -> None:
    upstream.inject("rate_limit", model="cheap", times=1, retry_after=30)
    response = chat(http)
    assert response.headers["x-switchman-model"] == "mid"
    assert models_called(upstream) == ["cheap", "mid"] and sleeps == []
    record = ledger_record(response.headers["x-switchman-request-id"])
    assert record.fallback_chain == ("cheap", "mid") and record.model == "mid" and record.status == "ok"


def test_retry_after_is_really_waited(gateway: Gateway, http: httpx.Client, upstream: FakeUpstream) -> None:
    import anyio

    waited: list[float] = []

    async def really_sleep(seconds: float) -> None:
        waited.append(seconds)
        await anyio.sleep(seconds)

    gateway.dispatcher.sleep = really_sleep
    upstream.inject("rate_limit", model="cheap", times=1, retry_after=0.2)
    assert chat(http).status_code == 200
    assert len(upstream.requests_for("cheap")) == 2
    # The dispatcher asked for (and got) at least the upstream's Retry-After before the retry.
    # Judged from the gateway side: the fake upstream's arrival stamps are taken when its handler
    # runs, which a loaded machine can delay for the first request more than for the second.
    assert waited and waited[0] >= 0.2


def test_server_errors_retry_with_backoff_then_fall_back(http: httpx.Client, upstream: FakeUpstream,
                                                         sleeps: list[float]) -> None:
    upstream.inject("server_error", model="cheap", times=None)
    response = chat(http)
    assert response.status_code == 200 and response.headers["x-switchman-model"] == "mid"
    assert models_called(upstream) == ["cheap", "cheap", "cheap", "mid"]  # 1 try + 2 retries
    assert sleeps == [0.01, 0.02]


def test_connection_reset_is_retried(http: httpx.Client, upstream: FakeUpstream) -> None:
    upstream.inject("reset", model="cheap", times=1)
    response = chat(http)
    assert response.status_code == 200 and response.headers["x-switchman-model"] == "cheap"
    assert models_called(upstream) == ["cheap", "cheap"]


def test_first_byte_timeout_is_retried_then_falls_back(http: httpx.Client, upstream: FakeUpstream,
                                                       ledger_record: Callable[[str], LedgerRecord]) -> None:
    upstream.inject("timeout", model="slow", times=None, seconds=3)
    response = chat(http, "auto:slowroute")
    assert response.status_code == 200 and response.headers["x-switchman-model"] == "big"
    assert models_called(upstream) == ["slow", "slow", "slow", "big"]
    record = ledger_record(response.headers["x-switchman-request-id"])
    assert record.fallback_chain == ("slow", "big")


def test_every_candidate_failing_returns_the_last_error(http: httpx.Client, upstream: FakeUpstream,
                                                        ledger_record: Callable[[str], LedgerRecord]) -> None:
    upstream.inject("rate_limit", times=None, retry_after=60)
    response = chat(http, "auto:strict")
    assert response.status_code == 429
    assert response.headers["retry-after"] == "60"
    error = response.json()["error"]
    assert error["type"] == "rate_limit_error" and error["code"] == "rate_limit_exceeded"
    assert models_called(upstream) == ["cheap", "mid"]
    record = ledger_record(response.headers["x-switchman-request-id"])
    assert record.status == "error" and record.fallback_chain == ("cheap", "mid") and record.cost_usd == 0


def test_context_length_error_moves_to_a_larger_window(http: httpx.Client, upstream: FakeUpstream) -> None:
    upstream.inject("context_length", model="cheap", times=1)
    response = chat(http)
    # mid has the same 8k window as cheap, so it is skipped for big (128k)
    assert response.status_code == 200 and response.headers["x-switchman-model"] == "big"
    assert models_called(upstream) == ["cheap", "big"]


def test_context_length_error_with_no_larger_window_is_a_400(http: httpx.Client, upstream: FakeUpstream) -> None:
    upstream.inject("context_length", model="cheap", times=1)
    response = chat(http, "auto:strict")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "context_length_exceeded"
    assert models_called(upstream) == ["cheap"]


def test_content_policy_moves_to_the_configured_fallback(http: httpx.Client, upstream: FakeUpstream) -> None:
    upstream.inject("content_policy", model="cheap", times=1)
    response = chat(http)
    assert response.status_code == 200 and response.headers["x-switchman-model"] == "safe"
    assert models_called(upstream) == ["cheap", "safe"]


def test_content_policy_without_fallback_is_a_400(http: httpx.Client, upstream: FakeUpstream,
                                                  ledger_record: Callable[[str], LedgerRecord]) -> None:
    upstream.inject("content_policy", model="cheap", times=1)
    response = chat(http, "auto:strict")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "content_policy_violation"
    assert ledger_record(response.headers["x-switchman-request-id"]).status == "bad_request"


def test_upstream_bad_request_is_not_retried(http: httpx.Client, upstream: FakeUpstream) -> None:
    upstream.inject("bad_request", model="cheap", times=1)
    response = chat(http)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "upstream_bad_request"
    assert models_called(upstream) == ["cheap"]


def test_circuit_opens_then_probes(gateway: Gateway, http: httpx.Client, upstream: FakeUpstream,
                                   clock: Clock) -> None:
    upstream.inject("server_error", model="cheap", times=None)
    assert chat(http).headers["x-switchman-model"] == "mid"
    assert gateway.dispatcher.health.state("cheap") == "open"
    assert models_called(upstream).count("cheap") == 3
    # open: the decision skips cheap entirely
    upstream.clear()
    upstream.inject("server_error", model="cheap", times=None)
    assert chat(http).headers["x-switchman-model"] == "mid"
    assert models_called(upstream) == ["mid"]
    # after the cooldown one probe goes to cheap; it fails, so the circuit opens again at once
    clock.now += 31
    upstream.clear()
    upstream.inject("server_error", model="cheap", times=None)
    assert chat(http).headers["x-switchman-model"] == "mid"
    assert models_called(upstream) == ["cheap", "mid"]
    assert gateway.dispatcher.health.state("cheap") == "open"
    # the next probe succeeds and closes it
    clock.now += 31
    upstream.clear()
    assert chat(http).headers["x-switchman-model"] == "cheap"
    assert gateway.dispatcher.health.state("cheap") == "closed"


def test_open_circuit_is_still_tried_when_nothing_else_is_left(gateway: Gateway, http: httpx.Client,
                                                                upstream: FakeUpstream) -> None:
    for _ in range(3):
        gateway.dispatcher.health.record("claude", ok=False)
    assert gateway.dispatcher.health.state("claude") == "open"
    response = chat(http, "auto:claude")
    assert response.status_code == 200 and response.headers["x-switchman-model"] == "claude"


def test_stream_falls_back_before_the_first_byte(http: httpx.Client, upstream: FakeUpstream) -> None:
    upstream.inject("server_error", model="cheap", times=None)
    response = chat(http, stream=True)
    assert response.status_code == 200 and response.headers["x-switchman-model"] == "mid"
    events = sse(response)
    assert events[-1] == "[DONE]"
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events[:-1])  # type: ignore[index]
    assert text == "Hello from mid."


def test_stream_drop_before_the_first_event_falls_back(http: httpx.Client, upstream: FakeUpstream) -> None:
    upstream.inject("drop_mid_stream", model="cheap", times=1, after_events=0)
    response = chat(http, stream=True)
    assert response.headers["x-switchman-model"] == "cheap"  # retried on the same model
    assert models_called(upstream) == ["cheap", "cheap"]


def test_mid_stream_drop_ends_with_an_error_event(http: httpx.Client, upstream: FakeUpstream,
                                                  ledger_record: Callable[[str], LedgerRecord]) -> None:
    upstream.inject("drop_mid_stream", model="cheap", times=1, after_events=2)
    response = chat(http, stream=True)
    events = sse(response)
    assert events[-1] == "[DONE]"
    error = events[-2]["error"]  # type: ignore[index]
    assert error["code"] == "upstream_connection_error" and error["type"] == "api_error"
    assert [e["choices"][0]["delta"] for e in events[:2]] == [  # type: ignore[index]
        {"role": "assistant", "content": ""}, {"content": "Hello"}]
    assert models_called(upstream) == ["cheap"]  # no fallback once bytes reached the client
    record = ledger_record(response.headers["x-switchman-request-id"])
    assert record.status == "stream_error" and "connection" in (record.error or "")
    assert record.tokens_estimated


def test_anthropic_mid_stream_error_event(http: httpx.Client, upstream: FakeUpstream) -> None:
    upstream.inject("drop_mid_stream", model="claude-test", times=1, after_events=3)
    events = sse(chat(http, "auto:claude", stream=True))
    assert events[-1] == "[DONE]" and "error" in events[-2]  # type: ignore[operator]


def test_live_ttft_over_max_is_set_aside(gateway: Gateway, http: httpx.Client) -> None:
    board = gateway.dispatcher.health
    assert chat(http, "auto:fast").headers["x-switchman-model"] == "cheap"
    assert "cheap" in board.ttft_ms  # measured live
    board.ttft_ms["cheap"] = 2000.0
    response = chat(http, "auto:fast")
    assert response.headers["x-switchman-model"] == "mid"
    decision = http.post("/v1/route", json={"model": "auto:fast", "messages": ASK}).json()
    assert decision["model"] == "mid" and decision["fallbacks"] == ["cheap"]
    assert {"model": "cheap", "why": "live TTFT 2000 ms > max_ttft_ms 500"} in decision["excluded"]
    board.observe("mid", 3000.0)  # a lone slow answer is not a slow mark (the lower of two counts)
    assert chat(http, "auto:fast").headers["x-switchman-model"] == "mid"
    board.observe("mid", 3000.0)  # slow twice of three: nobody qualifies, the cheapest wins again
    assert chat(http, "auto:fast").headers["x-switchman-model"] == "cheap"


def test_budget_rejects_with_429_and_never_overshoots(gateway: Gateway, server: str,
                                                      ledger_record: Callable[[str], LedgerRecord]) -> None:
    import anyio

    statuses: list[int] = []
    ids: list[str] = []

    async def one(client: httpx.AsyncClient) -> None:
        response = await client.post("/v1/chat/completions", headers={"x-switchman-agent": "frugal"},
                                     json={"model": "auto:budgeted", "messages": ASK, "max_tokens": 200})
        statuses.append(response.status_code)
        ids.append(response.headers["x-switchman-request-id"])
        if response.status_code == 429:
            assert response.json()["error"]["code"] == "budget_exceeded"

    async def main() -> None:
        async with httpx.AsyncClient(base_url=server) as client, anyio.create_task_group() as group:
            for _ in range(30):
                group.start_soon(one, client)

    anyio.run(main)
    records = [ledger_record(i) for i in ids]
    accepted = [r for r in records if r.status == "ok"]
    assert statuses.count(429) == len([r for r in records if r.status == "rejected_budget"]) > 0
    assert accepted and sum(r.cost_usd for r in accepted) <= 0.002


def test_budget_downgrade_sends_to_the_cheaper_model(http: httpx.Client, upstream: FakeUpstream,
                                                    ledger_record: Callable[[str], LedgerRecord]) -> None:
    response = http.post("/v1/chat/completions", headers={"x-switchman-agent": "thrifty"},
                         json={"model": "auto:budgeted", "messages": ASK})
    assert response.status_code == 200 and response.headers["x-switchman-model"] == "cheap"
    assert response.headers["x-switchman-route-reason"] == "budget downgrade from mid"
    assert models_called(upstream) == ["cheap"]
    record = ledger_record(response.headers["x-switchman-request-id"])
    assert (record.model, record.strategy, record.agent) == ("cheap", "budget", "thrifty")


def test_budget_rejection_is_counted_in_metrics(http: httpx.Client) -> None:
    for _ in range(20):
        if http.post("/v1/chat/completions", headers={"x-switchman-agent": "frugal"},
                     json={"model": "auto:budgeted", "messages": ASK, "max_tokens": 200}).status_code == 429:
            break
    assert 'switchman_budget_rejections_total{scope="agent"}' in http.get("/metrics").text


@pytest.mark.parametrize("stream", [False, True])
def test_an_unexpected_error_still_writes_the_row_and_frees_the_reservation(
    stream: bool, gateway: Gateway, http: httpx.Client, monkeypatch: pytest.MonkeyPatch,
    ledger_record: Callable[[str], LedgerRecord],
) -> None:
    """A bug (not a SwitchmanError) after the budget reservation: 500, one ledger row, nothing left reserved."""

    async def broken(*args: object, **kwargs: object) -> object:
        raise RuntimeError("simulated bug in the dispatcher")

    monkeypatch.setattr(gateway.dispatcher, "_attempts", broken)
    response = http.post("/v1/chat/completions", headers={"x-switchman-agent": "frugal"},
                         json={"model": "auto:budgeted", "messages": ASK, "max_tokens": 200, "stream": stream})
    assert response.status_code == 500
    assert "Traceback" not in response.text and "simulated bug" not in response.text
    record = ledger_record(response.headers["x-switchman-request-id"])
    assert record.status == "error"
    frugal = [(spent, reserved) for budget, spent, reserved in gateway.budgets.usage() if budget.name == "frugal"]
    assert frugal and all(reserved == 0 for _, reserved in frugal)


def test_a_stream_past_the_models_total_time_ends_with_a_timeout_event(upstream: FakeUpstream, ledger_url: str) -> None:
    data = config_data(upstream, ledger_url)
    data["models"]["slow"]["timeouts"] = {"connect": 1.0, "first_byte": 0.5, "total": 0.6}
    gateway = Gateway.from_config(parse_config(data), env=ENV)
    upstream.inject("slow_stream", model="slow", times=1, seconds=0.25)  # ~6 events, one every 0.25 s
    with ServerThread(build_app(gateway)) as url, httpx.Client(base_url=url, timeout=30) as http:
        response = chat(http, model="slow", stream=True)
    events = sse(response)
    assert events[-1] == "[DONE]"
    assert events[-2]["error"]["code"] == "upstream_timeout"  # type: ignore[index]
    assert 1 <= len(events) - 2 < 6  # some of the answer was relayed, not all of it
