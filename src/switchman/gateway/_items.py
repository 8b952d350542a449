"""Caps on how many items a request body holds: messages, content parts, tool calls, tools and embedding inputs
(`server.limits`).

Validating, translating and counting a body grows with its items, not only its bytes: a 4 MB chat body of
90,000 tool definitions took 1.65 s of CPU (an Anthropic one of 130,000, 3.11 s), under the GIL, in one of the
two large-request threads. The caps are counted on the parsed JSON before any validation, each list's length
read before its items are walked, so a body over one is refused for the price of parsing it. Each item is
counted as what it becomes in the chat body every API is translated to: an Anthropic tool_use block or a
Responses function_call item is a tool call, an Anthropic tool_result block a message.

    read_json(raw, depth, item_check(raw, limits, "chat.completions"))   # a 400 naming the field and cap
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from .._exceptions import InvalidRequestError
from .._limits import ServerLimits

__all__ = ["item_check"]

#: (the setting, the body's field where the count crossed it, what is counted, the count so far); a counter
#: yields each total as it grows past the items it has walked, so the first cap crossed stops the walk.
_Count = tuple[str, str, str, int]

_PARTS = "content parts over all messages"
_CALLS = "tool calls over all messages"
_BLOCKS = "content parts over system and all messages (a tool_result's own blocks included)"
_TOOL_USES = "tool calls (tool_use blocks) over all messages"
_RESULTS = "messages, each tool_result block counted as one more (it becomes a tool message)"
_INPUT_PARTS = "content parts over all input items (a message's content, a function_call_output's output)"
_FUNCTION_CALLS = "tool calls (function_call items) over all input items"


def _listed(value: object) -> list[Any]:
    return value if type(value) is list else []


def _kinds(items: list[Any]) -> list[Any]:
    """Each item's "type" (None for an item that is not an object)."""
    return [item.get("type") if type(item) is dict else None for item in items]


def _chat(data: dict[str, Any]) -> Iterator[_Count]:
    """/v1/chat/completions (and /v1/route): messages, their content parts and tool calls, tools."""
    messages = _listed(data.get("messages"))
    yield "max_messages", "messages", "messages", len(messages)
    yield "max_tools", "tools", "tools", len(_listed(data.get("tools")))
    parts = calls = 0
    for message in messages:
        if type(message) is dict:
            parts += len(_listed(message.get("content")))
            calls += len(_listed(message.get("tool_calls")))
    yield "max_content_parts", "messages.content", _PARTS, parts
    yield "max_tool_calls", "messages.tool_calls", _CALLS, calls


def _anthropic(data: dict[str, Any]) -> Iterator[_Count]:
    """/v1/messages (and count_tokens): messages, tools, and each content block as what it becomes: a tool_use
    block a tool call, a tool_result block a tool message (its own blocks content parts), any other (`system`'s
    too) a content part."""
    messages = _listed(data.get("messages"))
    yield "max_messages", "messages", "messages", len(messages)
    yield "max_tools", "tools", "tools", len(_listed(data.get("tools")))
    parts = len(_listed(data.get("system")))
    yield "max_content_parts", "system", _BLOCKS, parts
    turns, calls, results = len(messages), 0, []
    for message in messages:
        if type(message) is dict and (blocks := _listed(message.get("content"))):
            kinds = _kinds(blocks)
            answers = [block for block, kind in zip(blocks, kinds, strict=True) if kind == "tool_result"]
            uses = kinds.count("tool_use")
            turns, calls, parts = turns + len(answers), calls + uses, parts + len(blocks) - uses - len(answers)
            results += answers
            yield "max_messages", "messages.content", _RESULTS, turns
            yield "max_tool_calls", "messages.content", _TOOL_USES, calls
            yield "max_content_parts", "messages.content", _BLOCKS, parts
    nested = sum(len(_listed(result.get("content"))) for result in results)
    yield "max_content_parts", "messages.content.content", _BLOCKS, parts + nested


def _responses(data: dict[str, Any]) -> Iterator[_Count]:
    """/v1/responses: input items (messages, function calls and their outputs alike), the function calls among
    them, content parts (a message's, a function call output's), tools."""
    items = _listed(data.get("input"))
    yield "max_messages", "input", "input items", len(items)
    yield "max_tools", "tools", "tools", len(_listed(data.get("tools")))
    kinds = _kinds(items)
    yield "max_tool_calls", "input", _FUNCTION_CALLS, kinds.count("function_call")
    parts = sum(len(_listed(item.get("content"))) for item in items if type(item) is dict)
    yield "max_content_parts", "input.content", _INPUT_PARTS, parts
    outputs = sum(len(_listed(item.get("output"))) for item, kind in zip(items, kinds, strict=True)
                  if kind == "function_call_output")
    yield "max_content_parts", "input.output", _INPUT_PARTS, parts + outputs


def _embeddings(data: dict[str, Any]) -> Iterator[_Count]:
    """/v1/embeddings: the inputs (a list of ints is one input, a token array; any other list holds inputs)."""
    inputs = _listed(data.get("input"))
    yield "max_embedding_inputs", "input", "inputs", 1 if inputs and type(inputs[0]) is int else len(inputs)


_COUNTERS: dict[str, Callable[[dict[str, Any]], Iterator[_Count]]] = {
    "chat.completions": _chat, "messages": _anthropic, "responses": _responses, "embeddings": _embeddings}


def item_check(raw: bytes, limits: ServerLimits, api: str) -> Callable[[dict[str, Any]], None] | None:
    """`read_json`'s check of the JSON body `raw` of an `api` request: InvalidRequestError (400) when it holds
    more items of a kind than `limits` allows. None for the usual body, which cannot: each item takes a byte of
    its own and is followed by a comma or a bracket, so a body shorter than twice the smallest cap is never
    counted (nor, once parsed, one with no more commas and brackets than that cap)."""
    if len(raw) <= 2 * limits.smallest_item_cap:
        return None
    counter = _COUNTERS.get(api)
    return None if counter is None else lambda data: _check(counter(data), raw, limits)


def _check(counts: Iterator[_Count], raw: bytes, limits: ServerLimits) -> None:
    if raw.count(b",") + raw.count(b"[") <= limits.smallest_item_cap:
        return  # every item of an array but the first follows a comma (not braces: `"messages": [1, 1, ...]`
        # counts as many items, and validating them costs as much)
    for setting, field, what, count in counts:
        cap: int = getattr(limits, setting)
        if count > cap:
            raise InvalidRequestError(f"Invalid '{field}': more than {cap} {what}, this gateway's limit "
                                      f"(server.limits.{setting})", param=field, code="array_above_max_length")
