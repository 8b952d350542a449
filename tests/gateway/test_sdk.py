"""Router.chat and Router.achat: in process, same fallbacks and ledger as the gateway."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from switchman import Router
from switchman import InvalidRequestError
from switchman.ledger import Ledger
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
        router.chat("x", stream=True)
