"""Master key and virtual keys (in process, Starlette's TestClient)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from switchman._config import parse_config
from switchman.gateway import Gateway, build_app
from switchman.ledger import KeyStore
from switchman.testing import FakeUpstream

from .conftest import ENV, MASTER_KEY, config_data

ASK = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}


def make_client(upstream: FakeUpstream, tmp_path: Path, *, master: bool) -> tuple[TestClient, str]:
    url = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    config = parse_config(config_data(upstream, url))
    env = {**ENV, "SWITCHMAN_MASTER_KEY": MASTER_KEY} if master else ENV
    return TestClient(build_app(Gateway.from_config(config, env=env))), url


@pytest.fixture
def secured(upstream: FakeUpstream, tmp_path: Path) -> Iterator[tuple[TestClient, str]]:
    client, url = make_client(upstream, tmp_path, master=True)
    with client:
        yield client, url


def test_requests_need_a_key(secured: tuple[TestClient, str]) -> None:
    client, _ = secured
    for headers, message in [({}, "missing API key"), ({"authorization": "Basic abc"}, "malformed"),
                             ({"authorization": "Bearer"}, "malformed"),
                             ({"authorization": "Bearer sk-sw-nope"}, "invalid API key")]:
        response = client.post("/v1/chat/completions", json=ASK, headers=headers)
        assert response.status_code == 401
        error = response.json()["error"]
        assert error["type"] == "authentication_error" and error["code"] == "invalid_api_key"
        assert message in error["message"]
    assert client.get("/health").status_code == 200  # open for load balancers


def test_master_and_virtual_keys(secured: tuple[TestClient, str]) -> None:
    client, url = secured
    keys = KeyStore(url)
    info, secret = keys.create("ci-bot")
    keys.close()
    gateway: Gateway = client.app.state.gateway  # type: ignore[attr-defined]
    ids = []
    for key in (MASTER_KEY, secret):
        response = client.post("/v1/chat/completions", json=ASK, headers={"authorization": f"Bearer {key}"})
        assert response.status_code == 200, response.text
        ids.append(response.headers["x-switchman-request-id"])
    assert gateway.ledger is not None
    gateway.ledger.flush_sync(timeout=5)
    by_id = {r.request_id: r.key_id for r in gateway.ledger.records()}
    assert [by_id[i] for i in ids] == ["master", info.id]


def test_no_keys_means_open_until_a_key_exists(upstream: FakeUpstream, tmp_path: Path) -> None:
    client, url = make_client(upstream, tmp_path, master=False)
    with client:
        assert client.post("/v1/chat/completions", json=ASK).status_code == 200
    keys = KeyStore(url)
    keys.create("first")
    keys.close()
    client, _ = make_client(upstream, tmp_path, master=False)
    with client:
        assert client.post("/v1/chat/completions", json=ASK).status_code == 401


def test_a_ledger_outage_keeps_the_last_known_key_set(upstream: FakeUpstream, tmp_path: Path) -> None:
    from sqlalchemy.exc import OperationalError

    client, url = make_client(upstream, tmp_path, master=False)
    keys = KeyStore(url)
    _, secret = keys.create("bot")
    keys.close()
    with client:
        gateway: Gateway = client.app.state.gateway  # type: ignore[attr-defined]
        assert client.post("/v1/chat/completions", json=ASK).status_code == 401
        assert gateway.keyring is not None

        def down(*args: object) -> object:
            raise OperationalError("SELECT", {}, Exception("database is down"))

        gateway.keyring.store.snapshot = down  # type: ignore[method-assign]
        gateway.keyring.store.rows_for = down  # type: ignore[method-assign]
        assert client.portal is not None
        assert client.portal.call(gateway.keyring.refresh) is False
        assert client.post("/v1/chat/completions", json=ASK).status_code == 401  # still checking
        response = client.post("/v1/chat/completions", json=ASK, headers={"authorization": f"Bearer {secret}"})
        assert response.status_code == 200
