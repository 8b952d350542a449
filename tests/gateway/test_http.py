"""Upstream HTTP (aiohttp underneath): keep-alive reuse, chunked and close-delimited bodies, stale
connections, resets, timeouts, TLS, and how each failure maps onto the switchman error tree."""

from __future__ import annotations

import asyncio
import json
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from switchman._exceptions import (
    UpstreamConnectionError,
    UpstreamError,
    UpstreamTimeout,
)
from switchman.gateway._http import UpstreamPool, UpstreamResponse
from switchman.gateway._openai import OpenAIAdapter
from switchman.testing import FakeUpstream

pytestmark = pytest.mark.anyio
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
Pools = Callable[..., UpstreamPool]


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
    return head + await reader.readexactly(length)


async def finish(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Wait for the client to hang up, then close our side."""
    await writer.drain()
    try:
        await reader.read()
    except ConnectionError:
        pass
    writer.close()


@pytest.fixture
async def raw_server() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    """Start loopback servers speaking whatever bytes a test's handler writes; base URL path /base."""
    servers: list[asyncio.base_events.Server] = []
    handlers: set[asyncio.Task[None]] = set()

    async def start(handler: Handler) -> str:
        async def closing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            handlers.add(task)
            try:
                await handler(reader, writer)
            finally:
                writer.close()
                handlers.discard(task)

        server = await asyncio.start_server(closing, "127.0.0.1", 0)
        servers.append(server)
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/base"

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()
    for task in list(handlers):
        task.cancel()
    await asyncio.gather(*handlers, return_exceptions=True)
    await asyncio.sleep(0)  # let the transports' closing callbacks run


@pytest.fixture
async def pools() -> AsyncIterator[Pools]:
    """Build pools that are closed after the test."""
    made: list[UpstreamPool] = []

    def make(*args: Any, **kwargs: Any) -> UpstreamPool:
        made.append(UpstreamPool(*args, **kwargs))
        return made[-1]

    yield make
    for pool in made:
        await pool.aclose()


async def send(pool: UpstreamPool, body: bytes = b"", *, read_timeout: float = 5) -> UpstreamResponse:
    return await pool.send(pool.request("POST", "/x", body), connect_timeout=5, read_timeout=read_timeout)


async def mapped(call: Awaitable[object]) -> UpstreamError:
    """The switchman error an adapter's map_errors makes of what `call` raises."""
    with pytest.raises(UpstreamError) as info, OpenAIAdapter().map_errors("m"):
        await call
    return info.value


async def test_keep_alive_and_request_shape(raw_server: Callable[[Handler], Awaitable[str]], pools: Pools) -> None:
    requests: list[bytes] = []
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while True:
            try:
                requests.append(await read_request(reader))
            except asyncio.IncompleteReadError:
                return
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nX-Thing: Yes\r\n\r\nok")

    pool = pools(await raw_server(handler), {"authorization": "Bearer k"})
    for _ in range(3):
        response = await send(pool, b"{}")
        assert (response.status_code, response.headers["x-thing"], await response.aread()) == (200, "Yes", b"ok")
        await response.aclose()
    assert connections == 1
    head = requests[0].lower()
    assert requests[0].startswith(b"POST /base/x HTTP/1.1\r\n") and requests[0].endswith(b"\r\n\r\n{}")
    assert b"\r\nauthorization: bearer k\r\n" in head and b"\r\naccept-encoding: identity\r\n" in head
    assert b"cookie" not in head


async def test_chunked_body_arrives_as_it_is_sent(raw_server: Callable[[Handler], Awaitable[str]],
                                                  pools: Pools) -> None:
    go_on = asyncio.Event()

    async def chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        writer.write(b"9\r\ndata: 1\n\n\r\n")
        await go_on.wait()  # the second part only after the client has the first
        writer.write(b"9\r\ndata: 2\n\n\r\n0\r\n\r\n")
        await finish(reader, writer)

    pool = pools(await raw_server(chunked), {})
    response = await send(pool)
    chunks = response.aiter_bytes()
    assert await anext(chunks) == b"data: 1\n\n"
    go_on.set()
    assert [c async for c in chunks] == [b"data: 2\n\n"]
    await response.aclose()


async def test_close_delimited_body(raw_server: Callable[[Handler], Awaitable[str]], pools: Pools) -> None:
    async def until_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nall of it")
        await writer.drain()

    pool = pools(await raw_server(until_close), {})
    response = await send(pool)
    assert await response.aread() == b"all of it"
    await response.aclose()


async def test_a_connection_closed_while_idle_is_replaced(raw_server: Callable[[Handler], Awaitable[str]],
                                                          pools: Pools) -> None:
    served = 0

    async def one_and_done(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal served
        await read_request(reader)
        served += 1
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\n%d" % served)
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.transport.abort()  # closes the kept-alive connection without saying so

    pool = pools(await raw_server(one_and_done), {})
    for expected in (b"1", b"2"):
        await asyncio.sleep(0.1)
        response = await send(pool, b"x")
        assert await response.aread() == expected
        await response.aclose()


async def test_closing_an_unfinished_body_closes_the_connection(raw_server: Callable[[Handler], Awaitable[str]],
                                                                pools: Pools) -> None:
    hung_up = asyncio.Event()

    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n9\r\ndata: 1\n\n\r\n")
        await finish(reader, writer)
        hung_up.set()

    pool = pools(await raw_server(endless), {})
    response = await send(pool)
    assert await anext(response.aiter_bytes()) == b"data: 1\n\n"
    await response.aclose()
    await asyncio.wait_for(hung_up.wait(), 5)  # the upstream sees the request cancelled


async def test_resets_and_truncated_bodies_are_connection_errors(raw_server: Callable[[Handler], Awaitable[str]],
                                                                  pools: Pools) -> None:
    async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.transport.abort()

    async def truncated(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nshort")
        await writer.drain()
        writer.transport.abort()

    assert isinstance(await mapped(send(pools(await raw_server(reset), {}))), UpstreamConnectionError)
    response = await send(pools(await raw_server(truncated), {}))
    assert isinstance(await mapped(response.aread()), UpstreamConnectionError)
    await response.aclose()
    refused = pools("http://127.0.0.1:9/", {})
    assert isinstance(await mapped(send(refused)), UpstreamConnectionError)
    with pytest.raises(ValueError):
        UpstreamPool("ftp://x", {})


async def test_read_timeout_bounds_the_answer_and_silences_in_it(raw_server: Callable[[Handler], Awaitable[str]],
                                                                 pools: Pools) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await finish(reader, writer)

    async def stalls(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n9\r\ndata: 1\n\n\r\n")
        await finish(reader, writer)

    error = await mapped(send(pools(await raw_server(silent), {}), read_timeout=0.2))
    assert isinstance(error, UpstreamTimeout) and error.status_code == 504
    response = await send(pools(await raw_server(stalls), {}), read_timeout=0.2)
    chunks = response.aiter_bytes()
    assert await anext(chunks) == b"data: 1\n\n"
    assert isinstance(await mapped(anext(chunks)), UpstreamTimeout)
    await response.aclose()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
async def test_tls(tmp_path: Path, pools: Pools) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"],
                   check=True, capture_output=True)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    client_context = ssl.create_default_context(cafile=str(cert))
    with FakeUpstream(host="localhost", ssl_context=server_context) as upstream:
        assert upstream.openai_base_url.startswith("https://localhost:")
        pool = pools(upstream.openai_base_url, {"authorization": "Bearer k"}, ssl_context=client_context)
        body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()
        response = await pool.send(pool.request("POST", "/chat/completions", body), connect_timeout=5,
                                   read_timeout=5)
        assert response.status_code == 200
        assert json.loads(await response.aread())["choices"][0]["message"]["content"] == "Hello from m."
        await response.aclose()
        untrusted = pools(upstream.openai_base_url, {})
        error = await mapped(untrusted.send(untrusted.request("GET", "/models"), connect_timeout=5, read_timeout=5))
        assert isinstance(error, UpstreamConnectionError)
        assert isinstance(error.__cause__, ssl.SSLError)
        await pool.aclose()  # while the server still runs
        await untrusted.aclose()


def test_an_upstream_responses_close_never_suspends() -> None:
    """`closes_at_once` is a promise the stream's close relies on (it skips the cancellation shield): `aclose`
    finishes on its first step, whether the body ended or not."""
    from switchman.gateway._http import UpstreamResponse

    class _Response:
        status = 200
        headers: dict[str, str] = {}

        def __init__(self, closed: bool) -> None:
            self.closed = closed
            self.close_calls = 0

        def close(self) -> None:
            self.close_calls += 1
            self.closed = True

    for closed in (False, True):
        raw = _Response(closed)
        response = UpstreamResponse(raw)  # type: ignore[arg-type]
        assert response.closes_at_once
        step = response.aclose()
        try:
            step.send(None)
        except StopIteration:
            pass
        else:  # pragma: no cover - the failure this test exists for
            step.close()
            raise AssertionError("UpstreamResponse.aclose suspended")
        assert raw.closed and raw.close_calls == (0 if closed else 1)


async def _first_request_to(raw_server: Callable[[Handler], Awaitable[str]], pools: Pools, suffix: str) -> bytes:
    """The request a pool sends to the raw server's URL + `suffix` (a base URL's path and query)."""
    requests: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        requests.append(await read_request(reader))
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")

    pool = pools(await raw_server(handler) + suffix, {})
    response = await send(pool, b"{}")
    await response.aclose()
    return requests[0]


async def test_a_base_url_query_stays_after_the_path(raw_server: Callable[[Handler], Awaitable[str]],
                                                     pools: Pools) -> None:
    # Azure OpenAI: https://x.openai.azure.com/openai/deployments/d?api-version=2024-10-21
    sent = await _first_request_to(raw_server, pools, "/deployments/d/?api-version=2024-10-21&x=a%2Fb")
    assert sent.startswith(b"POST /base/deployments/d/x?api-version=2024-10-21&x=a%2Fb HTTP/1.1\r\n")


async def test_a_base_url_query_is_sent_as_a_valid_request_line(raw_server: Callable[[Handler], Awaitable[str]],
                                                               pools: Pools) -> None:
    # Written by hand with a space or a non-ASCII letter, the query is percent-encoded as yarl did before it moved
    # after the path (existing escapes kept as written).
    sent = await _first_request_to(raw_server, pools, "?api-version=2024 preview&tag=café&x=a%2Fb")
    assert sent.startswith(b"POST /base/x?api-version=2024%20preview&tag=caf%C3%A9&x=a%2Fb HTTP/1.1\r\n")
