"""The request log's filter indexes are partial (`WHERE agent IS NOT NULL` ...): a row without the value costs
the writer no index entry. These tests pin that both databases still read every filter through its index, with
the exact statements the log issues, so the log stays an index lookup however rare the value.

Every test runs on SQLite and on Postgres.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import event, text

from switchman.ledger import Ledger, LedgerRecord, RequestFilter
from switchman.ledger._db import FILTER_COLUMNS

RARE = {"agent": "rare-agent", "session": "rare-session", "key_id": "rare-key", "model": "rare-model"}


def _record(i: int, *, rare: bool) -> LedgerRecord:
    names: dict[str, Any] = dict(RARE) if rare else {"model": "common-model"}
    return LedgerRecord(time=time.time() - 3600 + i, request_id=f"req-{i}", route="default", input_tokens=3,
                        output_tokens=4, cost_usd=1e-6, latency_ms=2.0, status="ok", **names)


def _filled(url: str, open_ledger: Callable[..., Ledger]) -> Ledger:
    ledger = open_ledger(url)
    for i in range(1500):  # most rows without agent, session or key, as a gateway's
        ledger.record(_record(i, rare=i % 500 == 7))
    assert ledger.flush_sync(timeout=30)
    with ledger._engine.begin() as conn:
        conn.execute(text("ANALYZE"))
    return ledger


def _log_statements(ledger: Ledger, where: RequestFilter) -> list[tuple[str, Any]]:
    """The SELECTs of the request rows that `search(where)` issues, with their parameters."""
    seen: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "WHERE" in statement and "switchman_requests" in statement:
            seen.append((statement, parameters))

    event.listen(ledger._engine, "before_cursor_execute", capture)
    try:
        page = ledger.views.search(where, limit=50, budget_s=30.0)
    finally:
        event.remove(ledger._engine, "before_cursor_execute", capture)
    assert len(page.rows) == 3
    return seen


def _plan(ledger: Ledger, statement: str, parameters: Any) -> str:
    with ledger._engine.connect() as conn:
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        if ledger._engine.dialect.name == "postgresql":
            cursor.execute("SET enable_seqscan = off")  # the table is small: ask whether the index *can* serve
            cursor.execute("EXPLAIN " + statement, parameters)
            plan = "\n".join(row[0] for row in cursor.fetchall())
        else:
            cursor.execute("EXPLAIN QUERY PLAN " + statement, parameters)
            plan = "\n".join(str(row[-1]) for row in cursor.fetchall())
        cursor.close()
        conn.rollback()
    return plan


@pytest.mark.parametrize("column", FILTER_COLUMNS)
def test_the_log_filters_through_the_partial_index(db_url: str, open_ledger: Callable[..., Ledger],
                                                   column: str) -> None:
    ledger = _filled(db_url, open_ledger)
    statements = _log_statements(ledger, RequestFilter(**{column: RARE[column]}))
    assert statements
    for statement, parameters in statements:
        assert f"ix_switchman_requests_{column}_id" in _plan(ledger, statement, parameters), statement


@pytest.mark.parametrize("column", FILTER_COLUMNS)
def test_the_filter_index_is_partial(db_url: str, open_ledger: Callable[..., Ledger], column: str) -> None:
    ledger = _filled(db_url, open_ledger)
    with ledger._engine.connect() as conn:
        if ledger._engine.dialect.name == "postgresql":
            sql = conn.execute(text("SELECT indexdef FROM pg_indexes WHERE indexname = :n "
                                    "AND schemaname = current_schema()"),
                               {"n": f"ix_switchman_requests_{column}_id"}).scalar_one()
        else:
            sql = conn.execute(text("SELECT sql FROM sqlite_master WHERE name = :n"),
                               {"n": f"ix_switchman_requests_{column}_id"}).scalar_one()
    assert f"WHERE ({column} IS NOT NULL)" in sql or f"WHERE {column} IS NOT NULL" in sql


def test_postgres_generic_plan_uses_the_partial_index(pg_url: str, open_ledger: Callable[..., Ledger]) -> None:
    """A prepared statement's generic plan (psycopg prepares a statement run 5 times) knows no value, yet
    `col = $1` still implies `col IS NOT NULL` (= is strict). Without the id range, so that only the filter
    index can serve the statement (with it, a generic plan may rightly prefer the primary key for a common model)."""
    ledger = _filled(pg_url, open_ledger)
    with ledger._engine.connect() as conn:
        conn.execute(text("SET plan_cache_mode = force_generic_plan"))
        conn.execute(text("SET enable_seqscan = off"))
        for column in FILTER_COLUMNS:
            conn.execute(text(f"PREPARE q_{column} AS SELECT id FROM switchman_requests WHERE {column} = $1"))
            plan = "\n".join(row[0] for row in conn.execute(text(f"EXPLAIN EXECUTE q_{column}('x')")))
            assert f"ix_switchman_requests_{column}_id" in plan, plan
            assert "$1" in plan  # the generic plan, not one made for the value


def test_a_ledger_made_before_keeps_its_full_indexes(db_url: str, open_ledger: Callable[..., Ledger]) -> None:
    """An older ledger's full (column, id) indexes have the same names: they stay (no rebuild at start) and serve."""
    old = open_ledger(db_url)
    old.count()  # tables made
    with old._engine.begin() as conn:
        for column in FILTER_COLUMNS:
            conn.execute(text(f"DROP INDEX ix_switchman_requests_{column}_id"))
            conn.execute(text(f"CREATE INDEX ix_switchman_requests_{column}_id ON switchman_requests ({column}, id)"))
    old.close_sync()
    ledger = _filled(db_url, open_ledger)
    for column in FILTER_COLUMNS:
        for statement, parameters in _log_statements(ledger, RequestFilter(**{column: RARE[column]})):
            assert f"ix_switchman_requests_{column}_id" in _plan(ledger, statement, parameters)
    with ledger._engine.connect() as conn:
        if ledger._engine.dialect.name == "postgresql":
            defs = conn.execute(text("SELECT indexdef FROM pg_indexes WHERE schemaname = current_schema()")).scalars()
        else:
            defs = conn.execute(text("SELECT sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")).scalars()
        assert not [d for d in defs if "IS NOT NULL" in d]


@pytest.mark.parametrize("by", ["agent", "model", "key"])
def test_spend_over_a_window_reads_the_time_index(db_url: str, open_ledger: Callable[..., Ledger], by: str) -> None:
    """`GROUP BY agent` counts the rows without one too, so a partial index cannot feed it: spend over a window (budgets,
    `switchman spend`'s 7 days) reads the time index instead. Whole-history spend scans the table (on a 20k-row SQLite
    ledger ~9 ms against ~5 ms through the full (agent, id) index before); a window is far faster (0.05 ms for 100 s
    against ~2 ms)."""
    ledger = _filled(db_url, open_ledger)
    seen: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        if "GROUP BY" in statement.upper():
            seen.append((statement, parameters))

    event.listen(ledger._engine, "before_cursor_execute", capture)
    try:
        rows = ledger.query_spend(by, since=time.time() - 2700)  # type: ignore[arg-type]
    finally:
        event.remove(ledger._engine, "before_cursor_execute", capture)
    assert 500 < sum(r.requests for r in rows) < 700  # the window's rows: one a second, the last ~600 of them
    assert len(seen) == 1
    assert "ix_switchman_requests_time" in _plan(ledger, *seen[0])
