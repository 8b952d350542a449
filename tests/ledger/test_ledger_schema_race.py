"""Processes (or a writer and a reader) making a fresh PostgreSQL ledger's tables at once all get past it: a lost
race on the catalog is tried again, never a failed read (a 503 on /v1/feedback, a 500 on the dashboard)."""

from __future__ import annotations

import secrets
import threading
import time

import pytest
from ledger_support import at_once, pg_url_for, wait_until
from sqlalchemy import Engine, text
from sqlalchemy.exc import ProgrammingError, SQLAlchemyError

from switchman.ledger import Ledger, LedgerRecord
from switchman.ledger._db import _SCHEMA_LOCK, create_tables

ROLLUP_TABLES = {"switchman_rollup", "switchman_latency", "switchman_sessions"}


def test_ledgers_making_a_fresh_schema_at_once_all_succeed(pg_admin: tuple[Engine, str]) -> None:
    engine, user = pg_admin
    failures: list[str] = []
    for _ in range(4):
        schema = f"sw_race_{secrets.token_hex(6)}"
        with engine.begin() as conn:
            conn.execute(text(f"create schema {schema}"))
        try:
            _, failed = at_once([Ledger(pg_url_for(user, schema)) for _ in range(6)], Ledger.count)
            failures += failed
            assert ROLLUP_TABLES <= _tables(engine, schema)
        finally:
            with engine.begin() as conn:
                conn.execute(text(f"drop schema {schema} cascade"))
    assert not failures, failures


def _tables(engine: Engine, schema: str) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(text("select tablename from pg_tables where schemaname = :s"), {"s": schema}).scalars())


def _waits_for_the_schema_lock(engine: Engine, schema: str) -> bool:
    """Whether a connection waits for `schema`'s migration lock (pg_locks: the lock's two keys as classid, objid)."""
    with engine.connect() as conn:
        key = int(conn.execute(text("select hashtext(:s)"), {"s": schema}).scalar_one()) & 0xFFFF_FFFF
        return bool(conn.execute(text(
            "select count(*) from pg_locks where locktype = 'advisory' and not granted "
            "and classid = cast(:c as oid) and objid = cast(:o as oid)"), {"c": _SCHEMA_LOCK, "o": key}).scalar_one())


def test_the_rollup_tables_are_made_under_the_schema_lock(pg_admin: tuple[Engine, str], pg_schema: str,
                                                          pg_url: str) -> None:
    """Before, `ensure_rollup` took no lock: it made the rollups (and backfilled them) while another process held
    the schema for a migration, and makers raced on the catalog instead of waiting their turn."""
    engine, _ = pg_admin
    ledger = Ledger(pg_url)
    create_tables(ledger._engine)  # the ledger's own tables up to date: only the rollups are missing
    done = threading.Event()
    failures: list[BaseException] = []

    def read() -> None:
        try:
            ledger.count()
        except SQLAlchemyError as exc:  # collected for the assertion below
            failures.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=read)
    holder = engine.connect()  # another process migrating this schema
    try:
        holder.execute(text(f"select pg_advisory_xact_lock({_SCHEMA_LOCK}, hashtext(:s))"), {"s": pg_schema})
        thread.start()
        wait_until(lambda: done.is_set() or _waits_for_the_schema_lock(engine, pg_schema),
                   what="the ledger to wait for the schema lock (or to finish without it)")
        assert not done.is_set() and "switchman_rollup" not in _tables(engine, pg_schema)
    finally:
        holder.rollback()
        holder.close()
        thread.join(30)
        ledger.close_sync()
    assert done.is_set() and not failures
    assert ROLLUP_TABLES <= _tables(engine, pg_schema)


def test_ledgers_starting_together_on_rows_without_rollups_all_succeed_and_count_each_row_once(
        pg_admin: tuple[Engine, str], pg_schema: str, pg_url: str) -> None:
    """A ledger whose rollups are missing (made by a version before them), opened by several replicas at once: one
    builds them from the rows, the others wait and find them made; no read fails, no row is counted twice."""
    engine, _ = pg_admin
    first = Ledger(pg_url)
    for i in range(50):
        first.record(LedgerRecord(time=1_700_000_000.0 + i, request_id=f"r{i}", model="m", cost_usd=0.01))
    assert first.flush_sync(30)
    first.close_sync()
    with engine.begin() as conn:
        for name in ROLLUP_TABLES:
            conn.execute(text(f"drop table {pg_schema}.{name}"))
    requests, failures = at_once([Ledger(pg_url) for _ in range(4)],
                                 lambda ledger: ledger.views.totals(since=0.0)[0].requests)
    assert not failures, failures
    assert requests == [50] * 4
    assert ROLLUP_TABLES <= _tables(engine, pg_schema)


def test_a_race_lost_again_and_again_is_tried_a_bounded_number_of_times_with_growing_pauses(
        pg_admin: tuple[Engine, str], pg_schema: str, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A name the rollup table cannot take (here a type already holds it, as a maker's lost race on the catalog
    leaves it): before, the rollups were tried again at once, five times in a tight loop."""
    engine, _ = pg_admin
    with engine.begin() as conn:
        conn.execute(text(f"create type {pg_schema}.switchman_rollup as enum ('x')"))
    pauses: list[float] = []
    monkeypatch.setattr(time, "sleep", pauses.append)
    ledger = Ledger(pg_url)
    try:
        with pytest.raises(ProgrammingError, match="already exists"):
            ledger.count()
    finally:
        ledger.close_sync()
    assert pauses == [0.05, 0.1, 0.2, 0.4]  # CREATE_ATTEMPTS tries: bounded, each pause twice the one before
