"""The chat-completions request body, validated: known fields typed, unknown fields allowed.

Validation only checks; the gateway forwards the body the client sent (minus switchman's own
metadata), so every field a provider understands and switchman does not still reaches it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .._exceptions import InvalidRequestError

__all__ = ["DEFAULT_MAX_DEPTH", "ChatBody", "check_body", "check_depth", "check_prompt_size", "describe_invalid",
           "parse_body", "prompt_chars", "read_json"]

#: Nesting a request body may have (orjson reads 1,024 levels but writes only ~254; a tool's JSON
#: schema rarely needs more than a dozen).
DEFAULT_MAX_DEPTH = 64


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)


class ImageURL(_Open):
    """An image reference: an https URL or a data: URL."""

    url: str


class ContentPart(_Open):
    """One part of a message's content (text, image, audio, ...); the fields switchman reads are typed."""

    type: str
    text: str | None = None
    image_url: str | ImageURL | None = None

    @model_validator(mode="after")
    def _text_parts_have_text(self) -> ContentPart:
        if self.type == "text" and self.text is None:
            raise ValueError("a part of type 'text' needs 'text', a string")
        return self


class FunctionCall(_Open):
    """The function half of a tool call."""

    name: str | None = None
    arguments: str | dict[str, Any] | None = None


class ToolCall(_Open):
    """A tool call in an assistant message."""

    id: str | None = None
    type: str | None = None
    function: FunctionCall


class Message(_Open):
    """One chat message."""

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None


class FunctionDef(_Open):
    """A tool's function definition."""

    name: str = Field(min_length=1)
    description: str | None = None
    parameters: dict[str, Any] | None = None


class Tool(_Open):
    """A tool the model may call."""

    type: Literal["function"] = "function"
    function: FunctionDef


class ResponseFormat(_Open):
    """text, json_object or json_schema."""

    type: str
    json_schema: dict[str, Any] | None = None


class NamedFunction(_Open):
    """The function a tool_choice names."""

    name: str


class ToolChoice(_Open):
    """{"type": "function", "function": {"name": ...}}."""

    type: str | None = None
    function: NamedFunction | None = None


class ChatBody(_Open):
    """POST /v1/chat/completions."""

    model: str = Field(min_length=1)
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    tools: list[Tool] | None = None
    tool_choice: str | ToolChoice | None = None
    response_format: ResponseFormat | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    n: int | None = Field(default=None, ge=1, le=128)
    stop: str | list[str] | None = None
    seed: int | None = None
    metadata: dict[str, Any] | None = None
    user: str | None = None


_TYPE_TAGS = {"str", "int", "float", "bool", "dict", "list", "none"}


def _is_branch_tag(part: object) -> bool:
    """A union branch's name in a pydantic error location (e.g. 'str', 'list[ContentPart]', 'ToolChoice')."""
    return isinstance(part, str) and (part in _TYPE_TAGS or "[" in part or part[:1].isupper())


def describe_invalid(error: ValidationError) -> InvalidRequestError:
    """The 400 for a failed validation, naming the field (the deepest error of a union's branches)."""
    item = max(error.errors(include_url=False), key=lambda e: len(e["loc"]))
    path = ".".join(str(p) for p in item["loc"] if not _is_branch_tag(p))
    if item["type"] == "missing":
        return InvalidRequestError(f"missing required parameter: {path!r}", param=path,
                                   code="missing_required_parameter")
    return InvalidRequestError(f"invalid value for {path!r}: {item['msg']}", param=path, code="invalid_value")


_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})


def _optional_int(low: int, high: float) -> Any:
    return lambda v: v is None or (type(v) is int and low <= v <= high)


def _optional_float(high: float) -> Any:
    return lambda v: v is None or (type(v) is float and 0.0 <= v <= high)


#: What `_plainly_valid` accepts for each of ChatBody's fields but model and messages: a value the field surely
#: takes (strict: exact types). A field not here (tools, tool_choice, ...) must be absent or None to count.
_PLAIN_FIELDS: dict[str, Any] = {
    "stream": lambda v: type(v) is bool,
    "max_tokens": _optional_int(1, float("inf")),
    "max_completion_tokens": _optional_int(1, float("inf")),
    "n": _optional_int(1, 128),
    "seed": lambda v: v is None or type(v) is int,
    "temperature": _optional_float(2.0),
    "top_p": _optional_float(1.0),
    "user": lambda v: v is None or type(v) is str,
    "stop": lambda v: v is None or type(v) is str,
    "stream_options": lambda v: v is None or (type(v) is dict and all(type(k) is str for k in v)),
    "metadata": lambda v: v is None or (type(v) is dict and all(type(k) is str for k in v)),
}
_BODY_FIELDS = frozenset(ChatBody.model_fields)
_MESSAGE_FIELDS = frozenset(Message.model_fields)
_MESSAGE_PLAIN = frozenset({"role", "content", "name", "tool_call_id"})


def _plainly_valid(data: dict[str, Any]) -> bool:
    """True only for a body ChatBody surely accepts: text messages (string or no content) and plain values in
    the typed fields; unknown keys are allowed, as there. Most bodies are such; anything else (tools, content
    parts, a field this does not know, an unknown key that is not an ASCII str) returns False and pydantic
    decides (and words the error)."""
    model, messages = data.get("model"), data.get("messages")
    if type(model) is not str or not model or not model.isascii() or type(messages) is not list or not messages:
        return False  # (a non-ASCII name to pydantic: it refuses a lone surrogate in this field, as min_length reads it)
    for message in messages:
        if type(message) is not dict:
            return False
        role = message.get("role")
        if type(role) is not str or role not in _ROLES:
            return False
        for key, value in message.items():
            if key in _MESSAGE_FIELDS:
                if value is not None and (key not in _MESSAGE_PLAIN or type(value) is not str):
                    return False  # role and the str | None fields as str; tool_calls (or a new field) to pydantic
            elif type(key) is not str or not key.isascii():
                return False  # an unknown key: pydantic refuses one that is not a str, or holds a lone surrogate
    for key, value in data.items():
        if key in _BODY_FIELDS:
            if key != "model" and key != "messages":
                check = _PLAIN_FIELDS.get(key)
                if not (check(value) if check is not None else value is None):
                    return False
        elif type(key) is not str or not key.isascii():
            return False  # (JSON gives neither; a Python caller, e.g. the in-process client, can)
    return True


def check_body(data: dict[str, Any]) -> dict[str, Any]:
    """`data` itself when it is a valid chat body; InvalidRequestError naming the first problem otherwise.

    A plain body (see `_plainly_valid`: ~0.5 µs) skips building the pydantic model (~4 µs), which only checks."""
    if _plainly_valid(data):
        return data
    try:
        ChatBody.model_validate(data)
    except ValidationError as exc:
        raise describe_invalid(exc) from None
    return data


_NESTS: frozenset[type] = frozenset({dict, list})


def check_depth(data: object, max_depth: int = DEFAULT_MAX_DEPTH) -> None:
    """InvalidRequestError when objects and arrays nest deeper than `max_depth` (iterative: no recursion).

    Level by level, each level's objects and arrays gathered by one comprehension: 1.3 million empty arrays
    (a 4 MB body) took 1.5 s walked one value (and one (value, depth) pair) at a time, 0.1 s so. `data` is
    orjson's: its objects and arrays are exactly dicts and lists."""
    level: list[Any] = [data] if type(data) in _NESTS else []
    depth = 1
    while level:
        if depth > max_depth:
            raise InvalidRequestError(f"the request body nests deeper than {max_depth} levels",
                                      code="invalid_json")
        level = [child for value in level for child in (value.values() if type(value) is dict else value)
                 if type(child) in _NESTS]
        depth += 1


def read_json(raw: bytes, max_depth: int = DEFAULT_MAX_DEPTH,
              first: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """The body as a JSON object at most `max_depth` deep; InvalidRequestError when it is empty, not JSON,
    not an object or nested deeper. `first` checks the object before the depth walk (which visits every value)."""
    if not raw:
        raise InvalidRequestError("the request body is empty; send a JSON object", code="invalid_json")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequestError(f"the request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise InvalidRequestError("the request body must be a JSON object", code="invalid_json")
    if first is not None:
        first(data)
    # Each object or array opens with one bracket byte (strings may hold more), so a body with no more
    # brackets than `max_depth` cannot nest deeper: the walk is needed only for bodies with many.
    if raw.count(b"{") + raw.count(b"[") > max_depth:
        check_depth(data, max_depth)
    return data


def prompt_chars(body: Mapping[str, Any]) -> int:
    """Characters of text in the messages (string contents and text parts): what routing work grows with."""
    total = 0
    for message in body.get("messages") or ():
        content = message.get("content") if isinstance(message, Mapping) else None
        if isinstance(content, str):
            total += len(content)
        elif isinstance(content, list):
            total += sum(len(p["text"]) for p in content if isinstance(p, Mapping) and isinstance(p.get("text"), str))
    return total


def check_prompt_size(body: Mapping[str, Any], max_chars: int, param: str = "messages") -> None:
    """413 when the messages' text (string contents and text parts) is longer than `max_chars` characters; `param`
    names the field the client sent them in (`input` on /v1/responses: it runs on the chat body they became)."""
    total = prompt_chars(body)
    if total > max_chars:
        raise InvalidRequestError(f"the prompt is {total} characters, over this gateway's limit of {max_chars}",
                                  status=413, param=param, code="prompt_too_large")


def parse_body(raw: bytes, max_depth: int = DEFAULT_MAX_DEPTH) -> dict[str, Any]:
    """The JSON body as a dict to forward, once validated; InvalidRequestError when it is not."""
    return check_body(read_json(raw, max_depth))
