"""A database that hangs instead of refusing: requests keep being served, the ledger keeps queueing,
authentication serves from the last good key set, and everything catches up when the database is back."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from hanging_server import HangingServer
from pg_support import PG_HOST, PG_PORT
from security_support import (
    ASK,
    ENV,
    MASTER_KEY,
    config_data,
    running_gateway,
    wait_until,
)

from switchman.gateway import _feedback
from switchman.ledger import KeyStore, Ledger
from switchman.testing import FakeUpstream

MASTER_ENV = {**ENV, "SWITCHMAN_MASTER_KEY": MASTER_KEY}


def chat(http: httpx.Client, key: str | None) -> tuple[int, float]:
    started = time.perf_counter()
    response = http.post("/v1/chat/completions", json={"model": "auto", "messages": ASK},
                         headers={"authorization": f"Bearer {key}"} if key else {})
    return response.status_code, time.perf_counter() - started


@pytest.fixture
def quick_feedback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_feedback, "FEEDBACK_TIMEOUT_S", 1.0)


@pytest.fixture
def hanging() -> Iterator[HangingServer]:
    server = HangingServer()
    yield server
    server.close()


def test_a_database_that_never_answers_does_not_stall_serving(upstream: FakeUpstream, hanging: HangingServer,
                                                             quick_feedback: None) -> None:
    url = f"postgresql://postgres@127.0.0.1:{hanging.port}/test"
    started = time.monotonic()
    with running_gateway(config_data(upstream, url), MASTER_ENV) as (gateway, server), \
            httpx.Client(base_url=server.url, timeout=30) as http:
        assert time.monotonic() - started < 10  # startup does not wait for the database
        answers = [chat(http, MASTER_KEY) for _ in range(30)]
        assert [status for status, _ in answers] == [200] * 30
        assert max(seconds for _, seconds in answers) < 2.0
        assert chat(http, None)[0] == 401  # no key set could be read: authentication stays on
        assert http.get("/health").status_code == 200
        feedback = http.post("/v1/feedback", json={"request_id": "x", "score": 1},
                             headers={"authorization": f"Bearer {MASTER_KEY}"})
        assert feedback.status_code == 503 and feedback.json()["error"]["code"] == "ledger_unavailable"
        assert gateway.ledger is not None and gateway.ledger.stats.queued >= 30  # kept, to be written later
        assert hanging.accepted >= 1
        gateway.ledger.close_sync(timeout=0.5)  # the database never comes back: give up at shutdown


def test_a_database_that_hangs_mid_flight_and_comes_back(upstream: FakeUpstream, pg_url: str,
                                                        quick_feedback: None) -> None:
    store = KeyStore(pg_url)
    info, secret = store.create("bot")
    proxy = HangingServer(target=(PG_HOST, PG_PORT))
    via_proxy = pg_url.replace(f":{PG_PORT}/", f":{proxy.port}/")
    try:
        data = config_data(upstream, via_proxy, key_refresh_s=0.3)
        with running_gateway(data, MASTER_ENV) as (gateway, server), \
                httpx.Client(base_url=server.url, timeout=30) as http:
            assert chat(http, secret)[0] == 200
            assert gateway.ledger is not None
            gateway.ledger.flush_sync(timeout=10)
            proxy.hang()
            store.revoke(info.id)  # straight to the database: the gateway cannot see it while it hangs
            answers = [chat(http, secret) for _ in range(20)]
            assert [status for status, _ in answers] == [200] * 20  # the last good key set serves
            assert max(seconds for _, seconds in answers) < 2.0
            assert http.get("/health").status_code == 200
            feedback = http.post("/v1/feedback", json={"request_id": "x", "score": 1},
                                 headers={"authorization": f"Bearer {MASTER_KEY}"})
            assert feedback.status_code == 503
            wait_until(lambda: gateway.ledger.stats.queued >= 20, what="the rows to queue")
            proxy.heal()
            wait_until(lambda: chat(http, secret)[0] == 401, timeout=30, what="the revocation to apply")
            wait_until(lambda: gateway.ledger.stats.queued == 0, timeout=30, what="the queued rows to be written")
        ledger = Ledger(pg_url)
        assert ledger.count() >= 22  # the first request, the twenty served while it hung, and after
        ledger.close_sync()
    finally:
        store.close()
        proxy.close()
