"""New ledger columns (prompt, shadow_*, api, deployment, cache): stored, read back, and added to older ledgers."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

from switchman.ledger import Ledger, LedgerRecord


def test_prompt_and_shadow_round_trip(db_url: str, open_ledger: Callable[..., Ledger]) -> None:
    ledger = open_ledger(db_url)
    ledger.record(LedgerRecord(request_id="a", model="m", prompt="hi ünïcode", shadow_model="s", shadow_quality=0.5,
                               shadow_cost_usd=0.001, api="messages", deployment="m@east", cache="hit"))
    ledger.record(LedgerRecord(request_id="b", model="m"))
    ledger.flush_sync()
    a, b = ledger.find("a"), ledger.find("b")
    assert a is not None and (a.prompt, a.shadow_model, a.shadow_quality, a.shadow_cost_usd, a.api) == \
        ("hi ünïcode", "s", 0.5, 0.001, "messages")
    assert (a.deployment, a.cache) == ("m@east", "hit")
    assert b is not None and (b.prompt, b.shadow_model, b.api, b.deployment, b.cache) == (None,) * 5
    assert ledger.find("nope") is None
    ledger.add_feedback("a", 0.2)
    ledger.add_feedback("a", 0.9)
    assert ledger.feedback_scores() == {"a": 0.9}


def test_an_older_ledger_gets_the_new_columns(sqlite_path: Path, open_ledger: Callable[..., Ledger]) -> None:
    old = Ledger(f"sqlite:///{sqlite_path}")
    old.record(LedgerRecord(request_id="old", model="m"))
    old.close_sync()
    with sqlite3.connect(sqlite_path) as conn:  # as an earlier switchman left it
        for column in ("prompt", "shadow_model", "shadow_quality", "shadow_cost_usd", "api", "deployment", "cache"):
            conn.execute(f"ALTER TABLE switchman_requests DROP COLUMN {column}")
    ledger = open_ledger(f"sqlite:///{sqlite_path}")
    ledger.record(LedgerRecord(request_id="new", model="m", prompt="kept", api="responses", deployment="m@west"))
    ledger.flush_sync()
    assert [(r.request_id, r.prompt, r.api, r.deployment) for r in ledger.records()] == \
        [("old", None, None, None), ("new", "kept", "responses", "m@west")]


def test_creating_the_tables_waits_out_a_lock_held_past_the_busy_timeout(tmp_path: Path) -> None:
    """Another process holds the file's write lock longer than SQLite's busy timeout (2 s): the tables are
    created on a later attempt instead of failing with "database is locked"."""
    import threading
    import time

    from switchman.ledger._db import SQLITE_BUSY_TIMEOUT_S, create_ledger_engine, create_tables

    path = tmp_path / "ledger.sqlite3"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("PRAGMA journal_mode=WAL")
    holder.execute("BEGIN EXCLUSIVE")
    holder.execute("CREATE TABLE other (x INTEGER)")
    released = threading.Timer(SQLITE_BUSY_TIMEOUT_S + 0.5, holder.execute, args=("COMMIT",))
    released.start()
    engine = create_ledger_engine(f"sqlite:///{path}")
    started = time.monotonic()
    try:
        create_tables(engine)
    finally:
        released.join()
        holder.close()
    assert time.monotonic() - started > SQLITE_BUSY_TIMEOUT_S  # it did wait past one busy timeout
    engine.dispose()
    reader = sqlite3.connect(path)
    tables = {row[0] for row in reader.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    reader.close()
    assert {"switchman_requests", "other"} <= tables
