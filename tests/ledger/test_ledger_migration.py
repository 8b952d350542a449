"""Starting on a ledger an earlier switchman made (feedback without its key column): the key is copied over whatever
its length, a start interrupted half-way is finished by the next, and replicas starting together all get past it."""

from __future__ import annotations

import time
from typing import Any

import pytest
from ledger_support import at_once
from sqlalchemy import create_engine
from sqlalchemy.engine import Connection
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from switchman.ledger import Ledger, LedgerRecord
from switchman.ledger._db import _driver_url

LONG_KEY = "k" * 40  # a key id longer than 32 characters (requests keep up to 64)


def _make_old(url: str) -> None:
    """A ledger as the switchman before the feedback's key column left it: two scored requests."""
    ledger = Ledger(url)
    ledger.record(LedgerRecord(request_id="r1", model="m", key_id=LONG_KEY))
    ledger.record(LedgerRecord(request_id="r2", model="m", key_id="short"))
    ledger.flush_sync()
    ledger.close_sync()
    engine = create_engine(_driver_url(url))
    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE switchman_feedback DROP COLUMN key_id")
        for rid in ("r1", "r2"):
            conn.exec_driver_sql(f"INSERT INTO switchman_feedback (time, request_id, score) VALUES ({time.time()}, "
                                 f"'{rid}', 0.5)")
    engine.dispose()


def test_a_key_longer_than_32_characters_is_copied_to_earlier_feedback(pg_url: str) -> None:
    _make_old(pg_url)
    ledger = Ledger(pg_url)
    try:
        assert ledger.feedback_by_key() == {("r1", LONG_KEY): 0.5, ("r2", "short"): 0.5}
    finally:
        ledger.close_sync()


def test_a_start_interrupted_after_adding_the_key_column_is_finished_by_the_next(
        db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _make_old(db_url)
    real = Connection.exec_driver_sql

    def fail_the_back_fill(self: Connection, sql: str, *args: Any, **kwargs: Any) -> Any:
        if sql.startswith("UPDATE switchman_feedback SET key_id"):
            raise OperationalError(sql, None, Exception("disk I/O error"))
        return real(self, sql, *args, **kwargs)

    monkeypatch.setattr(Connection, "exec_driver_sql", fail_the_back_fill)
    first = Ledger(db_url)
    with pytest.raises(SQLAlchemyError):
        first.feedback_by_key()
    first.close_sync()
    monkeypatch.setattr(Connection, "exec_driver_sql", real)
    second = Ledger(db_url)
    try:
        assert second.feedback_by_key() == {("r1", LONG_KEY): 0.5, ("r2", "short"): 0.5}
    finally:
        second.close_sync()


def test_replicas_starting_together_on_an_older_ledger_all_succeed(db_url: str) -> None:
    _make_old(db_url)
    _, failures = at_once([Ledger(db_url) for _ in range(4)], Ledger.feedback_by_key)
    assert not failures, failures
    check = Ledger(db_url)
    try:
        assert check.feedback_by_key() == {("r1", LONG_KEY): 0.5, ("r2", "short"): 0.5}
    finally:
        check.close_sync()


def test_a_current_ledger_opens_without_a_write_so_a_read_only_one_opens_too(tmp_path: Any) -> None:
    """Only a ledger that needs a change takes the schema lock (SQLite's BEGIN IMMEDIATE writes): `switchman spend` or a
    dashboard over a read-only copy of the file still reads it."""
    path = tmp_path / "ledger.sqlite3"
    ledger = Ledger(f"sqlite:///{path}")
    ledger.record(LedgerRecord(request_id="r1", model="m"))
    ledger.close_sync()
    read_only = Ledger(f"sqlite:///file:{path}?mode=ro&uri=true")
    try:
        assert [r.request_id for r in read_only.records()] == ["r1"]
        assert read_only.count() == 1
    finally:
        read_only.close_sync()
