"""The Postgres helper every test folder connects through: a role the machine lacks is skipped over, not a skip of
every Postgres test (the ledger's conftest fell back to `root`, pg_support did not)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import pg_support


@pytest.fixture
def fresh_lookup() -> Iterator[None]:
    pg_support._find_user.cache_clear()
    yield
    pg_support._find_user.cache_clear()


def test_a_role_that_cannot_connect_is_passed_over_for_the_next(fresh_lookup: None,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    user = pg_support.pg_user()  # skipped here when no role reaches the server
    monkeypatch.setattr(pg_support, "_USERS", ("sw_no_such_role", user))
    pg_support._find_user.cache_clear()
    assert pg_support.pg_user() == user
    assert f"postgresql://{user}@" in pg_support.schema_url("s")
    with pg_support.fresh_schema("sw_pgsup") as schema:
        assert schema.startswith("sw_pgsup_")
