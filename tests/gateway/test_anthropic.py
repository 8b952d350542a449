"""OpenAI ↔ Anthropic Messages translation, unit by unit and through the gateway."""

from __future__ import annotations

import json

import openai
import orjson
import pytest

from switchman import UpstreamBadRequestError, UpstreamServerError
from switchman.gateway._anthropic import from_anthropic, to_anthropic
from switchman.gateway._anthropic_stream import AnthropicStream
from switchman.testing import FakeUpstream

from .conftest import ANTHROPIC_KEY

TOOLS = [{"type": "function", "function": {"name": "lookup", "description": "Look up",
                                           "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}]
PNG = "data:image/png;base64,iVBORw0KGgo="


def test_request_translation() -> None:
    body = {
        "model": "auto",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Use tools."}]},
            {"role": "user", "content": [{"type": "text", "text": "What is this?"},
                                         {"type": "image_url", "image_url": {"url": PNG}},
                                         {"type": "image_url", "image_url": {"url": "https://x.test/a.jpg"}}]},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"q": "a"}'}},
                {"id": "call_2", "type": "function", "function": {"name": "lookup", "arguments": '{"q": "b"}'}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "A"},
            {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "B"}]},
            {"role": "user", "content": "thanks"},
        ],
        "tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "lookup"}},
        "parallel_tool_calls": False, "temperature": 1.5, "top_p": 0.9, "stop": "END", "max_tokens": 100,
        "seed": 3, "user": "u-1", "frequency_penalty": 0.5,
    }
    out = to_anthropic(body, "claude-x", stream=True)
    assert out["model"] == "claude-x" and out["stream"] is True and out["max_tokens"] == 100
    assert out["system"] == "Be brief.\n\nUse tools."
    assert out["temperature"] == 1.0 and out["top_p"] == 0.9 and out["stop_sequences"] == ["END"]
    assert out["metadata"] == {"user_id": "u-1"}
    assert "seed" not in out and "frequency_penalty" not in out
    assert out["tools"] == [{"name": "lookup", "description": "Look up",
                             "input_schema": TOOLS[0]["function"]["parameters"]}]  # type: ignore[index]
    assert out["tool_choice"] == {"type": "tool", "name": "lookup", "disable_parallel_tool_use": True}
    user, assistant, results = out["messages"]  # tool results and the next user turn merge into one turn
    assert user == {"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
        {"type": "image", "source": {"type": "url", "url": "https://x.test/a.jpg"}}]}
    assert assistant == {"role": "assistant", "content": [
        {"type": "tool_use", "id": "call_1", "name": "lookup", "input": {"q": "a"}},
        {"type": "tool_use", "id": "call_2", "name": "lookup", "input": {"q": "b"}}]}
    assert results == {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "call_1", "content": "A"},
        {"type": "tool_result", "tool_use_id": "call_2", "content": "B"},
        {"type": "text", "text": "thanks"}]}


@pytest.mark.parametrize(("choice", "expected"), [
    ("auto", {"type": "auto"}), ("required", {"type": "any"}), ("none", {"type": "none"}), (None, None)])
def test_tool_choice(choice: object, expected: object) -> None:
    body = {"messages": [{"role": "user", "content": "x"}], "tools": TOOLS, "tool_choice": choice}
    assert to_anthropic(body, "m", stream=False).get("tool_choice") == expected


def test_defaults_json_mode_and_n() -> None:
    out = to_anthropic({"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_object"}},
                       "m", stream=False)
    assert out["max_tokens"] == 4096 and "JSON" in out["system"] and "stream" not in out
    with pytest.raises(UpstreamBadRequestError):
        to_anthropic({"messages": [{"role": "user", "content": "x"}], "n": 2}, "m", stream=False)


def test_response_translation() -> None:
    message = {
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
        "content": [{"type": "text", "text": "Let me look."},
                    {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": "a"}}],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 90,
                  "cache_creation_input_tokens": 0},
    }
    completion, usage = from_anthropic(message, "claude")
    choice = completion["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Let me look."
    assert choice["message"]["tool_calls"] == [
        {"id": "toolu_1", "type": "function", "function": {"name": "lookup", "arguments": '{"q":"a"}'}}]
    assert completion["usage"]["prompt_tokens"] == 100 and completion["usage"]["completion_tokens"] == 5
    assert completion["usage"]["prompt_tokens_details"] == {"cached_tokens": 90}
    assert (usage.input_tokens, usage.output_tokens, usage.cached_input_tokens) == (100, 5, 90)
    for stop, finish in [("end_turn", "stop"), ("max_tokens", "length"), ("stop_sequence", "stop"),
                         ("refusal", "content_filter")]:
        message = {"content": [{"type": "text", "text": "x"}], "stop_reason": stop, "usage": {}}
        assert from_anthropic(message, "m")[0]["choices"][0]["finish_reason"] == finish


def _event(data: dict[str, object]) -> bytes:
    return b"event: " + str(data["type"]).encode() + b"\ndata: " + orjson.dumps(data)


def _decode(chunks: list[bytes]) -> list[object]:
    out: list[object] = []
    for chunk in chunks:
        payload = chunk.removeprefix(b"data: ").strip()
        out.append("[DONE]" if payload == b"[DONE]" else orjson.loads(payload))
    return out


def test_stream_translation() -> None:
    stream = AnthropicStream("claude", include_usage=True)
    events = [
        {"type": "message_start", "message": {"id": "msg_1", "usage": {"input_tokens": 12, "output_tokens": 1}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "ping"},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}},
        {"type": "content_block_stop", "index": 0},
        {"type": "content_block_start", "index": 1,
         "content_block": {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {}}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": '{"q"'}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": ': 1}'}},
        {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 7}},
        {"type": "message_stop"},
    ]
    chunks = _decode([c for e in events for c in stream.feed(_event(e))])
    deltas = [c["choices"][0]["delta"] for c in chunks[:-2] if c["choices"]]  # type: ignore[index]
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert deltas[1] == {"content": "Hi"}
    assert deltas[2]["tool_calls"][0] == {"index": 0, "id": "toolu_1", "type": "function",
                                          "function": {"name": "lookup", "arguments": ""}}
    assert "".join(d["tool_calls"][0]["function"]["arguments"] for d in deltas[3:5]) == '{"q": 1}'
    assert chunks[-3]["choices"][0]["finish_reason"] == "tool_calls"  # type: ignore[index]
    assert chunks[-2]["usage"] == {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19}  # type: ignore[index]
    assert chunks[-1] == "[DONE]" and stream.finished
    assert stream.usage is not None and stream.usage.output_tokens == 7


@pytest.mark.parametrize(("counts", "expected"), [
    ({"input_tokens": 10, "cache_read_input_tokens": 5, "cache_creation_input_tokens": 3}, (18, 7, 5)),
    ({"input_tokens": 10}, (10, 7, 0)),
    ({"input_tokens": 10, "cache_creation_input_tokens": -1}, None),  # no plausible count: the gateway estimates
])
def test_an_answer_and_a_stream_count_the_prompt_alike(
        counts: dict[str, int], expected: tuple[int, int, int] | None) -> None:
    """Anthropic's input_tokens leave out cache reads and writes; the prompt's tokens include both, streamed or not."""
    message = {"content": [{"type": "text", "text": "x"}], "stop_reason": "end_turn",
               "usage": {**counts, "output_tokens": 7}}
    _, answered = from_anthropic(message, "claude")
    stream = AnthropicStream("claude", include_usage=False)
    for event in ({"type": "message_start", "message": {"id": "m", "usage": {**counts, "output_tokens": 1}}},
                  {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 7}}):
        stream.feed(_event(event))
    for usage in (answered, stream.usage):
        got = None if usage is None else (usage.input_tokens, usage.output_tokens, usage.cached_input_tokens)
        assert got == expected


def test_stream_notes_empty_and_truncated_answers() -> None:
    start = {"type": "message_start", "message": {"id": "m", "usage": {"input_tokens": 3, "output_tokens": 0}}}
    block = {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
    cut = [start, block, {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}},
           {"type": "message_delta", "delta": {"stop_reason": "max_tokens"}, "usage": {"output_tokens": 1}},
           {"type": "message_stop"}]
    stream = AnthropicStream("claude", include_usage=False)
    for e in cut:
        stream.feed(_event(e))
    assert stream.has_output and stream.truncated
    empty = [start, block, {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 0}},
             {"type": "message_stop"}]
    stream = AnthropicStream("claude", include_usage=False)
    for e in empty:
        stream.feed(_event(e))
    assert not stream.has_output and not stream.truncated


def test_stream_error_event_raises() -> None:
    stream = AnthropicStream("claude", include_usage=False)
    with pytest.raises(UpstreamServerError):
        stream.feed(_event({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}))


def test_through_the_gateway(client: openai.OpenAI, upstream: FakeUpstream) -> None:
    completion = client.chat.completions.create(
        model="auto:claude", max_tokens=50,
        messages=[{"role": "system", "content": "sys"},
                  {"role": "user", "content": [{"type": "text", "text": "see"},
                                               {"type": "image_url", "image_url": {"url": PNG}}]}],
    )
    assert completion.choices[0].message.content == "Hello from claude-test."
    assert completion.model == "claude" and completion.choices[0].finish_reason == "stop"
    sent = upstream.requests[-1]
    assert sent.path == "/v1/messages" and sent.headers["x-api-key"] == ANTHROPIC_KEY
    assert sent.headers["anthropic-version"] == "2023-06-01" and "authorization" not in sent.headers
    assert sent.body["system"] == "sys" and sent.body["max_tokens"] == 50
    assert sent.body["messages"][0]["content"][1]["source"]["type"] == "base64"


def test_tool_round_trip_through_the_gateway(client: openai.OpenAI, upstream: FakeUpstream) -> None:
    messages: list[dict[str, object]] = [{"role": "user", "content": "find it"}]
    first = client.chat.completions.create(model="claude", messages=messages, tools=TOOLS)  # type: ignore[arg-type]
    call = first.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert first.choices[0].finish_reason == "tool_calls" and json.loads(call.function.arguments) == {"query": "find it"}
    messages += [first.choices[0].message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": "42"}]
    second = client.chat.completions.create(model="claude", messages=messages, tools=TOOLS)  # type: ignore[arg-type]
    assert second.choices[0].finish_reason == "stop"
    sent = upstream.requests[-1].body["messages"]
    assert sent[1]["content"][-1] == {"type": "tool_use", "id": call.id, "name": "lookup",
                                      "input": {"query": "find it"}}
    assert sent[2] == {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "42"}]}


def test_stream_through_the_gateway(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(
        model="claude", messages=[{"role": "user", "content": "x"}], stream=True, tools=TOOLS,  # type: ignore[arg-type]
        stream_options={"include_usage": True},
    ))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from claude-test."
    calls = [c.choices[0].delta.tool_calls for c in chunks if c.choices and c.choices[0].delta.tool_calls]
    assert calls[0][0].function.name == "lookup"  # type: ignore[index,union-attr]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3


def test_anthropic_errors_are_classified(client: openai.OpenAI, upstream: FakeUpstream) -> None:
    upstream.inject("overloaded", model="claude-test", times=1)
    assert client.chat.completions.create(model="claude", messages=[{"role": "user", "content": "x"}])
    assert [r.fault for r in upstream.requests] == ["overloaded", None]  # 529 is retried like a 5xx
    upstream.inject("context_length", model="claude-test", times=1)
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="claude", messages=[{"role": "user", "content": "x"}])
    assert info.value.code == "context_length_exceeded"
