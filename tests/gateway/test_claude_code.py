"""A Claude-Code-like session through the gateway: x-api-key auth, the beta Messages endpoint, a long cached
system prompt, many tools, streaming, several turns, and the session id Claude Code puts in metadata.user_id."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import pytest

from switchman._config import parse_config
from switchman.gateway import Gateway, build_app
from switchman.ledger import LedgerRecord
from switchman.testing import FakeUpstream

from .conftest import ENV, MASTER_KEY, ServerThread, config_data

SYSTEM = [
    {"type": "text", "text": "You are Claude Code, Anthropic's official CLI for Claude."},
    {"type": "text", "text": "You are an interactive CLI tool that helps users with software engineering tasks. "
                             + "Follow the repository's conventions. " * 300,
     "cache_control": {"type": "ephemeral"}},
]
TOOLS: list[dict[str, Any]] = [
    {"name": name, "description": f"The {name} tool.",
     "input_schema": {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
                      "properties": {"query": {"type": "string"}}, "required": ["query"],
                      "additionalProperties": False}}
    for name in ("Bash", "Read", "Edit", "Grep", "Glob", "TodoWrite")
]


@pytest.fixture
def secured(upstream: FakeUpstream, tmp_path: Path) -> Iterator[tuple[str, Gateway]]:
    """A gateway that requires a key (the master key), as a team deployment would."""
    config = parse_config(config_data(upstream, f"sqlite:///{tmp_path / 'ledger.sqlite3'}"))
    gateway = Gateway.from_config(config, env={**ENV, "SWITCHMAN_MASTER_KEY": MASTER_KEY})
    with ServerThread(build_app(gateway)) as url:
        yield url, gateway


def _stream_turn(client: anthropic.Anthropic, messages: list[dict[str, Any]], user_id: str) -> tuple[Any, str]:
    with client.beta.messages.stream(
        model="auto", max_tokens=32000, system=SYSTEM, tools=TOOLS, messages=messages,  # type: ignore[arg-type]
        metadata={"user_id": user_id}, betas=["claude-code-20250219"],
        extra_body={"temperature": 1, "thinking": {"type": "enabled", "budget_tokens": 1024}},
    ) as stream:
        for _ in stream:
            pass
        return stream.get_final_message(), stream.response.headers["x-switchman-request-id"]


def test_a_claude_code_session(secured: tuple[str, Gateway], upstream: FakeUpstream) -> None:
    url, gateway = secured
    session = str(uuid.uuid4())
    user_id = f"user_{'ab' * 32}_account__session_{session}"
    with anthropic.Anthropic(base_url=url, api_key="sk-wrong", max_retries=0) as client, \
            pytest.raises(anthropic.AuthenticationError):
        client.messages.create(model="auto", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    history: list[dict[str, Any]] = []
    ids = []
    with anthropic.Anthropic(base_url=url, api_key=MASTER_KEY, max_retries=0) as client:  # sent as x-api-key
        for ask in ("List the files in src/", "Now read the README"):
            history.append({"role": "user", "content": [{"type": "text", "text": ask,
                                                         "cache_control": {"type": "ephemeral"}}]})
            call, request_id = _stream_turn(client, history, user_id)
            ids.append(request_id)
            assert call.stop_reason == "tool_use" and call.content[-1].name == "Bash"
            assert call.content[-1].input == {"query": ask}
            history.append({"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in call.content]})
            history.append({"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.content[-1].id,
                                                         "content": "README.md\nsrc/"}]})
            answer, request_id = _stream_turn(client, history, user_id)
            ids.append(request_id)
            # max_tokens 32000 fits only big's window (cheap and mid have 8000): the policy sends it there
            assert answer.stop_reason == "end_turn" and answer.content[0].text == "Hello from big."
            history.append({"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in answer.content]})
    sent = upstream.requests_for("big")[-1]
    assert sent.headers["authorization"].endswith("0123456789abcdef")  # the provider's key, not the caller's
    assert "thinking" not in sent.body and len(sent.body["tools"]) == len(TOOLS)
    system = sent.body["messages"][0]
    assert system["role"] == "system" and "Follow the repository" in system["content"]
    assert gateway.ledger is not None
    deadline = time.monotonic() + 10
    while True:  # a stream's row is written as its response ends, which can trail the client's last read
        gateway.ledger.flush_sync(timeout=5)
        rows: dict[str, LedgerRecord] = {r.request_id: r for r in gateway.ledger.records()}
        if set(ids) <= set(rows) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    turns = [rows[i] for i in ids]
    assert [(r.api, r.session, r.key_id, r.model, r.status) for r in turns] == \
        [("messages", session, "master", "big", "ok")] * 4
    assert all((r.reason or "").startswith("session kept big") for r in turns[1:])
    assert turns[-1].input_tokens > turns[0].input_tokens > 3000  # the long system prompt counted every turn
