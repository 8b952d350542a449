"""The response cache at its edges: what must never be kept, and what a replay must be.

A real gateway on loopback in front of the fake upstream, its cache in memory; each test starts its own
gateway (some need other server settings) and reads the replay as the client would.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson

from switchman._config import parse_config
from switchman.gateway import Gateway, build_app
from switchman.testing import FakeUpstream, forget_prefix, unique_prefix

from .conftest import ENV, MASTER_KEY, ServerThread, config_data, fresh_ledger_url, ledger_row, served_with_key

SHARED_REDIS = "redis://127.0.0.1:6379/0"


@contextmanager
def gateway(upstream: FakeUpstream, tmp_path: Path, **server: Any) -> Iterator[httpx.Client]:
    """A gateway with an in-memory response cache (and these `server` settings), and a client with a virtual key."""
    data = config_data(upstream, fresh_ledger_url(tmp_path))
    data["cache"] = {"enabled": True}
    data["server"].update(server)
    upstream.clear()
    with served_with_key(data) as client:
        yield client


def ask(client: httpx.Client, text: str, **fields: Any) -> httpx.Response:
    body = {"model": "auto", "temperature": 0, "messages": [{"role": "user", "content": text}], **fields}
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    return response


def events(response: httpx.Response) -> list[bytes]:
    """The data of each SSE event of a streamed answer."""
    return [e.removeprefix(b"data: ") for e in response.content.split(b"\n\n") if e]


def test_a_replayed_stream_ends_as_the_original_did_with_sync_durability(
        upstream: FakeUpstream, tmp_path: Path) -> None:
    """With `durability: sync` the stream's last piece is held until the row is committed: it is still kept."""
    with gateway(upstream, tmp_path, durability="sync") as client:
        first = ask(client, "sync stream", stream=True)
        second = ask(client, "sync stream", stream=True)
    assert (first.headers["x-switchman-cache"], second.headers["x-switchman-cache"]) == ("miss", "hit")
    assert events(first)[-1] == b"[DONE]" and second.content == first.content
    assert len(upstream.requests) == 1


def test_a_stream_the_upstream_ended_early_is_not_kept(upstream: FakeUpstream, tmp_path: Path) -> None:
    """An upstream that ends its stream cleanly mid-answer (no finish reason, no [DONE]): not replayed for an hour."""
    with gateway(upstream, tmp_path) as client:
        upstream.inject("end_mid_stream", after_events=3)
        cut = ask(client, "cut short", stream=True)
        again = ask(client, "cut short", stream=True)
    finishes = [orjson.loads(e)["choices"][0]["finish_reason"] for e in events(cut)[:-1]]
    assert finishes == [None] * 3  # the fault as meant: three events, none ends the answer
    assert (cut.headers["x-switchman-cache"], again.headers["x-switchman-cache"]) == ("miss", "miss")
    assert len(upstream.requests) == 2
    assert orjson.loads(events(again)[-2])["choices"][0]["finish_reason"] == "stop"


def test_a_hit_costs_nothing_so_no_budget_refuses_it(upstream: FakeUpstream, tmp_path: Path) -> None:
    """An agent whose budget is spent is refused a paid answer, not a cached one: the hit reserves nothing."""
    with gateway(upstream, tmp_path) as client:
        ask(client, "budget hit")
        body = {"model": "auto", "temperature": 0, "messages": [{"role": "user", "content": "budget hit"}]}
        broke = {"x-switchman-agent": "broke"}
        hit = client.post("/v1/chat/completions", json=body, headers=broke)
        assert hit.status_code == 200, hit.text
        assert hit.headers["x-switchman-cache"] == "hit" and float(hit.headers["x-switchman-cost-usd"]) == 0
        paid = client.post("/v1/chat/completions", json={**body, "temperature": 0.5}, headers=broke)
        assert paid.status_code == 429 and paid.json()["error"]["code"] == "budget_exceeded"
    assert len(upstream.requests) == 1


def test_a_hit_on_a_session_shared_through_redis_is_not_refused_by_a_spent_budget(
        upstream: FakeUpstream, tmp_path: Path) -> None:
    """A session shared through Redis reads its state in the reservation's round trip, so its cache look-up comes
    after the budget's answer: a spent budget's refusal must still give way to a hit, as on every other path."""
    prefix = unique_prefix()
    try:
        with gateway(upstream, tmp_path, redis_url=SHARED_REDIS,
                     redis={"key_prefix": prefix, "timeout_s": 1.0}) as client:
            ask(client, "session budget hit")
            body = {"model": "auto", "temperature": 0, "messages": [{"role": "user", "content": "session budget hit"}]}
            broke = {"x-switchman-agent": "broke", "x-switchman-session": "s-1"}
            hit = client.post("/v1/chat/completions", json=body, headers=broke)
            assert hit.status_code == 200, hit.text
            assert hit.headers["x-switchman-cache"] == "hit" and float(hit.headers["x-switchman-cost-usd"]) == 0
            paid = client.post("/v1/chat/completions", json={**body, "temperature": 0.5}, headers=broke)
            assert paid.status_code == 429 and paid.json()["error"]["code"] == "budget_exceeded"
            streamed = client.post("/v1/chat/completions", json={**body, "stream": True}, headers=broke)
            assert streamed.status_code == 429  # a stream of it was never kept: a paid answer, refused
    finally:
        forget_prefix(SHARED_REDIS, prefix)
    assert len(upstream.requests) == 1


def test_an_answer_a_budget_downgraded_is_kept_as_the_model_s_that_gave_it(
        upstream: FakeUpstream, tmp_path: Path) -> None:
    """thrifty's budget downgrades mid to cheap: cheap's answer is no answer to a request for mid."""
    with gateway(upstream, tmp_path) as client:
        body = {"model": "mid", "temperature": 0, "messages": [{"role": "user", "content": "downgraded"}]}
        down = client.post("/v1/chat/completions", json=body, headers={"x-switchman-agent": "thrifty"})
        assert (down.headers["x-switchman-model"], down.headers["x-switchman-cache"]) == ("cheap", "miss")
        mid = client.post("/v1/chat/completions", json=body)
        assert (mid.headers["x-switchman-model"], mid.headers["x-switchman-cache"]) == ("mid", "miss")
        cheap = client.post("/v1/chat/completions", json={**body, "model": "cheap"})
        assert (cheap.headers["x-switchman-model"], cheap.headers["x-switchman-cache"]) == ("cheap", "hit")
        again = client.post("/v1/chat/completions", json=body, headers={"x-switchman-agent": "thrifty"})
        assert again.headers["x-switchman-cache"] == "hit"


def test_a_fallback_s_answer_is_not_kept_as_the_chosen_model_s(upstream: FakeUpstream, tmp_path: Path) -> None:
    """cheap fails and mid answers: once cheap is back, the same request is cheap's to answer, not mid's replayed."""
    with gateway(upstream, tmp_path, circuit_breaker={"failures": 100, "cooldown_s": 30.0}) as client:
        upstream.inject("server_error", model="cheap", times=None)
        fallback = ask(client, "fall back")
        upstream.clear()
        again = ask(client, "fall back")
    assert fallback.headers["x-switchman-model"] == "mid"
    assert (again.headers["x-switchman-model"], again.headers["x-switchman-cache"]) == ("cheap", "miss")


def test_a_number_spelled_as_a_float_is_the_same_request(upstream: FakeUpstream, tmp_path: Path) -> None:
    """temperature 0.0 is temperature 0 (as JavaScript and many SDKs write it): the same answer, one entry."""
    with gateway(upstream, tmp_path) as client:
        first = ask(client, "spelled", top_p=1)
        second = ask(client, "spelled", top_p=1.0, temperature=0.0)
        other = ask(client, "spelled", top_p=0.5)
    assert [r.headers["x-switchman-cache"] for r in (first, second, other)] == ["miss", "hit", "miss"]


def test_a_hit_a_rate_limit_refuses_is_recorded_as_no_answer(upstream: FakeUpstream, tmp_path: Path) -> None:
    """The cache is looked up before the caller's rpm: a 429 found an entry, but gave none, so its row has no
    hit and no tokens (they would count in the ledger's usage as if answered)."""
    url = fresh_ledger_url(tmp_path)
    data = config_data(upstream, url)
    data["cache"] = {"enabled": True}
    data["agents"]["metered"] = {"rpm": 1}
    upstream.clear()
    built = Gateway.from_config(parse_config(data), env={**ENV, "SWITCHMAN_MASTER_KEY": MASTER_KEY})
    body = {"model": "auto", "temperature": 0, "messages": [{"role": "user", "content": "limited hit"}]}
    with ServerThread(build_app(built)) as base, httpx.Client(
            base_url=base, timeout=30, headers={"authorization": f"Bearer {MASTER_KEY}"}) as client:
        metered = {"x-switchman-agent": "metered"}
        answers = [client.post("/v1/chat/completions", json=body, headers=h) for h in ({}, metered, metered)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert answers[1].headers["x-switchman-cache"] == "hit"
    assert built.ledger is not None
    request_id = answers[2].headers["x-switchman-request-id"]
    refused = ledger_row(built, request_id)
    assert refused is not None and refused.status == "rejected_rate_limit"
    assert (refused.cache, refused.input_tokens, refused.output_tokens) == (None, 0, 0)


def test_a_request_not_to_be_cached_is_looked_up_once(upstream: FakeUpstream, tmp_path: Path,
                                                      monkeypatch: Any) -> None:
    """Most requests (temperature above 0, no opt-in) are not cached: before, each was looked up twice."""
    from switchman.gateway._response_cache import ResponseCache

    keyed: list[bool] = []
    original = ResponseCache._key

    def counted(self: ResponseCache, *args: Any, **kwargs: Any) -> Any:
        key = original(self, *args, **kwargs)
        keyed.append(key is None)
        return key

    monkeypatch.setattr(ResponseCache, "_key", counted)
    with gateway(upstream, tmp_path) as client:
        for stream in (False, True):
            response = ask(client, "warm and varied", temperature=0.7, stream=stream)
            assert response.headers.get("x-switchman-cache") is None
    assert keyed == [True, True]  # one look-up a request, each finding it not to be cached
