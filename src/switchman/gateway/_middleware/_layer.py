"""The gateway's one middleware layer: access log, request id, body size limit, authentication, in that order.

Each concern lives in its own module (`_access_log`, `_request_id`, `_body_limit`, `_auth`); this
layer runs them in one pass over the request's headers and wraps `send` once, instead of four nested
ASGI middlewares each wrapping it again (four closures and awaits per message on the hot path).
Behaviour is that of the four layers stacked outermost first:

- access log: one line when the response is complete (or has failed: status 500 until one started);
- request id: `scope["state"]["request_id"]`, echoed as `x-switchman-request-id` on every answer,
  refusals from the limits and authentication below included;
- body size limit: 413 on a Content-Length over the limit (400 when it is not a number), or while a
  body without one arrives; 415 for a body in a Content-Encoding other than `identity` (nothing is
  decompressed: a gzip body would otherwise be refused as JSON that is not UTF-8), a request without a
  body whatever its Content-Encoding passing;
- authentication (not below `open_prefixes`, the mounted apps that authenticate their own requests).
"""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .._errors import dialect_for_scope, error_response
from ._access_log import access_logger, log_access
from ._auth import Authenticator, presented_key
from ._body_limit import BodyLimit
from ._request_id import INBOUND_ID_HEADERS, REQUEST_ID_HEADER, new_request_id, sane_request_id

__all__ = ["GatewayMiddleware"]

_MODEL_HEADER = b"x-switchman-model"


def _has_body(scope: Scope, declared: bytes | None) -> bool:
    """Whether the request has a body (a Content-Length over 0, or chunked): a bodyless one's encoding is moot."""
    if declared is not None:
        return int(declared) > 0
    return any(name == b"transfer-encoding" for name, _ in scope["headers"])


class GatewayMiddleware:
    """Access log, request id, body size limit and authentication as one pure-ASGI layer."""

    def __init__(self, app: ASGIApp, *, auth: Authenticator, max_body_bytes: int) -> None:
        self.app = app
        self.auth = auth
        self.body_limit = BodyLimit(max_body_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        logging_on = access_logger.isEnabledFor(logging.INFO)
        started = time.perf_counter() if logging_on else 0.0
        request_id = declared = authorization = api_key = encoding = None
        for name, value in scope["headers"]:  # one pass; the first of each header counts (Content-Encoding: all)
            if name == b"content-length":
                if declared is None:
                    declared = value
            elif name == b"authorization":
                if authorization is None:
                    authorization = value
            elif name == b"x-api-key":
                if api_key is None:
                    api_key = value
            elif name in INBOUND_ID_HEADERS and request_id is None and sane_request_id(value):
                request_id = value.decode()
            elif name == b"content-encoding":  # every line counts: a list may be split over several
                encoding = value if encoding is None else encoding + b"," + value
        if request_id is None:
            request_id = new_request_id()
        state = scope.get("state")
        if state is None:
            state = scope["state"] = {}
        state["request_id"] = request_id
        id_header = (REQUEST_ID_HEADER, request_id.encode())
        status = 500  # until a response starts: an error that escapes becomes the server's 500
        model = "-"

        async def send_with_id(message: Message) -> None:
            nonlocal status, model
            if message["type"] == "http.response.start":
                headers = message.get("headers")
                message["headers"] = [*headers, id_header] if headers else [id_header]
                if logging_on:
                    status = message["status"]
                    for name, value in message["headers"]:
                        if name == _MODEL_HEADER:
                            model = value.decode("latin-1")
            await send(message)

        try:
            await self._admit(scope, receive, send_with_id, state, declared, authorization, api_key, encoding)
        finally:
            if logging_on:
                log_access(scope["method"], scope["path"], status, model, (time.perf_counter() - started) * 1000.0,
                           request_id)

    async def _admit(self, scope: Scope, receive: Receive, send: Send, state: dict[str, object],
                     declared: bytes | None, authorization: bytes | None, api_key: bytes | None,
                     encoding: bytes | None) -> None:
        """The limits and authentication, then the app (or the refusal)."""
        if declared is not None or encoding is not None:
            error = self.body_limit.check_declared(declared) if declared is not None else None
            if error is None and encoding is not None and _has_body(scope, declared):
                error = self.body_limit.check_encoding(encoding)
            if error is not None:
                await error_response(error, dialect=dialect_for_scope(scope))(scope, receive, send)
                return
        if declared is None:
            receive = self.body_limit.counting(receive)
        if not self.auth.own_auth(scope["path"]):
            secret, problem = presented_key(authorization, api_key)
            refusal = await self.auth.admit(scope, state, secret, problem)
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)
