"""The dashboard in process (Starlette's TestClient): logins, CSRF, what each page shows, keys."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from switchman.ledger import LedgerRecord
from switchman.testing import FakeUpstream
from switchman.ui._format import usd

from .conftest import MASTER_KEY, VIEWER_KEY, Site, csrf_of, make_site


def login(client: TestClient, key: str, next_path: str = "/ui/") -> None:
    form = client.get("/ui/login", params={"next": next_path})
    assert form.status_code == 200
    response = client.post("/ui/login", data={"key": key, "csrf": csrf_of(form.text), "next": next_path},
                           follow_redirects=False)
    assert response.status_code == 303, response.text
    assert response.headers["location"] == next_path


@pytest.fixture
def client(site: Site) -> Iterator[TestClient]:
    with TestClient(site.app) as test_client:
        yield test_client


@pytest.fixture
def admin(client: TestClient) -> TestClient:
    login(client, MASTER_KEY)
    return client


def test_without_a_session_everything_goes_to_the_login(client: TestClient) -> None:
    for path in ("/ui/", "/ui/agents", "/ui/models", "/ui/requests", "/ui/routers", "/ui/keys", "/ui/requests/x"):
        response = client.get(path, follow_redirects=False)
        assert response.status_code == 303, path
        assert response.headers["location"].startswith("/ui/login?next=")
    htmx = client.get("/ui/requests", headers={"hx-request": "true"}, follow_redirects=False)
    assert htmx.status_code == 401 and htmx.headers["hx-redirect"].startswith("/ui/login")
    assert client.post("/ui/keys", data={"name": "x"}).status_code == 401
    # The API's own key check still applies next to the dashboard.
    assert client.post("/v1/chat/completions", json={"model": "auto", "messages": []}).status_code == 401
    assert client.get("/uix").status_code == 401


def test_logging_in_sets_a_signed_httponly_cookie(client: TestClient) -> None:
    form = client.get("/ui/login")
    response = client.post("/ui/login", data={"key": MASTER_KEY, "csrf": csrf_of(form.text), "next": "/ui/models"},
                           follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/ui/models"
    cookie = next(c for c in response.headers.get_list("set-cookie") if c.startswith("switchman_session="))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/ui" in cookie
    assert MASTER_KEY not in cookie
    page = client.get("/ui/models")
    assert page.status_code == 200 and "admin" in page.text


def test_wrong_keys_forged_cookies_and_foreign_redirects_are_refused(client: TestClient) -> None:
    form = client.get("/ui/login")
    token = csrf_of(form.text)
    wrong = client.post("/ui/login", data={"key": "sk-nope", "csrf": token})
    assert wrong.status_code == 401 and "not the master key" in wrong.text
    assert client.post("/ui/login", data={"key": MASTER_KEY, "csrf": "forged"}).status_code == 403
    client.cookies.set("switchman_session", "eyJyIjoiYWRtaW4ifQ.forged.sig", path="/ui")
    assert client.get("/ui/", follow_redirects=False).status_code == 303
    client.cookies.clear()
    form = client.get("/ui/login")
    away = client.post("/ui/login", data={"key": MASTER_KEY, "csrf": csrf_of(form.text), "next": "//evil.example/"},
                       follow_redirects=False)
    assert away.headers["location"] == "/ui/"


def test_wrong_keys_are_throttled(client: TestClient) -> None:
    for _ in range(10):
        form = client.get("/ui/login")
        assert client.post("/ui/login", data={"key": "sk-guess", "csrf": csrf_of(form.text)}).status_code == 401
    form = client.get("/ui/login")
    blocked = client.post("/ui/login", data={"key": MASTER_KEY, "csrf": csrf_of(form.text)}, follow_redirects=False)
    assert blocked.status_code == 429


def test_a_cookie_holds_across_restarts_but_not_a_key_change(
    site: Site, upstream: FakeUpstream, filled_ledger: tuple[str, list[LedgerRecord]]
) -> None:
    with TestClient(site.app) as first:
        login(first, MASTER_KEY)
        cookie = first.cookies.get("switchman_session")
    assert cookie
    restarted = make_site(upstream, filled_ledger[0], filled_ledger[1])  # same keys: another worker, or a restart
    rotated = make_site(upstream, filled_ledger[0], filled_ledger[1])
    rotated = make_site(upstream, filled_ledger[0], filled_ledger[1], master=False)  # the master key was removed
    for app, expected in ((restarted.app, 200), (rotated.app, 303)):
        with TestClient(app) as client:
            client.cookies.set("switchman_session", cookie, path="/ui")
            assert client.get("/ui/", follow_redirects=False).status_code == expected


def test_every_mutation_needs_the_csrf_token(admin: TestClient) -> None:
    page = admin.get("/ui/keys")
    token = csrf_of(page.text)
    assert admin.post("/ui/keys", data={"name": "no-token"}).status_code == 403
    assert admin.post("/ui/keys", data={"name": "bad", "csrf": "nope"}).status_code == 403
    assert admin.post("/ui/keys", data={"name": "x", "csrf": token},
                      headers={"origin": "https://evil.example"}).status_code == 403
    assert admin.post("/ui/keys", data={"name": "x", "csrf": token},
                      headers={"sec-fetch-site": "cross-site"}).status_code == 403
    assert admin.post("/ui/logout").status_code == 403
    made = admin.post("/ui/keys", data={"name": "with-header"}, headers={"x-csrf-token": token})
    assert made.status_code == 200 and "with-header" in made.text


def test_creating_and_revoking_a_key(admin: TestClient, site: Site) -> None:
    token = csrf_of(admin.get("/ui/keys").text)
    made = admin.post("/ui/keys", data={"name": "ci-bot", "budget_usd": "2.5", "period": "day", "csrf": token})
    assert made.status_code == 200
    secret = re.search(r'id="secret">(sk-sw-[^<]+)<', made.text)
    assert secret is not None
    key = secret.group(1)
    assert site.gateway.keys is not None
    (info,) = [k for k in site.gateway.keys.list() if k.name == "ci-bot"]
    assert info.budget_usd == 2.5
    # The new key's budget is enforced now, not at the next restart.
    assert site.gateway.budgets is not None
    assert any(b.scope == "key" and b.name == info.id for b, _, _ in site.gateway.budgets.usage())
    # The secret is shown once: the keys page never shows it again.
    assert key not in admin.get("/ui/keys").text
    ask = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
    assert admin.post("/v1/chat/completions", json=ask, headers={"authorization": f"Bearer {key}"}).status_code == 200
    revoked = admin.post(f"/ui/keys/{info.id}/revoke", data={"csrf": token}, follow_redirects=False)
    assert revoked.status_code == 303 and revoked.headers["location"] == f"/ui/keys?revoked={info.id}"
    refused = admin.post("/v1/chat/completions", json=ask, headers={"authorization": f"Bearer {key}"})
    assert refused.status_code == 401
    assert admin.post(f"/ui/keys/{info.id}/revoke", data={"csrf": token}).status_code == 404
    bad = admin.post("/ui/keys", data={"name": "x", "budget_usd": "-1", "csrf": token})
    assert bad.status_code == 400 and "more than $0" in bad.text


def test_the_read_only_key_cannot_change_keys(client: TestClient) -> None:
    login(client, VIEWER_KEY)
    page = client.get("/ui/keys")
    assert page.status_code == 200 and "read-only" in page.text and 'id="create-key"' not in page.text
    token = csrf_of(page.text)  # the logout form's token
    assert client.post("/ui/keys", data={"name": "x", "csrf": token}).status_code == 403


def test_pages_show_the_ledgers_numbers(admin: TestClient, site: Site) -> None:
    assert site.gateway.ledger is not None
    (week,) = site.gateway.ledger.views.totals(since=time.time() - 7 * 86_400)
    overview = admin.get("/ui/", params={"window": "7d"})
    assert overview.status_code == 200
    assert f'id="saving-usd">{usd(week.saving_usd)}<' in overview.text
    assert f'id="requests">{week.requests:,}<' in overview.text
    assert 'id="chart-data"' in overview.text
    agents = admin.get("/ui/agents", params={"window": "30d"}).text
    for name in ("coder", "triage", "researcher"):
        assert f">{name}</a>" in agents
    assert "resets in" in agents  # coder's and triage's budgets
    models = admin.get("/ui/models").text
    assert 'data-model="gpt-4o-mini"' in models and "closed" in models and "deployment" in models
    routers = admin.get("/ui/routers").text
    assert 'id="route-default"' in routers and "Shadow router vs live" in routers


def test_the_log_filters_and_the_request_page(admin: TestClient, site: Site) -> None:
    page = admin.get("/ui/requests", params={"agent": "coder", "status": "ok"})
    assert page.status_code == 200
    ids = re.findall(r'data-request-id="([0-9a-f]+)"', page.text)
    expected = [r.request_id for r in reversed(site.records) if r.agent == "coder" and r.status == "ok"][:50]
    assert ids == expected
    assert 'id="older"' in page.text
    record = next(r for r in reversed(site.records) if r.status == "ok" and r.route == "default")
    detail = admin.get(f"/ui/requests/{record.request_id}")
    assert detail.status_code == 200
    assert f'id="model">{record.model}<' in detail.text
    for model in record.candidates:
        assert f'data-model="{model}"' in detail.text
    assert 'class="chosen" data-model="' + str(record.model) + '"' in detail.text
    assert admin.get("/ui/requests/" + "f" * 32).status_code == 404
    assert admin.get("/ui/requests", params={"status": "not-a-status", "before": "abc"}).status_code == 200


def test_security_headers(admin: TestClient) -> None:
    response = admin.get("/ui/")
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["cache-control"] == "no-store"


def test_closed_beyond_loopback_without_a_key(upstream: FakeUpstream,
                                              filled_ledger: tuple[str, list[LedgerRecord]]) -> None:
    site = make_site(upstream, filled_ledger[0], filled_ledger[1], bind_host="0.0.0.0", master=False, viewer=False)
    with TestClient(site.app) as client:
        for path in ("/ui/", "/ui/login", "/ui/static/app.css", "/ui/keys"):
            response = client.get(path, follow_redirects=False)
            assert response.status_code == 403 and "SWITCHMAN_MASTER_KEY" in response.text, path


def test_open_and_read_only_on_loopback_without_a_key(upstream: FakeUpstream,
                                                      filled_ledger: tuple[str, list[LedgerRecord]]) -> None:
    site = make_site(upstream, filled_ledger[0], filled_ledger[1], master=False, viewer=False)
    with TestClient(site.app) as client:
        page = client.get("/ui/keys")
        assert page.status_code == 200 and "open · read-only" in page.text and 'id="create-key"' not in page.text
        token = re.search(r'name="csrf-token" content="([^"]+)"', page.text)
        assert token is not None
        assert client.post("/ui/keys", data={"name": "x"}, headers={"x-csrf-token": token.group(1)}).status_code == 403


def test_the_dashboard_can_be_switched_off(upstream: FakeUpstream, tmp_path: Path) -> None:
    site = make_site(upstream, f"sqlite:///{tmp_path / 'l.sqlite3'}", [], dashboard={"enabled": False})
    with TestClient(site.app) as client:
        assert client.get("/ui/", follow_redirects=False).status_code in (401, 404)


def test_switchman_serve_mounts_the_dashboard(upstream: FakeUpstream, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import yaml

    from switchman._environ import BIND_HOST_ENV, CONFIG_ENV
    from switchman.cli._serve import app_from_environment

    from .conftest import config_data

    path = tmp_path / "switchman.yaml"
    path.write_text(yaml.safe_dump(config_data(upstream, f"sqlite:///{tmp_path / 'l.sqlite3'}")))
    monkeypatch.setenv(CONFIG_ENV, str(path))
    for name in ("SWITCHMAN_MASTER_KEY", "SWITCHMAN_DASHBOARD_KEY"):
        monkeypatch.delenv(name, raising=False)
    for host, status in (("127.0.0.1", 200), ("0.0.0.0", 403)):  # no key: open on loopback only
        monkeypatch.setenv(BIND_HOST_ENV, host)
        with TestClient(app_from_environment()) as client:
            assert client.get("/ui/", follow_redirects=False).status_code == status, host


def test_the_routers_page_draws_the_last_evaluation(upstream: FakeUpstream, tmp_path: Path,
                                                    filled_ledger: tuple[str, list[LedgerRecord]]) -> None:
    import json

    report = {
        "n_prompts": 120, "best_model": "gpt-4o",
        "routers": {"rb": {"quality": 0.8, "cost_per_1k": 0.5, "frontier": [[0.1, 0.6], [0.5, 0.8], [2.0, 0.85]]}},
        "baselines": {"model:gpt-4o-mini": {"quality": 0.6, "cost_per_1k": 0.1},
                      "model:gpt-4o": {"quality": 0.86, "cost_per_1k": 2.5},
                      "single_model_hull": {"hull": [[0.1, 0.6], [2.5, 0.86]]},
                      "oracle": {"quality": 0.9, "cost_per_1k": 0.3}},
    }
    (tmp_path / "rb.json").write_text(json.dumps(report))
    site = make_site(upstream, filled_ledger[0], filled_ledger[1],
                     dashboard={"eval_reports": {"default": str(tmp_path / "rb.json"), "code": "missing.json"}})
    with TestClient(site.app) as client:
        login(client, MASTER_KEY)
        page = client.get("/ui/routers").text
    svg = page[page.index('<svg class="eval-svg"'):page.index("</svg>")]
    assert svg.count('class="single"') == 2 and svg.count('class="frontier"') == 1
    assert svg.count('class="calibrated"') == 1 and 'class="oracle"' in svg and 'class="hull"' in svg
    assert "120 prompts" in page
    assert "missing.json not found" in page  # a configured report that is not there is named, not fatal


def test_the_models_page_shows_each_deployment_and_its_circuit(upstream: FakeUpstream, tmp_path: Path) -> None:
    from switchman._config import parse_config
    from switchman.gateway import Gateway
    from switchman.ui import serving_app

    from .conftest import config_data, env

    data = config_data(upstream, f"sqlite:///{tmp_path / 'l.sqlite3'}")
    fake = data["providers"]["fake"]
    data["providers"]["fake-west"] = dict(fake)
    data["models"]["gpt-4o"] = {"input_price": 2.5, "output_price": 10.0,
                                "deployments": [{"provider": "fake", "name": "east", "weight": 3},
                                                {"provider": "fake-west", "name": "west"}]}
    gateway = Gateway.from_config(parse_config(data), env=env())
    for _ in range(gateway.config.server.circuit_breaker.failures):
        gateway.dispatcher.health.record("gpt-4o@west", ok=False)
    with TestClient(serving_app(gateway, bind_host="127.0.0.1")) as client:
        login(client, MASTER_KEY)
        page = client.get("/ui/models").text
    row = page[page.index('data-model="gpt-4o"'):]
    assert 'data-deployment="gpt-4o@east"' in row and 'data-deployment="gpt-4o@west"' in row
    west = row[row.index('data-deployment="gpt-4o@west"'):]
    assert "state-open" in west[:west.index("</tr>")]
    model_row = row[:row.index("</tr>")]
    assert "state-degraded" in model_row  # one deployment open, one closed
    assert "Models and deployments" in page


def test_the_request_page_shows_the_feedback_of_its_own_key_only(upstream: FakeUpstream, tmp_path: Path) -> None:
    from switchman.ledger import Ledger

    url = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    ledger = Ledger(url)
    ledger.record(LedgerRecord(request_id="job-1", model="cheap-model", key_id="key-A"))
    ledger.record(LedgerRecord(request_id="job-1", model="cheap-model", key_id="key-B"))  # the newer: the page's
    ledger.flush_sync()
    for key, comment in (("key-A", "a-said-this"), ("key-B", "b-said-this")):
        ledger.add_feedback("job-1", 0.5, comment, scored=ledger.find("job-1", key_id=key))
    ledger.close_sync()
    with TestClient(make_site(upstream, url, []).app) as client:
        login(client, MASTER_KEY)
        page = client.get("/ui/requests/job-1")
    assert page.status_code == 200 and "b-said-this" in page.text and "a-said-this" not in page.text
