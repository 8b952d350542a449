"""Bodies large in items rather than bytes: more messages, content parts, tool calls or tools than `server.limits`
allows are a 400 in each API's envelope, naming the field and the cap, before any validation; a body at the caps
is served. (A 4 MB body of 130,000 Anthropic tool definitions took 3.11 s of CPU under the GIL without them.)"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import openai
import orjson
import pytest
from security_support import config_data, running_gateway

from switchman._limits import ServerLimits
from switchman.testing import FakeUpstream

CAPS = ServerLimits()
_USER = {"role": "user", "content": "a"}
_CALL = {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
_Body = Callable[[int], dict[str, Any]]

_TOOL_USE = {"type": "tool_use", "id": "t", "name": "f", "input": {}}
_TOOL_RESULT = {"type": "tool_result", "tool_use_id": "t", "content": "r"}
_FUNCTION_CALL = {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"}


def _anthropic(messages: list[Any], **fields: Any) -> dict[str, Any]:
    return {"model": "auto", "max_tokens": 5, "messages": messages, **fields}


#: (path, the field the error names, the setting, what the message says is counted, a body with n items).
_SHAPES: dict[str, tuple[str, str, str, str, _Body]] = {
    "chat messages": ("/v1/chat/completions", "messages", "max_messages", "messages",
                      lambda n: {"model": "auto", "messages": [_USER] * n}),
    "chat content parts": ("/v1/chat/completions", "messages.content", "max_content_parts",
                           "content parts over all messages",
                           lambda n: {"model": "auto", "messages": [
                               {"role": "user", "content": [{"type": "text", "text": "a"}] * (n // 2)},
                               {"role": "user", "content": [{"type": "text", "text": "b"}] * (n - n // 2)}]}),
    "chat tool calls": ("/v1/chat/completions", "messages.tool_calls", "max_tool_calls", "tool calls over all messages",
                        lambda n: {"model": "auto", "messages": [_USER, {"role": "assistant", "tool_calls": [_CALL] * n}]}),
    "chat tools": ("/v1/chat/completions", "tools", "max_tools", "tools",
                   lambda n: {"model": "auto", "messages": [_USER],
                              "tools": [{"type": "function", "function": {"name": "f"}}] * n}),
    "route messages": ("/v1/route", "messages", "max_messages", "messages",
                       lambda n: {"model": "auto", "messages": [_USER] * n}),
    "anthropic messages": ("/v1/messages", "messages", "max_messages", "messages", lambda n: _anthropic([_USER] * n)),
    "anthropic blocks": ("/v1/messages", "messages.content", "max_content_parts", "content parts over system and all",
                         lambda n: _anthropic([{"role": "user", "content": [{"type": "text", "text": "a"}] * (n - 1)}],
                                              system=[{"type": "text", "text": "s"}])),
    "anthropic system blocks": ("/v1/messages", "system", "max_content_parts", "content parts over system and all",
                                lambda n: _anthropic([_USER], system=[{"type": "text", "text": "s"}] * n)),
    "anthropic tool_result blocks": (
        "/v1/messages", "messages.content.content", "max_content_parts", "a tool_result's own blocks included",
        lambda n: _anthropic([{"role": "user", "content": [
            {**_TOOL_RESULT, "content": [{"type": "text", "text": "r"}] * n}]}])),
    "anthropic tool_use": ("/v1/messages", "messages.content", "max_tool_calls", "tool calls (tool_use blocks)",
                           lambda n: _anthropic([_USER, {"role": "assistant", "content": [_TOOL_USE] * n}, _USER])),
    "anthropic tool results": ("/v1/messages", "messages.content", "max_messages", "each tool_result block counted",
                               lambda n: _anthropic([{"role": "user", "content": [_TOOL_RESULT] * (n - 1)}])),
    "anthropic tools": ("/v1/messages", "tools", "max_tools", "tools",
                        lambda n: _anthropic([_USER], tools=[{"name": "f", "input_schema": {"type": "object"}}] * n)),
    "count_tokens tools": ("/v1/messages/count_tokens", "tools", "max_tools", "tools",
                           lambda n: {"model": "auto", "messages": [_USER],
                                      "tools": [{"name": "f", "input_schema": {"type": "object"}}] * n}),
    "responses input": ("/v1/responses", "input", "max_messages", "input items",
                        lambda n: {"model": "auto", "input": [_USER] * n}),
    "responses parts": ("/v1/responses", "input.content", "max_content_parts", "content parts over all input items",
                        lambda n: {"model": "auto", "input": [
                            {"role": "user", "content": [{"type": "input_text", "text": "a"}] * n}]}),
    "responses outputs": ("/v1/responses", "input.output", "max_content_parts", "content parts over all input items",
                          lambda n: {"model": "auto", "input": [
                              {"role": "user", "content": [{"type": "input_text", "text": "a"}]}, _FUNCTION_CALL,
                              {"type": "function_call_output", "call_id": "c",
                               "output": [{"type": "input_text", "text": "r"}] * (n - 1)}]}),
    "responses function calls": ("/v1/responses", "input", "max_tool_calls", "tool calls (function_call items)",
                                 lambda n: {"model": "auto", "input": [_FUNCTION_CALL] * n}),
    "responses tools": ("/v1/responses", "tools", "max_tools", "tools",
                        lambda n: {"model": "auto", "input": "a", "tools": [{"type": "function", "name": "f"}] * n}),
}
#: At the default caps an input list of more function calls than max_tool_calls holds more items than
#: max_messages (the same number), refused for that first: test_the_item_caps_follow_the_configuration lowers one.
_AT_DEFAULT_CAPS = [shape for shape in _SHAPES if shape != "responses function calls"]


def _refusal(response: httpx.Response, path: str) -> tuple[str, str | None]:
    """The 400's message and param, its envelope checked: Anthropic's on /v1/messages, OpenAI's elsewhere."""
    assert response.status_code == 400, response.text
    data = response.json()
    if path.startswith("/v1/messages"):
        assert data["type"] == "error" and data["error"]["type"] == "invalid_request_error", data
        return str(data["error"]["message"]), None
    error = data["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == "array_above_max_length", error
    return str(error["message"]), error["param"]


def _named(message: str, field: str, cap: int, what: str, setting: str) -> None:
    assert message.startswith(f"Invalid '{field}': more than {cap} "), message
    assert what in message and message.endswith(f"this gateway's limit (server.limits.{setting})"), message


@pytest.mark.parametrize("shape", _AT_DEFAULT_CAPS)
def test_a_body_over_an_item_cap_is_a_400_naming_the_field_and_at_the_cap_is_served(
        http: httpx.Client, shape: str) -> None:
    path, field, setting, what, body = _SHAPES[shape]
    cap = getattr(CAPS, setting)
    message, param = _refusal(http.post(path, json=body(cap + 1)), path)
    _named(message, field, cap, what, setting)
    assert param in (None, field)
    served = http.post(path, json=body(cap))
    assert served.status_code == 200, served.text[:500]


def test_the_real_openai_client_sees_the_400(http: httpx.Client) -> None:
    client = openai.OpenAI(base_url=f"{str(http.base_url).rstrip('/')}/v1", api_key="unused", max_retries=0)
    tools: Any = [{"type": "function", "function": {"name": "f"}}] * (CAPS.max_tools + 1)
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "a"}], tools=tools)
    assert raised.value.code == "array_above_max_length" and raised.value.param == "tools"


def test_the_item_caps_follow_the_configuration(upstream: FakeUpstream, ledger_url: str) -> None:
    """Small bodies too: a cap below the default holds whatever the body's size."""
    limits = {"max_messages": 3, "max_content_parts": 4, "max_tool_calls": 2, "max_tools": 2}
    with running_gateway(config_data(upstream, ledger_url, limits=limits)) as (_, server), \
            httpx.Client(base_url=server.url, timeout=30) as http:
        for path, field, setting, what, body in _SHAPES.values():
            cap = limits[setting]
            message, _ = _refusal(http.post(path, json=body(cap + 1)), path)
            _named(message, field, cap, what, setting)
            assert http.post(path, json=body(cap)).status_code == 200, (path, setting)


def _validations(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the body models validated from here on (ChatBody, MessagesBody), one entry per call."""
    from switchman.gateway import _schema
    from switchman.gateway._dialects import _messages

    validated: list[str] = []
    for model in (_schema.ChatBody, _messages.MessagesBody):
        validate = model.model_validate
        monkeypatch.setattr(model, "model_validate",
                            lambda data, _v=validate, _n=model.__name__, **kw: validated.append(_n) or _v(data, **kw))
    return validated


def test_a_refused_body_is_never_validated(http: httpx.Client, monkeypatch: pytest.MonkeyPatch) -> None:
    """The caps are counted before pydantic sees the body: refusing costs the parse, not the validation."""
    validated = _validations(monkeypatch)
    for shape in ("chat tools", "anthropic tools"):
        path, _, setting, _, body = _SHAPES[shape]
        assert http.post(path, json=body(getattr(CAPS, setting) + 1)).status_code == 400
    assert validated == []
    path, _, setting, _, body = _SHAPES["chat tools"]  # the spy sees a served body: the test above is not vacuous
    assert http.post(path, json=body(getattr(CAPS, setting))).status_code == 200
    assert validated == ["ChatBody"]


def test_an_anthropic_body_is_validated_once(http: httpx.Client, monkeypatch: pytest.MonkeyPatch) -> None:
    """The chat body translated from a validated Messages body is not validated again (it cost as much again)."""
    validated = _validations(monkeypatch)
    tools = [{"name": "f", "input_schema": {"type": "object"}}]
    body = {"model": "auto", "max_tokens": 5, "messages": [_USER], "tools": tools}
    assert http.post("/v1/messages", json=body).status_code == 200
    assert validated == ["MessagesBody"]  # the Messages body once, its chat translation never


def test_a_copied_configuration_counts_with_its_own_caps() -> None:
    """`model_copy(update=...)` copies the instance's attributes: the smallest cap must not be one cached before."""
    from switchman._exceptions import InvalidRequestError
    from switchman.gateway._items import item_check
    from switchman.gateway._schema import read_json

    limits = ServerLimits()
    raw = orjson.dumps({"model": "auto", "messages": [_USER], "tools": [{"type": "function", "name": "f"}] * 3})
    assert item_check(raw, limits, "chat.completions") is None  # small: not counted under the default caps
    tighter = limits.model_copy(update={"max_tools": 2})
    with pytest.raises(InvalidRequestError, match=r"server\.limits\.max_tools"):
        read_json(raw, tighter.max_json_depth, item_check(raw, tighter, "chat.completions"))


@pytest.mark.parametrize(("path", "field", "setting", "body"), [
    ("/v1/chat/completions", "messages", "max_messages", lambda n: {"model": "auto", "messages": [1] * n}),
    ("/v1/chat/completions", "tools", "max_tools", lambda n: {"model": "auto", "messages": [_USER], "tools": [0] * n}),
    ("/v1/responses", "input", "max_messages", lambda n: {"model": "auto", "input": ["a"] * n}),
])
def test_items_that_are_not_objects_count_too(http: httpx.Client, path: str, field: str, setting: str,
                                              body: _Body) -> None:
    """A list of numbers or strings where objects belong is as many items to validate: no `{` in them, so the
    pre-check that skips counting cannot go by braces (it goes by commas and brackets)."""
    cap = getattr(CAPS, setting)
    message, param = _refusal(http.post(path, json=body(cap + 1)), path)
    assert message.startswith(f"Invalid '{field}': more than {cap} ") and param == field, message
