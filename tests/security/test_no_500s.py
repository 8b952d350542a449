"""Input the schema accepts never gets a 500: a seeded Hypothesis fuzz of the chat body, the nesting cases,
the shapes that used to crash, and a 500 (if one ever happens) that says `Connection: close`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from security_support import ASK, config_data, running_gateway

from switchman.testing import FakeUpstream

FUZZ = settings(max_examples=300, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=20)


def assert_not_500(response: httpx.Response) -> None:
    assert response.status_code < 500 or response.status_code in (502, 503, 504), response.text
    if response.status_code >= 400:
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}, error
        assert "Traceback" not in response.text


TEXT = st.text(max_size=30)
OBJECT = st.dictionaries(st.text(max_size=8), JSON, max_size=4)
EXTRA = st.dictionaries(st.text(min_size=1, max_size=8).filter(lambda k: k not in KNOWN), JSON, max_size=2)
KNOWN = {"model", "messages", "stream", "stream_options", "max_tokens", "max_completion_tokens", "tools",
         "tool_choice", "response_format", "temperature", "top_p", "n", "stop", "seed", "metadata", "user", "role",
         "content", "name", "tool_calls", "tool_call_id", "type", "text", "image_url", "function", "id", "arguments",
         "description", "parameters", "json_schema", "url"}


def _with_extra(fixed: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    return st.builds(lambda a, b: {**b, **a}, fixed, EXTRA)


def _optional(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional=fields)


PART = st.one_of(
    _with_extra(st.fixed_dictionaries({"type": st.just("text"), "text": TEXT})),
    _with_extra(st.fixed_dictionaries({"type": st.just("image_url"), "image_url": st.one_of(
        TEXT, _with_extra(st.fixed_dictionaries({"url": TEXT})))})),
    _with_extra(st.fixed_dictionaries({"type": TEXT})),
)
TOOL_CALL = _with_extra(st.fixed_dictionaries(
    {"function": _with_extra(_optional(name=TEXT, arguments=st.one_of(TEXT, OBJECT)))},
    optional={"id": TEXT, "type": TEXT}))
MESSAGE = _with_extra(st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "developer", "user", "assistant", "tool", "function"])},
    optional={"content": st.one_of(st.none(), TEXT, st.lists(PART, max_size=3)), "name": TEXT,
              "tool_calls": st.lists(TOOL_CALL, max_size=2), "tool_call_id": TEXT}))
TOOL = _with_extra(st.fixed_dictionaries({"type": st.just("function"), "function": _with_extra(st.fixed_dictionaries(
    {"name": st.text(min_size=1, max_size=10)}, optional={"description": TEXT, "parameters": OBJECT}))}))
#: Bodies the chat schema accepts (switchman._schema.ChatBody): every field typed as it says, unknown fields too.
CHAT_BODY = _with_extra(st.fixed_dictionaries(
    {"model": st.sampled_from(["auto", "auto:default", "cheap", "big", "nope"]),
     "messages": st.lists(MESSAGE, min_size=1, max_size=4)},
    optional={
        "stream_options": OBJECT, "max_tokens": st.integers(1, 10**9), "max_completion_tokens": st.integers(1, 10**9),
        "tools": st.lists(TOOL, max_size=2),
        "tool_choice": st.one_of(TEXT, _with_extra(_optional(type=TEXT, function=_with_extra(
            st.fixed_dictionaries({"name": TEXT}))))),
        "response_format": _with_extra(st.fixed_dictionaries({"type": TEXT}, optional={"json_schema": OBJECT})),
        "temperature": st.floats(0, 2), "top_p": st.floats(0, 1), "n": st.integers(1, 128),
        "stop": st.one_of(TEXT, st.lists(TEXT, max_size=3)), "seed": st.integers(-(2**63), 2**63 - 1),
        "metadata": OBJECT, "user": TEXT,
    }))


@FUZZ
@given(body=CHAT_BODY)
def test_schema_valid_chat_bodies_never_get_a_500(http: httpx.Client, body: dict[str, Any]) -> None:
    assert_not_500(http.post("/v1/chat/completions", json=body))


@FUZZ
@given(body=CHAT_BODY)
def test_schema_valid_bodies_never_get_a_500_from_route_or_as_streams(http: httpx.Client, body: dict[str, Any]) -> None:
    assert_not_500(http.post("/v1/route", json=body))
    body["stream"] = True
    response = http.post("/v1/chat/completions", json=body)
    assert_not_500(response)
    if response.status_code == 200:
        assert response.text.rstrip().endswith("data: [DONE]")


@FUZZ
@given(body=st.dictionaries(st.sampled_from(["request_id", "score", "thumbs", "comment", "x"]), JSON, max_size=4))
def test_feedback_bodies_never_get_a_500(http: httpx.Client, body: dict[str, Any]) -> None:
    assert_not_500(http.post("/v1/feedback", json=body))


@FUZZ
@given(extra=st.dictionaries(st.text(min_size=1, max_size=10), JSON, max_size=3),
       part_extra=st.dictionaries(st.text(min_size=1, max_size=10), JSON, max_size=3),
       metadata=st.dictionaries(st.sampled_from(["agent", "session", "tags", "task", "escalate", "other"]), JSON,
                                max_size=4))
def test_unknown_fields_and_metadata_of_any_shape_never_get_a_500(
    http: httpx.Client, extra: dict[str, Any], part_extra: dict[str, Any], metadata: dict[str, Any]
) -> None:
    body = {**extra, "model": "auto", "metadata": metadata,
            "messages": [{"role": "user", "content": [{"type": "text", "text": "hi", **part_extra}]}]}
    assert_not_500(http.post("/v1/chat/completions", json=body))


def nested(depth: int) -> Any:
    value: Any = 1
    for i in range(depth - 1):
        value = [value] if i % 2 else {"k": value}
    return value


@pytest.mark.parametrize("depth", [2, 10, 62, 63, 64, 65, 100, 200, 253, 254, 255, 256, 500, 1000, 1022, 1023, 1024,
                                   1025])
@pytest.mark.parametrize("where", ["metadata", "tool_parameters", "extra_field", "content_part"])
def test_deep_nesting_is_served_or_refused_never_a_500(http: httpx.Client, depth: int, where: str) -> None:
    body: dict[str, Any] = {"model": "auto", "messages": ASK}
    if where == "metadata":
        body["metadata"] = {"deep": nested(depth)}
    elif where == "tool_parameters":
        body["tools"] = [{"type": "function", "function": {"name": "f", "parameters": {"deep": nested(depth)}}}]
    elif where == "extra_field":
        body["deep"] = nested(depth)
    else:
        body["messages"] = [{"role": "user", "content": [{"type": "text", "text": "x", "deep": nested(depth)}]}]
    raw = orjson.dumps(body) if depth < 250 else _dumps_deep(body)
    response = http.post("/v1/chat/completions", content=raw, headers={"content-type": "application/json"})
    assert_not_500(response)
    # The body is one level, and each place adds the containers around the nested value (which has depth - 1).
    body_depth = depth + {"metadata": 1, "extra_field": 0, "tool_parameters": 4, "content_part": 4}[where]
    if body_depth > 64:
        assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_json"
    else:
        assert response.status_code == 200


def _dumps_deep(value: Any) -> bytes:
    """JSON for nesting orjson will not write (it stops near 254 levels); iterative."""
    out: list[str] = []
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str) and item in ("]", "}", ","):
            out.append(item)
        elif isinstance(item, tuple):
            out.append(orjson.dumps(item[0]).decode() + ":")
            stack.append(item[1])
        elif isinstance(item, dict):
            out.append("{")
            stack.append("}")
            for i, (k, v) in enumerate(reversed(list(item.items()))):
                if i:
                    stack.append(",")
                stack.append((k, v))
        elif isinstance(item, list):
            out.append("[")
            stack.append("]")
            for i, v in enumerate(reversed(item)):
                if i:
                    stack.append(",")
                stack.append(v)
        else:
            out.append(orjson.dumps(item).decode())
    return "".join(out).encode()


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", {"model": "auto", "messages": [{"role": "user", "content": [
            {"type": "text", "text": None}]}]}),
        ("/v1/route", {"model": "auto", "messages": [{"role": "user", "content": [{"type": "text", "text": None}]}]}),
        ("/v1/feedback", {"request_id": "x", "thumbs": ["up"]}),
        ("/v1/feedback", {"request_id": "x", "thumbs": {"up": 1}}),
    ],
)
def test_shapes_that_used_to_crash_are_400s(http: httpx.Client, path: str, body: dict[str, Any]) -> None:
    response = http.post(path, json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "invalid_value"


def test_an_unexpected_error_is_a_json_500_that_closes_the_connection(upstream: FakeUpstream, tmp_path: Path) -> None:
    with running_gateway(config_data(upstream, f"sqlite:///{tmp_path / 'l.sqlite3'}")) as (gateway, server), \
            httpx.Client(base_url=server.url) as http:

        def broken(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("a bug")

        gateway.dispatcher.decide = broken  # type: ignore[method-assign]
        response = http.post("/v1/route", json={"model": "auto", "messages": ASK})
        assert response.status_code == 500 and response.headers["connection"] == "close"
        assert response.json()["error"]["code"] == "internal_error" and "a bug" not in response.text
        assert http.get("/health").status_code == 200  # the client's next request opens a new connection
