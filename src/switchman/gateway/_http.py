"""Upstream HTTP over aiohttp: one keep-alive session per provider, bodies streamed as they come.

aiohttp does the protocol (keep-alive pooling, chunked bodies, TLS, DNS caching); this module
only fixes the settings a gateway wants and gives the dispatcher four verbs. Redirects are not
followed, cookies are not kept, proxies in the environment are ignored, and bodies are asked for
uncompressed, so nothing is decompressed on the hot path.

    pool = UpstreamPool("https://api.openai.com/v1", {"authorization": "Bearer ..."})
    request = pool.request("POST", "/chat/completions", body)
    response = await pool.send(request, connect_timeout=5, read_timeout=60)
    async for chunk in response.aiter_bytes(): ...
    await response.aclose()          # the connection went back to the pool if the body was read to its end

The session is opened on first use, in the event loop that sends (the pool is built at startup,
before the server's loop runs).
"""

from __future__ import annotations

import io
import ssl
import urllib.parse
from collections.abc import AsyncIterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass

import aiohttp
from yarl import URL

from .._slots import slot_init

__all__ = ["MAX_CONNECTIONS", "OUTBOUND_HEADERS", "UpstreamPool", "UpstreamRequest", "UpstreamResponse", "escape_query"]

#: Connections open at once to one provider (requests beyond it wait, within the connect timeout).
MAX_CONNECTIONS = 1000
#: Seconds an idle kept-alive connection is kept for the next request.
KEEPALIVE_EXPIRY = 60.0
#: Seconds a resolved provider address is reused.
DNS_CACHE_TTL = 60
#: Bodies larger than this are written to the upstream in pieces (one write of megabytes holds the event loop).
_STREAMED_BODY_BYTES = 1 << 20
#: What a base URL's query keeps unescaped (RFC 3986 query characters, and '%' of the escapes already there).
_QUERY_SAFE = "!$&'()*+,/:;=?@~%"


def escape_query(query: str) -> str:
    """A base URL's query as the pool sends it: as written, but with what a request line cannot carry escaped."""
    return urllib.parse.quote(query, safe=_QUERY_SAFE)


#: Extra headers for requests sent in the current context: the tracing attempt span's traceparent.
OUTBOUND_HEADERS: ContextVar[Mapping[str, str] | None] = ContextVar("switchman_outbound_headers", default=None)


def _ssl_context() -> ssl.SSLContext:
    try:
        import certifi
    except ImportError:
        return ssl.create_default_context()
    return ssl.create_default_context(cafile=certifi.where())


@slot_init
@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    """A request ready to send: method, absolute URL and body."""

    method: str
    url: URL
    body: bytes


class UpstreamResponse:
    """Status, headers and a body read as it arrives."""

    __slots__ = ("_response", "headers", "status_code")

    #: `aclose` never suspends (a stream's close needs no shield from cancellation: see OpenedStream.aclose).
    closes_at_once = True

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status_code = response.status
        self.headers: Mapping[str, str] = response.headers

    def aiter_bytes(self) -> AsyncIterator[bytes]:
        """Body chunks as they arrive."""
        return self._response.content.iter_any()

    async def aread(self) -> bytes:
        """The whole body."""
        return await self._response.read()

    def abort(self) -> None:
        """Close the connection now: a read waiting on the body ends with an error."""
        if not self._response.closed:
            self._response.close()

    async def aclose(self) -> None:
        """Close the connection if the body did not end (at its end aiohttp gave it back to the pool).

        A stream closed early thus closes its connection: the upstream sees the request cancelled.
        """
        if not self._response.closed:
            self._response.close()


class UpstreamPool:
    """Keep-alive connections to one origin, with the headers every request carries."""

    def __init__(
        self, base_url: str, headers: Mapping[str, str], *, max_connections: int = MAX_CONNECTIONS,
        keepalive_expiry: float = KEEPALIVE_EXPIRY, ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        # A query (Azure's `?api-version=`) goes after each request's path, as written (escapes kept as they are, so
        # the scrubber knows the form an upstream may echo); only what a request line cannot carry is escaped.
        base, _, query = base_url.partition("#")[0].partition("?")
        query = escape_query(query)
        url = URL(base)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self._prefix = str(url).rstrip("/")
        self._query = f"?{query}" if query else ""
        self._headers = {"accept-encoding": "identity", **headers}
        self._ssl: ssl.SSLContext | bool = (ssl_context or _ssl_context()) if url.scheme == "https" else True
        self._max_connections = max_connections
        self._keepalive_expiry = keepalive_expiry
        self._urls: dict[str, URL] = {}
        self._timeouts: dict[tuple[float, float], aiohttp.ClientTimeout] = {}
        self._session: aiohttp.ClientSession | None = None

    def request(self, method: str, path: str, body: bytes = b"") -> UpstreamRequest:
        """A request to `path`, relative to the base URL's path."""
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = URL(self._prefix + path + self._query, encoded=True)
        return UpstreamRequest(method, url, body)

    def _open(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=0, limit_per_host=self._max_connections, keepalive_timeout=self._keepalive_expiry,
            ttl_dns_cache=DNS_CACHE_TTL, ssl=self._ssl,
        )
        self._session = aiohttp.ClientSession(
            connector=connector, headers=self._headers, cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False, trust_env=False, raise_for_status=False,
        )
        return self._session

    def _timeout(self, connect: float, read: float) -> aiohttp.ClientTimeout:
        timeout = self._timeouts.get((connect, read))
        if timeout is None:
            timeout = self._timeouts[connect, read] = aiohttp.ClientTimeout(
                total=None, connect=connect, sock_read=read)
        return timeout

    async def send(self, request: UpstreamRequest, *, connect_timeout: float, read_timeout: float) -> UpstreamResponse:
        """Send a request and wait for the response's status and headers.

        `connect_timeout` bounds getting a connection (a new one, or a free one from a full pool);
        `read_timeout` bounds the wait for the answer after sending, and any later silence in it.
        """
        session = self._session or self._open()
        body = request.body if len(request.body) <= _STREAMED_BODY_BYTES else io.BytesIO(request.body)
        response = await session.request(
            request.method, request.url, data=body, allow_redirects=False,
            timeout=self._timeout(connect_timeout, read_timeout), headers=OUTBOUND_HEADERS.get(),
        )
        return UpstreamResponse(response)

    async def aclose(self) -> None:
        """Close every connection."""
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()
