"""Odd query and path parameters on the dashboard: a page or a 404, never a 500 (on SQLite and on PostgreSQL)."""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from switchman.ledger import Ledger, LedgerRecord
from switchman.testing import FakeUpstream

from .conftest import Site, admin_session, make_site


@pytest.mark.parametrize("before", ["²", "¹²³", "٣", "-1", "1e3", " 12", "9" * 40])
def test_a_before_that_is_not_ascii_digits_is_ignored(site: Site, before: str) -> None:
    with admin_session(site) as (client, _):
        page = client.get("/ui/requests", params={"before": before})
        assert page.status_code == 200, page.text[:300]
        assert 'data-request-id="' in page.text  # the newest page, as without `before`


def test_nul_in_ids_is_a_404_on_postgres(upstream: FakeUpstream, pg_url: str,
                                         filled_ledger: tuple[str, list[LedgerRecord]]) -> None:
    site = make_site(upstream, pg_url, filled_ledger[1])
    with admin_session(site) as (client, token):
        assert client.get("/ui/requests/x%00y").status_code == 404
        assert client.get("/ui/requests/x%1By").status_code == 404
        revoked = client.post("/ui/keys/x%00y/revoke", data={"csrf": token})
        assert revoked.status_code == 404 and "no active key" in revoked.text
        assert client.get("/ui/requests", params={"agent": "a\x00b"}).status_code == 200


@pytest.mark.parametrize("field", ["agent", "key", "route", "model", "session"])
def test_a_nul_in_a_log_filter_finds_nothing_on_a_filled_postgres_ledger(
        upstream: FakeUpstream, pg_url: str, filled_ledger: tuple[str, list[LedgerRecord]], field: str) -> None:
    """Not a 503 'ledger unavailable' (and a false alarm in the log): PostgreSQL refuses to compare a NUL, no row
    holds one. (The test above reads an empty ledger, where the search ends before its query.)"""
    ledger = Ledger(pg_url, max_queued=210)
    for record in filled_ledger[1][:200]:
        ledger.record(record)
    ledger.close_sync(timeout=None)
    site = make_site(upstream, pg_url, filled_ledger[1])
    with admin_session(site) as (client, _):
        page = client.get("/ui/requests", params={field: "a\x00b"})
        assert page.status_code == 200, page.text[:300]
        assert 'data-request-id="' not in page.text
        assert 'data-request-id="' in client.get("/ui/requests").text


@pytest.fixture
def filled_pg_site(upstream: FakeUpstream, pg_url: str, filled_ledger: tuple[str, list[LedgerRecord]]
                   ) -> Iterator[tuple[TestClient, str]]:
    """An admin session on a dashboard over a Postgres ledger holding 200 requests."""
    ledger = Ledger(pg_url, max_queued=210)
    for record in filled_ledger[1][:200]:
        ledger.record(record)
    ledger.close_sync(timeout=None)
    with admin_session(make_site(upstream, pg_url, filled_ledger[1])) as session:
        yield session


_FILTERS = ["agent", "key", "route", "model", "status", "session", "window", "before"]


@settings(max_examples=60, derandomize=True, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(params=st.dictionaries(st.sampled_from(_FILTERS), st.text(max_size=12), max_size=3),
       request_id=st.text(max_size=12))
def test_any_filters_and_ids_are_a_page_on_a_filled_postgres_ledger(
        filled_pg_site: tuple[TestClient, str], params: dict[str, str], request_id: str) -> None:
    """Text of any characters (NUL and the other controls, lone surrogates' replacements) in every filter and id."""
    client, _ = filled_pg_site
    page = client.get("/ui/requests", params=params)
    assert page.status_code == 200, (params, page.text[:300])
    one = client.get("/ui/requests/" + urllib.parse.quote(request_id, safe=""))
    assert one.status_code in (200, 404), (request_id, one.text[:300])
