"""Sessions a read-only user could sign themselves: the secret comes from the dashboard key alone when there is no
master key, so such a server must accept no admin session, and a key moved from master to dashboard voids every
cookie signed while it was the master. Over real HTTP (uvicorn on loopback)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from starlette.requests import Request

from switchman._config import parse_config
from switchman._exceptions import ConfigError
from switchman.gateway import Gateway
from switchman.ledger import LedgerRecord
from switchman.testing import FakeUpstream
from switchman.ui import serving_app
from switchman.ui._access import Access, Session

from .conftest import (
    MASTER_KEY,
    UPSTREAM_KEY,
    VIEWER_KEY,
    ServerThread,
    close_gateway,
    config_data,
    csrf_of,
    make_site,
)


@contextmanager
def _gateway(upstream: FakeUpstream, ledger_url: str, **keys: str) -> Iterator[Gateway]:
    """A gateway with these keys, closed afterwards."""
    gateway = Gateway.from_config(parse_config(config_data(upstream, ledger_url)),
                                  env={"FAKE_KEY": UPSTREAM_KEY, **keys})
    try:
        yield gateway
    finally:
        close_gateway(gateway)


def _as(base: str, cookie: str) -> httpx.Client:
    client = httpx.Client(base_url=base, timeout=30)
    client.cookies.set("switchman_session", cookie)
    return client


def _refused(base: str, cookie: str, csrf: str, gateway: Gateway) -> None:
    """GET /ui/keys goes to the login form and POST /ui/keys (with the cookie's own CSRF token) creates nothing."""
    with _as(base, cookie) as http:
        page = http.get("/ui/keys")
        assert page.status_code == 303 and page.headers["location"].startswith("/ui/login"), page.status_code
        made = http.post("/ui/keys", data={"name": "forged-key", "csrf": csrf})
        assert made.status_code in (401, 403), made.status_code
    assert gateway.keys is not None
    assert [k for k in gateway.keys.list() if k.name == "forged-key"] == []


def test_an_admin_cookie_forged_with_the_dashboard_key_is_refused(
        upstream: FakeUpstream, filled_ledger: tuple[str, list[LedgerRecord]], own_ledger: str) -> None:
    site = make_site(upstream, own_ledger, filled_ledger[1], master=False)  # a dashboard key only
    # What any viewer can compute: the server's own derivation from the one key they were given.
    forged, session = Access(master_key=None, dashboard_key=VIEWER_KEY, loopback=True, ttl_s=3600).issue("admin")
    with ServerThread(site.app) as base:
        _refused(base, forged, session.csrf, site.gateway)
        with httpx.Client(base_url=base, timeout=30) as http:  # the viewer's own login still works, read-only
            form = http.get("/ui/login")
            assert http.post("/ui/login", data={"key": VIEWER_KEY, "csrf": csrf_of(form.text)}).status_code == 303
            keys = http.get("/ui/keys")
            assert keys.status_code == 200 and "read-only" in keys.text


def test_an_admin_cookie_dies_when_its_master_key_becomes_the_dashboard_key(upstream: FakeUpstream,
                                                                           own_ledger: str) -> None:
    with _gateway(upstream, own_ledger, SWITCHMAN_MASTER_KEY=MASTER_KEY) as before, \
            ServerThread(serving_app(before, bind_host="127.0.0.1")) as base, \
            httpx.Client(base_url=base, timeout=30) as http:
        form = http.get("/ui/login")
        assert http.post("/ui/login", data={"key": MASTER_KEY, "csrf": csrf_of(form.text)}).status_code == 303
        cookie = http.cookies["switchman_session"]
        keys = http.get("/ui/keys")
        assert keys.status_code == 200
    with _gateway(upstream, own_ledger, SWITCHMAN_DASHBOARD_KEY=MASTER_KEY) as after, \
            ServerThread(serving_app(after, bind_host="127.0.0.1")) as base:  # the key moved to read-only
        _refused(base, cookie, csrf_of(keys.text), after)


def test_moving_a_key_between_roles_changes_the_signing_secret() -> None:
    """Even a viewer session (which `read` accepts without a master key) is void: the key's role is in the secret."""
    options: dict[str, Any] = {"loopback": True, "ttl_s": 3600}
    as_master = Access(master_key=MASTER_KEY, dashboard_key=None, **options)
    as_dashboard = Access(master_key=None, dashboard_key=MASTER_KEY, **options)
    swapped = Access(master_key=VIEWER_KEY, dashboard_key=MASTER_KEY, **options)
    both = Access(master_key=MASTER_KEY, dashboard_key=VIEWER_KEY, **options)
    cookie, _ = as_master.issue("viewer")
    assert as_master.read(cookie) is not None
    assert as_dashboard.read(cookie) is None
    assert swapped.read(both.issue("viewer")[0]) is None
    device = as_master.device_cookie()
    assert as_master.device_of(device) is not None
    assert as_dashboard.device_of(device) is None and as_dashboard.device_of(as_dashboard.device_cookie()) is None


def test_key_changes_need_a_master_key_even_for_an_admin_session_past_the_guard(
        upstream: FakeUpstream, filled_ledger: tuple[str, list[LedgerRecord]], own_ledger: str) -> None:
    """The second lock: create and revoke check that a master key exists, not only the session's role."""
    site = make_site(upstream, own_ledger, filled_ledger[1], master=False)
    mounted = next(r.app for r in site.app.routes if getattr(r, "path", "") == "/ui")  # the dashboard's app
    board = mounted.state.dashboard
    admin = Session("admin", "tok")

    def call(handler: Any, path: str, **params: str) -> int:
        scope = {"type": "http", "method": "POST", "path": path, "root_path": "/ui", "headers": [],
                 "query_string": b"", "path_params": params, "state": {"ui_session": admin}}


        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"name=past-the-guard&csrf=tok", "more_body": False}

        return int(asyncio.run(handler(Request(scope, receive))).status_code)

    assert call(board.create, "/keys") == 403
    assert call(board.revoke, "/keys/k1/revoke", key_id="k1") == 403
    assert site.gateway.keys is not None and [k for k in site.gateway.keys.list() if k.name == "past-the-guard"] == []


def test_a_dashboard_key_equal_to_the_master_key_stops_the_start(upstream: FakeUpstream, own_ledger: str) -> None:
    """Otherwise every holder of the read-only key would log in as admin; the error names both variables, never
    the key."""
    with pytest.raises(ConfigError) as raised, _gateway(upstream, own_ledger, SWITCHMAN_MASTER_KEY=MASTER_KEY,
                                                        SWITCHMAN_DASHBOARD_KEY=MASTER_KEY):
        pass
    message = str(raised.value)
    assert "SWITCHMAN_DASHBOARD_KEY" in message and "SWITCHMAN_MASTER_KEY" in message and "admin" in message
    assert MASTER_KEY not in message
