"""A gateway served under a path prefix (a Starlette `Mount`, so a root path) still answers /v1/messages in
Anthropic's spelling: its 429s (envelope, anthropic-ratelimit-* headers, retry-after) and its refused keys."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import anthropic
import httpx
import pytest
from server_support import ServerThread
from starlette.applications import Starlette
from starlette.routing import Mount

from switchman._config import parse_config
from switchman.gateway import Gateway, build_app
from switchman.gateway._errors import dialect_for_scope
from switchman.testing import FakeUpstream

from .conftest import ENV, MASTER_KEY, config_data

PREFIX = "/gw"
AGENT = {"x-switchman-agent": "metered"}
ASK = {"model": "auto", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}


def _mounted(gateway: Gateway) -> Starlette:
    """The gateway's app under PREFIX; the outer app runs its lifespan (a Mount does not)."""
    inner = build_app(gateway)

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        async with inner.router.lifespan_context(inner):
            yield

    return Starlette(routes=[Mount(PREFIX, app=inner)], lifespan=lifespan)


def _serve(upstream: FakeUpstream, tmp_path: Path, env: dict[str, str]) -> ServerThread:
    data = config_data(upstream, f"sqlite:///{tmp_path / 'ledger.sqlite3'}")
    data["agents"]["metered"] = {"rpm": 1}
    upstream.clear()
    return ServerThread(_mounted(Gateway.from_config(parse_config(data), env=env)))


@pytest.fixture
def mounted(upstream: FakeUpstream, tmp_path: Path) -> Iterator[str]:
    with _serve(upstream, tmp_path, ENV) as url:
        yield url + PREFIX


def test_a_429_under_a_prefix_is_anthropic_s(mounted: str) -> None:
    with anthropic.Anthropic(base_url=mounted, api_key="unused", max_retries=0, default_headers=AGENT) as claude:
        claude.messages.create(**ASK)  # type: ignore[call-overload]
        with pytest.raises(anthropic.RateLimitError) as refused:
            claude.messages.create(**ASK)  # type: ignore[call-overload]
    headers = refused.value.response.headers
    body = refused.value.body
    assert isinstance(body, dict) and body == {"type": "error", "error": {"type": "rate_limit_error",
                                                                           "message": body["error"]["message"]}}
    assert headers["anthropic-ratelimit-requests-limit"] == "1", dict(headers)
    assert headers["anthropic-ratelimit-requests-remaining"] == "0"
    assert headers["anthropic-ratelimit-requests-reset"]
    assert headers["retry-after"].isdigit()
    assert not [name for name in headers if name.startswith("x-ratelimit-")]


def test_only_messages_and_below_are_anthropic_s_under_a_prefix(mounted: str) -> None:
    with httpx.Client(base_url=mounted) as http:
        below = http.post("/v1/messages/count_tokens", json={}).json()
        assert below["type"] == "error" and below["error"]["type"] == "invalid_request_error", below
        unknown = http.post("/v1/messagesX", json=ASK).json()  # not /v1/messages: OpenAI's 404
        assert "type" not in unknown and unknown["error"]["code"] == "not_found", unknown


def test_a_refused_key_under_a_prefix_is_told_in_anthropic_s_envelope(upstream: FakeUpstream, tmp_path: Path) -> None:
    with _serve(upstream, tmp_path, {**ENV, "SWITCHMAN_MASTER_KEY": MASTER_KEY}) as url, \
            anthropic.Anthropic(base_url=url + PREFIX, api_key="sk-not-a-key-000000", max_retries=0) as claude, \
            pytest.raises(anthropic.AuthenticationError) as refused:
        claude.messages.create(**ASK)  # type: ignore[call-overload]
    assert refused.value.status_code == 401
    body = refused.value.body
    assert isinstance(body, dict) and body == {"type": "error", "error": {"type": "authentication_error",
                                                                           "message": body["error"]["message"]}}


@pytest.mark.parametrize(("path", "root", "dialect"), [
    ("/v1/messages", "", "anthropic"), ("/v1/messages/count_tokens", "", "anthropic"),
    ("/gw/v1/messages", "/gw", "anthropic"), ("/v1/messagesX", "", "openai"), ("/gw/v1/messagesX", "/gw", "openai"),
    ("/gw/v1/chat/completions", "/gw", "openai"), ("/v1/responses", "", "openai"),
    # A root path with its trailing slash (or just "/") is the same root: only whole segments are stripped.
    ("/v1/messages", "/", "anthropic"), ("/gw/v1/messages", "/gw/", "anthropic"),
    ("/gw/v1/messages/count_tokens", "/gw/", "anthropic"), ("/gw/v1/chat/completions", "/gw/", "openai"),
    ("/gwx/v1/messages", "/gw", "openai"),
])
def test_the_dialect_of_a_path_under_its_root(path: str, root: str, dialect: str) -> None:
    assert dialect_for_scope({"path": path, "root_path": root}) == dialect
