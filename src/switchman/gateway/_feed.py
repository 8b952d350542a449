"""StreamFeed: a stream `Router.chat(..., stream=True)` reads from any thread while the client's loop relays it.

The relay runs on the in-process client's event-loop thread and hands pieces over through a small
bounded channel, so a slow reader holds the upstream back instead of buffering the whole answer.
Leaving early (`close`, or a feed dropped unread) cancels the upstream call and records the request
as the client's disconnect, as the gateway does when an HTTP client goes away.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol

import anyio
import orjson
from anyio.from_thread import BlockingPortal
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .._exceptions import RouterClosedError, UpstreamError
from ..routing import Decision
from ._boundary import awaited, called
from ._errors import scrubbed
from ._stream import RelayedStream
from ._wire import Usage

__all__ = ["StreamFeed"]

_BUFFERED_PIECES = 32


def _chunks(piece: bytes) -> list[dict[str, Any]]:
    """The chat.completion.chunk objects in a piece of relayed SSE (no [DONE], no error event)."""
    found: list[dict[str, Any]] = []
    for event in piece.split(b"\n\n"):
        data = event.strip().removeprefix(b"data:").strip()
        if not data or data == b"[DONE]":
            continue
        chunk = orjson.loads(data)
        if isinstance(chunk, dict) and "error" not in chunk:  # an upstream failure is raised, not yielded
            found.append(chunk)
    return found


class FeedSource(RelayedStream, Protocol):
    """What a feed relays: a live ChatStream or a stream replayed from the response cache."""

    @property
    def request_id(self) -> str: ...
    @property
    def model(self) -> str: ...
    @property
    def decision(self) -> Decision | None: ...
    @property
    def error(self) -> UpstreamError | None: ...
    @property
    def usage(self) -> Usage | None: ...
    @property
    def cost_usd(self) -> float | None: ...


class StreamFeed:
    """One opened chat stream: relayed on the client's loop (`run`), read from any thread.

    Made on the loop thread once the upstream has sent its first event (fallbacks are over by then).
    """

    def __init__(self, stream: FeedSource, portal: BlockingPortal, *, scrub: Callable[[str], str]) -> None:
        self._stream = stream
        self._portal = portal
        self._scrub = scrub  # for what a read raises and `error`: an upstream may echo the key
        self._send: MemoryObjectSendStream[bytes]
        self._receive: MemoryObjectReceiveStream[bytes]
        self._send, self._receive = anyio.create_memory_object_stream[bytes](_BUFFERED_PIECES)
        self._scope = anyio.CancelScope()
        self._cut = False  # ended by the Router's close, not by its upstream or its reader
        self._recorded = anyio.Event()

    # -- what the reader sees ---------------------------------------------------------------------
    @property
    def request_id(self) -> str:
        """switchman's id of the request."""
        return self._stream.request_id

    @property
    def model(self) -> str:
        """The configured model answering."""
        return self._stream.model

    @property
    def decision(self) -> Decision | None:
        """Why that model."""
        return self._stream.decision

    @property
    def error(self) -> UpstreamError | None:
        """The upstream failure that ended the stream early, if one did (its message scrubbed of secrets)."""
        error = self._stream.error
        return error if error is None else scrubbed(error, self._scrub)

    @property
    def usage(self) -> Usage | None:
        """Token counts, once the stream is recorded."""
        return self._stream.usage

    @property
    def cost_usd(self) -> float | None:
        """USD, once the stream is recorded."""
        return self._stream.cost_usd

    def next_chunks(self) -> list[dict[str, Any]] | None:
        """The next chunks (blocking; maybe none yet), or None once the stream has ended and been recorded."""
        return called(self._portal, self._scrub, self._next)

    async def anext_chunks(self) -> list[dict[str, Any]] | None:
        """`next_chunks` awaited from another event loop."""
        return await awaited(self._portal, self._scrub, self._next)

    def close(self) -> None:
        """Stop relaying and wait until the request is recorded (nothing to do once the client has closed)."""
        try:
            self._portal.call(self.stop)
        except RuntimeError:  # the client's loop has stopped: it ended and recorded the stream
            self._receive.close()  # (what it relayed and no one read; nothing runs on that loop any more)

    async def aclose(self) -> None:
        """`close` awaited from another event loop."""
        try:
            future = self._portal.start_task_soon(self.stop)
        except RuntimeError:  # the client's loop has stopped: it ended and recorded the stream
            self._receive.close()
            return
        await asyncio.wrap_future(future)

    def abandon(self) -> None:
        """Stop relaying without waiting (a feed dropped unread; may run at garbage collection)."""
        try:
            self._portal.start_task_soon(self.stop)
        except RuntimeError:  # the client's loop has stopped: the stream ended with it
            self._receive.close()

    # -- on the loop ------------------------------------------------------------------------------
    async def run(self) -> None:
        """Relay until the upstream ends or `stop`; the request's ledger row is written either way."""
        finished = False
        try:
            with self._scope:
                await self._stream.relay(self._send.send)
                finished = True
        finally:
            try:
                with anyio.CancelScope(shield=True):
                    await self._stream.aclose(disconnected=not finished)
            finally:  # (a close that fails must not leave the reader waiting for good)
                self._send.close()
                self._recorded.set()

    async def cut(self) -> None:
        """`stop` for the Router's close: the reader's next read raises RouterClosedError, not a quiet end."""
        self.mark_cut()
        await self.stop()

    def mark_cut(self) -> None:
        """The Router's close is cancelling everything: a read it cancels raises RouterClosedError."""
        self._cut = True

    async def stop(self) -> None:
        """End the relay (the reader left) and wait until the request is recorded."""
        self._scope.cancel()
        self._receive.close()
        await self._recorded.wait()

    async def _next(self) -> list[dict[str, Any]] | None:
        try:
            return await self._read()
        except anyio.get_cancelled_exc_class():
            if not self._cut:
                raise
            raise RouterClosedError("the router was closed while this stream was read: close() stopped waiting "
                                    "for it after its timeout") from None

    async def _read(self) -> list[dict[str, Any]] | None:
        try:
            return _chunks(await self._receive.receive())
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            self._receive.close()
            await self._recorded.wait()
            if self._cut:
                raise RouterClosedError("the router was closed while this stream was read (its row is written)") from None
            return None
