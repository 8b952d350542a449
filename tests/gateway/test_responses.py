"""POST /v1/responses (stateless subset) with the real openai client's `responses.create`."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest

from switchman.ledger import LedgerRecord
from switchman.testing import FakeUpstream

TOOL = {"type": "function", "name": "lookup", "description": "Look something up",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}}


def test_string_input_and_instructions(client: openai.OpenAI, upstream: FakeUpstream,
                                       ledger_record: Callable[[str], LedgerRecord]) -> None:
    raw = client.responses.with_raw_response.create(model="auto", input="Say hi", instructions="Be brief.",
                                                    max_output_tokens=50, store=False)
    response = raw.parse()
    assert response.object == "response" and response.status == "completed" and response.model == "cheap"
    assert response.output_text == "Hello from cheap."
    assert response.usage is not None and response.usage.output_tokens == 3 and response.usage.input_tokens > 0
    sent = upstream.requests_for("cheap")[-1].body
    assert sent["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hi"}]
    assert sent["max_tokens"] == 50 and "store" not in sent
    record = ledger_record(raw.headers["x-switchman-request-id"])
    assert (record.api, record.model, record.status) == ("responses", "cheap", "ok")
    assert response.id == f"resp_{record.request_id}"


def test_items_and_a_function_tool_round_trip(client: openai.OpenAI, upstream: FakeUpstream) -> None:
    items: list[Any] = [{"role": "developer", "content": "Use tools."},
                        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "find cats"}]}]
    first = client.responses.create(model="auto", input=items, tools=[TOOL], tool_choice="required")  # type: ignore[arg-type,list-item]
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "lookup" and json.loads(calls[0].arguments) == {"query": "find cats"}
    sent = upstream.requests_for("cheap")[-1].body
    assert sent["tools"] == [{"type": "function", "function": {"name": "lookup", "description": "Look something up",
                                                               "parameters": TOOL["parameters"]}}]
    assert sent["tool_choice"] == "required"
    follow = [*items, *[c.model_dump(exclude_none=True) for c in calls],
              {"type": "function_call_output", "call_id": calls[0].call_id, "output": "a cat"}]
    second = client.responses.create(model="auto", input=follow, tools=[TOOL])  # type: ignore[arg-type,list-item]
    assert second.output_text == "Hello from cheap."
    messages = upstream.requests_for("cheap")[-1].body["messages"]
    assert messages[0] == {"role": "developer", "content": "Use tools."}
    assert messages[2]["role"] == "assistant" and messages[2]["tool_calls"][0]["id"] == calls[0].call_id
    assert messages[3] == {"role": "tool", "tool_call_id": calls[0].call_id, "content": "a cat"}


def test_json_schema_format_and_image(client: openai.OpenAI, upstream: FakeUpstream) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    client.responses.create(
        model="auto", text={"format": {"type": "json_schema", "name": "thing", "schema": schema, "strict": True}},
        input=[{"role": "user", "content": [{"type": "input_text", "text": "What is it?"},
                                            {"type": "input_image", "image_url": "https://example.test/a.png",
                                             "detail": "low"}]}],
    )
    sent = upstream.requests_for("cheap")[-1].body
    assert sent["response_format"] == {"type": "json_schema",
                                       "json_schema": {"name": "thing", "schema": schema, "strict": True}}
    assert sent["messages"][0]["content"][1] == {"type": "image_url",
                                                 "image_url": {"url": "https://example.test/a.png", "detail": "low"}}


def test_a_cut_answer_is_incomplete(client: openai.OpenAI) -> None:
    response = client.responses.create(model="auto", input="x", max_output_tokens=2)
    assert response.status == "incomplete" and response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens" and response.output_text == "Hello from"


def test_streaming_text_events(client: openai.OpenAI, ledger_record: Callable[[str], LedgerRecord]) -> None:
    with client.responses.with_streaming_response.create(model="auto", input="Say hi", stream=True) as raw:
        request_id = raw.headers["x-switchman-request-id"]
        lines = [line for line in raw.iter_lines() if line.startswith("data: ")]
    events = [json.loads(line[6:]) for line in lines]
    kinds = [e["type"] for e in events]
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                          "response.completed"]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    completed = events[-1]["response"]
    assert text == "Hello from cheap." and completed["output"][0]["content"][0]["text"] == text
    assert completed["usage"]["output_tokens"] == 3
    assert ledger_record(request_id).api == "responses"


def test_streaming_with_the_client_helper_and_tools(client: openai.OpenAI) -> None:
    with client.responses.stream(model="auto", input="find dogs", tools=[TOOL]) as stream:  # type: ignore[list-item]
        deltas = [e.delta for e in stream if e.type == "response.function_call_arguments.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == '{"query": "find dogs"}'
    call = final.output[-1]
    assert call.type == "function_call" and call.name == "lookup" and call.arguments == '{"query": "find dogs"}'
    assert final.status == "completed"


def test_a_broken_stream_fails_the_response(client: openai.OpenAI, upstream: FakeUpstream) -> None:
    upstream.inject("drop_mid_stream", model="cheap", after_events=3)
    events = list(client.responses.create(model="cheap", input="x", stream=True))
    assert events[-2].type == "error" and events[-1].type == "response.failed"
    assert events[-1].response.error is not None and "cheap" in events[-1].response.error.message


def test_unsupported_requests_are_clear_400s(http: httpx.Client, client: openai.OpenAI) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"model": "auto", "input": "x", "previous_response_id": "resp_1"}, "previous_response_id"),
        ({"model": "auto", "input": "x", "conversation": "conv_1"}, "conversation"),
        ({"model": "auto", "input": "x", "tools": [{"type": "web_search"}]}, "hosted tool"),
        ({"model": "auto", "input": [{"type": "item_reference", "id": "msg_1"}]}, "item references"),
        ({"model": "auto", "input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
         "'input_file'"),
        ({"model": "auto"}, "'input'"),
        ({"model": "auto", "input": []}, "input"),
        ({"input": "x"}, "'model'"),
    ]
    for body, words in cases:
        response = http.post("/v1/responses", json=body)
        assert response.status_code == 400, (body, response.text)
        error = response.json()["error"]
        assert words in error["message"] and error["type"] == "invalid_request_error", error
    with pytest.raises(openai.BadRequestError, match="previous_response_id"):
        client.responses.create(model="auto", input="x", previous_response_id="resp_123")
