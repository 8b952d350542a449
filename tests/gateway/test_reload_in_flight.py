"""A configuration reload that lands while a request is being read: the request is validated, decided and answered
by the one dispatcher that began reading it (the old configuration), never half by the next one.

The reload is the real one (`ConfigReloader.reload`, on a file); the server is real, on loopback. The client asks
for `100 Continue`, which the server sends when the handler first asks for the body (it has picked its dispatcher
by then), sends half the body, reloads, then sends the rest.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import h11
import httpx
import orjson
import pytest
import yaml
from server_support import LoopbackServer

from switchman._config import parse_config
from switchman.gateway import ConfigReloader, Gateway, build_app
from switchman.testing import FakeUpstream

from .conftest import ENV, config_data

_T = TypeVar("_T")


@contextmanager
def _reloadable(upstream: FakeUpstream, tmp_path: Path) -> Iterator[tuple[ConfigReloader, LoopbackServer]]:
    """A gateway on loopback whose configuration file, once reloaded, routes "auto" to `safe` (the old one: to
    `cheap`, or `big` for a long prompt), has no embedding model, and refuses any prompt over 5 characters."""
    data = config_data(upstream, f"sqlite:///{tmp_path / 'ledger.sqlite3'}")
    gateway = Gateway.from_config(parse_config(data), base_dir=tmp_path, env=ENV)
    data["routes"]["default"] = {"candidates": ["safe"], "strategy": "cheapest"}
    del data["models"]["text-embedding-3-small"]
    data["server"]["limits"] = {"max_prompt_chars": 5}
    path = tmp_path / "switchman.yaml"
    path.write_text(yaml.safe_dump(data))
    upstream.clear()
    reloader = ConfigReloader(gateway, path)
    with LoopbackServer(build_app(gateway, reloader=reloader)) as server:
        yield reloader, server


def _events(conn: h11.Connection, sock: socket.socket) -> Iterator[Any]:
    """The server's events on `sock` as h11 reads them, until the end of its answer."""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(sock.recv(65536))
            continue
        yield event
        if isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            return


def _reloaded_mid_body(port: int, path: str, body: dict[str, Any], reload: Callable[[], bool],
                       ) -> tuple[int, dict[str, str], bytes]:
    """POST `body` to `path`: the head, `100 Continue` awaited, half the body, `reload()`, the rest; the answer."""
    raw = orjson.dumps(body)
    conn = h11.Connection(h11.CLIENT)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        head = h11.Request(method="POST", target=path, headers=[
            ("host", "test"), ("content-type", "application/json"), ("content-length", str(len(raw))),
            ("expect", "100-continue")])
        sock.sendall(conn.send(head) or b"")
        first = next(_events(conn, sock))
        assert isinstance(first, h11.InformationalResponse) and first.status_code == 100, first
        sock.sendall(conn.send(h11.Data(data=raw[:len(raw) // 2])) or b"")
        assert reload() is True  # the next configuration serves from here on
        sock.sendall(conn.send(h11.Data(data=raw[len(raw) // 2:])) or b"")
        sock.sendall(conn.send(h11.EndOfMessage()) or b"")
        status, headers, content = 0, {}, b""
        for event in _events(conn, sock):
            if isinstance(event, h11.Response):
                status, headers = event.status_code, {k.decode(): v.decode() for k, v in event.headers}
            elif isinstance(event, h11.Data):
                content += bytes(event.data)
    return status, headers, content


_ASK = [{"role": "user", "content": "hello there"}]  # over the next configuration's 5 characters


@pytest.mark.parametrize(("path", "body", "model"), [
    ("/v1/messages", {"model": "auto", "max_tokens": 50, "messages": _ASK}, "cheap"),
    ("/v1/messages", {"model": "auto", "max_tokens": 50, "messages": _ASK, "stream": True}, "cheap"),
    ("/v1/responses", {"model": "auto", "input": "hello there"}, "cheap"),
    ("/v1/responses", {"model": "auto", "input": "hello there", "stream": True}, "cheap"),
    ("/v1/embeddings", {"model": "text-embedding-3-small", "input": "hello there"}, "text-embedding-3-small"),
    ("/v1/route", {"model": "auto", "messages": _ASK}, "cheap"),
], ids=["messages", "messages-stream", "responses", "responses-stream", "embeddings", "route"])
def test_a_reload_while_the_body_arrives_leaves_the_request_to_the_old_configuration(
        upstream: FakeUpstream, tmp_path: Path, path: str, body: dict[str, Any], model: str) -> None:
    with _reloadable(upstream, tmp_path) as (reloader, server):
        # The reload runs on the server's own event loop, as SIGHUP's would.
        status, headers, content = _reloaded_mid_body(server.port, path, body, lambda: server.call(reloader.reload))
        assert reloader.gateway.config.routes["default"].candidates == ["safe"]  # reloaded before the answer
    # Read under the old limits (the new ones refuse the prompt) and answered under the old routes and models.
    assert status == 200, content
    assert headers["x-switchman-model"] == model, headers
    assert content


def test_a_reload_while_a_large_chat_body_is_parsed_leaves_it_to_the_old_configuration(
        upstream: FakeUpstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """/v1/chat/completions reads its body before it picks a dispatcher; a large body is then parsed in a worker
    thread, and the reload lands during that parse (on the server's own event loop)."""
    from switchman.gateway import _endpoints
    from switchman.gateway._offload import run_offloaded as parse_offloaded

    with _reloadable(upstream, tmp_path) as (reloader, server):

        async def reload_first(work: Callable[..., _T], *args: Any) -> _T:
            assert await reloader.reload() is True
            return await parse_offloaded(work, *args)

        monkeypatch.setattr(_endpoints, "run_offloaded", reload_first)
        long = [{"role": "user", "content": "long " * 14_000}]  # over OFFLOAD_BYTES: parsed off the loop
        answer = httpx.post(f"{server.url}/v1/chat/completions", json={"model": "auto", "messages": long},
                            timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-switchman-model"] == "big"  # the old route's (cheap and mid are too small for it)
