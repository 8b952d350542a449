"""Fixtures of the hostile-client suite: one fake upstream for the session, a fresh ledger per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pg_support import pg_schema, pg_url  # noqa: F401 - the Postgres fixtures of this folder's tests
from security_support import UPSTREAM_KEY, config_data, running_gateway

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


@pytest.fixture(scope="module")
def http(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """A client of a gateway on the suite's configuration (a ledger of its own), shared by one module's tests."""
    url = f"sqlite:///{tmp_path_factory.mktemp('gateway') / 'ledger.sqlite3'}"
    with running_gateway(config_data(upstream, url)) as (_, server), \
            httpx.Client(base_url=server.url, timeout=60) as client:  # bodies at the item caps are large
        yield client


@pytest.fixture
def ledger_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
