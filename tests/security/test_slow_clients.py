"""Slow readers are the client's failure, and a long prompt never holds the event loop."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
from security_support import (
    ASK,
    config_data,
    connect,
    request_bytes,
    running_gateway,
    serve_process,
    wait_until,
)

from switchman.testing import FakeUpstream


def test_clients_that_never_read_are_dropped_without_blaming_the_upstream(upstream: FakeUpstream,
                                                                         ledger_url: str) -> None:
    data = config_data(upstream, ledger_url, limits={"write_timeout_s": 0.5})
    data["budgets"] = [{"scope": "agent", "name": "reader", "usd": 100.0}]
    upstream.set_reply("cheap", " ".join(["x" * 400] * 20_000))  # ~8 MB of stream: more than socket buffers hold
    with running_gateway(data) as (gateway, server):
        body = {"model": "auto", "messages": ASK, "stream": True}
        readers = [connect(server.port, rcvbuf=4096) for _ in range(6)]  # three times the breaker's threshold
        try:
            for sock in readers:
                sock.sendall(request_bytes("POST", "/v1/chat/completions", body, {"x-switchman-agent": "reader"}))
            assert gateway.ledger is not None

            def dropped() -> int:
                gateway.ledger.flush_sync(timeout=5)
                return sum(r.status == "client_disconnected" for r in gateway.ledger.records())

            wait_until(lambda: dropped() == 6, timeout=30, what="six stalled readers to be dropped")
        finally:
            for sock in readers:
                sock.close()
        assert gateway.dispatcher.health.state("cheap") == "closed"
        assert gateway.budgets is not None
        [(_, spent, reserved)] = gateway.budgets.usage()
        assert abs(reserved) < 1e-12 and spent > 0  # released, with what was streamed paid for
        rows = [r for r in gateway.ledger.records() if r.status == "client_disconnected"]
        assert all(r.output_tokens < 20_000 for r in rows)  # stopped mid-answer, not relayed into the void
        assert upstream.disconnects >= 1  # the upstream streams were cancelled, not left running
        upstream.set_reply("cheap", "fine")
        with httpx.Client(base_url=server.url) as http:  # traffic still goes to the healthy cheap model
            response = http.post("/v1/chat/completions", json={"model": "auto", "messages": ASK})
            assert response.headers["x-switchman-model"] == "cheap"


def test_health_answers_within_100_ms_while_a_4_mb_prompt_is_processed(upstream: FakeUpstream, ledger_url: str,
                                                                       tmp_path: Path) -> None:
    data = config_data(upstream, ledger_url)
    data["server"]["max_body_bytes"] = 8_000_000
    data["server"]["limits"] = {"max_prompt_chars": 5_000_000}
    # One repeated character: the worst case for a BPE tokenizer. Encoded now, not while probing.
    big = orjson.dumps({"model": "auto", "max_tokens": 5, "messages": [{"role": "user", "content": "a" * 4_000_000}]})
    with serve_process(data, tmp_path) as (_, base):  # the gateway alone in its process: its own event loop
        result: dict[str, Any] = {}

        def send_big() -> None:
            with httpx.Client(base_url=base, timeout=300) as http:
                result["response"] = http.post("/v1/chat/completions", content=big,
                                               headers={"content-type": "application/json"})

        worker = threading.Thread(target=send_big)
        worker.start()
        latencies: list[float] = []
        with httpx.Client(base_url=base, timeout=10) as http:
            while worker.is_alive() or len(latencies) < 3:  # the bounded work can end before a third probe
                started = time.perf_counter()
                assert http.get("/health").status_code == 200
                latencies.append(time.perf_counter() - started)
                time.sleep(0.02)
        worker.join()
        assert result["response"].status_code == 200, result["response"].text
        assert len(upstream.requests) == 1 and len(upstream.requests[0].body["messages"][0]["content"]) == 4_000_000
        assert max(latencies) < 0.1, sorted(latencies)[-5:]


def test_a_prompt_over_the_limit_is_a_413(upstream: FakeUpstream, ledger_url: str) -> None:
    data = config_data(upstream, ledger_url, limits={"max_prompt_chars": 1000})
    with running_gateway(data) as (_, server), httpx.Client(base_url=server.url) as http:
        response = http.post("/v1/chat/completions", json={"model": "auto", "messages": [
            {"role": "system", "content": "s" * 600}, {"role": "user", "content": [{"type": "text", "text": "u" * 600}]}]})
        error = response.json()["error"]
        assert response.status_code == 413 and error["code"] == "prompt_too_large" and "1000" in error["message"]
        assert upstream.requests == []
