"""The HTTP server side of the gateway: uvicorn, with the bounds it lacks added at the protocol level.

uvicorn's httptools protocol has no deadline for a request's head or body, no cap on the head's
size and no bound on connections that never send a complete request, so a few clients holding
half-sent requests could take every file descriptor. `GuardedHttpProtocol` is that protocol with:

- a connection cap: beyond `max_connections` a new connection gets a JSON 503 and is closed;
- a head cap: a request line + headers over `max_header_bytes` gets a 431 (each request's: one pipelined
  behind another in the same read is counted from what the parser read of it, never more than was sent);
- a head deadline: a request whose head is not complete `header_timeout_s` after its first byte
  (or after the connection opened) gets a 408;
- a body deadline: a body not complete `body_timeout_s` after its head gets a 408 (or the
  connection is closed when the answer has already started); a pipelined request's deadline starts
  when it does (uvicorn reads nothing while it waits behind the answer before it);
- a write deadline: a client that takes nothing from its answer for `write_timeout_s` while the
  send buffer is full is disconnected (the app then sees `http.disconnect`);
- keep-alive bounds: idle for `keepalive_timeout_s`, or `keepalive_max_requests` requests, then close;
- malformed requests (bad Content-Length, Content-Length with Transfer-Encoding, unknown methods)
  answered with the OpenAI error envelope instead of uvicorn's plain text;
- an answer given before a request's body was asked for while the client waits for `100 Continue` closes the
  connection: the client may then send the body or not, so the next bytes could be either (a desync). The close
  lingers (what the client still sends is read and dropped for a moment), so a client sending its body is not reset;
- a chunked body's trailers are not added to the request's headers (uvicorn would, after the app read them) and
  count against the head cap.

And one saving: fewer, larger writes. A response's head goes out with the first piece of its body
(one send system call and one wake-up of the client instead of two), and a stream's pieces written
in one turn of the event loop go out together (`_CoalescedWrites`).

    config = server_config(app, limits, host="127.0.0.1", port=8080)
    uvicorn.Server(config).run()
"""

from __future__ import annotations

import asyncio
import logging
import resource
import urllib.parse
from asyncio.events import TimerHandle
from collections.abc import Callable
from typing import Any, ClassVar

import httptools
import orjson
import uvicorn
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol, RequestResponseCycle

from .._exceptions import InvalidRequestError
from .._limits import ServerLimits
from ._errors import anthropic_error_payload, dialect_for_path, error_payload, error_response

__all__ = ["GuardedHttpProtocol", "guarded_protocol", "raise_fd_limit", "server_config"]

logger = logging.getLogger("switchman.gateway")

#: Seconds a refused connection is kept half-open to read what the client was sending (so the
#: client reads the 503 instead of a reset), before it is closed.
_LINGER_S = 1.0
_HEAD_END = b"\r\n\r\n"


def _error_bytes(status: int, code: str, message: str, *, kind: str = "invalid_request_error",
                 extra: bytes = b"", path: str = "") -> bytes:
    """A complete HTTP/1.1 error response, closing the connection, in the envelope of the API at `path`
    (Anthropic's for /v1/messages, as the app answers there; OpenAI's otherwise or when the path is unknown)."""
    _, payload = error_payload(InvalidRequestError(message, status=status, code=code, kind=kind))
    if dialect_for_path(path) == "anthropic":
        payload = anthropic_error_payload(status, payload)
    body = orjson.dumps(payload)
    return b"".join((STATUS_LINE[status], b"content-type: application/json\r\ncontent-length: ",
                     str(len(body)).encode(), b"\r\nconnection: close\r\n", extra, b"\r\n", body))


def _path_of(target: bytes) -> str:
    """The path of a request target as uvicorn decodes it for the app (percent-decoded, an absolute form's
    path only), so a refusal below the app picks the envelope the app would; "" when it cannot be read."""
    try:
        path = httptools.parse_url(target).path
    except httptools.HttpParserInvalidURLError:
        return ""
    return urllib.parse.unquote(path.decode("latin-1")) if path else ""


def _close_if_answered_unasked(cycle: RequestResponseCycle, writer: _CoalescedWrites, linger: Callable[[], None]
                               ) -> None:
    """Make an answer that starts before the request's body was asked for (no `100 Continue` sent) close the
    connection. The client waiting for `100 Continue` may skip the body or send it: kept alive, the server would
    take the next request's first bytes for the body (or the body for a request), so the two would disagree.
    The close lingers (`linger`): a client sending its body would otherwise get a reset, and may lose the answer."""
    send = cycle.send

    async def send_closing(message: Any) -> None:
        if not cycle.response_started and cycle.waiting_for_100_continue and cycle.more_body:
            cycle.keep_alive = False  # uvicorn then adds `connection: close` and closes after the answer
            writer.on_close = linger
        await send(message)

    cycle.send = send_closing  # type: ignore[method-assign]


class _CoalescedWrites:
    """A response cycle's transport that makes fewer, larger writes (fewer send calls and client wake-ups).

    uvicorn writes the head when the app sends `http.response.start` and each body piece as it is
    sent. Here the head is held for the body's first write (a non-stream answer goes out in one
    write), and a chunked (streamed) body's pieces written in one turn of the event loop go out
    together at the end of that turn (a relay that has several events in hand sends them at once).
    Whatever is held goes out at the next turn at the latest, or before the connection is closed.
    """

    __slots__ = ("_cycle", "_loop", "_pending", "_started", "_transport", "on_close")

    def __init__(self, transport: asyncio.Transport, cycle: RequestResponseCycle, loop: asyncio.AbstractEventLoop
                 ) -> None:
        self._transport = transport
        self._cycle = cycle
        self._loop = loop
        self._pending: list[bytes] | None = None
        self._started = False
        self.on_close: Callable[[], None] | None = None  # how uvicorn's close ends the connection, if not at once

    def write(self, data: bytes) -> None:
        pending = self._pending
        if pending is not None:
            if self._cycle.chunked_encoding:
                pending.append(data)
                return
            self._pending = None
            pending.append(data)
            self._transport.write(b"".join(pending))
        elif self._cycle.chunked_encoding or (not self._started and self._cycle.response_started):
            self._started = True  # the head (a 100 Continue, written before it, goes out at once) or a stream's piece
            self._pending = [data]
            self._loop.call_soon(self.flush)
        else:
            self._transport.write(data)

    def flush(self) -> None:
        """Write what is held (unless the connection went away meanwhile)."""
        pending, self._pending = self._pending, None
        if pending is not None and not self._cycle.disconnected and not self._transport.is_closing():
            self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    @property
    def cycle(self) -> RequestResponseCycle:
        return self._cycle

    @property
    def holding(self) -> bool:
        return self._pending is not None

    @property
    def done(self) -> bool:
        return bool(self._cycle.response_complete)

    def close(self) -> None:
        self.flush()
        if self.on_close is not None:
            self.on_close()
        else:
            self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with deadlines, size caps and a connection cap (see module doc)."""

    #: The bounds; `guarded_protocol(limits)` makes a subclass with its own.
    limits: ClassVar[ServerLimits] = ServerLimits()
    #: Open connections by client address (kept only with `max_connections_per_client`).
    per_client: ClassVar[dict[str, int]] = {}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._reading_head = True
        self._in_message = False  # between a request's first byte and its body's end (`self.url` is its target)
        self._head_bytes = 0
        self._head_tail = b""  # the last bytes of the head's previous read (its end, `\r\n\r\n`, may span two)
        self._mid_read = False  # the request being read began in a read after another request ended in it
        self._deadline: TimerHandle | None = None
        self._write_deadline: TimerHandle | None = None
        self._served = 0
        self._refused = False
        self._writers: list[_CoalescedWrites] = []  # this connection's answers that may hold bytes
        self._address: str | None = None

    # -- timers ----------------------------------------------------------------------------------
    def _arm(self, seconds: float, callback: Any) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, callback)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    # -- connection ------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            self._refuse(503, "server_busy", "the gateway is at its connection limit; retry shortly",
                         kind="api_error", extra=b"retry-after: 1\r\n", linger=False)
            return
        per_client = self.limits.max_connections_per_client
        if per_client is not None and self.client is not None:
            self._address = address = self.client[0]
            held = self.per_client[address] = self.per_client.get(address, 0) + 1
            if held > per_client:
                self._refuse(503, "server_busy", f"more than {per_client} open connections from this address",
                             kind="api_error", extra=b"retry-after: 1\r\n", linger=False)
                return
        self._arm(self.limits.header_timeout_s, self._head_too_slow)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._address is not None:
            left = self.per_client.pop(self._address, 1) - 1
            if left > 0:
                self.per_client[self._address] = left
            self._address = None
        self._disarm()
        if self._write_deadline is not None:
            self._write_deadline.cancel()
            self._write_deadline = None
        self._disconnect_unfinished()  # uvicorn tells the newest request only, not an answer streamed before it
        super().connection_lost(exc)

    def _refuse(self, status: int, code: str, message: str, *, kind: str = "invalid_request_error",
                extra: bytes = b"", linger: bool = True, head: bytes = b"") -> None:
        """Answer an error and end the connection without reading the request any further.

        The error is in the envelope of the API the request was for, as far as its target is known (the parser's,
        or the request line at the start of `head`, bytes not yet given to the parser).

        With `linger`, the write side is closed first and what the client still sends is read and
        dropped for a moment, so the client reads the answer rather than a reset. A connection over
        the cap does not linger: its descriptor is what the cap protects.
        """
        if self._refused or self.transport.is_closing():
            return
        self._refused = True
        self._flush_writes()  # an earlier answer's held tail goes out before the error and the close
        if self._disconnect_unfinished():
            self.transport.close()  # an answer is on the wire: an error written now would land inside it
            return
        self.transport.write(_error_bytes(status, code, message, kind=kind, extra=extra,
                                          path=self._target(head)))
        if not linger:
            self.transport.close()
            return
        self._linger()

    def _linger(self) -> None:
        """End the connection after what was written: the write side first, then, after reading and dropping what
        the client still sends for a moment (a close with unread bytes would reset it), the rest."""
        self._refused = True  # `data_received` drops what comes
        if self.transport.is_closing():
            return
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._arm(_LINGER_S, self.transport.close)

    def _target(self, head: bytes) -> str:
        """The path of the request being read ("" when unknown), from the parser's target, else `head`'s first line."""
        if self._in_message and self.url:
            return _path_of(bytes(self.url))
        parts = head.split(b"\r\n", 1)[0].split(b" ", 2)
        return _path_of(parts[1]) if len(parts) > 1 else ""

    def _disconnect_unfinished(self) -> bool:
        """Mark every unfinished answer of this connection disconnected; whether one had begun on the wire.

        Not only the newest request's: a pipelined request's refusal must also stop the answer being
        streamed before it (its app would write after the error, into a half-closed transport).
        """
        cycles = [w.cycle for w in self._writers]
        cycles += [cycle for cycle, _ in self.pipeline]
        if self.cycle is not None:
            cycles.append(self.cycle)
        begun = False
        for cycle in cycles:
            if not cycle.response_complete and not cycle.disconnected:
                begun = begun or bool(cycle.response_started)
                cycle.disconnected = True  # the app's answer, if it ever comes, goes nowhere
                cycle.message_event.set()
        return begun

    def eof_received(self) -> None:
        if self._refused:
            self.transport.close()

    # -- reading ---------------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_message = True
        # `data_received` counted the read this head began in from its start, unless a request ended in that read
        # before it (its head's end reset the count): then the parser's pieces are what counts (`_parsed_head_bytes`).
        self._mid_read = self._head_bytes == 0
        if self._deadline is None:
            # A head that follows, in the same read, a request completed just before: `data_received`
            # armed the deadline before that request, and its completion disarmed it.
            self._arm(self.limits.header_timeout_s, self._head_too_slow)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        self._unset_keepalive_if_required()
        if self._reading_head:
            if self._deadline is None:
                self._arm(self.limits.header_timeout_s, self._head_too_slow)
            seen = self._head_bytes + len(data)
            if seen > self.limits.max_header_bytes and self._over_cap(data):
                self._refuse(431, "request_header_too_large",
                             f"the request line and headers exceed {self.limits.max_header_bytes} bytes",
                             head=data if self._head_bytes == 0 else b"")
                return
            self._head_bytes = seen
            self._head_tail = data[-3:]
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._unsupported_upgrade_warning()
            self._refuse(400, "unsupported_upgrade", "protocol upgrades are not supported")
        except httptools.HttpParserCallbackError:
            self._refuse(400, "invalid_http_request", "malformed HTTP request: the request target cannot be read")
        except httptools.HttpParserError as exc:
            self._refuse(400, "invalid_http_request", f"malformed HTTP request: {exc}")
        else:
            if self._mid_read and self._reading_head and self._in_message:
                # The read ended inside a head begun after another request in it: what of it this read holds counts
                # (its pieces would miss the header line in progress, reported only when the next one begins).
                self._mid_read = False
                self._head_bytes = len(data) - self._head_start(data)
                self._head_tail = data[-3:]

    def _over_cap(self, data: bytes) -> bool:
        """Whether the head being read, with `data`, exceeds the cap: only the part up to the head's end counts
        (a body may follow in the read), and that end may have begun in the head's previous read."""
        tail = self._head_tail if self._head_bytes else b""
        end = (tail + data).find(_HEAD_END) if tail else data.find(_HEAD_END)
        return end < 0 or self._head_bytes + end - len(tail) + len(_HEAD_END) > self.limits.max_header_bytes

    def _head_start(self, data: bytes) -> int:
        """Where in `data` the head being read began, or an earlier offset (counting more, never less).

        The head has no blank line yet, so it began after the last one in `data`; its first bytes are its method and
        target as parsed. The first such bytes after that blank line are its start (or earlier bytes of a body)."""
        blank = data.rfind(_HEAD_END)
        low = 0 if blank < 0 else blank + len(_HEAD_END)
        start = data.find(b"%s %s" % (self.parser.get_method() or b"", bytes(self.url)), low)
        return low if start < 0 else start

    def _parsed_head_bytes(self) -> int:
        """The size of the head being parsed, from its pieces: a lower bound (never a false 431).

        The least the parser accepts around them: `METHOD SP target SP HTTP/1.1 CRLF`, `name:value CRLF` per header
        (whitespace around a value is not in it) and the final CRLF.
        """
        fixed = len(self.parser.get_method() or b"") + 14
        return len(self.url) + self._header_lines_bytes() + fixed

    def _header_lines_bytes(self) -> int:
        """The least the parsed header lines (or trailers) took on the wire: `name:value CRLF` each."""
        return sum(len(name) + len(value) + 3 for name, value in self.headers)

    def on_headers_complete(self) -> None:
        self._reading_head = False
        self._head_bytes = 0
        if self._mid_read and self._parsed_head_bytes() > self.limits.max_header_bytes:
            # Pipelined behind another request in one read (`data_received` saw only the first head): answered
            # with the 431 in its turn, after the answers before it, and the connection closed.
            refusal = InvalidRequestError(f"the request line and headers exceed {self.limits.max_header_bytes} bytes",
                                          status=431, code="request_header_too_large")
            app, self.app = self.app, error_response(refusal, headers={"connection": "close"},
                                                     dialect=dialect_for_path(_path_of(bytes(self.url))))
            try:
                super().on_headers_complete()
            finally:
                self.app = app
        else:
            super().on_headers_complete()  # what it raises (e.g. a path it cannot decode) surfaces as a parser error
        self.headers = []  # the request's are in its scope: trailers, parsed as headers later, land here, not there
        if self.cycle is not None:
            writer = _CoalescedWrites(self.transport, self.cycle, self.loop)
            if self.cycle.waiting_for_100_continue:
                _close_if_answered_unasked(self.cycle, writer, self._linger)
            self._writers = [w for w in self._writers if w.holding or not w.done] + [writer]
            self.cycle.transport = writer  # type: ignore[assignment]
        self._served += 1
        if self._served >= self.limits.keepalive_max_requests and self.cycle is not None:
            self.cycle.keep_alive = False
        if self.pipeline and self.pipeline[0][0] is self.cycle:  # `_queued()`, inline: this runs per request
            self._disarm()  # its body deadline starts with it (`on_response_complete`)
        else:
            self._arm(self.limits.body_timeout_s, self._body_too_slow)

    def _queued(self) -> bool:
        """Whether the newest request waits behind an earlier answer (uvicorn reads nothing meanwhile)."""
        return bool(self.pipeline) and self.pipeline[0][0] is self.cycle

    def on_message_complete(self) -> None:
        self._disarm()
        self._reading_head = True
        self._in_message = False
        if self.headers and self._trailers_over_cap():
            raise httptools.HttpParserError("trailers over the cap")  # refused: the parser reads no further
        super().on_message_complete()

    def _trailers_over_cap(self) -> bool:
        """Whether a chunked body's trailers exceed the head cap (then refused with a 431). They are dropped: uvicorn
        would add them to the request's headers after the app read those."""
        if self._header_lines_bytes() <= self.limits.max_header_bytes:
            return False
        self._refuse(431, "request_header_too_large",
                     f"the chunked body's trailers exceed {self.limits.max_header_bytes} bytes")
        return True

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if (not self._reading_head and self._deadline is None and not self._refused
                and not self.transport.is_closing() and not self._queued()):
            # The request whose body is being read has just started: its body deadline starts now.
            self._arm(self.limits.body_timeout_s, self._body_too_slow)

    def shutdown(self) -> None:
        """Graceful shutdown closes the transport itself: what an answer holds goes out first."""
        self._flush_writes()
        super().shutdown()

    def _flush_writes(self) -> None:
        """Write every answer's held bytes now, before the protocol writes or closes on its own."""
        for writer in self._writers:
            writer.flush()

    def _head_too_slow(self) -> None:
        self._deadline = None
        if self.cycle is not None and not self.cycle.response_complete:
            # An answer is still being produced on this connection: the next head may wait for it.
            self._arm(self.limits.header_timeout_s, self._head_too_slow)
            return
        self._refuse(408, "request_timeout",
                     f"the request head was not received within {self.limits.header_timeout_s:g} s")

    def _body_too_slow(self) -> None:
        self._deadline = None
        if self.cycle is not None and self.cycle.response_started:
            self._flush_writes()
            self.transport.close()  # answered already (e.g. 401 without reading): nothing more to say
            return
        self._refuse(408, "request_timeout",
                     f"the request body was not received within {self.limits.body_timeout_s:g} s")

    # -- writing ---------------------------------------------------------------------------------
    def pause_writing(self) -> None:
        super().pause_writing()
        if self._write_deadline is None:
            self._write_deadline = self.loop.call_later(self.limits.write_timeout_s, self._reader_stalled)

    def resume_writing(self) -> None:
        if self._write_deadline is not None:
            self._write_deadline.cancel()
            self._write_deadline = None
        super().resume_writing()

    def _reader_stalled(self) -> None:
        self._write_deadline = None
        logger.info("client %s read nothing for %g s: disconnecting it", self.client and self.client[0],
                    self.limits.write_timeout_s)
        self.transport.abort()

    def send_400_response(self, msg: str) -> None:
        self._refuse(400, "invalid_http_request", msg)


def guarded_protocol(limits: ServerLimits) -> type[GuardedHttpProtocol]:
    """A GuardedHttpProtocol class bound to these limits (uvicorn builds one instance per connection)."""
    return type("GuardedHttpProtocol", (GuardedHttpProtocol,), {"limits": limits, "per_client": {}})


def raise_fd_limit(limits: ServerLimits) -> int:
    """Make room for the connection cap in the file-descriptor limit; returns the connection cap to use.

    Each client connection may hold an upstream connection too, so the soft limit is raised (up to
    the hard limit) to twice the cap plus a reserve; if it cannot be, the cap is lowered to fit.
    """
    needed = 2 * limits.max_connections + 256
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft != resource.RLIM_INFINITY and soft < needed:
        fitted = max((soft - 256) // 2, 1)
        logger.warning("file-descriptor limit %d is too low for max_connections=%d; using %d",
                       soft, limits.max_connections, fitted)
        return fitted
    return limits.max_connections


def server_config(app: Any, limits: ServerLimits, **options: Any) -> uvicorn.Config:
    """A uvicorn configuration that serves `app` with the guarded protocol and these limits."""
    cap = raise_fd_limit(limits)
    if cap != limits.max_connections:
        limits = limits.model_copy(update={"max_connections": cap})
    options.setdefault("http", guarded_protocol(limits))
    options.setdefault("ws", "none")
    options.setdefault("lifespan", "on")
    return uvicorn.Config(app, timeout_keep_alive=limits.keepalive_timeout_s, **options)  # type: ignore[arg-type]
