"""A database that hangs while clients keep sending feedback: each feedback waits out its own timeout (503) on
threads of its own, and a large chat request, parsed and routed in a worker thread, is not kept waiting for one."""

from __future__ import annotations

import threading
import time

import httpx
from hanging_server import HangingServer
from security_support import ENV, MASTER_KEY, config_data, running_gateway

from switchman.testing import FakeUpstream

HEADERS = {"authorization": f"Bearer {MASTER_KEY}"}
BIG = "word " * 40_000  # past the size whose parsing and routing go to a worker thread


def test_feedback_on_a_hung_database_does_not_starve_the_chat_path(upstream: FakeUpstream) -> None:
    hanging = HangingServer()  # accepts, never answers: every connection attempt waits out its timeout
    url = f"postgresql://postgres@127.0.0.1:{hanging.port}/test"
    try:
        with running_gateway(config_data(upstream, url), {**ENV, "SWITCHMAN_MASTER_KEY": MASTER_KEY}) as (
                gateway, server), httpx.Client(base_url=server.url, timeout=60) as http:

            def big_chat() -> float:
                started = time.monotonic()
                answer = http.post("/v1/chat/completions", headers=HEADERS,
                                   json={"model": "auto", "messages": [{"role": "user", "content": BIG}]})
                assert answer.status_code == 200, answer.text
                return time.monotonic() - started

            big_chat()
            statuses: list[int] = []

            def feedback() -> None:
                with httpx.Client(base_url=server.url, timeout=60) as own:
                    statuses.append(own.post("/v1/feedback", headers=HEADERS,
                                             json={"request_id": "x", "score": 1}).status_code)

            flood = [threading.Thread(target=feedback) for _ in range(45)]  # more than anyio's 40 default threads
            for thread in flood:
                thread.start()
            time.sleep(0.5)  # every feedback is waiting on the database
            assert big_chat() < 2.0  # not held until the feedback's 5 s timeout frees a thread
            assert statuses == []  # the feedbacks were still held by the database meanwhile
            for thread in flood:
                thread.join(60)
            assert set(statuses) == {503}
            assert gateway.ledger is not None
            gateway.ledger.close_sync(timeout=0.5)  # the database never comes back: give up at shutdown
    finally:
        hanging.close()
