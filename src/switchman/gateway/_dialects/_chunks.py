"""Reading the relayed chat.completion.chunk stream, for the dialects that translate it onward.

A dialect's stream translator subclasses `ChunkTranslator` and says what to emit for each thing
the chat stream carries (text, a tool call starting, its arguments, the finish, usage, the end or
an error); parsing the SSE pieces and the chunk JSON happens once, here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from ..._exceptions import UpstreamServerError
from .._wire import Usage, reported_usage, sse_data

__all__ = ["Answer", "ChunkTranslator", "first_answer", "usage_from"]

#: Tool calls one answer may make (an index past it is an upstream's mistake, not a call).
_MAX_TOOL_CALLS = 1024


def usage_from(data: Any) -> Usage | None:
    """Usage from an OpenAI usage object (prompt tokens include cached ones)."""
    if not isinstance(data, dict):
        return None
    details = data.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else 0
    return reported_usage(data.get("prompt_tokens"), data.get("completion_tokens"), cached)


@dataclass(frozen=True, slots=True)
class Answer:
    """The first choice of a chat.completion, as a dialect reads it (fields of the wrong type left out)."""

    text: str
    calls: tuple[tuple[str, str, str], ...]  # (id, function name, JSON arguments) per tool call
    finish: str | None
    stop: str | None  # the stop string that ended it, where the upstream says


def _arguments(raw: Any) -> str:
    """A tool call's JSON arguments: the text an upstream sent, or the JSON of the object it sent instead."""
    if isinstance(raw, str):
        return raw
    return orjson.dumps(raw).decode() if isinstance(raw, Mapping | list) else ""


def first_answer(completion: Mapping[str, Any]) -> Answer:
    """The answer a non-streamed chat.completion carries: an upstream's body, relayed as it came, so of any shape."""
    choices = completion.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], Mapping) else {}
    message = choice.get("message")
    message = message if isinstance(message, Mapping) else {}
    text = message.get("content")
    if isinstance(text, list):
        text = "".join(p["text"] for p in text if isinstance(p, Mapping) and isinstance(p.get("text"), str))
    calls = []
    raw_calls = message.get("tool_calls")
    for call in raw_calls if isinstance(raw_calls, list) else ():
        if isinstance(call, Mapping):
            function = call.get("function")
            function = function if isinstance(function, Mapping) else {}
            name = function.get("name")
            calls.append((str(call.get("id") or ""), name if isinstance(name, str) else "",
                          _arguments(function.get("arguments"))))
    finish, stop = choice.get("finish_reason"), choice.get("stop_reason")
    return Answer(text if isinstance(text, str) else "", tuple(calls), finish if isinstance(finish, str) else None,
                  stop if isinstance(stop, str) else None)


class ChunkTranslator:
    """Parses relayed OpenAI SSE pieces and calls one `on_*` method per thing they carry.

    The pieces are an OpenAI-compatible upstream's own events, relayed as they came: a field of the wrong
    type is skipped (as a chat client would skip it), and an event that is no JSON object fails the stream
    with an upstream error (which the relay records, and sends back through `on_error`).
    """

    def __init__(self, model: str) -> None:
        self.model = model
        self.usage: Usage | None = None
        self.ended = False
        # Events made but not sent: a dialect's opening ones, and what a piece gave before an event of it that
        # failed the stream. They go out first with the next piece, the failure's error (a Responses client
        # refuses an error before response.created; the text before a bad event is the client's too).
        self.unsent: list[bytes] = []

    def feed(self, piece: bytes) -> list[bytes]:
        """Client-bound bytes for one relayed piece (one or more SSE events)."""
        out, self.unsent = self.unsent, []
        for event in piece.split(b"\n\n"):
            data = sse_data(event.strip()) if event.strip() else None
            if data is None or self.ended:
                continue
            if data == b"[DONE]":
                self.ended = True
                out += self.on_done()
                continue
            try:
                chunk = orjson.loads(data)
            except orjson.JSONDecodeError:
                chunk = None
            if not isinstance(chunk, dict):
                self.unsent = out
                raise UpstreamServerError(f"{self.model}: upstream sent a stream event that is not a JSON object",
                                          model=self.model)
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
        choices = chunk.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta")
            delta = delta if isinstance(delta, dict) else {}
            content = delta.get("content")
            if isinstance(content, str) and content:
                out += self.on_text(content)
            calls = delta.get("tool_calls")
            for call in calls if isinstance(calls, list) else ():
                out += self._tool_call(call)
            finish = choice.get("finish_reason")
            if isinstance(finish, str) and finish:
                stop = choice.get("stop_reason")
                out += self.on_finish(finish, stop if isinstance(stop, str) else None)
        return out

    def _tool_call(self, call: Any) -> list[bytes]:
        if not isinstance(call, dict):
            return []
        index = call.get("index", 0)
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < _MAX_TOOL_CALLS:
            return []
        function = call.get("function")
        function = function if isinstance(function, dict) else {}
        out: list[bytes] = []
        name, arguments = function.get("name"), function.get("arguments")
        if call.get("id") or name:
            out += self.on_tool_start(index, str(call.get("id") or f"call_{index}"),
                                      name if isinstance(name, str) else "")
        if isinstance(arguments, str):
            if arguments:
                out += self.on_tool_arguments(index, arguments)
        elif arguments_json := _arguments(arguments):  # the object itself, as `first_answer` reads it
            out += self.on_tool_arguments(index, arguments_json)
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
