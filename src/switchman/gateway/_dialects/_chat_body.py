"""The end of every dialect's request translation: the chat body it built, finished and checked the same way."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._schema import check_body

__all__ = ["finished_chat"]


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
