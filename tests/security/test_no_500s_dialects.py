"""The other APIs never answer a 500 either: a seeded Hypothesis fuzz of /v1/messages (and count_tokens) and
/v1/responses bodies, near-valid shapes with any JSON in any place, asserting a 2xx or a 4xx in the API's own
error envelope, and a stream that ends with the API's terminal event."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st


FUZZ = settings(max_examples=100, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])
LEAF = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1)
        | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=6))
JSON = st.recursive(LEAF, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                     max_size=3), max_leaves=8)
TEXT = st.sampled_from(["hi", "", "x\x00y", "\u2028", "é"])
MODEL = st.sampled_from(["auto", "cheap", "big", "auto:nope"])


def _or_any(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """The field's own shape mostly, any JSON value sometimes."""
    return st.one_of(strategy, strategy, JSON)


def _fields(required: dict[str, st.SearchStrategy[Any]], **optional: st.SearchStrategy[Any]
            ) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(required, optional=optional)


SOURCE = _fields({"type": _or_any(st.sampled_from(["base64", "url", "file"]))}, data=_or_any(TEXT), url=_or_any(TEXT),
                 media_type=_or_any(TEXT))
BLOCK = st.one_of(
    _fields({"type": st.just("text"), "text": _or_any(TEXT)}, cache_control=JSON),
    _fields({"type": st.just("image"), "source": _or_any(SOURCE)}),
    _fields({"type": st.just("tool_use")}, id=_or_any(TEXT), name=_or_any(TEXT), input=JSON),
    _fields({"type": st.just("tool_result")}, tool_use_id=_or_any(TEXT), is_error=JSON,
            content=_or_any(st.lists(st.one_of(_fields({"type": st.just("text"), "text": _or_any(TEXT)}),
                                               _fields({"type": st.just("image"), "source": _or_any(SOURCE)}), JSON),
                                     max_size=2))),
    _fields({"type": st.sampled_from(["thinking", "redacted_thinking", "document", "server_tool_use"])}),
    JSON,
)
TURN = _fields({"role": _or_any(st.sampled_from(["user", "assistant"])),
                "content": st.one_of(TEXT, st.lists(BLOCK, max_size=3), JSON)})
MESSAGES_BODY = _fields(
    {"model": _or_any(MODEL), "messages": _or_any(st.lists(TURN, min_size=1, max_size=3))},
    max_tokens=_or_any(st.integers(-5, 2**64 - 1)), system=st.one_of(TEXT, st.lists(BLOCK, max_size=2), JSON),
    tools=_or_any(st.lists(_fields({"name": _or_any(TEXT)}, input_schema=JSON, type=JSON, description=JSON),
                           max_size=2)),
    tool_choice=_or_any(_fields({"type": _or_any(st.sampled_from(["auto", "any", "tool", "none"]))}, name=JSON,
                                disable_parallel_tool_use=JSON)),
    stop_sequences=JSON, temperature=JSON, top_p=JSON, top_k=JSON, stream=st.booleans(),
    metadata=_or_any(st.dictionaries(st.sampled_from(["user_id", "session", "agent", "tags", "cache"]), JSON | TEXT,
                                     max_size=3)),
    output_config=_or_any(_fields({"format": _or_any(_fields({"type": st.just("json_schema"), "schema": JSON}))})),
    thinking=JSON, mcp_servers=JSON,
)
PART = st.one_of(_fields({"type": st.sampled_from(["input_text", "output_text", "refusal", "input_image", "input_file"])},
                         text=JSON, refusal=JSON, image_url=_or_any(TEXT), detail=JSON), TEXT, JSON)
ITEM = st.one_of(
    _fields({"role": _or_any(st.sampled_from(["user", "assistant", "system", "developer"])),
             "content": st.one_of(TEXT, st.lists(PART, max_size=3), JSON)}, type=_or_any(st.just("message"))),
    _fields({"type": st.just("function_call")}, call_id=JSON, name=_or_any(TEXT), arguments=_or_any(TEXT)),
    _fields({"type": st.just("function_call_output")}, call_id=JSON,
            output=st.one_of(TEXT, st.lists(PART, max_size=2), JSON)),
    _fields({"type": _or_any(st.sampled_from(["reasoning", "item_reference", "web_search_call"]))}),
    JSON,
)
RESPONSES_BODY = _fields(
    {"model": _or_any(MODEL), "input": st.one_of(TEXT, st.lists(ITEM, min_size=1, max_size=3), JSON)},
    instructions=_or_any(TEXT), max_output_tokens=_or_any(st.integers(-5, 2**64 - 1)), temperature=JSON, top_p=JSON,
    user=JSON, parallel_tool_calls=JSON, store=JSON, previous_response_id=JSON, stream=st.booleans(),
    tools=_or_any(st.lists(_fields({"type": _or_any(st.just("function")), "name": _or_any(TEXT)}, parameters=JSON,
                                   strict=JSON), max_size=2)),
    tool_choice=st.one_of(st.sampled_from(["auto", "none", "required"]),
                          _fields({"type": st.just("function"), "name": JSON}), JSON),
    text=_or_any(_fields({"format": _or_any(_fields({"type": _or_any(st.sampled_from(["text", "json_schema"]))},
                                                    schema=JSON, name=JSON))})),
    metadata=_or_any(st.dictionaries(st.sampled_from(["session", "agent", "tags", "x"]), JSON | TEXT, max_size=3)),
)


def _post(http: httpx.Client, path: str, body: dict[str, Any]) -> httpx.Response:
    return http.post(path, content=orjson.dumps(body), headers={"content-type": "application/json"})


def assert_answered(response: httpx.Response, *, anthropic: bool) -> None:
    assert response.status_code < 500 or response.status_code in (502, 503, 504), response.text
    assert "Traceback" not in response.text
    if response.status_code >= 400:
        data = response.json()
        if anthropic:
            assert data["type"] == "error" and set(data["error"]) == {"type", "message"}, data
        else:
            assert set(data["error"]) == {"message", "type", "param", "code"}, data
    elif response.headers["content-type"].startswith("text/event-stream"):
        last = [line for line in response.text.splitlines() if line.startswith("event: ")][-1]
        assert last in (("event: message_stop", "event: error") if anthropic
                        else ("event: response.completed", "event: response.incomplete", "event: response.failed"))


@FUZZ
@given(body=MESSAGES_BODY)
def test_messages_bodies_never_get_a_500(http: httpx.Client, body: dict[str, Any]) -> None:
    assert_answered(_post(http, "/v1/messages", body), anthropic=True)
    assert_answered(_post(http, "/v1/messages/count_tokens", body), anthropic=True)


@FUZZ
@given(body=RESPONSES_BODY)
def test_responses_bodies_never_get_a_500(http: httpx.Client, body: dict[str, Any]) -> None:
    assert_answered(_post(http, "/v1/responses", body), anthropic=False)


def test_the_bodies_that_crashed_are_400s(http: httpx.Client) -> None:
    """Two bodies of the shapes above that were 500s: an image source that is a string, an item type that is a list."""
    crashed = [("/v1/messages", {"model": "auto", "max_tokens": 5, "messages": [
                   {"role": "user", "content": [{"type": "image", "source": "x"}]}]}),
               ("/v1/responses", {"model": "auto", "input": [{"type": []}]})]
    for path, body in crashed:
        response = _post(http, path, body)
        assert response.status_code == 400, response.text
