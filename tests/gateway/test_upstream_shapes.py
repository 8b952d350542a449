"""An upstream that answers in the wrong shape: the client still gets a well-formed answer or error in its own
API's format, and the request its one ledger row (never a 500, a cut connection or a lost record)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from switchman._config import parse_config
from switchman.gateway import Gateway, build_app
from switchman.ledger import LedgerRecord
from switchman.testing import FakeUpstream

from .conftest import ENV, ServerThread, config_data
from .raw_upstream import RawUpstream, sse

ASK = [{"role": "user", "content": "hello"}]
_LOCK = threading.Lock()  # one script on the raw upstream at a time


class Site:
    def __init__(self, gateway: Gateway, http: httpx.Client, raw: RawUpstream) -> None:
        self.gateway, self.http, self.raw = gateway, http, raw

    def record(self, request_id: str) -> LedgerRecord:
        assert self.gateway.ledger is not None
        self.gateway.ledger.flush_sync(timeout=5)
        found = [r for r in self.gateway.ledger.records() if r.request_id == request_id]
        assert len(found) == 1, f"{len(found)} ledger rows for {request_id}"
        return found[0]


@pytest.fixture(scope="module")
def site(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    data = config_data(upstream, f"sqlite:///{tmp_path_factory.mktemp('shapes') / 'ledger.sqlite3'}")
    with RawUpstream() as raw:
        data["providers"]["raw-openai"] = {"kind": "openai", "base_url": raw.url, "api_key_env": "FAKE_OPENAI_KEY"}
        data["providers"]["raw-anthropic"] = {"kind": "anthropic", "base_url": raw.url,
                                              "api_key_env": "FAKE_ANTHROPIC_KEY"}
        caps = ["tools", "json", "vision"]
        data["models"]["rawo"] = {"provider": "raw-openai", "input_price": 1.0, "output_price": 2.0, "capabilities": caps}
        data["models"]["rawa"] = {"provider": "raw-anthropic", "input_price": 1.0, "output_price": 2.0,
                                  "capabilities": caps}
        data["server"]["retries"] = {"attempts": 0}
        gateway = Gateway.from_config(parse_config(data), env=ENV)
        with ServerThread(build_app(gateway), gateway.config.server.limits) as url, \
                httpx.Client(base_url=url, timeout=10) as http:
            yield Site(gateway, http, raw)


def _chunk(**fields: Any) -> dict[str, Any]:
    return {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m", **fields}


def _text(text: str) -> dict[str, Any]:
    return _chunk(choices=[{"index": 0, "delta": {"content": text}, "finish_reason": None}])


def _openai_answer(usage: Any) -> dict[str, Any]:
    return {"id": "c", "object": "chat.completion", "created": 0, "model": "m", "usage": usage,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "four words of answer"},
                         "finish_reason": "stop"}]}


def _anthropic_answer(usage: Any) -> dict[str, Any]:
    return {"id": "m", "type": "message", "role": "assistant", "model": "m", "usage": usage, "stop_reason": "end_turn",
            "content": [{"type": "text", "text": "four words of answer"}]}


def _anthropic_stream(usage: Any) -> list[bytes]:
    events = [("message_start", {"type": "message_start", "message": {"id": "m", "usage": {"input_tokens": 3}}}),
              ("content_block_start", {"type": "content_block_start", "index": 0,
                                       "content_block": {"type": "text", "text": ""}}),
              ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                       "delta": {"type": "text_delta", "text": "four words of answer"}}),
              ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": usage}),
              ("message_stop", {"type": "message_stop"})]
    return [f"event: {name}\n".encode() + piece for name, data in events for piece in sse(data)]


BAD_USAGE = {
    "negative": ({"prompt_tokens": -5, "completion_tokens": -1_000_000_000}, {"input_tokens": -5, "output_tokens": -9}),
    "huge": ({"prompt_tokens": 10**19, "completion_tokens": 1}, {"input_tokens": 3, "output_tokens": 10**19}),
    "not_a_number": ({"prompt_tokens": "many", "completion_tokens": 2}, {"input_tokens": 3, "output_tokens": "x"}),
}


@pytest.mark.parametrize("bad", list(BAD_USAGE))
@pytest.mark.parametrize("model", ["rawo", "rawa"])
@pytest.mark.parametrize("stream", [False, True])
def test_implausible_usage_is_estimated_and_recorded(site: Site, bad: str, model: str, stream: bool) -> None:
    openai_usage, anthropic_usage = BAD_USAGE[bad]
    with _LOCK:
        if model == "rawo" and stream:
            site.raw.answer(sse(_text("four words of answer"), _chunk(choices=[], usage=openai_usage), b"[DONE]"),
                            stream=True)
        elif model == "rawo":
            site.raw.answer(_openai_answer(openai_usage))
        elif stream:
            site.raw.answer(_anthropic_stream(anthropic_usage), stream=True)
        else:
            site.raw.answer(_anthropic_answer(anthropic_usage))
        response = site.http.post("/v1/chat/completions", json={"model": model, "messages": ASK, "stream": stream})
    assert response.status_code == 200, response.text
    assert "four words" in response.text
    record = site.record(response.headers["x-switchman-request-id"])
    assert record.status == "ok" and record.tokens_estimated
    assert 0 < record.input_tokens < 1000 and 0 <= record.output_tokens < 1000 and record.cost_usd >= 0


@pytest.mark.parametrize("choices", ["a string", ["a string"], [{"message": "a string"}], [{"message": None}], [5]])
def test_an_answer_with_choices_of_the_wrong_shape_is_relayed_and_recorded(site: Site, choices: Any) -> None:
    with _LOCK:
        site.raw.answer({"id": "c", "object": "chat.completion", "choices": choices})
        response = site.http.post("/v1/chat/completions", json={"model": "rawo", "messages": ASK})
    assert response.status_code == 200, response.text
    assert response.json()["choices"] == choices  # passed through as the upstream sent it
    record = site.record(response.headers["x-switchman-request-id"])
    assert record.status == "ok" and record.tokens_estimated and record.output_tokens == 0


def _call(**fields: Any) -> dict[str, Any]:
    return _chunk(choices=[{"index": 0, "delta": {"tool_calls": [fields]}, "finish_reason": None}])


#: Streams of an OpenAI-compatible upstream with chunks of the wrong shape, each after some good text.
ODD_STREAMS = {
    "choices_a_string": [_chunk(choices="x")],
    "choice_a_string": [_chunk(choices=["x"])],
    "delta_a_list": [_chunk(choices=[{"index": 0, "delta": [1]}])],
    "content_a_number": [_chunk(choices=[{"index": 0, "delta": {"content": 5}}])],
    "tool_calls_a_string": [_chunk(choices=[{"index": 0, "delta": {"tool_calls": "x"}}])],
    "tool_call_a_number": [_chunk(choices=[{"index": 0, "delta": {"tool_calls": [5]}}])],
    "tool_call_index_a_string": [_call(index="a", id="t", function={"name": "f", "arguments": "{}"})],
    "tool_call_index_huge": [_call(index=10**15, id="t", function={"name": "f", "arguments": "{}"})],
    "function_a_string": [_call(index=0, function="x")],
    "arguments_a_number": [_call(index=0, id="t", function={"name": ["f"], "arguments": 7})],
    "finish_an_object": [_chunk(choices=[{"index": 0, "delta": {}, "finish_reason": {"a": 1}}])],
    "usage_a_string": [_chunk(choices=[], usage="x")],
    "usage_too_large": [_chunk(choices=[], usage={"prompt_tokens": 10**19, "completion_tokens": 1})],
}


@pytest.mark.parametrize("odd", list(ODD_STREAMS))
@pytest.mark.parametrize("path", ["/v1/messages", "/v1/responses"])
def test_a_dialect_stream_with_chunks_of_the_wrong_shape_ends_properly(site: Site, odd: str, path: str) -> None:
    body: dict[str, Any] = {"model": "rawo", "stream": True}
    body.update({"max_tokens": 50, "messages": ASK} if path == "/v1/messages" else {"input": "hello"})
    with _LOCK:
        site.raw.answer(sse(_text("good text"), *ODD_STREAMS[odd], _text(" and more"), b"[DONE]"), stream=True)
        with site.http.stream("POST", path, json=body) as response:
            text = response.read().decode()
    assert response.status_code == 200
    events = [line.removeprefix("event: ") for line in text.splitlines() if line.startswith("event: ")]
    assert events[-1] == ("message_stop" if path == "/v1/messages" else "response.completed"), text
    assert "good text" in text and " and more" in text
    assert site.record(response.headers["x-switchman-request-id"]).status == "ok"


@pytest.mark.parametrize("path", ["/v1/messages", "/v1/responses"])
@pytest.mark.parametrize("event", [b"[1, 2]", b'"a string"', b"null", b"{not json"])
def test_a_dialect_stream_event_that_is_not_an_object_fails_the_stream_cleanly(site: Site, path: str,
                                                                              event: bytes) -> None:
    body: dict[str, Any] = {"model": "rawo", "stream": True}
    body.update({"max_tokens": 50, "messages": ASK} if path == "/v1/messages" else {"input": "hello"})
    with _LOCK:
        site.raw.answer(sse(_text("good text"), event, _text(" and more"), b"[DONE]"), stream=True)
        with site.http.stream("POST", path, json=body) as response:
            text = response.read().decode()
    events = [line.removeprefix("event: ") for line in text.splitlines() if line.startswith("event: ")]
    assert events[-1] == ("error" if path == "/v1/messages" else "response.failed"), text
    assert "not a JSON object" in text
    assert site.record(response.headers["x-switchman-request-id"]).status == "stream_error"


@pytest.mark.parametrize("before", [0, 1])
def test_a_stream_failing_at_its_first_piece_opens_before_its_error_for_the_sdk_clients(site: Site, before: int) -> None:
    # The opening events (response.created; message_start) were made with the first piece, and lost when an event
    # of it failed the stream: the openai SDK raised "Expected to have received `response.created` before `error`".
    import anthropic
    import openai

    bad = sse(b"null")[0]
    piece = b"".join(sse(_text("good text"))[:before]) + bad  # the failing event, after some text or not
    with _LOCK:
        site.raw.answer([piece, *sse(_text(" and more"), b"[DONE]")], stream=True)
        with openai.OpenAI(base_url=f"{site.http.base_url}/v1", api_key="unused", max_retries=0) as client, \
                client.responses.stream(model="rawo", input="hello") as stream:
            events = [event.type for event in stream]
        assert events[:2] == ["response.created", "response.in_progress"] and events[-2:] == ["error", "response.failed"]
        assert ("response.output_text.delta" in events) == bool(before)  # the text before the bad event went out
        with anthropic.Anthropic(base_url=str(site.http.base_url), api_key="unused", max_retries=0) as claude, \
                pytest.raises(anthropic.APIStatusError, match="not a JSON object"), \
                claude.messages.stream(model="rawo", max_tokens=50, messages=ASK) as messages:  # type: ignore[arg-type]
            seen = []
            for message_event in messages:
                seen.append(message_event.type)
    assert seen[:1] == ["message_start"]
    assert ("text" in seen) == bool(before)


ODD_ANSWERS = {
    "choices_a_string": "x",
    "message_a_string": [{"message": "x"}],
    "content_a_number": [{"message": {"content": 5}}],
    "tool_calls_a_string": [{"message": {"content": "hi", "tool_calls": "x"}}],
    "tool_call_a_number": [{"message": {"content": "hi", "tool_calls": [5]}}],
    "function_a_string": [{"message": {"content": "hi", "tool_calls": [{"id": "t", "function": "x"}]}}],
    "arguments_a_number": [{"message": {"tool_calls": [{"id": "t", "function": {"name": "f", "arguments": 7}}]}}],
    "finish_an_object": [{"message": {"content": "hi"}, "finish_reason": {"a": 1}}],
}


@pytest.mark.parametrize("odd", list(ODD_ANSWERS))
@pytest.mark.parametrize("path", ["/v1/messages", "/v1/responses"])
def test_a_dialect_answer_of_the_wrong_shape_is_translated_not_a_500(site: Site, odd: str, path: str) -> None:
    body: dict[str, Any] = {"model": "rawo"}
    body.update({"max_tokens": 50, "messages": ASK} if path == "/v1/messages" else {"input": "hello"})
    with _LOCK:
        site.raw.answer({"id": "c", "object": "chat.completion", "choices": ODD_ANSWERS[odd],
                         "usage": {"prompt_tokens": 1, "completion_tokens": 1}})
        response = site.http.post(path, json=body)
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["type" if path == "/v1/messages" else "object"] == ("message" if path == "/v1/messages" else "response")
    assert site.record(response.headers["x-switchman-request-id"]).status == "ok"


@pytest.mark.parametrize("path", ["/v1/messages", "/v1/responses"])
def test_streamed_tool_arguments_sent_as_an_object_reach_the_client_as_its_json(site: Site, path: str) -> None:
    # As in a non-streamed answer (`first_answer`): an upstream that sends the arguments as the object itself,
    # not the JSON text of it, still has its call's arguments relayed (before: dropped, the call made with none).
    body: dict[str, Any] = {"model": "rawo", "stream": True}
    body.update({"max_tokens": 50, "messages": ASK} if path == "/v1/messages" else {"input": "hello"})
    with _LOCK:
        site.raw.answer(sse(_call(index=0, id="t1", function={"name": "weather", "arguments": {"city": "Paris"}}),
                            _chunk(choices=[{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]), b"[DONE]"),
                        stream=True)
        with site.http.stream("POST", path, json=body) as response:
            text = response.read().decode()
    events = [orjson.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]
    if path == "/v1/messages":
        arguments = "".join(e["delta"]["partial_json"] for e in events if e["type"] == "content_block_delta")
    else:
        done = next(e for e in events if e["type"] == "response.completed")
        arguments = next(i["arguments"] for i in done["response"]["output"] if i["type"] == "function_call")
    assert orjson.loads(arguments) == {"city": "Paris"}, text


@pytest.mark.parametrize(("pieces", "expected"), [
    (['{"ci', 'ty": "Par', 'is"}'], {"city": "Paris"}),
    ([" ", ' {"city": ', '"Paris"}'], {"city": "Paris"}),  # whitespace first: not sent alone
    (["{not ", "json"], {"arguments": "{not json"}),  # a small model's broken JSON
    (['{"city": ', '"Par'], {}),  # cut off once its start went out: the client keeps what it read of it
    (['{"city": "Paris"}', "}"], {"city": "Paris"}),  # a stray brace after the object: held back
    (["[1, ", "2]"], {"value": [1, 2]}),  # JSON, but no object
])
def test_streamed_tool_arguments_reach_an_anthropic_client_as_the_object_a_non_streamed_answer_gives(
        site: Site, pieces: list[str], expected: dict[str, Any]) -> None:
    # Anthropic's SDK parses the input_json_deltas so far as JSON at each one: arguments that are not JSON made
    # it raise mid-stream ("Unable to parse tool parameter JSON"), JSON of another kind left a list as the input.
    import anthropic

    first = _call(index=0, id="t1", function={"name": "weather", "arguments": pieces[0]})
    rest = [_call(index=0, function={"arguments": piece}) for piece in pieces[1:]]
    with _LOCK:
        site.raw.answer(sse(_text("Let me look."), first, *rest,
                            _chunk(choices=[{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]), b"[DONE]"),
                        stream=True)
        with anthropic.Anthropic(base_url=str(site.http.base_url), api_key="unused", max_retries=0) as client, \
                client.messages.stream(model="rawo", max_tokens=50, messages=ASK) as stream:  # type: ignore[arg-type]
            final = stream.get_final_message()
            request_id = stream.response.headers["x-switchman-request-id"]
    call = final.content[-1]
    assert final.content[0].type == "text" and final.content[0].text == "Let me look."
    assert call.type == "tool_use" and call.name == "weather" and call.input == expected
    assert final.stop_reason == "tool_use"
    assert site.record(request_id).status == "ok"


def test_an_anthropic_stream_whose_closing_usage_has_null_input_counts_keeps_the_opening_ones(site: Site) -> None:
    # Anthropic's message_delta usage may carry input_tokens and the cache counts as null (its SDK types them
    # Optional): not reported there, so the message_start counts stand (before: the input was recorded as 0 tokens).
    usage = {"input_tokens": None, "cache_read_input_tokens": None, "cache_creation_input_tokens": None,
             "output_tokens": 7}
    with _LOCK:
        site.raw.answer(_anthropic_stream(usage), stream=True)
        response = site.http.post("/v1/chat/completions", json={"model": "rawa", "messages": ASK, "stream": True})
    assert response.status_code == 200, response.text
    record = site.record(response.headers["x-switchman-request-id"])
    assert (record.input_tokens, record.output_tokens, record.tokens_estimated) == (3, 7, False)
