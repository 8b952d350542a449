"""Keys never appear in a response, an error, a log line, the ledger or a metric."""

from __future__ import annotations

import logging
from collections.abc import Callable

import httpx
import pytest

from switchman.gateway import Gateway, Scrubber
from switchman.ledger import LedgerRecord
from switchman.testing import FakeUpstream

from .conftest import ASK, OPENAI_KEY, SECRETS, WRONG_KEY


def test_scrubber() -> None:
    scrub = Scrubber([OPENAI_KEY, "", "abc"])
    assert OPENAI_KEY not in scrub(f"bad key {OPENAI_KEY}!")
    assert scrub("Authorization: Bearer abcdefghijkl") == "Authorization: [redacted]"
    assert scrub("key sk-proj-abcdefgh1234 leaked") == "key [redacted] leaked"
    assert scrub("nothing here") == "nothing here"


def test_no_key_anywhere(server: str, gateway: Gateway, upstream: FakeUpstream, caplog: pytest.LogCaptureFixture,
                         ledger_record: Callable[[str], LedgerRecord]) -> None:
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []
    ids: list[str] = []
    with httpx.Client(base_url=server, timeout=30) as http:

        def call(model: str, **fields: object) -> httpx.Response:
            response = http.post("/v1/chat/completions", json={"model": model, "messages": ASK, **fields})
            seen.append(response.text)
            seen.append(repr(response.headers))
            ids.append(response.headers["x-switchman-request-id"])
            return response

        locked = call("locked")  # the upstream refuses the key and echoes it in its error
        assert locked.status_code == 502 and "[redacted]" in locked.json()["error"]["message"]
        upstream.inject("auth_error", model="cheap", times=1)
        call("cheap")
        upstream.inject("auth_error", model="claude-test", times=1)
        call("claude")
        call("claude", stream=True)
        upstream.inject("drop_mid_stream", model="cheap", times=1)
        call("cheap", stream=True)
        call("auto")
        for stream in (False, True):  # aiohttp's error for an unparsable answer holds the request, key header and all
            upstream.inject("bad_head", model="cheap", times=3)
            broken = call("cheap", stream=stream)
            assert broken.status_code == 502 and "ClientResponseError" in broken.text, broken.text
        for path in ("/metrics", "/health", "/v1/models"):
            seen.append(http.get(path).text)
    records = [ledger_record(i) for i in ids]
    assert records[0].status == "error" and "[redacted]" in (records[0].error or "")
    haystacks = {"responses": "\n".join(seen), "logs": caplog.text, "ledger": repr(records),
                 "metrics": httpx.get(server + "/metrics").text}
    for where, text in haystacks.items():
        for secret in SECRETS:
            assert secret not in text, f"{secret[:8]}… leaked into {where}"
    assert WRONG_KEY in {r.headers.get("authorization", "").removeprefix("Bearer ") for r in upstream.requests}
    assert "Provider(" in repr(gateway.dispatcher.providers["fake-openai"])
    assert OPENAI_KEY not in repr(gateway.dispatcher.providers["fake-openai"])
