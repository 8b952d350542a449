"""uvicorn serving an app in a thread on an ephemeral loopback port: the one server the gateway, dashboard,
hostile-client and local-model tests run (importable from every test folder: tests/ is on sys.path).
Not to be confused with serve_support, which runs `switchman serve` as a process of its own.

    with ServerThread(build_app(gateway)) as url: ...           # the gateway's guarded protocol, its default limits
    with ServerThread(app, plain=True) as url: ...              # uvicorn's own protocol (the dashboard tests')
    with LoopbackServer(app, limits) as server: server.port     # the same, handing over the server (security tests)
    server.call(reloader.reload)                                # a coroutine run on the server's own event loop
    with serving_handler(Handler) as port: ...                  # a stdlib http.server handler instead of an app
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

import uvicorn

from switchman._limits import ServerLimits
from switchman.gateway import server_config

__all__ = ["LoopbackServer", "ServerThread", "serving_handler"]

_T = TypeVar("_T")


class _Served:
    """The server and its thread; `start` returns once it listens (or raises if it never does)."""

    def __init__(self, app: Any, limits: ServerLimits | None = None, *, plain: bool = False,
                 log_level: str = "info") -> None:
        options: dict[str, Any] = {"host": "127.0.0.1", "port": 0, "log_config": None, "log_level": log_level}
        config = (uvicorn.Config(app, lifespan="on", **options) if plain
                  else server_config(app, limits or ServerLimits(), **options))
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.port = 0

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                self.server.should_exit = True  # a server still starting stops once it gets there, not serves on
                raise RuntimeError("server did not start")
            time.sleep(0.01)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        assert not self.thread.is_alive(), "the server thread did not end within 30 s of should_exit"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class ServerThread(_Served):
    """`with` gives the server's URL."""

    def __enter__(self) -> str:
        self.start()
        return self.url

    def __exit__(self, *exc: object) -> None:
        self.stop()


class LoopbackServer(_Served):
    """`with` gives the server itself (its port, its uvicorn state, its thread)."""

    def __enter__(self) -> LoopbackServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def call(self, make: Callable[[], Coroutine[Any, Any, _T]], timeout_s: float = 60.0) -> _T:
        """`make()` run on the server's own event loop (as a signal handler's task would be), its result."""
        loop = self.server.servers[0].get_loop()
        return asyncio.run_coroutine_threadsafe(make(), loop).result(timeout_s)


@contextmanager
def serving_handler(handler: type[BaseHTTPRequestHandler]) -> Iterator[int]:
    """A threading http.server with this handler on an ephemeral loopback port (yields the port); stopped after."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
