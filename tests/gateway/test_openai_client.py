"""The real openai client, sync and async, against the gateway on loopback."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable

import httpx
import openai
import pytest

from switchman.ledger import LedgerRecord
from switchman.testing import FakeUpstream

from .conftest import OPENAI_KEY, TOOLS


@pytest.fixture
async def aclient(base_url: str) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0) as client:
        yield client


def test_non_stream_auto(client: openai.OpenAI, upstream: FakeUpstream,
                         ledger_record: Callable[[str], LedgerRecord]) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "Say hi"}],
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == "Hello from cheap."
    assert raw.headers["x-switchman-model"] == "cheap"
    assert raw.headers["x-switchman-route-reason"].startswith("cheapest capable candidate")
    cost = float(raw.headers["x-switchman-cost-usd"])
    usage = completion.usage
    assert usage is not None
    assert cost == pytest.approx((usage.prompt_tokens * 0.1 + usage.completion_tokens * 0.2) / 1e6)
    record = ledger_record(raw.headers["x-switchman-request-id"])
    assert (record.model, record.route, record.status) == ("cheap", "default", "ok")
    assert (record.input_tokens, record.output_tokens) == (usage.prompt_tokens, usage.completion_tokens)
    assert not record.tokens_estimated
    assert record.cost_usd == pytest.approx(cost)
    assert record.baseline_cost_usd == pytest.approx((usage.prompt_tokens * 5 + usage.completion_tokens * 10) / 1e6)
    assert record.fallback_chain == ("cheap",)
    assert record.candidates == ("cheap", "mid", "big")


def test_fields_pass_through_unchanged(client: openai.OpenAI, upstream: FakeUpstream) -> None:
    client.chat.completions.create(
        model="mid", messages=[{"role": "user", "content": "x"}], temperature=0.3, n=2, stop=["END"], seed=7,
        response_format={"type": "json_object"}, tools=TOOLS, tool_choice="auto",
        extra_body={"top_k": 5, "custom": {"nested": [1, 2]}, "metadata": {"agent": "a", "trace": "t-1"}},
    )
    sent = upstream.requests_for("mid")[-1]
    assert sent.body["temperature"] == 0.3 and sent.body["n"] == 2 and sent.body["seed"] == 7
    assert sent.body["stop"] == ["END"] and sent.body["response_format"] == {"type": "json_object"}
    assert sent.body["tools"] == TOOLS and sent.body["tool_choice"] == "auto"
    assert sent.body["top_k"] == 5 and sent.body["custom"] == {"nested": [1, 2]}
    assert sent.body["metadata"] == {"trace": "t-1"}  # switchman's own key removed, the caller's kept
    assert sent.headers["authorization"] == f"Bearer {OPENAI_KEY}"


def test_client_authorization_is_not_forwarded(base_url: str, upstream: FakeUpstream) -> None:
    httpx.post(base_url + "/chat/completions", headers={"authorization": "Bearer client-secret-key-123"},
               json={"model": "cheap", "messages": [{"role": "user", "content": "x"}]})
    assert upstream.requests[-1].headers["authorization"] == f"Bearer {OPENAI_KEY}"


def test_context_from_headers_and_metadata(client: openai.OpenAI,
                                           ledger_record: Callable[[str], LedgerRecord]) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "x"}],
        extra_headers={"X-Switchman-Agent": "triage", "X-Switchman-Session": "s-1", "X-Switchman-Tags": "a, b"},
    )
    record = ledger_record(raw.headers["x-switchman-request-id"])
    assert (record.agent, record.session, record.tags) == ("triage", "s-1", ("a", "b"))
    raw = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "x"}],
        extra_body={"metadata": {"agent": "coder", "session": "s-2", "tags": ["x"], "task": "code"}},
    )
    record = ledger_record(raw.headers["x-switchman-request-id"])
    assert (record.agent, record.session, record.tags) == ("coder", "s-2", ("x",))


def test_tool_call_round_trip(client: openai.OpenAI) -> None:
    messages: list[dict[str, object]] = [{"role": "user", "content": "find switchman"}]
    first = client.chat.completions.create(model="auto", messages=messages, tools=TOOLS)  # type: ignore[arg-type]
    call = first.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert first.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "lookup" and json.loads(call.function.arguments) == {"query": "find switchman"}
    messages += [first.choices[0].message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": "found it"}]
    second = client.chat.completions.create(model="auto", messages=messages, tools=TOOLS)  # type: ignore[arg-type]
    assert second.choices[0].message.content == "Hello from cheap."


def test_stream(client: openai.OpenAI, ledger_record: Callable[[str], LedgerRecord]) -> None:
    with client.chat.completions.with_streaming_response.create(
        model="auto", messages=[{"role": "user", "content": "x"}], stream=True,
    ) as response:
        assert response.headers["x-switchman-model"] == "cheap"
        assert "x-switchman-cost-usd" not in response.headers
        chunks = list(response.parse())
        request_id = response.headers["x-switchman-request-id"]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from cheap."
    assert all(c.usage is None for c in chunks)  # not asked for: switchman's own usage chunk is dropped
    record = ledger_record(request_id)
    assert record.status == "ok" and record.output_tokens == 3 and not record.tokens_estimated
    assert record.ttft_ms is not None and record.ttft_ms <= record.latency_ms


def test_stream_with_usage_and_tools(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "weather"}], tools=TOOLS, stream=True,  # type: ignore[arg-type]
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3
    arguments = "".join(
        c.choices[0].delta.tool_calls[0].function.arguments or ""  # type: ignore[index,union-attr]
        for c in chunks if c.choices and c.choices[0].delta.tool_calls
    )
    assert json.loads(arguments) == {"query": "weather"}
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"


@pytest.mark.anyio
async def test_async_non_stream_and_stream(aclient: openai.AsyncOpenAI) -> None:
    completion = await aclient.chat.completions.create(model="auto:strict", messages=[{"role": "user", "content": "x"}])
    assert completion.choices[0].message.content == "Hello from cheap."
    stream = await aclient.chat.completions.create(model="big", messages=[{"role": "user", "content": "x"}],
                                                   stream=True)
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "Hello from big."


@pytest.mark.anyio
async def test_async_tool_call(aclient: openai.AsyncOpenAI) -> None:
    completion = await aclient.chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "q"}], tools=TOOLS, tool_choice="required",  # type: ignore[arg-type]
    )
    assert completion.choices[0].message.tool_calls[0].function.name == "lookup"  # type: ignore[index]


def test_models_route_health_metrics(client: openai.OpenAI, server: str) -> None:
    ids = {m.id for m in client.models.list()}
    assert {"cheap", "mid", "big", "claude", "auto", "auto:default", "auto:strict"} <= ids
    decision = httpx.post(server + "/v1/route", json={"model": "auto", "messages": [{"role": "user", "content": "x"}],
                                                      "tools": TOOLS}).json()
    assert decision["model"] == "cheap" and decision["route"] == "default"
    assert decision["fallbacks"] == ["mid", "big"]
    health = httpx.get(server + "/health").json()
    assert health["status"] == "ok" and health["models"]["cheap"] == "closed"
    metrics = httpx.get(server + "/metrics")
    assert metrics.status_code == 200 and "switchman_requests" in metrics.text


def test_langchain_chat_openai(base_url: str) -> None:
    langchain_openai = pytest.importorskip("langchain_openai")
    with httpx.Client() as http_client:
        chat = langchain_openai.ChatOpenAI(model="auto", base_url=base_url, api_key="unused", max_retries=0,
                                           http_client=http_client)
        assert chat.invoke("hello").content == "Hello from cheap."
        assert "".join(str(c.content) for c in chat.stream("hello")) == "Hello from cheap."
