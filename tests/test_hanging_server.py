"""The test helper `HangingServer` itself: a proxy whose target refuses drops that one connection and keeps
accepting (before, the accept thread died of the ConnectionRefusedError and later connections hung unanswered)."""

from __future__ import annotations

import socket

from hanging_server import HangingServer


def test_a_proxy_whose_target_refuses_closes_each_connection_and_keeps_accepting() -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        gone = probe.getsockname()  # nothing listens there once closed
    server = HangingServer(target=gone)
    try:
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as client:
                client.settimeout(10)
                assert client.recv(10) == b""  # closed, not left hanging
        assert server.accepted == 3
    finally:
        server.close()
