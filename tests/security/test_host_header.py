"""A hostile Host header never turns the gateway's or the dashboard's trailing-slash redirect into a redirect to
another host: the Location is a path (Starlette's own built it from the Host header)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from security_support import ServerThread, answer_to, config_data, request_bytes

from switchman._config import parse_config
from switchman.gateway import Gateway
from switchman.testing import FakeUpstream
from switchman.ui import serving_app

HOSTILE = "evil.example"


@pytest.fixture
def server(upstream: FakeUpstream, ledger_url: str) -> Iterator[ServerThread]:
    """The gateway with the dashboard, no keys, on loopback: API and dashboard pages served without logging in."""
    config = parse_config(config_data(upstream, ledger_url))
    gateway = Gateway.from_config(config, env={"FAKE_KEY": "unused"})
    with ServerThread(serving_app(gateway, bind_host="127.0.0.1"), config.server.limits) as running:
        yield running


def _get(server: ServerThread, path: str, host: str = HOSTILE) -> tuple[int, str | None]:
    response = answer_to(server.port, request_bytes("GET", path, headers={"connection": "close"}, host=host))
    return response.status, response.headers.get("location")


@pytest.mark.parametrize(("path", "location"), [
    ("/ui", "/ui/"),
    ("/ui/agents/", "/ui/agents"),
    ("/ui/requests/?window=7d", "/ui/requests?window=7d"),
    ("/v1/models/", "/v1/models"),
    ("/health/", "/health"),
])
def test_a_trailing_slash_redirect_is_a_path_whatever_the_host_header(server: ServerThread, path: str,
                                                                       location: str) -> None:
    status, given = _get(server, path)
    assert (status, given) == (307, location)


@pytest.mark.parametrize("path", ["//evil.example", "//evil.example/", "/\\evil.example/", "//ui"])
def test_a_path_that_would_redirect_to_another_host_is_not_found(server: ServerThread, path: str) -> None:
    status, given = _get(server, path, host="127.0.0.1")
    assert status == 404 and given is None


@pytest.mark.parametrize(("breaking", "location"), [
    ("%0d", "/ui/requests/a%0Dset-cookie:%20x=1"),  # a route matches the twin: redirected, the CR kept encoded
    ("%0a", None), ("%0d%0a", None),  # no route matches a path with a line feed: not found
])
def test_a_redirect_cannot_carry_a_header_line(server: ServerThread, breaking: str, location: str | None) -> None:
    response = answer_to(server.port, request_bytes("GET", f"/ui/requests/a{breaking}set-cookie:%20x=1/",
                                                    headers={"connection": "close"}))
    assert "set-cookie" not in response.headers, response.headers
    assert response.headers.get("location") == location
