"""The Lua scripts behind `SharedBudgets` (state/_budgets.py): the check-and-hold, the settles and the rebuild.

Kept apart from the Python that calls them so each side reads on its own: these are the whole of what Redis runs
for a budget, and every one of them touches only the four keys of one budget period (one Cluster slot):

    KEYS[1] the counter hash (`spent`, `reserved`), KEYS[2] the held amounts (hash: reservation id -> amount),
    KEYS[3] their deadlines (zset, Redis time in ms), KEYS[4] the ids settled lately (zset).

Every script reads `spent` once, in `_SPENT_UNKNOWN` (a `spent` that is no finite number — another writer — is
unknown, not $0: the reserve and the batched settle fail on it, the rebuild and the replayed settle before it drop
it), then drops the reservations past their deadline (`_SWEEP_TAIL`) before doing its own work.
"""

from __future__ import annotations

__all__ = [
    "REBUILD", "REBUILD_KEEPING", "RESERVE", "SETTLE", "SETTLE_KEEPING", "SETTLE_MANY", "UNKNOWN",
]

# Sets `spent` (the one read of it); `%s` is what a script does with a spend that is no finite number.
_SPENT_UNKNOWN = """
local spent = tonumber(redis.call('HGET', KEYS[1], 'spent') or '0')
if spent == nil or spent ~= spent or spent == math.huge or spent == -math.huge then
  %s
end
"""
# Drops reservations past their deadline and sets `reserved` (after that), `now` (Redis time, ms).
_SWEEP_TAIL = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local reserved = tonumber(redis.call('HGET', KEYS[1], 'reserved') or '0')
if reserved == nil or reserved ~= reserved or reserved == math.huge or reserved == -math.huge then
  reserved = 0  -- no number (another writer): what the holds add up to
  for _, held in ipairs(redis.call('HVALS', KEYS[2])) do reserved = reserved + (tonumber(held) or 0) end
end
local gone = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, 256)
for _, id in ipairs(gone) do
  reserved = reserved - (tonumber(redis.call('HGET', KEYS[2], id) or '0') or 0)
  redis.call('HDEL', KEYS[2], id)
  redis.call('ZREM', KEYS[3], id)
end
local function settled_reserved(value)  -- nothing held: exactly 0 (no float dust), never below
  if value < 0 or redis.call('ZCARD', KEYS[3]) == 0 then return 0 end
  return value
end
reserved = settled_reserved(reserved)
local function expire_all(ttl)
  for i = 1, 4 do redis.call('EXPIRE', KEYS[i], ttl) end
end
"""
_REFUSED = "return redis.error_reply('budget spend in Redis is no number: the ledger is needed to rebuild it')"
_SWEEP_REPAIRING = _SPENT_UNKNOWN % "redis.call('HDEL', KEYS[1], 'spent')\n  spent = 0" + _SWEEP_TAIL
#: The reserve's and the batched settle's reply to a spend no number (`_SPENT_UNKNOWN`).
UNKNOWN = -1

#: ARGV: limit, amount (negative: give back), ttl_s, check (1) or not (0), reservation id, hold_ms.
#: Adds `amount` to the reservation when spent + reserved + amount fits the limit; returns {ok, spent, reserved}.
RESERVE = _SPENT_UNKNOWN % "return {-1, '0', '0'}" + _SWEEP_TAIL + """
local amount, id = tonumber(ARGV[2]), ARGV[5]
if redis.call('ZSCORE', KEYS[4], id) then  -- settled already (a late call): hold nothing
  return {1, tostring(spent), tostring(reserved)}
end
if ARGV[4] == '1' and amount > 0 and spent + reserved + amount > tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], 'reserved', tostring(reserved))
  return {0, tostring(spent), tostring(reserved)}
end
local held = tonumber(redis.call('HGET', KEYS[2], id) or '0')
local now_held = held + amount
if now_held <= 0 then
  redis.call('HDEL', KEYS[2], id)
  redis.call('ZREM', KEYS[3], id)
  now_held = 0
else
  redis.call('HSET', KEYS[2], id, tostring(now_held))
  redis.call('ZADD', KEYS[3], now + tonumber(ARGV[6]), id)
end
reserved = settled_reserved(reserved + now_held - held)
redis.call('HSET', KEYS[1], 'reserved', tostring(reserved))
expire_all(ARGV[3])
return {1, tostring(spent), tostring(reserved)}
"""

# ARGV: reservation id, actual cost, ttl_s, done_keep_ms. Removes the reservation and counts the cost, once per id.
# (Used by the rebuild's replay only, right before the rebuild: it drops a `spent` no number, see `_SPENT_UNKNOWN`.)
_SETTLE_BODY = """
local id = ARGV[1]
if redis.call('ZSCORE', KEYS[4], id) then
  redis.call('HSET', KEYS[1], 'reserved', tostring(reserved))
  return 0
end
local held = tonumber(redis.call('HGET', KEYS[2], id) or '0')
redis.call('HDEL', KEYS[2], id)
redis.call('ZREM', KEYS[3], id)
reserved = settled_reserved(reserved - held)
redis.call('HSET', KEYS[1], 'reserved', tostring(reserved))
if tonumber(ARGV[2]) > 0 then redis.call('HINCRBYFLOAT', KEYS[1], 'spent', ARGV[2]) end
redis.call('ZADD', KEYS[4], now, id)
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now - tonumber(ARGV[4]))
expire_all(ARGV[3])
return 1
"""

#: ARGV: ttl_s, done_keep_ms, then reservation id, actual cost pairs. `SETTLE` for a batch of reservations: one
#: script per budget per flush, whatever the request rate. Returns how many ids were settled (not done already).
SETTLE_MANY = _SPENT_UNKNOWN % "return -1" + _SWEEP_TAIL + """
local settled, cost = 0, 0
for i = 3, #ARGV, 2 do
  local id = ARGV[i]
  if not redis.call('ZSCORE', KEYS[4], id) then
    reserved = reserved - (tonumber(redis.call('HGET', KEYS[2], id) or '0') or 0)
    redis.call('HDEL', KEYS[2], id)
    redis.call('ZREM', KEYS[3], id)
    redis.call('ZADD', KEYS[4], now, id)
    cost = cost + math.max(tonumber(ARGV[i + 1]), 0)
    settled = settled + 1
  end
end
reserved = settled_reserved(reserved)
redis.call('HSET', KEYS[1], 'reserved', tostring(reserved))
if cost > 0 then redis.call('HINCRBYFLOAT', KEYS[1], 'spent', tostring(cost)) end
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now - tonumber(ARGV[2]))
expire_all(ARGV[1])
return settled
"""

# ARGV: the ledger's spend, ttl_s. Raises `spent` to the ledger's; reservations are left as they are.
_REBUILD_BODY = """
if tonumber(ARGV[1]) > spent then redis.call('HSET', KEYS[1], 'spent', ARGV[1]) end
redis.call('HSET', KEYS[1], 'reserved', tostring(reserved))
expire_all(ARGV[2])
return 1
"""
SETTLE = _SWEEP_REPAIRING + _SETTLE_BODY
REBUILD = _SWEEP_REPAIRING + _REBUILD_BODY
# The same while the ledger cannot be read: a spend no number fails them (its counter stays unknown, not $0).
SETTLE_KEEPING = _SPENT_UNKNOWN % _REFUSED + _SWEEP_TAIL + _SETTLE_BODY
REBUILD_KEEPING = _SPENT_UNKNOWN % _REFUSED + _SWEEP_TAIL + _REBUILD_BODY
