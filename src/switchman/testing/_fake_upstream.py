"""A fake LLM provider: a real HTTP/1.1 server on loopback speaking the OpenAI and Anthropic formats.

OpenAI: /chat/completions and /embeddings; Anthropic: /messages. Answers honour stop sequences and
max_tokens (one word = one token), and call the first tool offered when the last turn is the user's.

    with FakeUpstream() as upstream:
        upstream.inject("rate_limit", model="gpt-4o-mini", times=2, retry_after=0.1)
        upstream.inject("latency", model="gpt-4o", times=None, seconds=0.08)   # every answer 80 ms late
        ...  # point a provider at upstream.openai_base_url or upstream.anthropic_base_url
        assert len(upstream.requests_for("gpt-4o-mini")) == 3

It runs its own event loop in a thread, keeps connections alive, streams with chunked encoding
and flushes every event, so faults look on the wire exactly as a real provider's would: a reset
is a closed socket, a mid-stream drop is a chunked body that never ends.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ._replies import (
    anthropic_error,
    anthropic_message,
    anthropic_stream,
    openai_completion,
    openai_embeddings,
    openai_error,
    openai_stream,
)

__all__ = ["Fault", "FaultKind", "FakeUpstream", "RecordedRequest"]

FaultKind = Literal[
    "rate_limit", "server_error", "overloaded", "timeout", "latency", "reset", "drop_mid_stream", "slow_stream",
    "context_length", "content_policy", "bad_request", "auth_error", "truncated", "malformed_event",
    "end_mid_stream", "bad_head",
]

#: The event a "malformed_event" fault sends: cut off mid-JSON, where the gateway parses it (a usage chunk for
#: OpenAI, a text delta for Anthropic).
_MALFORMED_EVENT = {
    False: b'data: {"id":"chatcmpl-fake","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":\n\n',
    True: b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_del\n\n',
}

_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 429: "Too Many Requests",
            500: "Internal Server Error", 503: "Service Unavailable", 529: "Overloaded"}


@dataclass(frozen=True, slots=True)
class Fault:
    """One injected failure.

    `seconds`: how long a timeout stalls, how late a "latency" fault answers (normally, after the
    wait), or the pause between events of a slow stream;
    `retry_after`: the 429's Retry-After; `after_events`: events sent before a mid-stream drop.
    "truncated" answers normally but stops after a few words at the model's own output limit
    (finish_reason length / stop_reason max_tokens) whatever max_tokens the request set.
    "malformed_event" streams `after_events` events, then the next one and an event cut off mid-JSON in one
    write (a client reads them together), then ends the stream (a non-stream request is answered normally).
    "end_mid_stream" streams `after_events` events, then ends the response cleanly, without a finish reason or
    [DONE] (as a proxy that gives up on an idle stream may); a non-stream request is answered normally.
    "bad_head" answers with a head HTTP cannot parse (a header line without a colon), as a broken proxy might,
    and closes the connection: the client library's error then holds the request it sent, headers and all.
    """

    kind: FaultKind
    retry_after: float | None = None
    seconds: float = 30.0
    after_events: int = 2


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """A request the fake received, as it arrived."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: Any
    time: float
    fault: FaultKind | None = None

    @property
    def model(self) -> str | None:
        """The `model` field of the JSON body."""
        return self.body.get("model") if isinstance(self.body, dict) else None


@dataclass
class _State:
    faults: dict[str | None, deque[Fault]] = field(default_factory=dict)
    sticky: dict[str | None, Fault] = field(default_factory=dict)
    replies: dict[str, str] = field(default_factory=dict)
    requests: list[RecordedRequest] = field(default_factory=list)
    disconnects: int = 0


class FakeUpstream:
    """OpenAI- and Anthropic-speaking test server with injectable faults; records every request."""

    def __init__(
        self, *, host: str = "127.0.0.1", port: int = 0, api_keys: frozenset[str] | set[str] | None = None,
        chunk_delay: float = 0.0, ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.host = host
        self.ssl_context = ssl_context
        self.port = port
        self.api_keys = frozenset(api_keys) if api_keys else None
        self.chunk_delay = chunk_delay
        self._state = _State()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stopped: asyncio.Event | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """Root URL, e.g. http://127.0.0.1:43121."""
        return f"{'https' if self.ssl_context else 'http'}://{self.host}:{self.port}"

    @property
    def openai_base_url(self) -> str:
        """Base URL for an OpenAI-compatible provider."""
        return self.url + "/v1"

    @property
    def anthropic_base_url(self) -> str:
        """Base URL for an Anthropic provider."""
        return self.url

    def start(self) -> FakeUpstream:
        """Start serving in a background thread; returns once the port is bound."""
        self._thread = threading.Thread(target=self._run, name="fake-upstream", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fake upstream did not start")
        return self

    def stop(self) -> None:
        """Stop serving and join the thread."""
        if self._loop is not None and self._stopped is not None:
            self._loop.call_soon_threadsafe(self._stopped.set)
        if self._thread is not None:
            self._thread.join(10)
        self._thread = None

    def __enter__(self) -> FakeUpstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        self._server = await asyncio.start_server(self._connection, self.host, self.port, limit=2**24,
                                                  ssl=self.ssl_context)
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        await self._stopped.wait()
        self._server.close()
        # Connections parked in keep-alive would keep wait_closed() waiting: abort them.
        for task in asyncio.all_tasks() - {asyncio.current_task()}:
            task.cancel()

    # -- control -----------------------------------------------------------------------------
    def inject(
        self, kind: FaultKind, *, model: str | None = None, times: int | None = 1,
        retry_after: float | None = None, seconds: float = 30.0, after_events: int = 2,
    ) -> None:
        """Fail the next `times` requests for `model` (any model when None); `times=None`: until cleared."""
        fault = Fault(kind, retry_after=retry_after, seconds=seconds, after_events=after_events)
        with self._lock:
            if times is None:
                self._state.sticky[model] = fault
            else:
                self._state.faults.setdefault(model, deque()).extend([fault] * times)

    def clear(self) -> None:
        """Drop every pending fault and custom reply, and forget recorded requests."""
        with self._lock:
            self._state = _State()

    def set_reply(self, model: str, text: str) -> None:
        """Answer requests for `model` with this text."""
        with self._lock:
            self._state.replies[model] = text

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, oldest first."""
        with self._lock:
            return list(self._state.requests)

    @property
    def disconnects(self) -> int:
        """Streams the client (the gateway) closed before they ended."""
        with self._lock:
            return self._state.disconnects

    def requests_for(self, model: str) -> list[RecordedRequest]:
        """Requests whose body named this model."""
        return [r for r in self.requests if r.model == model]

    def _take_fault(self, model: str | None) -> Fault | None:
        with self._lock:
            for key in (model, None):
                queue = self._state.faults.get(key)
                if queue:
                    return queue.popleft()
                if key in self._state.sticky:
                    return self._state.sticky[key]
        return None

    # -- HTTP --------------------------------------------------------------------------------
    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await self._one_request(reader, writer):
                pass
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _one_request(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        raw = await reader.readexactly(int(headers.get("content-length", "0")))
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        model = body.get("model") if isinstance(body, dict) else None
        fault = self._take_fault(model) if method == "POST" else None
        with self._lock:
            self._state.requests.append(
                RecordedRequest(method, path, headers, body, time.monotonic(), fault.kind if fault else None)
            )
        return await self._respond(method, path, headers, body, len(raw), fault, writer)

    async def _respond(
        self, method: str, path: str, headers: Mapping[str, str], body: Any, raw_len: int,
        fault: Fault | None, writer: asyncio.StreamWriter,
    ) -> bool:
        anthropic = path.rstrip("/").endswith("/messages")
        embeddings = path.rstrip("/").endswith("/embeddings")
        if method == "GET" and path.rstrip("/").endswith("/models"):
            return await self._send(writer, 200, json.dumps({"object": "list", "data": []}).encode())
        if method != "POST" or not (anthropic or embeddings or path.rstrip("/").endswith("/chat/completions")):
            return await self._send(writer, 404, b'{"error": {"message": "not found"}}')
        if not isinstance(body, dict):
            return await self._send(writer, 400, b'{"error": {"message": "body is not a JSON object"}}')
        key = headers.get("x-api-key", "") if anthropic else headers.get("authorization", "").removeprefix("Bearer ")
        if self.api_keys is not None and key not in self.api_keys:
            fault = Fault("auth_error")
        if fault is not None:
            handled = await self._fault(fault, anthropic, key, body, raw_len, writer)
            if handled is not None:
                return handled
        if embeddings:
            dimensions = body.get("dimensions")
            if dimensions is not None and (type(dimensions) is not int or not 1 <= dimensions <= 4096):
                # What OpenAI answers (a test double that crashed here looked like a dropped connection: a 502)
                return await self._send(writer, 400, b'{"error": {"message": "dimensions must be an integer in '
                                                      b'[1, 4096]", "type": "invalid_request_error", '
                                                      b'"param": "dimensions", "code": "invalid_value"}}')
            return await self._send(writer, 200, openai_embeddings(body))
        text = self._reply(body)
        truncated = fault is not None and fault.kind == "truncated"
        if body.get("stream"):
            events = (anthropic_stream if anthropic else openai_stream)(body, raw_len, text, truncated=truncated)
            return await self._stream(writer, events, drop_after=None, delay=self.chunk_delay)
        answer = (anthropic_message if anthropic else openai_completion)(body, raw_len, text, truncated=truncated)
        return await self._send(writer, 200, answer)

    def _reply(self, body: Mapping[str, Any]) -> str | None:
        """The text `set_reply` gave the body's model (None: the default reply)."""
        with self._lock:
            return self._state.replies.get(str(body.get("model")))

    async def _fault(
        self, fault: Fault, anthropic: bool, key: str, body: Mapping[str, Any], raw_len: int,
        writer: asyncio.StreamWriter,
    ) -> bool | None:
        if fault.kind == "reset":
            writer.transport.abort()
            return False
        if fault.kind == "bad_head":
            writer.write(b"HTTP/1.1 200 OK\r\nthis is not a header\r\ncontent-length: 2\r\n\r\n{}")
            await writer.drain()
            writer.transport.abort()
            return False
        if fault.kind in ("timeout", "latency"):
            await asyncio.sleep(fault.seconds)
            return None
        if fault.kind == "drop_mid_stream":
            if not body.get("stream"):
                writer.transport.abort()
                return False
            events = (anthropic_stream if anthropic else openai_stream)(body, raw_len, None)
            return await self._stream(writer, events, drop_after=fault.after_events, delay=self.chunk_delay)
        if fault.kind == "truncated":
            return None
        if fault.kind == "malformed_event" and body.get("stream"):
            planned = list((anthropic_stream if anthropic else openai_stream)(body, raw_len, self._reply(body)))
            at = min(fault.after_events, len(planned) - 1)
            sent = [*planned[:at], planned[at] + _MALFORMED_EVENT[anthropic]]  # the last two in one chunk
            return await self._stream(writer, iter(sent), drop_after=None, delay=self.chunk_delay)
        if fault.kind == "end_mid_stream" and body.get("stream"):
            planned = list((anthropic_stream if anthropic else openai_stream)(body, raw_len, self._reply(body)))
            return await self._stream(writer, iter(planned[:fault.after_events]), drop_after=None, delay=self.chunk_delay)
        if fault.kind == "slow_stream":
            events = (anthropic_stream if anthropic else openai_stream)(body, raw_len, None)
            return await self._stream(writer, events, drop_after=None, delay=fault.seconds)
        status, payload = (anthropic_error if anthropic else openai_error)(fault.kind, key)
        extra = {"retry-after": f"{fault.retry_after:g}"} if fault.retry_after is not None else {}
        return await self._send(writer, status, payload, extra)

    async def _send(
        self, writer: asyncio.StreamWriter, status: int, payload: bytes, extra: Mapping[str, str] | None = None
    ) -> bool:
        head = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}", "content-type: application/json",
                f"content-length: {len(payload)}"]
        head += [f"{k}: {v}" for k, v in (extra or {}).items()]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + payload)
        await writer.drain()
        return True

    async def _stream(
        self, writer: asyncio.StreamWriter, events: Iterator[bytes], drop_after: int | None, delay: float
    ) -> bool:
        try:
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
            for i, event in enumerate(events):
                if drop_after is not None and i >= drop_after:
                    await writer.drain()
                    writer.transport.abort()
                    return False
                if delay and i:
                    await asyncio.sleep(delay)
                if writer.transport.is_closing():
                    raise ConnectionResetError("client went away")
                writer.write(b"%x\r\n%s\r\n" % (len(event), event))
                await writer.drain()
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        except ConnectionError:
            with self._lock:
                self._state.disconnects += 1
            return False
        return True
