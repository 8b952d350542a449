"""Anthropic's Messages API, translated to and from the OpenAI chat format.

Requests: system and developer messages → `system` (blocks when they carry cache_control); tool
definitions, tool calls and tool results
→ tool_use / tool_result blocks; image parts (data URLs → base64 sources); stop → stop_sequences;
consecutive same-role turns merged. Responses: text and tool_use blocks → message content and
tool_calls; stop reasons → finish reasons; usage (cache reads included in prompt tokens). Fields
Anthropic has no equivalent for (seed, logprobs, unknown extras) are not sent.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import orjson

from .._exceptions import UpstreamBadRequestError, UpstreamError, UpstreamServerError
from ._anthropic_stream import FINISH_REASONS, AnthropicStream, prompt_tokens
from ._transport import MappedErrors
from ._wire import Usage, error_answer, reported_usage

__all__ = ["AnthropicAdapter", "from_anthropic", "to_anthropic", "tool_input"]

API_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096
_JSON_INSTRUCTION = "Respond only with a single JSON object, no prose and no code fences."


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p.get("text", "") for p in content if isinstance(p, Mapping) and p.get("type") == "text")
    return ""


def _image(part: Mapping[str, Any]) -> dict[str, Any]:
    image = part.get("image_url")
    url = image.get("url", "") if isinstance(image, Mapping) else str(image or "")
    if url.startswith("data:"):
        header, _, data = url.partition(",")
        media_type = header[5:].split(";")[0] or "image/png"
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    return {"type": "image", "source": {"type": "url", "url": url}}


def _blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    for part in content or ():
        if not isinstance(part, Mapping):
            continue
        kind = part.get("type")
        if kind == "text" and part.get("text"):
            block: dict[str, Any] = {"type": "text", "text": part["text"]}
        elif kind == "image_url":
            block = _image(part)
        else:
            continue
        if "cache_control" in part:
            block["cache_control"] = part["cache_control"]
        blocks.append(block)
    return blocks


def tool_input(raw: Any) -> Any:
    """A tool call's arguments (a JSON string or an object) as the object a tool_use block holds."""
    if isinstance(raw, Mapping):
        return raw
    try:
        value = orjson.loads(raw or "{}")
    except orjson.JSONDecodeError:
        return {"arguments": raw}
    return value if isinstance(value, dict) else {"value": value}


def _append(messages: list[dict[str, Any]], role: str, blocks: list[dict[str, Any]]) -> None:
    if not blocks:
        return
    if messages and messages[-1]["role"] == role:
        messages[-1]["content"].extend(blocks)
    else:
        messages.append({"role": role, "content": blocks})


def _messages(source: list[Mapping[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    system: list[dict[str, Any]] = []
    messages: list[dict[str, Any]] = []
    for message in source:
        role = message.get("role")
        if role in ("system", "developer"):
            content = message.get("content")
            system += [b for b in _blocks(content) if b["type"] == "text"] if isinstance(content, list) \
                else [{"type": "text", "text": _text(content)}]
        elif role in ("tool", "function"):
            result = {"type": "tool_result", "tool_use_id": message.get("tool_call_id") or message.get("name"),
                      "content": _text(message.get("content"))}
            _append(messages, "user", [result])
        elif role == "assistant":
            blocks = _blocks(message.get("content"))
            for call in message.get("tool_calls") or ():
                function = call.get("function") or {}
                blocks.append({"type": "tool_use", "id": call.get("id"), "name": function.get("name"),
                               "input": tool_input(function.get("arguments"))})
            _append(messages, "assistant", blocks)
        else:
            _append(messages, "user", _blocks(message.get("content")))
    return system, messages


def _tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    if choice is None and parallel is not False:
        return None
    if isinstance(choice, Mapping):
        out: dict[str, Any] = {"type": "tool", "name": (choice.get("function") or {}).get("name")}
    else:
        out = {"type": {"required": "any", "none": "none"}.get(str(choice), "auto")}
    if parallel is False and out["type"] != "none":
        out["disable_parallel_tool_use"] = True
    return out


def to_anthropic(body: Mapping[str, Any], wire_model: str, *, stream: bool) -> dict[str, Any]:
    """The Messages API request for an OpenAI chat-completions body."""
    if (body.get("n") or 1) > 1:
        raise UpstreamBadRequestError(f"{wire_model}: n > 1 is not supported by Anthropic models", model=wire_model)
    system, messages = _messages(body["messages"])
    fmt = body.get("response_format") or {}
    if fmt.get("type") in ("json_object", "json_schema"):
        schema = (fmt.get("json_schema") or {}).get("schema")
        instruction = _JSON_INSTRUCTION + (f" It must match this JSON schema: {orjson.dumps(schema).decode()}"
                                           if schema else "")
        system.append({"type": "text", "text": instruction})
    out: dict[str, Any] = {
        "model": wire_model,
        "messages": messages,
        "max_tokens": body.get("max_completion_tokens") or body.get("max_tokens") or DEFAULT_MAX_TOKENS,
    }
    system = [block for block in system if block["text"]]
    if any("cache_control" in block for block in system):  # cache breakpoints need the block form
        out["system"] = system
    elif system:
        out["system"] = "\n\n".join(block["text"] for block in system)
    if body.get("temperature") is not None:
        out["temperature"] = min(float(body["temperature"]), 1.0)
    if body.get("top_p") is not None:
        out["top_p"] = body["top_p"]
    stop = body.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if body.get("tools"):
        out["tools"] = [
            {"name": t["function"]["name"], "description": t["function"].get("description", ""),
             "input_schema": t["function"].get("parameters") or {"type": "object", "properties": {}}}
            for t in body["tools"]
        ]
        choice = _tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
        if choice is not None:
            out["tool_choice"] = choice
    if body.get("user"):
        out["metadata"] = {"user_id": str(body["user"])}
    if stream:
        out["stream"] = True
    return out


def _usage(data: Mapping[str, Any]) -> Usage | None:
    """Usage from Anthropic's usage object (its input_tokens exclude cache reads and writes; ours include them)."""
    counted = prompt_tokens(data)
    if counted is None:
        return None
    return reported_usage(counted[0], data.get("output_tokens"), counted[1])


def usage_dict(usage: Usage) -> dict[str, Any]:
    """OpenAI's usage object."""
    return {"prompt_tokens": usage.input_tokens, "completion_tokens": usage.output_tokens,
            "total_tokens": usage.input_tokens + usage.output_tokens,
            "prompt_tokens_details": {"cached_tokens": usage.cached_input_tokens}}


def from_anthropic(data: Mapping[str, Any], model: str) -> tuple[dict[str, Any], Usage | None]:
    """The OpenAI chat.completion for a Messages API response, and its usage."""
    content = data.get("content") or []
    text = "".join(b.get("text", "") for b in content if b.get("type") == "text")
    calls = [
        {"id": b["id"], "type": "function",
         "function": {"name": b["name"], "arguments": orjson.dumps(b.get("input") or {}).decode()}}
        for b in content if b.get("type") == "tool_use"
    ]
    message: dict[str, Any] = {"role": "assistant", "content": (text or None) if calls else text}
    if calls:
        message["tool_calls"] = calls
    usage_data = data.get("usage") or {}
    usage = _usage(usage_data) if isinstance(usage_data, Mapping) else None  # None: the gateway estimates it
    completion = {
        "id": data.get("id", "msg"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None,
                     "finish_reason": FINISH_REASONS.get(str(data.get("stop_reason")), "stop"),
                     # The stop string that ended the answer, where vLLM reports it (None otherwise).
                     "stop_reason": data.get("stop_sequence") if data.get("stop_reason") == "stop_sequence" else None}],
        "usage": usage_dict(usage or Usage()),
    }
    return completion, usage


def _error_code(error: Mapping[str, object]) -> str:
    """An Anthropic error's code: its type (overloaded_error, invalid_request_error, ...)."""
    return str(error.get("type") or "")


class AnthropicAdapter:
    """Speaks to Anthropic's /v1/messages."""

    path = "/v1/messages"

    def auth_headers(self, key: str | None) -> dict[str, str]:
        """x-api-key and the API version."""
        headers = {"anthropic-version": API_VERSION}
        if key:
            headers["x-api-key"] = key
        return headers

    def encode(self, body: Mapping[str, Any], wire_model: str, *, stream: bool) -> bytes:
        """The translated request body."""
        return orjson.dumps(to_anthropic(body, wire_model, stream=stream))

    def decode(self, content: bytes, model: str) -> tuple[bytes, Usage | None]:
        """The OpenAI-format body and its usage."""
        data = orjson.loads(content)
        if not isinstance(data, dict) or data.get("type") != "message":
            raise UpstreamServerError(f"{model}: upstream answered something that is not a message", model=model)
        completion, usage = from_anthropic(data, model)
        return orjson.dumps(completion), usage

    def stream(self, model: str, body: Mapping[str, Any]) -> AnthropicStream:
        """A translator from Messages events to OpenAI chunks."""
        return AnthropicStream(model, include_usage=bool((body.get("stream_options") or {}).get("include_usage")))

    def error(self, status: int, content: bytes, headers: Mapping[str, str], model: str) -> UpstreamError:
        """The switchman error for an HTTP error answer (529 overloaded counts as a 5xx)."""
        return error_answer(status, content, headers, model, _error_code)

    def map_errors(self, model: str) -> MappedErrors:
        """Translate transport and decoding failures into the switchman error tree."""
        return MappedErrors(model)
