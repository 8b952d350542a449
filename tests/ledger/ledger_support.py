"""Helpers for the ledger tests: polling, Postgres URLs, ledgers started together, a TCP proxy that can take a
database down."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

import pytest
from sqlalchemy.exc import SQLAlchemyError

from switchman.ledger import Ledger

T = TypeVar("T")

PG_HOST, PG_PORT, PG_DB = "127.0.0.1", 5432, "test"


def wait_until(predicate: Callable[[], bool], *, timeout: float = 15.0, what: str = "condition") -> None:
    """Poll until `predicate()` holds; fail the test (naming `what`) if it never does."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


def at_once(ledgers: Sequence[Ledger], read: Callable[[Ledger], T]) -> tuple[list[T], list[str]]:
    """`read(ledger)` on every ledger at once (a thread each, released together, as replicas starting together),
    then every ledger closed: what the reads returned, and the database errors they raised, one line each."""
    start = threading.Barrier(len(ledgers))
    results: list[T] = []
    failures: list[str] = []

    def run(ledger: Ledger) -> None:
        start.wait()
        try:
            results.append(read(ledger))
        except SQLAlchemyError as exc:  # collected for the caller's assertion
            failures.append(f"{type(exc).__name__}: {str(exc)[:200]}")

    threads = [threading.Thread(target=run, args=(ledger,)) for ledger in ledgers]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    finally:
        for ledger in ledgers:
            ledger.close_sync()
    return results, failures


def pg_url_for(user: str, schema: str, *, port: int = PG_PORT) -> str:
    return f"postgresql://{user}@{PG_HOST}:{port}/{PG_DB}?options=-csearch_path%3D{schema}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TcpProxy:
    """A loopback TCP forwarder that can be switched off and on, to take a database "down"."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._server: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen(64)
        self._server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def stop(self) -> None:
        """Stop listening and cut every open connection."""
        if self._server is not None:
            try:
                self._server.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
            except OSError:
                pass
            self._server.close()
            self._server = None
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            with self._lock:
                self._conns += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
