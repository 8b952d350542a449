"""Edges of the inbound surfaces the other hostile-client tests leave: the server's own limits on every endpoint
(count_tokens included), refusals made below the app in the Anthropic envelope on /v1/messages, and compressed bodies
refused by name instead of read as broken JSON."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from security_support import ServerThread, config_data, running_gateway

from switchman.testing import FakeUpstream


@pytest.fixture(scope="module")
def tight(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerThread, httpx.Client]]:
    """A gateway with small prompt and nesting limits."""
    url = f"sqlite:///{tmp_path_factory.mktemp('edges') / 'ledger.sqlite3'}"
    data = config_data(upstream, url, limits={"max_prompt_chars": 1000, "max_json_depth": 8})
    with running_gateway(data) as (_, server), httpx.Client(base_url=server.url, timeout=30) as client:
        yield server, client


def _anthropic_error(response: httpx.Response, status: int, kind: str) -> str:
    assert response.status_code == status, response.text
    data = response.json()
    assert data["type"] == "error" and data["error"]["type"] == kind, data
    return str(data["error"]["message"])


def _deep(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(levels - 1):
        value = {"k": value}
    return value


@pytest.mark.parametrize("path", ["/v1/messages/count_tokens", "/v1/messages"])
def test_count_tokens_keeps_the_servers_prompt_and_nesting_limits(tight: tuple[ServerThread, httpx.Client],
                                                                   path: str) -> None:
    _, http = tight
    turn = [{"role": "user", "content": "x" * 1001}]
    too_long = http.post(path, json={"model": "auto", "max_tokens": 5, "messages": turn})
    assert "limit of 1000" in _anthropic_error(too_long, 413, "request_too_large")
    body = {"model": "auto", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}], "metadata": _deep(8)}
    too_deep = http.post(path, json=body)
    assert "deeper than 8 levels" in _anthropic_error(too_deep, 400, "invalid_request_error")
    body["metadata"] = _deep(6)
    assert http.post(path, json=body).status_code == 200
