"""What every wire adapter shares: usage counts, SSE framing, and turning a provider's error into ours.

A provider error becomes one class of the switchman tree, chosen for what the dispatcher does
next: retry (429, 5xx), move to a larger window (context length), move to the content-policy
fallback, or give up (any other 4xx).
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from dataclasses import dataclass

import orjson

from .._exceptions import (
    ContentPolicyViolationError,
    ContextWindowExceededError,
    RateLimitError,
    UpstreamBadRequestError,
    UpstreamError,
    UpstreamServerError,
)
from .._slots import slot_init
from .._tokens import count_tokens

__all__ = [
    "TRANSLATED",
    "Usage",
    "classify_error",
    "error_answer",
    "estimate_output_tokens",
    "reported_usage",
    "token_count",
    "retry_after_seconds",
    "sse_batches",
    "sse_data",
    "sse_events",
]

_CONTEXT_MARKERS = (
    "context_length_exceeded", "maximum context length", "context window", "context length",
    "prompt is too long", "too many tokens", "input is too long", "reduce the length",
)
_POLICY_MARKERS = (
    "content_policy", "content policy", "content_filter", "content filter", "content management policy",
    "safety system", "usage policy", "responsibleaipolicyviolation",
)

#: Marks a chat body translated from another API (Anthropic Messages): its content parts may carry
#: Anthropic's cache_control, which an Anthropic upstream honours and an OpenAI-kind one is spared.
TRANSLATED = "_switchman_translated"


@slot_init
@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts the upstream reported."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0


#: More tokens than one answer of any model holds: a count beyond it (or below 0) is no usage but an upstream's
#: mistake, which would cost a negative amount (a budget credit) or a row the ledger refuses (a lost record).
#: It is the largest a PostgreSQL INTEGER (the ledger's token columns) holds: 2**31 itself is refused.
MAX_REPORTED_TOKENS = 2**31 - 1


def token_count(value: object) -> int | None:
    """A token count an upstream reported (absent: 0); None when it is not a plausible one."""
    if value is None or value == "":
        return 0
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        count = int(value)
    except (ValueError, OverflowError):  # "x", a float too large for an int
        return None
    return count if 0 <= count <= MAX_REPORTED_TOKENS else None


def reported_usage(input_tokens: object, output_tokens: object, cached_input_tokens: object = 0) -> Usage | None:
    """Usage from the counts an upstream reported (absent ones are 0); None, for the gateway to estimate, when
    one is not a plausible token count (negative, huge, not a number)."""
    if cached_input_tokens is None:  # absent, as in most answers (token_count reads it as 0 too)
        cached_input_tokens = 0
    if type(input_tokens) is int and type(output_tokens) is int and type(cached_input_tokens) is int \
            and 0 <= input_tokens <= MAX_REPORTED_TOKENS and 0 <= output_tokens <= MAX_REPORTED_TOKENS \
            and 0 <= cached_input_tokens:  # every answer's usage: checked without a call per count
        return Usage(input_tokens, output_tokens,
                     cached_input_tokens if cached_input_tokens <= input_tokens else input_tokens)
    tin, tout, cached = token_count(input_tokens), token_count(output_tokens), token_count(cached_input_tokens)
    if tin is None or tout is None or cached is None:
        return None
    return Usage(tin, tout, min(cached, tin))


def retry_after_seconds(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds the provider asks us to wait (retry-after-ms, retry-after seconds or HTTP date)."""
    value = headers.get("retry-after-ms")
    if value:
        try:
            return max(float(value) / 1000.0, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        try:
            parsed = email.utils.parsedate_to_datetime(value) if value else None
        except (TypeError, ValueError):  # neither seconds nor an HTTP date: ignore it
            return None
        if parsed is None:
            return None
        return max(parsed.timestamp() - (time.time() if now is None else now), 0.0)


def classify_error(
    status: int, message: str, code: str, *, model: str, retry_after: float | None = None
) -> UpstreamError:
    """The switchman error for an upstream HTTP error (status, message and code from its body)."""
    text = f"{code} {message}".lower()
    detail = f"{model}: upstream answered {status}: {message}"
    if status == 429:
        return RateLimitError(detail, model=model, retry_after=retry_after)
    if status >= 500:
        return UpstreamServerError(detail, model=model, retry_after=retry_after)
    if any(marker in text for marker in _CONTEXT_MARKERS):
        return ContextWindowExceededError(detail, model=model)
    if any(marker in text for marker in _POLICY_MARKERS):
        return ContentPolicyViolationError(detail, model=model)
    if status in (401, 403, 404, 408, 409):
        # The provider's key, permissions or model name are wrong, or it timed out: not the client's fault.
        return UpstreamError(detail, model=model)
    return UpstreamBadRequestError(detail, model=model)


def error_answer(status: int, content: bytes, headers: Mapping[str, str], model: str,
                 code_of: Callable[[Mapping[str, object]], str]) -> UpstreamError:
    """The switchman error for an upstream's HTTP error answer: the message of the body's `error` object (else the
    body's first 500 characters), and its code as `code_of` reads it from that object (each API names it its way)."""
    message, code = content.decode("utf-8", "replace")[:500], ""
    try:
        data = orjson.loads(content)
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        error = data["error"]
        message = str(error.get("message") or message)
        code = code_of(error)
    return classify_error(status, message, code, model=model, retry_after=retry_after_seconds(headers))


async def sse_events(chunks: AsyncIterator[bytes]) -> AsyncGenerator[bytes, None]:
    """Split a byte stream into server-sent events (without their blank-line terminator)."""
    async for batch in sse_batches(chunks):
        for event in batch:
            yield event


async def sse_batches(chunks: AsyncIterator[bytes]) -> AsyncGenerator[list[bytes], None]:
    """The server-sent events each piece of a byte stream completes, a list per piece (never empty).

    A relay forwards the events it has in hand together (one write, one wake-up of the client)
    rather than one by one; an event split across pieces comes with the piece that ends it.
    """
    buffer = b""
    async for chunk in chunks:
        if not buffer and chunk.find(b"\n\n") == len(chunk) - 2 > 0 and b"\r" not in chunk:
            yield [chunk[:-2]]  # the usual piece: exactly one whole event (what the loop below gives it, cheaper)
            continue
        buffer = buffer + chunk if buffer else chunk
        if b"\r" in buffer:
            buffer = buffer.replace(b"\r\n", b"\n")
        events: list[bytes] = []
        start = 0
        while (end := buffer.find(b"\n\n", start)) >= 0:
            if end > start:
                events.append(buffer[start:end])
            start = end + 2
        buffer = buffer[start:]
        if events:
            yield events
    if buffer.strip():
        yield [buffer.strip()]


def sse_data(event: bytes) -> bytes | None:
    """The data of one event (multi-line data joined), or None for a comment-only event."""
    if event.startswith(b"data:") and b"\n" not in event:
        return event[5:].lstrip(b" ")
    parts = [line[5:].lstrip(b" ") for line in event.split(b"\n") if line.startswith(b"data:")]
    return b"\n".join(parts) if parts else None


def estimate_output_tokens(content: bytes) -> int:
    """Output tokens of a chat.completion body whose upstream gave no usage (marked as estimated)."""
    data = orjson.loads(content)
    choices = data.get("choices") if isinstance(data, dict) else None
    total = 0
    for choice in choices if isinstance(choices, list) else ():  # the upstream's body, of whatever shape it sent
        message = choice.get("message") if isinstance(choice, dict) else None
        text = message.get("content") if isinstance(message, dict) else None
        total += count_tokens(str(text or ""))
    return total
