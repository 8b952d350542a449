"""The I/O side of sessions: where session states live, the clock, and what a turn's outcome signals.

The decision about switching is pure (`switchman.routing._sessions`); this module reads the clock,
keeps states in a `SessionStore` and notices the outcome of each turn:

    keeper = SessionKeeper.from_config(config, decider.models)
    decision = keeper.steer(request, decision, context)      # before the call
    keeper.observe(exchange, content)                          # after it (every outcome)
    keeper.record_feedback("sess-1", 0.0)                      # negative feedback escalates the next turn

The in-memory store is per process. With `server.redis_url`, the keeper also keeps every state in
a `RedisSessionStore` so a session's turns may land on any replica: before a turn is decided its
state is pulled from Redis (`await keeper.pull(session)`), and each state `observe` writes is
pushed there at once (`await keeper.settled(session)` waits for the push before the answer's last
byte, so the client's next turn finds it on any replica). Redis down: the local store serves.
A pull does not wait for this replica's own pushes still in flight (states are ordered by turns:
a read that misses one returns fewer turns than the local copy, which is kept), only for its own
feedback marks (a read that missed one would bring back the state without its escalation).
A turn that ends (the client left) before its read came back writes no state: it never saw the shared
one, and a state built from this replica's copy could overwrite a newer turn of another replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import replace
from typing import Any, Protocol

import orjson

from .._catalog import ModelSpec
from .._config import Config
from ..routing import (
    Decision,
    RouteRequest,
    SessionPolicy,
    SessionState,
    advance,
    is_expired,
    repeated_tool_call,
    steer,
)
from ..state import RedisSessionStore, RedisUnavailable
from ._context import RequestContext
from ._exchange import Exchange

__all__ = ["TRUNCATED", "MemorySessionStore", "SessionKeeper", "SessionStore", "answer_signal"]

#: The signal of an answer cut at a token limit. It escalates only when the limit was not the
#: caller's own: a classifier that asks for 20 tokens and gets 20 has not been failed by its model.
TRUNCATED = "truncated answer (finish_reason length)"

#: Decisions sessions leave alone: a model named or pinned (fixed), and a cascade, which escalates itself.
_UNSTEERED = frozenset({"fixed", "cascade"})
#: How many of the link's timeouts a turn waits for this replica's feedback mark of its session to land: the mark
#: is one call, and with one round trip on its way at a time a call may wait for the one before it (2 timeouts),
#: behind a put of the same session (2 more); 6 leaves a slow-but-answering Redis room for both.
_MARK_WAITS = 6


class SessionStore(Protocol):
    """Where session states live between turns."""

    def get(self, session_id: str, now: float) -> SessionState | None:
        """The live state of a session (None when unknown or expired)."""
        ...

    def put(self, session_id: str, state: SessionState) -> None:
        """Store a session's state after a turn."""
        ...

    def expire(self, now: float) -> int:
        """Forget expired sessions; returns how many."""
        ...


class MemorySessionStore:
    """Session states in this process's memory, oldest evicted beyond `max_sessions`.

    Safe from any thread (one lock, uncontended on the event loop): the SDK's `Router.route` and `feedback` read
    and write it from the caller's thread while its chats update it on the client's loop."""

    def __init__(self, ttl_s: float, max_sessions: int = 100_000) -> None:
        self.ttl_s = ttl_s
        self.max_sessions = max_sessions
        self._states: OrderedDict[str, SessionState] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, session_id: str, now: float) -> SessionState | None:
        """The live state of a session (an expired one is dropped).

        A read takes no lock (one dict lookup is atomic, and a state is never changed in place): the lock costs
        ~2k instructions a use here, and reads are most of a session's store calls. Dropping takes it."""
        state = self._states.get(session_id)
        if state is None or not is_expired(state, now, self.ttl_s):
            return state
        with self._lock:
            if self._states.get(session_id) is state:  # (not replaced by a put meanwhile)
                del self._states[session_id]
        return None

    def put(self, session_id: str, state: SessionState) -> None:
        """Store a state, most recent last; evict the least recently updated beyond the cap."""
        with self._lock:
            self._states[session_id] = state
            self._states.move_to_end(session_id)
            while len(self._states) > self.max_sessions:
                self._states.popitem(last=False)

    def expire(self, now: float) -> int:
        """Drop every expired session (states are kept in update order, so stop at the first live one)."""
        dropped = 0
        with self._lock:
            while self._states:
                session_id, state = next(iter(self._states.items()))
                if not is_expired(state, now, self.ttl_s):
                    break
                del self._states[session_id]
                dropped += 1
        return dropped

    def __len__(self) -> int:
        return len(self._states)


def answer_signal(content: bytes) -> str | None:
    """An escalation reason in a chat.completion body: an empty or a truncated answer."""
    try:
        data = orjson.loads(content)
    except orjson.JSONDecodeError:
        return None
    choices = data.get("choices") if isinstance(data, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return "empty answer (no choices)"
    choice = choices[0]
    if choice.get("finish_reason") == "length":
        return TRUNCATED
    message = choice.get("message") or {}
    text = message.get("content") if isinstance(message, dict) else None
    has_calls = isinstance(message, dict) and bool(message.get("tool_calls"))
    if not has_calls and not (isinstance(text, str) and text.strip()):
        return "empty answer"
    return None


class SessionKeeper:
    """Steers each session's turns with the pure core and remembers their outcomes."""

    def __init__(
        self, store: SessionStore, policy: SessionPolicy, specs: Mapping[str, ModelSpec], *,
        negative_feedback_below: float = 0.5, clock: Callable[[], float] = time.monotonic,
        shared: RedisSessionStore | None = None,
    ) -> None:
        self.store = store
        #: States shared by every replica (None: this process's store only).
        self.shared = shared
        self._pushes: dict[str, asyncio.Future[None]] = {}
        self._marks: dict[str, asyncio.Future[None]] = {}  # sessions with a feedback mark on its way to Redis
        self.policy = policy
        self.specs = specs
        self.negative_feedback_below = negative_feedback_below
        self.clock = clock

    @classmethod
    def from_config(
        cls, config: Config, specs: Mapping[str, ModelSpec], *, store: SessionStore | None = None,
        clock: Callable[[], float] = time.monotonic, shared: RedisSessionStore | None = None,
    ) -> SessionKeeper:
        """The keeper `sessions:` configures (an in-memory store unless one is given; `shared`: Redis too)."""
        s = config.sessions
        policy = SessionPolicy(ttl_s=s.ttl_s, escalate_only=s.escalate_only,
                               value_per_quality_point_usd=s.value_per_quality_point_usd,
                               expected_remaining_turns=s.expected_remaining_turns)
        return cls(store if store is not None else MemorySessionStore(s.ttl_s, s.max_sessions), policy, specs,
                   negative_feedback_below=s.negative_feedback_below, clock=clock, shared=shared)

    # -- the shared copy -------------------------------------------------------------------------
    def shares(self, session_id: str | None) -> bool:
        """Whether a turn of this session reads its state from Redis first (`pull`)."""
        return self.shared is not None and session_id is not None

    async def pull(self, session_id: str | None) -> None:
        """Bring the session's shared state into the local store before its turn is decided (a turn steered by
        the local copy before the read is steered again after it)."""
        if self.shared is not None and session_id is not None:
            await self.pulled(session_id, self.pull_soon(session_id))

    def pull_soon(self, session_id: str) -> asyncio.Future[Any]:
        """`pull`'s read, queued now (it joins this turn's round trip; no task unless a feedback mark of this
        replica is still on its way: the read waits for it): pass the future to `pulled`, or to `drop_pull`."""
        shared = self.shared
        assert shared is not None, "pull_soon without shared state (see `shares`)"
        if session_id in self._marks:
            return asyncio.ensure_future(self._read_after_mark(shared, session_id))
        return shared.get_soon(session_id)

    async def _read_after_mark(self, shared: RedisSessionStore, session_id: str) -> Any:
        marking = self._marks.get(session_id)
        if marking is not None:  # this replica's own feedback first (a push in flight is ordered by turns)
            await asyncio.wait([marking], timeout=shared.link.timeout_s * _MARK_WAITS)
        return await shared.get_soon(session_id)

    async def pulled(self, session_id: str, pulling: asyncio.Future[Any]) -> None:
        """Wait for a `pull_soon` and bring what it read into the local store."""
        try:
            raw = await pulling
        except RedisUnavailable:
            return  # the local state (if any) decides
        self.adopt(session_id, raw)

    def adopt(self, session_id: str, raw: bytes | None) -> None:
        """Bring a state `pull_soon` read into the local store: it replaces the local copy unless that has more
        turns (ordered by turns, not clocks: a local state with more turns was written while Redis was away)."""
        state = self.shared.state_of(raw) if self.shared is not None else None
        local = self.store.get(session_id, self.clock())
        if state is not None and (local is None or state.turns >= local.turns):
            self.store.put(session_id, state)

    @staticmethod
    def drop_pull(pulling: asyncio.Future[Any]) -> None:
        """Abandon a `pull_soon` (its turn ends before it is decided): cancelled, or its failure retrieved."""
        if not pulling.cancel() and not pulling.cancelled():
            pulling.exception()  # RedisUnavailable, read already: no "never retrieved" warning

    def _push(self, session_id: str, state: SessionState) -> None:
        """Write a state to Redis in the background (a failure leaves the local copy, which serves meanwhile): at
        once, in this turn's round trip (after a feedback mark still on its way: in a task, behind it)."""
        shared = self.shared
        if shared is None:
            return
        if session_id in self._marks:
            self._track(session_id, shared.put(session_id, state))
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # no event loop (a synchronous caller): the local store only
            return
        put = shared.put_soon(session_id, state)
        self._pushes[session_id] = put
        put.add_done_callback(lambda done: self._pushed(session_id, done))

    def _pushed(self, session_id: str, put: asyncio.Future[Any]) -> None:
        if self._pushes.get(session_id) is put:
            del self._pushes[session_id]
        error = None if put.cancelled() else put.exception()  # retrieved: RedisUnavailable is no news
        if error is not None and not isinstance(error, RedisUnavailable):
            raise error  # a bug: the event loop logs it (the request is answered all the same)

    def _track(self, session_id: str, write: Coroutine[Any, Any, object], *, mark: bool = False) -> None:
        """Run a write to the shared store as the session's pending push (`settled` waits for it, and `pull` for
        a `mark`). A mark goes after the session's last write (a put landing after it would drop its escalation);
        a put goes at once, or after a mark still on its way: puts are ordered by turns in Redis, whichever lands
        first (a replica's later put has more turns), so concurrent turns' puts may share a round trip."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # no event loop (a synchronous caller): the local store only
            write.close()
            return
        previous = self._pushes.get(session_id) if mark else self._marks.get(session_id)

        async def run() -> None:
            try:
                if previous is not None:
                    await asyncio.wait([previous])
                await write
            except RedisUnavailable:
                pass
            finally:
                if self._pushes.get(session_id) is task:
                    del self._pushes[session_id]
                if self._marks.get(session_id) is task:
                    del self._marks[session_id]

        task = asyncio.ensure_future(run())
        self._pushes[session_id] = task
        if mark:
            self._marks[session_id] = task

    async def settled(self, session_id: str | None) -> None:
        """Wait until the session's last state is in Redis (at most a few of the link's timeouts)."""
        pending = self._pushes.get(session_id) if session_id is not None else None
        if pending is None or self.shared is None:
            return
        if isinstance(pending, asyncio.Task):  # behind a feedback mark: bounded here
            await asyncio.wait([pending], timeout=self.shared.link.timeout_s * _MARK_WAITS)
            return
        with contextlib.suppress(Exception):  # a put in a round trip, bounded by the link's timeout; its failure
            await asyncio.shield(pending)  # is `_pushed`'s; a request that leaves does not cancel the write

    def steer(self, request: RouteRequest, decision: Decision, context: RequestContext) -> Decision:
        """The turn's decision: the session's model, or a priced escalation (reads state, writes none)."""
        if request.session is None or decision.route is None or decision.strategy in _UNSTEERED:
            return decision
        signal = None
        if context.escalate:
            signal = "escalation requested by the caller"
        elif repeated_tool_call(request):
            signal = "the same tool call repeated"
        state = self.store.get(request.session, self.clock())
        return steer(decision, state, request, self.specs, self.policy, now=self.clock(), signal=signal)

    def observe(self, exchange: Exchange, content: bytes | None = None, answer: str | None = None) -> None:
        """Remember the turn: its model, the conversation's length, and any escalation signal."""
        request, decision = exchange.request, exchange.decision
        if request is None or decision is None or request.session is None or decision.route is None \
                or decision.strategy in _UNSTEERED or exchange.session_unread:
            return  # a turn that never read its shared state (cancelled first) leaves the session as it was
        signal = None
        if exchange.status in ("error", "stream_error") or (exchange.tried and exchange.tried[0] != exchange.model):
            signal = f"upstream error on {exchange.tried[0] if exchange.tried else decision.model}"
        elif content is not None:
            signal = answer_signal(content)
        elif answer is not None:  # a streamed answer's signal, noted by the stream translator
            signal = answer
        if signal == TRUNCATED and request.max_tokens is not None:
            signal = None  # cut at the caller's own max_tokens: what was asked for, not a failure
        usage = exchange.usage
        context_tokens = usage.input_tokens + usage.output_tokens if usage is not None else request.input_tokens
        now = self.clock()
        state = advance(self.store.get(request.session, now), decision, now=now, context_tokens=context_tokens,
                        signal=signal, request_id=exchange.context.request_id, policy=self.policy)
        self.store.put(request.session, state)
        self._push(request.session, state)

    def record_feedback(self, session_id: str, score: float, *, request_id: str | None = None) -> bool:
        """Negative feedback (score below the threshold) escalates the session's next turn.

        With `request_id`, only feedback on the session's latest turn counts (older turns' models may
        already have changed). Returns whether the session will escalate (as this replica knows it;
        with Redis, the shared state is updated in the background as well).
        """
        if score >= self.negative_feedback_below:
            return False
        reason = f"negative feedback (score {score:g})"
        if self.shared is not None:
            self._feedback_shared(session_id, reason, request_id)
        state = self.store.get(session_id, self.clock())
        if state is None or (request_id is not None and state.last_request_id != request_id):
            return False
        self.store.put(session_id, replace(state, pending=reason))
        return True

    def _feedback_shared(self, session_id: str, reason: str, request_id: str | None) -> None:
        """Mark the shared state for escalation (its latest turn may have been on another replica)."""
        shared = self.shared
        if shared is None:
            return

        async def mark() -> None:  # in Redis in one step: a turn written meanwhile is not overwritten
            await shared.mark(session_id, reason, request_id)

        self._track(session_id, mark(), mark=True)
