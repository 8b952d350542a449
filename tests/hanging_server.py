"""A loopback TCP server that accepts connections and never answers, or a proxy that can go silent: a database
that hangs, for the tests of what the gateway and the dashboard do then (importable from every test folder); its
`pump` and `cut` also serve the ledger tests' TcpProxy."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable

__all__ = ["HangingServer", "cut", "pump"]


def cut(sockets: list[socket.socket]) -> None:
    """Shut down and close each socket, as a database that goes away does to its connections."""
    for sock in sockets:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()


def pump(src: socket.socket, dst: socket.socket, silent: Callable[[], bool] = lambda: False) -> None:
    """Forward what `src` sends to `dst` (swallowed while `silent()`) until either end closes, then shut both down."""
    try:
        while data := src.recv(65536):
            if silent():
                continue  # the database went silent: nothing passes either way
            dst.sendall(data)
    except OSError:
        pass
    for sock in (src, dst):
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class HangingServer:
    """A loopback TCP server that accepts connections and never answers: a database that hangs.

    With a `target`, it forwards to it until `hang()`, after which established connections go
    silent (what they send is swallowed) and new ones are accepted and never answered; `heal()`
    cuts the silent connections (as a restarted database would) and forwards again.
    """

    def __init__(self, target: tuple[str, int] | None = None) -> None:
        self.target = target
        self.hanging = target is None
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False
        self.accepted = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def hang(self) -> None:
        self.hanging = True

    def heal(self) -> None:
        self.hanging = False
        self._cut()

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self._server.close()
        self._cut()

    def _cut(self) -> None:
        with self._lock:
            sockets, self._sockets = self._sockets, []
        cut(sockets)

    def _drop(self, client: socket.socket) -> None:
        with self._lock:
            if client in self._sockets:
                self._sockets.remove(client)
        client.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            self.accepted += 1
            with self._lock:
                closing = self._closed
                if not closing:
                    self._sockets.append(client)
            if closing:  # accepted as close() ran: it would be left open (a ResourceWarning in a later test)
                client.close()
                return
            if self.hanging:  # always so without a target
                threading.Thread(target=self._swallow, args=(client,), daemon=True).start()
                continue
            assert self.target is not None
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:  # the target refused: so does this connection, and the server keeps accepting
                self._drop(client)
                continue
            upstream.settimeout(None)
            with self._lock:
                self._sockets.append(upstream)
            threading.Thread(target=pump, args=(client, upstream, self._silent), daemon=True).start()
            threading.Thread(target=pump, args=(upstream, client, self._silent), daemon=True).start()

    @staticmethod
    def _swallow(sock: socket.socket) -> None:
        try:
            while sock.recv(65536):
                pass
        except OSError:
            pass

    def _silent(self) -> bool:
        return self.hanging
