"""Router: the SDK in one object — decisions in process, and chat through the same dispatcher as the gateway.

    with Router.from_config("switchman.yaml") as router:
        decision = router.route("Classify: ...", agent="triage")     # no network call
        reply = router.chat("hi", model="auto")                       # same fallbacks, budgets and ledger
        router.feedback(reply.request_id, 0.8)
        for chunk in router.chat("hi", stream=True): ...              # chat.completion.chunk dicts

A Router is a `Decider` (the decision core) that can also send requests: the gateway depends on the
Decider only, and the Router starts the gateway's in-process client on its first `chat`. It never
keeps a process alive: one not closed is closed once it is garbage-collected (a stream keeps it) or
as the interpreter exits, its ledger rows written.
"""

from __future__ import annotations

import asyncio
import os
import threading
import weakref
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self, overload

from ._config import Config
from ._context_values import clean_value
from ._decider import Decider

if TYPE_CHECKING:
    from .gateway import Completion, InProcessClient, StreamFeed
    from .routing import Decision, RouteRequest

__all__ = ["AsyncReplyStream", "Reply", "ReplyStream", "Router"]

Messages = Sequence[Mapping[str, Any]] | str


class Reply(dict[str, Any]):
    """An OpenAI chat.completion (the dict the gateway would send) that also says what switchman did.

    `model` is the configured model that answered (the body's "model" is what the upstream reported),
    `request_id` its ledger row's id (`router.feedback(reply.request_id, 0.9)`), `cost_usd` what it
    cost, `decision` why that model.
    """

    def __init__(self, body: Mapping[str, Any], *, request_id: str, model: str, cost_usd: float,
                 decision: Decision) -> None:
        super().__init__(body)
        self.request_id = request_id
        self.model = model
        self.cost_usd = cost_usd
        self.decision = decision

    @classmethod
    def of(cls, completion: Completion) -> Reply:
        """The reply for a dispatcher's completion."""
        return cls(completion.json(), request_id=completion.request_id, model=completion.model,
                   cost_usd=completion.cost_usd, decision=completion.decision)


class _Stream:
    """What the sync and async streams share: the model and request id at once, usage and cost at the end."""

    def __init__(self, feed: StreamFeed, router: Router) -> None:
        self._feed = feed
        self._router = router  # a stream read after its router was dropped keeps it (else it would be closed)
        self._pending: deque[dict[str, Any]] = deque()
        self._done = False
        self._finalizer = weakref.finalize(self, feed.abandon)  # dropped unread: stop the upstream call

    @property
    def request_id(self) -> str:
        """switchman's id of the request (`router.feedback(stream.request_id, ...)`)."""
        return self._feed.request_id

    @property
    def model(self) -> str:
        """The configured model answering."""
        return self._feed.model

    @property
    def decision(self) -> Decision | None:
        """Why that model."""
        return self._feed.decision

    @property
    def cost_usd(self) -> float | None:
        """What the answer cost; None until the stream has ended."""
        return self._feed.cost_usd if self._done else None

    @property
    def usage(self) -> dict[str, int] | None:
        """prompt/completion token counts; None until the stream has ended."""
        usage = self._feed.usage if self._done else None
        if usage is None:
            return None
        return {"prompt_tokens": usage.input_tokens, "completion_tokens": usage.output_tokens,
                "total_tokens": usage.input_tokens + usage.output_tokens}

    def _take(self, chunks: list[dict[str, Any]] | None) -> None:
        if chunks is not None:
            self._pending.extend(chunks)
            return
        self._finish()
        error = self._feed.error  # (scrubbed at each read: read once)
        if error is not None:
            raise error

    def _finish(self) -> bool:
        """Mark the stream ended; True if it was still open."""
        was_open = not self._done
        self._done = True
        self._finalizer.detach()
        return was_open


class ReplyStream(_Stream):
    """`router.chat(..., stream=True)`: chat.completion.chunk dicts as they arrive.

    An upstream failure after the first chunk raises its UpstreamError from the loop. `close()` (or
    leaving a `with` block) before the end cancels the upstream call; the request is recorded either way.
    """

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self

    def __next__(self) -> dict[str, Any]:
        while not self._pending:
            if self._done:
                raise StopIteration
            self._take(self._feed.next_chunks())
        return self._pending.popleft()

    def close(self) -> None:
        """Stop reading; the rest of the answer is not fetched (safe to repeat)."""
        if self._finish():
            self._feed.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class AsyncReplyStream(_Stream):
    """`await router.achat(..., stream=True)`: an async iterator of chat.completion.chunk dicts."""

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> dict[str, Any]:
        while not self._pending:
            if self._done:
                raise StopAsyncIteration
            self._take(await self._feed.anext_chunks())
        return self._pending.popleft()

    async def aclose(self) -> None:
        """Stop reading; the rest of the answer is not fetched (safe to repeat)."""
        if self._finish():
            await self._feed.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()


class Router(Decider):
    """Routes requests according to a configuration, and sends them in process when asked.

    Close it (`close()`, `with`) when done. One dropped unclosed is closed when garbage-collected, but one
    reachable from its own attributes (`router.me = router`, or an attribute's object holding it) only at exit:
    its in-process client holds those attributes, and so the Router, alive until then.
    """

    def __init__(self, config: Config, *, base_dir: str | Path = ".", seed: int | None = None) -> None:
        super().__init__(config, base_dir=base_dir, seed=seed)
        self._inprocess: InProcessClient | None = None  # started by the first chat()/achat()
        # Threads racing to the first chat() must start one client (one loop, ledger writer and set of budgets).
        # Renewed in a forked child (`_renew_locks`): a parent's thread holding it at the fork never releases it there.
        self._inprocess_lock = threading.Lock()
        _ROUTERS.add(self)

    @overload
    def chat(self, messages: Messages, *, stream: Literal[False] = False, **options: Any) -> Reply: ...
    @overload
    def chat(self, messages: Messages, *, stream: Literal[True], **options: Any) -> ReplyStream: ...

    def chat(self, messages: Messages, *, stream: bool = False, **options: Any) -> Reply | ReplyStream:
        """Send a chat request in process: the OpenAI chat.completion, or with `stream=True` its chunks.

        Same decision, retries, fallbacks, budgets and ledger as `switchman serve`. Options: model,
        agent, session, tags, task, escalate (True: move the session to a stronger model now, as the
        X-Switchman-Escalate header), cache (True/False: use or skip the response cache, as the
        X-Switchman-Cache header), and any chat-completions field (tools, temperature, ...); switchman's
        keys in `metadata` are read and removed as the gateway does (the options win, as its headers do;
        escalate in either escalates). The reply is the chat.completion dict with `request_id` (for `feedback`), `model` (the configured
        model that answered) and `cost_usd`; a stream has the same, its cost once it has ended.
        """
        if stream:
            return ReplyStream(self._client().stream(messages, **options), self)
        return Reply.of(self._client().chat(messages, **options))

    @overload
    async def achat(self, messages: Messages, *, stream: Literal[False] = False, **options: Any) -> Reply: ...
    @overload
    async def achat(self, messages: Messages, *, stream: Literal[True], **options: Any) -> AsyncReplyStream: ...

    async def achat(self, messages: Messages, *, stream: bool = False, **options: Any) -> Reply | AsyncReplyStream:
        """`chat` for async code (`async for chunk in await router.achat(..., stream=True)`)."""
        if stream:
            return AsyncReplyStream(await self._client().astream(messages, **options), self)
        return Reply.of(await self._client().achat(messages, **options))

    def route(self, messages: Messages, *, session: str | None = None, **options: Any) -> Decision:
        """`Decider.route`, with `session` read as `chat` reads it (stripped; InvalidRequestError when over 256
        characters or holding control characters), so route(session=" s1 ") sees the session chat(session=" s1 ")
        moved; with a session, the model its state (this Router's chats, feedback) moves it to."""
        return super().route(messages, session=clean_value(session, "session"), **options)

    def _session_steered(self, request: RouteRequest, decision: Decision) -> Decision:
        """`route` with a session gets the session's model, as `POST /v1/route` does: the state this Router's chats
        left (none before the first chat, nor after `close`: a new client starts with no sessions)."""
        client = self._inprocess
        if request.session is None or client is None or not client.ours:
            return decision
        return client.steer(request, decision)

    def feedback(self, request_id: str, score: float, comment: str | None = None) -> None:
        """Score an earlier request in [0, 1] (1 = good), as `POST /v1/feedback` does.

        The score is stored in the ledger for `switchman train --from-ledger`, and an online route
        and the request's session react to it at once. Unknown ids raise InvalidRequestError.
        """
        from .gateway import submit_feedback

        client = self._inprocess
        # Not a forked child's copy of its parent's client (its ledger's pooled connections are the parent's, and a
        # flush would wait for a writer thread the child lacks): without a client of its own, the configured ledger.
        dispatcher = client.dispatcher if client is not None and client.ours else None
        submit_feedback(self, dispatcher, request_id, score, comment)

    def close(self, timeout: float | None = None) -> None:
        """End open streams, close connections, write the ledger, stop the local model (safe to repeat).

        Calls under way are let finish first; after `timeout` seconds (None: no limit) those still running are
        cancelled, their callers (and readers of their streams) get RouterClosedError — a call already recorded as
        a success still gets its answer — and close raises TimeoutError. An idle router closes whatever the
        timeout (`close(0)` too). The timeout bounds the waits, not the whole close: at worst `timeout` for the
        calls, max(timeout, 1 s) for ending streams and closing connections, 1 s for the loop thread (a daemon
        left to end on its own, so a hung DNS look-up cannot hold close), then the ledger's flush (as long + 1 s)
        and the local model server's stop. `route` works after it; a later `chat` starts a fresh client.

        On the router's own event-loop thread (code the router runs there) it raises RuntimeError at once and
        closes nothing: waiting there for that loop would wait for ever. anyio's blocking portal refuses a blocking
        call from its loop's thread the same way; close from another thread instead. Closing from the router's
        worker threads (code it runs in a thread with `to_thread`) is not supported either: the close waits
        for the calls that wait for that code.
        """
        with self._inprocess_lock:
            client = self._inprocess
            if client is not None and not client.ours:  # a forked child's copy: its parent closes it
                client = None
            if client is not None:
                client.check_thread()
            self._inprocess = None
        if client is not None:
            client.close(timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self, timeout: float | None = None) -> None:
        """`close` for async code (waits in a worker thread, not on the caller's loop; refused on the router's)."""
        client = self._inprocess
        if client is not None:
            client.check_thread()
        await asyncio.to_thread(self.close, timeout)

    def _client(self) -> InProcessClient:
        client = self._inprocess
        if client is not None and client.ours:
            return client
        with self._inprocess_lock:
            if self._inprocess is None or not self._inprocess.ours:  # none yet, or a forked child's copy of its
                # parent's (without the parent's threads): the child starts its own
                from .gateway import InProcessClient

                self._inprocess = InProcessClient(_sharing(self), owner=self)
            return self._inprocess


#: Every live Router, for `_renew_locks` (weakly: one dropped is garbage-collected as before).
_ROUTERS: weakref.WeakSet[Router] = weakref.WeakSet()


def _renew_locks() -> None:
    """In a forked child (one thread): a new start lock for each router, as the parent's thread that may have held
    one at the fork is not in the child, and the child's first call would wait for it for ever."""
    for router in list(_ROUTERS):
        router._inprocess_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_renew_locks)


def _sharing(router: Router) -> Router:
    """Another object of `router`'s class with the same attributes (one `__dict__`): what the in-process client's
    dispatcher holds. Nothing the client keeps then holds the Router its caller holds, so one dropped unclosed is
    garbage-collected and its client closed by the reaper, rows written (`_inprocess`); until then the dispatcher
    decides with the very same state (strategies, sessions) as `route`."""
    face = object.__new__(type(router))
    face.__dict__ = router.__dict__
    return face
