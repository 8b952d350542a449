"""Callers' rate limits behind a real gateway: a request refused by one limit takes nothing from another.

The in-process limiter, and the machine's Redis under a key prefix of its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from switchman._config import parse_config
from switchman.gateway import Gateway, build_app
from switchman.testing import FakeUpstream, forget_prefix, unique_prefix

from .conftest import ENV, MASTER_KEY, ServerThread, config_data, fresh_ledger_url, served_with_key

SHARED_REDIS = "redis://127.0.0.1:6379/0"


@pytest.fixture(params=["memory", "redis"])
def redis_server(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """Server settings: none (buckets in the process), or Redis under a fresh prefix."""
    if request.param == "memory":
        yield {}
        return
    prefix = unique_prefix()
    yield {"redis_url": SHARED_REDIS, "redis": {"key_prefix": prefix, "timeout_s": 1.0}}
    forget_prefix(SHARED_REDIS, prefix)


def test_a_request_an_agent_limit_refuses_takes_nothing_from_its_key_s(
        upstream: FakeUpstream, tmp_path: Path, redis_server: dict[str, Any]) -> None:
    data = config_data(upstream, fresh_ledger_url(tmp_path))
    data["server"].update({"key_limits": {"rpm": 3}, **redis_server})
    data["agents"]["metered"] = {"rpm": 1}
    upstream.clear()
    body = {"model": "auto", "messages": [{"role": "user", "content": "limits"}]}
    with served_with_key(data) as client:
        agent = {"x-switchman-agent": "metered"}
        first = client.post("/v1/chat/completions", json=body, headers=agent)
        refused = client.post("/v1/chat/completions", json=body, headers=agent)
        plain = client.post("/v1/chat/completions", json=body)
    assert (first.status_code, refused.status_code, plain.status_code) == (200, 429, 200)
    assert refused.headers["x-ratelimit-limit-requests"] == "1"  # the agent's limit refused it
    # The key's 3 a minute: the first request took one, the refused one none.
    assert plain.headers["x-ratelimit-limit-requests"] == "3"
    assert plain.headers["x-ratelimit-remaining-requests"] == "1"


def _metered_gateway(upstream: FakeUpstream, tmp_path: Path, server: dict[str, Any],
                     limits: dict[str, int]) -> Gateway:
    """A gateway (master key set, these server settings) whose agent "metered" has these limits."""
    url = fresh_ledger_url(tmp_path)
    data = config_data(upstream, url)
    data["server"].update(server)
    data["agents"]["metered"] = limits
    upstream.clear()
    return Gateway.from_config(parse_config(data), env={**ENV, "SWITCHMAN_MASTER_KEY": MASTER_KEY})


@contextmanager
def _as_metered(built: Gateway) -> Iterator[httpx.Client]:
    """A client of `built` served on loopback, calling as the master key on behalf of agent "metered"."""
    with ServerThread(build_app(built)) as base, httpx.Client(
            base_url=base, timeout=30, headers={"authorization": f"Bearer {MASTER_KEY}",
                                                "x-switchman-agent": "metered"}) as client:
        yield client


def test_a_long_wait_is_a_plain_number_of_seconds_never_shorter(
        upstream: FakeUpstream, tmp_path: Path, redis_server: dict[str, Any]) -> None:
    """A request far over an agent's tpm leaves its bucket in debt for an hour: retry-after says so, as digits."""
    built = _metered_gateway(upstream, tmp_path, redis_server, {"tpm": 100})
    body = {"model": "auto", "max_tokens": 6000, "messages": [{"role": "user", "content": "debt"}]}
    with _as_metered(built) as client:
        first = client.post("/v1/chat/completions", json=body)
        refused = client.post("/v1/chat/completions", json=body)
    assert (first.status_code, refused.status_code) == (200, 429)
    retry_after = refused.headers["retry-after"]
    assert retry_after.replace(".", "", 1).isdigit(), retry_after  # no "3.66e+03"
    # (100 tokens wanted + ~6000 owed) at 100 a minute: about an hour, and never a moment less.
    assert 3600 <= float(retry_after) <= 3700


def test_a_bucket_in_debt_on_redis_outlives_its_debt(upstream: FakeUpstream, tmp_path: Path) -> None:
    """Redis forgets a bucket left alone (it is full again): never before it is, or a debt would be forgiven."""
    import redis

    prefix = unique_prefix()
    built = _metered_gateway(upstream, tmp_path, {"redis_url": SHARED_REDIS,
                                                  "redis": {"key_prefix": prefix, "timeout_s": 1.0}},
                             {"rpm": 10, "tpm": 100})
    body = {"model": "auto", "max_tokens": 6000, "messages": [{"role": "user", "content": "debt"}]}
    server = redis.Redis.from_url(SHARED_REDIS)
    try:
        with _as_metered(built) as client:
            first = client.post("/v1/chat/completions", json=body)
        assert first.status_code == 200
        full_in = first.headers["x-ratelimit-reset-tokens"]  # e.g. "1h1m0s"
        hours, _, rest = full_in.rpartition("h")
        minutes = int(hours or 0) * 60 + int(rest.partition("m")[0])
        [bucket] = [k for k in server.scan_iter(prefix + "*") if b"ratelimit" in k]
        assert server.ttl(bucket) >= minutes * 60
    finally:
        server.close()
        forget_prefix(SHARED_REDIS, prefix)


def test_retry_after_is_whole_seconds_rounded_up_and_the_precise_wait_in_ms(
        upstream: FakeUpstream, tmp_path: Path, redis_server: dict[str, Any]) -> None:
    """RFC 9110's delay-seconds is digits only (urllib3's Retry raises on "0.99"); retry-after-ms keeps the rest."""
    from urllib3.util.retry import Retry

    built = _metered_gateway(upstream, tmp_path, redis_server, {"rpm": 1})  # the second request waits < a minute
    body = {"model": "auto", "messages": [{"role": "user", "content": "soon"}]}
    with _as_metered(built) as client:
        first = client.post("/v1/chat/completions", json=body)
        refused = client.post("/v1/chat/completions", json=body)
    assert (first.status_code, refused.status_code) == (200, 429)
    seconds = refused.headers["retry-after"]
    assert Retry().parse_retry_after(seconds) == 60  # a real client reads it (and waits no less than asked)
    millis = int(refused.headers["retry-after-ms"])
    assert 30_000 < millis <= 60_000 and int(seconds) == -(-millis // 1000)
