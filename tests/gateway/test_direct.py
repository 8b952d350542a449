"""DirectRoutes: hot routes served past Starlette's router, with Starlette's answers for errors."""

from __future__ import annotations

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient
from starlette.types import Receive, Scope

from switchman import InvalidRequestError, SwitchmanError
from switchman.gateway._direct import DirectRoutes, read_body


async def _render(request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": str(exc), "path": request.url.path}, status_code=400)


async def _left(request: Request, exc: Exception) -> Response:
    return Response(status_code=499)


async def _direct(scope: Scope, receive: Receive) -> Response:
    body = await read_body(receive)
    if body == b"bad":
        raise InvalidRequestError("bad body")
    if body == b"bug":
        raise ZeroDivisionError("a bug")
    return PlainTextResponse(b"direct:" + body)


async def _routed(request: Request) -> Response:
    return PlainTextResponse(b"routed:" + await request.body())


def _app() -> Starlette:
    errors = {SwitchmanError: _render, ClientDisconnect: _left}
    direct = Middleware(DirectRoutes, routes={("POST", "/hot"): _direct}, errors=errors)
    return Starlette(routes=[Route("/hot", _routed, methods=["POST"]), Route("/other", _routed, methods=["POST"])],
                     middleware=[direct], exception_handlers={**errors, Exception: _render})


def test_the_direct_route_answers_and_the_rest_goes_to_the_router() -> None:
    with TestClient(_app()) as client:
        assert client.post("/hot", content=b"x").text == "direct:x"
        assert client.post("/other", content=b"x").text == "routed:x"
        assert client.get("/hot").status_code == 405  # another method: the router's answer
    with TestClient(_app(), root_path="/api") as client:  # under a root path: Starlette routes it
        assert client.post("/api/hot", content=b"x").text == "routed:x"


def test_errors_get_the_handlers_starlette_would_use() -> None:
    with TestClient(_app(), raise_server_exceptions=False) as client:
        refused = client.post("/hot", content=b"bad")
        assert refused.status_code == 400 and refused.json() == {"error": "bad body", "path": "/hot"}
        # An error no handler takes reaches the outermost server-error handler, as through the router.
        assert client.post("/hot", content=b"bug").json() == {"error": "a bug", "path": "/hot"}


@pytest.mark.anyio
async def test_a_client_gone_before_its_body_gets_the_disconnect_handler() -> None:
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return {"type": "http.disconnect"}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    app = DirectRoutes(_routed, routes={("POST", "/hot"): _direct},  # type: ignore[arg-type]
                       errors={ClientDisconnect: _left})
    scope = {"type": "http", "method": "POST", "path": "/hot", "headers": [], "query_string": b""}
    await app(scope, receive, send)  # type: ignore[arg-type]
    assert sent[0]["status"] == 499
