"""POST /v1/feedback: scores land in the ledger; bad input is a 4xx in OpenAI's format, never a 500."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from switchman._config import parse_config
from switchman._router import Router
from switchman import InvalidRequestError
from switchman.gateway import Gateway, build_app
from switchman.ledger import LedgerRecord
from switchman.testing import FakeUpstream

from .conftest import ENV, ServerThread, config_data

ASK = [{"role": "user", "content": "What is the capital of France?"}]


def _chat(http: httpx.Client) -> str:
    response = http.post("/v1/chat/completions", json={"model": "auto", "messages": ASK})
    assert response.status_code == 200, response.text
    return response.headers["x-switchman-request-id"]


def _error(response: httpx.Response, status: int, code: str, param: str | None = None) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == code
    if param is not None:
        assert error["param"] == param


def test_scores_and_thumbs_are_stored(http: httpx.Client, gateway: Gateway,
                                      ledger_record: Callable[[str], LedgerRecord]) -> None:
    first, second = _chat(http), _chat(http)
    response = http.post("/v1/feedback", json={"request_id": first, "score": 0.25, "comment": "too vague"})
    assert response.status_code == 200, response.text
    assert response.json() == {"object": "feedback", "request_id": first, "score": 0.25}
    assert http.post("/v1/feedback", json={"request_id": second, "thumbs": "up"}).status_code == 200
    assert http.post("/v1/feedback", json={"request_id": second, "thumbs": "down"}).status_code == 200
    assert gateway.ledger is not None
    assert gateway.ledger.feedback(first) == [(0.25, "too vague")]
    assert gateway.ledger.feedback(second) == [(1.0, None), (0.0, None)]
    assert gateway.ledger.feedback_scores()[second] == 0.0  # the latest score wins
    assert ledger_record(first).prompt is None  # prompts are kept only with server.store_prompts


@pytest.mark.parametrize(
    ("body", "status", "code", "param"),
    [
        ({"request_id": "no-such-request", "score": 1}, 404, "request_not_found", "request_id"),
        ({"request_id": "x", "score": 1.5}, 400, "invalid_value", "score"),
        ({"request_id": "x", "score": -0.1}, 400, "invalid_value", "score"),
        ({"request_id": "x", "score": "high"}, 400, "invalid_value", "score"),
        ({"request_id": "x", "score": True}, 400, "invalid_value", "score"),
        ({"request_id": "x"}, 400, "invalid_value", "score"),
        ({"request_id": "x", "score": 1, "thumbs": "up"}, 400, "invalid_value", "score"),
        ({"request_id": "x", "thumbs": "sideways"}, 400, "invalid_value", "thumbs"),
        ({"request_id": "", "score": 1}, 400, "invalid_value", "request_id"),
        ({"request_id": 7, "score": 1}, 400, "invalid_value", "request_id"),
        ({"request_id": "x", "score": 1, "comment": 5}, 400, "invalid_value", "comment"),
        ([1, 2], 400, "invalid_type", None),
    ],
)
def test_bad_feedback_is_a_4xx(http: httpx.Client, body: object, status: int, code: str, param: str | None) -> None:
    _error(http.post("/v1/feedback", json=body), status, code, param)


def test_non_json_and_nan_are_400(http: httpx.Client) -> None:
    _error(http.post("/v1/feedback", content=b"{nope"), 400, "invalid_json")
    _error(http.post("/v1/feedback", content=b'{"request_id": "x", "score": NaN}'), 400, "invalid_json")
    _error(http.get("/v1/feedback"), 405, "method_not_allowed")


def test_feedback_right_after_the_answer_finds_the_queued_record(upstream: FakeUpstream, tmp_path: Path) -> None:
    # A long flush interval keeps the record in the queue: the endpoint must flush before it says 404.
    data = config_data(upstream, f"sqlite:///{tmp_path / 'ledger.sqlite3'}")
    gateway = Gateway.from_config(parse_config({**data, "server": {**data["server"], "store_prompts": True}}),
                                  env=ENV)
    assert gateway.ledger is not None
    gateway.ledger._flush_interval = 30.0
    with ServerThread(build_app(gateway)) as url, httpx.Client(base_url=url, timeout=30) as http:
        request_id = _chat(http)
        assert http.post("/v1/feedback", json={"request_id": request_id, "score": 1}).status_code == 200
        record = gateway.ledger.find(request_id)
    assert record is not None and record.prompt == "What is the capital of France?"


def test_the_sdk_stores_feedback_too(upstream: FakeUpstream, tmp_path: Path) -> None:
    from switchman.ledger import Ledger

    url = f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    ledger = Ledger(url)
    ledger.record(LedgerRecord(request_id="earlier", model="cheap"))
    ledger.close_sync()
    router = Router(parse_config(config_data(upstream, url)))
    router.feedback("earlier", 0.75, "fine")
    with pytest.raises(InvalidRequestError) as raised:
        router.feedback("unknown", 1.0)
    assert raised.value.status == 404
    with pytest.raises(InvalidRequestError):
        router.feedback("earlier", 2.0)
    check = Ledger(url)
    assert check.feedback("earlier") == [(0.75, "fine")]
    check.close_sync()


def _online_route_data(upstream: FakeUpstream, tmp_path: Path, trained: object) -> dict[str, Any]:
    """The configuration with one default route, "online": the trained router over cheap and big, learning online."""
    router_file = trained.save(tmp_path / "r.safetensors")  # type: ignore[attr-defined]
    data = config_data(upstream, f"sqlite:///{tmp_path / 'ledger.sqlite3'}")
    data["routes"] = {"online": {"candidates": ["cheap", "big"], "strategy": "learned", "router": str(router_file),
                                 "aliases": {"cheap-model": "cheap", "strong-model": "big"},
                                 "online": {"enabled": True, "exploration": 0.1, "clusters": 2}}}
    data["default_route"] = "online"
    return data


def test_feedback_moves_an_online_routes_counts(upstream: FakeUpstream, tmp_path: Path,
                                                math_greeting_router: object) -> None:
    from switchman.learn._online import OnlineStrategy

    data = _online_route_data(upstream, tmp_path, math_greeting_router)
    gateway = Gateway.from_config(parse_config(data), env=ENV)
    with ServerThread(build_app(gateway)) as url, httpx.Client(base_url=url, timeout=30) as http:
        request_id = _chat(http)
        strategy = gateway.decider.strategy("online")
        assert isinstance(strategy, OnlineStrategy)
        before = strategy.counts.beta.sum()
        assert http.post("/v1/feedback", json={"request_id": request_id, "thumbs": "down"}).status_code == 200
        assert strategy.counts.beta.sum() == pytest.approx(before + 1.0)


def test_thumbs_down_escalates_the_sessions_next_turn(http: httpx.Client) -> None:
    headers = {"X-Switchman-Session": "feedback-session-1"}
    first = http.post("/v1/chat/completions", json={"model": "auto", "messages": ASK}, headers=headers)
    assert first.headers["x-switchman-model"] == "cheap"
    request_id = first.headers["x-switchman-request-id"]
    assert http.post("/v1/feedback", json={"request_id": request_id, "thumbs": "down"}).status_code == 200
    messages = [*ASK, {"role": "assistant", "content": "Paris."}, {"role": "user", "content": "Are you sure?"}]
    second = http.post("/v1/chat/completions", json={"model": "auto", "messages": messages}, headers=headers)
    assert second.headers["x-switchman-model"] == "mid"
    assert "negative feedback" in second.headers["x-switchman-route-reason"]


def test_online_counts_are_shared_by_replicas_on_redis(upstream: FakeUpstream, tmp_path: Path,
                                                       math_greeting_router: object) -> None:
    """Feedback posted to one gateway moves the other's counts (both on one Redis and one ledger)."""
    from switchman.learn import OnlineStrategy
    from switchman.testing import forget_prefix, unique_prefix

    data = _online_route_data(upstream, tmp_path, math_greeting_router)
    prefix = unique_prefix()
    data["server"].update({"redis_url": "redis://127.0.0.1:6379/0", "redis": {"key_prefix": prefix, "timeout_s": 0.5}})
    gateways = [Gateway.from_config(parse_config(data), env=ENV) for _ in range(2)]
    try:
        with ServerThread(build_app(gateways[0])) as one, ServerThread(build_app(gateways[1])) as two, \
                httpx.Client(base_url=one, timeout=30) as first, httpx.Client(base_url=two, timeout=30) as second:
            other = gateways[1].decider.strategy("online")
            assert isinstance(other, OnlineStrategy)
            before = other.counts.beta.sum()
            for _ in range(3):
                request_id = _chat(first)
                assert first.post("/v1/feedback", json={"request_id": request_id, "thumbs": "down"}).status_code == 200
            deadline = time.monotonic() + 10
            while other.counts.beta.sum() < before + 3.0 - 1e-9 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert other.counts.beta.sum() == pytest.approx(before + 3.0)  # learned from replica one's feedback
            assert second.get("/health").status_code == 200
    finally:
        forget_prefix("redis://127.0.0.1:6379/0", prefix)
