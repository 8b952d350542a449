"""What the replicas share: one Postgres ledger (a schema of the module's own), one Redis the tests may stop, one
fake upstream."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from switchman.testing import FakeUpstream, RedisServer

PG = "127.0.0.1:5432/test"
OPENAI_KEY = "sk-upstream-openai-scale-0123456789"
ENV = {"FAKE_OPENAI_KEY": OPENAI_KEY}


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream(api_keys={OPENAI_KEY}) as fake:
        yield fake


@pytest.fixture(scope="module")
def pg_admin() -> Iterator[tuple[Engine, str]]:
    reasons = []
    for user in ("postgres", "root"):
        engine = create_engine(f"postgresql+psycopg://{user}@{PG}", connect_args={"connect_timeout": 3})
        try:
            with engine.connect() as conn:
                conn.execute(text("select 1"))
        except OperationalError as exc:
            engine.dispose()
            reasons.append(f"{user}: {str(exc.orig).strip().splitlines()[0]}")
            continue
        yield engine, user
        engine.dispose()
        return
    pytest.skip(f"Postgres at {PG} is unreachable ({'; '.join(reasons)})")


@pytest.fixture(scope="module")
def ledger_schema(pg_admin: tuple[Engine, str]) -> Iterator[tuple[Engine, str, str]]:
    """(admin engine, schema, ledger URL): a schema of this module's own, dropped afterwards."""
    engine, user = pg_admin
    schema = f"sw_scale_{secrets.token_hex(6)}"
    with engine.begin() as conn:
        conn.execute(text(f"create schema {schema}"))
    yield engine, schema, f"postgresql://{user}@{PG}?options=-csearch_path%3D{schema}"
    with engine.begin() as conn:
        conn.execute(text(f"drop schema {schema} cascade"))


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    """A redis-server of the module's own (no persistence), so a test can stop it."""
    with RedisServer() as server:
        yield server
