"""Redis for tests: a shared one under a key prefix of each test's own, or a server a test starts and kills.

    prefix = unique_prefix()                        # keys under it are deleted by `forget_prefix(url, prefix)`
    with RedisServer() as server:                   # redis-server on a free loopback port, no persistence
        server.url; server.stop(); server.start()   # a Redis outage on demand (same port)

Needs the `redis-server` binary and the redis client (`switchman[redis]`).
"""

from __future__ import annotations

import socket
import subprocess
import time
import uuid
from types import TracebackType

__all__ = ["RedisServer", "forget_prefix", "unique_prefix"]

def unique_prefix() -> str:
    """A key prefix no other test (or helper) uses."""
    return f"sm-test:{uuid.uuid4().hex[:12]}:"


def forget_prefix(url: str, prefix: str) -> None:
    """Delete every key under `prefix`."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(prefix + "*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A redis-server of the test's own on a free loopback port, stopped (kill) and restarted at will."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the server (again, after `stop`) and wait until it answers."""
        self._process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import redis

        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis(port=self.port, socket_timeout=0.5).ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def stop(self) -> None:
        """Kill the server (SIGKILL: an outage, not a shutdown)."""
        if self._process is not None:
            self._process.kill()
            self._process.wait(10)
            self._process = None

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
