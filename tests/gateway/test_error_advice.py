"""Errors that say how to fix them: a budget refusal the clients do not retry, a capability gap that names the fix."""

from __future__ import annotations

import asyncio
from pathlib import Path

import anthropic
import httpx
import openai
import pytest
from starlette.testclient import TestClient

from switchman._config import parse_config
from switchman.gateway import Gateway, build_app, default_config_data
from switchman.local import local_available

from .conftest import ASK, TOOLS


def _rows_for(gateway: Gateway, agent: str) -> int:
    assert gateway.ledger is not None
    gateway.ledger.flush_sync(timeout=5)
    return sum(1 for r in gateway.ledger.records() if r.agent == agent)


def test_the_openai_client_does_not_retry_a_budget_refusal(base_url: str, gateway: Gateway) -> None:
    before = _rows_for(gateway, "broke")
    with openai.OpenAI(base_url=base_url, api_key="unused", max_retries=3) as client, \
            pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model="auto", messages=ASK,  # type: ignore[arg-type]
                                       extra_headers={"X-Switchman-Agent": "broke"})
    assert info.value.code == "budget_exceeded" and "budget 'broke' exceeded" in info.value.message
    assert info.value.response.headers["x-should-retry"] == "false"
    assert _rows_for(gateway, "broke") == before + 1  # one request reached the gateway: no retries


def test_the_anthropic_client_does_not_retry_a_budget_refusal(server: str, gateway: Gateway) -> None:
    before = _rows_for(gateway, "broke")
    with anthropic.Anthropic(base_url=server, api_key="unused", max_retries=3) as client, \
            pytest.raises(anthropic.RateLimitError) as info:
        client.messages.create(model="auto", max_tokens=10, messages=[{"role": "user", "content": "hi"}],
                               extra_headers={"X-Switchman-Agent": "broke"})
    assert info.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    assert "budget 'broke' exceeded" in info.value.message
    assert _rows_for(gateway, "broke") == before + 1


def test_a_route_without_the_capability_names_the_models_that_have_it(http: httpx.Client) -> None:
    response = http.post("/v1/chat/completions", json={"model": "auto:plain", "messages": ASK, "tools": TOOLS})
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert message.startswith("no candidate can serve this request (basic: lacks tools).")
    assert "Configured models with tools: big, cheap, claude" in message and "model='big'" in message


@pytest.mark.skipif(not local_available(), reason="the local model is not installed (switchman local install)")
def test_the_local_only_default_says_what_to_add_for_tools(tmp_path: Path) -> None:
    data = default_config_data({})  # no provider key set: the local model alone
    data["server"] = {"ledger_url": f"sqlite:///{tmp_path / 'ledger.sqlite3'}"}
    with TestClient(build_app(Gateway.from_config(parse_config(data), env={}))) as client:
        response = client.post("/v1/chat/completions", json={"model": "auto", "messages": ASK, "tools": TOOLS})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "no_capable_model" and "lacks tools" in error["message"]
    assert "No configured model has tools" in error["message"]
    assert "OPENAI_API_KEY" in error["message"] and "ANTHROPIC_API_KEY" in error["message"]
    assert "`capabilities: [tools]`" in error["message"]


def test_a_provider_key_variable_that_is_not_set_is_named_at_start(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """Forgetting to export the key where `serve` runs gave no sign until each request failed with the upstream's
    401 ("Incorrect API key provided"): the start says which variable is missing, for which provider."""
    config = parse_config({
        "providers": {"openai": {"base_url": "http://127.0.0.1:9/v1", "api_key_env": "SWITCHMAN_TEST_UNSET_KEY"},
                      "other": {"base_url": "http://127.0.0.1:9/v1", "api_key_env": "SWITCHMAN_TEST_SET_KEY"}},
        "models": {"gpt-4o": {"provider": "openai"}, "gpt-4o-mini": {"provider": "other"}},
        "server": {"ledger_url": f"sqlite:///{tmp_path / 'ledger.sqlite3'}"},
    })
    with caplog.at_level("WARNING", logger="switchman.gateway"):
        gateway = Gateway.from_config(config, env={"SWITCHMAN_TEST_SET_KEY": "sk-set"})
    asyncio.run(gateway.aclose())
    warned = [r.getMessage() for r in caplog.records if "SWITCHMAN_TEST_" in r.getMessage()]
    assert len(warned) == 1 and "providers.openai" in warned[0] and "SWITCHMAN_TEST_UNSET_KEY" in warned[0], warned


def test_no_missing_key_warning_when_the_base_url_carries_the_key(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """A key written into base_url (user:password@, or a query like ?api-key=) is a key: warning that the variable
    is unset would send the user looking for a problem that is not there."""
    config = parse_config({
        "providers": {"userinfo": {"base_url": "http://u:secret@127.0.0.1:9/v1", "api_key_env": "SWITCHMAN_TEST_A"},
                      "query": {"base_url": "http://127.0.0.1:9/v1?api-key=secret", "api_key_env": "SWITCHMAN_TEST_B"},
                      "bare": {"base_url": "http://127.0.0.1:9/v1", "api_key_env": "SWITCHMAN_TEST_C"}},
        "models": {"gpt-4o": {"provider": "userinfo"}, "gpt-4o-mini": {"provider": "query"},
                   "gpt-4.1": {"provider": "bare"}},
        "server": {"ledger_url": f"sqlite:///{tmp_path / 'ledger.sqlite3'}"},
    })
    with caplog.at_level("WARNING", logger="switchman.gateway"):
        gateway = Gateway.from_config(config, env={})
    asyncio.run(gateway.aclose())
    warned = [r.getMessage() for r in caplog.records if "SWITCHMAN_TEST_" in r.getMessage()]
    assert len(warned) == 1 and "providers.bare" in warned[0], warned
