"""Auth and policy that cannot be bypassed: sticky auth, live key changes, agent-bound keys, named models,
scoped request ids, admin-only metrics, and an invalid-key flood that costs the database almost nothing."""

from __future__ import annotations

import secrets
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from security_support import ASK, ENV, MASTER_KEY, config_data, running_gateway, wait_until

from switchman._exceptions import ConfigError
from switchman.cli._serve import check_bind
from switchman.gateway._keyring import Keyring
from switchman.ledger import KeyStore
from switchman.testing import FakeUpstream

MASTER_ENV = {**ENV, "SWITCHMAN_MASTER_KEY": MASTER_KEY}


def chat(client: httpx.Client, key: str | None = None, *, model: str = "auto", headers: dict[str, str] | None = None,
         **fields: Any) -> httpx.Response:
    auth = {"authorization": f"Bearer {key}"} if key else {}
    return client.post("/v1/chat/completions", json={"model": model, "messages": ASK, **fields},
                       headers={**auth, **(headers or {})})


def data(upstream: FakeUpstream, ledger_url: str, **server: Any) -> dict[str, Any]:
    base = config_data(upstream, ledger_url, **{"key_refresh_s": 0.2, **server})
    base["agents"] = {
        "careful": {"deny": ["big"]},
        "pinned": {"model": "cheap"},
        "allowlisted": {"allow": ["cheap"]},
        "team-a": {},
        "team-b": {},
    }
    return base


def create_key(ledger_url: str, name: str = "bot", **options: Any) -> tuple[str, str]:
    store = KeyStore(ledger_url)
    try:
        info, secret = store.create(name, **options)
    finally:
        store.close()
    return info.id, secret


def test_revoking_the_last_key_keeps_authentication_on(upstream: FakeUpstream, ledger_url: str) -> None:
    key_id, secret = create_key(ledger_url)
    with running_gateway(data(upstream, ledger_url)) as (gateway, server), httpx.Client(base_url=server.url) as http:
        assert chat(http).status_code == 401
        assert chat(http, secret).status_code == 200
        store = KeyStore(ledger_url)
        assert store.revoke(key_id)
        store.close()
        wait_until(lambda: chat(http, secret).status_code == 401, what="the revocation to apply")
        assert chat(http).status_code == 401  # no key left, and still closed
        assert http.get("/metrics").status_code == 401
        assert http.get("/health").json() == {"status": "ok"}
    with running_gateway(data(upstream, ledger_url)) as (_, server), httpx.Client(base_url=server.url) as http:
        assert chat(http).status_code == 401  # a restart remembers it


def test_only_the_configuration_turns_authentication_off(upstream: FakeUpstream, ledger_url: str) -> None:
    create_key(ledger_url)
    with running_gateway(data(upstream, ledger_url, auth="off")) as (_, server), \
            httpx.Client(base_url=server.url) as http:
        assert chat(http).status_code == 200
    with pytest.raises(ConfigError, match="refusing to listen"):
        check_bind("0.0.0.0", auth="off", has_keys=True, master_key=True)
    check_bind("0.0.0.0", auth="auto", has_keys=True, master_key=False)
    check_bind("127.0.0.1", auth="off", has_keys=False, master_key=False)


def test_a_gateway_listening_beyond_loopback_never_serves_unauthenticated(upstream: FakeUpstream,
                                                                          ledger_url: str) -> None:
    with running_gateway(data(upstream, ledger_url, host="0.0.0.0")) as (_, server), \
            httpx.Client(base_url=server.url) as http:
        response = chat(http)
        assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"


def test_a_key_created_while_running_works_at_once_and_its_budget_applies(upstream: FakeUpstream,
                                                                          ledger_url: str) -> None:
    with running_gateway(data(upstream, ledger_url), MASTER_ENV) as (gateway, server), \
            httpx.Client(base_url=server.url) as http:
        key_id, secret = create_key(ledger_url, budget_usd=1e-9)
        assert gateway.budgets is not None
        wait_until(lambda: any(b.name == key_id for b, _, _ in gateway.budgets.usage()), what="the key's budget")
        response = chat(http, secret)
        assert response.status_code == 429 and response.json()["error"]["code"] == "budget_exceeded"
        assert key_id in response.json()["error"]["message"]
        store = KeyStore(ledger_url)
        store.update(key_id, budget_usd=10.0)  # a changed budget applies too
        store.close()
        wait_until(lambda: chat(http, secret).status_code == 200, what="the raised budget to apply")


def test_concurrent_first_uses_of_a_new_key_share_one_lookup(upstream: FakeUpstream, ledger_url: str) -> None:
    with running_gateway(data(upstream, ledger_url, key_refresh_s=3600)) as (gateway, server):
        _, secret = create_key(ledger_url)
        assert gateway.keyring is not None
        reads = gateway.keyring.reads
        statuses: list[int] = []

        def one() -> None:
            with httpx.Client(base_url=server.url) as http:
                statuses.append(chat(http, secret).status_code)

        threads = [threading.Thread(target=one) for _ in range(30)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert statuses == [200] * 30
        assert gateway.keyring.reads - reads <= 2  # one lookup, shared (two if the first landed mid-refresh)


def test_a_flood_of_invalid_keys_is_throttled_per_address_and_costs_few_database_reads(
    upstream: FakeUpstream, ledger_url: str
) -> None:
    _, secret = create_key(ledger_url)
    limits = {"failed_auth_burst": 5, "failed_auth_per_s": 0.5}
    with running_gateway(data(upstream, ledger_url, key_refresh_s=3600, limits=limits)) as (gateway, server):
        assert gateway.keyring is not None
        reads = gateway.keyring.reads
        statuses: list[int] = []

        def attacker(address: str) -> None:
            transport = httpx.HTTPTransport(local_address=address)
            with httpx.Client(base_url=server.url, transport=transport) as http:
                for _ in range(3):
                    statuses.append(chat(http, "sk-sw-" + secrets.token_urlsafe(32)).status_code)

        started = time.monotonic()
        threads = [threading.Thread(target=attacker, args=(f"127.0.0.{2 + i}",)) for i in range(40)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - started
        assert statuses == [401] * 120
        # The database saw a bounded trickle (10 lookups a second, plus a burst of 10), not one query each.
        assert gateway.keyring.reads - reads <= 10 + 10 * elapsed + 1
        one = httpx.HTTPTransport(local_address="127.0.0.99")
        with httpx.Client(base_url=server.url, transport=one) as http:
            answers = [chat(http, "sk-sw-" + secrets.token_urlsafe(32)) for _ in range(8)]
            assert [r.status_code for r in answers] == [401] * 5 + [429] * 3
            assert answers[-1].json()["error"]["code"] == "too_many_failed_authentications"
            assert int(answers[-1].headers["retry-after"]) >= 1
        with httpx.Client(base_url=server.url) as http:  # another address, a good key: unaffected
            assert chat(http, secret).status_code == 200


def test_a_failed_authentication_wait_is_rounded_up(upstream: FakeUpstream, ledger_url: str) -> None:
    # One failure a burst, 0.4 a second: the next try may come 2.5 s later, so "retry-after: 2" is too soon.
    create_key(ledger_url)
    limits = {"failed_auth_burst": 1, "failed_auth_per_s": 0.4}
    with running_gateway(data(upstream, ledger_url, key_refresh_s=3600, limits=limits)) as (_, server):
        with httpx.Client(base_url=server.url) as http:
            answers = [chat(http, "sk-sw-" + secrets.token_urlsafe(32)) for _ in range(2)]
    assert [r.status_code for r in answers] == [401, 429]
    assert answers[1].headers["retry-after"] == "3"
    assert 2000 < int(answers[1].headers["retry-after-ms"]) <= 2500
    assert "retry in 3 s" in answers[1].json()["error"]["message"]


def test_a_repeated_invalid_key_is_looked_up_once(upstream: FakeUpstream, ledger_url: str) -> None:
    create_key(ledger_url)
    with running_gateway(data(upstream, ledger_url, key_refresh_s=3600)) as (gateway, server), \
            httpx.Client(base_url=server.url) as http:
        assert gateway.keyring is not None
        reads = gateway.keyring.reads
        bad = "sk-sw-" + secrets.token_urlsafe(32)
        assert [chat(http, bad).status_code for _ in range(15)] == [401] * 15
        assert gateway.keyring.reads - reads == 1  # remembered as a miss


@pytest.mark.parametrize(
    ("agent", "model", "rule"),
    [("careful", "big", "agents.careful.deny"), ("pinned", "big", "agents.pinned.model"),
     ("allowlisted", "big", "agents.allowlisted.allow")],
)
def test_naming_a_model_passes_the_agents_rules(upstream: FakeUpstream, ledger_url: str, agent: str, model: str,
                                               rule: str) -> None:
    with running_gateway(data(upstream, ledger_url)) as (_, server), httpx.Client(base_url=server.url) as http:
        response = chat(http, model=model, headers={"x-switchman-agent": agent})
        error = response.json()["error"]
        assert response.status_code == 403 and error["code"] == "model_not_allowed" and rule in error["message"]
        assert error["type"] == "permission_error"
        assert upstream.requests_for(model) == []
        allowed = chat(http, model="cheap", headers={"x-switchman-agent": agent})
        assert allowed.status_code == 200 and allowed.headers["x-switchman-model"] == "cheap"


def test_a_pinned_agent_gets_its_model_on_any_route(upstream: FakeUpstream, ledger_url: str) -> None:
    with running_gateway(data(upstream, ledger_url)) as (_, server), httpx.Client(base_url=server.url) as http:
        for model in ("auto", "auto:default"):
            response = chat(http, model=model, headers={"x-switchman-agent": "pinned"})
            assert response.headers["x-switchman-model"] == "cheap"
            assert "pinned" in response.headers["x-switchman-route-reason"]


def test_named_requests_count_in_the_route_budget(upstream: FakeUpstream, ledger_url: str) -> None:
    config = data(upstream, ledger_url)
    config["budgets"] = [{"scope": "route", "name": "default", "usd": 0.0004}]
    with running_gateway(config) as (gateway, server), httpx.Client(base_url=server.url) as http:
        statuses = [chat(http, model="big", max_tokens=5).status_code for _ in range(10)]
        assert 200 in statuses and statuses[-1] == 429
        assert gateway.budgets is not None
        (budget, spent, reserved), = gateway.budgets.usage()
        assert budget.name == "default" and reserved == 0 and spent <= budget.usd


def test_a_key_bound_to_agents_cannot_act_as_another(upstream: FakeUpstream, ledger_url: str) -> None:
    _, bound = create_key(ledger_url, "team-a-bot", agents=["team-a"], default_agent="team-a")
    _, two = create_key(ledger_url, "two-teams", agents=["team-a", "team-b"])
    _, unbound = create_key(ledger_url, "anyone")
    with running_gateway(data(upstream, ledger_url)) as (gateway, server), httpx.Client(base_url=server.url) as http:
        other = chat(http, bound, headers={"x-switchman-agent": "team-b"})
        assert other.status_code == 403 and other.json()["error"]["code"] == "agent_not_allowed"
        metadata = http.post("/v1/chat/completions", headers={"authorization": f"Bearer {bound}"},
                             json={"model": "auto", "messages": ASK, "metadata": {"agent": "team-b"}})
        assert metadata.status_code == 403
        default = chat(http, bound)  # naming none: the key's default agent, not "no agent"
        assert default.status_code == 200
        missing = chat(http, two)
        assert missing.status_code == 400 and missing.json()["error"]["code"] == "agent_required"
        assert chat(http, two, headers={"x-switchman-agent": "team-b"}).status_code == 200
        assert chat(http, unbound, headers={"x-switchman-agent": "team-b"}).status_code == 200
        assert gateway.ledger is not None
        gateway.ledger.flush_sync(timeout=5)
        agents = {r.request_id: r.agent for r in gateway.ledger.records()}
        assert agents[default.headers["x-switchman-request-id"]] == "team-a"


def test_a_reused_request_id_cannot_take_another_keys_feedback(upstream: FakeUpstream, ledger_url: str) -> None:
    _, alice = create_key(ledger_url, "alice")
    _, mallory = create_key(ledger_url, "mallory")
    with running_gateway(data(upstream, ledger_url)) as (gateway, server), httpx.Client(base_url=server.url) as http:
        assert chat(http, alice, headers={"x-request-id": "shared-id-1"}).status_code == 200
        assert chat(http, mallory, headers={"x-request-id": "shared-id-1"}).status_code == 200
        for key in (alice, mallory):
            response = http.post("/v1/feedback", json={"request_id": "shared-id-1", "thumbs": "up"},
                                 headers={"authorization": f"Bearer {key}"})
            assert response.status_code == 200, response.text
        _, stranger = create_key(ledger_url, "stranger")
        response = http.post("/v1/feedback", json={"request_id": "shared-id-1", "thumbs": "down"},
                             headers={"authorization": f"Bearer {stranger}"})
        assert response.status_code == 404


def test_metrics_need_the_master_key_and_health_says_nothing_sensitive(upstream: FakeUpstream,
                                                                      ledger_url: str) -> None:
    _, secret = create_key(ledger_url)
    with running_gateway(data(upstream, ledger_url), MASTER_ENV) as (_, server), \
            httpx.Client(base_url=server.url) as http:
        assert chat(http, secret).status_code == 200
        assert http.get("/metrics").status_code == 401
        denied = http.get("/metrics", headers={"authorization": f"Bearer {secret}"})
        assert denied.status_code == 403 and denied.json()["error"]["code"] == "admin_only"
        admin = http.get("/metrics", headers={"authorization": f"Bearer {MASTER_KEY}"})
        assert admin.status_code == 200 and "switchman_cost_usd" in admin.text
        assert http.get("/health").json() == {"status": "ok"}
        detail = http.get("/health", headers={"authorization": f"Bearer {MASTER_KEY}"}).json()
        assert detail["models"] == {"cheap": "closed", "big": "closed"}
    with running_gateway(data(upstream, ledger_url, metrics_access="keys")) as (_, server), \
            httpx.Client(base_url=server.url) as http:
        assert http.get("/metrics", headers={"authorization": f"Bearer {secret}"}).status_code == 200
    with running_gateway(data(upstream, ledger_url, metrics_access="open")) as (_, server), \
            httpx.Client(base_url=server.url) as http:
        assert http.get("/metrics").status_code == 200


def test_keys_and_auth_survive_a_gateway_built_before_the_database_exists(upstream: FakeUpstream,
                                                                          tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh' / 'ledger.sqlite3'}"
    keyring = Keyring(KeyStore(url))
    assert keyring.auth_enabled  # nothing read yet: closed
    keyring.close()
    with running_gateway(data(upstream, url)) as (gateway, server), httpx.Client(base_url=server.url) as http:
        assert gateway.keyring is not None and not gateway.keyring.auth_enabled
        assert chat(http).status_code == 200  # a fresh install on loopback: open until a key exists
        _, secret = create_key(url)
        wait_until(lambda: chat(http).status_code == 401, what="the first key to switch auth on")
        assert chat(http, secret).status_code == 200
