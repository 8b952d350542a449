"""Reading the relayed chat.completion.chunk stream, for the dialects that translate it onward.

A dialect's stream translator subclasses `ChunkTranslator` and says what to emit for each thing
the chat stream carries (text, a tool call starting, its arguments, the finish, usage, the end or
an error); parsing the SSE pieces and the chunk JSON happens once, here.
"""

from __future__ import annotations

from typing import Any

import orjson

from .._wire import Usage, reported_usage, sse_data

__all__ = ["ChunkTranslator", "usage_from"]


def usage_from(data: Any) -> Usage | None:
    """Usage from an OpenAI usage object (prompt tokens include cached ones)."""
    if not isinstance(data, dict):
        return None
    details = data.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else 0
    return reported_usage(data.get("prompt_tokens"), data.get("completion_tokens"), cached)


class ChunkTranslator:
    """Parses relayed OpenAI SSE pieces and calls one `on_*` method per thing they carry."""

    def __init__(self) -> None:
        self.usage: Usage | None = None
        self.ended = False

    def feed(self, piece: bytes) -> list[bytes]:
        """Client-bound bytes for one relayed piece (one or more SSE events)."""
        out: list[bytes] = []
        for event in piece.split(b"\n\n"):
            data = sse_data(event.strip()) if event.strip() else None
            if data is None or self.ended:
                continue
            if data == b"[DONE]":
                self.ended = True
                out += self.on_done()
                continue
            chunk = orjson.loads(data)
            if "error" in chunk:
                self.ended = True
                out += self.on_error(chunk["error"] if isinstance(chunk["error"], dict) else {})
                continue
            out += self._chunk(chunk)
        return out

    def _chunk(self, chunk: dict[str, Any]) -> list[bytes]:
        out: list[bytes] = []
        usage = usage_from(chunk.get("usage"))
        if usage is not None:
            self.usage = usage
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            if delta.get("content"):
                out += self.on_text(str(delta["content"]))
            for call in delta.get("tool_calls") or ():
                index = int(call.get("index", 0))
                function = call.get("function") or {}
                if call.get("id") or function.get("name"):
                    out += self.on_tool_start(index, str(call.get("id") or f"call_{index}"),
                                              str(function.get("name") or ""))
                if function.get("arguments"):
                    out += self.on_tool_arguments(index, str(function["arguments"]))
            if choice.get("finish_reason"):
                stop = choice.get("stop_reason")
                out += self.on_finish(str(choice["finish_reason"]), stop if isinstance(stop, str) else None)
        return out

    # -- what a dialect emits ------------------------------------------------------------------
    def on_text(self, text: str) -> list[bytes]:
        """A piece of the answer's text."""
        return []

    def on_tool_start(self, index: int, call_id: str, name: str) -> list[bytes]:
        """A tool call begins (OpenAI's tool-call index, its id and the function name)."""
        return []

    def on_tool_arguments(self, index: int, delta: str) -> list[bytes]:
        """More of a tool call's JSON arguments."""
        return []

    def on_finish(self, reason: str, stop_sequence: str | None) -> list[bytes]:
        """The answer's finish reason (and the stop string that ended it, where the upstream says)."""
        return []

    def on_done(self) -> list[bytes]:
        """The stream ended normally (`self.usage` holds the usage, if the upstream sent it)."""
        return []

    def on_error(self, error: dict[str, Any]) -> list[bytes]:
        """The stream failed after it started (an OpenAI error object: message, type, code)."""
        return []
