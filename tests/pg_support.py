"""A fresh schema on the machine's PostgreSQL (127.0.0.1:5432, database test) for one test, dropped afterwards;
the test is skipped when the server is unreachable (SWITCHMAN_STRICT_SKIPS=1 turns that into a failure).

    with fresh_schema("sw_ui") as schema:
        url = schema_url(schema)                 # or schema_url(schema, port=proxy.port) through a proxy
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

__all__ = ["PG_HOST", "PG_PORT", "fresh_schema", "schema_url"]

PG_HOST, PG_PORT = "127.0.0.1", 5432


def schema_url(schema: str, *, port: int = PG_PORT) -> str:
    """The database URL whose connections use `schema` (at `port` on loopback: the server, or a proxy to it)."""
    return f"postgresql://postgres@{PG_HOST}:{port}/test?options=-csearch_path%3D{schema}"


@contextmanager
def fresh_schema(prefix: str) -> Iterator[str]:
    """A new schema named `prefix`_<random>, dropped (with all it holds) on the way out."""
    admin = create_engine(f"postgresql+psycopg://postgres@{PG_HOST}:{PG_PORT}/test", connect_args={"connect_timeout": 3})
    schema = f"{prefix}_{secrets.token_hex(6)}"
    try:
        with admin.begin() as conn:
            conn.execute(text(f"create schema {schema}"))
    except OperationalError as exc:
        admin.dispose()
        pytest.skip(f"Postgres at {PG_HOST}:{PG_PORT}/test is unreachable ({str(exc.orig).strip().splitlines()[0]})")
    try:
        yield schema
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"drop schema {schema} cascade"))
        admin.dispose()
