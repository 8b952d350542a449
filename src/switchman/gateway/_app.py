"""The ASGI application: one route table, the middleware stack, one error renderer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Mount, Route

from .._exceptions import InvalidRequestError, SwitchmanError
from .._hosts import is_loopback
from .._slashes import relative_slash_redirects
from ._dialects import DialectEndpoints
from ._direct import DirectRoutes
from ._endpoints import Endpoints
from ._errors import dialect_for_scope, error_response
from ._feedback import FeedbackEndpoint
from ._gateway import Gateway
from ._heap import settle_heap as freeze_startup_heap
from ._limiter import AddressLimiter
from ._middleware import Authenticator, GatewayMiddleware, hold_access_lines
from ._reload import ConfigReloader

__all__ = ["build_app", "build_middleware_stack"]

logger = logging.getLogger("switchman.gateway")


def build_middleware_stack(gateway: Gateway, *, own_auth: Sequence[str] = ()) -> list[Middleware]:
    """One layer: access log, request id, body size limit, authentication (not under `own_auth` prefixes).

    One pure-ASGI layer rather than four stacked ones: each wrapped `send` and added an await to
    every message of every request (see `GatewayMiddleware`).
    """
    server = gateway.config.server
    limiter = AddressLimiter(burst=server.limits.failed_auth_burst, per_s=server.limits.failed_auth_per_s)
    open_paths = {"/health"} | ({"/metrics"} if server.metrics_access == "open" else set())
    auth = Authenticator(keyring=gateway.keyring, master_key=gateway.master_key, mode=server.auth, limiter=limiter,
                         public=not is_loopback(server.host), open_paths=frozenset(open_paths),
                         open_prefixes=tuple(own_auth))
    return [Middleware(GatewayMiddleware, auth=auth, max_body_bytes=server.max_body_bytes)]


def build_app(
    gateway: Gateway, *, mounts: Sequence[Mount] = (), reloader: ConfigReloader | None = None,
    settle_heap: bool = False,
) -> Starlette:
    """The gateway as a Starlette app; its lifespan starts and stops the gateway (and the SIGHUP `reloader`).

    `mounts` are apps served under a path that authenticate their own requests, like the
    dashboard (`switchman.ui.build_dashboard`): the API key check does not apply below them.
    With `settle_heap` (the server process's choice: `switchman serve`), what the gateway built at
    startup is frozen out of the garbage collector's passes once it has started (see `_heap`).
    """
    endpoints = Endpoints(gateway)
    dialects = DialectEndpoints(gateway)

    async def render(request: Request, exc: Exception) -> Response:
        unexpected = not isinstance(exc, SwitchmanError | HTTPException)  # rendered by the outermost middleware
        if isinstance(exc, HTTPException):
            exc = InvalidRequestError(str(exc.detail), status=exc.status_code, code="not_found"
                                      if exc.status_code == 404 else "method_not_allowed")
        elif not isinstance(exc, SwitchmanError):
            logger.error("unexpected error on %s: %s", request.url.path, type(exc).__name__)
        dialect = dialect_for_scope(request.scope)  # /v1/messages: Anthropic's envelope and rate-limit headers
        # Every dispatcher's secrets: a reload's new providers' keys, and a removed provider's key (a request still
        # running on the retired dispatcher fails with it after the reload), not only the live dispatcher's.
        response = error_response(exc, gateway.scrub, dialect=dialect)
        if unexpected:
            # Rendered outside the request-id middleware: carry the id so the ledger row can be found. The
            # server drops the connection after a 500, so say so: the client's next request opens a new one.
            request_id = request.scope.get("state", {}).get("request_id")
            if request_id:
                response.headers["x-switchman-request-id"] = request_id
            response.headers["connection"] = "close"
        return response

    async def client_left(request: Request, exc: Exception) -> Response:
        """An upload the client abandoned: its event, not the gateway's error (no log line, no record)."""
        return Response(status_code=400)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        hold_access_lines(True)
        await gateway.start()
        if settle_heap:
            frozen = freeze_startup_heap()
            logger.info("%d objects built at startup frozen out of the garbage collector's passes", frozen)
        background = [asyncio.create_task(gateway.refresh_budgets())]
        if gateway.keyring is not None:
            background.append(asyncio.create_task(gateway.keyring.run()))
        if reloader is not None and not reloader.install():
            logger.info("configuration reload on SIGHUP is off: the server does not run in the main thread")
        try:
            yield
        finally:
            # Stopping: access lines go out at once from here (uvicorn's re-raised SIGTERM ends the process).
            hold_access_lines(False)
            if reloader is not None:
                reloader.uninstall()
            for task in background:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await gateway.aclose()

    errors = {SwitchmanError: render, HTTPException: render, ClientDisconnect: client_left}
    # The chat completions route is served straight from the middleware layer (see `DirectRoutes`); the
    # router keeps it too (an app mounted under a root path is routed by Starlette).
    direct = Middleware(DirectRoutes, errors=errors, routes={
        ("POST", "/v1/chat/completions"): endpoints.chat_completions_direct,
        ("POST", "/chat/completions"): endpoints.chat_completions_direct,
    })
    routes = [
        Route("/v1/chat/completions", endpoints.chat_completions, methods=["POST"]),
        Route("/chat/completions", endpoints.chat_completions, methods=["POST"]),
        Route("/v1/messages", dialects.messages, methods=["POST"]),
        Route("/v1/messages/count_tokens", dialects.count_tokens, methods=["POST"]),
        Route("/v1/responses", dialects.responses, methods=["POST"]),
        Route("/v1/embeddings", dialects.embeddings, methods=["POST"]),
        Route("/v1/route", endpoints.route, methods=["POST"]),
        Route("/v1/feedback", FeedbackEndpoint(gateway).handle, methods=["POST"]),
        Route("/v1/models", endpoints.models, methods=["GET"]),
        Route("/health", endpoints.health, methods=["GET"]),
        Route("/metrics", endpoints.metrics, methods=["GET"]),
        *mounts,
    ]
    app = Starlette(
        routes=routes,
        middleware=[*build_middleware_stack(gateway, own_auth=[m.path for m in mounts]), direct],
        exception_handlers={**errors, Exception: render},
        lifespan=lifespan,
    )
    relative_slash_redirects(app.router)
    app.state.gateway = gateway
    return app
