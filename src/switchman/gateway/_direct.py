"""Routes served straight from the middleware layer, past Starlette's router, Request and exception layer.

The chat completions route is most of a gateway's traffic. Through Starlette each request walks the
exception middleware, the route table, `request_response`'s Request and its own exception wrapper
before the endpoint runs; `DirectRoutes` sends an exact (method, path) pair to its handler at once.
The handler returns the same Response it would through Starlette, and errors are answered by the
same handlers (an error not ours still reaches the outermost server-error middleware), so clients
see the same bytes. Anything else, and any app mounted under a root path, goes on to the router.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["DirectHandler", "DirectRoutes", "ErrorHandler", "read_body"]

#: A direct route's handler: the response for a request (the body is its to read from `receive`).
DirectHandler = Callable[[Scope, Receive], Awaitable[Response]]
#: How an exception becomes a response (Starlette's exception handler signature).
ErrorHandler = Callable[[Request, Exception], Awaitable[Response]]


async def read_body(receive: Receive) -> bytes:
    """The whole request body, as Starlette's `Request.body()` reads it (ClientDisconnect if the client left)."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.request":
            body = message.get("body", b"")
            if body:
                chunks.append(body)
            if not message.get("more_body", False):
                break
        elif message["type"] == "http.disconnect":
            raise ClientDisconnect()
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class DirectRoutes:
    """Pure-ASGI middleware: (method, path) → handler for a few hot routes; the rest to `app` (the router).

    `errors` maps exception classes to the handlers Starlette would use for them (looked up along
    the exception's class hierarchy); an exception none handles propagates, as it would through
    Starlette, to the server-error middleware.
    """

    def __init__(self, app: ASGIApp, *, routes: Mapping[tuple[str, str], DirectHandler],
                 errors: Mapping[type[Exception], ErrorHandler]) -> None:
        self.app = app
        self.routes = dict(routes)
        self.errors = dict(errors)
        self._handled = tuple(self.errors)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope.get("root_path"):
            handler = self.routes.get((scope["method"], scope["path"]))
            if handler is not None:
                await self._serve(handler, scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _serve(self, handler: DirectHandler, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            response = await handler(scope, receive)
        except self._handled as exc:
            on_error = next(self.errors[c] for c in type(exc).__mro__ if c in self.errors)
            response = await on_error(Request(scope, receive, send), exc)
            exc.__traceback__ = None  # a reused exception instance must not gather tracebacks across requests
        await response(scope, receive, send)
