"""Wrong types anywhere never get a 500: a seeded Hypothesis fuzz of chat bodies with any JSON value in every field
(content parts, tool calls, tools, tool_choice, response_format, stream_options, n, logit_bias, max_tokens, metadata,
...), streamed and not and through /v1/route, of embeddings bodies, and of the `X-Switchman-*` and id headers as any
bytes a client may send, on every API. Each answer is a 2xx or a 4xx in the API's own envelope (a 502-504 only for
what the fake upstream refused), and a stream ends with its terminal event."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from security_support import config_data, connect, running_gateway
from server_support import LoopbackServer

from switchman.testing import FakeUpstream

FUZZ = settings(max_examples=120, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])
#: Scalars with the edges JSON allows: 64-bit bounds (and past them, read as floats), the largest doubles, control
#: characters, the words the schema's fields take.
LEAF = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.sampled_from([-1, 0, 2**63, 10**30, 1e308])
        | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=6)
        | st.sampled_from(["", "\x00", "\u2028", "auto", "function", "text", "image_url", "user", "json_schema",
                           "required", "none"]))
KEYS = st.text(max_size=5) | st.sampled_from(["type", "text", "name", "function", "url", "image_url", "arguments",
                                              "include_usage", "json_schema", "schema", "detail"])
JSON = st.recursive(LEAF, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
                    max_leaves=8)


def _or_any(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """The field's own shape, or any JSON value in its place."""
    return st.one_of(strategy, JSON)


def _fields(required: dict[str, st.SearchStrategy[Any]], **optional: st.SearchStrategy[Any]
            ) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(required, optional=optional)


PART = _or_any(_fields({"type": _or_any(st.sampled_from(["text", "image_url", "input_audio", "file", "refusal"]))},
                       text=JSON, image_url=_or_any(_fields({}, url=JSON, detail=JSON)), input_audio=JSON, file=JSON))
TOOL_CALL = _or_any(_fields({"function": _or_any(_fields({}, name=JSON, arguments=JSON))}, id=JSON, type=JSON))
MESSAGE = _or_any(_fields(
    {"role": _or_any(st.sampled_from(["system", "developer", "user", "assistant", "tool", "function"]))},
    content=st.one_of(st.text(max_size=5), st.lists(PART, max_size=3), JSON), name=JSON,
    tool_calls=_or_any(st.lists(TOOL_CALL, max_size=2)), tool_call_id=JSON, refusal=JSON))
TOOL = _or_any(_fields({"type": _or_any(st.just("function")), "function": _or_any(_fields(
    {"name": _or_any(st.text(min_size=1, max_size=5))}, parameters=JSON, description=JSON, strict=JSON))}))
TOOL_CHOICE = _or_any(st.one_of(st.sampled_from(["auto", "none", "required"]), _fields(
    {"type": _or_any(st.just("function")), "function": _or_any(_fields({"name": JSON}))})))
RESPONSE_FORMAT = _or_any(_fields({"type": _or_any(st.sampled_from(["text", "json_object", "json_schema"]))},
                                  json_schema=_or_any(_fields({"name": JSON, "schema": JSON}))))
METADATA = _or_any(st.dictionaries(st.sampled_from(["agent", "session", "tags", "task", "escalate", "cache", "x"]),
                                   JSON, max_size=3))
CHAT_BODY = _fields(
    {"model": _or_any(st.sampled_from(["auto", "cheap", "auto:default", "big"])),
     "messages": _or_any(st.lists(MESSAGE, min_size=1, max_size=3))},
    tools=_or_any(st.lists(TOOL, max_size=2)), tool_choice=TOOL_CHOICE, response_format=RESPONSE_FORMAT,
    metadata=METADATA, stream_options=_or_any(_fields({}, include_usage=JSON)), n=JSON, logit_bias=JSON,
    max_tokens=JSON, max_completion_tokens=JSON, temperature=JSON, top_p=JSON, stop=JSON, seed=JSON, user=JSON,
    parallel_tool_calls=JSON, logprobs=JSON, top_logprobs=JSON, modalities=JSON, prediction=JSON, store=JSON,
    functions=JSON, function_call=JSON,
)
EMBEDDINGS_BODY = _fields(
    {"model": _or_any(st.sampled_from(["cheap", "big", "auto"]))},
    input=_or_any(st.one_of(st.text(max_size=5), st.lists(st.text(max_size=3), max_size=3),
                            st.lists(st.integers(-5, 2**64 - 1), max_size=3),
                            st.lists(st.lists(st.integers(0, 10), max_size=3), max_size=3))),
    dimensions=JSON, encoding_format=_or_any(st.sampled_from(["float", "base64"])), user=JSON, metadata=METADATA,
)


@pytest.fixture(scope="module")
def served(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LoopbackServer,
                                                                                                httpx.Client]]:
    url = f"sqlite:///{tmp_path_factory.mktemp('types') / 'ledger.sqlite3'}"
    # A circuit breaker that never opens: the fake upstream's own refusals must not turn later examples into 503s.
    data = config_data(upstream, url)
    data["server"]["circuit_breaker"] = {"failures": 1_000_000, "cooldown_s": 1.0}
    with running_gateway(data) as (_, server), httpx.Client(base_url=server.url, timeout=30) as client:
        yield server, client


def assert_answered(status: int, body: bytes, content_type: str, *, anthropic: bool = False) -> None:
    assert status < 500 or status in (502, 503, 504), body[:500]
    assert b"Traceback" not in body
    if status >= 400:
        data = orjson.loads(body)
        if anthropic:
            assert data["type"] == "error" and set(data["error"]) == {"type", "message"}, data
        else:
            assert set(data["error"]) == {"message", "type", "param", "code"}, data
    elif content_type.startswith("text/event-stream"):
        text = body.decode()
        if anthropic:
            assert [ln for ln in text.splitlines() if ln.startswith("event: ")][-1] in ("event: message_stop",
                                                                                        "event: error"), text
        elif "event: response." not in text:
            assert text.rstrip().endswith("data: [DONE]"), text


def _dumps(body: object) -> bytes:
    """JSON as a client may write it: integers past 64 bits included (orjson refuses to write them)."""
    return json.dumps(body).encode()


def _check(response: httpx.Response, *, anthropic: bool = False) -> None:
    assert_answered(response.status_code, response.content, response.headers.get("content-type", ""),
                    anthropic=anthropic)


@FUZZ
@given(body=CHAT_BODY)
def test_chat_bodies_with_any_type_anywhere_never_get_a_500(served: tuple[LoopbackServer, httpx.Client],
                                                            body: dict[str, Any]) -> None:
    _, http = served
    raw = _dumps(body)
    _check(http.post("/v1/chat/completions", content=raw))
    _check(http.post("/v1/route", content=raw))
    if isinstance(body.get("messages"), list):  # the same body as a stream (a stream field of any type is above)
        _check(http.post("/v1/chat/completions", content=_dumps({**body, "stream": True})))


@FUZZ
@given(body=EMBEDDINGS_BODY)
def test_embeddings_bodies_never_get_a_500(served: tuple[LoopbackServer, httpx.Client], body: dict[str, Any]) -> None:
    _, http = served
    _check(http.post("/v1/embeddings", content=_dumps(body)))


#: The request headers a client controls that the gateway reads.
READ_HEADERS = ["x-switchman-agent", "x-switchman-session", "x-switchman-tags", "x-switchman-task",
                "x-switchman-escalate", "x-switchman-cache", "traceparent", "tracestate", "x-request-id",
                "x-switchman-request-id", "content-type", "content-encoding", "authorization", "x-api-key"]
#: Any byte HTTP allows in a header value (not the controls but tab), long values, and the words the headers take.
HEADER_VALUE = st.one_of(
    st.binary(max_size=40).map(lambda raw: bytes(c for c in raw if (c >= 0x20 and c != 0x7F) or c == 0x09).strip()),
    st.sampled_from([b"on", b"off", b"1", b"true", b"a,b,,c", b",".join([b"t"] * 40), b"x" * 300, b"x" * 8000,
                     "\u00e9".encode(), "\u00e9".encode("latin-1"), b"00-" + b"0" * 32 + b"-" + b"0" * 16 + b"-01",
                     b"identity", b"Bearer ", b"Bearer \xff"]))
REQUESTS = {
    "/v1/chat/completions": {"model": "auto", "messages": [{"role": "user", "content": "hi"}]},
    "/v1/route": {"model": "auto", "messages": [{"role": "user", "content": "hi"}]},
    "/v1/messages": {"model": "auto", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]},
    "/v1/messages/count_tokens": {"model": "auto", "messages": [{"role": "user", "content": "hi"}]},
    "/v1/responses": {"model": "auto", "input": "hi"},
    "/v1/embeddings": {"model": "cheap", "input": "hi"},
    "/v1/feedback": {"request_id": "nope", "score": 1},
}


@FUZZ
@given(path=st.sampled_from(list(REQUESTS)), stream=st.booleans(),
       headers=st.lists(st.tuples(st.sampled_from(READ_HEADERS), HEADER_VALUE), max_size=4))
def test_any_header_values_never_get_a_500(served: tuple[LoopbackServer, httpx.Client], path: str, stream: bool,
                                           headers: list[tuple[str, bytes]]) -> None:
    """Sent on a raw socket: bytes no client library would send (Latin-1, invalid UTF-8), repeated headers."""
    server, _ = served
    body = dict(REQUESTS[path])
    if stream and path in ("/v1/chat/completions", "/v1/messages", "/v1/responses"):
        body["stream"] = True
    payload = orjson.dumps(body)
    head = [f"POST {path} HTTP/1.1".encode(), b"host: test", b"connection: close",
            f"content-length: {len(payload)}".encode(), *(name.encode() + b": " + value for name, value in headers)]
    sock = connect(server.port)
    try:
        sock.sendall(b"\r\n".join(head) + b"\r\n\r\n" + payload)
        status, content_type, answer = _read_to_close(sock)
    finally:
        sock.close()
    assert_answered(status, answer, content_type, anthropic=path.startswith("/v1/messages"))


def _read_to_close(sock: socket.socket) -> tuple[int, str, bytes]:
    """Status, content type and body (de-chunked) of the one answer on a connection the server then closes."""
    sock.settimeout(10)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    if headers.get("transfer-encoding") == "chunked":
        pieces, rest = [], body
        while rest:
            size, _, rest = rest.partition(b"\r\n")
            length = int(size, 16)
            if length == 0:
                break
            pieces.append(rest[:length])
            rest = rest[length + 2:]
        body = b"".join(pieces)
    return int(lines[0].split(" ")[1]), headers.get("content-type", ""), body
