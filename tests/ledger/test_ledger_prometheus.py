"""Prometheus metrics: the expected series and values, a private registry, no keys in any label."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from ledger_support import samples, value
from prometheus_client import REGISTRY

from switchman.ledger import KeyStore, Ledger, LedgerRecord, Metrics


def test_series_and_values() -> None:
    metrics = Metrics()
    base = dict(route="default", input_tokens=100, output_tokens=20, latency_ms=250.0)
    metrics.observe_request(LedgerRecord(model="small", cost_usd=0.001, ttft_ms=40.0, **base))  # type: ignore[arg-type]
    metrics.observe_request(LedgerRecord(model="small", cost_usd=0.002, **base))  # type: ignore[arg-type]
    metrics.observe_request(LedgerRecord(model="large", status="error", latency_ms=3000.0, route="default"))
    metrics.observe_request(LedgerRecord(status="rejected_budget", agent="bot"))
    metrics.observe_decision(0.0003)
    metrics.observe_decision(0.002)
    metrics.observe_fallback("large", "small", "rate_limit")
    metrics.observe_budget_rejection("agent")
    metrics.observe_budget_rejection("agent")
    found = samples(metrics)

    assert value(found, "switchman_requests_total", model="small", route="default", status="ok") == 2
    assert value(found, "switchman_requests_total", model="large", route="default", status="error") == 1
    assert value(found, "switchman_requests_total", model="none", route="none", status="rejected_budget") == 1
    assert value(found, "switchman_input_tokens_total", model="small") == 200
    assert value(found, "switchman_output_tokens_total", model="small") == 40
    assert value(found, "switchman_cost_usd_total", model="small", route="default") == pytest.approx(0.003)
    assert value(found, "switchman_request_latency_seconds_count", model="small") == 2
    assert value(found, "switchman_request_latency_seconds_sum", model="small") == pytest.approx(0.5)
    assert value(found, "switchman_request_latency_seconds_bucket", model="large", le="2.5") == 0
    assert value(found, "switchman_request_latency_seconds_bucket", model="large", le="5.0") == 1
    assert value(found, "switchman_ttft_seconds_count", model="small") == 1
    assert value(found, "switchman_ttft_seconds_sum", model="small") == pytest.approx(0.04)
    assert value(found, "switchman_fallbacks_total", from_model="large", to_model="small", reason="rate_limit") == 1
    assert value(found, "switchman_budget_rejections_total", scope="agent") == 2
    assert value(found, "switchman_decision_seconds_count") == 2
    assert value(found, "switchman_decision_seconds_bucket", le="0.0005") == 1
    assert ("switchman_ttft_seconds_count", frozenset({("model", "large")})) not in found


def test_render_content_type_and_private_registry() -> None:
    first, second = Metrics(), Metrics()  # a global registry would refuse the second set of names
    first.observe_budget_rejection("route")
    body, content_type = second.render()
    assert content_type.startswith("text/plain") and "version=" in content_type
    assert b"switchman_budget_rejections_total{" not in body
    assert b'switchman_budget_rejections_total{scope="route"} 1.0' in first.render()[0]
    assert REGISTRY.get_sample_value("switchman_budget_rejections_total", {"scope": "route"}) is None


def test_no_key_secret_or_prompt_in_any_series(open_ledger: Callable[..., Ledger], sqlite_url: str) -> None:
    store = KeyStore(sqlite_url)
    info, secret = store.create("team-secret-name")
    store.close()
    metrics = Metrics()
    metrics.observe_request(
        LedgerRecord(
            key_id=info.id,
            agent="bot",
            session="sess-1",
            model="small",
            route="default",
            error=f"upstream said: bad key {secret}",
            tags=("prompt: tell me a secret",),
            cost_usd=0.01,
        )
    )
    metrics.observe_budget_rejection("key")
    body = metrics.render()[0].decode()
    for leaked in (secret, secret[len("sk-sw-") :], info.id, info.name, "tell me a secret", "sess-1"):
        assert leaked not in body
    assert 'model="small"' in body  # the record was counted


def test_ledger_counters_are_exposed(open_ledger: Callable[..., Ledger], sqlite_url: str) -> None:
    ledger = open_ledger(sqlite_url)
    metrics = Metrics(ledger=ledger)
    for _ in range(7):
        ledger.record(LedgerRecord())
    assert value(samples(metrics), "switchman_ledger_queued_rows") == 7
    ledger.close_sync()
    ledger.record(LedgerRecord())  # after close: dropped
    found = samples(metrics)
    assert value(found, "switchman_ledger_written_rows_total") == 7
    assert value(found, "switchman_ledger_dropped_rows_total") == 1
    assert value(found, "switchman_ledger_queued_rows") == 0
    assert value(found, "switchman_ledger_write_errors_total") == 0


def test_a_series_appears_with_its_first_non_zero_value_whatever_came_before() -> None:
    """Token, cost and latency series appear when a request first counts in them, not with the request's labels."""
    metrics = Metrics()
    failed = LedgerRecord(model="small", route="default", status="error", deployment="small", cache="miss")
    metrics.observe_request(failed)
    names = {name for name, _ in samples(metrics)}
    assert "switchman_input_tokens_total" not in names and "switchman_cost_usd_total" not in names
    assert "switchman_ttft_seconds_count" not in names
    assert value(samples(metrics), "switchman_request_latency_seconds_count", model="small") == 1
    metrics.observe_request(LedgerRecord(model="small", route="default", status="error", deployment="small",
                                         cache="miss", input_tokens=7, cost_usd=0.5, ttft_ms=30.0))
    found = samples(metrics)
    assert value(found, "switchman_input_tokens_total", model="small") == 7
    assert value(found, "switchman_cost_usd_total", model="small", route="default") == 0.5
    assert value(found, "switchman_ttft_seconds_count", model="small") == 1
    assert value(found, "switchman_requests_total", model="small", route="default", status="error") == 2
    assert value(found, "switchman_deployment_requests_total", deployment="small", status="error") == 2
    assert value(found, "switchman_cache_requests_total", result="miss") == 2
    assert ("switchman_output_tokens_total", frozenset({("model", "small")})) not in found
