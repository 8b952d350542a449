"""`switchman serve` in a process of its own (nothing else shares its interpreter), as an operator runs it: for the
tests of signals, workers, reloads and durability (importable from every test folder: tests/ is on sys.path).
Not to be confused with server_support, which serves an app with uvicorn in a thread of the test's own process.

    with serving(tmp_path, config_file, "--workers", "2", env=ENV) as served:
        httpx.get(served.base + "/health"); served.wait_for(lambda: "reloaded" in served.stderr)
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

__all__ = ["Served", "free_port", "serve_command", "serving", "stop_process"]


def stop_process(process: subprocess.Popen[Any]) -> None:
    """SIGTERM, up to 60 s for a clean shutdown, then SIGKILL (nothing when it has already exited)."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def free_port() -> int:
    """A loopback port nothing listens on (now)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_command(config: Path, port: int, *args: str) -> list[str]:
    """The command line of `switchman serve --config config --port port ...` with this interpreter."""
    return [sys.executable, "-c", "from switchman.cli import app; app()", "serve", "--config", str(config),
            "--port", str(port), *args]


class Served:
    """A `switchman serve` process, its address and its captured output."""

    def __init__(self, process: subprocess.Popen[bytes], base: str, out: Path, err: Path) -> None:
        self.process, self.base, self._out, self._err = process, base, out, err

    @property
    def stdout(self) -> str:
        return self._out.read_text()

    @property
    def stderr(self) -> str:
        return self._err.read_text()

    def models(self) -> set[str]:
        return {m["id"] for m in httpx.get(self.base + "/v1/models", timeout=10).json()["data"]}

    def wait_for(self, what: Callable[[], bool], seconds: float = 60.0) -> None:
        deadline = time.monotonic() + seconds
        while not what():
            assert self.process.poll() is None, f"serve exited\n{self.stderr}"
            assert time.monotonic() < deadline, f"timed out\n{self.stderr}"
            time.sleep(0.1)


@contextmanager
def serving(folder: Path, config: Path, *args: str, env: Mapping[str, str]) -> Iterator[Served]:
    """`switchman serve` on a free port with `env` added to this environment, once /health answers; SIGTERM after
    (killed if it has not stopped within a minute). Its output goes to `folder`/serve.out and serve.err."""
    port = free_port()
    out, err = folder / "serve.out", folder / "serve.err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = subprocess.Popen(serve_command(config, port, *args), env={**os.environ, **env}, stdout=stdout,
                                   stderr=stderr)
    served = Served(process, f"http://127.0.0.1:{port}", out, err)

    def healthy() -> bool:
        try:
            return httpx.get(served.base + "/health", timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    try:
        served.wait_for(healthy)
        yield served
    finally:
        stop_process(process)
