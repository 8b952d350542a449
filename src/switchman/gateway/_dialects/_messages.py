"""Anthropic's Messages API inbound: a `/v1/messages` body → the chat body the dispatcher takes, and back.

The inverse of the upstream translation in `gateway._anthropic`: system → a system message, text and
image blocks → content parts (cache_control kept, for an Anthropic upstream to honour), tool_use
→ tool_calls, tool_result → tool messages, tools / tool_choice / stop_sequences / metadata.user_id
→ their chat equivalents, `output_config.format` (a JSON schema) → response_format. `thinking`,
`top_k`, `output_config.effort`, a top-level `cache_control` and tool_result's `is_error` are
dropped (the chat shape has no place for them); block and tool types with no chat equivalent
(documents, Anthropic's server tools) are a 400 naming them.

Claude Code's `metadata.user_id` carries its session id: it becomes the switchman session unless
`X-Switchman-Session` says otherwise, so a Claude Code conversation keeps its model.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..._exceptions import InvalidRequestError
from .._anthropic import tool_input
from .._anthropic_stream import FINISH_REASONS
from .._context import OWN_METADATA_KEYS
from .._schema import describe_invalid
from .._wire import TRANSLATED, Usage
from ._chat_body import finished_chat, text_field
from ._chunks import first_answer, usage_from

__all__ = [
    "STOP_REASONS",
    "MessagesBody",
    "anthropic_message",
    "anthropic_usage",
    "chat_from_messages",
    "message_id",
    "stop_reason",
]

#: OpenAI finish_reason → Anthropic stop_reason (the inverse of the upstream mapping).
STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "function_call": "tool_use",
                "content_filter": "refusal"}
assert all(FINISH_REASONS[STOP_REASONS[k]] == k for k in ("stop", "length", "tool_calls", "content_filter"))


_SESSION_IN_USER_ID = re.compile(r"_session_([0-9A-Za-z-]{8,})$")


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)


class Block(_Open):
    """One content block; the fields switchman reads are typed."""

    type: str = Field(min_length=1)


class Turn(_Open):
    """One message of the conversation."""

    role: Literal["user", "assistant"]
    content: str | list[Block]


class ToolDef(_Open):
    """A tool: a custom one has an input_schema; Anthropic's own tools have a type instead."""

    name: str = Field(min_length=1)
    type: str | None = None
    description: str | None = None
    input_schema: dict[str, Any] | None = None


class ToolChoice(_Open):
    """auto, any, tool (with a name) or none."""

    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class MessagesBody(_Open):
    """POST /v1/messages (and /v1/messages/count_tokens, where max_tokens is not needed)."""

    model: str = Field(min_length=1)
    messages: list[Turn] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    system: str | list[Block] | None = None
    tools: list[ToolDef] | None = None
    tool_choice: ToolChoice | None = None
    stop_sequences: list[str] | None = None
    temperature: float | None = Field(default=None, ge=0, le=1)
    top_p: float | None = Field(default=None, ge=0, le=1)
    top_k: int | None = Field(default=None, ge=0)
    stream: bool = False
    metadata: dict[str, Any] | None = None
    output_config: dict[str, Any] | None = None


_UNSUPPORTED_FIELDS = {"mcp_servers": "MCP servers", "container": "containers"}


def _image_source(source: Any, where: str) -> Mapping[str, Any]:
    """An image block's source, its strings checked (a client's mistake is a 400 naming it, not a 500)."""
    if not isinstance(source, Mapping):
        raise InvalidRequestError(f"{where} must be an object (type base64 with data, or url)", param=where,
                                  code="invalid_value")
    for name in ("media_type", "data", "url"):
        text_field(source, name, where)
    return source


def _part(block: Mapping[str, Any], where: str) -> dict[str, Any] | None:
    """A text or image block as a chat content part (None for blocks dropped on purpose)."""
    kind = block.get("type")
    if kind == "text":
        part: dict[str, Any] = {"type": "text", "text": text_field(block, "text", where)}
    elif kind == "image":
        source = _image_source(block.get("source"), f"{where}.source")
        if source.get("type") == "base64":
            url = f"data:{source.get('media_type') or 'image/png'};base64,{source.get('data') or ''}"
        elif source.get("type") == "url":
            url = str(source.get("url") or "")
        else:
            raise InvalidRequestError(f"{where}: image source type {source.get('type')!r} is not supported; "
                                      "send base64 or url", param=where, code="unsupported_content")
        part = {"type": "image_url", "image_url": {"url": url}}
    elif kind in ("thinking", "redacted_thinking"):
        return None
    else:
        raise InvalidRequestError(f"{where}: content block type {kind!r} is not supported through switchman "
                                  "(text, image, tool_use and tool_result are)", param=where,
                                  code="unsupported_content")
    if "cache_control" in block:
        part["cache_control"] = block["cache_control"]
    return part


def _content(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    """A single plain text part as a string (what every chat upstream takes), else the parts."""
    if len(parts) == 1 and parts[0]["type"] == "text" and "cache_control" not in parts[0]:
        return str(parts[0]["text"])
    return parts


def _tool_result(block: Mapping[str, Any], where: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The tool message for a tool_result, and any images it returned (sent as a user turn after it)."""
    content = block.get("content")
    images: list[dict[str, Any]] = []
    if isinstance(content, list):
        texts = []
        for j, item in enumerate(content):
            part = _part(item, f"{where}.content.{j}") if isinstance(item, Mapping) else None
            if part is None:
                continue
            if part["type"] == "text":
                texts.append(part["text"])
            else:
                images.append(part)
        text = "\n".join(texts)
    else:
        if content is not None and not isinstance(content, str):
            raise InvalidRequestError(f"{where}.content must be a string or a list of content blocks",
                                      param=f"{where}.content", code="invalid_value")
        text = content or ""
    return {"role": "tool", "tool_call_id": text_field(block, "tool_use_id", where) or "", "content": text}, images


def _user_turn(blocks: list[Mapping[str, Any]], where: str) -> list[dict[str, Any]]:
    tools: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for i, block in enumerate(blocks):
        if block.get("type") == "tool_result":
            message, images = _tool_result(block, f"{where}.{i}")
            tools.append(message)
            parts += images
        elif (part := _part(block, f"{where}.{i}")) is not None:
            parts.append(part)
    return [*tools, {"role": "user", "content": _content(parts)}] if parts else tools


def _assistant_turn(blocks: list[Mapping[str, Any]], where: str) -> dict[str, Any]:
    parts: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    for i, block in enumerate(blocks):
        if block.get("type") == "tool_use":
            given = block.get("input")
            if given is not None and not isinstance(given, dict):  # the arguments of a call are an object
                raise InvalidRequestError(f"{where}.{i}.input must be an object", param=f"{where}.{i}.input",
                                          code="invalid_value")
            arguments = orjson.dumps(given or {}).decode()
            calls.append({"id": text_field(block, "id", f"{where}.{i}") or f"toolu_{i}", "type": "function",
                          "function": {"name": text_field(block, "name", f"{where}.{i}") or "", "arguments": arguments}})
        elif (part := _part(block, f"{where}.{i}")) is not None:
            parts.append(part)
    message: dict[str, Any] = {"role": "assistant", "content": _content(parts) if parts else None}
    if calls:
        message["tool_calls"] = calls
    elif message["content"] is None:
        message["content"] = ""
    return message


def _turns(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    system = body.get("system")
    if isinstance(system, str) and system:
        messages.append({"role": "system", "content": system})
    elif isinstance(system, list) and system:
        parts = [p for i, b in enumerate(system) if (p := _part(b, f"system.{i}")) is not None]
        if any("cache_control" in p for p in parts):
            messages.append({"role": "system", "content": parts})
        elif parts:
            messages.append({"role": "system", "content": "\n\n".join(str(p.get("text") or "") for p in parts)})
    for i, turn in enumerate(body["messages"]):
        content = turn["content"]
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if turn["role"] == "user":
            messages += _user_turn(blocks, f"messages.{i}.content")
        else:
            messages.append(_assistant_turn(blocks, f"messages.{i}.content"))
    return messages


def _tools(body: Mapping[str, Any], chat: dict[str, Any]) -> None:
    tools = body.get("tools")
    if not tools:
        return
    out = []
    for i, tool in enumerate(tools):
        if tool.get("input_schema") is None:
            raise InvalidRequestError(
                f"tools.{i}: tool {tool.get('name')!r} of type {tool.get('type')!r} is one of Anthropic's own tools, "
                "which only Anthropic runs; switchman routes custom tools (name, description, input_schema)",
                param=f"tools.{i}", code="unsupported_tool")
        out.append({"type": "function", "function": {"name": tool["name"], "description": tool.get("description") or "",
                                                     "parameters": tool["input_schema"]}})
    chat["tools"] = out
    choice = body.get("tool_choice")
    if choice is None:
        return
    kind = choice["type"]
    if kind == "tool":
        if not choice.get("name"):
            raise InvalidRequestError("tool_choice.name is required when tool_choice.type is 'tool'",
                                      param="tool_choice.name", code="missing_required_parameter")
        chat["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    else:
        chat["tool_choice"] = {"auto": "auto", "any": "required", "none": "none"}[kind]
    if choice.get("disable_parallel_tool_use"):
        chat["parallel_tool_calls"] = False


def _own_metadata(metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    """switchman's keys from metadata, and Claude Code's session id (from metadata.user_id)."""
    metadata = metadata or {}
    own = {k: metadata[k] for k in OWN_METADATA_KEYS if k in metadata}
    user_id = metadata.get("user_id")
    if "session" not in own and isinstance(user_id, str):
        match = _SESSION_IN_USER_ID.search(user_id)
        session = match.group(1) if match else None
        if session is None and user_id.startswith("{"):
            try:
                parsed = orjson.loads(user_id)
            except orjson.JSONDecodeError:
                parsed = None
            session = parsed.get("session_id") if isinstance(parsed, dict) else None
        if isinstance(session, str) and session:
            own["session"] = session[:256]
    return own


def chat_from_messages(data: dict[str, Any], *, count_only: bool = False) -> dict[str, Any]:
    """The chat body for a Messages API body (validated: InvalidRequestError names the first problem)."""
    try:
        MessagesBody.model_validate(data)
    except ValidationError as exc:
        raise describe_invalid(exc) from None
    if not count_only and data.get("max_tokens") is None:
        raise InvalidRequestError("missing required parameter: 'max_tokens'", param="max_tokens",
                                  code="missing_required_parameter")
    for name, what in _UNSUPPORTED_FIELDS.items():
        if data.get(name):
            raise InvalidRequestError(f"{name}: {what} are not supported through switchman", param=name,
                                      code="unsupported_parameter")
    chat: dict[str, Any] = {"model": data["model"], "messages": _turns(data), TRANSLATED: True}
    if not chat["messages"]:
        raise InvalidRequestError("messages: the conversation has no content", param="messages",
                                  code="invalid_value")
    if data.get("max_tokens") is not None:
        chat["max_tokens"] = data["max_tokens"]
    for name in ("temperature", "top_p"):
        if data.get(name) is not None:
            chat[name] = data[name]
    if data.get("stop_sequences"):
        chat["stop"] = list(data["stop_sequences"])
    _tools(data, chat)
    fmt = (data.get("output_config") or {}).get("format")
    if isinstance(fmt, Mapping) and fmt.get("type") == "json_schema":
        schema = {"name": "output", "schema": fmt.get("schema")}
        chat["response_format"] = {"type": "json_schema", "json_schema": schema}
    metadata = data.get("metadata") or {}
    if isinstance(metadata.get("user_id"), str):
        chat["user"] = metadata["user_id"][:256]
    # checked: built above from the validated Messages body, every field of it already checked (a second
    # pydantic pass, as a chat body, cost as much as the first: ~0.4 s of CPU for a body at the item caps).
    return finished_chat(chat, _own_metadata(metadata), stream=bool(data.get("stream")), checked=True)


def anthropic_usage(usage: Usage | None) -> dict[str, int]:
    """Anthropic's usage object (its input_tokens exclude cache reads; OpenAI's prompt tokens include them)."""
    if usage is None:
        return {"input_tokens": 0, "output_tokens": 0}
    out = {"input_tokens": max(usage.input_tokens - usage.cached_input_tokens, 0),
           "output_tokens": usage.output_tokens}
    if usage.cached_input_tokens:
        out["cache_read_input_tokens"] = usage.cached_input_tokens
    return out


def stop_reason(finish: str | None, stop_sequence: str | None) -> tuple[str, str | None]:
    """Anthropic's stop_reason and stop_sequence for a finish reason (and the stop string, if known)."""
    if finish == "stop" and stop_sequence:
        return "stop_sequence", stop_sequence
    return STOP_REASONS.get(str(finish), "end_turn"), None


def anthropic_message(completion: Mapping[str, Any], *, message_id: str, model: str) -> dict[str, Any]:
    """The Messages API response for a chat.completion."""
    found = first_answer(completion)
    content: list[dict[str, Any]] = []
    if found.text:
        content.append({"type": "text", "text": found.text})
    for call_id, name, arguments in found.calls:
        content.append({"type": "tool_use", "id": call_id, "name": name, "input": tool_input(arguments)})
    reason, sequence = stop_reason(found.finish, found.stop)
    if content and content[-1]["type"] == "tool_use":
        reason = "tool_use"
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": reason,
        "stop_sequence": sequence,
        "usage": anthropic_usage(usage_from(completion.get("usage"))),
    }


def message_id(request_id: str) -> str:
    """The message id for a request: switchman's request id, so the ledger row is easy to find."""
    return f"msg_{request_id or int(time.time() * 1000)}"
