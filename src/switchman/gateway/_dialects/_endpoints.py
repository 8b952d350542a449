"""The endpoints of the other APIs: each translates at the edge and hands the dispatcher a chat body.

    POST /v1/messages               Anthropic Messages (stream or not)
    POST /v1/messages/count_tokens  Anthropic token counting (switchman's own count)
    POST /v1/responses              OpenAI Responses, stateless subset (stream or not)
    POST /v1/embeddings             OpenAI embeddings, passed through to the named model

Routing, budgets, sessions, fallbacks, metrics and the ledger row are the dispatcher's, the same
for every API; the row records which API was spoken. Errors come back in each API's own envelope
(the app's error handler picks it by path).
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from .._dispatcher import Completion, Dispatcher
from .._embeddings import check_embeddings, embed
from .._endpoints import read_request, route_headers, stream_headers
from .._gateway import Gateway
from .._offload import OFFLOAD_BYTES, run_offloaded
from .._rate_headers import Dialect, rate_headers
from .._stream import RelayResponse
from ._messages import anthropic_message, chat_from_messages, message_id
from ._messages_stream import MessagesStream
from ._responses import answer, chat_from_responses
from ._responses_stream import ResponsesStream

__all__ = ["DialectEndpoints"]

_JSON = "application/json"


def _count_only(data: dict[str, Any]) -> dict[str, Any]:
    """A count_tokens body in the dispatcher's shape (a Messages body without max_tokens)."""
    return chat_from_messages(data, count_only=True)


def _answer_headers(completion: Completion, dialect: Dialect = "openai") -> dict[str, str]:
    """A non-stream answer's headers: the route, the caller's rate limits (in `dialect`'s spelling), the cost."""
    headers = route_headers(completion.model, completion.decision.reason, deployment=completion.deployment,
                            cache=completion.cache)
    headers |= rate_headers(completion.limits, dialect)
    headers["x-switchman-cost-usd"] = f"{completion.cost_usd:.8f}"
    return headers


class DialectEndpoints:
    """Handlers for the Anthropic Messages, Responses and embeddings APIs, bound to one Gateway."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    @property
    def dispatcher(self) -> Dispatcher:
        """The gateway's current dispatcher (a configuration reload replaces it)."""
        return self.gateway.dispatcher

    async def messages(self, request: Request) -> Response:
        """POST /v1/messages."""
        dispatcher = self.dispatcher  # once: a reload while the body is read must not answer with the next one
        body, context = await read_request(dispatcher, request, chat_from_messages, api="messages")
        msg_id = message_id(context.request_id)
        if body.get("stream"):
            stream = await dispatcher.open_stream(body, context)
            translator = MessagesStream(message_id=msg_id, model=stream.model, input_tokens=stream.input_tokens)
            return RelayResponse(stream, stream_headers(stream, "anthropic"), translator)
        completion = await dispatcher.complete(body, context)
        message = anthropic_message(completion.json(), message_id=msg_id, model=completion.model)
        return Response(orjson.dumps(message), media_type=_JSON,
                        headers=_answer_headers(completion, "anthropic"))

    async def count_tokens(self, request: Request) -> Response:
        """POST /v1/messages/count_tokens: the input tokens switchman counts for this request (no model call).

        Read as /v1/messages reads its body (same limits, same errors; no ledger row: no model is called).
        """
        dispatcher = self.dispatcher  # once: a reload while the body is read must not count with the next decider
        body, context = await read_request(dispatcher, request, _count_only, api="messages", record=False)
        decider = dispatcher.decider

        def count() -> int:
            return decider.request(body["messages"], tools=body.get("tools")).input_tokens

        tokens = await run_offloaded(count) if context.body_bytes > OFFLOAD_BYTES else count()
        return Response(orjson.dumps({"input_tokens": tokens}), media_type=_JSON)

    async def responses(self, request: Request) -> Response:
        """POST /v1/responses."""
        original: dict[str, Any] = {}

        def parse(data: dict[str, Any]) -> dict[str, Any]:
            original.update(data)
            return chat_from_responses(data)

        dispatcher = self.dispatcher  # once (as in `messages`)
        body, context = await read_request(dispatcher, request, parse, api="responses")
        response_id = f"resp_{context.request_id}"
        if body.get("stream"):
            stream = await dispatcher.open_stream(body, context)
            translator = ResponsesStream(original, response_id=response_id, model=stream.model)
            return RelayResponse(stream, stream_headers(stream), translator)
        completion = await dispatcher.complete(body, context)
        result = answer(original, completion.json(), response_id=response_id, model=completion.model)
        return Response(orjson.dumps(result), media_type=_JSON,
                        headers=_answer_headers(completion))

    async def embeddings(self, request: Request) -> Response:
        """POST /v1/embeddings."""
        dispatcher = self.dispatcher  # once (as in `messages`)
        body, context = await read_request(dispatcher, request, check_embeddings, api="embeddings")
        completion = await embed(dispatcher, body, context)
        return Response(completion.content, media_type=_JSON,
                        headers=_answer_headers(completion))
