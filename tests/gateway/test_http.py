"""The upstream HTTP/1.1 client: keep-alive, chunked and close-delimited bodies, stale connections, TLS."""

from __future__ import annotations

import asyncio
import json
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from switchman.gateway._http import UpstreamPool
from switchman.testing import FakeUpstream

pytestmark = pytest.mark.anyio
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


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


async def serve(handler: Handler) -> tuple[asyncio.base_events.Server, str]:
    async def closing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handler(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(closing, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/base"


@pytest.fixture
async def raw_server() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    servers: list[asyncio.base_events.Server] = []

    async def start(handler: Handler) -> str:
        server, url = await serve(handler)
        servers.append(server)
        return url

    yield start
    for server in servers:
        server.close()


async def test_keep_alive_and_request_shape(raw_server: Callable[[Handler], Awaitable[str]]) -> None:
    requests: list[bytes] = []
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while True:
            try:
                requests.append(await read_request(reader))
            except asyncio.IncompleteReadError:
                writer.close()
                return
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-thing: Yes\r\n\r\nok")

    pool = UpstreamPool(await raw_server(handler), {"authorization": "Bearer k"})
    for _ in range(3):
        response = await pool.send(pool.request("POST", "/x", b"{}"), connect_timeout=5)
        assert (response.status_code, response.headers["x-thing"], await response.aread()) == (200, "Yes", b"ok")
        await response.aclose()
    await pool.aclose()
    assert connections == 1
    assert requests[0].startswith(b"POST /base/x HTTP/1.1\r\n")
    assert b"\r\nauthorization: Bearer k\r\n" in requests[0] and requests[0].endswith(b"\r\n\r\n{}")


async def test_chunked_and_close_delimited_bodies(raw_server: Callable[[Handler], Awaitable[str]]) -> None:
    async def chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for part in (b"data: 1\n\n", b"data: 2\n\n"):
            writer.write(b"%x\r\n%s\r\n" % (len(part), part))
            await writer.drain()
            await asyncio.sleep(0.01)
        writer.write(b"0\r\n\r\n")
        await finish(reader, writer)

    pool = UpstreamPool(await raw_server(chunked), {})
    response = await pool.send(pool.request("POST", "/", b""), connect_timeout=5)
    assert [c async for c in response.aiter_bytes()] == [b"data: 1\n\n", b"data: 2\n\n"]
    await response.aclose()
    await pool.aclose()

    async def until_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nall of it")
        await writer.drain()
        writer.close()

    pool = UpstreamPool(await raw_server(until_close), {})
    response = await pool.send(pool.request("GET", "/"), connect_timeout=5)
    assert await response.aread() == b"all of it"
    await response.aclose()
    await pool.aclose()


async def test_a_connection_closed_while_idle_is_replaced(raw_server: Callable[[Handler], Awaitable[str]]) -> None:
    served = 0

    async def one_and_done(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal served
        await read_request(reader)
        served += 1
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\n%d" % served)
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.transport.abort()  # closes the kept-alive connection without saying so
        writer.close()

    pool = UpstreamPool(await raw_server(one_and_done), {})
    for expected in (b"1", b"2"):
        await asyncio.sleep(0.1)
        response = await pool.send(pool.request("POST", "/", b"x"), connect_timeout=5)
        assert await response.aread() == expected
        await response.aclose()
    await pool.aclose()


async def test_truncated_body_and_refused_connection(raw_server: Callable[[Handler], Awaitable[str]]) -> None:
    async def truncated(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nshort")
        await writer.drain()
        writer.transport.abort()
        writer.close()

    pool = UpstreamPool(await raw_server(truncated), {})
    response = await pool.send(pool.request("POST", "/", b""), connect_timeout=5)
    with pytest.raises(ConnectionResetError):
        await response.aread()
    await response.aclose()
    closed = UpstreamPool("http://127.0.0.1:9/", {})
    with pytest.raises(OSError):
        await closed.send(closed.request("GET", "/"), connect_timeout=5)
    with pytest.raises(ValueError):
        UpstreamPool("ftp://x", {})


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
async def test_tls(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"],
                   check=True, capture_output=True)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    client_context = ssl.create_default_context(cafile=str(cert))
    with FakeUpstream(host="localhost", ssl_context=server_context) as upstream:
        assert upstream.openai_base_url.startswith("https://localhost:")
        pool = UpstreamPool(upstream.openai_base_url, {"authorization": "Bearer k"}, ssl_context=client_context)
        body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()
        response = await pool.send(pool.request("POST", "/chat/completions", body), connect_timeout=5)
        assert response.status_code == 200
        assert json.loads(await response.aread())["choices"][0]["message"]["content"] == "Hello from m."
        await response.aclose()
        await pool.aclose()
        untrusted = UpstreamPool(upstream.openai_base_url, {})
        with pytest.raises(ssl.SSLError):
            await untrusted.send(untrusted.request("GET", "/models"), connect_timeout=5)
