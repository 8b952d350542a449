"""kill -9 under load with `server.durability: sync`: every answer a client received has its ledger row."""

from __future__ import annotations

import signal
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from security_support import ASK, config_data, serve_process

from switchman.ledger import Ledger
from switchman.testing import FakeUpstream


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_kill_9_loses_no_answered_request_with_sync_durability(upstream: FakeUpstream, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    answered: list[str] = []
    stop = threading.Event()
    with serve_process(config_data(upstream, url, durability="sync"), tmp_path) as (process, base):

        def client(stream: bool) -> None:
            with httpx.Client(base_url=base, timeout=10) as http:
                while not stop.is_set():
                    body = {"model": "auto", "messages": ASK, "stream": stream}
                    try:
                        response = http.post("/v1/chat/completions", json=body)
                    except httpx.HTTPError:
                        return  # the server died mid-request: this one was not answered
                    if response.status_code == 200 and (not stream or response.text.rstrip().endswith("[DONE]")):
                        answered.append(response.headers["x-switchman-request-id"])

        threads = [threading.Thread(target=client, args=(i % 2 == 1,)) for i in range(8)]
        for t in threads:
            t.start()
        time.sleep(1.5)
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        stop.set()
        for t in threads:
            t.join(15)
    assert len(answered) >= 20
    ledger = Ledger(url)
    written = {record.request_id for record in ledger.records()}
    ledger.close_sync()
    assert set(answered) <= written, f"{len(set(answered) - written)} answered requests have no row"
