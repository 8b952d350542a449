"""The machine's PostgreSQL (127.0.0.1:5432, database test) for the tests: one way to connect (as `postgres`, else
`root`: whichever role the machine has), a fresh schema per test dropped afterwards, and the `pg_schema` / `pg_url`
fixtures built on them. A test is skipped when the server is unreachable (SWITCHMAN_STRICT_SKIPS=1 turns that into a
failure).

    with fresh_schema("sw_ui") as schema:
        url = schema_url(schema)                 # or schema_url(schema, port=proxy.port) through a proxy

A conftest makes the fixtures its folder's: `from pg_support import pg_admin, pg_schema, pg_url  # noqa: F401`.
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

__all__ = ["PG_DB", "PG_HOST", "PG_PORT", "admin_engine", "fresh_schema", "pg_admin", "pg_schema", "pg_url", "pg_user",
           "schema_url"]

PG_HOST, PG_PORT, PG_DB = "127.0.0.1", 5432, "test"
_USERS = ("postgres", "root")  # the server's own superuser, or the one a container made for whoever runs it


@functools.cache
def _find_user() -> str | tuple[str]:
    """The first of `_USERS` that connects, or (why none did,): found once per session."""
    reasons = []
    for user in _USERS:
        engine = _engine(user)
        try:
            with engine.connect() as conn:
                conn.execute(text("select 1"))
        except OperationalError as exc:
            reasons.append(f"{user}: {str(exc.orig).strip().splitlines()[0]}")
            continue
        finally:
            engine.dispose()
        return user
    return ("; ".join(reasons),)


def _engine(user: str) -> Engine:
    return create_engine(f"postgresql+psycopg://{user}@{PG_HOST}:{PG_PORT}/{PG_DB}", connect_args={"connect_timeout": 3})


def pg_user() -> str:
    """The role the tests connect as; the test is skipped when Postgres is unreachable as any of them."""
    found = _find_user()
    if isinstance(found, tuple):
        pytest.skip(f"Postgres at {PG_HOST}:{PG_PORT}/{PG_DB} is unreachable ({found[0]})")
    return found


def admin_engine() -> Engine:
    """An engine on the test database as `pg_user()` (the caller disposes of it)."""
    return _engine(pg_user())


def schema_url(schema: str, *, port: int = PG_PORT, user: str | None = None) -> str:
    """The database URL whose connections use `schema` (at `port` on loopback: the server, or a proxy to it)."""
    return f"postgresql://{user or pg_user()}@{PG_HOST}:{port}/{PG_DB}?options=-csearch_path%3D{schema}"


@contextmanager
def fresh_schema(prefix: str) -> Iterator[str]:
    """A new schema named `prefix`_<random>, dropped (with all it holds) on the way out."""
    admin = admin_engine()
    schema = f"{prefix}_{secrets.token_hex(6)}"
    try:
        with admin.begin() as conn:
            conn.execute(text(f"create schema {schema}"))
    except OperationalError as exc:
        admin.dispose()
        pytest.skip(f"Postgres at {PG_HOST}:{PG_PORT}/{PG_DB} is unreachable ({str(exc.orig).strip().splitlines()[0]})")
    try:
        yield schema
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"drop schema {schema} cascade"))
        admin.dispose()


@pytest.fixture(scope="session")
def pg_admin() -> Iterator[tuple[Engine, str]]:
    """An engine on the test database and the role it connects as (postgres, else root)."""
    engine = admin_engine()
    yield engine, pg_user()
    engine.dispose()


@pytest.fixture
def pg_schema() -> Iterator[str]:
    """A fresh schema for one test, dropped afterwards."""
    with fresh_schema("sw_test") as schema:
        yield schema


@pytest.fixture
def pg_url(pg_schema: str) -> str:
    """The URL of the test's fresh schema on the server itself."""
    return schema_url(pg_schema)
