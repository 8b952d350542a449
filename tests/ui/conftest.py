"""A gateway with the dashboard mounted, over a ledger of synthetic traffic, for in-process and browser tests."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

import server_support
from pg_support import pg_schema, pg_url  # noqa: F401 - the Postgres fixtures of this folder's tests
from switchman._config import parse_config
from switchman.gateway import Gateway
from switchman.ledger import Ledger, LedgerRecord
from switchman.testing import SYNTHETIC_PRICES, SYNTHETIC_ROUTES, FakeUpstream, synthetic_records
from switchman.ui import serving_app

MASTER_KEY = "sk-master-ui-test-0123456789abcdef"
VIEWER_KEY = "sk-dashboard-ui-test-fedcba987654"
UPSTREAM_KEY = "sk-upstream-ui-test-55aa55aa55aa"
TRAFFIC = 3000
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def config_data(upstream: FakeUpstream, ledger_url: str) -> dict[str, Any]:
    """The synthetic traffic's models and routes, served by the fake upstream."""
    return {
        "providers": {"fake": {"kind": "openai", "base_url": upstream.openai_base_url, "api_key_env": "FAKE_KEY"}},
        "models": {m: {"provider": "fake", "input_price": p[0], "output_price": p[1]}
                   for m, p in SYNTHETIC_PRICES.items()},
        "routes": {name: {"candidates": list(c), "strategy": "cheapest"} for name, (_, c, _) in SYNTHETIC_ROUTES.items()},
        "default_route": "default",
        "agents": {"triage": {"route": "support"}, "coder": {"route": "code"}},
        "budgets": [{"scope": "agent", "name": "coder", "usd": 50, "period": "day"},
                    {"scope": "agent", "name": "triage", "usd": 5, "period": "day", "on_exceed": "downgrade",
                     "downgrade_to": "gpt-4o-mini"}],
        "server": {"ledger_url": ledger_url},
    }


def env(*, master: bool = True, viewer: bool = True) -> dict[str, str]:
    values = {"FAKE_KEY": UPSTREAM_KEY}
    if master:
        values["SWITCHMAN_MASTER_KEY"] = MASTER_KEY
    if viewer:
        values["SWITCHMAN_DASHBOARD_KEY"] = VIEWER_KEY
    return values


@dataclass
class Site:
    """A dashboard over a filled ledger."""

    gateway: Gateway
    app: Any
    records: list[LedgerRecord]


@pytest.fixture(scope="session")
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream(api_keys={UPSTREAM_KEY}) as fake:
        yield fake


@pytest.fixture(scope="session")
def filled_ledger(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[LedgerRecord]]:
    """A SQLite ledger holding 30 days of synthetic traffic up to now (written once per session)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('ui-ledger') / 'ledger.sqlite3'}"
    records = list(synthetic_records(TRAFFIC, days=30, seed=11, now=time.time()))
    ledger = Ledger(url, max_queued=TRAFFIC + 10)
    for rec in records:
        ledger.record(rec)
    ledger.close_sync(timeout=None)
    return url, records


def make_site(upstream: FakeUpstream, ledger_url: str, records: list[LedgerRecord], *, bind_host: str = "127.0.0.1",
              master: bool = True, viewer: bool = True, **config: Any) -> Site:
    data = config_data(upstream, ledger_url)
    data.update(config)
    gateway = Gateway.from_config(parse_config(data), env=env(master=master, viewer=viewer))
    return Site(gateway, serving_app(gateway, bind_host=bind_host), records)


@pytest.fixture
def own_ledger(filled_ledger: tuple[str, list[LedgerRecord]], tmp_path: Path) -> str:
    """The URL of the test's own copy of `filled_ledger`: keys it creates (or wrongly lets be created) stay in it."""
    import sqlite3

    source = Path(filled_ledger[0].removeprefix("sqlite:///"))
    copy = tmp_path / "ledger.sqlite3"
    with sqlite3.connect(source) as src, sqlite3.connect(copy) as dst:
        src.backup(dst)
    return f"sqlite:///{copy}"


@pytest.fixture
def site(upstream: FakeUpstream, filled_ledger: tuple[str, list[LedgerRecord]], own_ledger: str) -> Site:
    """A fresh gateway + dashboard (own copy of the ledger, so key changes stay in this test)."""
    return make_site(upstream, own_ledger, filled_ledger[1])


def close_gateway(gateway: Gateway) -> None:
    """Close a gateway a test made outside a server (its ledger flushed, its key store's connections closed)."""
    import anyio

    anyio.run(gateway.aclose)


class ServerThread(server_support.ServerThread):
    """uvicorn's own protocol serving an app in a thread on an ephemeral loopback port; `with` gives its URL."""

    def __init__(self, app: Any) -> None:
        super().__init__(app, plain=True, log_level="warning")


def csrf_of(html: str) -> str:
    """The CSRF token a page's forms carry (the login form's, or a session's)."""
    match = _CSRF.search(html)
    assert match, "no CSRF token on the page"
    return match.group(1)


@contextmanager
def admin_session(site: Site) -> Iterator[tuple[TestClient, str]]:
    """A logged-in admin on `site` (500s answered, not raised) and its CSRF token."""
    with TestClient(site.app, raise_server_exceptions=False) as client:
        form = client.get("/ui/login", params={"next": "/ui/"})
        login = client.post("/ui/login", data={"key": MASTER_KEY, "csrf": csrf_of(form.text), "next": "/ui/"},
                            follow_redirects=False)
        assert login.status_code == 303 and login.headers["location"] == "/ui/", (login.status_code, login.text)
        keys = client.get("/ui/keys", follow_redirects=False)
        assert keys.status_code == 200, (keys.status_code, keys.headers.get("location"))  # not sent to /ui/login
        yield client, csrf_of(keys.text)
