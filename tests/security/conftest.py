"""Fixtures of the hostile-client suite: one fake upstream for the session, a fresh ledger per test."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from security_support import PG_HOST, PG_PORT, UPSTREAM_KEY
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from switchman.testing import FakeUpstream


@pytest.fixture(scope="session")
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream(api_keys={UPSTREAM_KEY}) as fake:
        yield fake


@pytest.fixture(autouse=True)
def clean_upstream(upstream: FakeUpstream) -> Iterator[None]:
    upstream.clear()
    yield
    upstream.clear()


@pytest.fixture
def ledger_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.sqlite3'}"


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh Postgres schema on the machine's server (127.0.0.1:5432/test), dropped afterwards."""
    admin = create_engine(f"postgresql+psycopg://postgres@{PG_HOST}:{PG_PORT}/test",
                          connect_args={"connect_timeout": 3})
    schema = f"sw_sec_{secrets.token_hex(6)}"
    try:
        with admin.begin() as conn:
            conn.execute(text(f"create schema {schema}"))
    except OperationalError as exc:
        admin.dispose()
        pytest.skip(f"Postgres at {PG_HOST}:{PG_PORT}/test is unreachable ({str(exc.orig).strip().splitlines()[0]})")
    yield f"postgresql://postgres@{PG_HOST}:{PG_PORT}/test?options=-csearch_path%3D{schema}"
    with admin.begin() as conn:
        conn.execute(text(f"drop schema {schema} cascade"))
    admin.dispose()
