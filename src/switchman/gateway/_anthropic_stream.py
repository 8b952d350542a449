"""Anthropic Messages stream events → OpenAI chat.completion.chunk events, as they arrive."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import orjson

from ._wire import Usage, classify_error, reported_usage, sse_data, token_count

__all__ = ["FINISH_REASONS", "AnthropicStream", "prompt_tokens"]

#: Anthropic stop_reason → OpenAI finish_reason.
FINISH_REASONS = {
    "end_turn": "stop", "stop_sequence": "stop", "pause_turn": "stop", "max_tokens": "length",
    "model_context_window_exceeded": "length", "tool_use": "tool_calls", "refusal": "content_filter",
}
_DONE = b"data: [DONE]\n\n"


def prompt_tokens(usage: Mapping[str, Any]) -> tuple[int, int] | None:
    """The prompt's tokens as ours count them, and the cache reads among them, from Anthropic's usage object (its
    input_tokens exclude cache reads and writes); None when a count is not a plausible one."""
    fresh, read = token_count(usage.get("input_tokens")), token_count(usage.get("cache_read_input_tokens"))
    written = token_count(usage.get("cache_creation_input_tokens"))
    if fresh is None or read is None or written is None:
        return None
    return fresh + read + written, read


class AnthropicStream:
    """Translates one stream; keeps usage, tool-call indexes and whether the message ended."""

    __slots__ = (
        "_bad",
        "_cached",
        "_created",
        "_id",
        "_include_usage",
        "_input",
        "_model",
        "_output",
        "_tools",
        "chunks",
        "finished",
        "has_output",
        "truncated",
        "usage",
    )

    def __init__(self, model: str, *, include_usage: bool) -> None:
        self._model = model
        self._include_usage = include_usage
        self._created = int(time.time())
        self._id = "msg"
        self._tools: dict[int, int] = {}
        self._input = self._output = self._cached = 0
        self._bad = False  # the upstream reported a count no answer has
        self.usage: Usage | None = None
        self.finished = False
        self.chunks = 0
        self.has_output = False  # any text or tool call (an empty answer escalates a session)
        self.truncated = False  # stop_reason max_tokens → finish_reason "length"

    def _chunk(self, delta: dict[str, Any], finish: str | None = None, stop: str | None = None) -> bytes:
        self.chunks += 1
        if delta.get("content") or delta.get("tool_calls"):
            self.has_output = True
        if finish == "length":
            self.truncated = True
        choice: dict[str, Any] = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        if stop is not None:
            choice["stop_reason"] = stop  # the stop string that ended the answer, as vLLM reports it
        data = {"id": self._id, "object": "chat.completion.chunk", "created": self._created, "model": self._model,
                "choices": [choice]}
        return b"data: " + orjson.dumps(data) + b"\n\n"

    def feed(self, event: bytes) -> list[bytes]:
        """Client-bound bytes for one upstream event."""
        raw = sse_data(event)
        if not raw:
            return []
        data = orjson.loads(raw)
        kind = data.get("type")
        if kind == "content_block_delta":
            delta = data["delta"]
            if delta.get("type") == "text_delta":
                return [self._chunk({"content": delta["text"]})]
            if delta.get("type") == "input_json_delta" and data.get("index") in self._tools:
                call = {"index": self._tools[data["index"]], "function": {"arguments": delta["partial_json"]}}
                return [self._chunk({"tool_calls": [call]})]
            return []
        if kind == "message_start":
            message = data.get("message") or {}
            self._id = message.get("id", self._id)
            self._count(message.get("usage") or {})
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind == "content_block_start":
            return self._block_start(data)
        if kind == "message_delta":
            self._count(data.get("usage") or {})
            delta = data.get("delta") or {}
            reason = delta.get("stop_reason")
            stop = delta.get("stop_sequence") if reason == "stop_sequence" else None
            return [self._chunk({}, FINISH_REASONS.get(str(reason), "stop"), stop if isinstance(stop, str) else None)]
        if kind == "message_stop":
            return self._stop()
        if kind == "error":
            error = data.get("error") or {}
            raise classify_error(529 if error.get("type") == "overloaded_error" else 500,
                                 str(error.get("message", "")), str(error.get("type", "")), model=self._model)
        return []

    def _block_start(self, data: dict[str, Any]) -> list[bytes]:
        block = data.get("content_block") or {}
        if block.get("type") == "tool_use":
            index = len(self._tools)
            self._tools[data.get("index", index)] = index
            call = {"index": index, "id": block.get("id"), "type": "function",
                    "function": {"name": block.get("name"), "arguments": ""}}
            return [self._chunk({"tool_calls": [call]})]
        if block.get("type") == "text" and block.get("text"):
            return [self._chunk({"content": block["text"]})]
        return []

    def _count(self, usage: dict[str, Any]) -> None:
        # message_delta may send input_tokens as null (not reported there): message_start's counts stand.
        if usage.get("input_tokens") is not None:
            counted = prompt_tokens(usage)
            if counted is None:
                self._bad = True
            else:
                self._input, self._cached = counted
        if "output_tokens" in usage:
            output = token_count(usage.get("output_tokens"))
            self._bad = self._bad or output is None
            self._output = output or 0
        # A count no answer has makes the stream's usage unknown: the gateway estimates it.
        self.usage = None if self._bad else reported_usage(self._input, self._output, self._cached)

    def _stop(self) -> list[bytes]:
        self.finished = True
        out = []
        if self._include_usage and self.usage is not None:
            usage = {"prompt_tokens": self.usage.input_tokens, "completion_tokens": self.usage.output_tokens,
                     "total_tokens": self.usage.input_tokens + self.usage.output_tokens}
            data = {"id": self._id, "object": "chat.completion.chunk", "created": self._created,
                    "model": self._model, "choices": [], "usage": usage}
            out.append(b"data: " + orjson.dumps(data) + b"\n\n")
        out.append(_DONE)
        return out

    def close(self) -> list[bytes]:
        """Bytes to end a stream whose upstream ended without message_stop."""
        return [] if self.finished else [_DONE]
