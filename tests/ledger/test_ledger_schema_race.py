"""Processes (or a writer and a reader) making a fresh PostgreSQL ledger's tables at once all get past it: a lost
race on the catalog is tried again, never a failed read (a 503 on /v1/feedback, a 500 on the dashboard)."""

from __future__ import annotations

import secrets
import threading

from ledger_support import pg_url_for
from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

from switchman.ledger import Ledger


def test_ledgers_making_a_fresh_schema_at_once_all_succeed(pg_admin: tuple[Engine, str]) -> None:
    engine, user = pg_admin
    failures: list[BaseException] = []
    for _ in range(4):
        schema = f"sw_race_{secrets.token_hex(6)}"
        with engine.begin() as conn:
            conn.execute(text(f"create schema {schema}"))
        ledgers = [Ledger(pg_url_for(user, schema)) for _ in range(6)]
        start = threading.Barrier(len(ledgers))

        def read(ledger: Ledger, start: threading.Barrier = start) -> None:
            start.wait()
            try:
                ledger.count()
            except SQLAlchemyError as exc:  # collected for the assertion below
                failures.append(exc)

        threads = [threading.Thread(target=read, args=(ledger,)) for ledger in ledgers]
        try:
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
        finally:
            for ledger in ledgers:
                ledger.close_sync()
            with engine.begin() as conn:
                conn.execute(text(f"drop schema {schema} cascade"))
    assert not failures, [f"{type(e).__name__}: {str(e)[:200]}" for e in failures]


