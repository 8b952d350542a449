"""SSE framing, Retry-After parsing and error classification."""

from __future__ import annotations

import email.utils
from collections.abc import AsyncIterator
from typing import Any

import pytest

from switchman import (
    ContentPolicyViolationError,
    ContextWindowExceededError,
    RateLimitError,
    UpstreamBadRequestError,
    UpstreamError,
    UpstreamServerError,
)
from switchman.gateway._anthropic import AnthropicAdapter
from switchman.gateway._openai import OpenAIAdapter, OpenAIStream
from switchman.gateway._wire import (
    MAX_REPORTED_TOKENS,
    Usage,
    classify_error,
    error_answer,
    reported_usage,
    retry_after_seconds,
    sse_batches,
    sse_data,
    sse_events,
)


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


@pytest.mark.anyio
async def test_sse_events_across_chunk_boundaries() -> None:
    parts = (b"data: {\"a\"", b":1}\n", b"\ndata: 2\r", b"\n\r\n: comment\n\ndata: [DONE]\n\n", b"data: tail")
    events = [e async for e in sse_events(_chunks(*parts))]
    assert events == [b'data: {"a":1}', b"data: 2", b": comment", b"data: [DONE]", b"data: tail"]
    assert [sse_data(e) for e in events] == [b'{"a":1}', b"2", None, b"[DONE]", b"tail"]
    assert sse_data(b"event: x\ndata: a\ndata: b") == b"a\nb"


async def _batches_by_the_loop(chunks: AsyncIterator[bytes]) -> AsyncIterator[list[bytes]]:
    """sse_batches as it was before its one-whole-event shortcut (the reference the shortcut must match)."""
    buffer = b""
    async for chunk in chunks:
        buffer = buffer + chunk if buffer else chunk
        if b"\r" in buffer:
            buffer = buffer.replace(b"\r\n", b"\n")
        events: list[bytes] = []
        start = 0
        while (end := buffer.find(b"\n\n", start)) >= 0:
            if end > start:
                events.append(buffer[start:end])
            start = end + 2
        buffer = buffer[start:]
        if events:
            yield events
    if buffer.strip():
        yield [buffer.strip()]


@pytest.mark.anyio
async def test_sse_batches_match_the_plain_loop_for_any_pieces() -> None:
    import random

    rng = random.Random(11)
    atoms = [b"data: x", b"data: {}", b"\n", b"\n\n", b"\r", b"\r\n", b" ", b":c", b"\n\n\n", b"y"]
    for _ in range(4000):
        pieces = [b"".join(rng.choice(atoms) for _ in range(rng.randint(0, 4))) for _ in range(rng.randint(1, 6))]
        if rng.random() < 0.5:  # many pieces that are exactly one event (the shortcut's case)
            pieces = [b"data: %d\n\n" % i if rng.random() < 0.6 else p for i, p in enumerate(pieces)]
        got = [b async for b in sse_batches(_chunks(*pieces))]
        assert got == [b async for b in _batches_by_the_loop(_chunks(*pieces))], pieces


@pytest.mark.anyio
async def test_sse_batches_give_the_events_each_piece_completes() -> None:
    parts = (b"data: 1\n\ndata: 2\n\ndata: {\"a\"", b":1}\n", b"\n", b"data: 3\r\n\r\ndata: [DONE]\n\n", b"data: tail")
    batches = [b async for b in sse_batches(_chunks(*parts))]
    assert batches == [[b"data: 1", b"data: 2"], [b'data: {"a":1}'], [b"data: 3", b"data: [DONE]"], [b"data: tail"]]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_retry_after() -> None:
    assert retry_after_seconds({"retry-after": "2"}) == 2.0
    assert retry_after_seconds({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert retry_after_seconds({}) is None
    date = email.utils.formatdate(1000.0 + 5, usegmt=True)
    assert retry_after_seconds({"retry-after": date}, now=1000.0) == pytest.approx(5.0)


@pytest.mark.parametrize(("status", "message", "code", "cls"), [
    (429, "slow down", "", RateLimitError),
    (500, "boom", "", UpstreamServerError),
    (529, "Overloaded", "overloaded_error", UpstreamServerError),
    (400, "This model's maximum context length is 8192 tokens", "", ContextWindowExceededError),
    (400, "prompt is too long: 210000 tokens > 200000 maximum", "invalid_request_error", ContextWindowExceededError),
    (400, "x", "context_length_exceeded", ContextWindowExceededError),
    (400, "rejected by our safety system", "", ContentPolicyViolationError),
    (400, "x", "content_filter", ContentPolicyViolationError),
    (400, "bad temperature", "", UpstreamBadRequestError),
    (401, "bad key", "", UpstreamError),
])
def test_classify(status: int, message: str, code: str, cls: type[UpstreamError]) -> None:
    error = classify_error(status, message, code, model="m")
    assert type(error) is cls and error.model == "m"


@pytest.fixture
def classified(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, str, str]]:
    """The (status, message, code) each error answer hands to classify_error."""
    from switchman.gateway import _wire

    seen: list[tuple[int, str, str]] = []

    def spy(status: int, message: str, code: str, **kwargs: Any) -> UpstreamError:
        seen.append((status, message, code))
        return classify_error(status, message, code, **kwargs)

    monkeypatch.setattr(_wire, "classify_error", spy)
    return seen


def test_an_openai_error_is_named_by_its_code_and_type(classified: list[tuple[int, str, str]]) -> None:
    """Only the code says so (the message is neutral): the context window is exceeded, not a bad request."""
    body = b'{"error":{"message":"Request rejected.","type":"invalid_request_error","code":"context_length_exceeded"}}'
    error = OpenAIAdapter().error(400, body, {}, "gpt")
    assert type(error) is ContextWindowExceededError and str(error) == "gpt: upstream answered 400: Request rejected."
    assert classified == [(400, "Request rejected.", "context_length_exceeded invalid_request_error")]


def test_an_anthropic_error_is_named_by_its_type(classified: list[tuple[int, str, str]]) -> None:
    body = b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'
    error = AnthropicAdapter().error(529, body, {"retry-after": "7"}, "claude")
    assert type(error) is UpstreamServerError and error.retry_after == 7.0 and error.model == "claude"
    assert classified == [(529, "Overloaded", "overloaded_error")]


def _no_code(error: object) -> str:
    raise AssertionError(f"a code read from {error!r}, which is no error object")


@pytest.mark.parametrize("body", [b"<html>" + b"bad gateway " * 100, b"\xff\xfe" + b"z" * 600])
def test_an_error_body_that_is_not_json_is_its_first_500_characters(
        body: bytes, classified: list[tuple[int, str, str]]) -> None:
    error = error_answer(502, body, {}, "m", _no_code)
    text = body.decode("utf-8", "replace")[:500]
    assert type(error) is UpstreamServerError and str(error) == f"m: upstream answered 502: {text}"
    assert classified == [(502, text, "")]


@pytest.mark.parametrize("body", [b'{"error":"bad temperature"}', b'{"error":["bad", "temperature"]}',
                                  b'{"error":null,"message":"bad temperature"}', b'["bad temperature"]'])
def test_an_error_field_that_is_no_object_leaves_the_body_as_the_message_and_no_code(
        body: bytes, classified: list[tuple[int, str, str]]) -> None:
    error = error_answer(400, body, {}, "m", _no_code)
    assert type(error) is UpstreamBadRequestError and str(error) == f"m: upstream answered 400: {body.decode()}"
    assert classified == [(400, body.decode(), "")]


def test_an_error_object_without_a_message_keeps_the_body_as_the_message() -> None:
    body = b'{"error":{"code":7}}'
    error = error_answer(400, body, {}, "m", lambda error: "content_filter" if error == {"code": 7} else "")
    assert type(error) is ContentPolicyViolationError and str(error) == f"m: upstream answered 400: {body.decode()}"


def test_openai_stream_drops_only_its_own_usage_chunk() -> None:
    usage = b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}'
    own = OpenAIStream("m", drop_usage=True)
    assert own.feed(usage) == [] and own.usage is not None and own.usage.output_tokens == 2
    asked = OpenAIStream("m", drop_usage=False)
    assert asked.feed(usage) == [usage + b"\n\n"]
    assert asked.feed(b"data: [DONE]") == [b"data: [DONE]\n\n"] and asked.finished and asked.close() == []
    assert OpenAIStream("m", drop_usage=True).close() == [b"data: [DONE]\n\n"]
    with pytest.raises(UpstreamServerError):
        own.feed(b'data: {"error": {"message": "overloaded"}}')


def test_openai_encode_adds_usage_for_streams_only() -> None:
    adapter = OpenAIAdapter()
    body = {"model": "auto", "messages": [], "extra": 1}
    assert adapter.encode(body, "gpt", stream=False) == b'{"model":"gpt","messages":[],"extra":1}'
    assert b'"stream_options":{"include_usage":true}' in adapter.encode(body, "gpt", stream=True)
    assert body["model"] == "auto"  # the caller's body is not changed


def test_a_retry_after_that_is_neither_seconds_nor_a_date_is_ignored() -> None:
    assert retry_after_seconds({"retry-after": "soon"}) is None


def test_malformed_upstream_answers_map_into_the_error_tree() -> None:
    from switchman._exceptions import UpstreamError, UpstreamServerError
    from switchman.gateway._anthropic import AnthropicAdapter
    from switchman.gateway._openai import OpenAIStream

    with pytest.raises(UpstreamServerError, match="boom"):
        OpenAIStream("m", drop_usage=False).feed(b'data: {"error":"boom"}')
    adapter = AnthropicAdapter()
    with pytest.raises(UpstreamError), adapter.map_errors("claude"):
        adapter.decode(b'{"type":"message","content":["x"]}', "claude")


@pytest.mark.parametrize("adapter", [OpenAIAdapter(), AnthropicAdapter()], ids=["openai", "anthropic"])
def test_map_errors_turns_transport_failures_into_upstream_errors_and_lets_the_rest_through(adapter: Any) -> None:
    import asyncio as _asyncio

    from switchman._exceptions import UpstreamConnectionError, UpstreamTimeout

    for raised, expected in ((TimeoutError(), UpstreamTimeout), (ConnectionResetError(), UpstreamConnectionError),
                             (ValueError("not json"), UpstreamServerError)):
        with pytest.raises(expected) as caught:
            with adapter.map_errors("small"):
                raise raised
        assert caught.value.__cause__ is raised and "small" in str(caught.value)
    for passing in (_asyncio.CancelledError(), RuntimeError("ours")):
        with pytest.raises(type(passing)) as through:
            with adapter.map_errors("small"):
                raise passing
        assert through.value is passing
    with adapter.map_errors("small"):
        pass


@pytest.mark.parametrize("spaced", [False, True])
def test_openai_stream_notes_length_and_usage_in_either_spelling(spaced: bool) -> None:
    sep = b": " if spaced else b":"
    stream = OpenAIStream("m", drop_usage=True)
    assert stream.feed(b'data: {"choices":[{"delta":{"content":"say \\"length\\" and usage"}}]}') != []
    assert not stream.truncated and stream.usage is None and stream.has_output
    cut = b'data: {"choices":[{"delta":{},"finish_reason"' + sep + b'"length"}]}'
    assert stream.feed(cut) == [cut + b"\n\n"] and stream.truncated
    usage = b'{"choices":[],"usage"' + sep + b'{"prompt_tokens":3,"completion_tokens":2}}'
    assert stream.feed(b"event: x\ndata: " + usage) == []  # multi-line event: sse_data's own path; dropped
    assert stream.usage is not None and (stream.usage.input_tokens, stream.usage.output_tokens) == (3, 2)
    assert stream.chunks == 3


@pytest.mark.parametrize(("counts", "usage"), [
    ((10, 5, 3), Usage(10, 5, 3)),
    ((10, 5, 30), Usage(10, 5, 10)),  # more cached than sent: all of it
    ((MAX_REPORTED_TOKENS, MAX_REPORTED_TOKENS, 0), Usage(MAX_REPORTED_TOKENS, MAX_REPORTED_TOKENS, 0)),
    ((12.0, "7", None), Usage(12, 7, 0)),  # a float, a numeric string, an absent count
    ((10, 5, None), Usage(10, 5, 0)),  # no cached count: the usual answer
    ((10, 5, 10), Usage(10, 5, 10)),
    ((None, 5, None), Usage(0, 5, 0)),
    ((10, 5, True), None),
    ((MAX_REPORTED_TOKENS + 1, 5, 0), None),
    ((10, -1, 0), None),
    ((10, 5, -1), None),
    ((True, 5, 0), None),  # a boolean is no count, though Python's bool is an int
    ((10, "many", 0), None),
    ((10, [5], 0), None),
])
def test_reported_usage_believes_plausible_counts_only(counts: tuple[Any, Any, Any], usage: Usage | None) -> None:
    assert reported_usage(*counts) == usage
