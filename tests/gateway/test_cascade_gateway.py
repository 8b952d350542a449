"""The gateway drives a cascade route's generator: a failed check escalates, a passing answer is kept."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from switchman._router import Router
from switchman.gateway._dispatcher import Dispatcher
from switchman.gateway._context import RequestContext
from switchman.ledger import LedgerRecord
from switchman.testing import FakeUpstream

from .conftest import ENV, OPENAI_KEY

SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
BODY: dict[str, Any] = {
    "model": "auto:cascade",
    "messages": [{"role": "user", "content": "Where is the Eiffel tower? Answer in JSON."}],
    "response_format": {"type": "json_schema", "json_schema": {"name": "place", "schema": SCHEMA}},
}


class Records:
    """Stands in for the ledger: keeps what the dispatcher records."""

    def __init__(self) -> None:
        self.records: list[LedgerRecord] = []

    def record(self, record: LedgerRecord) -> None:
        self.records.append(record)


@pytest.fixture
def cascade_dispatcher(upstream: FakeUpstream) -> Any:
    openai = {"kind": "openai", "base_url": upstream.openai_base_url, "api_key_env": "FAKE_OPENAI_KEY"}
    caps = ["tools", "json"]
    router = Router.from_dict({
        "providers": {"fake": openai},
        "models": {
            "cas-small": {"provider": "fake", "input_price": 0.1, "output_price": 0.2, "capabilities": caps},
            "cas-mid": {"provider": "fake", "input_price": 1.0, "output_price": 2.0, "capabilities": caps},
            "cas-big": {"provider": "fake", "input_price": 5.0, "output_price": 10.0, "capabilities": caps},
        },
        "routes": {"cascade": {"candidates": ["cas-big", "cas-small", "cas-mid"], "strategy": "cascade",
                               "cascade": {"checks": ["json", "tool_args"], "max_attempts": 3}}},
        "server": {"retries": {"attempts": 0}},
    })
    assert OPENAI_KEY in ENV.values()
    upstream.clear()
    records = Records()
    dispatcher = Dispatcher.from_decider(router, env=ENV, ledger=records)
    yield dispatcher, records
    upstream.clear()
    asyncio.run(dispatcher.aclose())


def _complete(dispatcher: Dispatcher, body: dict[str, Any], request_id: str) -> Any:
    async def go() -> Any:
        try:
            return await dispatcher.complete(body, RequestContext(request_id=request_id))
        finally:
            await dispatcher.aclose()

    return asyncio.run(go())


def test_invalid_json_escalates_to_the_next_rung(cascade_dispatcher: Any, upstream: FakeUpstream) -> None:
    dispatcher, records = cascade_dispatcher
    upstream.set_reply("cas-small", "Paris, I think")
    upstream.set_reply("cas-mid", json.dumps({"city": "Paris"}))
    completion = _complete(dispatcher, BODY, "req-cascade-1")
    assert completion.model == "cas-mid"
    assert json.loads(completion.json()["choices"][0]["message"]["content"]) == {"city": "Paris"}
    assert [r.model for r in upstream.requests] == ["cas-small", "cas-mid"]
    (record,) = records.records
    assert record.fallback_chain == ("cas-small", "cas-mid")
    assert record.model == "cas-mid" and record.strategy == "cascade"
    assert "cas-small ✗ json: not JSON" in (record.reason or "")
    specs = dispatcher.decider.models
    # Every attempt is paid for: the record costs more than the accepted answer alone.
    assert record.cost_usd > specs["cas-mid"].cost(record.input_tokens, record.output_tokens)
    assert record.cost_usd == pytest.approx(completion.cost_usd)


def test_valid_json_is_accepted_on_the_first_rung(cascade_dispatcher: Any, upstream: FakeUpstream) -> None:
    dispatcher, records = cascade_dispatcher
    upstream.set_reply("cas-small", json.dumps({"city": "Paris"}))
    completion = _complete(dispatcher, BODY, "req-cascade-2")
    assert completion.model == "cas-small"
    assert [r.model for r in upstream.requests] == ["cas-small"]
    (record,) = records.records
    assert record.fallback_chain == ("cas-small",)
    assert record.cost_usd == pytest.approx(
        dispatcher.decider.models["cas-small"].cost(record.input_tokens, record.output_tokens))


def test_schema_violation_escalates_and_the_last_rung_is_served(cascade_dispatcher: Any,
                                                                upstream: FakeUpstream) -> None:
    dispatcher, records = cascade_dispatcher
    upstream.set_reply("cas-small", json.dumps({"town": "Paris"}))
    upstream.set_reply("cas-mid", json.dumps({"city": 7}))
    upstream.set_reply("cas-big", "not json either")
    completion = _complete(dispatcher, BODY, "req-cascade-3")
    assert completion.model == "cas-big"
    (record,) = records.records
    assert record.fallback_chain == ("cas-small", "cas-mid", "cas-big")
    assert "last rung, served unchecked" in (record.reason or "")


def test_a_failing_last_rung_serves_the_answer_already_paid_for(cascade_dispatcher: Any,
                                                               upstream: FakeUpstream) -> None:
    dispatcher, records = cascade_dispatcher
    upstream.set_reply("cas-small", json.dumps({"town": "Paris"}))  # rejected by the schema check
    upstream.set_reply("cas-mid", "Paris")  # rejected: not JSON
    upstream.inject("server_error", model="cas-big", times=1)  # the last rung fails
    completion = _complete(dispatcher, BODY, "req-cascade-5")
    assert completion.model == "cas-mid"  # the last paid answer, not an error
    assert completion.json()["choices"][0]["message"]["content"] == "Paris"
    (record,) = records.records
    assert record.status == "ok" and record.model == "cas-mid"
    assert "last rung failed, served cas-mid's answer" in (record.reason or "")
    specs = dispatcher.decider.models
    small_cost = record.cost_usd - specs["cas-mid"].cost(record.input_tokens, record.output_tokens)
    assert small_cost > 0  # the rejected first rung is still paid for, the served one counted once
    assert small_cost < specs["cas-mid"].cost(record.input_tokens, record.output_tokens)


def test_upstream_error_on_a_rung_moves_up(cascade_dispatcher: Any, upstream: FakeUpstream) -> None:
    dispatcher, records = cascade_dispatcher
    upstream.inject("server_error", model="cas-small", times=1)
    upstream.set_reply("cas-mid", json.dumps({"city": "Paris"}))
    completion = _complete(dispatcher, BODY, "req-cascade-4")
    assert completion.model == "cas-mid"
    assert records.records[0].fallback_chain == ("cas-small", "cas-mid")


def test_streaming_is_not_cascaded(cascade_dispatcher: Any, upstream: FakeUpstream) -> None:
    dispatcher, records = cascade_dispatcher
    upstream.set_reply("cas-small", "Paris, I think")  # fails the JSON check, but is already on its way

    async def go() -> tuple[str, str, list[bytes]]:
        stream = await dispatcher.open_stream({**BODY, "stream": True}, RequestContext(request_id="req-cascade-5"))
        sent: list[bytes] = []

        async def send(chunk: bytes) -> None:
            sent.append(chunk)

        await stream.relay(send)
        await stream.aclose()
        await dispatcher.aclose()
        return stream.model, stream.reason, sent

    model, reason, sent = asyncio.run(go())
    assert model == "cas-small" and sent
    assert "stream: not cascaded" in reason
    assert [r.model for r in upstream.requests] == ["cas-small"]
    assert records.records[0].fallback_chain == ("cas-small",)
