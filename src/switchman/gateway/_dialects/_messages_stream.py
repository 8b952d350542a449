"""The relayed chat stream as Anthropic's Messages event sequence, as it arrives.

    message_start, ping,
    content_block_start / content_block_delta (text_delta | input_json_delta) / content_block_stop  (per block),
    message_delta (stop_reason, usage), message_stop

Text and each tool call become blocks in the order they arrive; an error after the stream has
started becomes Anthropic's `error` event. A tool call's arguments are relayed as input_json_deltas while they
still begin a JSON object (`JsonObjectPrefix`): Anthropic's clients parse the deltas so far as JSON at each one
(its SDK raises on text that cannot begin an object), and an OpenAI-compatible upstream, a small local model most
of all, may send arguments that are not JSON, or JSON that is no object. From the first piece that cannot
continue an object the rest is held; a call none of whose arguments went out gets, as its block closes, one
delta holding the object a non-streamed answer gives (`tool_input`: `{"arguments": <the text>}`), and one whose
start went out keeps what its client read of it (logged at INFO as the stream ends, without the text: an operator
can see a client got a call's arguments cut). The stop reason waits for the usage chunk that follows
the finish chunk, so message_delta carries the real token counts.
"""

from __future__ import annotations

import io
import logging
from typing import Any

import orjson

from .._anthropic import tool_input
from .._wire import Usage
from ._chunks import ChunkTranslator
from ._json_prefix import JsonObjectPrefix
from ._messages import anthropic_usage, stop_reason

__all__ = ["MessagesStream"]

logger = logging.getLogger("switchman.gateway")

#: OpenAI error type → Anthropic error type, for an error event in the stream.
_ERROR_TYPES = {"rate_limit_error": "rate_limit_error", "invalid_request_error": "invalid_request_error",
                "insufficient_quota": "rate_limit_error"}


def _event(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


class _Arguments:
    """One tool call's arguments: whether any went out, what is held back, the check of what went out.

    What is held is written to one buffer, not kept as pieces: an upstream may send a character a piece, and a
    list of those cost ~58 bytes each (until max_tokens)."""

    __slots__ = ("check", "held", "sent")

    def __init__(self) -> None:
        self.check = JsonObjectPrefix()
        self.held: io.StringIO | None = None  # from the first piece that cannot go on
        self.sent = False


class MessagesStream(ChunkTranslator):
    """Translates one stream for an Anthropic client."""

    def __init__(self, *, message_id: str, model: str, input_tokens: int) -> None:
        super().__init__(model)
        self._id = message_id
        self._model = model
        self._input_tokens = input_tokens  # switchman's count, until the upstream's arrives at the end
        self._started = False
        self._open: tuple[str, int] | None = None  # ("text", block) or ("tool", OpenAI tool index)
        self._blocks = 0
        self._tool_blocks: dict[int, int] = {}
        self._arguments: dict[int, _Arguments] = {}  # each tool call's arguments so far (by OpenAI tool index)
        self._finish: tuple[str, str | None] = ("end_turn", None)

    def _start(self) -> list[bytes]:
        if self._started:
            return []
        self._started = True
        message: dict[str, Any] = {
            "id": self._id, "type": "message", "role": "assistant", "model": self._model, "content": [],
            "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": self._input_tokens, "output_tokens": 0},
        }
        return [_event("message_start", {"type": "message_start", "message": message}),
                _event("ping", {"type": "ping"})]

    def _close_block(self) -> list[bytes]:
        if self._open is None:
            return []
        out: list[bytes] = []
        if self._open[0] == "text":
            index = self._open[1]
        else:
            index = self._tool_blocks[self._open[1]]
            arguments = self._arguments[self._open[1]]
            if arguments.held is not None and not arguments.sent:  # none went out: a non-streamed answer's object
                out.append(self._input_delta(index, orjson.dumps(tool_input(arguments.held.getvalue())).decode()))
                arguments.held = io.StringIO()
        self._open = None
        return [*out, _event("content_block_stop", {"type": "content_block_stop", "index": index})]

    @staticmethod
    def _input_delta(block: int, partial_json: str) -> bytes:
        return _event("content_block_delta", {"type": "content_block_delta", "index": block,
                                              "delta": {"type": "input_json_delta", "partial_json": partial_json}})

    def _open_block(self, block: dict[str, Any]) -> tuple[list[bytes], int]:
        out = self._close_block()
        index = self._blocks
        self._blocks += 1
        out.append(_event("content_block_start", {"type": "content_block_start", "index": index,
                                                  "content_block": block}))
        return out, index

    def feed(self, piece: bytes) -> list[bytes]:
        """message_start first, then whatever the piece carries."""
        if not self._started:
            self.unsent[:0] = self._start()
        return super().feed(piece)

    def on_text(self, text: str) -> list[bytes]:
        out: list[bytes] = []
        if self._open is None or self._open[0] != "text":
            out, index = self._open_block({"type": "text", "text": ""})
            self._open = ("text", index)
        delta = {"type": "text_delta", "text": text}
        out.append(_event("content_block_delta", {"type": "content_block_delta", "index": self._open[1],
                                                  "delta": delta}))
        return out

    def on_tool_start(self, index: int, call_id: str, name: str) -> list[bytes]:
        if index in self._tool_blocks:  # a repeated header for a call already open
            return []
        out, block = self._open_block({"type": "tool_use", "id": call_id, "name": name, "input": {}})
        self._tool_blocks[index] = block
        self._arguments[index] = _Arguments()
        self._open = ("tool", index)
        return out

    def on_tool_arguments(self, index: int, delta: str) -> list[bytes]:
        out: list[bytes] = []
        if index not in self._tool_blocks:
            out = self.on_tool_start(index, f"call_{index}", "")
        arguments = self._arguments[index]
        if not arguments.sent and arguments.held is None:
            delta = delta.lstrip(" \t\r\n")  # whitespace alone is no JSON to the SDK's parser (it raises)
            if not delta:
                return out
        if arguments.held is None and not arguments.check.feed(delta):
            arguments.held = io.StringIO()
        if arguments.held is not None:
            arguments.held.write(delta)
            return out
        arguments.sent = True  # (to its block even once closed: an upstream that interleaves its calls)
        return [*out, self._input_delta(self._tool_blocks[index], delta)]

    def on_finish(self, reason: str, stop_sequence: str | None) -> list[bytes]:
        self._finish = stop_reason(reason, stop_sequence)
        return self._close_block()

    def _log_cut_arguments(self) -> None:
        """One line per call whose client got only the start of its arguments (the rest was held and is dropped);
        the count of characters, never the text (arguments may hold secrets)."""
        for index, arguments in self._arguments.items():
            if arguments.sent and arguments.held is not None and arguments.held.tell():
                logger.info("%s (%s): tool call %d's arguments stopped being JSON after part went out; %d characters"
                            " held back and dropped, the client has them cut", self._id, self._model, index,
                            arguments.held.tell())

    def on_done(self) -> list[bytes]:
        out = self._close_block()
        self._log_cut_arguments()
        reason, sequence = self._finish
        usage = self.usage or Usage(self._input_tokens, 0)
        data = {"type": "message_delta", "delta": {"stop_reason": reason, "stop_sequence": sequence},
                "usage": anthropic_usage(usage)}
        return [*out, _event("message_delta", data), _event("message_stop", {"type": "message_stop"})]

    def on_error(self, error: dict[str, Any]) -> list[bytes]:
        self._log_cut_arguments()
        kind = _ERROR_TYPES.get(str(error.get("type")), "api_error")
        if error.get("code") == "upstream_server_error" and "overloaded" in str(error.get("message", "")).lower():
            kind = "overloaded_error"
        return [_event("error", {"type": "error", "error": {"type": kind, "message": str(error.get("message", ""))}})]
