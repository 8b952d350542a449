"""Session states on Redis, so a session's turns may land on any replica and keep their model and escalation.

    shared = RedisSessionStore(link, ttl_s=1800)
    state = await shared.get("key1:sess-1")        # None: unknown or expired
    await shared.put("key1:sess-1", state)         # expires after ttl_s idle (a Redis expiry)

Each session is one key, `<prefix>{session:<id>}`, holding its state as JSON with a Redis expiry
of the session TTL, renewed at every turn. Writes are ordered by the session's turn count, not by
clocks: `put` is a compare-and-set (a state with fewer turns than the stored one is refused: a
late write from another replica cannot undo a newer turn), and `mark` sets the pending escalation
inside Redis in one step (no read-then-write that a concurrent turn could overwrite). A state's
`updated_at` (for its TTL only) is on the caller's monotonic clock, stored as wall-clock time.
Calls raise `RedisUnavailable` when Redis is down; the session keeper then uses its local store.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import orjson

from ..routing import SessionState, is_expired
from ._redis_link import RedisLink

__all__ = ["RedisSessionStore"]

# KEYS[1]; ARGV: the state (JSON), ttl_ms, its turns. Stores it unless the stored state has more turns.
_PUT = """
local current = redis.call('GET', KEYS[1])
if current then
  local ok, data = pcall(cjson.decode, current)
  if ok and type(data) == 'table' and tonumber(data['turns']) and tonumber(data['turns']) > tonumber(ARGV[3]) then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

# KEYS[1]; ARGV: the reason, the request id it must be the latest turn of ('' for any). Keeps the expiry.
_MARK = """
local current = redis.call('GET', KEYS[1])
if not current then return 0 end
local ok, data = pcall(cjson.decode, current)
if not ok or type(data) ~= 'table' then return 0 end
if ARGV[2] ~= '' and data['last_request_id'] ~= ARGV[2] then return 0 end
data['pending'] = ARGV[1]
redis.call('SET', KEYS[1], cjson.encode(data), 'KEEPTTL')
return 1
"""


class RedisSessionStore:
    """Session states shared by every replica (async; the keeper keeps a local copy for when Redis is down)."""

    def __init__(self, link: RedisLink, ttl_s: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.link = link
        self.ttl_s = ttl_s
        self._clock = clock
        self._to_wall = time.time() - clock()  # updated_at (monotonic) + this = wall-clock seconds

    def _key(self, session_id: str) -> str:
        return self.link.key(f"session:{session_id}")

    async def get(self, session_id: str) -> SessionState | None:
        """The live state of a session (None when unknown or expired)."""
        return self.state_of(await self.get_soon(session_id))

    def get_soon(self, session_id: str) -> asyncio.Future[Any]:
        """`get`, queued now (it joins this turn's round trip): the future has the stored value for `state_of`."""
        return self.link.command_soon("GET", self._key(session_id))

    def state_of(self, raw: bytes | None) -> SessionState | None:
        """The live state in a value `get_soon` read (None when unknown, unreadable or expired)."""
        if raw is None:
            return None
        state = _decode(raw, self._to_wall)
        if state is None or is_expired(state, self._clock(), self.ttl_s):
            return None
        return state

    async def put(self, session_id: str, state: SessionState) -> bool:
        """Store a session's state, expiring `ttl_s` after this turn; False (nothing written) when the stored
        state has more turns (a newer turn, on another replica)."""
        return bool(await self.put_soon(session_id, state))

    def put_soon(self, session_id: str, state: SessionState) -> asyncio.Future[Any]:
        """`put`, queued now (it joins this turn's round trip): the future's reply is 1 when written, else 0."""
        payload = orjson.dumps({
            "model": state.model, "at": state.updated_at + self._to_wall, "context_tokens": state.context_tokens,
            "turns": state.turns, "pending": state.pending, "last_request_id": state.last_request_id,
        })
        ttl_ms = max(int(self.ttl_s * 1000), 1)
        return self.link.eval_soon(_PUT, [self._key(session_id)], [payload.decode(), ttl_ms, state.turns])

    async def mark(self, session_id: str, reason: str, request_id: str | None = None) -> bool:
        """Set the session's pending escalation in Redis, when its latest turn is `request_id` (any: None)."""
        return bool(await self.link.eval(_MARK, [self._key(session_id)], [reason, request_id or ""]))


def _decode(raw: bytes, to_wall: float) -> SessionState | None:
    """A stored state (None for one this version cannot read)."""
    try:
        data: Any = orjson.loads(raw)
        return SessionState(
            model=str(data["model"]), updated_at=float(data["at"]) - to_wall,
            context_tokens=int(data.get("context_tokens") or 0), turns=int(data.get("turns") or 0),
            pending=data.get("pending"), last_request_id=data.get("last_request_id"),
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
