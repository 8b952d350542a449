"""New ledger columns (prompt, shadow_*, api, deployment, cache): stored, read back, and added to older ledgers."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

from switchman.gateway._wire import MAX_REPORTED_TOKENS, token_count
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


def test_missing_values_are_stored_as_null_and_flags_as_booleans(
    db_url: str, open_ledger: Callable[..., Ledger]
) -> None:
    """The writer binds SQLite's missing values as NaN and flags as 1/0 (cheaper for Python's sqlite3): what is
    stored is still NULL and the flag, on both backends, and a NaN in a required column is still refused."""
    from sqlalchemy import select

    from switchman.ledger._db import REQUESTS

    ledger = open_ledger(db_url)
    ledger.record(LedgerRecord(request_id="bare"))
    ledger.record(LedgerRecord(request_id="full", agent="a", session="s", key_id="k", error="boom", cluster=3,
                               ttft_ms=1.5, tokens_estimated=True, escalated=True, scores=(("m", 0.5, None),),
                               excluded=(("x", "price"),)))
    ledger.record(LedgerRecord(request_id="bad", cost_usd=float("nan")))
    ledger.flush_sync()
    assert ledger.stats.discarded == (1 if db_url.startswith("sqlite") else 0)  # SQLite has no NaN: NOT NULL refuses it
    optional = [c for c in REQUESTS.columns if c.nullable and c.name not in ("candidates", "fallback_chain", "tags")]
    with ledger._engine.connect() as conn:
        bare = conn.execute(select(*optional).where(REQUESTS.c.request_id == "bare")).one()
        flags = conn.execute(select(REQUESTS.c.tokens_estimated, REQUESTS.c.escalated)
                             .order_by(REQUESTS.c.id).where(REQUESTS.c.request_id.in_(("bare", "full")))).all()
    assert dict(zip([c.name for c in optional], bare, strict=True)) == {c.name: None for c in optional} | {
        "escalated": False}
    assert [tuple(f) for f in flags] == [(False, False), (True, True)]
    full = ledger.find("full")
    assert full is not None and (full.agent, full.session, full.key_id, full.error, full.cluster, full.ttft_ms) == \
        ("a", "s", "k", "boom", 3, 1.5)
    assert (full.tokens_estimated, full.escalated, full.scores, full.excluded) == \
        (True, True, (("m", 0.5, None),), (("x", "price"),))


def test_the_largest_token_count_the_gateway_believes_is_one_the_ledger_keeps(
    db_url: str, open_ledger: Callable[..., Ledger]
) -> None:
    # A count the gateway takes from an upstream is written as it is: past what the columns hold (a PostgreSQL
    # INTEGER), the ledger refuses the row and the request has no record. One more is estimated instead.
    ledger = open_ledger(db_url)
    ledger.record(LedgerRecord(request_id="big", model="m", input_tokens=MAX_REPORTED_TOKENS,
                               output_tokens=MAX_REPORTED_TOKENS))
    ledger.flush_sync()
    kept = ledger.find("big")
    assert kept is not None and (kept.input_tokens, kept.output_tokens) == (MAX_REPORTED_TOKENS,) * 2
    assert token_count(MAX_REPORTED_TOKENS) == MAX_REPORTED_TOKENS and token_count(MAX_REPORTED_TOKENS + 1) is None
