"""Circuit breakers and live latency shared by every replica on Redis, served from a local HealthBoard.

    health = RedisHealth(link, HealthBoard(breaker, latency=live))
    await health.start()        # every `sync_s`: push this replica's outcomes, pull everyone's

The request path never waits on Redis: every HealthStore call is answered by the local board, and
a background task keeps that board in step. Per deployment key Redis holds

    <prefix>{health:<key>}:circuit   failures (shared count), open_until (wall-clock seconds)
    <prefix>{health:<key>}:mark      ttft (ms), rate (tokens/s), at (wall-clock seconds measured)

A failure adds to the shared count in one Lua step that opens the circuit for everyone when the
count reaches the breaker's threshold (or this replica opened it on its own count); an answer
resets the count and closes it. Outcomes are written in batches, one script per deployment per
sync (an answer since the last one resets, the failures after it add), so the Redis cost does not
grow with the request rate. After the cooldown each replica lets one probe through (so N
replicas send up to N probes). Latency marks are last-writer-wins: the freshest replica's moving
average becomes everyone's, so a slow deployment re-measured by any replica is re-measured for all.

Redis down: the board goes on alone (each replica's own breakers and marks, as with no Redis); when
the link resyncs, this replica's open circuits and marks are written back. Outcomes reach the
other replicas within about `sync_s` (default 0.25 s).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable
from typing import Any

from .._streaks import OnceLog
from ._health import CircuitState, HealthBoard
from ._redis_link import RedisLink, RedisUnavailable
from ._sync_loop import SyncLoop

__all__ = ["RedisHealth"]

logger = logging.getLogger("switchman.state")

#: KEYS[1] the circuit hash. ARGV: reset (1: an answer came since the last push), failures since the last
#: answer, threshold, cooldown s, now (wall s), opened here (1/0), ttl ms, open for (a resync's state; -1: none).
_RECORD = """
if ARGV[1] == '1' then
  redis.call('HSET', KEYS[1], 'failures', 0)
  redis.call('HDEL', KEYS[1], 'open_until')
end
local failures = tonumber(ARGV[2])
local counted = redis.call('HGET', KEYS[1], 'failures')
if counted and not string.match(counted, '^%d+$') then  -- no count (another writer): HINCRBY would fail at every push
  redis.call('HSET', KEYS[1], 'failures', 0)
end
if failures > 0 then
  local n = redis.call('HINCRBY', KEYS[1], 'failures', failures)
  local open = redis.call('HEXISTS', KEYS[1], 'open_until')
  if n >= tonumber(ARGV[3]) or ARGV[6] == '1' or open == 1 then
    redis.call('HSET', KEYS[1], 'open_until', tonumber(ARGV[5]) + tonumber(ARGV[4]))
  end
end
if tonumber(ARGV[8]) >= 0 then
  redis.call('HSET', KEYS[1], 'open_until', tonumber(ARGV[5]) + tonumber(ARGV[8]))
end
redis.call('PEXPIRE', KEYS[1], ARGV[7])
return 1
"""
_TTL_MS = 86_400_000  # a deployment nobody has called for a day is forgotten

#: (key, "ok" | "fail" | "open", cooldown s, opened by this replica's own count)
_Event = tuple[str, str, float, bool]


def _coalesced(events: list[_Event]) -> dict[str, tuple[bool, int, float, bool, float]]:
    """One write per key for a batch of outcomes: (reset, failures after the last answer, cooldown, opened here,
    open for: a resync's state, or -1). Ten thousand answers a second cost a few scripts a second."""
    merged: dict[str, tuple[bool, int, float, bool, float]] = {}
    for key, what, cooldown, opened in events:
        reset, failures, last_cooldown, was_opened, open_for = merged.get(key, (False, 0, 0.0, False, -1.0))
        if what == "ok":
            merged[key] = (True, 0, last_cooldown, False, -1.0)
        elif what == "fail":
            merged[key] = (reset, failures + 1, cooldown, was_opened or opened, open_for)
        else:  # "open": this replica's open circuit, written back after an outage
            merged[key] = (reset, failures, last_cooldown, was_opened, cooldown)
    return merged


class RedisHealth:
    """A HealthStore shared on Redis (see the module docstring); `board` answers every call."""

    def __init__(self, link: RedisLink, board: HealthBoard, *, sync_s: float = 0.25,
                 wall: Callable[[], float] = time.time) -> None:
        self.link = link
        self.board = board
        self.sync_s = sync_s
        self._wall = wall
        self._events: list[_Event] = []
        self._marks: set[str] = set()  # keys whose latency mark changed here since the last push
        self._loop = SyncLoop(self.sync, sync_s, "health")
        self._malformed = OnceLog()  # keys whose malformed shared state was logged (bounded: another writer's)
        link.on_resync(self._resync)

    # -- HealthStore: the local board answers -------------------------------------------------
    @property
    def ttft_ms(self) -> dict[str, float]:
        return self.board.ttft_ms

    @property
    def tokens_per_s(self) -> dict[str, float]:
        return self.board.tokens_per_s

    def state(self, key: str) -> CircuitState:
        return self.board.state(key)

    def unhealthy(self) -> frozenset[str]:
        return self.board.unhealthy()

    def allow(self, key: str) -> bool:
        return self.board.allow(key)

    def record(self, key: str, *, ok: bool, cooldown_s: float | None = None) -> None:
        self.board.record(key, ok=ok, cooldown_s=cooldown_s)
        cooldown = self.board.breaker.cooldown_s if cooldown_s is None else cooldown_s
        self._events.append((key, "ok" if ok else "fail", cooldown, not ok and self.board.open_for(key) is not None))

    def abandon(self, key: str) -> None:
        self.board.abandon(key)

    def observe(self, key: str, ttft_ms: float, output_tokens: int = 0, stream_s: float = 0.0) -> None:
        self.board.observe(key, ttft_ms, output_tokens, stream_s)
        self._marks.add(key)

    def live_ttft(self, key: str) -> float | None:
        return self.board.live_ttft(key)

    def sent(self, key: str) -> None:
        self.board.sent(key)

    # -- keeping in step ----------------------------------------------------------------------
    def _circuit_key(self, key: str) -> str:
        return self.link.key(f"health:{key}", "circuit")

    def _mark_key(self, key: str) -> str:
        return self.link.key(f"health:{key}", "mark")

    async def sync(self) -> None:
        """Push this replica's outcomes and marks, then pull everyone's into the board (RedisUnavailable: skipped)."""
        events, self._events = self._events, []
        marks, self._marks = self._marks, set()
        try:
            await self._push(events, marks)
            await self._pull(busy={key for key, *_ in self._events} | self._marks)
        except RedisUnavailable:
            pass  # the board has it all; the resync writes it back when Redis returns

    async def _push(self, events: list[_Event], marks: set[str]) -> None:
        if not events and not marks:
            return
        now, breaker = self._wall(), self.board.breaker
        keys = {key for key, *_ in events} | marks

        async def push(r: Any) -> None:
            pipe = r.pipeline(transaction=False)
            pipe.sadd(self.link.key("health", "keys"), *keys)
            for key, (reset, failures, cooldown, opened, open_for) in _coalesced(events).items():
                pipe.eval(_RECORD, 1, self._circuit_key(key), int(reset), failures, breaker.failures, cooldown, now,
                          int(opened), _TTL_MS, open_for)
            for key in marks:
                mark = self.board.mark(key)
                if mark is not None:
                    ttft, rate, age = mark
                    fields = {"ttft": ttft, "at": now - age, **({"rate": rate} if rate is not None else {})}
                    pipe.hset(self._mark_key(key), mapping=fields)
                    pipe.pexpire(self._mark_key(key), _TTL_MS)
            await pipe.execute()

        await self.link.run(push)

    async def _pull(self, busy: set[str]) -> None:
        async def pull(r: Any) -> tuple[list[str], list[Any]]:
            names = sorted(k.decode() if isinstance(k, bytes) else str(k)
                           for k in await r.smembers(self.link.key("health", "keys")))
            pipe = r.pipeline(transaction=False)
            for key in names:
                pipe.hget(self._circuit_key(key), "open_until")
                pipe.hmget(self._mark_key(key), "ttft", "rate", "at")
            return names, await pipe.execute() if names else []

        names, replies = await self.link.run(pull)
        now = self._wall()
        for index, key in enumerate(names):
            if key in busy:
                continue  # an outcome of ours is on its way: the next pull settles it
            open_until, (ttft, rate, at) = replies[2 * index], replies[2 * index + 1]
            try:  # one malformed value (another writer, a version skew) must not keep every other key from a pull
                circuit = None if open_until is None else _finite(open_until) - now
                mark = None if ttft is None or at is None else (
                    _finite(ttft), None if rate is None else _finite(rate), now - _finite(at))
            except ValueError:
                if self._malformed.first(key):
                    logger.warning("redis health: malformed shared state for %s (open_until=%r ttft=%r rate=%r "
                                   "at=%r); skipped", key, open_until, ttft, rate, at)
                continue
            self.board.adopt_circuit(key, circuit)
            if mark is not None:
                self.board.adopt_mark(key, *mark)

    async def _resync(self) -> None:
        """Redis is back: write this replica's open circuits and marks (the others' states are pulled next)."""
        for key in self.board.keys():
            left = self.board.open_for(key)
            if left is not None:
                self._events.append((key, "open", left, True))
            self._marks.add(key)

    async def start(self) -> None:
        """Pull the shared state once, then keep in step in the background."""
        await self.sync()
        self._loop.start()

    async def aclose(self) -> None:
        """Stop the background task (one last push of what is pending)."""
        await self._loop.stop(self.link.timeout_s * 3 + 5.0)
        with contextlib.suppress(RedisUnavailable):
            await self._push(self._events, self._marks)


def _finite(value: Any) -> float:
    """A number read back from Redis; ValueError for anything else (text, NaN, infinity)."""
    number = float(value.decode() if isinstance(value, bytes) else value)
    if not math.isfinite(number):
        raise ValueError(f"not a finite number: {value!r}")
    return number
