"""POST /v1/messages with the real anthropic client: routed like any request, to either kind of upstream."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import httpx
import pytest

from switchman.gateway import Gateway
from switchman.ledger import LedgerRecord
from switchman.testing import FakeUpstream

from .conftest import ANTHROPIC_KEY

TOOL = {"name": "lookup", "description": "Look something up",
        "input_schema": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}}
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n fake").decode()


@pytest.fixture
def claude(server: str) -> Iterator[anthropic.Anthropic]:
    """The real anthropic client pointed at the gateway (no client-side retries)."""
    with anthropic.Anthropic(base_url=server, api_key="unused", max_retries=0) as client:
        yield client


def _user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def test_text_answer_through_an_openai_upstream(
    claude: anthropic.Anthropic, upstream: FakeUpstream, ledger_record: Callable[[str], LedgerRecord]
) -> None:
    raw = claude.messages.with_raw_response.create(
        model="auto", max_tokens=100, system="Be brief.", messages=_user("Say hi"),  # type: ignore[arg-type]
        extra_body={"temperature": 0.2},  # an older API field the current client no longer offers
    )
    message = raw.parse()
    assert message.type == "message" and message.role == "assistant" and message.model == "cheap"
    assert [b.type for b in message.content] == ["text"] and message.content[0].text == "Hello from cheap."  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    assert message.usage.input_tokens > 0 and message.usage.output_tokens == 3
    sent = upstream.requests_for("cheap")[-1]
    assert sent.path == "/v1/chat/completions"
    assert sent.body["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hi"}]
    assert sent.body["max_tokens"] == 100 and sent.body["temperature"] == 0.2
    assert "_switchman_translated" not in sent.body and "x-api-key" not in sent.headers
    assert raw.headers["x-switchman-model"] == "cheap"
    record = ledger_record(raw.headers["x-switchman-request-id"])
    assert (record.api, record.model, record.route, record.status) == ("messages", "cheap", "default", "ok")
    assert (record.input_tokens, record.output_tokens) == (message.usage.input_tokens, 3)
    assert message.id == f"msg_{record.request_id}"


def test_an_anthropic_upstream_gets_its_own_format_back(claude: anthropic.Anthropic, upstream: FakeUpstream) -> None:
    system = [{"type": "text", "text": "You are a coding agent.", "cache_control": {"type": "ephemeral"}},
              {"type": "text", "text": "Be careful."}]
    message = claude.messages.create(
        model="auto:claude", max_tokens=50, system=system, stop_sequences=["from"],  # type: ignore[arg-type]
        messages=[{"role": "user", "content": [{"type": "text", "text": "Hi", "cache_control": {"type": "ephemeral"}}]}],
    )
    sent = upstream.requests_for("claude-test")[-1]
    assert sent.path == "/v1/messages" and sent.headers["x-api-key"] == ANTHROPIC_KEY
    assert sent.body["system"] == system  # cache breakpoints survive the round trip
    assert sent.body["messages"] == [{"role": "user", "content": [
        {"type": "text", "text": "Hi", "cache_control": {"type": "ephemeral"}}]}]
    assert sent.body["stop_sequences"] == ["from"] and sent.body["max_tokens"] == 50
    assert message.model == "claude" and message.content[0].text == "Hello "  # type: ignore[union-attr]
    assert (message.stop_reason, message.stop_sequence) == ("stop_sequence", "from")


def test_cache_control_is_kept_from_openai_upstreams(claude: anthropic.Anthropic, upstream: FakeUpstream) -> None:
    claude.messages.create(
        model="mid", max_tokens=50,
        system=[{"type": "text", "text": "Rules.", "cache_control": {"type": "ephemeral"}}],
        messages=[{"role": "user", "content": [{"type": "text", "text": "Hi", "cache_control": {"type": "ephemeral"}},
                                               {"type": "text", "text": "there"}]}],
    )
    sent = upstream.requests_for("mid")[-1].body
    assert sent["messages"] == [{"role": "system", "content": "Rules."},
                                {"role": "user", "content": [{"type": "text", "text": "Hi"},
                                                             {"type": "text", "text": "there"}]}]


@pytest.mark.parametrize("model", ["cheap", "claude"])
def test_stop_reasons(claude: anthropic.Anthropic, upstream: FakeUpstream, model: str) -> None:
    stopped = claude.messages.create(model=model, max_tokens=50, stop_sequences=["from"], messages=_user("x"))  # type: ignore[arg-type]
    assert (stopped.stop_reason, stopped.stop_sequence) == ("stop_sequence", "from")
    assert stopped.content[0].text == "Hello "  # type: ignore[union-attr]
    cut = claude.messages.create(model=model, max_tokens=2, messages=_user("x"))  # type: ignore[arg-type]
    assert cut.stop_reason == "max_tokens" and cut.content[0].text == "Hello from"  # type: ignore[union-attr]


@pytest.mark.parametrize("model", ["cheap", "claude"])
def test_tools_round_trip(claude: anthropic.Anthropic, upstream: FakeUpstream, model: str) -> None:
    asked = _user("weather in Paris")
    first = claude.messages.create(model=model, max_tokens=100, tools=[TOOL], messages=asked,  # type: ignore[arg-type,list-item]
                                   tool_choice={"type": "tool", "name": "lookup"})
    assert first.stop_reason == "tool_use"
    call = next(b for b in first.content if b.type == "tool_use")
    assert call.name == "lookup" and call.input == {"query": "weather in Paris"}  # type: ignore[union-attr]
    history = [*asked, {"role": "assistant", "content": [b.model_dump() for b in first.content]},
               {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id,  # type: ignore[union-attr]
                                             "content": [{"type": "text", "text": "sunny"}]}]}]
    second = claude.messages.create(model=model, max_tokens=100, tools=[TOOL], messages=history)  # type: ignore[arg-type,list-item]
    assert second.stop_reason == "end_turn" and second.content[-1].text.startswith("Hello from")  # type: ignore[union-attr]
    if model == "cheap":
        sent = upstream.requests_for("cheap")[-1].body
        assert sent["tools"] == [{"type": "function", "function": {
            "name": "lookup", "description": "Look something up", "parameters": TOOL["input_schema"]}}]
        assistant, result = sent["messages"][1:]
        assert assistant["tool_calls"][0]["id"] == call.id  # type: ignore[union-attr]
        assert assistant["tool_calls"][0]["function"] == {"name": "lookup", "arguments": '{"query":"weather in Paris"}'}
        assert result == {"role": "tool", "tool_call_id": call.id, "content": "sunny"}  # type: ignore[union-attr]
        first_sent = upstream.requests_for("cheap")[-2].body
        assert first_sent["tool_choice"] == {"type": "function", "function": {"name": "lookup"}}
    else:
        sent = upstream.requests_for("claude-test")[-1].body
        assert sent["messages"][-1]["content"] == [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny"}]  # type: ignore[union-attr]


def test_tool_choice_mapping(claude: anthropic.Anthropic, upstream: FakeUpstream) -> None:
    for choice, expected, parallel in [({"type": "any"}, "required", None), ({"type": "none"}, "none", None),
                                       ({"type": "auto", "disable_parallel_tool_use": True}, "auto", False)]:
        claude.messages.create(model="mid", max_tokens=10, tools=[TOOL], tool_choice=choice, messages=_user("x"))  # type: ignore[arg-type,list-item]
        sent = upstream.requests_for("mid")[-1].body
        assert sent["tool_choice"] == expected and sent.get("parallel_tool_calls") == parallel


def test_images_reach_the_upstream(claude: anthropic.Anthropic, upstream: FakeUpstream) -> None:
    content = [{"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
               {"type": "image", "source": {"type": "url", "url": "https://example.test/cat.jpg"}},
               {"type": "text", "text": "What is this?"}]
    message = claude.messages.create(model="auto", max_tokens=20, messages=[{"role": "user", "content": content}])  # type: ignore[list-item]
    assert message.model == "cheap"
    parts = upstream.requests_for("cheap")[-1].body["messages"][0]["content"]
    assert parts == [{"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                     {"type": "image_url", "image_url": {"url": "https://example.test/cat.jpg"}},
                     {"type": "text", "text": "What is this?"}]


def test_streaming_text_event_sequence(claude: anthropic.Anthropic, ledger_record: Callable[[str], LedgerRecord]) -> None:
    with claude.messages.stream(model="auto", max_tokens=100, messages=_user("Say hi")) as stream:  # type: ignore[arg-type]
        events = [event.type for event in stream]
        final = stream.get_final_message()
        request_id = stream.response.headers["x-switchman-request-id"]
    assert events[0] == "message_start" and events[-1] == "message_stop"
    core = [e for e in events if e in ("content_block_start", "content_block_stop", "message_delta")]
    assert core == ["content_block_start", "content_block_stop", "message_delta"]
    assert final.content[0].text == "Hello from cheap." and final.stop_reason == "end_turn"  # type: ignore[union-attr]
    assert final.usage.output_tokens == 3 and final.usage.input_tokens > 0
    record = ledger_record(request_id)
    assert (record.api, record.status, record.output_tokens) == ("messages", "ok", 3)
    assert not record.tokens_estimated


@pytest.mark.parametrize("model", ["cheap", "claude"])
def test_streaming_tool_use_with_input_json_delta(claude: anthropic.Anthropic, model: str) -> None:
    with claude.messages.stream(model=model, max_tokens=100, tools=[TOOL], messages=_user("find cats")) as stream:  # type: ignore[arg-type,list-item]
        deltas = [e.delta.partial_json for e in stream if e.type == "content_block_delta"  # type: ignore[union-attr]
                  and e.delta.type == "input_json_delta"]  # type: ignore[union-attr]
        final = stream.get_final_message()
    assert len(deltas) == 2 and "".join(deltas) == '{"query": "find cats"}'
    call = final.content[-1]
    assert final.stop_reason == "tool_use" and call.type == "tool_use"
    assert call.name == "lookup" and call.input == {"query": "find cats"}  # type: ignore[union-attr]


def test_a_stream_that_breaks_ends_with_an_error_event(
    claude: anthropic.Anthropic, upstream: FakeUpstream, ledger_record: Callable[[str], LedgerRecord]
) -> None:
    upstream.inject("drop_mid_stream", model="cheap", after_events=3)
    with pytest.raises(anthropic.APIStatusError) as info, \
            claude.messages.stream(model="cheap", max_tokens=100, messages=_user("x")) as stream:  # type: ignore[arg-type]
        request_id = stream.response.headers["x-switchman-request-id"]
        for _ in stream:
            pass
    assert "cheap" in str(info.value)
    assert ledger_record(request_id).status == "stream_error"


def test_count_tokens(claude: anthropic.Anthropic, gateway: Gateway) -> None:
    short = claude.messages.count_tokens(model="auto", messages=_user("hi"))  # type: ignore[arg-type]
    long = claude.messages.count_tokens(model="auto", system="You are a helpful assistant. " * 20,
                                        messages=_user("hi"), tools=[TOOL])  # type: ignore[arg-type,list-item]
    expected = gateway.decider.request([{"role": "user", "content": "hi"}]).input_tokens
    assert short.input_tokens == expected
    assert long.input_tokens > short.input_tokens + 100


def test_anthropic_error_envelopes(claude: anthropic.Anthropic, http: httpx.Client,
                                   ledger_record: Callable[[str], LedgerRecord]) -> None:
    cases: list[tuple[Any, int, str]] = [
        (b"{not json", 400, "not valid JSON"),
        ({"model": "auto", "messages": _user("x")}, 400, "max_tokens"),
        ({"model": "auto", "max_tokens": 5, "messages": []}, 400, "messages"),
        ({"model": "auto", "max_tokens": 5, "messages": [{"role": "robot", "content": "x"}]}, 400, "role"),
        ({"model": "auto", "max_tokens": 5, "temperature": 3, "messages": _user("x")}, 400, "temperature"),
        ({"model": "auto", "max_tokens": 5, "messages": [{"role": "user", "content": [
            {"type": "document", "source": {"type": "base64", "data": "x"}}]}]}, 400, "'document'"),
        ({"model": "auto", "max_tokens": 5, "tools": [{"type": "bash_20250124", "name": "bash"}],
          "messages": _user("x")}, 400, "Anthropic's own tools"),
        ({"model": "no-such-model", "max_tokens": 5, "messages": _user("x")}, 404, "unknown model"),
    ]
    for body, status, words in cases:
        if isinstance(body, bytes):
            response = http.post("/v1/messages", content=body, headers={"content-type": "application/json"})
        else:
            response = http.post("/v1/messages", json=body)
        assert response.status_code == status, (body, response.text)
        data = response.json()
        assert data["type"] == "error" and words in data["error"]["message"], data
        assert data["error"]["type"] == ("not_found_error" if status == 404 else "invalid_request_error")
        assert ledger_record(response.headers["x-switchman-request-id"]).status == "bad_request"
    with pytest.raises(anthropic.NotFoundError):
        claude.messages.create(model="no-such-model", max_tokens=5, messages=_user("x"))  # type: ignore[arg-type]
    assert http.get("/v1/messages").status_code == 405


def test_translation_round_trips_to_an_anthropic_upstream() -> None:
    """Anthropic in → chat body → Anthropic out gives the request back (the two translations are inverses)."""
    from switchman.gateway._anthropic import to_anthropic
    from switchman.gateway._dialects._messages import chat_from_messages

    request: dict[str, Any] = {
        "model": "claude-x", "max_tokens": 300, "stop_sequences": ["END"], "metadata": {"user_id": "u-1"},
        "system": [{"type": "text", "text": "Rules.", "cache_control": {"type": "ephemeral"}}],
        "tools": [TOOL], "tool_choice": {"type": "tool", "name": "lookup", "disable_parallel_tool_use": True},
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Look", "cache_control": {"type": "ephemeral"}},
                                         {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                                      "data": PNG}}]},
            {"role": "assistant", "content": [{"type": "text", "text": "Calling."},
                                              {"type": "tool_use", "id": "t1", "name": "lookup", "input": {"q": 1}},
                                              {"type": "tool_use", "id": "t2", "name": "lookup", "input": {"q": 2}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "one"},
                                         {"type": "tool_result", "tool_use_id": "t2", "content": "two"},
                                         {"type": "text", "text": "Go on."}]},
        ],
    }
    back = to_anthropic(chat_from_messages(dict(request)), "claude-x", stream=False)
    assert {k: back[k] for k in request} == request
