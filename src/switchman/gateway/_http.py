"""A lean HTTP/1.1 client for upstream calls: one keep-alive pool per provider, bodies streamed as they come.

Why not httpx: on loopback an httpx call costs about 0.7 ms of CPU (measured, see
benchmarks/bench_gateway.py), most of the gateway's 1 ms budget; this client costs about 0.05 ms.
It speaks exactly what providers need: POST/GET with a byte body, TLS (certifi's CAs when
installed), Content-Length and chunked responses parsed by httptools (C), keep-alive reuse.
It does not follow redirects, use proxies or negotiate compression (it asks for identity).

    pool = UpstreamPool("https://api.openai.com/v1", {"authorization": "Bearer ..."})
    response = await pool.send(pool.request("POST", "/chat/completions", body), connect_timeout=5)
    async for chunk in response.aiter_bytes(): ...
    await response.aclose()          # back to the pool when the body was read to the end
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator, Mapping
from urllib.parse import urlsplit

import httptools

__all__ = ["UpstreamPool", "UpstreamProtocolError", "UpstreamResponse"]


class UpstreamProtocolError(ValueError):
    """The upstream sent something that is not HTTP/1.1."""


def _ssl_context() -> ssl.SSLContext:
    try:
        import certifi
    except ImportError:
        return ssl.create_default_context()
    return ssl.create_default_context(cafile=certifi.where())


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection; parses one response at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self.keep_alive = False
        self.complete = False
        self.error: BaseException | None = None
        self._chunks: list[bytes] = []
        self._waiter: asyncio.Future[None] | None = None
        self._headers_done = False
        self._until_close = False

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not asyncio's classes

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamProtocolError(f"invalid HTTP response: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._until_close and self._headers_done:
            self.complete = True
            self._wake()
        elif not self.complete:
            self._fail(ConnectionResetError("the upstream closed the connection before the response ended"))

    # -- httptools callbacks ---------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()
        self._headers_done = True
        self._until_close = "content-length" not in self.headers and "chunked" not in self.headers.get(
            "transfer-encoding", "")
        self._wake()

    def on_body(self, body: bytes) -> None:
        self._chunks.append(bytes(body))
        self._wake()

    def on_message_complete(self) -> None:
        self.complete = True
        self._wake()

    # -- for the client --------------------------------------------------------------------
    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _fail(self, error: BaseException) -> None:
        if self.error is None:
            self.error = error
        self._wake()

    async def _wait(self) -> None:
        if self.error is not None:
            raise self.error
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None
        if self.error is not None and not self._chunks:
            raise self.error

    def send(self, raw: bytes) -> None:
        """Start one request (the previous response was read to its end)."""
        self._reset()
        assert self.transport is not None
        self.transport.write(raw)

    async def response_head(self) -> None:
        """Wait for the status line and headers."""
        while not self._headers_done:
            await self._wait()

    async def next_chunk(self) -> bytes | None:
        """The next piece of the body, or None at its end."""
        while not self._chunks:
            if self.complete:
                return None
            await self._wait()
        if len(self._chunks) == 1:
            return self._chunks.pop()
        data = b"".join(self._chunks)
        self._chunks.clear()
        return data

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class UpstreamResponse:
    """Status, headers and a body read as it arrives."""

    __slots__ = ("_conn", "_done", "_pool", "headers", "status_code")

    def __init__(self, conn: _Connection, pool: UpstreamPool) -> None:
        self._conn = conn
        self._pool = pool
        self._done = False
        self.status_code = conn.status
        self.headers: Mapping[str, str] = conn.headers

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        """Body chunks as they arrive."""
        while (chunk := await self._conn.next_chunk()) is not None:
            yield chunk

    async def aread(self) -> bytes:
        """The whole body."""
        parts = [chunk async for chunk in self.aiter_bytes()]
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def aclose(self) -> None:
        """Give the connection back when the body was read to its end; close it otherwise."""
        if self._done:
            return
        self._done = True
        conn = self._conn
        if conn.complete and conn.keep_alive and not conn.closed and conn.error is None:
            self._pool.release(conn)
        else:
            conn.abort()  # an unfinished body: the upstream sees the request cancelled


class UpstreamPool:
    """Keep-alive connections to one origin, with the headers every request carries."""

    def __init__(
        self, base_url: str, headers: Mapping[str, str], *, max_idle: int = 256, idle_expiry: float = 60.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        url = urlsplit(base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.host = url.hostname
        self.port = url.port or (443 if url.scheme == "https" else 80)
        self.prefix = url.path.rstrip("/")
        self._ssl = (ssl_context or _ssl_context()) if url.scheme == "https" else None
        host_header = self.host if url.port is None else f"{self.host}:{self.port}"
        lines = [f"host: {host_header}", "accept-encoding: identity", "connection: keep-alive",
                 *(f"{k}: {v}" for k, v in headers.items())]
        self._head = ("\r\n".join(lines) + "\r\n").encode("latin-1")
        self._idle: list[_Connection] = []
        self._max_idle = max_idle
        self._idle_expiry = idle_expiry

    def request(self, method: str, path: str, body: bytes = b"") -> bytes:
        """The raw request bytes (path is relative to the base URL's path)."""
        start = f"{method} {self.prefix}{path} HTTP/1.1\r\n".encode("latin-1")
        return b"%s%scontent-length: %d\r\n\r\n%s" % (start, self._head, len(body), body)

    async def _connect(self, timeout: float) -> _Connection:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            _, conn = await loop.create_connection(
                _Connection, self.host, self.port, ssl=self._ssl,
                server_hostname=self.host if self._ssl is not None else None,
            )
        return conn

    def _take_idle(self) -> _Connection | None:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed and now - conn.idle_since < self._idle_expiry:
                return conn
            conn.close()
        return None

    def release(self, conn: _Connection) -> None:
        """Keep a connection whose response ended, for the next request."""
        if len(self._idle) >= self._max_idle:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        self._idle.append(conn)

    async def send(self, raw: bytes, *, connect_timeout: float) -> UpstreamResponse:
        """Send a request and wait for the response's status and headers.

        A kept-alive connection the upstream closed while idle fails before any byte of answer;
        the request is then sent once more on a new connection.
        """
        conn = self._take_idle()
        if conn is not None:
            try:
                return await self._exchange(conn, raw)
            except ConnectionResetError:
                if conn.headers:
                    raise
        return await self._exchange(await self._connect(connect_timeout), raw)

    async def _exchange(self, conn: _Connection, raw: bytes) -> UpstreamResponse:
        try:
            conn.send(raw)
            await conn.response_head()
        except BaseException:
            conn.abort()
            raise
        return UpstreamResponse(conn, self)

    async def aclose(self) -> None:
        """Close every idle connection."""
        while self._idle:
            self._idle.pop().close()
