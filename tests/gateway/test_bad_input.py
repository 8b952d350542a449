"""Bad requests get a 4xx in OpenAI's error format (never a 500, never a traceback); the ledger notes them."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from switchman.ledger import LedgerRecord
from switchman.testing import FakeUpstream

from .conftest import ASK


def assert_error(response: httpx.Response, status: int, code: str | None, param: str | None = None) -> dict[str, str]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert "Traceback" not in response.text and "File \"" not in response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["code"] == code
    if param is not None:
        assert body["error"]["param"] == param
    assert body["error"]["message"]
    return body["error"]  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("content", "code"),
    [
        (b"{not json", "invalid_json"),
        (b"", "invalid_json"),
        (b"[1, 2]", "invalid_json"),
        (b"\xff\xfe\x00garbage", "invalid_json"),
        (b"[" * 5000, "invalid_json"),
    ],
)
def test_malformed_bodies(http: httpx.Client, content: bytes, code: str) -> None:
    assert_error(http.post("/v1/chat/completions", content=content), 400, code)


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        ({"messages": ASK}, "missing_required_parameter", "model"),
        ({"model": "auto"}, "missing_required_parameter", "messages"),
        ({"model": "auto", "messages": []}, "invalid_value", "messages"),
        ({"model": "auto", "messages": "hello"}, "invalid_value", "messages"),
        ({"model": 5, "messages": ASK}, "invalid_value", "model"),
        ({"model": "auto", "messages": [{"content": "x"}]}, "missing_required_parameter", "messages.0.role"),
        ({"model": "auto", "messages": [{"role": "robot", "content": "x"}]}, "invalid_value", "messages.0.role"),
        ({"model": "auto", "messages": ASK, "temperature": "hot"}, "invalid_value", "temperature"),
        ({"model": "auto", "messages": ASK, "temperature": 9}, "invalid_value", "temperature"),
        ({"model": "auto", "messages": ASK, "stream": "yes"}, "invalid_value", "stream"),
        ({"model": "auto", "messages": ASK, "max_tokens": 0}, "invalid_value", "max_tokens"),
        ({"model": "auto", "messages": ASK, "tools": [{"type": "function"}]}, "missing_required_parameter",
         "tools.0.function"),
        ({"model": "auto", "messages": ASK, "metadata": {"agent": 7}}, "invalid_value", "metadata.agent"),
        ({"model": "auto", "messages": ASK, "metadata": {"tags": {"a": 1}}}, "invalid_value", "metadata.tags"),
        # Shapes the router and the Anthropic translation read: a 400 naming the field, never a 500.
        ({"model": "auto", "messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]},
         "invalid_value", "messages.0.content.0.text"),
        ({"model": "auto:claude", "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": 5}}]}]}, "invalid_value", "messages.0.content.0.image_url.url"),
        ({"model": "auto:claude", "messages": [{"role": "assistant", "tool_calls": [{"function": "x"}]}]},
         "invalid_value", "messages.0.tool_calls.0.function"),
        ({"model": "auto:claude", "messages": ASK, "response_format": {"type": "json_schema", "json_schema": "x"}},
         "invalid_value", "response_format.json_schema"),
        ({"model": "auto:claude", "messages": ASK, "tool_choice": {"function": "x"}}, "invalid_value",
         "tool_choice.function"),
    ],
)
def test_missing_and_mistyped_fields(http: httpx.Client, body: dict[str, object], code: str, param: str) -> None:
    assert_error(http.post("/v1/chat/completions", json=body), 400, code, param)


def test_unknown_model_and_route(http: httpx.Client, ledger_record: Callable[[str], LedgerRecord]) -> None:
    response = http.post("/v1/chat/completions", json={"model": "gpt-9", "messages": ASK})
    error = assert_error(response, 404, "model_not_found", "model")
    assert "gpt-9" in error["message"]
    record = ledger_record(response.headers["x-switchman-request-id"])
    assert record.status == "bad_request" and "gpt-9" in (record.error or "")
    assert_error(http.post("/v1/chat/completions", json={"model": "auto:nope", "messages": ASK}), 404,
                 "model_not_found", "model")
    assert_error(http.post("/v1/route", json={"model": "auto:nope", "messages": ASK}), 404, "model_not_found")


def test_a_large_chats_unknown_model_decided_in_a_worker_thread_is_a_404_with_its_row(
        http: httpx.Client, ledger_record: Callable[[str], LedgerRecord]) -> None:
    """Over OFFLOAD_BYTES the decision runs in a thread: its refusal is the same 404, recorded once."""
    from switchman.gateway._offload import OFFLOAD_BYTES

    long = [{"role": "user", "content": "word " * (OFFLOAD_BYTES // 5 + 100)}]
    for stream in (False, True):
        response = http.post("/v1/chat/completions", json={"model": "gpt-9", "messages": long, "stream": stream})
        assert len(response.request.content) > OFFLOAD_BYTES
        assert "gpt-9" in assert_error(response, 404, "model_not_found", "model")["message"]
        record = ledger_record(response.headers["x-switchman-request-id"])
        assert record.status == "bad_request" and "gpt-9" in (record.error or "")


def test_no_capable_model(http: httpx.Client) -> None:
    response = http.post("/v1/chat/completions", json={"model": "auto:strict", "messages": ASK,
                                                       "max_tokens": 100_000})
    error = assert_error(response, 400, "no_capable_model")
    assert "context window" in error["message"]


def test_oversized_body_by_content_length(http: httpx.Client) -> None:
    big = b'{"model": "auto", "messages": [{"role": "user", "content": "' + b"x" * 300_000 + b'"}]}'
    assert_error(http.post("/v1/chat/completions", content=big), 413, "request_too_large")


def test_oversized_chunked_body(http: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(30):
            yield b"x" * 10_000

    assert_error(http.post("/v1/chat/completions", content=chunks()), 413, "request_too_large")


@pytest.mark.parametrize(
    ("headers", "param"),
    [
        ({"x-switchman-agent": "a" * 300}, "X-Switchman-Agent"),
        ({"x-switchman-session": "s\tt"}, "X-Switchman-Session"),
        ({"x-switchman-tags": ",".join(f"t{i}" for i in range(40))}, "X-Switchman-Tags"),
    ],
)
def test_invalid_context_headers(http: httpx.Client, headers: dict[str, str], param: str) -> None:
    response = http.post("/v1/chat/completions", json={"model": "auto", "messages": ASK}, headers=headers)
    assert_error(response, 400, "invalid_value", param)


def test_unknown_path_and_wrong_method(http: httpx.Client) -> None:
    assert_error(http.get("/v1/nothing"), 404, "not_found")
    assert_error(http.get("/v1/chat/completions"), 405, "method_not_allowed")


def test_garbage_request_line_is_a_4xx_without_traceback(server: str) -> None:
    host, port = server.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n")
        reply = sock.recv(65536)
    assert reply.startswith(b"HTTP/1.1 4") and b"Traceback" not in reply


def test_client_disconnecting_mid_stream(server: str, upstream: FakeUpstream,
                                         ledger_record: Callable[[str], LedgerRecord]) -> None:
    upstream.inject("slow_stream", model="cheap", times=1, seconds=0.5)
    with httpx.Client(base_url=server) as client, client.stream(
        "POST", "/v1/chat/completions", json={"model": "auto", "messages": ASK, "stream": True}
    ) as response:
        request_id = response.headers["x-switchman-request-id"]
        first = next(response.iter_raw())
        assert first.startswith(b"data: ")
    record = ledger_record(request_id)
    assert record.status == "client_disconnected" and record.model == "cheap"
    deadline = time.monotonic() + 10
    while upstream.disconnects < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert upstream.disconnects >= 1  # the upstream request was cancelled, not left running
