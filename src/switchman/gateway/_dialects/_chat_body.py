"""The end of every dialect's request translation: the chat body it built, finished and checked the same way."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..._exceptions import InvalidRequestError
from .._schema import check_body

__all__ = ["finished_chat", "text_field"]


def text_field(item: Mapping[str, Any], name: str, where: str) -> str:
    """A field of the other API's body that the chat body takes as text: a string ("" when absent or null); else a
    400 naming it (its Python repr, "{'q': 1}", is no JSON and no text the client sent)."""
    value = item.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidRequestError(f"{where}.{name} must be a string", param=f"{where}.{name}", code="invalid_value")
    return value


def finished_chat(chat: dict[str, Any], own_metadata: Mapping[str, Any], *, stream: bool,
                  checked: bool = False) -> dict[str, Any]:
    """`chat` with switchman's own metadata keys (the other API's metadata is not passed on) and, for a stream,
    the usage chunk asked for (the ledger row and the translated stream's last event need it); then checked as any
    chat body is, unless `checked`: every field of `chat` comes from a body its own schema already validated
    (Messages; Responses has no such pass, so its chat body is checked here)."""
    if own_metadata:
        chat["metadata"] = dict(own_metadata)
    if stream:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    return chat if checked else check_body(chat)
