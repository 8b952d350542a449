"""POST /v1/embeddings with the real openai client: passed through to the named model, priced, in the ledger."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import openai
import pytest

from switchman._limits import ServerLimits
from switchman.ledger import LedgerRecord
from switchman.testing import FakeUpstream


def test_embeddings_pass_through(client: openai.OpenAI, upstream: FakeUpstream,
                                 ledger_record: Callable[[str], LedgerRecord]) -> None:
    raw = client.embeddings.with_raw_response.create(
        model="text-embedding-3-small", input=["one two three", "four"], extra_headers={"X-Switchman-Agent": "indexer"},
    )
    result = raw.parse()
    assert [len(item.embedding) for item in result.data] == [8, 8]  # base64 from the client, decoded by it
    assert sum(v * v for v in result.data[0].embedding) == pytest.approx(1.0, abs=1e-5)
    sent = upstream.requests_for("text-embedding-3-small")[-1]
    assert sent.path == "/v1/embeddings" and sent.body["input"] == ["one two three", "four"]
    assert sent.body["encoding_format"] == "base64"
    assert result.usage.prompt_tokens == 4
    cost = float(raw.headers["x-switchman-cost-usd"])
    assert cost == pytest.approx(4 * 0.02 / 1e6) and raw.headers["x-switchman-model"] == "text-embedding-3-small"
    record = ledger_record(raw.headers["x-switchman-request-id"])
    assert (record.api, record.model, record.agent, record.status) == \
        ("embeddings", "text-embedding-3-small", "indexer", "ok")
    assert (record.input_tokens, record.output_tokens, record.cost_usd) == (4, 0, pytest.approx(cost))
    floats = client.embeddings.create(model="text-embedding-3-small", input="hi", dimensions=4,
                                      encoding_format="float")
    assert len(floats.data[0].embedding) == 4


def test_embedding_errors(http: httpx.Client, upstream: FakeUpstream, sleeps: list[float],
                          ledger_record: Callable[[str], LedgerRecord]) -> None:
    for body, status, words in [
        ({"model": "text-embedding-3-small"}, 400, "'input'"),
        ({"model": "text-embedding-3-small", "input": [1.5]}, 400, "input must be"),
        ({"model": "text-embedding-3-small", "input": ""}, 400, "input must be"),
        ({"input": "x"}, 400, "'model'"),
        ({"model": "nope", "input": "x"}, 404, "unknown embedding model 'nope'"),
        ({"model": "claude", "input": "x"}, 400, "no embeddings endpoint"),
    ]:
        response = http.post("/v1/embeddings", json=body)
        assert response.status_code == status, response.text
        assert words in response.json()["error"]["message"]
        record = ledger_record(response.headers["x-switchman-request-id"])
        assert record.api == "embeddings" and record.status == "bad_request"
    upstream.inject("server_error", model="text-embedding-3-small", times=1)
    response = http.post("/v1/embeddings", json={"model": "text-embedding-3-small", "input": "x"})
    assert response.status_code == 200 and len(sleeps) == 1  # retried once, like any upstream call
    record = ledger_record(response.headers["x-switchman-request-id"])
    assert record.fallback_chain == ("text-embedding-3-small",) and record.status == "ok"


def test_a_large_bodys_refusal_decided_in_a_worker_thread_is_answered_and_recorded(
        http: httpx.Client, ledger_record: Callable[[str], LedgerRecord]) -> None:
    """Over OFFLOAD_BYTES the decision runs in a thread; its refusal is raised again on the loop, with one row."""
    from switchman.gateway._offload import OFFLOAD_BYTES

    texts = ["word " * 1000] * (OFFLOAD_BYTES // 5000 + 2)
    for model, status, words in [("nope", 404, "unknown embedding model 'nope'"),
                                 ("claude", 400, "no embeddings endpoint")]:
        response = http.post("/v1/embeddings", json={"model": model, "input": texts})
        assert len(response.request.content) > OFFLOAD_BYTES
        assert response.status_code == status, response.text
        assert words in response.json()["error"]["message"]
        record = ledger_record(response.headers["x-switchman-request-id"])
        assert (record.api, record.status) == ("embeddings", "bad_request")


def test_more_embedding_inputs_than_the_cap_are_a_400_and_at_the_cap_are_served(http: httpx.Client) -> None:
    """server.limits.max_embedding_inputs (2,048 by default, OpenAI's own limit), counted before validation."""
    cap = ServerLimits().max_embedding_inputs  # the session's gateway keeps the default
    over = http.post("/v1/embeddings", json={"model": "text-embedding-3-small", "input": ["a"] * (cap + 1)})
    assert over.status_code == 400, over.text
    assert over.json()["error"] == {
        "message": f"Invalid 'input': more than {cap} inputs, this gateway's limit (server.limits.max_embedding_inputs)",
        "type": "invalid_request_error", "param": "input", "code": "array_above_max_length"}
    inputs: list[tuple[object, int]] = [(["a"] * cap, cap), ([[1, 2]] * cap, cap),
                                        (list(range(5000)), 1)]  # the last: one token array, one input
    for value, embedded in inputs:
        served = http.post("/v1/embeddings", json={"model": "text-embedding-3-small", "input": value})
        assert served.status_code == 200, served.text[:300]
        assert len(served.json()["data"]) == embedded


def test_the_real_openai_client_sees_too_many_embedding_inputs(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.embeddings.create(model="text-embedding-3-small", input=[[7]] * 2049)
    assert raised.value.code == "array_above_max_length" and raised.value.param == "input"
