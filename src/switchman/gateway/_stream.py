"""Streaming: open an upstream stream up to its first event, then relay it to the client as it comes.

Fallback is possible only until the first byte reaches the client, so `open_upstream_stream`
waits for the first translated event (a failure before it is just another failed attempt). After
that, an upstream failure ends the client's stream with an error event and `[DONE]`; a client
that goes away cancels the upstream request. Either way the request gets its one ledger record.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import orjson
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from .._exceptions import BudgetExceededError, UpstreamError, UpstreamServerError
from ._deadline import Deadline
from ._errors import error_payload
from ..state import HealthStore
from ._exchange import CUT_BY_SERVER, Exchange, ExchangeFacts
from ._http import UpstreamResponse
from ._providers import Deployment, StreamTranslator
from ._sessions import TRUNCATED
from ._transport import TRANSPORT_ERRORS, transport_error
from ._wire import Usage, sse_batches

if TYPE_CHECKING:
    from ._dispatcher import Dispatcher

__all__ = ["ChatStream", "ClientTranslator", "OpenedStream", "RelayResponse", "RelayedStream", "open_upstream_stream"]

_DONE = b"data: [DONE]\n\n"
#: Events relayed between two yields to the event loop: an upstream faster than its client never
#: suspends the relay (reads and writes are buffered), so without these a client that went away, or
#: every other request, would wait for the whole answer.
_YIELD_EVERY = 16


@dataclass(slots=True)
class OpenedStream:
    """An upstream stream that has produced its first client-bound bytes."""

    deployment: Deployment
    response: UpstreamResponse
    events: AsyncGenerator[list[bytes], None]  # the events of each piece read (`sse_batches`)
    translator: StreamTranslator
    first: list[bytes]
    sent_at: float
    first_at: float
    rest: list[bytes] = field(default_factory=list)  # events read with the first one, not yet translated

    async def aclose(self) -> None:
        """Stop reading and release the connection (safe to call while being cancelled)."""
        if getattr(self.events, "ag_frame", True) is None and getattr(self.response, "closes_at_once", False):
            # The events ended (closing them does nothing) and the response closes without suspending: no
            # await here can be interrupted, so no shield is needed (anyio's cancel scope costs ~10 µs a stream).
            await self.events.aclose()
            await self.response.aclose()
            return
        with anyio.CancelScope(shield=True):
            await self.events.aclose()
            await self.response.aclose()


async def open_upstream_stream(
    deployment: Deployment, body: Mapping[str, Any], *, clock: Callable[[], float], health: HealthStore
) -> OpenedStream:
    """Send the request and read up to the first event the client will see (within first_byte)."""
    adapter, name = deployment.adapter, deployment.name
    request = deployment.build_request(body, stream=True)
    translator = adapter.stream(name, body)
    sent_at = clock()
    response: UpstreamResponse | None = None
    events: AsyncGenerator[list[bytes], None] | None = None
    try:
        with adapter.map_errors(name):
            with Deadline(deployment.first_byte_s):  # asyncio.timeout's behaviour, cheaper (see _deadline)
                response = await deployment.provider.pool.send(request, connect_timeout=deployment.connect_s,
                                                               read_timeout=deployment.first_byte_s)
                if response.status_code >= 400:
                    content = await response.aread()
                    raise adapter.error(response.status_code, content, response.headers, name)
                events = batches = sse_batches(response.aiter_bytes())
                first: list[bytes] = []
                rest: list[bytes] = []
                while not first:
                    try:
                        batch = await batches.__anext__()
                    except StopAsyncIteration:
                        raise UpstreamServerError(f"{name}: upstream stream ended before any event", model=name) from None
                    for at, event in enumerate(batch):
                        first = translator.feed(event)
                        if first:
                            rest = batch[at + 1:]
                            break
    except BaseException:
        with anyio.CancelScope(shield=True):
            if events is not None:
                await events.aclose()
            if response is not None:
                await response.aclose()
        raise
    first_at = clock()
    health.observe(deployment.id, (first_at - sent_at) * 1000.0)
    return OpenedStream(deployment, response, batches, translator, first, sent_at, first_at, rest)


class ChatStream(ExchangeFacts):
    """A stream committed to one model: relays it, then records it once."""

    def __init__(self, dispatcher: Dispatcher, exchange: Exchange, opened: OpenedStream) -> None:
        self._dispatcher = dispatcher
        self._exchange = exchange
        self._opened = opened
        self._error: UpstreamError | None = None
        self._stopped: BudgetExceededError | None = None
        self._ended = False
        self._closed = False
        self._ticket: int | asyncio.Task[int] = 0
        # What the client was sent, kept for the response cache when the request missed it.
        self._kept: list[bytes] | None = [] if exchange.cache == "miss" else None
        self._kept_bytes = 0
        # With `hold_last`, what holds the last piece (sent after the record is committed, kept all the same).
        self._holder: _HoldLast | None = None

    @property
    def model(self) -> str:
        """The model answering."""
        return self._opened.deployment.name

    @property
    def deployment(self) -> str:
        """The id of the deployment answering."""
        return self._opened.deployment.id

    @property
    def cache(self) -> str | None:
        """The response cache outcome: miss when it was consulted, else None."""
        return self._exchange.cache

    @property
    def input_tokens(self) -> int:
        """Input tokens as switchman counted them (the upstream's count comes with the usage at the end)."""
        request = self._exchange.request
        return request.input_tokens if request is not None else 0

    @property
    def error(self) -> UpstreamError | None:
        """The upstream failure that ended the stream after its first byte, if one did."""
        return self._error

    @property
    def usage(self) -> Usage | None:
        """Token counts, once the stream is closed (the upstream's, else switchman's estimate)."""
        return self._exchange.usage if self._closed else None

    @property
    def cost_usd(self) -> float | None:
        """What the answer cost, once the stream is closed."""
        return self._exchange.cost(self._dispatcher.decider.models) if self._closed else None

    @property
    def durable(self) -> bool:
        """Whether the record must be committed before the stream's end is sent (`server.durability: sync`)."""
        return self._dispatcher.durable and self._dispatcher.ledger is not None

    async def relay(self, send: Callable[[bytes], Awaitable[None]], *, hold_last: bool = False) -> bytes:
        """Forward every event to `send` as it arrives; an upstream failure becomes an error event.

        With `hold_last`, the last piece (the end of the stream: `[DONE]`) is returned instead of
        sent, for the caller to send once the request's record is committed.

        The model's total timeout bounds the waits for the upstream only: time spent waiting for the
        client to take what was sent is the client's (the server's write timeout bounds it), so a
        slow reader never counts against the upstream's health.
        """
        if self._kept is not None:
            send = self._keeping(send)
        if hold_last:
            send = self._holder = _HoldLast(send)
        opened, clock = self._opened, self._dispatcher.clock
        deployment = opened.deployment
        translator, events, name = opened.translator, opened.events, deployment.name
        # The model's total time runs out on one timer for the whole stream (not a timeout scope per
        # event): it closes the upstream connection, which ends a wait on it, or the next one.
        loop = asyncio.get_running_loop()
        expired: list[bool] = []

        def expire() -> None:
            expired.append(True)
            opened.response.abort()

        timer = loop.call_at(loop.time() + (opened.sent_at + deployment.total_s - clock()), expire)
        exchange, feed = self._exchange, translator.feed
        try:
            for chunk in opened.first:
                await send(chunk)
            exchange.first_token_at = clock()
            batch, relayed = opened.rest, 0
            while True:
                if not batch:
                    try:
                        if expired:
                            raise TimeoutError
                        batch = await events.__anext__()
                    except StopAsyncIteration:
                        break
                    except TRANSPORT_ERRORS as exc:  # as every adapter's map_errors translates them
                        raise transport_error(TimeoutError() if expired else exc, name) from exc
                if len(batch) == 1:
                    # The usual batch (one event per read): `_forward`'s work inline, one coroutine fewer per event.
                    try:
                        chunks = feed(batch[0])
                    except TRANSPORT_ERRORS as exc:  # an event that is not the JSON it should be
                        raise transport_error(exc, name) from exc
                    reservation = exchange.reservation
                    if reservation is not None and reservation.held and not self._within_reservation():
                        if not await self._grow_reservation():
                            raise self._budget_stop()
                    if len(chunks) == 1:
                        await send(chunks[0])
                    elif chunks:
                        await _send_pieces(chunks, send)
                    relayed += 1
                else:
                    relayed += len(batch)
                    await self._forward(batch, send)
                batch = []
                if relayed >= _YIELD_EVERY:
                    relayed = 0
                    await asyncio.sleep(0)
            for chunk in translator.close():
                await send(chunk)
        except (UpstreamError, BudgetExceededError) as exc:
            if isinstance(exc, UpstreamError):
                self._error = exc
            status, payload = error_payload(exc, self._dispatcher.scrub)
            await send(b"data: " + orjson.dumps(payload) + b"\n\n" + _DONE)
        finally:
            timer.cancel()
        self._ended = True
        return send.held if isinstance(send, _HoldLast) else b""

    async def _forward(self, batch: list[bytes], send: Callable[[bytes], Awaitable[None]]) -> None:
        """Translate events read together and send what they give as one piece (each held to the reservation).

        What the events before a failure gave is sent before the failure is raised, as when each
        event was sent on its own. The failure is noted first: read before the client left (which may
        end that send), it is the request's outcome.
        """
        translator, name = self._opened.translator, self._opened.deployment.name
        out: list[bytes] = []
        try:
            for event in batch:
                try:
                    chunks = translator.feed(event)
                except TRANSPORT_ERRORS as exc:  # an event that is not the JSON it should be
                    raise transport_error(exc, name) from exc
                if self._exchange.reservation is not None and not self._within_reservation():
                    out = await _send_pieces(out, send)
                    if not await self._grow_reservation():
                        raise self._budget_stop()
                out += chunks
        except (UpstreamError, BudgetExceededError) as exc:
            if isinstance(exc, UpstreamError):
                self._error = exc  # a budget stop is noted where it is raised (`_budget_stop`)
            await _send_pieces(out, send)
            raise
        if len(out) == 1:  # (the usual piece: sent here, one coroutine fewer per event)
            await send(out[0])
        elif out:
            await _send_pieces(out, send)

    def _within_reservation(self) -> bool:
        """Whether the answer's running cost still fits its reservation (checked per chunk, without awaiting).

        Output is counted per streamed chunk (providers send about one token per chunk), so an
        answer that runs past what was reserved (a model without `max_output_tokens`, or an upstream
        that ignores max_tokens) is stopped once no budget can take more (`_grow_reservation`).
        """
        exchange = self._exchange
        reservation = exchange.reservation
        if reservation is None or not reservation.held:
            return True
        return self._running_cost() <= reservation.estimated_usd

    def _running_cost(self) -> float:
        spec = self._opened.deployment.spec
        return self._exchange.spent_usd + spec.cost(self._exchange.input_bound, self._opened.translator.chunks)

    async def _grow_reservation(self) -> bool:
        """Grow the reservation to a quarter above the running cost, when its budgets allow."""
        reservation = self._exchange.reservation
        return reservation is None or await reservation.aresize(self._running_cost() * 1.25)

    def _budget_stop(self) -> BudgetExceededError:
        self._stopped = BudgetExceededError(
            f"the answer was stopped after {self._opened.translator.chunks} chunks: its running cost passed what its "
            "budget has left")
        return self._stopped

    async def committed(self) -> None:
        """Record the request now and wait until its row is committed (`server.durability: sync`)."""
        self._ticket = await self._close()
        await self._dispatcher.committed(self._ticket)

    def _keeping(self, send: Callable[[bytes], Awaitable[None]]) -> Callable[[bytes], Awaitable[None]]:
        """`send`, also keeping what is sent for the response cache (until it outgrows an entry)."""
        cache = self._dispatcher.cache

        async def keep(chunk: bytes) -> None:
            if self._kept is not None and cache is not None:
                self._kept.append(chunk)
                self._kept_bytes += len(chunk)
                if not cache.keeps(self._kept_bytes):
                    self._kept = None
            await send(chunk)

        return keep

    async def aclose(self, *, disconnected: bool = False, cut: bool = False) -> None:
        """Release the upstream and write the ledger record (idempotent); keep a complete answer in the cache.

        `disconnected`: the client left; `cut`: the server cancelled the relay (a shutdown whose grace ran out).
        """
        await self._close(disconnected=disconnected, cut=cut)

    async def _close(self, *, disconnected: bool = False, cut: bool = False) -> int | asyncio.Task[int]:
        if self._closed:
            return self._ticket
        self._closed = True
        opened, exchange, dispatcher = self._opened, self._exchange, self._dispatcher
        await opened.aclose()
        translator, deployment = opened.translator, opened.deployment
        if translator.usage is not None:
            exchange.usage = translator.usage
        else:
            exchange.usage = Usage(exchange.request.input_tokens if exchange.request else 0, translator.chunks)
            exchange.usage_estimated = True
        ended_at = dispatcher.clock()
        if self._error is not None:
            dispatcher.health.record(deployment.id, ok=False, cooldown_s=deployment.cooldown_s)
            exchange.fail(self._error, dispatcher.scrub)
            exchange.status = "stream_error"
        elif self._stopped is not None:  # the budget's doing, not the upstream's
            exchange.fail(self._stopped, dispatcher.scrub)
            exchange.status = "stream_error"
        elif cut and not disconnected and not self._ended:
            exchange.status, exchange.error = "error", CUT_BY_SERVER
        elif disconnected or not self._ended:
            exchange.status = "client_disconnected"
        else:
            dispatcher.health.observe(deployment.id, (opened.first_at - opened.sent_at) * 1000.0,
                                      exchange.usage.output_tokens, ended_at - opened.first_at)
        answer = None
        if exchange.status not in ("stream_error", "client_disconnected"):
            if translator.truncated:
                answer = TRUNCATED
            elif not translator.has_output:
                answer = "empty answer"
        self._ticket = dispatcher.finish(exchange, answer=answer)
        if exchange.request is not None and exchange.request.session is not None:  # (else nothing to wait for)
            await dispatcher.settled(exchange)
        # Kept only when the upstream ended the answer itself ([DONE] / message_stop): a stream it merely
        # stopped sending (a proxy's idle cut) is closed for the client, but is no answer to replay.
        if self._kept is not None and dispatcher.cache is not None and translator.finished:
            held = self._holder.held if self._holder is not None else b""
            await dispatcher.cache.store(exchange, b"".join(self._kept) + held, answer)
        return self._ticket


async def _send_pieces(pieces: list[bytes], send: Callable[[bytes], Awaitable[None]]) -> list[bytes]:
    """Send `pieces` as one (a `_HoldLast` still gets the last apart, to hold it); returns a fresh empty list."""
    if len(pieces) == 1:
        await send(pieces[0])
    elif pieces:
        if isinstance(send, _HoldLast):
            await send(b"".join(pieces[:-1]))
            await send(pieces[-1])
        else:
            await send(b"".join(pieces))
    return []


class _HoldLast:
    """A sender that keeps back the latest piece (sending the one before it) until asked for it."""

    def __init__(self, send: Callable[[bytes], Awaitable[None]]) -> None:
        self._send = send
        self.held = b""

    async def __call__(self, chunk: bytes) -> None:
        if self.held:
            await self._send(self.held)
        self.held = chunk


class RelayedStream(Protocol):
    """What a RelayResponse relays: a ChatStream, or an answer replayed from the response cache."""

    async def relay(self, send: Callable[[bytes], Awaitable[None]]) -> bytes | None:
        """Send every event."""
        ...

    async def aclose(self, *, disconnected: bool = False, cut: bool = False) -> None:
        """Release what it holds and write its ledger record."""
        ...


class ClientTranslator(Protocol):
    """Turns the relayed chat.completion.chunk SSE bytes into another API's stream (an inbound dialect)."""

    def feed(self, chunk: bytes) -> list[bytes]:
        """Client-bound bytes for one relayed piece (one or more OpenAI SSE events)."""
        ...


class RelayResponse(Response):
    """An SSE response that relays a stream (live or cached) and notices the client leaving.

    With a `translator`, what is relayed is translated for a client that spoke another API.
    """

    media_type = "text/event-stream"

    def __init__(
        self, stream: RelayedStream, headers: Mapping[str, str], translator: ClientTranslator | None = None
    ) -> None:
        self.stream = stream
        self.translator = translator
        self.status_code = 200
        self.background = None
        self.init_headers({"cache-control": "no-cache", "x-accel-buffering": "no", **headers})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        done = disconnected = cut = False
        translator = self.translator

        async def translated(chunk: bytes) -> None:
            assert translator is not None
            for out in translator.feed(chunk):
                await send({"type": "http.response.body", "body": out, "more_body": True})

        async def direct(chunk: bytes) -> None:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})

        body = direct if translator is None else translated

        relaying = asyncio.current_task()
        assert relaying is not None

        async def watch() -> None:
            nonlocal disconnected
            while (await receive())["type"] != "http.disconnect":
                pass
            if not done:
                disconnected = True
                relaying.cancel()

        # A plain task and a cancellation rather than an anyio task group: its cancel scopes cost ~50 µs a stream.
        watcher = asyncio.get_running_loop().create_task(watch())
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            stream = self.stream
            if isinstance(stream, ChatStream):
                # Recorded (and kept by the response cache) before the answer's last byte, so a request the
                # client sends next finds both; with sync durability the row is committed before the last event.
                durable = stream.durable
                last = await stream.relay(body, hold_last=durable)
                done = True
                await (stream.committed() if durable else stream.aclose())
                if last:
                    await body(last)
            else:
                await stream.relay(body)
                done = True
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            # The watcher's cancellation (the client left) ends the relay; any other (the server's) goes on.
            if not disconnected or relaying.uncancel() > 0:
                cut = not disconnected  # the server's own cancellation (a shutdown's grace ran out)
                raise
        except OSError:
            disconnected = True
        finally:
            watcher.cancel()  # before any await below: a client leaving now no longer cancels this task
            await self.stream.aclose(disconnected=disconnected and not done, cut=cut and not done)
