"""Real databases for the ledger tests: SQLite files in tmp_path and a schema of its own in Postgres."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from ledger_support import TcpProxy
from pg_support import PG_HOST, PG_PORT, pg_admin, pg_schema, pg_url  # noqa: F401 - pg_admin, pg_schema, pg_url: fixtures
from sqlalchemy.engine import Engine

from switchman.ledger import Ledger, _db


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
def pg_proxy(pg_admin: tuple[Engine, str]) -> Iterator[TcpProxy]:  # noqa: F811 - the fixture
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
