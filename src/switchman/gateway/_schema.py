"""The chat-completions request body, validated: known fields typed, unknown fields allowed.

Validation only checks; the gateway forwards the body the client sent (minus switchman's own
metadata), so every field a provider understands and switchman does not still reaches it.
"""

from __future__ import annotations

from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ._errors import InvalidRequestError

__all__ = ["ChatBody", "check_body", "parse_body"]


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)


class Message(_Open):
    """One chat message."""

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
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


class ChatBody(_Open):
    """POST /v1/chat/completions."""

    model: str = Field(min_length=1)
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    tools: list[Tool] | None = None
    tool_choice: str | dict[str, Any] | None = None
    response_format: ResponseFormat | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    n: int | None = Field(default=None, ge=1, le=128)
    stop: str | list[str] | None = None
    seed: int | None = None
    metadata: dict[str, Any] | None = None
    user: str | None = None


def _describe(error: ValidationError) -> InvalidRequestError:
    item = error.errors(include_url=False)[0]
    path = ".".join(str(p) for p in item["loc"])
    if item["type"] == "missing":
        return InvalidRequestError(f"missing required parameter: {path!r}", param=path,
                                   code="missing_required_parameter")
    return InvalidRequestError(f"invalid value for {path!r}: {item['msg']}", param=path, code="invalid_value")


def check_body(data: dict[str, Any]) -> dict[str, Any]:
    """`data` itself when it is a valid chat body; InvalidRequestError naming the first problem otherwise."""
    try:
        ChatBody.model_validate(data)
    except ValidationError as exc:
        raise _describe(exc) from None
    return data


def parse_body(raw: bytes) -> dict[str, Any]:
    """The JSON body as a dict to forward, once validated; InvalidRequestError when it is not."""
    if not raw:
        raise InvalidRequestError("the request body is empty; send a JSON object", code="invalid_json")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequestError(f"the request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise InvalidRequestError("the request body must be a JSON object", code="invalid_json")
    return check_body(data)
