"""Hostile bodies on the other APIs (/v1/messages, /v1/messages/count_tokens, /v1/responses): a 400 in the API's
own error envelope naming the field, and the ledger row of the refused request; never a 500."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from switchman._config import parse_config
from switchman.gateway import Gateway, build_app
from switchman.ledger import KeyStore, LedgerRecord
from switchman.testing import FakeUpstream

from .conftest import ENV, MASTER_KEY, ServerThread, config_data

USER = [{"role": "user", "content": "hello"}]


def _messages(content: Any) -> dict[str, Any]:
    return {"model": "auto", "max_tokens": 20, "messages": [{"role": "user", "content": content}]}


def assert_anthropic_400(response: httpx.Response, words: str) -> None:
    assert response.status_code == 400, response.text
    data = response.json()
    assert data["type"] == "error" and data["error"]["type"] == "invalid_request_error", data
    assert words in data["error"]["message"], data
    assert "Traceback" not in response.text


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (_messages([{"type": "image", "source": "https://example.test/cat.png"}]), "messages.0.content.0.source"),
        (_messages([{"type": "image", "source": [1]}]), "messages.0.content.0.source"),
        (_messages([{"type": "image", "source": None}]), "messages.0.content.0.source"),
        (_messages([{"type": "image", "source": {"type": "base64", "data": {"a": 1}}}]),
         "messages.0.content.0.source.data"),
        (_messages([{"type": "image", "source": {"type": "url", "url": ["x"]}}]), "messages.0.content.0.source.url"),
        (_messages([{"type": "tool_result", "tool_use_id": "t", "content": [{"type": "image", "source": 5}]}]),
         "messages.0.content.0.content.0.source"),
        ({**_messages("hi"), "system": [{"type": "image", "source": "x"}]}, "system.0.source"),
        (_messages([{"type": "text", "text": {"nested": "object"}}]), "messages.0.content.0.text"),
        (_messages([{"type": "text", "text": 5}]), "messages.0.content.0.text"),
    ],
)
def test_malformed_blocks_are_400s_with_a_ledger_row(http: httpx.Client, body: dict[str, Any], words: str,
                                                     ledger_record: Callable[[str], LedgerRecord]) -> None:
    response = http.post("/v1/messages", json=body)
    assert_anthropic_400(response, words)
    assert ledger_record(response.headers["x-switchman-request-id"]).status == "bad_request"
    assert_anthropic_400(http.post("/v1/messages/count_tokens", json=body), words)


@pytest.mark.parametrize(
    ("headers", "body", "words"),
    [
        ({"X-Switchman-Escalate": "maybe"}, {}, "X-Switchman-Escalate must be"),
        ({"X-Switchman-Cache": "sometimes"}, {}, "X-Switchman-Cache must be on or off"),
        ({}, {"metadata": {"tags": 5}}, "metadata.tags must be"),
    ],
)
def test_count_tokens_refuses_what_messages_refuses(http: httpx.Client, headers: dict[str, str],
                                                   body: dict[str, Any], words: str) -> None:
    """count_tokens reads its request as /v1/messages does: a bad switchman header or metadata is the same 400."""
    sent = {**_messages("hi"), **body}
    assert_anthropic_400(http.post("/v1/messages", json=sent, headers=headers), words)
    assert_anthropic_400(http.post("/v1/messages/count_tokens", json=sent, headers=headers), words)


def test_count_tokens_keeps_no_row_takes_no_rpm_and_holds_the_key_to_its_agents(
        upstream: FakeUpstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No model is called: no ledger row and nothing from the key's rpm; its agent binding is /v1/messages' 403."""
    url = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    data = config_data(upstream, url)
    data["server"]["key_limits"] = {"rpm": 2}
    store = KeyStore(url)
    key = store.create("team-a-bot", agents=["team-a"])[1]
    store.close()
    built = Gateway.from_config(parse_config(data), env={**ENV, "SWITCHMAN_MASTER_KEY": MASTER_KEY})
    monkeypatch.setattr(built.dispatcher.callers.limiter, "_clock", lambda: 1000.0)  # no refill while we count
    with ServerThread(build_app(built)) as base, httpx.Client(
            base_url=base, timeout=30, headers={"authorization": f"Bearer {key}"}) as client:
        counted = [client.post("/v1/messages/count_tokens", json=_messages("hi")) for _ in range(4)]
        other_agent = {"x-switchman-agent": "team-b"}
        refused = [client.post(path, json=_messages("hi"), headers=other_agent)
                   for path in ("/v1/messages/count_tokens", "/v1/messages")]
        sent = [client.post("/v1/messages", json=_messages("hi")) for _ in range(3)]
    assert [r.status_code for r in counted] == [200] * 4 and counted[0].json()["input_tokens"] > 0
    for response in refused:
        assert response.status_code == 403, response.text
        assert response.json()["error"]["type"] == "permission_error" and "team-b" in response.text
    # The key's 2 a minute are both left for messages after four counts (and the refused message took none).
    assert [r.status_code for r in sent] == [200, 200, 429], sent[-1].text
    assert built.ledger is not None
    built.ledger.flush_sync(timeout=5)
    rows = sorted(r.status for r in built.ledger.records())
    assert rows == ["bad_request", "ok", "ok", "rejected_rate_limit"]  # /v1/messages' four rows, no count's


@pytest.mark.parametrize("kind", [[1], {"a": 1}, 5, None])
def test_a_responses_item_type_that_is_not_a_string_is_a_400(http: httpx.Client, kind: Any,
                                                            ledger_record: Callable[[str], LedgerRecord]) -> None:
    response = http.post("/v1/responses", json={"model": "auto", "input": [{"type": kind, "content": "x"}]})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == "input.0.type" and error["code"] == "invalid_value", error
    assert ledger_record(response.headers["x-switchman-request-id"]).status == "bad_request"


@pytest.mark.parametrize(("field", "value"), [("stream", "no"), ("stream", 1), ("store", "false"),
                                              ("parallel_tool_calls", "no"), ("metadata", [1]), ("metadata", "x")])
def test_responses_flags_of_the_wrong_type_are_400s(http: httpx.Client, field: str, value: Any) -> None:
    response = http.post("/v1/responses", json={"model": "auto", "input": "hello", field: value})
    assert response.status_code == 400, response.text[:300]
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["param"] == field and error["code"] == "invalid_value", error


_CALL = {"type": "function_call", "call_id": "c1", "name": "lookup", "arguments": '{"q": "x"}'}
_OUTPUT = {"type": "function_call_output", "call_id": "c1", "output": "42"}


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/responses", {"input": [{**_CALL, "arguments": {"q": "x"}}, _OUTPUT]}, "input.0.arguments"),
        ("/v1/responses", {"input": [_CALL, {**_OUTPUT, "output": {"r": 1}}]}, "input.1.output"),
        ("/v1/responses", {"input": [{**_CALL, "name": ["lookup"]}, _OUTPUT]}, "input.0.name"),
        ("/v1/responses", {"input": [{**_CALL, "call_id": 7}, _OUTPUT]}, "input.0.call_id"),
        ("/v1/responses", {"input": [{"role": "user", "content": [{"type": "input_text", "text": {"a": 1}}]}]},
         "input.0.content.0.text"),
        ("/v1/messages", _messages([{"type": "tool_result", "tool_use_id": "t", "content": {"a": 1}}]),
         "messages.0.content.0.content"),
        ("/v1/messages", _messages([{"type": "tool_result", "tool_use_id": ["t"], "content": "42"}]),
         "messages.0.content.0.tool_use_id"),
        ("/v1/messages", {**_messages("hi"), "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "lookup", "input": "q=x"}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "42"}]}]},
         "messages.1.content.0.input"),
        ("/v1/messages", {**_messages("hi"), "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": {"x": 1}, "name": "lookup", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "42"}]}]},
         "messages.1.content.0.id"),
    ],
)
def test_a_call_or_result_field_of_another_type_is_a_400_not_its_python_repr_sent_on(
        http: httpx.Client, upstream: FakeUpstream, path: str, body: dict[str, Any], param: str,
        ledger_record: Callable[[str], LedgerRecord]) -> None:
    # Before: str() of it went to the model ("{'q': 'x'}": no JSON, and no text the client sent), answered 200.
    response = http.post(path, json={"model": "auto", **body})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["type"], error.get("param", param)) == ("invalid_request_error", param), error
    assert param in error["message"], error
    assert not upstream.requests  # nothing reached a model
    assert ledger_record(response.headers["x-switchman-request-id"]).status == "bad_request"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"max_output_tokens": -1}, "max_output_tokens"),
        ({"max_output_tokens": "20"}, "max_output_tokens"),
        ({"tools": [{"type": "function", "name": "f", "parameters": 5}]}, "tools.0.parameters"),
        ({"tools": [{"type": "function", "name": "f", "description": ["d"]}]}, "tools.0.description"),
        ({"tool_choice": {"type": "function", "name": 5}}, "tool_choice.name"),
        ({"temperature": 5}, "temperature"),
    ],
)
def test_a_responses_400_names_the_field_the_client_sent(http: httpx.Client, body: dict[str, Any], param: str) -> None:
    # Before: the chat body's field it was translated to (max_tokens, tools.0.function.parameters, ...).
    response = http.post("/v1/responses", json={"model": "auto", "input": "hello", **body})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and f"'{param}'" in error["message"], error


@pytest.mark.parametrize(("chat_param", "param"), [
    ("response_format.json_schema.schema", "text.format.schema"),
    ("response_format.json_schema.schema.properties", "text.format.schema.properties"),
    ("response_format.json_schema.strict", "text.format.strict"),
    ("response_format.json_schema", "text.format"),
    ("response_format.type", "text.format.type"),
    ("response_format", "text.format"),
])
def test_a_response_format_param_names_the_flat_text_format_field(chat_param: str, param: str) -> None:
    # text.format is flat (type, name, schema, strict); the chat body nests them in response_format.json_schema.
    # Before: every response_format param became text.format, the field inside it lost.
    from switchman._exceptions import InvalidRequestError
    from switchman.gateway._dialects._responses import _in_responses_terms

    named = _in_responses_terms(InvalidRequestError(f"invalid value for {chat_param!r}: x", param=chat_param,
                                                    code="invalid_value"))
    assert named.param == param and str(named) == f"invalid value for {param!r}: x"


def test_a_prompt_too_large_names_the_field_of_each_api(upstream: FakeUpstream, tmp_path: Path) -> None:
    """The 413 names `input` on /v1/responses (it was checked on the chat body it became: `messages`)."""
    data = config_data(upstream, f"sqlite:///{tmp_path / 'ledger.sqlite3'}")
    data["server"]["limits"] = {"max_prompt_chars": 10}
    built = Gateway.from_config(parse_config(data), env=ENV)
    long = "x" * 11
    with ServerThread(build_app(built)) as base, httpx.Client(base_url=base, timeout=30) as client:
        responses = client.post("/v1/responses", json={"model": "auto", "input": long})
        chat = client.post("/v1/chat/completions", json={"model": "auto", "messages": [{"role": "user", "content": long}]})
        messages = client.post("/v1/messages", json=_messages(long))
    assert responses.status_code == 413, responses.text
    assert responses.json()["error"]["param"] == "input" and responses.json()["error"]["code"] == "prompt_too_large"
    assert chat.status_code == 413 and chat.json()["error"]["param"] == "messages", chat.text
    assert messages.status_code == 413 and "prompt" in messages.json()["error"]["message"], messages.text
    assert not upstream.requests
