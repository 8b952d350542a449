"""The OpenAI Agents SDK running a tool-using agent through the gateway (Responses and chat-completions models)."""

from __future__ import annotations

import asyncio
import uuid

import openai
import pytest
from agents import (
    Agent,
    ModelSettings,
    OpenAIChatCompletionsModel,
    OpenAIResponsesModel,
    RunConfig,
    Runner,
    function_tool,
)

from switchman.gateway import Gateway
from switchman.ledger import LedgerRecord


def _agent(client: openai.AsyncOpenAI, kind: str, seen: list[str], session: str) -> Agent:
    @function_tool
    def lookup(query: str) -> str:
        """Look something up."""
        seen.append(query)
        return f"found: {query}"

    model_class = OpenAIResponsesModel if kind == "responses" else OpenAIChatCompletionsModel
    return Agent(
        name="helper", instructions="Use the lookup tool, then answer.", tools=[lookup],
        model=model_class(model="auto", openai_client=client),
        model_settings=ModelSettings(extra_headers={"X-Switchman-Session": session, "X-Switchman-Agent": "helper"}),
    )


def _rows(gateway: Gateway, session: str) -> list[LedgerRecord]:
    assert gateway.ledger is not None
    gateway.ledger.flush_sync(timeout=5)
    return [r for r in gateway.ledger.records() if r.session == session]


@pytest.mark.parametrize("kind", ["responses", "chat"])
def test_a_tool_using_agent(base_url: str, gateway: Gateway, kind: str) -> None:
    seen: list[str] = []
    session = f"agent-{uuid.uuid4().hex[:8]}"

    async def run() -> object:
        async with openai.AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0) as client:
            result = await Runner.run(_agent(client, kind, seen, session), "find cats",
                                      run_config=RunConfig(tracing_disabled=True))
        return result.final_output

    assert asyncio.run(run()) == "Hello from cheap."
    assert seen == ["find cats"]  # the model's tool call reached the tool
    rows = _rows(gateway, session)
    assert [(r.api, r.model, r.agent, r.status) for r in rows] == \
        [("responses" if kind == "responses" else "chat.completions", "cheap", "helper", "ok")] * 2
    assert rows[1].reason is not None and rows[1].reason.startswith("session kept cheap")


def test_a_streamed_agent_run(base_url: str, gateway: Gateway) -> None:
    seen: list[str] = []
    session = f"agent-{uuid.uuid4().hex[:8]}"

    async def run() -> tuple[object, list[str]]:
        async with openai.AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0) as client:
            streamed = Runner.run_streamed(_agent(client, "responses", seen, session), "find dogs",
                                           run_config=RunConfig(tracing_disabled=True))
            kinds = [event.type async for event in streamed.stream_events()]
        return streamed.final_output, kinds

    final, kinds = asyncio.run(run())
    assert seen == ["find dogs"] and final == "Hello from cheap."
    assert "raw_response_event" in kinds and "run_item_stream_event" in kinds
    assert [r.api for r in _rows(gateway, session)] == ["responses", "responses"]
