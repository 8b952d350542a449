"""The ledger tests' `TcpProxy` itself: a connection its target refuses is closed and the proxy keeps accepting, so a
later connection goes through once the target is back (before, the accept thread died of the ConnectionRefusedError
and every later connection hung unanswered)."""

from __future__ import annotations

import socket

from ledger_support import TcpProxy
from serve_support import free_port


def test_a_connection_the_target_refuses_is_closed_and_a_later_one_goes_through() -> None:
    port = free_port()  # the target: nothing listens there yet
    proxy = TcpProxy(("127.0.0.1", port))
    proxy.start()
    try:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as refused:
            assert refused.recv(10) == b""  # closed, not left hanging
        with socket.create_server(("127.0.0.1", port)) as target:
            target.settimeout(10)
            with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as client:
                served, _ = target.accept()
                with served:
                    client.sendall(b"ping")
                    assert served.recv(10) == b"ping"
                    served.sendall(b"pong")
                    assert client.recv(10) == b"pong"
    finally:
        proxy.stop()
