"""A key's limit and an agent's limit of different kinds both show: the answer's headers describe, for requests and
for tokens separately, the limit with the least left (chat completions and /v1/messages)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from switchman.testing import FakeUpstream

from .conftest import config_data, fresh_ledger_url, served_with_key

ASK = [{"role": "user", "content": "hi"}]


@pytest.fixture
def keyed(upstream: FakeUpstream, tmp_path: Path) -> Iterator[httpx.Client]:
    """A client with a virtual key (every key: 600 requests a minute) calling as agent "metered" (1000 tokens)."""
    data = config_data(upstream, fresh_ledger_url(tmp_path))
    data["server"]["key_limits"] = {"rpm": 600}
    data["agents"]["metered"] = {"tpm": 1000}
    upstream.clear()
    with served_with_key(data, {"x-switchman-agent": "metered"}) as client:
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
