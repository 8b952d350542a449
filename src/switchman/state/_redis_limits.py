"""Requests- and tokens-per-minute limits held in Redis, so a limit holds across every replica.

    limiter = RedisRateLimiter(link)
    admission = await limiter.admit("key:k-123", RateLimit(rpm=60, tpm=40_000), tokens=1_200)

The arithmetic is `LocalRateLimiter`'s (two token buckets refilled continuously, a request takes
one request and its tokens from both or from neither), run as one Lua script per admission on the
key's hash `<prefix>{ratelimit:<key>}` with Redis's own clock, so replicas on different machines
share one time. A bucket is kept until a minute after it is full again (two minutes at least),
then expires: the debt a request larger than the minute's tokens leaves is not forgiven early.
While Redis is down each replica admits against its own `LocalRateLimiter` (a limit then holds per replica).
`usage` answers from the last admission this replica saw (it may lag behind the other replicas').
"""

from __future__ import annotations

from ._limits import Admission, LocalRateLimiter, RateLimit
from ._redis_link import RedisLink, RedisUnavailable

__all__ = ["RedisRateLimiter"]

# KEYS[1] the key's hash; ARGV: rpm (0: none), tpm (0: none), tokens.
# Returns {admitted, wait_s, requests left, tokens left} (levels as strings; -1 for a bucket not kept).
_ADMIT = """
local time = redis.call('TIME')
local now = tonumber(time[1]) + tonumber(time[2]) / 1000000
local rpm, tpm, tokens = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local function level(field, capacity)
  local kept = redis.call('HMGET', KEYS[1], field, field .. '_at')
  if not kept[1] then return capacity end
  return math.min(capacity, tonumber(kept[1]) + (now - tonumber(kept[2])) * capacity / 60)
end
local wait, requests, toks = 0, -1, -1
if rpm > 0 then
  requests = level('r', rpm)
  if requests < 1 then wait = math.max(wait, (1 - requests) * 60 / rpm) end
end
if tpm > 0 then
  toks = level('t', tpm)
  local need = math.min(tokens, tpm)
  if toks < need then wait = math.max(wait, (need - toks) * 60 / tpm) end
end
if wait == 0 then
  if rpm > 0 then requests = requests - 1 end
  if tpm > 0 then toks = toks - tokens end
end
if rpm > 0 then redis.call('HSET', KEYS[1], 'r', tostring(requests), 'r_at', tostring(now)) end
if tpm > 0 then redis.call('HSET', KEYS[1], 't', tostring(toks), 't_at', tostring(now)) end
-- Kept until both buckets are full again (two minutes at least): a bucket in debt keeps its debt.
local full = 60
if rpm > 0 then full = math.max(full, (rpm - requests) * 60 / rpm) end
if tpm > 0 then full = math.max(full, (tpm - toks) * 60 / tpm) end
redis.call('EXPIRE', KEYS[1], math.ceil(full) + 60)
if wait == 0 then return {1, '0', tostring(requests), tostring(toks)} end
return {0, tostring(wait), tostring(requests), tostring(toks)}
"""

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

    async def admit(self, key: str, limit: RateLimit, tokens: int) -> Admission:
        """Take one request and `tokens` from the key's shared buckets if both have room, else nothing."""
        if not limit:
            return Admission(admitted=True)
        try:
            admitted, wait, requests, toks = await self.link.eval(
                _ADMIT, [self.link.key(f"ratelimit:{key}")], [limit.rpm or 0, limit.tpm or 0, max(tokens, 0)])
        except RedisUnavailable:
            return await self.fallback.admit(key, limit, tokens)
        request_level = float(requests) if limit.rpm is not None else None
        token_level = float(toks) if limit.tpm is not None else None
        self._used[key] = max(_used(request_level, limit.rpm), _used(token_level, limit.tpm))
        return Admission(
            admitted=bool(int(admitted)), retry_after_s=float(wait),
            limit_requests=limit.rpm, remaining_requests=_remaining(request_level),
            reset_requests_s=_to_full(request_level, limit.rpm),
            limit_tokens=limit.tpm, remaining_tokens=_remaining(token_level),
            reset_tokens_s=_to_full(token_level, limit.tpm),
        )

    async def refund(self, key: str, limit: RateLimit, tokens: int) -> None:
        """Give back one request and `tokens` to the key's shared buckets (this process's while Redis is down)."""
        if not limit:
            return
        try:
            await self.link.eval(
                _REFUND, [self.link.key(f"ratelimit:{key}")], [limit.rpm or 0, limit.tpm or 0, max(tokens, 0)])
        except RedisUnavailable:
            await self.fallback.refund(key, limit, tokens)

    def usage(self, key: str, limit: RateLimit) -> float:
        """The fuller bucket's used share, 0..1, at this replica's last admission (the local one while down)."""
        if not self.link.up:
            return self.fallback.usage(key, limit)
        return self._used.get(key, 0.0)


def _used(level: float | None, capacity: int | None) -> float:
    if level is None or not capacity:
        return 0.0
    return min(max(1.0 - level / capacity, 0.0), 1.0)


def _remaining(level: float | None) -> int | None:
    return None if level is None else max(int(level), 0)


def _to_full(level: float | None, capacity: int | None) -> float:
    if level is None or not capacity:
        return 0.0
    return max(capacity - level, 0.0) * 60.0 / capacity
