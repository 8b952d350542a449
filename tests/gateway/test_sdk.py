"""Router.chat and Router.achat: in process, same fallbacks and ledger as the gateway; replies and streams."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from switchman import InvalidRequestError, Router, UpstreamError
from switchman.ledger import Ledger, LedgerRecord
from switchman.testing import FakeUpstream

from .conftest import config_data


@pytest.fixture
def router(upstream: FakeUpstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Router]:
    monkeypatch.setenv("FAKE_OPENAI_KEY", "sk-upstream-openai-0123456789abcdef")
    monkeypatch.setenv("FAKE_ANTHROPIC_KEY", "sk-ant-upstream-fedcba9876543210")
    data = config_data(upstream, f"sqlite:///{tmp_path / 'ledger.sqlite3'}")
    data["server"]["retries"] = {"attempts": 1, "backoff_s": 0.0}
    router = Router.from_dict(data)
    upstream.clear()
    yield router
    router.close()
    upstream.clear()


def test_chat(router: Router, upstream: FakeUpstream, tmp_path: Path) -> None:
    upstream.inject("server_error", model="cheap", times=None)
    completion = router.chat("hello", agent="sdk", tags=["t"], temperature=0.1)
    assert completion["choices"][0]["message"]["content"] == "Hello from mid."
    assert [r.model for r in upstream.requests] == ["cheap", "cheap", "mid"]
    assert upstream.requests[-1].body["temperature"] == 0.1
    claude = router.chat([{"role": "user", "content": "x"}], model="auto:claude")
    assert claude["choices"][0]["message"]["content"] == "Hello from claude-test."
    router.close()
    ledger = Ledger.from_url(f"sqlite:///{tmp_path / 'ledger.sqlite3'}")
    records = sorted(ledger.records(), key=lambda r: r.time)
    ledger.close_sync()
    assert [(r.model, r.agent, r.fallback_chain) for r in records] == [
        ("mid", "sdk", ("cheap", "mid")), ("claude", None, ("claude",))]


@pytest.mark.anyio
async def test_achat(router: Router) -> None:
    completion = await router.achat("hello", model="big")
    assert completion["choices"][0]["message"]["content"] == "Hello from big."


def test_chat_refuses_bad_requests(router: Router) -> None:
    with pytest.raises(InvalidRequestError):
        router.chat("x", temperature="hot")
    with pytest.raises(InvalidRequestError):
        router.chat("x", stream=True, temperature="hot")


def ledger_rows(tmp_path: Path) -> dict[str, LedgerRecord]:
    ledger = Ledger.from_url(f"sqlite:///{tmp_path / 'ledger.sqlite3'}")
    try:
        return {r.request_id: r for r in ledger.records()}
    finally:
        ledger.close_sync()


def test_reply_carries_request_id_model_and_cost(router: Router, tmp_path: Path) -> None:
    reply = router.chat("hello", model="auto:claude", max_tokens=50)
    assert isinstance(reply, dict) and reply["object"] == "chat.completion"  # the body, as the gateway sends it
    assert reply.model == "claude" and reply.decision.route == "claude"  # what switchman chose
    usage = reply["usage"]
    assert reply.cost_usd == pytest.approx((3.0 * usage["prompt_tokens"] + 15.0 * usage["completion_tokens"]) / 1e6)
    router.feedback(reply.request_id, 0.25, "too short")  # in process, with the id the reply carries
    router.close()
    row = ledger_rows(tmp_path)[reply.request_id]
    assert (row.model, row.cost_usd) == ("claude", pytest.approx(reply.cost_usd))
    ledger = Ledger.from_url(f"sqlite:///{tmp_path / 'ledger.sqlite3'}")
    try:
        assert ledger.feedback(reply.request_id) == [(0.25, "too short")]
    finally:
        ledger.close_sync()


async def _chat(router: Router, how: str, messages: Any, **options: Any) -> str:
    """The model that answered, asked for as `how` says: chat, stream, achat or astream (achat with stream=True)."""
    if how == "chat":
        return router.chat(messages, **options).model
    if how == "stream":
        with router.chat(messages, stream=True, **options) as stream:
            list(stream)
        return stream.model
    if how == "achat":
        return (await router.achat(messages, **options)).model
    async with await router.achat(messages, stream=True, **options) as astream:
        async for _ in astream:
            pass
    return astream.model


@pytest.mark.anyio
@pytest.mark.parametrize("how", ["chat", "stream", "achat", "astream"])
async def test_escalate_moves_the_session_up_and_is_not_sent_upstream(
    router: Router, upstream: FakeUpstream, how: str
) -> None:
    """`escalate=True` is the SDK's X-Switchman-Escalate: 1, not a chat-completions field for the provider."""
    assert await _chat(router, how, "Hi", session="sdk-esc") == "cheap"
    turns = [{"role": "user", "content": "Question 0: tell me more."}, {"role": "assistant", "content": "Answer 0."},
             {"role": "user", "content": "Try harder."}]
    assert await _chat(router, how, turns, session="sdk-esc", escalate=True) == "mid"
    assert "escalate" not in upstream.requests[-1].body
    more = [*turns, {"role": "assistant", "content": "A."}, {"role": "user", "content": "More?"}]
    assert await _chat(router, how, more, session="sdk-esc") == "mid"  # the session stays up


def test_escalate_reason(router: Router) -> None:
    router.chat("Hi", session="sdk-why")
    moved = router.chat("Try harder.", session="sdk-why", escalate=True)
    assert moved.model == "mid" and moved.decision.reason.startswith("session escalated cheap")


def test_route_applies_the_session_as_v1_route_does(router: Router) -> None:
    """`route(session=...)` gives the session's model, as POST /v1/route does, not a fresh decision."""
    assert router.route("Hi", session="s9").model == "cheap"  # before any chat: no session state yet
    router.chat("Hi", session="s9")
    assert router.chat("Try harder.", session="s9", escalate=True).model == "mid"
    decision = router.route("And now?", session="s9")
    assert decision.model == "mid" and decision.reason.startswith("session kept")
    assert router.route("And now?", session="other").model == "cheap"


def test_metadata_carries_switchmans_keys_and_they_are_not_sent(router: Router, upstream: FakeUpstream) -> None:
    """As the gateway does: switchman's own metadata keys are read and removed, the caller's others sent on."""
    router.chat("Hi", session="s5")
    moved = router.chat("Hi", metadata={"session": "s5", "escalate": True, "x": 1})
    assert moved.model == "mid"
    assert upstream.requests[-1].body["metadata"] == {"x": 1}
    router.chat("Hi", metadata={"session": "s5", "tags": ["a"]})
    assert "metadata" not in upstream.requests[-1].body
    assert router.chat("Hi", session="s6", metadata={"session": "s5"}).model == "cheap"  # the argument wins


@pytest.mark.parametrize("value", ["false", "true", 1, 0, None])
def test_escalate_takes_a_bool_only(router: Router, upstream: FakeUpstream, value: object) -> None:
    with pytest.raises(TypeError, match="escalate must be True or False"):
        router.chat("Hi", session="s7", escalate=value)
    with pytest.raises(TypeError, match="cache must be True, False or None"):
        router.chat("Hi", cache="off")
    assert upstream.requests == []


def test_stream(router: Router, tmp_path: Path) -> None:
    stream = router.chat("hello", model="auto:claude", stream=True)
    assert stream.model == "claude" and len(stream.request_id) == 32
    assert stream.cost_usd is None  # not known before the end
    chunks = list(stream)
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "Hello from claude-test."
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert stream.usage is not None and stream.usage["completion_tokens"] > 0
    assert stream.cost_usd is not None and stream.cost_usd > 0
    router.close()
    row = ledger_rows(tmp_path)[stream.request_id]
    assert (row.status, row.model, row.cost_usd) == ("ok", "claude", pytest.approx(stream.cost_usd))


def test_stream_falls_back_before_the_first_chunk(router: Router, upstream: FakeUpstream) -> None:
    upstream.inject("server_error", model="cheap", times=None)
    with router.chat("hello", stream=True) as stream:
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in stream if c["choices"])
    assert (stream.model, text) == ("mid", "Hello from mid.")


def test_leaving_a_stream_early_cancels_it_and_records_it(
    router: Router, upstream: FakeUpstream, tmp_path: Path
) -> None:
    upstream.inject("slow_stream", model="cheap", seconds=0.5)
    with router.chat("one two three four five six seven eight", stream=True) as stream:
        first = next(stream)
    assert first["object"] == "chat.completion.chunk"
    stream.close()  # again: nothing happens
    router.close()
    assert ledger_rows(tmp_path)[stream.request_id].status == "client_disconnected"


def test_a_failure_mid_stream_is_raised_from_the_loop(router: Router, upstream: FakeUpstream) -> None:
    upstream.inject("drop_mid_stream", model="cheap", after_events=2)
    stream = router.chat("hello", stream=True)
    with pytest.raises(UpstreamError):
        for _ in stream:
            pass
    assert stream.cost_usd is not None  # ended, recorded


@pytest.mark.anyio
async def test_async_stream(router: Router) -> None:
    stream = await router.achat("hello", model="big", stream=True)
    async with stream:
        text = "".join([c["choices"][0]["delta"].get("content") or "" async for c in stream if c["choices"]])
    assert (stream.model, text) == ("big", "Hello from big.")
    assert stream.cost_usd is not None and stream.cost_usd > 0
    reply = await router.achat("hello", model="big")
    assert reply.model == "big" and reply.request_id != stream.request_id


def test_with_block_closes_and_close_is_idempotent(upstream: FakeUpstream, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_OPENAI_KEY", "sk-upstream-openai-0123456789abcdef")
    monkeypatch.setenv("FAKE_ANTHROPIC_KEY", "sk-ant-upstream-fedcba9876543210")
    with Router.from_dict(config_data(upstream, f"sqlite:///{tmp_path / 'ledger.sqlite3'}")) as router:
        reply = router.chat("hello")
        loop_threads = [t for t in threading.enumerate() if t.name == "switchman-sdk-loop"]
        assert loop_threads and all(t.daemon for t in loop_threads)
    assert not any(t.is_alive() for t in loop_threads)  # the with block stopped the loop thread
    router.close()
    router.close()
    assert reply.request_id in ledger_rows(tmp_path)  # written by the close the with block made
    assert router.route("hello").model == "cheap"  # deciding needs no client
