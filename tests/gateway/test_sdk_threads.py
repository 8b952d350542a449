"""A Router shared by threads from its first call on: one in-process client, one loop, one ledger writer, one
set of budgets (not one per thread that happened to call first)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

import switchman.gateway
from switchman import Router
from switchman.testing import FakeUpstream

from .conftest import ANTHROPIC_KEY, OPENAI_KEY, config_data


def test_threads_racing_to_the_first_chat_share_one_client(upstream: FakeUpstream, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_OPENAI_KEY", OPENAI_KEY)
    monkeypatch.setenv("FAKE_ANTHROPIC_KEY", ANTHROPIC_KEY)
    made: list[object] = []
    real = switchman.gateway.InProcessClient

    class Counted(real):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            made.append(self)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(switchman.gateway, "InProcessClient", Counted)
    upstream.clear()
    router = Router.from_dict(config_data(upstream, f"sqlite:///{tmp_path / 'ledger.sqlite3'}"))
    barrier = threading.Barrier(8)
    answers: list[str] = []

    def call() -> None:
        barrier.wait()
        answers.append(router.chat("hello", model="cheap")["model"])

    threads = [threading.Thread(target=call) for _ in range(8)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert answers == ["cheap"] * 8
        assert len(made) == 1  # not one client (loop thread, pool, ledger writer, budgets) per racing thread
    finally:
        router.close()
        for client in made:
            client.close()  # type: ignore[attr-defined]
