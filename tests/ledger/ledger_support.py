"""Helpers for the ledger tests: polling, Postgres URLs, ledgers started together, a TCP proxy that can take a
database down, records to write, metric samples, a SQLite file locked away and rows spilled and replayed."""

from __future__ import annotations

import json
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hanging_server import cut, pump
from pg_support import PG_PORT, schema_url
from prometheus_client.parser import text_string_to_metric_families
from serve_support import free_port
from sqlalchemy.exc import SQLAlchemyError

from switchman.ledger import Ledger, LedgerRecord, Metrics

T = TypeVar("T")



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
    return schema_url(schema, port=port, user=user)


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
        with self._lock:
            self._server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def stop(self) -> None:
        """Stop listening and cut every open connection."""
        with self._lock:  # from here on, the accept thread of `server` keeps no connection (see _accept)
            server, self._server = self._server, None
            conns, self._conns = self._conns, []
        if server is not None:
            try:
                server.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
            except OSError:
                pass
            server.close()
        cut(conns)

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:  # the target is down: this connection is closed, and the proxy keeps accepting
                cut([client])
                continue
            upstream.settimeout(None)
            with self._lock:
                # stop() ran since `server` accepted this one and has cut the open ones: kept, it would survive the
                # outage. The stopped flag (HangingServer's `_closed`) is "`server` is no longer the live one", per
                # start(): a plain bool that a quick restart resets would let it through.
                stopped = self._server is not server
                if not stopped:
                    self._conns += [client, upstream]
            if stopped:
                cut([client, upstream])
                return
            threading.Thread(target=pump, args=(client, upstream), daemon=True).start()
            threading.Thread(target=pump, args=(upstream, client), daemon=True).start()


def make_records(n: int, **fields: Any) -> list[LedgerRecord]:
    return [
        LedgerRecord(
            time=1_700_000_000.0 + i,
            request_id=f"req-{i:06d}",
            agent=f"agent-{i % 3}",
            model=("small", "large")[i % 2],
            route="default",
            candidates=("small", "large"),
            input_tokens=10 + i,
            output_tokens=i % 7,
            cost_usd=0.001 * (i % 5),
            baseline_cost_usd=0.01,
            latency_ms=12.5,
            ttft_ms=3.0 if i % 2 else None,
            tags=("a", "b") if i % 4 == 0 else (),
            fallback_chain=("large",) if i % 10 == 0 else (),
            **fields,
        )
        for i in range(n)
    ]


def samples(metrics: Metrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    body, _ = metrics.render()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def value(found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return found[(name, frozenset(labels.items()))]


@contextmanager
def locked(path: Path) -> Iterator[sqlite3.Connection]:
    """The SQLite file held by another connection: the ledger's writes fail (it is "unreachable")."""
    lock = sqlite3.connect(path, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    try:
        yield lock
    finally:
        if lock.in_transaction:
            lock.execute("COMMIT")
        lock.close()


def files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def spill_lines(folder: Path) -> list[dict[str, Any]]:
    [name] = files(folder)
    return [json.loads(line) for line in (folder / name).read_text().splitlines()]


def spill_unreachable(open_ledger: Callable[..., Ledger], url: str, path: Path, folder: Path,
                      records: list[LedgerRecord]) -> Ledger:
    """A ledger whose database is locked throughout: its close spills `records`."""
    ledger = open_ledger(url, spill_dir=folder, close_timeout=0.3, max_retry_interval=0.05)
    ledger.count()  # the tables exist (a later start finds its database as it was)
    with locked(path):
        _record_and_close(ledger, records)
    return ledger


def spill_through_stopped_proxy(open_ledger: Callable[..., Ledger], url: str, proxy: TcpProxy, folder: Path,
                                records: list[LedgerRecord]) -> Ledger:
    """A ledger on `url` (through `proxy`) whose database goes away once its tables exist: its close spills
    `records`. The proxy is left stopped."""
    proxy.start()
    ledger = open_ledger(url, spill_dir=folder, close_timeout=0.3, max_retry_interval=0.05)
    ledger.count()
    proxy.stop()
    _record_and_close(ledger, records)
    return ledger


def _record_and_close(ledger: Ledger, records: list[LedgerRecord]) -> None:
    ledger.start_sync()
    for rec in records:
        ledger.record(rec)
    ledger.close_sync()


def replay(open_ledger: Callable[..., Ledger], url: str, folder: Path, **options: Any) -> Ledger:
    """A ledger started on `url` with `folder`, closed once the writer has replayed what it could."""
    ledger = open_ledger(url, spill_dir=folder, **options)
    ledger.start_sync()
    wait_until(lambda: not ledger._replayer.due, what="the replay")
    ledger.close_sync()
    return ledger
