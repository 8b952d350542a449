"""`check_body`'s shortcut: a plain chat body skips the pydantic model, and only bodies the model accepts do."""

from __future__ import annotations

import random
from typing import Any

import pytest
from pydantic import ValidationError

from switchman import InvalidRequestError
from switchman.gateway import _schema
from switchman.gateway._schema import ChatBody, _plainly_valid, check_body

MISSING = object()
ANY_VALUES: list[Any] = [None, 0, 1, 128, 129, -1, True, False, 2**70, 0.0, 1.0, 2.0, 2.5, -0.5, float("inf"), "",
                         "x", "\udc00", [], ["a"], [1], {}, {"a": 1}, {1: 2}, MISSING]
ROLES: list[Any] = ["user", "system", "assistant", "tool", "developer", "function", "bogus", "", None, 1, ["user"]]
CONTENTS: list[Any] = ["hi", "", None, 1, [], [{"type": "text", "text": "a"}], [{"type": "text"}], {"a": 1}, MISSING]


def _message(draw: random.Random, tame: bool) -> Any:
    if tame:  # mostly plain: a role, text, sometimes an odd value
        message = {"role": draw.choice(["user", "system", "assistant", "tool"]), "content": "hi"}
        if draw.random() < 0.2:
            message[draw.choice(["role", "content", "name", "tool_call_id", "tool_calls", "extra"])] = draw.choice(
                ANY_VALUES[:-1])
        return message
    if draw.random() < 0.05:
        return draw.choice(["x", None, 1, []])
    message: dict[Any, Any] = {}
    for key, pool in (("role", ROLES), ("content", CONTENTS), ("name", ANY_VALUES), ("tool_call_id", ANY_VALUES),
                      ("tool_calls", [None, [], [{"function": {"name": "f"}}], "x", MISSING]),
                      ("extra", ANY_VALUES), ("_private", ANY_VALUES), (2, ANY_VALUES), ("\udc01", ANY_VALUES)):
        value = draw.choice(pool) if key not in ("role", "content") or draw.random() < 0.9 else MISSING
        if key not in ("role", "content") and draw.random() < 0.7:
            value = MISSING
        if value is not MISSING:
            message[key] = value
    return message


def _body(draw: random.Random) -> dict[Any, Any]:
    body: dict[Any, Any] = {}
    tame = draw.random() < 0.5
    model = draw.choice(["auto", "small", "", None, 1, "\ud800", "é", MISSING]) if draw.random() < 0.3 else "auto"
    if model is not MISSING:
        body["model"] = model
    if draw.random() < 0.1:
        messages: Any = draw.choice([[], "x", None, {"role": "user"}])
    else:
        messages = [_message(draw, tame) for _ in range(draw.randint(1, 3))]
    body["messages"] = messages
    for key in [*ChatBody.model_fields, "unknown", "_private", "model_config", 3, "\udc02"]:  # (the last two: a
        # Python caller's keys JSON cannot give, that the model refuses)
        if key not in ("model", "messages") and draw.random() < (0.08 if tame else 0.25):
            value = draw.choice(ANY_VALUES)
            if value is not MISSING:
                body[key] = value
    return body


def _accepted(body: dict[Any, Any]) -> bool:
    try:
        ChatBody.model_validate(body)
    except ValidationError:
        return False
    return True


def test_only_bodies_the_model_accepts_take_the_shortcut() -> None:
    draw = random.Random(11)
    plain = rejected = 0
    for _ in range(40_000):
        body = _body(draw)
        if _plainly_valid(body):
            plain += 1
            assert _accepted(body), body
        elif not _accepted(body):
            rejected += 1
    assert plain > 1_000 and rejected > 10_000  # both sides of the line were exercised


@pytest.mark.parametrize("body", [
    {"model": "auto", "messages": [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "hi"}],
     "max_tokens": 64},
    {"model": "small", "messages": [{"role": "user", "content": "hi", "name": "n"}], "stream": True,
     "stream_options": {"include_usage": True}, "temperature": 0.2, "top_p": 1.0, "n": 2, "seed": 7, "user": "u",
     "stop": "\n", "metadata": {"agent": "a"}, "max_completion_tokens": 5, "tools": None, "vendor_flag": [1, 2]},
    {"model": "auto", "messages": [{"role": "assistant"}, {"role": "tool", "content": "42", "tool_call_id": "c1"}]},
])
def test_a_plain_body_skips_the_model(body: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    assert _accepted(body)

    def refuse(*_: object, **__: object) -> None:
        raise AssertionError("pydantic was asked")

    monkeypatch.setattr(_schema.ChatBody, "model_validate", refuse)
    assert check_body(body) is body


@pytest.mark.parametrize(("body", "message"), [
    ({"model": "auto", "messages": [{"role": "user", "content": "hi"}], "temperature": 2.5}, "temperature"),
    ({"model": "", "messages": [{"role": "user", "content": "hi"}]}, "model"),
    ({"model": "auto", "messages": [{"role": "user", "content": [{"type": "text"}]}]}, "messages.0.content.0"),
    ({"model": "auto", "messages": [{"role": "user", "content": "hi"}], "tools": [{"function": {"name": ""}}]},
     "tools.0.function.name"),
])
def test_other_bodies_are_still_judged_by_the_model(body: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        check_body(body)
    assert caught.value.param == message


@pytest.mark.parametrize("body", [
    {"model": "auto", "messages": [{"role": "user", "content": "hi", 1: "x"}]},
    {"model": "auto", "messages": [{"role": "user", "content": "hi", "\udc00": "x"}]},
    {"model": "auto", "messages": [{"role": "user", "content": "hi"}], 1: "x"},
    {"model": "auto", "messages": [{"role": "user", "content": "hi"}], "\udc00": "x"},
    {"model": "auto", "messages": [{"role": "user", "content": "hi"}], None: "x"},
])
def test_a_key_the_model_refuses_is_refused(body: dict[Any, Any]) -> None:
    """A Python caller (the in-process client) can send keys JSON cannot: not a string, or a lone surrogate.
    The model refuses them (a 400 before any work); the shortcut must not let them through to the upstream."""
    assert not _accepted(body)
    with pytest.raises(InvalidRequestError):
        check_body(body)


def test_the_in_process_client_refuses_such_a_key() -> None:
    from switchman.gateway._inprocess import InProcessClient

    with pytest.raises(InvalidRequestError):
        InProcessClient._request([{"role": "user", "content": "hi", 1: "x"}])
    with pytest.raises(InvalidRequestError):
        InProcessClient._request("hi", **{"\udc00": 1})
