"""`serve` beyond loopback over a ledger that cannot be read (it hangs): a one-line refusal naming the ledger,
not one that says no key exists and sends the operator to create one."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback listener that accepts connections and never answers (a hung database)."""
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(server.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    yield server.getsockname()[1]
    server.close()
    for sock in held:
        sock.close()


def test_serve_beyond_loopback_over_an_unreadable_ledger_says_so(tmp_path: Path, silent_port: int) -> None:
    config = tmp_path / "switchman.yaml"
    config.write_text(yaml.safe_dump({
        "providers": {"fake": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}},
        "models": {"cheap": {"provider": "fake", "input_price": 1.0, "output_price": 2.0}},
        "routes": {"default": {"candidates": ["cheap"], "strategy": "cheapest"}},
        "server": {"ledger_url": f"postgresql://postgres@127.0.0.1:{silent_port}/test"},
    }))
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", "from switchman.cli import app; app()", "serve", "--config", str(config),
         "--host", "0.0.0.0", "--port", "0"],
        capture_output=True, text=True, timeout=60, env={**{k: v for k, v in os.environ.items() if not k.startswith("SWITCHMAN_")}, "HOME": str(tmp_path)},
    )
    assert time.monotonic() - started < 30  # fails fast: the connect timeout, not for ever
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert "refusing to listen on 0.0.0.0" in lines[0] and "ledger" in lines[0]
    assert "keys create" not in lines[0]  # a key may well exist: the ledger could not be asked
