"""Input PostgreSQL refuses (a NUL in a string) is the client's mistake: a 400 naming the field, never a 503
that tells the client to retry the same request forever, and the ledger keeps working afterwards."""

from __future__ import annotations

import httpx
from security_support import ASK, config_data, running_gateway

from switchman.testing import FakeUpstream


def test_feedback_with_a_nul_is_a_400_not_a_503(upstream: FakeUpstream, pg_url: str) -> None:
    with running_gateway(config_data(upstream, pg_url)) as (gateway, server), \
            httpx.Client(base_url=server.url, timeout=30) as http:
        answered = http.post("/v1/chat/completions", json={"model": "auto", "messages": ASK})
        assert answered.status_code == 200, answered.text
        assert gateway.ledger is not None
        gateway.ledger.flush_sync(timeout=10)  # the row written (and the fresh schema made)
        request_id = answered.headers["x-switchman-request-id"]
        for body, param in [({"request_id": "x\x00y", "score": 1}, "request_id"),
                            ({"request_id": "x\ty", "score": 1}, "request_id"),
                            ({"request_id": request_id, "score": 1, "comment": "wrong\x00total"}, "comment")]:
            response = http.post("/v1/feedback", json=body)
            assert response.status_code == 400, response.text
            assert response.json()["error"]["param"] == param and response.json()["error"]["code"] == "invalid_value"
        kept = http.post("/v1/feedback", json={"request_id": request_id, "thumbs": "up", "comment": "line one\nline two"})
        assert kept.status_code == 200, kept.text
