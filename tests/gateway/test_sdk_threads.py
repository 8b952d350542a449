"""A Router shared by threads from its first call on: one in-process client, one loop, one ledger writer, one
set of budgets (not one per thread that happened to call first)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

import switchman.gateway
from switchman import Router
from switchman.ledger import Ledger
from switchman.testing import FakeUpstream

from .conftest import sdk_config, sdk_ledger_url


def test_threads_racing_to_the_first_chat_share_one_client(upstream: FakeUpstream, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[object] = []
    real = switchman.gateway.InProcessClient

    class Counted(real):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            made.append(self)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(switchman.gateway, "InProcessClient", Counted)
    router = Router.from_dict(sdk_config(upstream, tmp_path, monkeypatch))
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


def test_close_waits_for_a_chat_in_flight_on_another_thread_and_records_it(
        upstream: FakeUpstream, tmp_path: Path, sdk_router: Router, caplog: pytest.LogCaptureFixture) -> None:
    from switchman.ledger import Ledger

    router, url = sdk_router, sdk_ledger_url(tmp_path)
    router.chat("warm up", model="mid")  # the client is running
    upstream.inject("latency", model="cheap", times=None, seconds=1.0)
    replies: list[Any] = []
    caller = threading.Thread(target=lambda: replies.append(router.chat("slow", model="cheap")))
    try:
        caller.start()
        deadline = time.monotonic() + 10
        while not upstream.requests_for("cheap") and time.monotonic() < deadline:
            time.sleep(0.01)
        router.close()  # while the answer is on its way
        caller.join(30)
    finally:
        upstream.clear()
    assert len(replies) == 1 and replies[0]["choices"][0]["message"]["content"] == "Hello from cheap."
    ledger = Ledger(url)
    recorded = ledger.find(replies[0].request_id)
    ledger.close_sync()
    assert recorded is not None and recorded.model == "cheap"  # the answered request has its row
    assert "dropping records" not in caplog.text


def test_a_stream_closed_after_its_router_closes_is_a_no_op(tmp_path: Path, sdk_router: Router) -> None:
    router = sdk_router
    with router.chat("hello", model="cheap", stream=True) as stream:
        next(stream)
        router.close()  # ends the stream (and records it) with the client
        stream.close()  # "safe to repeat": nothing left to stop
    # (leaving the with block closed it once more): still the stream's one row
    assert _models_recorded(tmp_path) == ["cheap"]


@pytest.mark.anyio
async def test_an_async_stream_closed_after_its_router_closes_is_a_no_op(tmp_path: Path, sdk_router: Router) -> None:
    router = sdk_router
    async with await router.achat("hello", model="cheap", stream=True) as stream:
        await stream.__anext__()
        await router.aclose()
        await stream.aclose()
    assert _models_recorded(tmp_path) == ["cheap"]  # the repeated closes wrote no second row


def _models_recorded(tmp_path: Path) -> list[str | None]:
    """The model of every row in the test's ledger."""
    ledger = Ledger(sdk_ledger_url(tmp_path))
    try:
        return [record.model for record in ledger.records()]
    finally:
        ledger.close_sync()
