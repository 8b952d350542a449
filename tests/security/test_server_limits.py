"""Server-level limits: slowloris, header caps, body deadlines, connection caps, keep-alive, protocol errors."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from security_support import (
    assert_openai_error,
    config_data,
    connect,
    read_response,
    request_bytes,
    running_gateway,
    wait_until,
)
from server_support import LoopbackServer

from switchman.testing import FakeUpstream

HEAD_START = b"POST /v1/chat/completions HTTP/1.1\r\nhost: test\r\n"


@pytest.fixture
def serve(upstream: FakeUpstream, ledger_url: str) -> Iterator[Any]:
    """serve(**limits) -> a running gateway's LoopbackServer with those server.limits."""
    stack: list[Any] = []

    def start(**limits: Any) -> LoopbackServer:
        context = running_gateway(config_data(upstream, ledger_url, limits=limits))
        stack.append(context)
        return context.__enter__()[1]

    yield start
    for context in reversed(stack):
        context.__exit__(None, None, None)


def held_connections(server: LoopbackServer) -> int:
    return len(server.server.server_state.connections)


def test_a_head_sent_slowly_gets_a_408_at_its_deadline_however_it_trickles(serve: Any) -> None:
    server = serve(header_timeout_s=0.5)
    with connect(server.port) as sock:
        sock.sendall(HEAD_START)
        started = time.monotonic()
        sock.settimeout(0.2)
        answer = b""
        for i in range(30):  # a header line every 0.2 s for up to 6 s: the deadline does not move
            try:
                answer = sock.recv(65536)
                break
            except TimeoutError:
                sock.sendall(f"x-slow-{i}: 1\r\n".encode())
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert time.monotonic() - started < 5.0
        assert b'"code":"request_timeout"' in answer and b"connection: close" in answer


def test_a_connection_that_sends_nothing_is_closed_at_the_head_deadline(serve: Any) -> None:
    server = serve(header_timeout_s=0.3)
    with connect(server.port) as sock:
        response = read_response(sock, timeout=5)
    assert_openai_error(response, 408, "request_timeout")
    assert response.closed
    wait_until(lambda: held_connections(server) == 0, what="the idle connection to be dropped")


def test_a_head_over_the_cap_is_refused_before_it_ends(serve: Any) -> None:
    server = serve(max_header_bytes=4096)
    with connect(server.port) as sock:
        sock.sendall(HEAD_START + b"x-big: " + b"a" * 20_000)  # never terminated
        response = read_response(sock)
    error = assert_openai_error(response, 431, "request_header_too_large")
    assert "4096" in error["message"] and response.closed
    # A head just under the cap is served.
    with connect(server.port) as sock:
        sock.sendall(request_bytes("GET", "/health", headers={"x-fill": "b" * 3500}))
        assert read_response(sock).status == 200


def test_a_body_sent_slowly_gets_a_408(serve: Any) -> None:
    server = serve(body_timeout_s=0.4)
    with connect(server.port) as sock:
        sock.sendall(HEAD_START + b"content-type: application/json\r\ncontent-length: 100\r\n\r\n{\"model\"")
        response = read_response(sock, timeout=5)
    assert_openai_error(response, 408, "request_timeout")
    assert response.closed


def test_connections_beyond_the_cap_get_a_503_and_the_gateway_recovers(serve: Any) -> None:
    server = serve(max_connections=6, header_timeout_s=30)
    idle = [connect(server.port) for _ in range(6)]
    try:
        wait_until(lambda: held_connections(server) == 6, what="six connections held")
        with connect(server.port) as sock:
            sock.sendall(request_bytes("GET", "/health"))
            response = read_response(sock)
        assert_openai_error(response, 503, "server_busy")
        assert response.headers["retry-after"] == "1" and response.closed
    finally:
        for sock in idle:
            sock.close()
    wait_until(lambda: held_connections(server) == 0, what="the idle connections to close")
    with connect(server.port) as sock:
        sock.sendall(request_bytes("GET", "/health"))
        assert read_response(sock).status == 200


def test_the_per_address_cap_keeps_one_address_from_taking_every_connection(serve: Any) -> None:
    server = serve(max_connections_per_client=3, header_timeout_s=30)
    attacker = [connect(server.port, source="127.0.0.2") for _ in range(3)]
    try:
        wait_until(lambda: held_connections(server) == 3, what="three attacker connections")
        with connect(server.port, source="127.0.0.2") as sock:
            sock.sendall(request_bytes("GET", "/health"))
            assert_openai_error(read_response(sock), 503, "server_busy")
        with connect(server.port, source="127.0.0.1") as sock:
            sock.sendall(request_bytes("GET", "/health"))
            assert read_response(sock).status == 200
    finally:
        for sock in attacker:
            sock.close()
    wait_until(lambda: held_connections(server) == 0, what="the attacker connections to close")
    with connect(server.port, source="127.0.0.2") as sock:  # the address's count went back down
        sock.sendall(request_bytes("GET", "/health"))
        assert read_response(sock).status == 200


def test_health_answers_while_slow_clients_hold_connections_and_they_are_dropped(serve: Any) -> None:
    server = serve(header_timeout_s=1.0)
    slow = [connect(server.port, source="127.0.0.2") for _ in range(200)]
    try:
        for sock in slow:
            sock.sendall(HEAD_START)
        with connect(server.port) as sock:
            sock.sendall(request_bytes("GET", "/health"))
            assert read_response(sock).status == 200
        wait_until(lambda: held_connections(server) == 0, timeout=15, what="the slow heads to be dropped")
    finally:
        for sock in slow:
            sock.close()


def test_a_connection_serves_at_most_keepalive_max_requests(serve: Any) -> None:
    server = serve(keepalive_max_requests=2)
    with connect(server.port) as sock:
        sock.sendall(request_bytes("GET", "/health"))
        first = read_response(sock)
        sock.sendall(request_bytes("GET", "/health"))
        second = read_response(sock)
    assert first.status == second.status == 200
    assert not first.closed and "connection" not in first.headers
    assert second.headers["connection"] == "close" and second.closed


@pytest.mark.parametrize(
    "raw",
    [
        HEAD_START + b"content-length: abc\r\n\r\n",
        HEAD_START + b"content-length: 5\r\ntransfer-encoding: chunked\r\n\r\n",
        HEAD_START + b"content-length: 1\r\ncontent-length: 2\r\n\r\n",
        b"BREW /v1/chat/completions HTTP/1.1\r\nhost: test\r\n\r\n",
        b"GET /\xff\xfe HTTP/1.1\r\nhost: test\r\n\r\n",
        b"GET /health HTTP/1.1\r\nhost: test\r\nx-bad: a\x01b\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40,  # a TLS hello on the plain port
    ],
    ids=["bad-content-length", "cl-with-te", "two-content-lengths", "unknown-method", "bad-path", "bad-header",
         "tls"],
)
def test_malformed_requests_get_a_json_400_and_a_close(serve: Any, raw: bytes) -> None:
    server = serve()
    with connect(server.port) as sock:
        sock.sendall(raw)
        response = read_response(sock)
    error = assert_openai_error(response, 400, "invalid_http_request")
    assert "malformed HTTP request" in error["message"] and error["type"] == "invalid_request_error"
    assert response.headers["connection"] == "close" and response.closed


def test_a_client_that_sends_its_request_and_closes_early_is_not_an_error(serve: Any, caplog: Any) -> None:
    server = serve()
    for _ in range(20):  # aborted uploads: half a body, then gone
        sock = connect(server.port)
        sock.sendall(HEAD_START + b"content-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"mo")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()  # a reset
    with connect(server.port) as sock:
        sock.sendall(request_bytes("GET", "/health"))
        assert read_response(sock).status == 200
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
