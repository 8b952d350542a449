"""ConfigReloader in process: a valid file is swapped in whole, a bad one leaves the running configuration."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from switchman._config import parse_config
from switchman.gateway import ConfigReloader, Gateway, build_app
from switchman.testing import FakeUpstream

from .conftest import ASK, ENV, ServerThread, config_data


@pytest.fixture
def setup(upstream: FakeUpstream, tmp_path: Path) -> tuple[dict[str, Any], Path, Gateway]:
    data = config_data(upstream, f"sqlite:///{tmp_path / 'ledger.sqlite3'}")
    path = tmp_path / "switchman.yaml"
    path.write_text(yaml.safe_dump(data))
    return data, path, Gateway.from_config(parse_config(data), base_dir=tmp_path, env=ENV)


@contextmanager
def _reloading(gateway: Gateway, path: Path) -> Iterator[tuple[ConfigReloader, httpx.Client]]:
    """The gateway served on loopback with a reloader of the configuration file at `path`, and a client of it."""
    reloader = ConfigReloader(gateway, path)
    with ServerThread(build_app(gateway, reloader=reloader)) as base, httpx.Client(base_url=base, timeout=30) as http:
        yield reloader, http


def test_reload_swaps_the_configuration_and_keeps_the_state(
    setup: tuple[dict[str, Any], Path, Gateway], caplog: pytest.LogCaptureFixture
) -> None:
    data, path, gateway = setup
    old = gateway.dispatcher
    with _reloading(gateway, path) as (reloader, http):
        assert "auto:fresh" not in {m["id"] for m in http.get("/v1/models").json()["data"]}
        data["routes"]["fresh"] = {"candidates": ["big"]}
        data["server"]["max_body_bytes"] = 1000
        path.write_text(yaml.safe_dump(data))
        with caplog.at_level(logging.INFO, logger="switchman.gateway"):
            assert _run(reloader) is True
        assert "auto:fresh" in {m["id"] for m in http.get("/v1/models").json()["data"]}
        answer = http.post("/v1/chat/completions", json={"model": "auto:fresh", "messages": [{"role": "user",
                                                                                            "content": "hi"}]})
        assert answer.headers["x-switchman-model"] == "big"
        assert gateway.dispatcher is not old
        assert gateway.dispatcher.health is old.health and gateway.dispatcher.sessions.store is old.sessions.store
        assert gateway.dispatcher.ledger is old.ledger
        assert "server.max_body_bytes changed" in caplog.text and "next restart" in caplog.text

        current = gateway.dispatcher
        path.write_text("routes: {default: {candidates: [nowhere]}}\n")
        with caplog.at_level(logging.INFO, logger="switchman.gateway"):
            assert _run(reloader) is False
        assert "configuration reload failed" in caplog.text and "unknown model 'nowhere'" in caplog.text
        assert gateway.dispatcher is current
        path.unlink()
        assert _run(reloader) is False  # a file that went away: the same
        assert "configuration file not found" in caplog.text
        assert "auto:fresh" in {m["id"] for m in http.get("/v1/models").json()["data"]}


def _run(reloader: ConfigReloader) -> bool:
    import anyio

    return anyio.run(reloader.reload)


def test_settings_read_at_start_are_named_when_a_reload_changes_them(
    setup: tuple[dict[str, Any], Path, Gateway], caplog: pytest.LogCaptureFixture
) -> None:
    data, path, gateway = setup
    with _reloading(gateway, path) as (reloader, http):
        assert http.post("/v1/chat/completions", json={"model": "auto", "messages": ASK}).status_code == 200
        data["server"].update(auth="required", metrics_access="open", circuit_breaker={"failures": 1, "cooldown_s": 5})
        path.write_text(yaml.safe_dump(data))
        with caplog.at_level(logging.INFO, logger="switchman.gateway"):
            assert _run(reloader) is True
        # The running server still lets a request without a key in: the log must not let that pass as applied.
        assert http.post("/v1/chat/completions", json={"model": "auto", "messages": ASK}).status_code == 200
    (line,) = [r.getMessage() for r in caplog.records if "next restart" in r.getMessage()]
    for name in ("server.auth", "server.metrics_access", "server.circuit_breaker"):
        assert name in line


def test_a_redis_url_from_the_environment_is_no_change_at_reload(
    upstream: FakeUpstream, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # `serve --redis-url` (or $SWITCHMAN_REDIS_URL) overrides the file's server.redis_url, for reloads too.
    data = config_data(upstream, f"sqlite:///{tmp_path / 'ledger.sqlite3'}")
    path = tmp_path / "switchman.yaml"
    path.write_text(yaml.safe_dump(data))
    url = "redis://127.0.0.1:6379/15"
    gateway = Gateway.from_config(parse_config(data), base_dir=tmp_path, env={**ENV, "SWITCHMAN_REDIS_URL": url})
    with caplog.at_level(logging.INFO, logger="switchman.gateway"):
        assert _run(ConfigReloader(gateway, path)) is True
    assert "configuration reloaded" in caplog.text
    assert "next restart" not in caplog.text  # the file did not change
    assert gateway.config.server.redis_url == url  # the configuration still says which Redis is in use


def test_metrics_access_changed_by_a_reload_holds_until_the_restart(upstream: FakeUpstream, tmp_path: Path) -> None:
    # The authentication layer is built once: a /metrics opened to any key by a reload is half-opened
    # (the endpoint read the new value, the layer the old), so the whole setting waits for the restart, as logged.
    from switchman.ledger import KeyStore

    url = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    data = config_data(upstream, url)
    path = tmp_path / "switchman.yaml"
    path.write_text(yaml.safe_dump(data))
    store = KeyStore(url)
    try:
        _, secret = store.create("bot")
    finally:
        store.close()
    master = "sk-master-0123456789abcdef"
    gateway = Gateway.from_config(parse_config(data), base_dir=tmp_path, env={**ENV, "SWITCHMAN_MASTER_KEY": master})
    with _reloading(gateway, path) as (reloader, http):
        key = {"authorization": f"Bearer {secret}"}
        assert http.get("/metrics", headers=key).status_code == 403
        data["server"]["metrics_access"] = "keys"
        path.write_text(yaml.safe_dump(data))
        assert _run(reloader) is True
        assert http.get("/metrics", headers=key).status_code == 403
        assert http.get("/metrics", headers={"authorization": f"Bearer {master}"}).status_code == 200


def test_request_limits_apply_at_reload_and_connection_limits_are_named(
    setup: tuple[dict[str, Any], Path, Gateway], caplog: pytest.LogCaptureFixture
) -> None:
    data, path, gateway = setup
    with _reloading(gateway, path) as (reloader, http):
        data["server"]["limits"] = {"max_prompt_chars": 10}
        path.write_text(yaml.safe_dump(data))
        with caplog.at_level(logging.INFO, logger="switchman.gateway"):
            assert _run(reloader) is True
        # Read per request: applied at once, so the log must not say it waits for a restart.
        long = [{"role": "user", "content": "x" * 50}]
        assert http.post("/v1/chat/completions", json={"model": "auto", "messages": long}).status_code == 413
        assert "next restart" not in caplog.text
        data["server"]["limits"] = {"max_prompt_chars": 10, "max_connections": 7}
        path.write_text(yaml.safe_dump(data))
        with caplog.at_level(logging.INFO, logger="switchman.gateway"):
            assert _run(reloader) is True
    (line,) = [r.getMessage() for r in caplog.records if "next restart" in r.getMessage()]
    assert line.startswith("server.limits.max_connections changed")


def test_item_caps_apply_at_reload(setup: tuple[dict[str, Any], Path, Gateway],
                                   caplog: pytest.LogCaptureFixture) -> None:
    """server.limits.max_tools (and the other item caps) are read per request, as max_prompt_chars is."""
    data, path, gateway = setup
    tools = [{"type": "function", "function": {"name": "f"}}] * 2
    body = {"model": "auto", "messages": ASK, "tools": tools}
    with _reloading(gateway, path) as (reloader, http):
        assert http.post("/v1/chat/completions", json=body).status_code == 200
        data["server"]["limits"] = {"max_tools": 1}
        path.write_text(yaml.safe_dump(data))
        with caplog.at_level(logging.INFO, logger="switchman.gateway"):
            assert _run(reloader) is True
        refused = http.post("/v1/chat/completions", json=body)
        assert refused.status_code == 400 and refused.json()["error"]["param"] == "tools", refused.text
    assert "next restart" not in caplog.text


@pytest.mark.anyio
async def test_count_tokens_counts_with_the_dispatcher_that_read_its_body(monkeypatch: pytest.MonkeyPatch) -> None:
    """A reload while the body is read: the count is the decider's whose limits held the body, not the next one's."""
    from types import SimpleNamespace

    from switchman.gateway._dialects import _endpoints

    def dispatcher(tokens: int) -> SimpleNamespace:
        return SimpleNamespace(decider=SimpleNamespace(request=lambda messages, tools=None: SimpleNamespace(
            input_tokens=tokens)))

    gateway = SimpleNamespace(dispatcher=dispatcher(1))

    async def read_request(reading: SimpleNamespace, request: object, *args: object, **kwargs: object,
                           ) -> tuple[dict[str, Any], SimpleNamespace]:
        gateway.dispatcher = dispatcher(2)  # the reload lands while the body is read
        return {"messages": ASK}, SimpleNamespace(body_bytes=10)

    monkeypatch.setattr(_endpoints, "read_request", read_request)
    response = await _endpoints.DialectEndpoints(gateway).count_tokens(None)  # type: ignore[arg-type]
    assert response.body == b'{"input_tokens":1}'
