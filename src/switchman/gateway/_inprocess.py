"""The dispatcher in process, for `Router.chat` and `await Router.achat` (and their streams).

It runs on one private event-loop thread (an anyio blocking portal), so a sync caller, an async
caller and many threads all share one connection pool, one health board and one ledger writer,
and requests behave exactly as they do through `switchman serve`. A configuration with a local
model switchman runs itself (a `local` provider on loopback) gets that server started here, as
`serve` starts it.

Nothing here keeps a process alive. The loop thread is a daemon, and a client its caller never
closed is closed (on the reaper thread, `_reaper`) when its Router is garbage-collected or, at the latest, as
the interpreter exits — before Python waits for non-daemon threads — so a script that ends (or dies
of an uncaught exception) without `close()` still exits promptly, with its ledger rows written.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
from anyio.from_thread import BlockingPortal

from .._config import Config
from .._exceptions import RouterClosedError
from .._environ import Environment
from ..ledger import BudgetManager, Ledger, resolve_spill_dir
from ..local import LocalModelServer, managed_server, with_local_url
from ._context import RequestContext, context_from
from ._dispatcher import Completion, Dispatcher
from ._boundary import awaited, called
from ._feed import StreamFeed
from ._middleware import new_request_id
from ._reaper import close_when_collected, take_back
from ._schema import check_body

if TYPE_CHECKING:
    from .._decider import Decider
    from ..routing import Decision, RouteRequest

__all__ = ["InProcessClient"]

_T = TypeVar("_T")

#: Seconds the connection pools get to close when `close(timeout)` stops the loop under a stuck close.
POOLS_CLOSE_S = 5.0
#: The least time the rest of a `close(timeout)` (streams cut, pools closed; then the ledger's flush) gets once its
#: calls have ended, so `close(0)` on an idle router closes it, rows written, instead of raising TimeoutError.
REST_MIN_S = 1.0
#: Seconds a `close(timeout)` waits for the loop thread to end: the loop's teardown waits for its
#: default executor, where a hung `getaddrinfo` can sit for long; the thread is a daemon and ends on its own.
LOOP_STOP_S = 1.0
#: Why `close` refuses to run on the client's own loop thread: it waits for work on that loop, which cannot run
#: while its thread waits (anyio's portal refuses a blocking call from its loop's thread the same way).
_ON_LOOP = ("Router.close() was called on the router's own event-loop thread (from code the router runs there), "
            "where waiting for its calls would wait for ever: close it from another thread")
#: What a caller whose call `close(timeout)` cancelled gets (a RouterClosedError, never a bare cancellation).
_CANCELLED = "the router was closed while this call ran: close() stopped waiting for it after its timeout"


class _Runtime:
    """What a client owns: the loop thread, the dispatcher on it, its ledger, and the local model server."""

    def __init__(self, decider: Decider, env: Environment) -> None:
        config = decider.config
        self.local: LocalModelServer | None = managed_server(config)
        if self.local is not None:
            self.local.start()  # raises LocalModelError saying how to install what is missing
            config = with_local_url(config, self.local.base_url)
        self.portal, self.loop_thread = _start_loop()
        try:
            self.dispatcher: Dispatcher = self.portal.call(self._build, decider, config, env)
        except BaseException:
            self._stop_loop(cancel=True, wait=None)
            if self.local is not None:
                self.local.stop()
            raise
        self._feeds: dict[StreamFeed, asyncio.Task[None]] = {}
        self._calls: set[asyncio.Task[Any]] = set()  # non-stream requests under way (from any thread)
        self._lock = threading.Lock()
        self._closed = False
        self._cancelling = False  # close() gave up waiting: what is cancelled now was cancelled by it

    @staticmethod
    async def _build(decider: Decider, config: Config, env: Environment) -> Dispatcher:
        ledger = Ledger.from_url(config.server.ledger_url, close_timeout=config.server.ledger_close_timeout_s,
                                 spill_dir=resolve_spill_dir(config.server.ledger_spill_dir, environ=env))
        await ledger.start()
        return Dispatcher.from_decider(decider, env, config=config, ledger=ledger,
                                       budgets=BudgetManager(config.budgets, ledger))

    async def open_stream(self, body: dict[str, Any], context: RequestContext) -> StreamFeed:
        """Open the upstream stream (fallbacks happen here) and start relaying it; counted as under way while it
        opens, so `close` waits for it and then stops it, recorded, instead of stopping the loop under it."""
        with self._under_way():
            feed = StreamFeed(await self.dispatcher.open_stream(body, context), self.portal,
                              scrub=self.dispatcher.scrub)
            task = asyncio.get_running_loop().create_task(feed.run())
            self._feeds[feed] = task
            task.add_done_callback(lambda _: self._feeds.pop(feed, None))
        return feed

    async def complete(self, body: dict[str, Any], context: RequestContext) -> Completion:
        """`Dispatcher.complete`, counted as under way until it ends, so `close` lets it finish and record."""
        with self._under_way():
            return await self.dispatcher.complete(body, context)

    @contextmanager
    def _under_way(self) -> Iterator[None]:
        """This task as a call `close` waits for; refused once `close` has begun (nothing would record it)."""
        if self._closed:
            raise RouterClosedError("the router was closed during this call (a new call starts it again)")
        task = asyncio.current_task()
        assert task is not None
        self._calls.add(task)
        try:
            yield
        except anyio.get_cancelled_exc_class():
            if not self._cancelling:
                raise
            raise RouterClosedError(_CANCELLED) from None
        finally:
            self._calls.discard(task)

    async def _aclose(self, timeout: float | None) -> None:
        """Wait (at most `timeout` seconds, then `_give_up`) for the calls under way, end the streams still open, then
        close the pools; all in one task, so a stream just opened is cut at once, not left to run on."""
        try:
            with anyio.move_on_after(timeout):
                while self._calls:  # answers on their way (another thread's chat): let them land, each with its row
                    await asyncio.wait(list(self._calls))
            if self._calls:
                self._give_up()
            while self._calls:  # calls `_give_up` cancelled: let them end, each with its row
                await asyncio.wait(list(self._calls))
            for feed in list(self._feeds):  # streams still open: end them, recording each
                await feed.cut()
        except anyio.get_cancelled_exc_class():  # `close` stopped the loop under it: rows first, then the pools
            with anyio.move_on_after(POOLS_CLOSE_S, shield=True):
                relays = list(self._feeds.values())
                for task in relays:  # a relay writes its stream's row as it ends
                    task.cancel()
                if relays:
                    await asyncio.wait(relays)
                await self.dispatcher.aclose()
            raise
        await self.dispatcher.aclose()

    def _give_up(self) -> None:
        """`close` waited long enough: cancel the calls still running (each caller gets RouterClosedError), so the
        rest of `_aclose` runs; a stream's reader the loop's stop cancels gets RouterClosedError too."""
        self._cancelling = True
        for feed in self._feeds:
            feed.mark_cut()
        for task in self._calls:
            task.cancel()

    def check_thread(self) -> None:
        """Refuse to wait for the loop on the loop's own thread (RuntimeError): it would wait for ever. The Thread
        object, not its ident, is compared: Linux gives a dead thread's ident to new threads."""
        if not self._closed and threading.current_thread() is self.loop_thread:
            raise RuntimeError(_ON_LOOP)

    def _stop_loop(self, *, cancel: bool, wait: float | None) -> None:
        """Stop the loop (cancelling what still runs on it if `cancel`) and wait up to `wait` seconds for its thread."""
        try:
            self.portal.call(self.portal.stop, cancel)
        except RuntimeError:  # already stopped
            pass
        self.loop_thread.join(wait)

    def close(self, timeout: float | None = None) -> None:
        """Let requests in flight finish, stop open streams, close connections, write the ledger, stop the loop and
        the local model (once).

        `timeout` (None: no limit) bounds the wait for calls under way; those still running then are cancelled
        (their callers get RouterClosedError, a call already recorded as a success still gets its answer) and
        TimeoutError is raised. An idle router closes whatever the timeout, `close(0)` included. Worst case with
        a timeout T: T for the calls, max(T, REST_MIN_S) for the rest (streams cut, pools closed) before the loop
        is stopped under it, LOOP_STOP_S for the loop thread (a daemon left to end on its own: its teardown can
        wait on a hung DNS look-up), then the ledger's flush, max(T, REST_MIN_S) plus 1 s, and the local model
        server's stop.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
        timed_out = False
        try:
            closing = self.portal.start_task_soon(self._aclose, timeout)
            try:  # calls landed or cancelled, streams cut with their rows written, connections closed
                closing.result(None if timeout is None else timeout + max(timeout, REST_MIN_S))
            except TimeoutError:  # stuck past its calls: the loop is stopped under it, cancelling everything
                if not self._cancelling:
                    self.portal.call(self._give_up)  # (a stream's reader it cancels gets RouterClosedError)
            timed_out = self._cancelling
            if timed_out:
                raise TimeoutError(f"close() gave up after its timeout ({timeout} s): calls still running were "
                                   "cancelled")
        finally:
            # The loop first: a stream relay cancelled as it stops writes its row, then the ledger writes them all.
            self._stop_loop(cancel=timed_out, wait=None if timeout is None else LOOP_STOP_S)
            if self.dispatcher.ledger is not None:
                if timeout is None:  # the ledger's own: server.ledger_close_timeout_s
                    self.dispatcher.ledger.close_sync()
                else:
                    self.dispatcher.ledger.close_sync(max(timeout, REST_MIN_S))
            if self.local is not None:
                self.local.stop()


def _start_loop() -> tuple[BlockingPortal, threading.Thread]:
    """anyio's `start_blocking_portal`, keeping its Thread (to tell it apart, and to join it with a bound)."""
    started: Future[BlockingPortal] = Future()

    async def run_portal() -> None:
        async with BlockingPortal() as portal:
            started.set_result(portal)
            await portal.sleep_until_stopped()

    def run() -> None:
        try:
            anyio.run(run_portal)
        except BaseException as exc:  # noqa: BLE001 - handed to the starting thread
            if not started.done():
                started.set_exception(exc)

    thread = threading.Thread(target=run, name="switchman-sdk-loop", daemon=True)
    thread.start()
    return started.result(), thread


class InProcessClient:
    """Sends chat requests through a Dispatcher on a background event loop."""

    def __init__(self, decider: Decider, env: Mapping[str, str] | None = None, *, owner: object = None) -> None:
        """`owner` (default: this client): closed once it is garbage-collected; `decider` must not hold it."""
        self._pid = os.getpid()
        self._runtime = _Runtime(decider, Environment.read() if env is None else Environment(env))
        self._portal = self._runtime.portal
        self.dispatcher: Dispatcher = self._runtime.dispatcher
        self._finalizer = close_when_collected(self if owner is None else owner, self._runtime)

    @property
    def ours(self) -> bool:
        """Whether this process made it: a forked child's copy of its parent's client has none of its threads
        (a call on it would wait for ever) and is its parent's to close."""
        return self._pid == os.getpid()

    @property
    def local_server(self) -> LocalModelServer | None:
        """The local model server this client started, if its configuration has one."""
        return self._runtime.local

    @staticmethod
    def _request(
        messages: Sequence[Mapping[str, Any]] | str, *, model: str = "auto", agent: str | None = None,
        session: str | None = None, tags: Sequence[str] = (), task: str | None = None, cache: bool | None = None,
        escalate: bool = False, stream: bool = False,
        **params: Any,
    ) -> tuple[dict[str, Any], RequestContext]:
        """The body and context, read as the gateway reads them: the keyword arguments are its `X-Switchman-*`
        headers, so they win over switchman's keys in `metadata`, which are read and not sent upstream."""
        if not isinstance(escalate, bool):
            raise TypeError(f"escalate must be True or False, not {escalate!r}")
        if cache is not None and not isinstance(cache, bool):
            raise TypeError(f"cache must be True, False or None, not {cache!r}")
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        body = check_body({"model": model, "messages": list(messages), **params, "stream": stream})
        given = {"x-switchman-agent": agent, "x-switchman-session": session, "x-switchman-task": task,
                 "x-switchman-tags": list(tags) or None, "x-switchman-cache": cache,
                 "x-switchman-escalate": escalate or None}  # (a header "0" does not undo metadata's escalate either)
        headers = {name: value for name, value in given.items() if value is not None}
        return body, context_from(headers, body, request_id=new_request_id())

    def steer(self, request: RouteRequest, decision: Decision) -> Decision:
        """The decision as the request's session state moves it (`Router.route`), read on the calling thread: the
        client's sessions are in memory (`MemorySessionStore`, thread-safe; the SDK shares none on Redis), so no hop
        onto its loop, which may be stopping (and once closed, what its chats left is still what it knew)."""
        return self.dispatcher.sessions.steer(request, decision, RequestContext(session=request.session))

    def chat(self, messages: Sequence[Mapping[str, Any]] | str, **options: Any) -> Completion:
        """The answer to these messages (blocks until it arrives)."""
        return self._called(self._runtime.complete, *self._request(messages, **options))

    def stream(self, messages: Sequence[Mapping[str, Any]] | str, **options: Any) -> StreamFeed:
        """The answer's stream, opened (blocks until the first chunk has arrived)."""
        return self._called(self._runtime.open_stream, *self._request(messages, stream=True, **options))

    async def achat(self, messages: Sequence[Mapping[str, Any]] | str, **options: Any) -> Completion:
        """`chat` awaited from the caller's event loop."""
        return await self._awaited(self._runtime.complete, *self._request(messages, **options))

    async def astream(self, messages: Sequence[Mapping[str, Any]] | str, **options: Any) -> StreamFeed:
        """`stream` awaited from the caller's event loop."""
        return await self._awaited(self._runtime.open_stream, *self._request(messages, stream=True, **options))

    def _called(self, work: Callable[[dict[str, Any], RequestContext], Awaitable[_T]], body: dict[str, Any],
                context: RequestContext) -> _T:
        """`work` run on the client's loop and waited for here; whatever it raises scrubbed (`_boundary`)."""
        return called(self._portal, self.dispatcher.scrub, work, body, context)

    async def _awaited(self, work: Callable[[dict[str, Any], RequestContext], Awaitable[_T]], body: dict[str, Any],
                       context: RequestContext) -> _T:
        """`_called`, awaited from the caller's own event loop."""
        return await awaited(self._portal, self.dispatcher.scrub, work, body, context)

    def check_thread(self) -> None:
        """RuntimeError on the client's own loop thread, where `close` would wait for ever."""
        self._runtime.check_thread()

    def close(self, timeout: float | None = None) -> None:
        """End open streams, close connections, flush the ledger and stop the loop thread (idempotent, from any
        thread but the loop's; from the router's worker threads it is not supported); `timeout` as `_Runtime.close`."""
        self._runtime.check_thread()
        if take_back(self._finalizer):  # (else the reaper has it: its close is the one)
            self._runtime.close(timeout)
