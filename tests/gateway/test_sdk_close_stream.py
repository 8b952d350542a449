"""`Router.close()` while another thread opens a stream: close waits for it to open, then ends it with its ledger row
written; a reader cut off gets RouterClosedError, not anyio's 'This portal is not running'."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from switchman import Router, RouterClosedError
from switchman.ledger import Ledger
from switchman.testing import FakeUpstream

from .conftest import CallThread, sdk_ledger_url


def test_close_while_a_stream_is_being_opened_records_it(upstream: FakeUpstream, tmp_path: Path, sdk_router: Router,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    router, url = sdk_router, sdk_ledger_url(tmp_path)
    router.chat("warm up", model="mid")
    upstream.inject("latency", model="cheap", times=None, seconds=1.0)
    thread = CallThread(lambda: list(router.chat("slow", model="cheap", stream=True)))
    outcome = thread.outcome
    try:
        thread.start()
        deadline = time.monotonic() + 10
        while not upstream.requests_for("cheap") and time.monotonic() < deadline:
            time.sleep(0.01)
        router.close()
        thread.join(30)
    finally:
        upstream.clear()
    assert len(outcome) == 1 and isinstance(outcome[0], RouterClosedError), outcome  # not an empty stream
    router.chat("after", model="mid")  # a new call starts the router again
    router.close()
    ledger = Ledger(url)
    rows = ledger.records()
    ledger.close_sync()
    assert [r.model for r in rows] == ["mid", "cheap", "mid"] and "dropping records" not in caplog.text
