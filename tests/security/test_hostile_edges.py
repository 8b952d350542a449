"""Edges of the inbound surfaces the other hostile-client tests leave: the server's own limits on every endpoint
(count_tokens included), refusals made below the app in the Anthropic envelope on /v1/messages, and compressed bodies
refused by name instead of read as broken JSON."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from security_support import answer_to, answers_to, config_data, post_head, running_gateway
from server_support import LoopbackServer

from switchman.testing import FakeUpstream


@pytest.fixture(scope="module")
def tight(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LoopbackServer, httpx.Client]]:
    """A gateway with small prompt and nesting limits."""
    url = f"sqlite:///{tmp_path_factory.mktemp('edges') / 'ledger.sqlite3'}"
    data = config_data(upstream, url, limits={"max_prompt_chars": 1000, "max_json_depth": 8, "max_header_bytes": 2048,
                                              "body_timeout_s": 0.5})
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
def test_count_tokens_keeps_the_servers_prompt_and_nesting_limits(tight: tuple[LoopbackServer, httpx.Client],
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


#: Requests the HTTP server refuses before the app sees them: (name, the bytes in pieces, status, Anthropic type).
_BELOW_THE_APP = {
    "a control character in a header": ([b"x-switchman-agent: a\x01b", b"content-length: 2"], [b"{}"], 400,
                                        "invalid_request_error"),
    "Transfer-Encoding with Content-Length": ([b"transfer-encoding: chunked", b"content-length: 2"], [b"{}"], 400,
                                              "invalid_request_error"),
    "a bad chunk size": ([b"transfer-encoding: chunked"], [b"zz\r\n"], 400, "invalid_request_error"),
    "a head over the cap in one piece": ([b"x-pad: " + b"p" * 3000, b"content-length: 2"], [b"{}"], 431,
                                         "request_too_large"),
    "a body that stops halfway": ([b"content-length: 100"], [b'{"model"'], 408, "invalid_request_error"),
}


@pytest.mark.parametrize("case", list(_BELOW_THE_APP))
def test_refusals_below_the_app_speak_each_apis_envelope(tight: tuple[LoopbackServer, httpx.Client], case: str) -> None:
    server, _ = tight
    lines, body, status, kind = _BELOW_THE_APP[case]
    for path in ("/v1/messages", "/v1/messages/count_tokens", "/v1/chat/completions", "/v1/responses"):
        response = answer_to(server.port, post_head(path, *lines), *body)
        assert response.status == status and response.closed, (path, response)
        data = response.json()
        if path.startswith("/v1/messages"):
            assert data["type"] == "error" and data["error"]["type"] == kind and data["error"]["message"], data
        else:
            assert set(data["error"]) == {"message", "type", "param", "code"}, data


def test_a_head_over_the_cap_sent_in_pieces_is_refused_in_its_apis_envelope(
        tight: tuple[LoopbackServer, httpx.Client]) -> None:
    server, _ = tight
    response = answer_to(server.port, b"POST /v1/messages HTTP/1.1\r\nhost: test\r\n",
                         b"x-pad: " + b"p" * 3000 + b"\r\n\r\n")
    assert response.status == 431 and response.json()["error"]["type"] == "request_too_large", response


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "x-gzip, identity"])
def test_a_compressed_body_is_a_415_naming_the_encoding(tight: tuple[LoopbackServer, httpx.Client], encoding: str) -> None:
    """Nothing decompresses a body (so no gzip bomb either): a compressed one is refused by name, not read as JSON
    that is not UTF-8."""
    _, http = tight
    body = {"model": "auto", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    packed = gzip.compress(orjson.dumps(body))
    headers = {"content-encoding": encoding, "content-type": "application/json"}
    chat = http.post("/v1/chat/completions", content=packed, headers=headers)
    assert chat.status_code == 415, chat.text
    error = chat.json()["error"]
    assert error["code"] == "unsupported_content_encoding" and encoding.split(",")[0] in error["message"], error
    messages = http.post("/v1/messages", content=packed, headers=headers)
    assert "uncompressed" in _anthropic_error(messages, 415, "invalid_request_error")


def test_identity_is_no_encoding(tight: tuple[LoopbackServer, httpx.Client]) -> None:
    _, http = tight
    body = orjson.dumps({"model": "auto", "messages": [{"role": "user", "content": "hi"}]})
    for encoding in ("identity", "IDENTITY", ""):
        response = http.post("/v1/chat/completions", content=body, headers={"content-encoding": encoding})
        assert response.status_code == 200, (encoding, response.text)


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


#: Bodies of many small pieces: little text (under the dispatcher's 32k characters), megabytes of structure.
_MANY_PIECES = {
    "/v1/chat/completions": {"model": "auto", "messages": [{"role": "user", "content": ""}] * 5_000},
    "/v1/route": {"model": "auto", "messages": [{"role": "user", "content": [{"type": "text", "text": ""}] * 5_000}]},
    "/v1/messages": {"model": "auto", "max_tokens": 5,
                     "messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}] * 3_000},
    "/v1/messages/count_tokens": {"model": "auto", "messages": [{"role": "user", "content": "a"}],
                                  "tools": [{"name": "f", "input_schema": {"type": "object", "properties": {
                                      "a": {"type": "string"}}}}] * 1_000},  # (under the 1,024 max_tools)
    "/v1/responses": {"model": "auto", "input": [{"role": "user", "content": "a"}] * 5_000},
}


@pytest.mark.parametrize("path", list(_MANY_PIECES))
def test_a_large_body_of_little_text_is_decided_off_the_event_loop(
        upstream: FakeUpstream, ledger_url: str, monkeypatch: pytest.MonkeyPatch, path: str) -> None:
    """Counting grows with the messages, parts and tools, not only the text: 130,000 empty messages held the event
    loop (and every other request) for ~0.6 s when only prompts over 32k characters were decided in a thread."""
    body = orjson.dumps(_MANY_PIECES[path])
    assert len(body) > 64 * 1024
    with running_gateway(config_data(upstream, ledger_url)) as (gateway, server), \
            httpx.Client(base_url=server.url, timeout=30) as http:
        decider = gateway.decider
        counted_on_loop: list[bool] = []
        request = decider.request

        def watched(*args: Any, **kwargs: Any) -> Any:
            counted_on_loop.append(_on_event_loop())
            return request(*args, **kwargs)

        monkeypatch.setattr(decider, "request", watched)
        response = http.post(path, content=body)
        assert response.status_code == 200, response.text
        assert counted_on_loop == [False]


def test_many_embedding_inputs_are_counted_off_the_event_loop(
        upstream: FakeUpstream, ledger_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from switchman.gateway import _embeddings

    counted_on_loop: list[bool] = []
    count = _embeddings.count_tokens_for_routing

    def watched(text: str) -> int:
        counted_on_loop.append(_on_event_loop())
        return count(text)

    monkeypatch.setattr(_embeddings, "count_tokens_for_routing", watched)
    limits = {"max_embedding_inputs": 20_000}  # above OpenAI's 2,048, the default: many tiny inputs, a large body
    with running_gateway(config_data(upstream, ledger_url, limits=limits)) as (_, server), \
            httpx.Client(base_url=server.url, timeout=30) as http:
        small = http.post("/v1/embeddings", json={"model": "cheap", "input": ["a", "b"]})
        assert small.status_code == 200 and counted_on_loop == [True, True]  # a small body: no thread hop
        counted_on_loop.clear()
        large = http.post("/v1/embeddings", json={"model": "cheap", "input": ["a"] * 20_000})
        assert large.status_code == 200, large.text
        assert len(counted_on_loop) == 20_000 and not any(counted_on_loop)
        unknown = http.post("/v1/embeddings", json={"model": "nope", "input": ["a"] * 20_000})
        assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_the_request_after_a_refused_compressed_body_is_answered(tight: tuple[LoopbackServer, httpx.Client],
                                                                 framing: str) -> None:
    """The refused body is read past, not taken for the next request on the connection."""
    server, _ = tight
    body = orjson.dumps({"model": "auto", "messages": [{"role": "user", "content": "hi"}]})
    packed = gzip.compress(body)
    if framing == "chunked":
        first = post_head("/v1/chat/completions", b"content-encoding: gzip", b"transfer-encoding: chunked") \
            + f"{len(packed):x}\r\n".encode() + packed + b"\r\n0\r\n\r\n"
    else:
        first = post_head("/v1/chat/completions", b"content-encoding: gzip",
                      f"content-length: {len(packed)}".encode()) + packed
    second = post_head("/v1/chat/completions", b"connection: close", f"content-length: {len(body)}".encode()) + body
    answers = answers_to(server.port, first + second)
    assert [status for status, _ in answers] == [415, 200], answers
    assert orjson.loads(answers[1][1])["object"] == "chat.completion"


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
def test_duplicate_keys_are_read_once_the_same_way_for_checking_and_forwarding(
        tight: tuple[LoopbackServer, httpx.Client], upstream: FakeUpstream, path: str) -> None:
    """The last of a repeated key wins, and what was checked is what the upstream gets: no value can pass the
    checks under one reading and reach the provider under another."""
    _, http = tight
    raw = (b'{"model": "nope", "max_tokens": -1, "messages": [{"role": "user", "content": "hi"}], '
           b'"model": "auto", "max_tokens": 7, "stream": true, "stream": false}')
    response = http.post(path, content=raw)
    assert response.status_code == 200 and "text/event-stream" not in response.headers["content-type"], response.text
    forwarded = upstream.requests[-1].body
    assert forwarded["max_tokens"] == 7 and not forwarded.get("stream"), forwarded
    refused = http.post(path, content=raw.replace(b'"max_tokens": 7', b'"max_tokens": -7'))
    assert refused.status_code == 400 and "max_tokens" in refused.text, refused.text
