"""SIGTERM under load: every answered request has its ledger row, and no row lacks an answer."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from serve_support import free_port, serving

from switchman.ledger import Ledger
from switchman.testing import FakeUpstream

from .conftest import ENV


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigterm_under_load_flushes_every_answered_request(
    tmp_config_file: Callable[..., Path], tmp_path: Path, upstream: FakeUpstream
) -> None:
    upstream.clear()
    upstream.inject("timeout", model="cheap", times=None, seconds=0.05)  # every call takes 50 ms upstream
    config = tmp_config_file()
    try:
        with serving(tmp_path, config, env=ENV) as served:
            process, base = served.process, served.base
            answered: list[str] = []
            lock = threading.Lock()
            stop = threading.Event()

            def load() -> None:
                with httpx.Client(base_url=base, timeout=30) as client:
                    for _ in range(400):  # bounded
                        if stop.is_set():
                            return
                        try:
                            response = client.post("/v1/chat/completions",
                                                   json={"model": "auto", "messages": [{"role": "user", "content": "x"}]})
                        except httpx.TransportError:
                            return  # the server stopped accepting
                        if "x-switchman-request-id" in response.headers:
                            with lock:
                                answered.append(response.headers["x-switchman-request-id"])

            threads = [threading.Thread(target=load) for _ in range(8)]
            for thread in threads:
                thread.start()
            deadline = time.monotonic() + 60.0  # bounded: a server that stops answering fails here, not hangs
            while len(answered) < 40:
                if time.monotonic() > deadline:
                    stop.set()
                    raise AssertionError(f"only {len(answered)} of 40 requests answered in 60 s before the SIGTERM")
                time.sleep(0.01)
            process.send_signal(signal.SIGTERM)
            # uvicorn re-raises the signal once it has shut down gracefully
            assert process.wait(timeout=60) in (0, -signal.SIGTERM), served.stderr
            stop.set()
            for thread in threads:
                thread.join(30)
    finally:
        upstream.clear()
    ledger = Ledger.from_url(f"sqlite:///{tmp_path / 'ledger.sqlite3'}")
    try:
        rows = {r.request_id for r in ledger.records()}
    finally:
        ledger.close_sync()
    assert len(answered) >= 40
    assert rows == set(answered)


def test_a_stream_cut_by_the_shutdown_is_not_blamed_on_the_client(upstream: FakeUpstream, tmp_path: Path) -> None:
    """A stream still running when the graceful shutdown's time is up is cancelled by the server: its row
    says so (an error naming the shutdown), not client_disconnected."""
    import uvicorn

    from switchman._config import parse_config
    from switchman.gateway import Gateway, build_app, server_config

    from .conftest import ASK, config_data

    upstream.clear()
    upstream.inject("slow_stream", model="cheap", times=1, seconds=1.0)  # ~6 events, one a second
    gateway = Gateway.from_config(parse_config(config_data(upstream, f"sqlite:///{tmp_path / 'l.sqlite3'}")),
                                  env=ENV)
    server = uvicorn.Server(server_config(build_app(gateway), gateway.config.server.limits, host="127.0.0.1",
                                          port=free_port(), log_config=None, timeout_graceful_shutdown=0.5))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started and thread.is_alive():  # (a server that failed to start ends its thread)
            time.sleep(0.01)
        assert server.started, "the server did not start"
        port = server.servers[0].sockets[0].getsockname()[1]
        with httpx.stream("POST", f"http://127.0.0.1:{port}/v1/chat/completions", timeout=30,
                          json={"model": "cheap", "messages": ASK, "stream": True}) as response:
            request_id = response.headers["x-switchman-request-id"]
            chunks = response.iter_raw()
            next(chunks)  # the stream is under way
            server.should_exit = True
            with pytest.raises(httpx.RemoteProtocolError):
                for _ in chunks:
                    pass
        thread.join(30)
    finally:
        upstream.clear()
    ledger = Ledger.from_url(f"sqlite:///{tmp_path / 'l.sqlite3'}")
    try:
        record = ledger.find(request_id)
    finally:
        ledger.close_sync()
    assert record is not None
    assert (record.status, record.error) == ("error", "cancelled: the server shut down before the stream ended")


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_a_second_ctrl_c_still_closes_the_gateway(
    tmp_config_file: Callable[..., Path], tmp_path: Path, upstream: FakeUpstream
) -> None:
    """Ctrl-C while a stream is open waits for it; a second Ctrl-C stops waiting (uvicorn's force quit). uvicorn then
    skipped the app's shutdown (no ledger flush or spill; the stream never recorded; tracebacks). It must still close."""
    upstream.clear()
    # One event, then a long pause: the second Ctrl-C lands while the stream is still open, however slow the machine.
    upstream.inject("slow_stream", model="cheap", times=1, seconds=60.0)
    try:
        with serving(tmp_path, tmp_config_file(), env=ENV) as served:
            with httpx.stream("POST", served.base + "/v1/chat/completions", timeout=30,
                              json={"model": "cheap", "messages": [{"role": "user", "content": "x"}],
                                    "stream": True}) as response:
                request_id = response.headers["x-switchman-request-id"]
                chunks = response.iter_raw()
                next(chunks)  # the stream is under way
                served.process.send_signal(signal.SIGINT)
                served.wait_for(lambda: "Waiting for connections to close" in served.stderr)
                served.process.send_signal(signal.SIGINT)
                with pytest.raises(httpx.HTTPError):
                    for _ in chunks:
                        pass
            served.process.wait(timeout=60)
            stderr = served.stderr
    finally:
        upstream.clear()
    assert "Traceback" not in stderr, stderr
    assert "Application shutdown complete" in stderr, stderr
    ledger = Ledger.from_url(f"sqlite:///{tmp_path / 'ledger.sqlite3'}")
    try:
        record = ledger.find(request_id)
        rows = [r for r in ledger.records() if r.request_id == request_id]
    finally:
        ledger.close_sync()
    assert record is not None, stderr
    assert len(rows) == 1, rows
    assert (record.status, record.error) == ("error", "cancelled: the server shut down before the stream ended")


async def _hangs_on_close(scope: dict[str, Any], receive: Callable[[], Any], send: Callable[..., Any]) -> None:
    """An app whose lifespan shutdown never ends: a gateway whose close hangs (a Redis or exporter that never
    answers)."""
    assert scope["type"] == "lifespan"
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        else:
            await asyncio.Event().wait()


def test_a_forced_shutdown_whose_close_hangs_still_ends(caplog: pytest.LogCaptureFixture) -> None:
    """The second Ctrl-C runs the gateway's whole close; one that hangs held the process until SIGKILL. It is
    bounded: past `close_timeout_s` and a margin the server says so and exits."""
    import uvicorn

    from switchman.gateway import GatewayServer

    server = GatewayServer(uvicorn.Config(_hangs_on_close, host="127.0.0.1", port=free_port(), log_config=None,
                                          lifespan="on"), close_timeout_s=0.0)
    thread = threading.Thread(target=server.run, daemon=True)
    with caplog.at_level("ERROR", logger="switchman.gateway"):
        thread.start()
        while not server.started and thread.is_alive():
            time.sleep(0.01)
        assert server.started, "the server did not start"
        server.should_exit = server.force_exit = True
        thread.join(60)
    assert not thread.is_alive()
    assert any("did not close" in r.getMessage() for r in caplog.records), caplog.text


def test_a_third_ctrl_c_exits_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A third SIGINT only set force_exit again: a forced close that hung needed SIGKILL."""
    import os

    import uvicorn

    from switchman.gateway import GatewayServer

    exits: list[int] = []
    monkeypatch.setattr(os, "_exit", exits.append)
    server = GatewayServer(uvicorn.Config(_hangs_on_close))
    server.handle_exit(signal.SIGINT, None)
    server.handle_exit(signal.SIGINT, None)
    assert (server.should_exit, server.force_exit, exits) == (True, True, [])
    server.handle_exit(signal.SIGINT, None)
    assert exits == [128 + signal.SIGINT]


def _record(msg: str, exc: BaseException) -> logging.LogRecord:
    return logging.LogRecord("uvicorn.error", logging.ERROR, __file__, 1, msg, None, (type(exc), exc, None))


def test_only_uvicorns_record_of_a_request_cancelled_by_the_shutdown_loses_its_traceback() -> None:
    """The filter rewrote ANY record carrying a CancelledError into "cancelled by the shutdown", even outside one:
    a cancellation bug would have lost its traceback."""
    from switchman.gateway import CancelledByShutdown
    from switchman.gateway._stopping import shutting_down

    cancelled = asyncio.CancelledError()
    outside = _record("Exception in ASGI application\n", cancelled)
    assert CancelledByShutdown().filter(outside)
    assert (outside.levelno, outside.exc_info is not None) == (logging.ERROR, True)
    shutting_down.set()
    try:
        other, asgi = _record("something else", cancelled), _record("Exception in ASGI application\n", cancelled)
        for record in (other, asgi):
            assert CancelledByShutdown().filter(record)
    finally:
        shutting_down.clear()
    assert (other.levelno, other.exc_info is not None) == (logging.ERROR, True)
    assert (asgi.levelno, asgi.exc_info) == (logging.INFO, None)
    assert "cancelled by the shutdown" in asgi.getMessage()


def test_a_request_the_forced_shutdown_cancels_before_answering_gets_a_503(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    """A request still waiting on its provider when the shutdown was forced got uvicorn's plain-text 500
    ("Internal Server Error"): it gets a 503 in the OpenAI error format, which clients retry."""
    from switchman._config import parse_config
    from switchman.gateway import Gateway, GatewayServer, build_app, server_config

    from .conftest import ASK, config_data

    upstream.clear()
    upstream.inject("latency", model="cheap", times=1, seconds=60.0)  # no answer before the shutdown
    gateway = Gateway.from_config(parse_config(config_data(upstream, f"sqlite:///{tmp_path / 'l.sqlite3'}")),
                                  env=ENV)
    server = GatewayServer(server_config(build_app(gateway), gateway.config.server.limits, host="127.0.0.1",
                                         port=free_port(), log_config=None))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    answers: list[httpx.Response] = []
    try:
        while not server.started and thread.is_alive():  # (a server that failed to start ends its thread)
            time.sleep(0.01)
        assert server.started, "the server did not start"
        port = server.servers[0].sockets[0].getsockname()[1]
        client = threading.Thread(target=lambda: answers.append(httpx.post(
            f"http://127.0.0.1:{port}/v1/chat/completions", timeout=60, json={"model": "cheap", "messages": ASK})))
        client.start()
        deadline = time.monotonic() + 30
        while not upstream.requests_for("cheap") and time.monotonic() < deadline:
            time.sleep(0.01)
        server.should_exit = server.force_exit = True
        client.join(60)
        thread.join(60)
    finally:
        upstream.clear()
    assert len(answers) == 1
    response = answers[0]
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "server_shutting_down", response.text
    ledger = Ledger.from_url(f"sqlite:///{tmp_path / 'l.sqlite3'}")
    try:
        rows = [r for r in ledger.records() if r.request_id == response.headers["x-switchman-request-id"]]
    finally:
        ledger.close_sync()
    assert [r.status for r in rows] == ["error"], rows  # the cancelled request still has its one row
