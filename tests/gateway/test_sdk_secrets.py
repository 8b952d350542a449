"""The in-process SDK's errors carry no secret: an upstream that echoes the key it was sent (as providers do in
their 401s) is scrubbed from the exception the caller sees, as the gateway scrubs it from its HTTP answers."""

from __future__ import annotations

import traceback
from pathlib import Path

import pytest

from switchman import Router, UpstreamError
from switchman.testing import FakeUpstream

from .conftest import ANTHROPIC_KEY, OPENAI_KEY, WRONG_KEY, config_data

#: A key not shaped like one (no sk- prefix): only the configured secrets can catch it.
ODD_KEY = "gq-odd-provider-key-7e7e7e7e7e7e7e"


def _text(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc)) + repr(exc.args) + _frame_locals(exc)


def _frame_locals(exc: BaseException) -> str:
    """The reprs of every local of every frame in the tracebacks of `exc`, its causes and contexts: what an error
    tracker capturing locals (Sentry's default) would send."""
    seen: set[int] = set()
    chain: list[BaseException | None] = [exc]
    found = []
    while chain:
        error = chain.pop()
        if error is None or id(error) in seen:
            continue
        seen.add(id(error))
        chain += [error.__cause__, error.__context__]
        for frame, _ in traceback.walk_tb(error.__traceback__):
            for name, value in frame.f_locals.items():
                try:
                    found.append(f"{frame.f_code.co_name}.{name}={value!r}")
                except Exception:  # noqa: BLE001 - a repr that fails holds nothing to find
                    continue
    return "\n".join(found)


@pytest.fixture
def router(upstream: FakeUpstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Router:
    monkeypatch.setenv("FAKE_OPENAI_KEY", OPENAI_KEY)
    monkeypatch.setenv("FAKE_ANTHROPIC_KEY", ANTHROPIC_KEY)
    monkeypatch.setenv("FAKE_WRONG_KEY", WRONG_KEY)
    monkeypatch.setenv("FAKE_ODD_KEY", ODD_KEY)
    data = config_data(upstream, f"sqlite:///{tmp_path / 'ledger.sqlite3'}")
    data["providers"]["odd"] = {**data["providers"]["fake-wrong-key"], "api_key_env": "FAKE_ODD_KEY"}
    data["models"]["odd"] = {"provider": "odd", "input_price": 0.01, "output_price": 0.01}
    upstream.clear()
    return Router.from_dict(data)


@pytest.mark.parametrize("model", ["locked", "odd"])
@pytest.mark.parametrize("stream", [False, True])
def test_an_upstream_echoing_its_key_is_scrubbed_from_the_error(router: Router, model: str, stream: bool) -> None:
    try:
        with pytest.raises(UpstreamError) as caught:
            if stream:
                list(router.chat("hello", model=model, stream=True))
            else:
                router.chat("hello", model=model)
        assert "401" in str(caught.value)
        text = _text(caught.value)
        assert WRONG_KEY not in text and ODD_KEY not in text, text
    finally:
        router.close()


@pytest.mark.anyio
async def test_an_async_caller_gets_the_scrubbed_error_too(router: Router) -> None:
    try:
        with pytest.raises(UpstreamError) as caught:
            await router.achat("hello", model="odd")
        assert ODD_KEY not in _text(caught.value)
        with pytest.raises(UpstreamError) as streamed:
            async for _ in await router.achat("hello", model="locked", stream=True):
                pass
        assert WRONG_KEY not in _text(streamed.value)
    finally:
        await router.aclose()


def test_a_mid_stream_error_echoing_the_key_is_scrubbed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from .raw_upstream import RawUpstream, sse

    monkeypatch.setenv("FAKE_ODD_KEY", ODD_KEY)
    with RawUpstream() as raw:
        raw.answer(sse(
            {"type": "message_start", "message": {"id": "m1", "type": "message", "role": "assistant", "model": "c",
                                                  "content": [], "usage": {"input_tokens": 3, "output_tokens": 0}}},
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hel"}},
            {"type": "error", "error": {"type": "api_error", "message": f"key {ODD_KEY} was revoked mid-answer"}},
        ), stream=True)
        router = Router.from_dict({
            "providers": {"raw": {"kind": "anthropic", "base_url": raw.url, "api_key_env": "FAKE_ODD_KEY"}},
            "models": {"c": {"provider": "raw", "input_price": 1.0, "output_price": 1.0}},
            "routes": {"default": {"candidates": ["c"], "strategy": "cheapest"}},
            "server": {"ledger_url": f"sqlite:///{tmp_path / 'ledger.sqlite3'}", "retries": {"attempts": 0}},
        })
        try:
            with pytest.raises(UpstreamError) as caught:
                list(router.chat("hello", model="c", stream=True))
            assert "revoked" in str(caught.value) and ODD_KEY not in _text(caught.value)
        finally:
            router.close()
