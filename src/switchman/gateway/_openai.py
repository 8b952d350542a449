"""The OpenAI chat-completions wire format: passed through, with the model name swapped.

Non-stream bodies go back to the client byte for byte; streams are relayed event by event. The
only change to a stream: switchman asks the upstream for usage, and drops that usage chunk again
when the client had not asked for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from .._exceptions import UpstreamError, UpstreamServerError
from ._transport import MappedErrors
from ._wire import TRANSLATED, Usage, error_answer, reported_usage, sse_data

__all__ = ["OpenAIAdapter", "OpenAIStream"]

_DONE = b"data: [DONE]\n\n"


def _usage(data: Mapping[str, Any] | None) -> Usage | None:
    # `type(...) is dict` first: what orjson gives, without the slower Mapping (ABC) check.
    if type(data) is not dict and not isinstance(data, Mapping):
        return None
    details = data.get("prompt_tokens_details") or {}
    cached = details.get("cached_tokens") if type(details) is dict or isinstance(details, Mapping) else 0
    return reported_usage(data.get("prompt_tokens"), data.get("completion_tokens"), cached)


def _has_text(data: bytes) -> bool:
    """Whether a chunk carries non-empty `content` (bytes search: no JSON parse per chunk)."""
    for marker in (b'"content":"', b'"content": "'):
        at = data.find(marker)
        if at >= 0 and data[at + len(marker): at + len(marker) + 1] not in (b'"', b""):
            return True
    return False


class OpenAIStream:
    """Relays an OpenAI SSE stream; notes usage and the end, raises on an in-stream error event."""

    __slots__ = ("_drop_usage", "_model", "chunks", "finished", "has_output", "truncated", "usage")

    def __init__(self, model: str, *, drop_usage: bool) -> None:
        self._model = model
        self._drop_usage = drop_usage
        self.usage: Usage | None = None
        self.finished = False
        self.chunks = 0
        self.has_output = False  # any non-empty content or a tool call (an empty answer escalates a session)
        self.truncated = False  # finish_reason "length"

    def feed(self, event: bytes) -> list[bytes]:
        """Client-bound bytes for one upstream event."""
        data: bytes | None
        if event.startswith(b"data:") and b"\n" not in event:  # (sse_data's usual case, without the call)
            data = event[5:].lstrip(b" ")
        else:
            data = sse_data(event)
            if data is None:
                return []
        if data == b"[DONE]":
            self.finished = True
            return [_DONE]
        if data.startswith(b'{"error"'):
            error = orjson.loads(data).get("error") or {}
            message = error.get("message", error) if isinstance(error, dict) else error
            raise UpstreamServerError(f"{self._model}: upstream stream error: {message}", model=self._model)
        self.chunks += 1
        if not self.has_output and (_has_text(data) or b'"tool_calls"' in data):
            self.has_output = True
        # One search each for what both spellings share, the exact ones only when it is there.
        if b'"length"' in data and (b'"finish_reason":"length"' in data or b'"finish_reason": "length"' in data):
            self.truncated = True
        if b'"usage":' in data and (b'"usage":{' in data or b'"usage": {' in data):
            parsed = orjson.loads(data)
            self.usage = _usage(parsed.get("usage")) or self.usage
            if self._drop_usage and not parsed.get("choices"):
                return []
        return [event + b"\n\n"]

    def close(self) -> list[bytes]:
        """Bytes to end a stream whose upstream ended without [DONE]."""
        return [] if self.finished else [_DONE]


def _without_cache_control(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages with Anthropic's cache_control taken off their parts (and system parts joined to text)."""
    out = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list) and any(isinstance(p, dict) and "cache_control" in p for p in content):
            parts = [{k: v for k, v in p.items() if k != "cache_control"} for p in content]
            if message.get("role") == "system":
                message = {**message, "content": "\n\n".join(str(p.get("text") or "") for p in parts)}
            else:
                message = {**message, "content": parts}
        out.append(message)
    return out


def _error_code(error: Mapping[str, object]) -> str:
    """An OpenAI error's code and type together (either may name a context window or policy problem)."""
    return f"{error.get('code') or ''} {error.get('type') or ''}"


class OpenAIAdapter:
    """Speaks to any OpenAI-compatible /chat/completions endpoint."""

    path = "/chat/completions"

    def auth_headers(self, key: str | None) -> dict[str, str]:
        """Bearer authentication."""
        return {"authorization": f"Bearer {key}"} if key else {}

    def encode(self, body: Mapping[str, Any], wire_model: str, *, stream: bool) -> bytes:
        """The upstream request body: the client's, with the provider's model name (and usage asked for)."""
        out = dict(body)
        out["model"] = wire_model
        if out.pop(TRANSLATED, None):
            out["messages"] = _without_cache_control(out["messages"])
        if stream:
            options = dict(out.get("stream_options") or {})
            if not options.get("include_usage"):
                options["include_usage"] = True
                out["stream_options"] = options
        return orjson.dumps(out)

    def decode(self, content: bytes, model: str) -> tuple[bytes, Usage | None]:
        """The client's body (unchanged) and the usage it reports."""
        data = orjson.loads(content)
        if not isinstance(data, dict) or "choices" not in data:
            raise UpstreamServerError(f"{model}: upstream answered without choices", model=model)
        return content, _usage(data.get("usage"))

    def stream(self, model: str, body: Mapping[str, Any]) -> OpenAIStream:
        """A relay for one stream; drops the usage chunk unless the client asked for it."""
        wants_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return OpenAIStream(model, drop_usage=not wants_usage)

    def error(self, status: int, content: bytes, headers: Mapping[str, str], model: str) -> UpstreamError:
        """The switchman error for an HTTP error answer."""
        return error_answer(status, content, headers, model, _error_code)

    def map_errors(self, model: str) -> MappedErrors:
        """Translate transport and decoding failures into the switchman error tree."""
        return MappedErrors(model)
