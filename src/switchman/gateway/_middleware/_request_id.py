"""Give every request an id (the client's X-Request-Id when it is sane) and echo it in a header."""

from __future__ import annotations

import re
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["REQUEST_ID_HEADER", "RequestIdMiddleware"]

REQUEST_ID_HEADER = b"x-switchman-request-id"
_INBOUND = (b"x-request-id", REQUEST_ID_HEADER)
_SANE = re.compile(rb"^[A-Za-z0-9._\-]{1,64}$")


class RequestIdMiddleware:
    """Sets `scope["state"]["request_id"]` and adds X-Switchman-Request-Id to the response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw = next((v for k, v in scope["headers"] if k in _INBOUND and _SANE.match(v)), None)
        request_id = raw.decode() if raw is not None else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        header = (REQUEST_ID_HEADER, request_id.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        await self.app(scope, receive, send_with_id)
