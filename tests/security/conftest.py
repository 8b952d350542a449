"""Fixtures of the hostile-client suite: one fake upstream for the session, a fresh SQLite ledger per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
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
