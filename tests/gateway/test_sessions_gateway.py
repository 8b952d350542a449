"""Sessions through the gateway with the real openai client: keep the model, escalate once on a signal."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest

from switchman.gateway import Gateway
from switchman.ledger import LedgerRecord
from switchman.testing import FakeUpstream

from .conftest import TOOLS


@pytest.fixture
def session() -> str:
    return f"sess-{uuid.uuid4().hex[:12]}"


class Turn:
    """One turn's answer, the headers it came with and its ledger row."""

    def __init__(self, raw: Any, record: LedgerRecord) -> None:
        self.completion = raw.parse()
        self.model: str = raw.headers["x-switchman-model"]
        self.reason: str = raw.headers["x-switchman-route-reason"]
        self.record = record


@pytest.fixture
def turn(client: openai.OpenAI, session: str, ledger_record: Callable[[str], LedgerRecord]) -> Callable[..., Turn]:
    def send(messages: list[dict[str, Any]], *, headers: dict[str, str] | None = None, **extra: Any) -> Turn:
        raw = client.chat.completions.with_raw_response.create(
            model="auto", messages=messages,  # type: ignore[arg-type]
            extra_headers={"X-Switchman-Session": session, "X-Switchman-Agent": "coder", **(headers or {})},
            **extra,
        )
        return Turn(raw, ledger_record(raw.headers["x-switchman-request-id"]))

    return send


def _conversation(n: int) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    for i in range(n):
        messages.append({"role": "user", "content": f"Question {i}: tell me more."})
        messages.append({"role": "assistant", "content": f"Answer {i}."})
    return messages


def _user(messages: list[dict[str, Any]], text: str) -> list[dict[str, Any]]:
    return [*messages, {"role": "user", "content": text}]


def test_conversation_keeps_its_model(turn: Callable[..., Turn], upstream: FakeUpstream) -> None:
    history: list[dict[str, Any]] = []
    models = []
    for i in range(4):
        t = turn(_user(history, f"Step {i}: continue."))
        models.append(t.model)
        history = [*_user(history, f"Step {i}: continue."), {"role": "assistant", "content": t.completion.choices[0].message.content}]
        assert t.record.session is not None and t.record.model == t.model
    assert models == ["cheap"] * 4
    assert "session kept cheap" in t.reason and "session kept cheap" in (t.record.reason or "")


def _escalates_once(turn: Callable[..., Turn], signal_turn: Callable[[], Turn], expected: str) -> None:
    """The signal moves the session cheap → mid once; it stays on mid afterwards; the move is recorded."""
    moved = signal_turn()
    assert moved.model == "mid"
    assert moved.reason.startswith("session escalated cheap -> mid") and expected in moved.reason
    assert moved.record.model == "mid" and moved.record.strategy == "session"
    assert (moved.record.reason or "").startswith("session escalated cheap → mid") and expected in (moved.record.reason or "")
    after = [turn(_user(_conversation(3), f"And then {i}?")) for i in range(2)]
    assert [t.model for t in after] == ["mid", "mid"]
    assert all("session kept mid" in t.reason for t in after)


def test_explicit_escalate_header(turn: Callable[..., Turn]) -> None:
    assert turn(_user([], "Hi")).model == "cheap"
    _escalates_once(turn, lambda: turn(_user(_conversation(1), "Try harder."), headers={"X-Switchman-Escalate": "1"}),
                    "escalation requested by the caller")


def test_escalate_in_metadata(turn: Callable[..., Turn], upstream: FakeUpstream) -> None:
    assert turn(_user([], "Hi")).model == "cheap"
    _escalates_once(turn, lambda: turn(_user(_conversation(1), "Again."), extra_body={"metadata": {"escalate": True}}),
                    "escalation requested by the caller")
    assert "metadata" not in upstream.requests[-1].body  # switchman's own key is not forwarded


def test_upstream_error_escalates_next_turn(turn: Callable[..., Turn], upstream: FakeUpstream) -> None:
    assert turn(_user([], "Hi")).model == "cheap"
    upstream.inject("server_error", model="cheap", times=3)  # one try and two retries: then the fallback answers
    failed = turn(_user(_conversation(1), "Next?"))
    assert failed.record.fallback_chain == ("cheap", "mid")
    _escalates_once(turn, lambda: turn(_user(_conversation(2), "Next?")), "upstream error on cheap")


def test_empty_answer_escalates_next_turn(turn: Callable[..., Turn], upstream: FakeUpstream) -> None:
    upstream.set_reply("cheap", "")
    assert turn(_user([], "Hi")).model == "cheap"
    upstream.clear()
    _escalates_once(turn, lambda: turn(_user(_conversation(1), "Hello?")), "empty answer")


def test_repeated_tool_call_escalates(turn: Callable[..., Turn]) -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": '{"query": "x"}'}}
    start = [{"role": "user", "content": "Find x"}]
    first = turn(start, tools=TOOLS)
    assert first.model == "cheap"
    looping = [*start, {"role": "assistant", "content": None, "tool_calls": [call]},
               {"role": "tool", "tool_call_id": "c1", "content": "nothing"},
               {"role": "assistant", "content": None, "tool_calls": [{**call, "id": "c2"}]},
               {"role": "tool", "tool_call_id": "c2", "content": "nothing"}]
    moved = turn(looping, tools=TOOLS)
    assert moved.model == "mid" and "the same tool call repeated" in moved.reason
    assert "the same tool call repeated" in (moved.record.reason or "")
    broke = [*looping, {"role": "assistant", "content": "Found it."}, {"role": "user", "content": "Thanks, next."}]
    assert turn(broke, tools=TOOLS).model == "mid"


def test_negative_feedback_escalates_next_turn(turn: Callable[..., Turn], gateway: Gateway, session: str) -> None:
    first = turn(_user([], "Hi"))
    keeper = gateway.dispatcher.sessions
    assert not keeper.record_feedback(session, 0.9)  # positive: nothing changes
    assert not keeper.record_feedback(session, 0.0, request_id="req-not-the-last")
    assert keeper.record_feedback(session, 0.0, request_id=first.record.request_id)
    _escalates_once(turn, lambda: turn(_user(_conversation(1), "Hm?")), "negative feedback (score 0)")


def test_no_session_no_stickiness(client: openai.OpenAI, base_url: str) -> None:
    response = httpx.post(base_url + "/chat/completions", json={
        "model": "auto", "messages": [{"role": "user", "content": "hi"}]}, headers={"X-Switchman-Escalate": "1"})
    assert response.status_code == 200 and response.headers["x-switchman-model"] == "cheap"


def test_bad_escalate_header_is_a_400(base_url: str) -> None:
    response = httpx.post(base_url + "/chat/completions", json={
        "model": "auto", "messages": [{"role": "user", "content": "hi"}]}, headers={"X-Switchman-Escalate": "maybe"})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "X-Switchman-Escalate"


def test_session_expires(turn: Callable[..., Turn], gateway: Gateway) -> None:
    keeper = gateway.dispatcher.sessions
    original = keeper.clock
    now = [1_000_000.0]
    keeper.clock = lambda: now[0]
    try:
        assert turn(_user([], "Hi")).model == "cheap"
        assert turn(_user(_conversation(1), "More"), headers={"X-Switchman-Escalate": "1"}).model == "mid"
        now[0] += keeper.policy.ttl_s - 1
        assert turn(_user(_conversation(2), "More")).model == "mid"
        now[0] += keeper.policy.ttl_s + 1  # idle past the TTL: a fresh decision
        fresh = turn(_user(_conversation(3), "More"))
        assert fresh.model == "cheap" and "session" not in fresh.reason
    finally:
        keeper.clock = original


def test_max_price_is_a_400_in_openai_format(base_url: str) -> None:
    response = httpx.post(base_url + "/chat/completions",
                          json={"model": "auto", "messages": [{"role": "user", "content": "hi"}]},
                          headers={"X-Switchman-Agent": "penny"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "no_capable_model"
    assert "exceeds max_price_usd" in error["message"]


def test_streamed_turns_keep_and_a_broken_stream_escalates(
    client: openai.OpenAI, session: str, upstream: FakeUpstream, ledger_record: Callable[[str], LedgerRecord],
) -> None:
    headers = {"X-Switchman-Session": session}

    def streamed(text: str) -> tuple[str, str]:
        with client.chat.completions.with_streaming_response.create(
            model="auto", messages=[{"role": "user", "content": text}], stream=True, extra_headers=headers,
        ) as response:
            for _ in response.iter_lines():
                pass
            ledger_record(response.headers["x-switchman-request-id"])  # the turn is recorded once the stream ends
            return response.headers["x-switchman-model"], response.headers["x-switchman-route-reason"]

    first_model, first_reason = streamed("one")
    assert first_model == "cheap"
    # The session's reason, then the route's own (same prompt length, so the same estimate).
    assert streamed("two") == ("cheap", f"session kept cheap (turn 2); route: {first_reason}")
    upstream.inject("drop_mid_stream", model="cheap", after_events=2)
    assert streamed("three")[0] == "cheap"  # the stream breaks after its first events: recorded as stream_error
    model, reason = streamed("four")
    assert model == "mid" and reason.startswith("session escalated cheap -> mid: upstream error on cheap")


@pytest.mark.parametrize("kind", ["empty", "truncated"])
def test_an_empty_or_truncated_streamed_answer_escalates_next_turn(
    kind: str, client: openai.OpenAI, session: str, upstream: FakeUpstream,
    ledger_record: Callable[[str], LedgerRecord],
) -> None:
    headers = {"X-Switchman-Session": session}

    def streamed(text: str, **extra: Any) -> tuple[str, str]:
        with client.chat.completions.with_streaming_response.create(
            model="auto", messages=[{"role": "user", "content": text}], stream=True, extra_headers=headers, **extra,
        ) as response:
            for _ in response.iter_lines():
                pass
            ledger_record(response.headers["x-switchman-request-id"])
            return response.headers["x-switchman-model"], response.headers["x-switchman-route-reason"]

    assert streamed("one")[0] == "cheap"
    if kind == "empty":
        upstream.set_reply("cheap", "")
        assert streamed("two")[0] == "cheap"
        expected = "empty answer"
    else:
        upstream.inject("truncated", model="cheap")  # cut at the model's own output limit, no max_tokens asked
        assert streamed("two")[0] == "cheap"
        expected = "truncated answer (finish_reason length)"
    upstream.clear()
    model, reason = streamed("three")
    assert model == "mid" and reason.startswith("session escalated cheap -> mid") and expected in reason


def test_a_truncated_answer_escalates_next_turn(turn: Callable[..., Turn], upstream: FakeUpstream) -> None:
    upstream.inject("truncated", model="cheap")  # the model's own output limit: the caller set no max_tokens
    first = turn(_user([], "Hi"))
    assert first.model == "cheap" and first.completion.choices[0].finish_reason == "length"
    _escalates_once(turn, lambda: turn(_user(_conversation(1), "Hello?")), "truncated answer (finish_reason length)")


@pytest.mark.parametrize("stream", [False, True])
def test_a_cut_at_the_callers_own_max_tokens_is_not_a_failure(
    stream: bool, client: openai.OpenAI, session: str, upstream: FakeUpstream,
    ledger_record: Callable[[str], LedgerRecord],
) -> None:
    """A classifier asks for 2 tokens and gets 2 (finish_reason length): the session keeps its model."""
    upstream.set_reply("cheap", "positive sentiment with a long explanation")
    headers = {"X-Switchman-Session": session}
    for i in range(3):
        messages: Any = [{"role": "user", "content": f"Classify review {i}."}]
        if stream:
            with client.chat.completions.with_streaming_response.create(
                model="auto", messages=messages, max_tokens=2, stream=True, extra_headers=headers,
            ) as response:
                body = "".join(response.iter_lines())
                model, request_id = response.headers["x-switchman-model"], response.headers["x-switchman-request-id"]
            assert '"finish_reason":"length"' in body
        else:
            raw = client.chat.completions.with_raw_response.create(model="auto", messages=messages, max_tokens=2,
                                                                   extra_headers=headers)
            assert raw.parse().choices[0].finish_reason == "length"
            model, request_id = raw.headers["x-switchman-model"], raw.headers["x-switchman-request-id"]
        record = ledger_record(request_id)
        assert model == "cheap" and record.status == "ok"
        assert i == 0 or (record.reason or "").startswith("session kept cheap")
