"""Input PostgreSQL refuses (a NUL in a string) is the client's mistake: a 400 naming the field, never a 503
that tells the client to retry the same request forever, and the ledger keeps working afterwards."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from security_support import ASK, config_data, running_gateway

from switchman.testing import FakeUpstream


@pytest.fixture
def http(upstream: FakeUpstream, pg_url: str) -> Iterator[httpx.Client]:
    with running_gateway(config_data(upstream, pg_url)) as (_, server), \
            httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


def test_feedback_with_a_nul_is_a_400_not_a_503(http: httpx.Client) -> None:
    answered = http.post("/v1/chat/completions", json={"model": "auto", "messages": ASK})
    request_id = answered.headers["x-switchman-request-id"]
    for body, param in [({"request_id": "x\x00y", "score": 1}, "request_id"),
                        ({"request_id": "x\ty", "score": 1}, "request_id"),
                        ({"request_id": request_id, "score": 1, "comment": "wrong\x00total"}, "comment")]:
        response = http.post("/v1/feedback", json=body)
        assert response.status_code == 400, response.text
        assert response.json()["error"]["param"] == param and response.json()["error"]["code"] == "invalid_value"
    kept = http.post("/v1/feedback", json={"request_id": request_id, "thumbs": "up", "comment": "line one\nline two"})
    assert kept.status_code == 200, kept.text
