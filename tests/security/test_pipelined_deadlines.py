"""Deadlines of the guarded protocol on real loopback connections, with pipelined requests.

A small ASGI app stands in for the gateway so a request can be kept "being answered" for as long
as a test needs: GET /stream sends `STREAM_PIECES` pieces, one per `PIECE_S`; POST /echo reads its
body and answers its length.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
import threading
import weakref
from collections.abc import Iterator
from typing import Any

import pytest
from security_support import (
    ASK,
    config_data,
    connect,
    read_response,
    request_bytes,
    running_gateway,
    wait_until,
)
from server_support import LoopbackServer

from switchman._limits import ServerLimits
from switchman.gateway import Gateway
from switchman.testing import FakeUpstream

STREAM_PIECES = 8
PIECE_S = 0.1


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """GET /stream: a slow chunked answer; POST /echo: the body's length; anything else: ok."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["path"] == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        for i in range(STREAM_PIECES):
            await asyncio.sleep(PIECE_S)
            await send({"type": "http.response.body", "body": b"piece-%d;" % i, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return
    body = b""
    if scope["method"] == "POST":
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
    answer = str(len(body)).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(answer)).encode())]})
    await send({"type": "http.response.body", "body": answer})


@pytest.fixture
def serve() -> Iterator[Any]:
    """serve(**limits) -> the app on loopback behind the guarded protocol with those limits."""
    started: list[LoopbackServer] = []

    def start(**limits: Any) -> LoopbackServer:
        server = LoopbackServer(app, ServerLimits(**limits), log_level="warning")
        started.append(server.__enter__())
        return server

    yield start
    for server in reversed(started):
        server.__exit__(None, None, None)


def read_until_closed(sock: socket.socket, timeout: float = 10.0) -> bytes:
    sock.settimeout(timeout)
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            return data
        if not chunk:
            return data
        data += chunk


def read_chunked_stream(sock: socket.socket, timeout: float = 10.0) -> tuple[bytes, bytes]:
    """One chunked response (head + body up to its 0-length chunk) and whatever followed it."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n0\r\n\r\n" not in data:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        data += chunk
    stream, end, rest = data.partition(b"\r\n0\r\n\r\n")
    return stream + end, rest


def test_a_pipelined_requests_body_deadline_does_not_cut_the_answer_being_streamed_before_it(serve: Any) -> None:
    """The body deadline of a pipelined request starts when that request starts, not at its head:
    uvicorn stops reading behind the answer in progress, and a 408 would be written into that answer."""
    server = serve(body_timeout_s=0.3)  # the stream takes 8 x 0.1 s, well past the pipelined body's deadline
    with connect(server.port) as sock:
        sock.sendall(request_bytes("GET", "/stream")
                     + b"POST /echo HTTP/1.1\r\nhost: test\r\ncontent-length: 10\r\n\r\nabc")  # 3 of 10 bytes
        stream, after = read_chunked_stream(sock)
        assert b"HTTP/1.1 408" not in stream, stream  # no error written into the middle of the stream
        assert stream.endswith(b"\r\n0\r\n\r\n") and all(b"piece-%d;" % i in stream for i in range(STREAM_PIECES))
        sock.sendall(b"defghij")  # the rest of the pipelined body, once the server reads again
        echo = read_response(sock) if not after else None
    assert echo is not None and echo.status == 200 and echo.body == b"10", (after, echo)


def test_a_pipelined_requests_body_deadline_still_fires_once_it_has_started(serve: Any) -> None:
    """Guard: the body deadline of a pipelined request is deferred, not dropped: a body never finished gets a 408."""
    server = serve(body_timeout_s=0.3)
    with connect(server.port) as sock:
        sock.sendall(request_bytes("GET", "/stream")
                     + b"POST /echo HTTP/1.1\r\nhost: test\r\ncontent-length: 10\r\n\r\nabc")  # 3 of 10 bytes, never more
        stream, after = read_chunked_stream(sock)
        assert stream.endswith(b"\r\n0\r\n\r\n") and b"408" not in stream, stream
        tail = after + read_until_closed(sock, timeout=5)
    assert tail.startswith(b"HTTP/1.1 408"), tail


def test_a_refusal_during_a_stream_cuts_it_without_writing_into_it(serve: Any, caplog: Any) -> None:
    """A head over the cap pipelined behind a stream: the connection is closed, no 431 lands inside the
    stream, and the stream's app is told it is disconnected (nothing written after the close, no error)."""
    caplog.set_level(logging.WARNING)
    server = serve(max_header_bytes=1024)
    with connect(server.port) as sock:
        sock.sendall(request_bytes("GET", "/stream"))
        sock.settimeout(5)
        first = sock.recv(65536)  # the stream has started
        sock.sendall(b"GET /health HTTP/1.1\r\nx-big: " + b"a" * 2048)
        received = first + read_until_closed(sock, timeout=5)
    assert received.startswith(b"HTTP/1.1 200") and b"431" not in received, received
    assert not received.endswith(b"\r\n0\r\n\r\n"), received  # cut: the client sees an unfinished stream
    with connect(server.port) as sock:  # the server still serves (and the stream's task has ended)
        sock.sendall(request_bytes("GET", "/health"))
        assert read_response(sock).status == 200
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def _recorded_statuses(gateway: Gateway, what: str) -> list[str]:
    """The status of every row in the gateway's ledger, once there is one (`what` names it if none comes)."""
    ledger = gateway.ledger
    assert ledger is not None

    def statuses() -> list[str]:
        ledger.flush_sync(timeout=5)
        return [r.status for r in ledger.records()]

    wait_until(lambda: bool(statuses()), what=what)
    return statuses()


def test_a_gateway_stream_cut_by_a_refusal_keeps_its_ledger_row(upstream: FakeUpstream, ledger_url: str,
                                                                 caplog: Any) -> None:
    """The gateway's own stream, cut because a head over the cap was pipelined behind it: recorded as the
    client's disconnect (a lost ledger row would be the worst outcome)."""
    caplog.set_level(logging.WARNING)
    upstream.inject("slow_stream", model="cheap", seconds=0.2)  # events 0.2 s apart: the stream is still on
    data = config_data(upstream, ledger_url, limits={"max_header_bytes": 1024})
    with running_gateway(data) as (gateway, server), connect(server.port) as sock:
        body = {"model": "auto", "messages": ASK, "stream": True}
        sock.sendall(request_bytes("POST", "/v1/chat/completions", body))
        sock.settimeout(5)
        first = sock.recv(65536)
        sock.sendall(b"GET /health HTTP/1.1\r\nx-big: " + b"a" * 2048)
        received = first + read_until_closed(sock, timeout=10)
        assert received.startswith(b"HTTP/1.1 200") and b"431" not in received, received
        assert b"[DONE]" not in received, received  # cut mid-stream
        assert _recorded_statuses(gateway, "the cut stream's ledger row") == ["client_disconnected"]
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_client_gone_with_a_request_pipelined_behind_its_stream_is_recorded_as_disconnected(
        upstream: FakeUpstream, ledger_url: str) -> None:
    """The stream is not the connection's newest request (a GET waits behind it): when the client goes,
    the stream is still told, stops relaying, and is recorded as the client's disconnect."""
    upstream.inject("slow_stream", model="cheap", seconds=0.2)
    data = config_data(upstream, ledger_url)
    with running_gateway(data) as (gateway, server):
        with connect(server.port) as sock:
            body = {"model": "auto", "messages": ASK, "stream": True}
            sock.sendall(request_bytes("POST", "/v1/chat/completions", body) + request_bytes("GET", "/health"))
            sock.settimeout(5)
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")  # the stream has started; then the client goes
        assert _recorded_statuses(gateway, "the stream's ledger row") == ["client_disconnected"]


def test_a_half_head_sent_behind_a_complete_request_gets_its_head_deadline(serve: Any) -> None:
    """A half head in the same packet as a complete request gets the head deadline (not the keep-alive
    one, 75 s by default): the request before it clears the deadline when it completes."""
    server = serve(header_timeout_s=0.3, keepalive_timeout_s=30)
    with connect(server.port) as sock:
        sock.sendall(request_bytes("GET", "/health") + b"GET /health HTTP/1.1\r\nhost: te")  # one packet
        assert read_response(sock, timeout=5).status == 200  # (its probe for a close may take the next byte)
        tail = read_until_closed(sock, timeout=5)  # held: no byte, no close within 5 s (> 16x the head deadline)
    assert b"TTP/1.1 408 " in tail[:16], tail


def test_a_pipelined_heads_deadline_waits_for_the_answer_being_streamed(serve: Any) -> None:
    """Guard: the head deadline of a half head sent during an answer re-arms until that answer is done."""
    server = serve(header_timeout_s=0.3)
    with connect(server.port) as sock:
        sock.sendall(request_bytes("GET", "/stream"))
        sock.settimeout(5)
        first = sock.recv(65536)  # the stream has started
        sock.sendall(b"GET /health HTTP/1.1\r\n")  # a half head, in a packet of its own
        stream, after = read_chunked_stream(sock)
        stream = first + stream
        assert stream.endswith(b"\r\n0\r\n\r\n") and b"408" not in stream, stream
        tail = after + read_until_closed(sock)  # then the half head gets its 408
    assert tail.startswith(b"HTTP/1.1 408"), tail


def test_the_keep_alive_deadline_never_cuts_a_pipelined_answer(serve: Any) -> None:
    """Guard: the idle deadline is not set while a pipelined request is answered after the first."""
    server = serve(keepalive_timeout_s=0.2)
    with connect(server.port) as sock:
        sock.sendall(request_bytes("GET", "/health") + request_bytes("GET", "/stream"))
        first = read_response(sock, timeout=5)
        assert first.status == 200
        stream, _ = read_chunked_stream(sock)
    assert all(b"piece-%d;" % i in stream for i in range(STREAM_PIECES)), stream


def test_clients_that_reset_around_their_deadline_cost_no_error_and_no_held_connection(
        serve: Any, caplog: Any) -> None:
    """Half heads reset just as their deadline fires: no error logged, nothing held, still serving."""
    caplog.set_level(logging.WARNING)
    server = serve(header_timeout_s=0.2)
    for _round in range(5):
        socks = [connect(server.port) for _ in range(40)]
        for sock in socks:
            sock.sendall(b"GET /health HTTP/1.1\r\nhost: te")
        for i, sock in enumerate(socks):  # resets spread over the deadline
            if i % 2:
                threading.Event().wait(0.01)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            sock.close()
    wait_until(lambda: not server.server.server_state.connections, what="every reset connection to be dropped")
    with connect(server.port) as sock:
        sock.sendall(request_bytes("GET", "/health"))
        assert read_response(sock).status == 200
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def test_server_shutdown_with_connections_open_leaves_no_watched_connection(serve: Any) -> None:
    """After shutdown nothing holds a connection (no timer left behind: the protocols can be collected)."""
    server = LoopbackServer(app, ServerLimits(header_timeout_s=30, keepalive_timeout_s=30), log_level="warning")
    server.__enter__()
    idle = connect(server.port)
    idle.sendall(request_bytes("GET", "/health"))
    assert read_response(idle).status == 200  # now idle on keep-alive
    half = connect(server.port)
    half.sendall(b"GET /health HTTP/1.1\r\n")  # a half head
    wait_until(lambda: len(server.server.server_state.connections) == 2, what="two connections held")
    protocols = [weakref.ref(p) for p in server.server.server_state.connections]
    server.__exit__(None, None, None)
    assert not server.thread.is_alive()
    idle.close()
    half.close()
    gc.collect()
    assert all(ref() is None for ref in protocols)
