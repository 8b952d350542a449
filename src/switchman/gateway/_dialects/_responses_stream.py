"""The relayed chat stream as the Responses API's typed events, as it arrives.

    response.created, response.in_progress,
    text:  response.output_item.added (message), response.content_part.added, response.output_text.delta …,
           response.output_text.done, response.content_part.done, response.output_item.done
    calls: response.output_item.added (function_call), response.function_call_arguments.delta …,
           response.function_call_arguments.done, response.output_item.done
    response.completed (or response.incomplete at a length limit; error + response.failed on a failure)

Every event carries its `sequence_number`; the final response holds every output item and the usage.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from ._chunks import ChunkTranslator
from ._responses import response_object, status_for

__all__ = ["ResponsesStream"]


class ResponsesStream(ChunkTranslator):
    """Translates one stream for a Responses API client."""

    def __init__(self, data: Mapping[str, Any], *, response_id: str, model: str) -> None:
        super().__init__(model)
        self._data = data
        self._id = response_id
        self._model = model
        self._sequence = 0
        self._started = False
        self._items: list[dict[str, Any]] = []
        self._open: dict[str, Any] | None = None
        self._calls: dict[int, dict[str, Any]] = {}  # OpenAI tool index → its function_call item
        self._finish: str | None = None

    def _event(self, kind: str, **fields: Any) -> bytes:
        data = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"

    def _response(self, status: str, **extra: Any) -> dict[str, Any]:
        return response_object(self._data, response_id=self._id, model=self._model, output=self._items,
                               status=status, usage=self.usage, **extra)

    def feed(self, piece: bytes) -> list[bytes]:
        """response.created and response.in_progress first, then whatever the piece carries."""
        if not self._started:
            self._started = True
            opening = self._response("in_progress")
            self.unsent[:0] = [self._event("response.created", response=opening),
                               self._event("response.in_progress", response=opening)]
        return super().feed(piece)

    def _add(self, item: dict[str, Any]) -> list[bytes]:
        out = self._close()
        self._items.append(item)
        self._open = item
        return [*out, self._event("response.output_item.added", output_index=len(self._items) - 1,
                                  item={**item, "status": "in_progress"})]

    def _close(self) -> list[bytes]:
        item, self._open = self._open, None
        if item is None:
            return []
        index = self._items.index(item)
        out: list[bytes] = []
        if item["type"] == "message":
            part = item["content"][0]
            out.append(self._event("response.output_text.done", item_id=item["id"], output_index=index,
                                   content_index=0, text=part["text"], logprobs=[]))
            out.append(self._event("response.content_part.done", item_id=item["id"], output_index=index,
                                   content_index=0, part=part))
        else:
            out.append(self._event("response.function_call_arguments.done", item_id=item["id"], output_index=index,
                                   name=item["name"], arguments=item["arguments"]))
        item["status"] = "completed"
        out.append(self._event("response.output_item.done", output_index=index, item=item))
        return out

    def on_text(self, text: str) -> list[bytes]:
        out: list[bytes] = []
        item = self._open
        if item is None or item["type"] != "message":
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            item = {"type": "message", "id": f"msg_{self._id}_{len(self._items)}", "status": "in_progress",
                    "role": "assistant", "content": [part]}
            out = self._add(item)
            out.append(self._event("response.content_part.added", item_id=item["id"],
                                   output_index=len(self._items) - 1, content_index=0, part=dict(part)))
        item["content"][0]["text"] += text
        out.append(self._event("response.output_text.delta", item_id=item["id"], output_index=len(self._items) - 1,
                               content_index=0, delta=text, logprobs=[]))
        return out

    def on_tool_start(self, index: int, call_id: str, name: str) -> list[bytes]:
        if index in self._calls:
            return []
        item = {"type": "function_call", "id": f"fc_{self._id}_{index}", "call_id": call_id, "name": name,
                "arguments": "", "status": "in_progress"}
        self._calls[index] = item
        return self._add(item)

    def on_tool_arguments(self, index: int, delta: str) -> list[bytes]:
        out = [] if index in self._calls else self.on_tool_start(index, f"call_{index}", "")
        item = self._calls[index]
        item["arguments"] += delta
        return [*out, self._event("response.function_call_arguments.delta", item_id=item["id"],
                                  output_index=self._items.index(item), delta=delta)]

    def on_finish(self, reason: str, stop_sequence: str | None) -> list[bytes]:
        self._finish = reason
        return self._close()

    def on_done(self) -> list[bytes]:
        out = self._close()
        status, incomplete = status_for(self._finish)
        kind = "response.completed" if status == "completed" else "response.incomplete"
        return [*out, self._event(kind, response=self._response(status, incomplete=incomplete))]

    def on_error(self, error: dict[str, Any]) -> list[bytes]:
        code, message = str(error.get("code") or "server_error"), str(error.get("message") or "")
        failed = self._response("failed", error={"code": code, "message": message})
        return [self._event("error", code=code, message=message, param=None),
                self._event("response.failed", response=failed)]
