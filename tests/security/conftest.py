"""Fixtures of the hostile-client suite: one fake upstream for the session, a fresh ledger per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pg_support import fresh_schema, schema_url
from security_support import UPSTREAM_KEY

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
    with fresh_schema("sw_sec") as schema:
        yield schema_url(schema)
