"""What the replicas share: one Postgres ledger (a schema of the module's own), one Redis the tests may stop, one
fake upstream."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pg_support import fresh_schema, pg_admin, schema_url  # noqa: F401 - pg_admin: a fixture
from sqlalchemy.engine import Engine

from switchman.testing import FakeUpstream, RedisServer

OPENAI_KEY = "sk-upstream-openai-scale-0123456789"
ENV = {"FAKE_OPENAI_KEY": OPENAI_KEY}


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream(api_keys={OPENAI_KEY}) as fake:
        yield fake


@pytest.fixture(scope="module")
def ledger_schema(pg_admin: tuple[Engine, str]) -> Iterator[tuple[Engine, str, str]]:  # noqa: F811 - the fixture
    """(admin engine, schema, ledger URL): a schema of this module's own, dropped afterwards."""
    with fresh_schema("sw_scale") as schema:
        yield pg_admin[0], schema, schema_url(schema)


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    """A redis-server of the module's own (no persistence), so a test can stop it."""
    with RedisServer() as server:
        yield server
