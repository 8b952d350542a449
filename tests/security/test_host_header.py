"""A hostile Host header never turns the gateway's or the dashboard's trailing-slash redirect into a redirect to
another host: the Location is a path (Starlette's own built it from the Host header)."""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from security_support import answer_to, config_data, request_bytes
from server_support import LoopbackServer
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route, Router
from starlette.types import Message

from switchman._config import parse_config
from switchman._slashes import relative_slash_redirects
from switchman.gateway import Gateway
from switchman.testing import FakeUpstream
from switchman.ui import serving_app

HOSTILE = "evil.example"


@pytest.fixture
def server(upstream: FakeUpstream, ledger_url: str) -> Iterator[LoopbackServer]:
    """The gateway with the dashboard, no keys, on loopback: API and dashboard pages served without logging in."""
    config = parse_config(config_data(upstream, ledger_url))
    gateway = Gateway.from_config(config, env={"FAKE_KEY": "unused"})
    with LoopbackServer(serving_app(gateway, bind_host="127.0.0.1"), config.server.limits,
                        log_level="warning") as running:
        yield running


def _get(server: LoopbackServer, path: str, host: str = HOSTILE) -> tuple[int, str | None]:
    response = answer_to(server.port, request_bytes("GET", path, headers={"connection": "close"}, host=host))
    return response.status, response.headers.get("location")


@pytest.mark.parametrize(("path", "location"), [
    ("/ui", "/ui/"),
    ("/ui/agents/", "/ui/agents"),
    ("/ui/requests/?window=7d", "/ui/requests?window=7d"),
    ("/v1/models/", "/v1/models"),
    ("/health/", "/health"),
])
def test_a_trailing_slash_redirect_is_a_path_whatever_the_host_header(server: LoopbackServer, path: str,
                                                                       location: str) -> None:
    status, given = _get(server, path)
    assert (status, given) == (307, location)


@pytest.mark.parametrize("path", ["//evil.example", "//evil.example/", "/\\evil.example/", "//ui"])
def test_a_path_that_would_redirect_to_another_host_is_not_found(server: LoopbackServer, path: str) -> None:
    status, given = _get(server, path, host="127.0.0.1")
    assert status == 404 and given is None


@pytest.mark.parametrize(("breaking", "answer"), [
    # Redirected with the client's own encoding: the CR or LF stays percent-encoded, no header line.
    ("%0dset-cookie:%20x=1", (307, "/ui/requests/a%0dset-cookie:%20x=1")),
    ("%0a", (307, "/ui/requests/a%0a")),  # a LF at the end: Starlette's `$` matches before it, so a route does
    ("%0aset-cookie:%20x=1", (404, None)), ("%0d%0aset-cookie:%20x=1", (404, None)),  # the Mount's `.*` stops at a LF
])
def test_a_redirect_cannot_carry_a_header_line(server: LoopbackServer, breaking: str,
                                               answer: tuple[int, str | None]) -> None:
    response = answer_to(server.port, request_bytes("GET", f"/ui/requests/a{breaking}/",
                                                    headers={"connection": "close"}))
    assert "set-cookie" not in response.headers, response.headers
    assert (response.status, response.headers.get("location")) == answer


@pytest.mark.parametrize(("path", "location"), [
    ("/ui/requests/a%3Fb/", "/ui/requests/a%3Fb"),  # not "/ui/requests/a?b": a query
    ("/ui/requests/a%23b/", "/ui/requests/a%23b"),  # not "/ui/requests/a#b": a fragment
    ("/ui/requests/a%25%3f/", "/ui/requests/a%25%3f"),
    ("/ui/requests/a%2F", "/ui/requests/a"),  # the slash was encoded: the decoded twin, quoted (no loop)
    ("/ui/requests/%61b/?x=%3F", "/ui/requests/%61b?x=%3F"),
])
def test_a_redirect_keeps_the_clients_encoding(server: LoopbackServer, path: str, location: str) -> None:
    assert _get(server, path, host="127.0.0.1") == (307, location)


def _answer(router: Router, path: str, raw_path: bytes | None = None, root_path: str = "") -> tuple[int, str | None]:
    """The status and Location `router` answers a GET of `path` with (`raw_path`: as the client sent it, if given)."""
    scope: dict[str, Any] = {"type": "http", "method": "GET", "path": path, "root_path": root_path, "query_string": b"",
                             "headers": [], "scheme": "http", "server": ("127.0.0.1", 80), "http_version": "1.1"}
    if raw_path is not None:
        scope["raw_path"] = raw_path
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    anyio.run(router, scope, receive, send)
    location = dict(sent[0]["headers"]).get(b"location")
    return sent[0]["status"], location.decode() if location is not None else None


def _router() -> Router:
    ok = PlainTextResponse("ok")  # an ASGI app
    router = Router([Route("/{name:path}.json", ok), Route("/items/{name}", ok)])
    relative_slash_redirects(router)
    return router


@pytest.mark.parametrize("path", ["//evil.json/", "/\\evil.json/", "//evil.example/x.json/"])
def test_a_twin_that_names_another_host_is_not_redirected_to(path: str) -> None:
    """`/{name:path}.json` serves `//evil.json`: without the guard `//evil.json/` went to `//evil.json`, another
    host to a browser (and `/\\evil.json` too)."""
    router = _router()
    assert _answer(router, path.rstrip("/"))[0] == 200  # the twin is served: only the guard stops the redirect
    assert _answer(router, path) == (404, None)
    assert _answer(router, path, raw_path=path.encode()) == (404, None)


@pytest.mark.parametrize(("path", "location"), [
    ("/items/a?b/", "/items/a%3Fb"), ("/items/a#b/", "/items/a%23b"), ("/items/a\\b/", "/items/a%5Cb"),
    ("/items/a%b/", "/items/a%25b"),
])
def test_without_a_raw_path_the_decoded_twin_is_quoted(path: str, location: str) -> None:
    assert _answer(_router(), path) == (307, location)


@pytest.mark.parametrize(("raw", "location"), [("/llm/ui", "/llm/ui/"), ("/llm/ui/items/a%3Fb/", "/llm/ui/items/a%3Fb")])
def test_behind_a_root_path_the_location_includes_it(raw: str, location: str) -> None:
    """uvicorn's --root-path (a proxy that strips a prefix) puts the prefix in path and raw_path: kept in Location."""
    app = Router([Mount("/ui", _router())])
    relative_slash_redirects(app)
    assert _answer(app, urllib.parse.unquote(raw), raw_path=raw.encode(), root_path="/llm") == (307, location)
