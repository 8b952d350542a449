"""A hostile browser (or a script posing as one) never gets a 500 from the dashboard: a seeded Hypothesis fuzz of
query strings, headers (cookies, Origin, CSRF token) and forms on every page, and the Origin that used to crash."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from .conftest import MASTER_KEY, Site, admin_session, csrf_of

FUZZ = settings(max_examples=150, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
PAGES = ["/ui/", "/ui/agents", "/ui/models", "/ui/routers", "/ui/requests", "/ui/keys", "/ui/login", "/ui/requests/x",
         "/ui/static/app.css"]
PARAMS = ["window", "before", "agent", "key", "route", "model", "status", "session", "revoked", "next", "limit", "since"]
#: Header values as bytes a client may send (HTTP allows any byte but the controls), and a few URL-ish shapes that
#: trip parsers (an unclosed IPv6 bracket, a scheme alone, a quoted cookie that never closes).
HEADER_VALUE = st.one_of(
    st.binary(max_size=40).map(lambda raw: bytes(c for c in raw if c >= 0x20 and c != 0x7F)),
    st.sampled_from([b"http://[::1", b"http://[", b"https://]x[", b"null", b"http://testserver", b"http:", b"//",
                     b'switchman_session="\\', b"switchman_session=a; switchman_session=b", "\u00e9".encode()]),
)
TEXT = st.text(max_size=30)


@pytest.fixture
def admin(site: Site) -> Iterator[tuple[TestClient, str]]:
    """A logged-in admin session (500s answered, not raised) and its CSRF token."""
    with admin_session(site) as session:
        yield session


@pytest.mark.parametrize("origin", ["http://[::1", "http://[", "https://]x["])
def test_an_origin_that_is_not_a_url_is_refused_not_a_500(admin: tuple[TestClient, str], origin: str) -> None:
    client, token = admin
    response = client.post("/ui/keys", data={"name": "x", "csrf": token}, headers={"origin": origin})
    assert response.status_code == 403 and "cross-origin" in response.text


@FUZZ
@given(page=st.sampled_from(PAGES),
       params=st.lists(st.tuples(st.sampled_from(PARAMS) | TEXT, TEXT), max_size=5),
       headers=st.dictionaries(st.sampled_from(["cookie", "origin", "sec-fetch-site", "hx-request", "x-csrf-token",
                                                "host", "referer"]), HEADER_VALUE, max_size=3))
def test_pages_with_any_query_and_headers_never_get_a_500(admin: tuple[TestClient, str], page: str,
                                                          params: list[tuple[str, str]],
                                                          headers: dict[str, bytes]) -> None:
    client, _ = admin
    response = client.get(page, params=params, headers=[(k.encode(), v) for k, v in headers.items()])
    assert response.status_code < 500, response.text[:300]


@FUZZ
@given(target=st.sampled_from(["/ui/keys", "/ui/keys/x/revoke", "/ui/login", "/ui/logout"]),
       form=st.dictionaries(st.sampled_from(["name", "budget_usd", "period", "key", "next"]) | TEXT,
                            TEXT | st.sampled_from(["1e309", "nan", "-0", "1e-320", "0x10", "1_000", "\u0661"]),
                            max_size=4),
       headers=st.dictionaries(st.sampled_from(["origin", "sec-fetch-site", "x-csrf-token", "cookie"]), HEADER_VALUE,
                               max_size=2))
def test_forms_with_any_fields_and_headers_never_get_a_500(admin: tuple[TestClient, str], target: str,
                                                           form: dict[str, str], headers: dict[str, bytes]) -> None:
    client, token = admin
    response = client.post(target, data={"csrf": token, **form}, headers=[(k.encode(), v) for k, v in headers.items()],
                           follow_redirects=False)
    assert response.status_code < 500, response.text[:300]


def test_login_attempts_from_many_addresses_keep_the_throttle_bounded(site: Site) -> None:
    """Every login POST asks the throttle; asking must not remember an address that never failed (one entry per
    address, without the bound that failures keep, grew with every address a client could send from)."""
    mounted = next(r.app for r in site.app.routes if getattr(r, "path", "") == "/ui")  # the dashboard's app
    throttle = mounted.state.dashboard.throttle
    assert throttle.max_clients == 10_000
    for i in range(20_000):
        assert throttle.retry_after(f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}", None) == 0
    assert len(throttle._addresses) == 0
    long_ago = time.monotonic() - 2 * throttle.window_s  # out of the window: the ceiling over newcomers is not hit
    for i in range(throttle.max_clients + 50):
        throttle.failed(f"10.1.{i >> 8}.{i & 255}", None, now=long_ago)
    assert len(throttle._addresses) == throttle.max_clients
    assert len(throttle._newcomers) == throttle.ceiling
    for client in ("198.51.100.7", "198.51.100.8"):
        for _ in range(throttle.failures):
            throttle.failed(client, None)
        assert throttle.retry_after(client, None) > 0
    with TestClient(site.app, client=("198.51.100.7", 5000)) as browser:  # the blocked address, over HTTP
        form = browser.get("/ui/login")
        refused = browser.post("/ui/login", data={"key": MASTER_KEY, "csrf": csrf_of(form.text)})
        assert refused.status_code == 429
