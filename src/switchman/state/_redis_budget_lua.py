"""The Lua scripts behind `SharedBudgets` (state/_budgets.py): the check-and-hold, the settles and the rebuild.

Kept apart from the Python that calls them so each side reads on its own: these are the whole of what Redis runs
for a budget, and every one of them touches only the four keys of one budget period (one Cluster slot):

    KEYS[1] the counter hash (`spent`, `reserved`), KEYS[2] the held amounts (hash: reservation id -> amount),
    KEYS[3] their deadlines (zset, Redis time in ms), KEYS[4] the ids settled lately (zset).

Every script reads `spent` once, in `_SPENT_UNKNOWN`, then drops the reservations past their deadline (`_SWEEP_TAIL`)
before doing its own work. A `spent` that is no finite number (another writer) is unknown, not $0; what a script does
with it is its first ARGV for the settle and the rebuild (`_ON_UNKNOWN`), one script each rather than one a case:

    'fail'    reply UNKNOWN (-1): the batched settle; the caller takes the link down and rebuilds from the ledger
    'repair'  drop it (the rebuild right after raises it to the ledger's spend): the rebuild and its replay
    'keep'    fail the script: the same while the ledger cannot be read (the counter stays unknown, never $0)

The reserve always fails on it (its reply {-1, '0', '0'}).
"""

from __future__ import annotations

__all__ = ["FAIL", "KEEP", "REBUILD", "REPAIR", "RESERVE", "SETTLE_MANY", "UNKNOWN"]

#: The settle's and the rebuild's first ARGV: what they do with a spend that is no number (see above).
FAIL, REPAIR, KEEP = "fail", "repair", "keep"

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
_ON_UNKNOWN = """if ARGV[1] == 'repair' then
    redis.call('HDEL', KEYS[1], 'spent')
    spent = 0
  elseif ARGV[1] == 'keep' then
    return redis.error_reply('budget spend in Redis is no number: the ledger is needed to rebuild it')
  else
    return -1
  end"""
#: The reserve's reply to a spend no number (`_SPENT_UNKNOWN`), and the settle's under FAIL.
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

#: ARGV: on unknown (FAIL, REPAIR, KEEP), ttl_s, done_keep_ms, then reservation id, actual cost pairs. Removes each
#: reservation and counts its cost, once per id: one script per budget per flush, whatever the request rate (and
#: for the rebuild's replay of a settle Redis missed). Returns how many ids were settled (not done already). The
#: cost is added with 17 significant digits (a double exactly; Lua's tostring keeps 14). The replay (REPAIR, KEEP)
#: of ids all settled already leaves the keys' TTLs as they were (its TTL is the longest: it would keep a period's
#: keys a month); the batched settle (FAIL) renews them on every flush.
SETTLE_MANY = _SPENT_UNKNOWN % _ON_UNKNOWN + _SWEEP_TAIL + """
local settled, cost = 0, 0
for i = 4, #ARGV, 2 do
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
if cost > 0 then redis.call('HINCRBYFLOAT', KEYS[1], 'spent', string.format('%.17g', cost)) end
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now - tonumber(ARGV[3]))
if settled > 0 or ARGV[1] == 'fail' then expire_all(ARGV[2]) end
return settled
"""

#: ARGV: on unknown (REPAIR, KEEP), the ledger's spend, ttl_s. Raises `spent` to the ledger's; reservations are
#: left as they are.
REBUILD = _SPENT_UNKNOWN % _ON_UNKNOWN + _SWEEP_TAIL + """
if tonumber(ARGV[2]) > spent then redis.call('HSET', KEYS[1], 'spent', ARGV[2]) end
redis.call('HSET', KEYS[1], 'reserved', tostring(reserved))
expire_all(ARGV[3])
return 1
"""
