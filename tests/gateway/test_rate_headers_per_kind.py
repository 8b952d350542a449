"""A key's limit and an agent's limit of different kinds both show: the answer's headers describe, for requests and
for tokens separately, the limit with the least left (chat completions and /v1/messages)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from server_support import ServerThread

from switchman._config import parse_config
from switchman.gateway import Gateway, build_app
from switchman.ledger import KeyStore
from switchman.testing import FakeUpstream

from .conftest import ENV, MASTER_KEY, config_data

ASK = [{"role": "user", "content": "hi"}]


@pytest.fixture
def keyed(upstream: FakeUpstream, tmp_path: Path) -> Iterator[httpx.Client]:
    """A client with a virtual key (every key: 600 requests a minute) calling as agent "metered" (1000 tokens)."""
    url = f"sqlite:///{tmp_path / f'{uuid.uuid4().hex}.sqlite3'}"
    data = config_data(upstream, url)
    data["server"]["key_limits"] = {"rpm": 600}
    data["agents"]["metered"] = {"tpm": 1000}
    store = KeyStore(url)
    key = store.create("one")[1]
    store.close()
    upstream.clear()
    built = Gateway.from_config(parse_config(data), env={**ENV, "SWITCHMAN_MASTER_KEY": MASTER_KEY})
    with ServerThread(build_app(built)) as base, httpx.Client(
            base_url=base, timeout=30, headers={"authorization": f"Bearer {key}", "x-switchman-agent": "metered"}
    ) as client:
        yield client


def test_a_key_s_rpm_and_an_agent_s_tpm_both_show_on_chat(keyed: httpx.Client) -> None:
    answer = keyed.post("/v1/chat/completions", json={"model": "auto", "messages": ASK, "max_tokens": 50})
    assert answer.status_code == 200, answer.text
    headers = answer.headers
    assert headers["x-ratelimit-limit-requests"] == "600", dict(headers)  # the key's
    assert headers["x-ratelimit-remaining-requests"] == "599"
    assert headers["x-ratelimit-reset-requests"]
    assert headers["x-ratelimit-limit-tokens"] == "1000"  # the agent's
    assert 0 < int(headers["x-ratelimit-remaining-tokens"]) < 1000
    assert headers["x-ratelimit-reset-tokens"]


def test_a_key_s_rpm_and_an_agent_s_tpm_both_show_on_messages(keyed: httpx.Client) -> None:
    answer = keyed.post("/v1/messages", json={"model": "auto", "messages": ASK, "max_tokens": 50})
    assert answer.status_code == 200, answer.text
    headers = answer.headers
    assert headers["anthropic-ratelimit-requests-limit"] == "600", dict(headers)
    assert headers["anthropic-ratelimit-requests-remaining"] == "599"
    assert headers["anthropic-ratelimit-requests-reset"]
    assert headers["anthropic-ratelimit-tokens-limit"] == "1000"
    assert 0 < int(headers["anthropic-ratelimit-tokens-remaining"]) < 1000
    assert headers["anthropic-ratelimit-tokens-reset"]
