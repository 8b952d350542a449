"""Real databases for the ledger tests: SQLite files in tmp_path and a schema of its own in Postgres."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from ledger_support import PG_DB, PG_HOST, PG_PORT, TcpProxy, pg_url_for
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from switchman.ledger import Ledger, _db


def _pg_admin() -> tuple[Engine, str] | str:
    """An engine on the test database and the user that worked, or why none did."""
    reasons = []
    for user in ("postgres", "root"):
        engine = create_engine(
            f"postgresql+psycopg://{user}@{PG_HOST}:{PG_PORT}/{PG_DB}", connect_args={"connect_timeout": 3}
        )
        try:
            with engine.connect() as conn:
                conn.execute(text("select 1"))
        except OperationalError as exc:
            engine.dispose()
            reasons.append(f"{user}: {str(exc.orig).strip().splitlines()[0]}")
            continue
        return engine, user
    return "; ".join(reasons)


@pytest.fixture(scope="session")
def pg_admin() -> Iterator[tuple[Engine, str]]:
    found = _pg_admin()
    if isinstance(found, str):
        pytest.skip(f"Postgres at {PG_HOST}:{PG_PORT}/{PG_DB} is unreachable ({found})")
    engine, user = found
    yield engine, user
    engine.dispose()


@pytest.fixture
def pg_schema(pg_admin: tuple[Engine, str]) -> Iterator[str]:
    """A fresh schema for one test, dropped afterwards."""
    engine, _ = pg_admin
    schema = f"sw_test_{secrets.token_hex(6)}"
    with engine.begin() as conn:
        conn.execute(text(f"create schema {schema}"))
    yield schema
    with engine.begin() as conn:
        conn.execute(text(f"drop schema {schema} cascade"))


@pytest.fixture
def pg_url(pg_admin: tuple[Engine, str], pg_schema: str) -> str:
    return pg_url_for(pg_admin[1], pg_schema)


@pytest.fixture
def sqlite_path(tmp_path: Path) -> Path:
    return tmp_path / "ledger" / "ledger.sqlite3"


@pytest.fixture
def sqlite_url(sqlite_path: Path) -> str:
    return f"sqlite:///{sqlite_path}"


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest) -> str:
    """Each test that takes this runs once on SQLite and once on Postgres."""
    if request.param == "sqlite":
        return str(request.getfixturevalue("sqlite_url"))
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def pg_proxy(pg_admin: tuple[Engine, str]) -> Iterator[TcpProxy]:
    """A proxy to Postgres that starts switched off (nothing listens on its port)."""
    proxy = TcpProxy((PG_HOST, PG_PORT))
    yield proxy
    proxy.stop()


@pytest.fixture
def open_ledger() -> Iterator[Callable[..., Ledger]]:
    """Make ledgers that are closed (connections released) when the test ends."""
    made: list[Ledger] = []

    def make(url: str, **options: Any) -> Ledger:
        ledger = Ledger(url, **options)
        made.append(ledger)
        return ledger

    yield make
    for ledger in made:
        ledger.close_sync(timeout=1.0)


@pytest.fixture
def spill_dir(tmp_path: Path) -> Path:
    """Where the spill tests' ledgers spill (created by the first close that needs it)."""
    return tmp_path / "state" / "spill"


@pytest.fixture
def fast_busy(monkeypatch: pytest.MonkeyPatch) -> None:
    """A locked SQLite file fails a write in 50 ms instead of 2 s."""
    monkeypatch.setattr(_db, "SQLITE_BUSY_TIMEOUT_S", 0.05)
