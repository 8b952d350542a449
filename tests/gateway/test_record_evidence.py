"""What a request's ledger row keeps for the dashboard: the decision's evidence and its baseline cost."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from switchman._config import parse_config
from switchman._exceptions import ConfigError
from switchman.gateway import Gateway, build_app
from switchman.ledger import LedgerRecord
from switchman.testing import FakeUpstream

from .conftest import ASK, ENV, TOOLS, config_data


def test_the_row_keeps_candidates_scores_exclusions_and_task(
    http: httpx.Client, ledger_record: Callable[[str], LedgerRecord]
) -> None:
    big = [{"role": "user", "content": "word " * 9000}]  # too long for cheap and mid (8k windows)
    response = http.post("/v1/chat/completions", json={"model": "auto", "messages": big, "tools": TOOLS},
                         headers={"x-switchman-task": "extraction"})
    assert response.status_code == 200
    record = ledger_record(response.headers["x-switchman-request-id"])
    assert record.model == "big" and record.task == "extraction"
    assert {m for m, _, _ in record.scores} == {"big"}
    assert all(cost is not None and cost > 0 for _, _, cost in record.scores)
    assert {m for m, _ in record.excluded} == {"cheap", "mid"}
    assert all("context" in why for _, why in record.excluded)
    assert record.escalated is False


def test_baseline_is_the_dearest_candidate_or_the_configured_model(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    data = config_data(upstream, f"sqlite:///{tmp_path / 'ledger.sqlite3'}")
    data["routes"]["strict"]["baseline"] = "big"  # outside the candidates: allowed, it is only a yardstick
    gateway = Gateway.from_config(parse_config(data), env=ENV)
    with TestClient(build_app(gateway)) as client:
        ids = [client.post("/v1/chat/completions", json={"model": m, "messages": ASK}).headers[
            "x-switchman-request-id"] for m in ("auto", "auto:strict")]
        assert gateway.ledger is not None and gateway.ledger.flush_sync(timeout=10)
        default, strict = (gateway.ledger.find(i) for i in ids)
    specs = gateway.decider.models
    for record, baseline in ((default, "big"), (strict, "big")):
        assert record is not None and record.model == "cheap"
        expected = specs[baseline].cost(record.input_tokens, record.output_tokens)
        assert record.baseline_cost_usd == pytest.approx(expected)
        assert record.baseline_cost_usd > record.cost_usd > 0
    # Without the configured baseline the strict route's dearest candidate is mid.
    assert strict is not None and specs["mid"].cost(strict.input_tokens, strict.output_tokens) < \
        (strict.baseline_cost_usd or 0)


def test_an_unknown_baseline_is_a_config_error(upstream: FakeUpstream, tmp_path: Path) -> None:
    data = config_data(upstream, f"sqlite:///{tmp_path / 'ledger.sqlite3'}")
    data["routes"]["strict"]["baseline"] = "gpt-99"
    with pytest.raises(ConfigError, match=r"routes\.strict\.baseline: unknown model 'gpt-99'"):
        parse_config(data)


def test_an_escalated_session_turn_is_marked(http: httpx.Client, ledger_record: Callable[[str], LedgerRecord]) -> None:
    ids = []
    for escalate in ("0", "1"):
        response = http.post("/v1/chat/completions", json={"model": "auto", "messages": ASK},
                             headers={"x-switchman-session": "evidence-esc", "x-switchman-escalate": escalate})
        assert response.status_code == 200
        ids.append(response.headers["x-switchman-request-id"])
    first, second = (ledger_record(i) for i in ids)
    assert (first.model, first.escalated) == ("cheap", False)
    assert second.escalated is True and second.model != "cheap"
    assert second.reason is not None and second.reason.startswith("session escalated")
