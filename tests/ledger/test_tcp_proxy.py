"""The ledger tests' `TcpProxy` itself: a connection its target refuses is closed and the proxy keeps accepting, so a
later connection goes through once the target is back (before, the accept thread died of the ConnectionRefusedError
and every later connection hung unanswered)."""

from __future__ import annotations

import socket
import threading
from typing import Any

import pytest
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


@pytest.mark.parametrize("restart", [False, True], ids=["stopped", "stopped-and-restarted"])
def test_a_connection_accepted_just_before_stop_is_cut_too(monkeypatch: pytest.MonkeyPatch, restart: bool) -> None:
    """A connection the accept thread took just before stop() (it was still connecting to the target) is cut, not
    kept through the outage; also when the proxy is started again at once. Before, the thread added it to the open
    connections after stop() had cut them, and it kept forwarding."""
    connect = socket.create_connection
    connecting, go_on = threading.Event(), threading.Event()

    with socket.create_server(("127.0.0.1", 0)) as target:
        target_address = target.getsockname()

        def held_connect(address: tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
            if address == target_address:  # the proxy's accept thread, inside the window
                connecting.set()
                assert go_on.wait(10)
            return connect(address, *args, **kwargs)

        monkeypatch.setattr(socket, "create_connection", held_connect)
        proxy = TcpProxy(target_address)
        proxy.start()
        try:
            with connect(("127.0.0.1", proxy.port), timeout=10) as client:
                assert connecting.wait(10)
                proxy.stop()
                if restart:
                    proxy.start()
                go_on.set()
                target.settimeout(10)
                served, _ = target.accept()
                with served:
                    assert client.recv(10) == b""  # cut (before: a TimeoutError, it was still open)
                    assert served.recv(10) == b""
        finally:
            go_on.set()
            proxy.stop()
