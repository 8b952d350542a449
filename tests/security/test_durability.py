"""kill -9 under load with `server.durability: sync`: every answer a client received has its ledger row."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import yaml
from security_support import ASK, ENV, config_data

from switchman.ledger import Ledger
from switchman.testing import FakeUpstream


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_kill_9_loses_no_answered_request_with_sync_durability(upstream: FakeUpstream, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    data = config_data(upstream, url, durability="sync")
    config = tmp_path / "switchman.yaml"
    config.write_text(yaml.safe_dump(data))
    port = free_port()
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-c", "from switchman.cli import app; app()", "serve", "--config", str(config),
         "--port", str(port)], env={**os.environ, **ENV}, stdout=log, stderr=log)
    base = f"http://127.0.0.1:{port}"
    answered: list[str] = []
    stop = threading.Event()

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

    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(base + "/health").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline and process.poll() is None, (tmp_path / "serve.log").read_text()
            time.sleep(0.1)
        threads = [threading.Thread(target=client, args=(i % 2 == 1,)) for i in range(8)]
        for t in threads:
            t.start()
        time.sleep(1.5)
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        stop.set()
        for t in threads:
            t.join(15)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        log.close()
    assert len(answered) >= 20
    ledger = Ledger(url)
    written = {record.request_id for record in ledger.records()}
    ledger.close_sync()
    assert set(answered) <= written, f"{len(set(answered) - written)} answered requests have no row"
