"""Requests- and tokens-per-minute limits held in Redis, so a limit holds across every replica.

    limiter = RedisRateLimiter(link)
    admission = await limiter.admit("key:k-123", RateLimit(rpm=60, tpm=40_000), tokens=1_200)

The arithmetic is `LocalRateLimiter`'s (two token buckets refilled continuously, a request takes
one request and its tokens from both or from neither), run as one Lua script per admission on the
key's hash `<prefix>{ratelimit:<key>}` with Redis's own clock, so replicas on different machines
share one time. A request under several limits (a key's and an agent's: `admit_all`) is one script
over all their keys, taking from all or none in one step (on a Cluster, one script per slot: see
`admit_all`). A bucket is kept until a minute after it is full again (two minutes at least),
then expires: the debt a request larger than the minute's tokens leaves is not forgiven early.
While Redis is down each replica admits against its own `LocalRateLimiter` (a limit then holds per replica).
`usage` answers from the last admission this replica saw (it may lag behind the other replicas').
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from ._limits import Admission, LocalRateLimiter, RateLimit, admission_at
from ._redis_link import RedisLink, RedisUnavailable

__all__ = ["RedisRateLimiter"]

# KEYS: each key's hash; ARGV: tokens, then rpm (0: none), tpm (0: none) per key. Checks every key's buckets, then
# takes one request and the tokens from all of them, or from none. Returns {admitted, then per key: wait_s, requests
# left, tokens left} (as strings; -1 for a bucket not kept; a wait 0 for a key that had room).
_ADMIT = """
local time = redis.call('TIME')
local now = tonumber(time[1]) + tonumber(time[2]) / 1000000
local tokens = tonumber(ARGV[1])
local function level(i, field, capacity)
  local kept = redis.call('HMGET', KEYS[i], field, field .. '_at')
  if not kept[1] then return capacity end
  return math.min(capacity, tonumber(kept[1]) + (now - tonumber(kept[2])) * capacity / 60)
end
local rpm, tpm, requests, toks, waits, admitted = {}, {}, {}, {}, {}, 1
for i = 1, #KEYS do
  rpm[i], tpm[i] = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
  local wait = 0
  requests[i], toks[i] = -1, -1
  if rpm[i] > 0 then
    requests[i] = level(i, 'r', rpm[i])
    if requests[i] < 1 then wait = math.max(wait, (1 - requests[i]) * 60 / rpm[i]) end
  end
  if tpm[i] > 0 then
    toks[i] = level(i, 't', tpm[i])
    local need = math.min(tokens, tpm[i])
    if toks[i] < need then wait = math.max(wait, (need - toks[i]) * 60 / tpm[i]) end
  end
  waits[i] = wait
  if wait > 0 then admitted = 0 end
end
local reply = {admitted}
for i = 1, #KEYS do
  if admitted == 1 then
    if rpm[i] > 0 then requests[i] = requests[i] - 1 end
    if tpm[i] > 0 then toks[i] = toks[i] - tokens end
  end
  if rpm[i] > 0 then redis.call('HSET', KEYS[i], 'r', tostring(requests[i]), 'r_at', tostring(now)) end
  if tpm[i] > 0 then redis.call('HSET', KEYS[i], 't', tostring(toks[i]), 't_at', tostring(now)) end
  -- Kept until both buckets are full again (two minutes at least): a bucket in debt keeps its debt.
  local full = 60
  if rpm[i] > 0 then full = math.max(full, (rpm[i] - requests[i]) * 60 / rpm[i]) end
  if tpm[i] > 0 then full = math.max(full, (tpm[i] - toks[i]) * 60 / tpm[i]) end
  redis.call('EXPIRE', KEYS[i], math.ceil(full) + 60)
  reply[#reply + 1] = tostring(waits[i])
  reply[#reply + 1] = tostring(requests[i])
  reply[#reply + 1] = tostring(toks[i])
end
return reply
"""

#: Give-backs kept while Redis is down at most (more: dropped, those buckets refill on their own: stricter).
_UNSENT_MAX = 10_000

# KEYS[1] the key's hash; ARGV: rpm (0: none), tpm (0: none), tokens. Gives back one request and the tokens,
# up to full buckets (a bucket already gone is full).
_REFUND = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local time = redis.call('TIME')
local now = tonumber(time[1]) + tonumber(time[2]) / 1000000
local rpm, tpm, tokens = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local function give(field, capacity, amount)
  local kept = redis.call('HMGET', KEYS[1], field, field .. '_at')
  if not kept[1] then return end
  local level = math.min(capacity, tonumber(kept[1]) + (now - tonumber(kept[2])) * capacity / 60)
  redis.call('HSET', KEYS[1], field, tostring(math.min(capacity, level + amount)), field .. '_at', tostring(now))
end
if rpm > 0 then give('r', rpm, 1) end
if tpm > 0 then give('t', tpm, tokens) end
return 1
"""


class RedisRateLimiter:
    """Token buckets in Redis, one Lua script per admission; this process's buckets while Redis is down."""

    def __init__(self, link: RedisLink, *, fallback: LocalRateLimiter | None = None) -> None:
        self.link = link
        self.fallback = fallback or LocalRateLimiter()
        self._used: dict[str, float] = {}  # the fuller bucket's used share at this replica's last admission
        #: One script per Cluster slot (the keys of one script must share one); on a single Redis, one for all.
        self.per_slot = link.cluster
        #: Give-backs Redis was down for (never sent): sent when it is back, before requests reach it again.
        self._unsent: list[tuple[str, list[int]]] = []
        link.on_resync(self._resend)

    def _key(self, key: str) -> str:
        return self.link.key(f"ratelimit:{key}")

    async def admit(self, key: str, limit: RateLimit, tokens: int) -> Admission:
        """Take one request and `tokens` from the key's shared buckets if both have room, else nothing (a
        deployment's, on every request's path: one script over one key, without `admit_all`'s grouping)."""
        if not limit:
            return Admission(admitted=True)
        tokens = max(tokens, 0)
        try:
            reply = await self.link.eval(_ADMIT, [self._key(key)], [tokens, limit.rpm or 0, limit.tpm or 0])
        except RedisUnavailable:
            return await self.fallback.admit(key, limit, tokens)
        return self._admission(key, limit, bool(int(reply[0])), float(reply[1]), reply[2], reply[3])

    async def admit_all(self, limits: Sequence[tuple[str, RateLimit]], tokens: int) -> list[Admission]:
        """Take one request and `tokens` from every key's shared buckets if all have room, else from none.

        On a single Redis that is one script over every key: atomic. On a Cluster the keys of different entities
        hash to different slots, and one script reaches one slot, so it is one script per slot, in order: each is
        atomic, and one refusing (or Redis lost) gives back what the slots before it took, in Redis, never into
        this process's buckets. A give-back the link is down for is sent when Redis is back (on resync, before
        requests reach it; a bucket already full takes nothing); one that fails on its way is dropped: those
        buckets stay short until they refill (stricter, not looser). A key given twice is taken once."""
        tokens = max(tokens, 0)
        first: dict[str, int] = {}  # each key's first place (with a limit): a key given twice is taken once
        for i, (key, limit) in enumerate(limits):
            if limit and key not in first:
                first[key] = i
        found: dict[int, Admission] = {}
        taken: list[int] = []
        for group in self._groups(list(first.values()), limits):
            try:
                reply = await self.link.eval(
                    _ADMIT, [self._key(limits[i][0]) for i in group],
                    [tokens, *(n or 0 for i in group for n in (limits[i][1].rpm, limits[i][1].tpm))])
            except RedisUnavailable:
                await self._give_back(taken, limits, tokens)
                return await self.fallback.admit_all(limits, tokens)
            admitted = bool(int(reply[0]))
            for n, i in enumerate(group):
                key, limit = limits[i]
                wait, requests, toks = reply[1 + 3 * n: 4 + 3 * n]
                found[i] = self._admission(key, limit, admitted, float(wait), requests, toks)
            if not admitted:
                await self._give_back(taken, limits, tokens)
                return [replace(found[j], admitted=False) if (j := first.get(key, i)) in found
                        else Admission(admitted=False) for i, (key, _) in enumerate(limits)]
            taken += group
        return [found.get(first.get(key, i)) or Admission(admitted=True) for i, (key, _) in enumerate(limits)]

    def _groups(self, live: list[int], limits: Sequence[tuple[str, RateLimit]]) -> list[list[int]]:
        """The keys (by index) each script takes: all in one, or one script per Cluster slot (in order)."""
        if not self.per_slot:
            return [live] if live else []
        from redis.crc import key_slot

        slots: dict[int, list[int]] = {}
        for i in live:
            slots.setdefault(key_slot(self._key(limits[i][0]).encode()), []).append(i)
        return list(slots.values())

    async def _give_back(self, taken: list[int], limits: Sequence[tuple[str, RateLimit]], tokens: int) -> None:
        """What the slots before a refusal took, back to Redis (where it was taken). The link down: never sent,
        kept for the resync. A call that fails on its way may have run: dropped (never given back twice)."""
        for i in taken:
            key, limit = limits[i]
            give = (self._key(key), [limit.rpm or 0, limit.tpm or 0, tokens])
            if not self.link.up:
                if len(self._unsent) < _UNSENT_MAX:
                    self._unsent.append(give)
                continue
            try:
                await self.link.eval(_REFUND, [give[0]], give[1])
            except RedisUnavailable:
                pass

    async def _resend(self) -> None:
        """The give-backs Redis was down for, sent as the link comes back up (a resync callback)."""
        while self._unsent:
            key, args = self._unsent.pop(0)
            await self.link.eval(_REFUND, [key], args)  # failing: the resync fails and runs again (this one dropped)

    def _admission(
        self, key: str, limit: RateLimit, admitted: bool, wait: float, requests: bytes | str, toks: bytes | str,
    ) -> Admission:
        """One key's admission from the script's reply (its levels after it; -1 for a bucket not kept)."""
        request_level = float(requests) if limit.rpm is not None else None
        token_level = float(toks) if limit.tpm is not None else None
        self._used[key] = max(_used(request_level, limit.rpm), _used(token_level, limit.tpm))
        return admission_at(limit, admitted, wait, request_level, token_level)

    def usage(self, key: str, limit: RateLimit) -> float:
        """The fuller bucket's used share, 0..1, at this replica's last admission (the local one while down)."""
        if not self.link.up:
            return self.fallback.usage(key, limit)
        return self._used.get(key, 0.0)


def _used(level: float | None, capacity: int | None) -> float:
    if level is None or not capacity:
        return 0.0
    return min(max(1.0 - level / capacity, 0.0), 1.0)
