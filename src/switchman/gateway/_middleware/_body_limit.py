"""Refuse request bodies over the configured size with 413, before or while they arrive."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..._exceptions import InvalidRequestError
from .._errors import dialect_for_path, error_response

__all__ = ["BodySizeLimitMiddleware"]


def _too_large(limit: int) -> InvalidRequestError:
    return InvalidRequestError(f"the request body is larger than the limit of {limit} bytes", status=413,
                               code="request_too_large")


class BodySizeLimitMiddleware:
    """413 when Content-Length says too much; counts a body without one and stops it at the limit."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.limit = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if declared is not None:
            error: InvalidRequestError | None = None
            if not declared.isdigit():
                error = InvalidRequestError("the Content-Length header is not a number", code="invalid_header")
            elif int(declared) > self.limit:
                error = _too_large(self.limit)
            if error is not None:
                await error_response(error, dialect=dialect_for_path(scope["path"]))(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise _too_large(self.limit)
            return message

        await self.app(scope, counting_receive, send)
