"""What the fake upstream answers: OpenAI and Anthropic bodies, stream events and error bodies.

Pure functions from a request body to response bytes, so the server module only moves bytes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import struct
import time
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = [
    "TRUNCATED_WORDS",
    "anthropic_error",
    "anthropic_message",
    "anthropic_stream",
    "openai_completion",
    "openai_embeddings",
    "openai_error",
    "openai_stream",
    "reply_plan",
]

_FINISH = {"stop": "end_turn", "tool_calls": "tool_use"}
#: Words a "truncated" fault's answer stops after (the model's own output limit, not the caller's).
TRUNCATED_WORDS = 2


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _last_user_text(body: Mapping[str, Any]) -> str:
    for message in reversed(body.get("messages") or []):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            return " ".join(p.get("text", "") for p in content if isinstance(p, Mapping) and p.get("type") == "text")
    return ""


def _wants_tool(body: Mapping[str, Any], anthropic: bool) -> str | None:
    """Name of the tool to call: the request offers tools and its last turn is the user's own text."""
    tools = body.get("tools") or []
    if not tools:
        return None
    choice = body.get("tool_choice")
    if choice == "none" or (isinstance(choice, Mapping) and choice.get("type") == "none"):
        return None
    last = (body.get("messages") or [{}])[-1]
    if last.get("role") != "user":
        return None
    content = last.get("content")
    if anthropic and isinstance(content, list) and any(p.get("type") == "tool_result" for p in content):
        return None
    if isinstance(choice, Mapping):
        named = choice.get("name") or (choice.get("function") or {}).get("name")
        if named:
            return str(named)
    first = tools[0]
    return str(first["name"] if anthropic else first["function"]["name"])


def reply_plan(body: Mapping[str, Any], text: str | None, *, anthropic: bool) -> tuple[str, str | None, str]:
    """(text, tool name or None, tool arguments JSON) for this request."""
    model = str(body.get("model", "model"))
    reply = text if text is not None else f"Hello from {model}."
    tool = _wants_tool(body, anthropic)
    arguments = json.dumps({"query": _last_user_text(body)}) if tool else ""
    return reply, tool, arguments


def _cut(body: Mapping[str, Any], reply: str, *, truncated: bool = False) -> tuple[str, str, str | None]:
    """The reply cut at the first stop sequence, else at the request's token limit (one word = one
    token here; `truncated`: at the model's own limit), its finish reason and the stop string that
    ended it (vLLM reports it as the choice's `stop_reason`)."""
    stops = body.get("stop") or body.get("stop_sequences") or []
    for stop in [stops] if isinstance(stops, str) else stops:
        if stop and stop in reply:
            return reply[: reply.index(stop)], "stop", stop
    limit = TRUNCATED_WORDS if truncated else body.get("max_completion_tokens") or body.get("max_tokens")
    words = reply.split(" ")
    if isinstance(limit, int) and 0 < limit < len(words):
        return " ".join(words[:limit]), "length", None
    return reply, "stop", None


def _usage_numbers(raw_len: int, reply: str) -> tuple[int, int]:
    return max(raw_len // 4, 1), max(len(reply.split()), 1)


def openai_completion(body: Mapping[str, Any], raw_len: int, text: str | None, *, truncated: bool = False) -> bytes:
    """A non-stream chat.completion."""
    reply, tool, arguments = reply_plan(body, text, anthropic=False)
    reply, finish, stop = _cut(body, reply, truncated=truncated)
    message: dict[str, Any] = {"role": "assistant", "content": None if tool else reply}
    if tool:
        message["tool_calls"] = [
            {"id": "call_fake_1", "type": "function", "function": {"name": tool, "arguments": arguments}}
        ]
    n = int(body.get("n") or 1)
    prompt, completion = _usage_numbers(raw_len, reply)
    return _dumps({
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model"),
        "choices": [
            {"index": i, "message": message, "logprobs": None, "finish_reason": "tool_calls" if tool else finish,
             "stop_reason": stop}
            for i in range(n)
        ],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
    })


def _chunk(model: Any, delta: Mapping[str, Any], finish: str | None = None) -> bytes:
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
    data = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0, "model": model,
            "choices": [choice]}
    return b"data: " + _dumps(data) + b"\n\n"


def openai_stream(
    body: Mapping[str, Any], raw_len: int, text: str | None, *, truncated: bool = False
) -> Iterator[bytes]:
    """SSE events of a streamed chat completion, one word per chunk."""
    model = body.get("model")
    reply, tool, arguments = reply_plan(body, text, anthropic=False)
    yield _chunk(model, {"role": "assistant", "content": ""})
    if tool:
        call = {"index": 0, "id": "call_fake_1", "type": "function", "function": {"name": tool, "arguments": ""}}
        yield _chunk(model, {"tool_calls": [call]})
        half = len(arguments) // 2
        for part in (arguments[:half], arguments[half:]):
            yield _chunk(model, {"tool_calls": [{"index": 0, "function": {"arguments": part}}]})
        yield _chunk(model, {}, "tool_calls")
    else:
        reply, finish, _ = _cut(body, reply, truncated=truncated)
        words = reply.split(" ")
        for i, word in enumerate(words):
            yield _chunk(model, {"content": word if i == 0 else " " + word})
        yield _chunk(model, {}, finish)
    if (body.get("stream_options") or {}).get("include_usage"):
        prompt, completion = _usage_numbers(raw_len, reply)
        usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
        data: dict[str, Any] = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0,
                                "model": model, "choices": [], "usage": usage}
        yield b"data: " + _dumps(data) + b"\n\n"
    yield b"data: [DONE]\n\n"


def anthropic_message(body: Mapping[str, Any], raw_len: int, text: str | None, *, truncated: bool = False) -> bytes:
    """A non-stream Messages API response."""
    reply, tool, arguments = reply_plan(body, text, anthropic=True)
    reply, finish, stop = _cut(body, reply, truncated=truncated)
    content: list[dict[str, Any]] = [{"type": "text", "text": reply}]
    if tool:
        content.append({"type": "tool_use", "id": "toolu_fake_1", "name": tool, "input": json.loads(arguments)})
    prompt, completion = _usage_numbers(raw_len, reply)
    return _dumps({
        "id": "msg_fake",
        "type": "message",
        "role": "assistant",
        "model": body.get("model"),
        "content": content,
        "stop_reason": "tool_use" if tool else _STOP_REASONS[finish, stop is not None],
        "stop_sequence": None if tool else stop,
        "usage": {"input_tokens": prompt, "output_tokens": completion},
    })


_STOP_REASONS = {("stop", False): "end_turn", ("stop", True): "stop_sequence", ("length", False): "max_tokens"}


def _event(name: str, data: Mapping[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + _dumps(data) + b"\n\n"


def anthropic_stream(
    body: Mapping[str, Any], raw_len: int, text: str | None, *, truncated: bool = False
) -> Iterator[bytes]:
    """Messages API stream events: message_start, blocks with deltas, message_delta, message_stop."""
    reply, tool, arguments = reply_plan(body, text, anthropic=True)
    reply, finish, stop = _cut(body, reply, truncated=truncated)
    prompt, completion = _usage_numbers(raw_len, reply)
    message: dict[str, Any] = {"id": "msg_fake", "type": "message", "role": "assistant", "model": body.get("model"),
               "content": [], "stop_reason": None, "stop_sequence": None,
               "usage": {"input_tokens": prompt, "output_tokens": 1}}
    yield _event("message_start", {"type": "message_start", "message": message})
    yield _event("content_block_start",
                 {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
    yield _event("ping", {"type": "ping"})
    for i, word in enumerate(reply.split(" ")):
        delta = {"type": "text_delta", "text": word if i == 0 else " " + word}
        yield _event("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta})
    yield _event("content_block_stop", {"type": "content_block_stop", "index": 0})
    if tool:
        block = {"type": "tool_use", "id": "toolu_fake_1", "name": tool, "input": {}}
        yield _event("content_block_start", {"type": "content_block_start", "index": 1, "content_block": block})
        half = len(arguments) // 2
        for part in (arguments[:half], arguments[half:]):
            delta = {"type": "input_json_delta", "partial_json": part}
            yield _event("content_block_delta", {"type": "content_block_delta", "index": 1, "delta": delta})
        yield _event("content_block_stop", {"type": "content_block_stop", "index": 1})
    reason = "tool_use" if tool else _STOP_REASONS[finish, stop is not None]
    ending: dict[str, Any] = {"type": "message_delta",
                              "delta": {"stop_reason": reason, "stop_sequence": None if tool else stop},
                              "usage": {"output_tokens": completion}}
    yield _event("message_delta", ending)
    yield _event("message_stop", {"type": "message_stop"})


def openai_embeddings(body: Mapping[str, Any]) -> bytes:
    """An embeddings response: a deterministic unit vector per input (8 numbers, or `dimensions`)."""
    inputs = body.get("input")
    one = isinstance(inputs, str) or (isinstance(inputs, list) and bool(inputs) and isinstance(inputs[0], int))
    texts = [inputs] if one else list(inputs or [])
    size = int(body.get("dimensions") or 8)
    data = []
    for i, text in enumerate(texts):
        seed = hashlib.sha256(json.dumps(text).encode()).digest()
        raw = [(seed[j % len(seed)] - 127.5) for j in range(size)]
        norm = math.sqrt(sum(v * v for v in raw)) or 1.0
        vector = [v / norm for v in raw]
        embedding: Any = vector
        if body.get("encoding_format") == "base64":
            embedding = base64.b64encode(struct.pack(f"<{size}f", *vector)).decode()
        data.append({"object": "embedding", "index": i, "embedding": embedding})
    tokens = sum(len(str(t).split()) for t in texts)
    return _dumps({"object": "list", "data": data, "model": body.get("model"),
                   "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})


_OPENAI_ERRORS: dict[str, tuple[int, str, str | None, str]] = {
    "rate_limit": (429, "requests", "rate_limit_exceeded", "Rate limit reached for requests"),
    "server_error": (500, "server_error", None, "The server had an error while processing your request."),
    "overloaded": (503, "server_error", None, "The engine is currently overloaded."),
    "context_length": (400, "invalid_request_error", "context_length_exceeded",
                       "This model's maximum context length is 8192 tokens. However, your messages resulted "
                       "in 9000 tokens. Please reduce the length of the messages."),
    "content_policy": (400, "invalid_request_error", "content_policy_violation",
                       "Your request was rejected as a result of our safety system."),
    "bad_request": (400, "invalid_request_error", None, "Invalid value for 'temperature'."),
    "auth_error": (401, "invalid_request_error", "invalid_api_key", "Incorrect API key provided: {key}."),
}

_ANTHROPIC_ERRORS: dict[str, tuple[int, str, str]] = {
    "rate_limit": (429, "rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit"),
    "server_error": (500, "api_error", "Internal server error"),
    "overloaded": (529, "overloaded_error", "Overloaded"),
    "context_length": (400, "invalid_request_error", "prompt is too long: 210000 tokens > 200000 maximum"),
    "content_policy": (400, "invalid_request_error", "Output blocked by content filtering policy"),
    "bad_request": (400, "invalid_request_error", "temperature: range: 0..1"),
    "auth_error": (401, "authentication_error", "invalid x-api-key {key}"),
}


def openai_error(kind: str, key: str = "") -> tuple[int, bytes]:
    """Status and body of an OpenAI error of this kind."""
    status, kind_type, code, message = _OPENAI_ERRORS[kind]
    return status, _dumps({"error": {"message": message.format(key=key), "type": kind_type, "param": None,
                                     "code": code}})


def anthropic_error(kind: str, key: str = "") -> tuple[int, bytes]:
    """Status and body of an Anthropic error of this kind."""
    status, kind_type, message = _ANTHROPIC_ERRORS[kind]
    return status, _dumps({"type": "error", "error": {"type": kind_type, "message": message.format(key=key)}})
