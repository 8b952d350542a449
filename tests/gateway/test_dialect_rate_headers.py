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
from server_support import ServerThread

from switchman._config import parse_config
from switchman.gateway import Gateway, build_app
from switchman.testing import FakeUpstream

from .conftest import ENV, config_data

RPM, TPM = 3, 100_000  # refilled by one request every 20 s: a test's few requests see it fall by one each
REFILL_S = 60 / RPM  # a request's share of the requests bucket: 20 s
LATE_S = 1.5  # how late the slow upstream answers
AGENT = {"x-switchman-agent": "metered"}
_DURATION = re.compile(r"^(\d+ms|\d+(\.\d+)?s|(\d+h)?\d+m\d+s)$")  # OpenAI's reset: 20ms, 1.5s, 6m0s, 1h2m3s
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
    # When the requests bucket is full again: a refill for each request taken, counted from when this one was sent
    # (the time it was admitted; the previous requests' refill began a little earlier, the header rounds up).
    full = sent_at + (RPM - remaining) * REFILL_S
    assert full - 1 <= _reset_at(headers["anthropic-ratelimit-requests-reset"]) <= full + 1
    # The tokens bucket: its few hundred tokens come back within a second.
    assert sent_at <= _reset_at(headers["anthropic-ratelimit-tokens-reset"]) <= sent_at + 2
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
    body = refused.value.body
    assert isinstance(body, dict) and body == {"type": "error", "error": {"type": "rate_limit_error",
                                                                           "message": body["error"]["message"]}}
    # RFC 9110 delay-seconds (what the anthropic client waits on), and the precise wait it reads first.
    assert headers["retry-after"].isdigit() and 1 <= int(headers["retry-after"]) <= 20
    assert 0 < int(headers["retry-after-ms"]) <= 20_000
    assert headers["anthropic-ratelimit-requests-limit"] == str(RPM)
    assert headers["anthropic-ratelimit-requests-remaining"] == "0"
    # Full again when the RPM requests' refills are done: sent right after the last of them.
    full = sent_at + RPM * REFILL_S
    assert full - 2 <= _reset_at(headers["anthropic-ratelimit-requests-reset"]) <= full + 1
    assert not [name for name in headers if name.startswith("x-ratelimit-")]


@pytest.fixture
def slow(upstream: FakeUpstream, metered: str) -> Iterator[str]:
    """The metered gateway in front of an upstream that answers LATE_S late."""
    upstream.inject("latency", times=None, seconds=LATE_S)
    try:
        yield metered
    finally:
        upstream.clear()


def _seconds(duration: str) -> float:
    """OpenAI's reset duration in seconds."""
    assert _DURATION.match(duration), duration
    if duration.endswith("ms"):
        return int(duration[:-2]) / 1000
    hours, _, rest = duration.rstrip("s").rpartition("h")
    minutes, _, seconds = rest.rpartition("m")
    return int(hours or 0) * 3600 + int(minutes or 0) * 60 + float(seconds)


def test_an_anthropic_reset_counts_from_when_the_request_was_admitted_not_answered(slow: str) -> None:
    with anthropic.Anthropic(base_url=slow, api_key="unused", max_retries=0, default_headers=AGENT) as claude:
        sent_at = time.time()
        raw = claude.messages.with_raw_response.create(**_ask())
        assert time.time() - sent_at >= LATE_S  # (the answer was late)
    reset = _reset_at(raw.headers["anthropic-ratelimit-requests-reset"])
    assert sent_at + REFILL_S - 1 <= reset <= sent_at + REFILL_S + 1, (sent_at, reset)


@pytest.mark.parametrize("api", ["chat", "responses"])
def test_an_openai_reset_is_what_is_left_of_it_when_the_late_answer_comes(slow: str, api: str) -> None:
    with openai.OpenAI(base_url=slow + "/v1", api_key="unused", max_retries=0, default_headers=AGENT) as client:
        sent_at = time.time()
        if api == "chat":
            raw: Any = client.chat.completions.with_raw_response.create(
                model="auto", messages=[{"role": "user", "content": "hi"}])
        else:
            raw = client.responses.with_raw_response.create(model="auto", input="hi")
        answered_in = time.time() - sent_at
        assert answered_in >= LATE_S
    reset = _seconds(raw.headers["x-ratelimit-reset-requests"])
    assert REFILL_S - answered_in - 0.1 <= reset <= REFILL_S - LATE_S + 0.1, (answered_in, reset)
