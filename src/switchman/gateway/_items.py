"""Caps on how many items a request body holds: messages, content parts, tool calls and tools (`server.limits`).

Validating, translating and counting a body grows with its items, not only its bytes: a 4 MB chat body of
90,000 tool definitions took ~1.6 s of CPU (an Anthropic one of 130,000, ~3 s), under the GIL, in one of the
two large-request threads. The caps are counted on the parsed JSON before any validation, each list's length
read before its items are walked, so a body over one is refused for the price of parsing it.

    read_json(raw, depth, item_check(raw, limits, "chat.completions"))   # a 400 naming the field and cap
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from .._exceptions import InvalidRequestError
from .._limits import ServerLimits

__all__ = ["item_check"]

#: (the setting, the body's field it caps, the count so far); a counter yields each total as it grows past the
#: items it has walked, so the first cap crossed stops the walk.
_Count = tuple[str, str, int]


def _listed(value: object) -> list[Any]:
    return value if type(value) is list else []


def _chat(data: dict[str, Any]) -> Iterator[_Count]:
    """/v1/chat/completions (and /v1/route): messages, their content parts and tool calls, tools."""
    messages = _listed(data.get("messages"))
    yield "max_messages", "messages", len(messages)
    yield "max_tools", "tools", len(_listed(data.get("tools")))
    parts = calls = 0
    for message in messages:
        if type(message) is dict:
            parts += len(_listed(message.get("content")))
            calls += len(_listed(message.get("tool_calls")))
    yield "max_content_parts", "messages.content", parts
    yield "max_tool_calls", "messages.tool_calls", calls


def _anthropic(data: dict[str, Any]) -> Iterator[_Count]:
    """/v1/messages (and count_tokens): messages, content blocks (system's and tool results' too), tools."""
    messages = _listed(data.get("messages"))
    yield "max_messages", "messages", len(messages)
    yield "max_tools", "tools", len(_listed(data.get("tools")))
    blocks = [*_listed(data.get("system"))]
    for message in messages:
        if type(message) is dict:
            blocks += _listed(message.get("content"))
            yield "max_content_parts", "messages.content", len(blocks)
    nested = sum(len(_listed(block.get("content"))) for block in blocks if type(block) is dict)
    yield "max_content_parts", "messages.content", len(blocks) + nested


def _responses(data: dict[str, Any]) -> Iterator[_Count]:
    """/v1/responses: input items (messages and function calls alike), their content parts, tools."""
    items = _listed(data.get("input"))
    yield "max_messages", "input", len(items)
    yield "max_tools", "tools", len(_listed(data.get("tools")))
    parts = 0
    for item in items:
        if type(item) is dict:
            parts += len(_listed(item.get("content"))) + len(_listed(item.get("output")))
    yield "max_content_parts", "input.content", parts


_COUNTERS: dict[str, Callable[[dict[str, Any]], Iterator[_Count]]] = {
    "chat.completions": _chat, "messages": _anthropic, "responses": _responses}


def item_check(raw: bytes, limits: ServerLimits, api: str) -> Callable[[dict[str, Any]], None] | None:
    """`read_json`'s check of the JSON body `raw` of an `api` request: InvalidRequestError (400) when it holds
    more items of a kind than `limits` allows. None for the usual body, which cannot: each item takes a byte of
    its own and is followed by a comma or a bracket, so a body shorter than twice the smallest cap is never
    counted (nor, once parsed, one with fewer commas and brackets than that cap)."""
    if len(raw) <= 2 * limits.smallest_item_cap:
        return None
    counter = _COUNTERS.get(api)
    return None if counter is None else lambda data: _check(counter(data), raw, limits)


def _check(counts: Iterator[_Count], raw: bytes, limits: ServerLimits) -> None:
    if raw.count(b",") + raw.count(b"[") <= limits.smallest_item_cap:
        return  # every item of an array but the first follows a comma
    for setting, field, count in counts:
        cap: int = getattr(limits, setting)
        if count > cap:
            raise InvalidRequestError(f"Invalid '{field}': more than {cap} items, this gateway's limit "
                                      f"(server.limits.{setting})", param=field, code="array_above_max_length")
