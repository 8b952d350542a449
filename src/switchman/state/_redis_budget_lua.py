"""The Lua scripts behind `SharedBudgets` (state/_budgets.py): the check-and-hold, the settles and the rebuild.

Kept apart from the Python that calls them so each side reads on its own: these are the whole of what Redis runs
for a budget. A budget period has four keys (one Cluster slot), the settle and the rebuild touch one budget's, the
reserve those of every budget a request is under (4 keys a budget, in order; on a Cluster, those of one slot):

    KEYS[b+1] the counter hash (`spent`, `reserved`), KEYS[b+2] the held amounts (hash: reservation id -> amount),
    KEYS[b+3] their deadlines (zset, Redis time in ms), KEYS[b+4] the ids settled lately (zset); b = 4 * (i - 1).

Every script reads each `spent` once (`spent_of`), then drops the reservations past their deadline (`swept`; the
reserve reads every budget's first, `sweep_of`, and writes only once nothing it reads can fail) before doing its
own work. A `spent` that is no finite number (another writer) is unknown, not $0; what a script does with it is its
first ARGV for the settle and the rebuild (`_ON_UNKNOWN`), one script each rather than one a case:

    'fail'    reply UNKNOWN (-1): the batched settle; the caller takes the link down and rebuilds from the ledger
    'repair'  drop it (the rebuild right after raises it to the ledger's spend): the rebuild and its replay
    'keep'    fail the script: the same while the ledger cannot be read (the counter stays unknown, never $0)

The reserve always fails on it (its reply {-1, i, '0', '0'}: budget i's spend is unknown, nothing held).
"""

from __future__ import annotations

__all__ = ["FAIL", "KEEP", "REBUILD", "REPAIR", "RESERVE", "SETTLE_MANY", "UNKNOWN"]

#: The settle's and the rebuild's first ARGV: what they do with a spend that is no number (see above).
FAIL, REPAIR, KEEP = "fail", "repair", "keep"

# Functions over the budget whose keys start after KEYS[b]: its spend (nil: no finite number), its reservations
# past their deadline dropped (what the rest hold), the keys' TTL; `now` is Redis time, in ms.
_FUNCTIONS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function finite(x)
  return x ~= nil and x == x and x ~= math.huge and x ~= -math.huge
end
local function num(x)  -- a double as text exactly (tostring keeps 14 digits): the shortest of 15..17 digits
  for digits = 15, 16 do
    local s = string.format('%.' .. digits .. 'g', x)
    if tonumber(s) == x then return s end
  end
  return string.format('%.17g', x)
end
local function spent_of(b)
  local spent = tonumber(redis.call('HGET', KEYS[b + 1], 'spent') or '0')
  if finite(spent) then return spent end
  return nil
end
local function settled_reserved(b, value, leaving)  -- nothing held: exactly 0 (no float dust), never below
  if value < 0 or redis.call('ZCARD', KEYS[b + 3]) <= (leaving or 0) then return 0 end
  return value
end
local function sweep_of(b)  -- reads only: what the counter holds once the reservations past their deadline
  local stored = tonumber(redis.call('HGET', KEYS[b + 1], 'reserved') or '0')  -- (and what it held before)
  local reserved = stored
  if not finite(reserved) then
    reserved = 0  -- no number (another writer): what the holds add up to
    for _, held in ipairs(redis.call('HVALS', KEYS[b + 2])) do reserved = reserved + (tonumber(held) or 0) end
  end
  local gone = redis.call('ZRANGEBYSCORE', KEYS[b + 3], '-inf', now, 'LIMIT', 0, 256)
  for _, id in ipairs(gone) do
    reserved = reserved - (tonumber(redis.call('HGET', KEYS[b + 2], id) or '0') or 0)
  end
  return settled_reserved(b, reserved, #gone), stored, gone
end
local function drop(b, gone)  -- the reservations `sweep_of` found past their deadline
  for _, id in ipairs(gone) do
    redis.call('HDEL', KEYS[b + 2], id)
    redis.call('ZREM', KEYS[b + 3], id)
  end
end
local function swept(b)  -- also what the counter held before (a refusal writes `reserved` only when it moved)
  local reserved, stored, gone = sweep_of(b)
  drop(b, gone)
  return reserved, stored
end
local function expire_all(b, ttl)
  for i = 1, 4 do redis.call('EXPIRE', KEYS[b + i], ttl) end
end
"""
# The settle's and the rebuild's start (after _FUNCTIONS): one budget's `spent` and `reserved`, `%s` what a spend no number calls for.
_ONE_BUDGET = """
local spent = spent_of(0)
if spent == nil then
  %s
end
local reserved = swept(0)
"""
_ON_UNKNOWN = """if ARGV[1] == 'repair' then
    redis.call('HDEL', KEYS[1], 'spent')
    spent = 0
  elseif ARGV[1] == 'keep' then
    return redis.error_reply('budget spend in Redis is no number: the ledger is needed to rebuild it')
  else
    return -1
  end"""
#: The reserve's first reply to a spend no number, and the settle's under FAIL.
UNKNOWN = -1

#: KEYS: 4 a budget; ARGV: amount (negative: give back), reservation id, hold_ms, hold (1) or check only (0: a
#: Cluster's later slots after a refusal), then per budget: limit, ttl_s, check: 0 (not checked), 1 (refuses), 2
#: (downgrades). Adds `amount` to the reservation in every budget when spent + reserved + amount fits each limit
#: checked, else in none. Returns {1, 0, '0', '0'}, or {0, i, spent, reserved} of the budget i that decides a
#: refusal: as the local check (`BudgetManager.reserve`), the first over its limit that downgrades, else the first
#: over its limit; after a refusal only the downgrade budgets are read on ({-1, i, '0', '0'}: budget i's spend is
#: unknown, nothing written). A
#: give-back is never refused; a budget the id was settled in already (a late call) holds nothing and refuses
#: nothing. A budget whose counter an earlier one has already (two budgets of one scope, name and period) is checked
#: against its own limit, on that counter, but holds once. Everything that reads (and so can fail on a key another
#: writer made of another type) runs before the first write: a failing script has written nothing.
RESERVE = _FUNCTIONS + """
local amount, id, hold_ms, hold = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3]), ARGV[4] == '1'
if not finite(amount) then return {0, 1, '0', '0'} end  -- held, a NaN would disable the budget: refused
local n = #KEYS / 4
local first, spent, reserved, stored, gone, done, held = {}, {}, {}, {}, {}, {}, {}
local index = {}
for i = 1, n do
  local b = 4 * (i - 1)
  first[i] = index[KEYS[b + 1]] or i
  index[KEYS[b + 1]] = first[i]
  if first[i] == i then
    spent[i] = spent_of(b)
    if spent[i] == nil then return {-1, i, '0', '0'} end
  end
end
local function read(i)  -- budget i's reservations (swept, not yet written) and whether the id was settled there
  local b = 4 * (i - 1)
  reserved[i], stored[i], gone[i] = sweep_of(b)
  done[i] = redis.call('ZSCORE', KEYS[b + 4], id)
end
local refused, downgrade = 0, 0
for i = 1, n do  -- after a refusal only a downgrade budget can change the answer; after one, none
  local f, check = first[i], ARGV[3 * i + 4]
  if downgrade > 0 then break end
  if refused == 0 or check == '2' then
    if reserved[f] == nil then read(f) end
    if not done[f] and check ~= '0' and amount >= 0
        and spent[f] + reserved[f] + amount > tonumber(ARGV[3 * i + 2]) then
      if refused == 0 then refused = i end
      if check == '2' then downgrade = i end
    end
  end
end
if refused > 0 or not hold then
  if downgrade > 0 then refused = downgrade end
  for i = 1, n do  -- what the sweep dropped (no key made, none kept longer)
    if reserved[i] ~= nil then
      drop(4 * (i - 1), gone[i])
      if reserved[i] ~= stored[i] then redis.call('HSET', KEYS[4 * i - 3], 'reserved', num(reserved[i])) end
    end
  end
  if refused == 0 then return {1, 0, '0', '0'} end
  return {0, refused, num(spent[first[refused]]), num(reserved[first[refused]])}
end
for i = 1, n do  -- still reads only: every held amount (each budget was read above)
  if first[i] == i and not done[i] then
    held[i] = tonumber(redis.call('HGET', KEYS[4 * i - 2], id) or '0')
    for _, past in ipairs(gone[i]) do
      if past == id then held[i] = 0 end  -- its own reservation past its deadline: dropped with the rest
    end
  end
end
for i = 1, n do
  local b = 4 * (i - 1)
  if first[i] == i then
    drop(b, gone[i])
    if not done[i] then
      local now_held = held[i] + amount
      if now_held <= 0 then
        redis.call('HDEL', KEYS[b + 2], id)
        redis.call('ZREM', KEYS[b + 3], id)
        now_held = 0
      else
        redis.call('HSET', KEYS[b + 2], id, num(now_held))
        redis.call('ZADD', KEYS[b + 3], now + hold_ms, id)
      end
      reserved[i] = settled_reserved(b, reserved[i] + now_held - held[i])
    end
    redis.call('HSET', KEYS[b + 1], 'reserved', num(reserved[i]))
    expire_all(b, ARGV[3 * i + 3])
  end
end
return {1, 0, '0', '0'}
"""

#: ARGV: on unknown (FAIL, REPAIR, KEEP), ttl_s, done_keep_ms, then reservation id, actual cost pairs. Removes each
#: reservation and counts its cost, once per id: one script per budget per flush, whatever the request rate (and
#: for the rebuild's replay of a settle Redis missed). Returns how many ids were settled (not done already). The
#: cost is added with 17 significant digits (a double exactly; Lua's tostring keeps 14). The replay (REPAIR, KEEP)
#: of ids all settled already leaves the keys' TTLs as they were (its TTL is the longest: it would keep a period's
#: keys a month); the batched settle (FAIL) renews them on every flush.
SETTLE_MANY = _FUNCTIONS + _ONE_BUDGET % _ON_UNKNOWN + """
local settled, cost = 0, 0
for i = 4, #ARGV, 2 do
  local id = ARGV[i]
  if not redis.call('ZSCORE', KEYS[4], id) then
    reserved = reserved - (tonumber(redis.call('HGET', KEYS[2], id) or '0') or 0)
    redis.call('HDEL', KEYS[2], id)
    redis.call('ZREM', KEYS[3], id)
    redis.call('ZADD', KEYS[4], now, id)
    local actual = tonumber(ARGV[i + 1])
    if finite(actual) and actual > 0 then cost = cost + actual end  -- a NaN would lose the batch's other costs
    settled = settled + 1
  end
end
reserved = settled_reserved(0, reserved)
redis.call('HSET', KEYS[1], 'reserved', num(reserved))
if cost > 0 then redis.call('HINCRBYFLOAT', KEYS[1], 'spent', string.format('%.17g', cost)) end
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now - tonumber(ARGV[3]))
if settled > 0 or ARGV[1] == 'fail' then expire_all(0, ARGV[2]) end
return settled
"""

#: ARGV: on unknown (REPAIR, KEEP), the ledger's spend, ttl_s. Raises `spent` to the ledger's; reservations are
#: left as they are.
REBUILD = _FUNCTIONS + _ONE_BUDGET % _ON_UNKNOWN + """
if tonumber(ARGV[2]) > spent then redis.call('HSET', KEYS[1], 'spent', ARGV[2]) end
redis.call('HSET', KEYS[1], 'reserved', num(reserved))
expire_all(0, ARGV[3])
return 1
"""
