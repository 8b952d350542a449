"""A caller's rate limit on the other APIs, read by their own clients on a real server on loopback: /v1/responses
and /v1/embeddings carry OpenAI's x-ratelimit-* (as chat completions do), /v1/messages Anthropic's
anthropic-ratelimit-* (an RFC 3339 reset time), streamed or not; a /v1/messages 429 says when to retry."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from switchman._config import parse_config
from switchman.gateway import Gateway, build_app
from switchman.testing import FakeUpstream

from .conftest import ENV, ServerThread, config_data

RPM, TPM = 3, 100_000  # refilled by one request every 20 s: a test's few requests see it fall by one each
AGENT = {"x-switchman-agent": "metered"}
_DURATION = re.compile(r"^(\d+ms|\d+(\.\d+)?s|\d+m\d+s)$")  # OpenAI's reset: 20ms, 1.5s, 6m0s
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


@pytest.fixture
def metered(upstream: FakeUpstream, tmp_path: Path) -> Iterator[str]:
    """A gateway of its own (fresh buckets) whose agent "metered" may send RPM requests and TPM tokens a minute."""
    data = config_data(upstream, f"sqlite:///{tmp_path / 'ledger.sqlite3'}")
    data["agents"]["metered"] = {"rpm": RPM, "tpm": TPM}
    upstream.clear()
    with ServerThread(build_app(Gateway.from_config(parse_config(data), env=ENV))) as url:
        yield url


@pytest.fixture
def client(metered: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=metered + "/v1", api_key="unused", max_retries=0, default_headers=AGENT) as client:
        yield client


@pytest.fixture
def claude(metered: str) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=metered, api_key="unused", max_retries=0, default_headers=AGENT) as client:
        yield client


def _assert_openai(headers: Any, remaining: int) -> None:
    assert headers["x-ratelimit-limit-requests"] == str(RPM), dict(headers)
    assert headers["x-ratelimit-remaining-requests"] == str(remaining)
    assert headers["x-ratelimit-limit-tokens"] == str(TPM)
    assert 0 < int(headers["x-ratelimit-remaining-tokens"]) < TPM
    assert _DURATION.match(headers["x-ratelimit-reset-requests"]) and _DURATION.match(headers["x-ratelimit-reset-tokens"])
    assert not [name for name in headers if name.startswith("anthropic-ratelimit-")]


def _reset_at(value: str) -> float:
    assert _RFC3339.match(value), value
    return datetime.fromisoformat(value).astimezone(UTC).timestamp()


def _assert_anthropic(headers: Any, remaining: int, sent_at: float) -> None:
    assert headers["anthropic-ratelimit-requests-limit"] == str(RPM), dict(headers)
    assert headers["anthropic-ratelimit-requests-remaining"] == str(remaining)
    assert headers["anthropic-ratelimit-tokens-limit"] == str(TPM)
    assert 0 < int(headers["anthropic-ratelimit-tokens-remaining"]) < TPM
    # When the bucket is full again: after the request was sent, within the minute a full bucket takes (+ rounding).
    for kind in ("requests", "tokens"):
        assert sent_at - 1 <= _reset_at(headers[f"anthropic-ratelimit-{kind}-reset"]) <= time.time() + 61
    assert not [name for name in headers if name.startswith("x-ratelimit-")]


def test_responses_carry_openai_s_rate_limit_headers(client: openai.OpenAI) -> None:
    for remaining in (RPM - 1, RPM - 2):
        raw = client.responses.with_raw_response.create(model="auto", input="hi")
        assert raw.parse().output_text
        _assert_openai(raw.headers, remaining)


def test_a_responses_stream_carries_openai_s_rate_limit_headers(client: openai.OpenAI) -> None:
    for remaining in (RPM - 1, RPM - 2):
        with client.responses.with_streaming_response.create(model="auto", input="hi", stream=True) as response:
            _assert_openai(response.headers, remaining)
            assert [event.type for event in response.parse()][-1] == "response.completed"


def test_embeddings_carry_openai_s_rate_limit_headers(client: openai.OpenAI) -> None:
    for remaining in (RPM - 1, RPM - 2):
        raw = client.embeddings.with_raw_response.create(model="text-embedding-3-small", input="hi")
        assert raw.parse().data
        _assert_openai(raw.headers, remaining)


def _ask(**extra: Any) -> dict[str, Any]:
    return {"model": "auto", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}], **extra}


def test_messages_carry_anthropic_s_rate_limit_headers(claude: anthropic.Anthropic) -> None:
    for remaining in (RPM - 1, RPM - 2):
        sent_at = time.time()
        raw = claude.messages.with_raw_response.create(**_ask())
        assert raw.parse().content
        _assert_anthropic(raw.headers, remaining, sent_at)


def test_a_messages_stream_carries_anthropic_s_rate_limit_headers(claude: anthropic.Anthropic) -> None:
    for remaining in (RPM - 1, RPM - 2):
        sent_at = time.time()
        with claude.messages.with_streaming_response.create(**_ask(stream=True)) as response:
            _assert_anthropic(response.headers, remaining, sent_at)
            assert [event.type for event in response.parse()][-1] == "message_stop"


def test_a_messages_429_says_when_to_retry_in_anthropic_s_spelling(claude: anthropic.Anthropic) -> None:
    for _ in range(RPM):
        claude.messages.create(**_ask())
    sent_at = time.time()
    with pytest.raises(anthropic.RateLimitError) as refused:
        claude.messages.create(**_ask())
    headers = refused.value.response.headers
    assert refused.value.body == {"type": "error", "error": {"type": "rate_limit_error",
                                                              "message": refused.value.body["error"]["message"]}}
    # RFC 9110 delay-seconds (what the anthropic client waits on), and the precise wait it reads first.
    assert headers["retry-after"].isdigit() and 1 <= int(headers["retry-after"]) <= 20
    assert 0 < int(headers["retry-after-ms"]) <= 20_000
    assert headers["anthropic-ratelimit-requests-limit"] == str(RPM)
    assert headers["anthropic-ratelimit-requests-remaining"] == "0"
    assert sent_at - 1 <= _reset_at(headers["anthropic-ratelimit-requests-reset"]) <= time.time() + 61
    assert not [name for name in headers if name.startswith("x-ratelimit-")]
