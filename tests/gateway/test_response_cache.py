"""The response cache behind a real gateway: what hits, what misses, what a hit costs, streams replayed.

The gateway has a master key and two virtual keys; the cache is in memory, except in the Redis
test, which uses the machine's Redis under a key prefix of its own.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from switchman._config import parse_config
from switchman.gateway import Gateway, build_app
from switchman.ledger import KeyStore
from switchman.testing import FakeUpstream

from .conftest import ENV, MASTER_KEY, TOOLS, ServerThread, config_data, ledger_row

ZERO = {"temperature": 0}


@dataclass
class Cached:
    gateway: Gateway
    url: str
    keys: tuple[str, str]


def start(upstream: FakeUpstream, tmp_path: Path, cache: dict[str, Any]) -> Iterator[Cached]:
    url = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    data = config_data(upstream, url)
    data["cache"] = cache
    data["routes"]["nocache"] = {"candidates": ["cheap"], "strategy": "cheapest", "cache": False}
    store = KeyStore(url)
    keys = (store.create("one")[1], store.create("two")[1])
    store.close()
    gateway = Gateway.from_config(parse_config(data), env={**ENV, "SWITCHMAN_MASTER_KEY": MASTER_KEY})
    with ServerThread(build_app(gateway)) as server:
        yield Cached(gateway, server, keys)


@pytest.fixture(scope="module")
def cached(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cached]:
    yield from start(upstream, tmp_path_factory.mktemp("cache"), {"enabled": True})


@pytest.fixture
def http(cached: Cached, upstream: FakeUpstream) -> Iterator[httpx.Client]:
    upstream.clear()
    with httpx.Client(base_url=cached.url, timeout=30, headers={"authorization": f"Bearer {cached.keys[0]}"}) as c:
        yield c


def chat(http: httpx.Client, *, key: str | None = None, headers: dict[str, str] | None = None,
         **fields: Any) -> httpx.Response:
    body = {"model": "auto", "messages": [{"role": "user", "content": f"cache me {fields.pop('text', '')}"}]}
    headers = dict(headers or {})
    if key is not None:
        headers["authorization"] = f"Bearer {key}"
    response = http.post("/v1/chat/completions", json={**body, **fields}, headers=headers)
    assert response.status_code == 200, response.text
    return response


def test_an_identical_request_hits_and_costs_nothing(cached: Cached, http: httpx.Client,
                                                    upstream: FakeUpstream) -> None:
    first = chat(http, text="identical", **ZERO)
    second = chat(http, text="identical", **ZERO)
    assert (first.headers["x-switchman-cache"], second.headers["x-switchman-cache"]) == ("miss", "hit")
    assert second.content == first.content and len(upstream.requests) == 1
    assert float(first.headers["x-switchman-cost-usd"]) > 0 and float(second.headers["x-switchman-cost-usd"]) == 0
    assert "x-switchman-deployment" not in second.headers
    miss, hit = (ledger_row(cached.gateway, r.headers["x-switchman-request-id"]) for r in (first, second))
    assert (miss.cache, miss.deployment, hit.cache, hit.deployment) == ("miss", "cheap", "hit", None)
    assert hit.cost_usd == 0 and hit.status == "ok" and hit.model == miss.model
    assert (hit.input_tokens, hit.output_tokens) == (miss.input_tokens, miss.output_tokens)
    admin = {"authorization": f"Bearer {MASTER_KEY}"}  # /metrics is the master key's
    assert 'switchman_cache_requests_total{result="hit"}' in http.get("/metrics", headers=admin).text


@pytest.mark.parametrize("change", [
    {"tools": TOOLS},
    {"temperature": 0, "top_p": 0.5},
    {"temperature": 0, "max_tokens": 7},
    {"temperature": 0, "model": "mid"},
])
def test_a_different_request_misses(http: httpx.Client, change: dict[str, Any]) -> None:
    text = uuid.uuid4().hex
    chat(http, text=text, **ZERO)
    other = chat(http, text=text, **{**ZERO, **change})
    assert other.headers["x-switchman-cache"] == "miss"


def test_the_key_is_the_model_chosen_not_the_name_asked(http: httpx.Client) -> None:
    """`auto` and `auto:strict` both choose cheap here: the same request to the same model is the same answer."""
    chat(http, text="routed", **ZERO)
    again = chat(http, text="routed", model="auto:strict", **ZERO)
    assert again.headers["x-switchman-cache"] == "hit" and again.headers["x-switchman-model"] == "cheap"


def test_another_key_misses(cached: Cached, http: httpx.Client, upstream: FakeUpstream) -> None:
    assert chat(http, text="mine", **ZERO).headers["x-switchman-cache"] == "miss"
    assert chat(http, key=cached.keys[1], text="mine", **ZERO).headers["x-switchman-cache"] == "miss"
    assert chat(http, key=cached.keys[1], text="mine", **ZERO).headers["x-switchman-cache"] == "hit"
    assert len(upstream.requests) == 2


def test_only_deterministic_requests_or_an_opt_in(http: httpx.Client, upstream: FakeUpstream) -> None:
    for _ in range(2):  # temperature 0.7 (or none): never cached, and no header says otherwise
        assert "x-switchman-cache" not in chat(http, text="warm", temperature=0.7).headers
        assert "x-switchman-cache" not in chat(http, text="default").headers
    assert len(upstream.requests) == 4
    on = {"x-switchman-cache": "on"}
    assert chat(http, text="warm", temperature=0.7, headers=on).headers["x-switchman-cache"] == "miss"
    assert chat(http, text="warm", temperature=0.7, headers=on).headers["x-switchman-cache"] == "hit"
    assert chat(http, text="warm", temperature=0.2, headers=on).headers["x-switchman-cache"] == "miss"
    assert chat(http, text="warm", temperature=0).headers["x-switchman-cache"] == "miss"


@pytest.mark.parametrize("stream", [False, True])
def test_an_empty_answer_is_not_kept(http: httpx.Client, upstream: FakeUpstream, stream: bool) -> None:
    upstream.set_reply("cheap", "")
    outcomes = [chat(http, text="empty", stream=stream, **ZERO).headers["x-switchman-cache"] for _ in range(2)]
    assert outcomes == ["miss", "miss"] and len(upstream.requests) == 2


def test_per_request_and_per_route_opt_out(http: httpx.Client, upstream: FakeUpstream) -> None:
    chat(http, text="opt-out", **ZERO)
    off = chat(http, text="opt-out", headers={"x-switchman-cache": "off"}, **ZERO)
    assert "x-switchman-cache" not in off.headers
    for _ in range(2):
        assert "x-switchman-cache" not in chat(http, text="route", model="auto:nocache", **ZERO).headers
    assert len(upstream.requests) == 4
    bad = http.post("/v1/chat/completions", json={"model": "auto", "messages": [{"role": "user", "content": "x"}]},
                    headers={"x-switchman-cache": "maybe"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "X-Switchman-Cache"


def test_a_streamed_hit_replays_a_valid_stream(cached: Cached, upstream: FakeUpstream) -> None:
    upstream.clear()
    client = openai.OpenAI(base_url=cached.url + "/v1", api_key=cached.keys[0], max_retries=0)
    texts, outcomes = [], []
    for _ in range(2):
        raw = client.chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": "stream me"}], temperature=0, stream=True,
            stream_options={"include_usage": True})
        outcomes.append(raw.headers["x-switchman-cache"])
        chunks = list(raw.parse())
        texts.append("".join(c.choices[0].delta.content or "" for c in chunks if c.choices))
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert outcomes == ["miss", "hit"] and texts[0] == texts[1] == "Hello from cheap."
    assert len(upstream.requests) == 1
    # The same request not streamed is another entry (its answer is a body, not events).
    plain = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "stream me"}], temperature=0)
    assert plain.headers["x-switchman-cache"] == "miss"
    client.close()


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_clients_hit_too(cached: Cached, upstream: FakeUpstream, stream: bool) -> None:
    import anthropic

    upstream.clear()
    # The opt-in header: this anthropic client sends no temperature.
    client = anthropic.Anthropic(base_url=cached.url, api_key=cached.keys[0], max_retries=0,
                                 default_headers={"x-switchman-cache": "on"})
    outcomes, texts = [], []
    for _ in range(2):
        ask = {"model": "auto", "max_tokens": 50, "messages": [{"role": "user", "content": f"bonjour {stream}"}]}
        if stream:
            with client.messages.stream(**ask) as events:
                texts.append(events.get_final_text())
                outcomes.append(events.response.headers["x-switchman-cache"])
        else:
            raw = client.messages.with_raw_response.create(**ask)
            outcomes.append(raw.headers["x-switchman-cache"])
            texts.append(raw.parse().content[0].text)
    client.close()
    assert outcomes == ["miss", "hit"] and texts == ["Hello from cheap."] * 2 and len(upstream.requests) == 1


def test_a_redis_backend_is_shared(upstream: FakeUpstream, tmp_path: Path) -> None:
    """Two gateways on one Redis: an answer one of them cached is a hit on the other."""
    prefix = f"switchman-test:{uuid.uuid4().hex}:"
    options = {"enabled": True, "backend": "redis", "redis_url": "redis://127.0.0.1:6379/0", "key_prefix": prefix,
               "shared_across_keys": True, "timeout_s": 1.0}
    upstream.clear()
    try:
        outcomes = []
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            for gateway in start(upstream, tmp_path / name, options):
                with httpx.Client(base_url=gateway.url, timeout=30) as client:
                    response = chat(client, key=gateway.keys[0], text="shared", **ZERO)
                    outcomes.append(response.headers["x-switchman-cache"])
        assert outcomes == ["miss", "hit"] and len(upstream.requests) == 1
    finally:
        import redis

        server = redis.Redis.from_url("redis://127.0.0.1:6379/0")
        found = list(server.scan_iter(prefix + "*"))
        assert len(found) == 1 and found[0].decode().startswith(prefix + "shared:")
        server.delete(*found)
        server.close()
