"""The Lua scripts of the Redis budget backend: one round trip each, atomic over a chain.

Key layout (``T`` = ``{<prefix>:<root account>}``, a Redis Cluster hash tag, so every key of
one chain, and of every chain under the same root, hashes to one slot):

- ``T:res`` hash: request id -> ``"<amount>:<expiry_us>:<name>:<name>..."`` (open holds;
  names cannot contain ``:``, amounts stay exact strings: cjson would round them)
- ``T:held:<name>`` int: micro-dollars held on the account by open reservations
- ``T:holds:<name>`` zset: request id scored by its expiry (us) -- what ``reserve``
  reclaims from, so a crashed instance's holds vanish without any sweeper
- ``T:spent:<name>:<window id>`` int: committed spend of a calendar window (``total`` for
  lifetime accounts), expiring some time after the window ends
- ``T:roll:<name>`` hash: rolling-window bucket -> spend
- ``T:exp`` / ``T:done`` zsets: request ids whose hold expired / that were settled, scored by
  time and trimmed after a while, so a late settle is still charged and a replayed settle is
  charged only once
- ``T:log`` stream: one entry per settlement, the write-through log totals can be rebuilt from
- ``T:rate:<name>:rpm|tpm`` int: GCRA theoretical arrival time (us)

Every script takes the clock as ``now`` (microseconds) or, when empty, reads Redis ``TIME``:
one clock for every instance. Holds outstanding at a calendar rollover stay in ``held`` and
count against the new window, then are charged to the window they settle in (as in the Rust
ledger). KEYS carry every key of the chain's accounts; keys of *other* reservations
reclaimed on the way are derived from the same tag (same slot, so Cluster accepts them).
"""

from __future__ import annotations

_CLOCK = r"""
local function clock(arg)
  if arg ~= '' then return tonumber(arg) end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
"""

# GCRA over `m` limiters: KEYS[k0 + i] is limiter i's theoretical arrival time (us), its
# ARGV (3 from a0 + (i-1)*3 + 1): interval_us, period_us, cost. All or none: every limiter
# is checked before any is consumed. Returns nil (consumed) or {0, i, retry_after_us}
# (-1: the cost can never pass).
_GCRA = r"""
local function gcra(k0, a0, m, now)
  local nexts = {}
  for i = 1, m do
    local p = a0 + (i - 1) * 3
    local interval, period = tonumber(ARGV[p + 1]), tonumber(ARGV[p + 2])
    local added = tonumber(ARGV[p + 3]) * interval
    if added > period then return {0, i, -1} end
    local tat = tonumber(redis.call('GET', KEYS[k0 + i]) or '0') or 0
    local nxt = math.max(tat, now) + added
    if nxt - now > period then return {0, i, nxt - now - period} end
    nexts[i] = nxt
  end
  for i, nxt in pairs(nexts) do
    local ttl_ms = math.ceil((nxt - now) / 1000) + 1
    redis.call('SET', KEYS[k0 + i], string.format('%d', nxt), 'PX', ttl_ms)
  end
  return nil
end
"""

_PRELUDE = (
    _CLOCK
    + r"""
local base = ARGV[1]
local function num(v) return tonumber(v or '0') or 0 end
-- Give back a reservation's hold on every account it covers, and forget it.
local function drop(rid, rec)
  local amount = string.match(rec, '^([^:]+)')
  local i = 0  -- fields: amount, expiry, then the account names
  for name in string.gmatch(rec, '[^:]+') do
    i = i + 1
    if i > 2 then
      redis.call('DECRBY', base .. 'held:' .. name, amount)
      redis.call('ZREM', base .. 'holds:' .. name, rid)
    end
  end
  redis.call('HDEL', KEYS[1], rid)
  return amount
end
-- Reclaim up to `limit` expired holds listed on one account.
local function reclaim(holds_key, now, limit)
  local rids = redis.call('ZRANGEBYSCORE', holds_key, '-inf', now, 'LIMIT', 0, limit)
  for _, rid in ipairs(rids) do
    local rec = redis.call('HGET', KEYS[1], rid)
    if rec then
      drop(rid, rec)
      redis.call('ZADD', KEYS[2], now, rid)
    else
      redis.call('ZREM', holds_key, rid)
    end
  end
end
-- Committed spend of one account's current window (rolling: drop dead buckets).
local function spent(kind, key, now, width, span)
  if kind ~= 'r' then return num(redis.call('GET', key)) end
  local cur = math.floor(now / width)
  local flat = redis.call('HGETALL', key)
  local sum = 0
  for i = 1, #flat, 2 do
    if cur - tonumber(flat[i]) > span then
      redis.call('HDEL', key, flat[i])
    else
      sum = sum + tonumber(flat[i + 1])
    end
  end
  return sum
end
"""
)

# KEYS: res, exp, done, log, then per account: held, holds, spend.
# ARGV: base, rid, amount, ttl_us, now_us|'', n, reclaim_batch, tombstone_us,
#       then per account (6): name, limit|'', soft|'', kind (c|r), width_us, span.
# Returns {1, soft_mask, expiry_us} | {2, 0, expiry_us} (already held) | {0, i, spent, held}.
_RESERVE_FN = r"""
local function reserve(now)
local rid, amount = ARGV[2], tonumber(ARGV[3])
local n, batch, tomb = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local existing = redis.call('HGET', KEYS[1], rid)
if existing then
  return {2, 0, tonumber(string.match(existing, '^[^:]+:([^:]+)'))}
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - tomb)
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - tomb)
local soft = 0
for i = 1, n do
  local a, k = 8 + (i - 1) * 6, 4 + (i - 1) * 3
  reclaim(KEYS[k + 2], now, batch)
  local used = spent(ARGV[a + 4], KEYS[k + 3], now, tonumber(ARGV[a + 5]), tonumber(ARGV[a + 6]))
  local held = num(redis.call('GET', KEYS[k + 1]))
  if ARGV[a + 2] ~= '' and used + held + amount > tonumber(ARGV[a + 2]) then
    return {0, i, used, held}
  end
  if ARGV[a + 3] ~= '' and used + held + amount >= tonumber(ARGV[a + 3]) then
    soft = soft + 2 ^ (i - 1)
  end
end
local expiry = now + tonumber(ARGV[4])
local names = {}
for i = 1, n do
  local k = 4 + (i - 1) * 3
  redis.call('INCRBY', KEYS[k + 1], ARGV[3])
  redis.call('ZADD', KEYS[k + 2], expiry, rid)
  names[i] = ARGV[8 + (i - 1) * 6 + 1]
end
local stamp = string.format('%d', expiry)
redis.call('HSET', KEYS[1], rid, ARGV[3] .. ':' .. stamp .. ':' .. table.concat(names, ':'))
return {1, soft, expiry}
end
"""

RESERVE = _PRELUDE + _RESERVE_FN + "\nreturn reserve(clock(ARGV[5]))\n"

# RESERVE preceded by the RPM/TPM check of the same chain, in one round trip: KEYS and ARGV
# as RESERVE, then ARGV m (the number of limiters) and 3 per limiter (see _GCRA), KEYS one
# per limiter. The limiters are consumed first, as a separate ``check_rate`` would (a
# request the budget then refuses still counted against the rate); a replayed request id
# whose hold is open consumes nothing. Returns RESERVE's replies, or {3, i, retry_after_us}
# when limiter i refused (nothing consumed, nothing held).
ADMIT = (
    _PRELUDE
    + _GCRA
    + _RESERVE_FN
    + r"""
local now = clock(ARGV[5])
if redis.call('HEXISTS', KEYS[1], ARGV[2]) == 0 then
  local n = tonumber(ARGV[6])
  local a0 = 8 + n * 6
  local refused = gcra(4 + 3 * n, a0 + 1, tonumber(ARGV[a0 + 1]), now)
  if refused then return {3, refused[2], refused[3]} end
end
return reserve(now)
"""
)

# KEYS: as RESERVE. ARGV: base, rid, actual, now_us|'', n, tombstone_us (unused), log_maxlen,
#       then per account (4): name, kind (c|r), width_us, expire (calendar: unix ms | '';
#       rolling: ms to keep the bucket hash).
# Returns {status, held}: 1 settled, 2 late (the hold had expired), 3 unknown to the store
# (admitted unbacked, or the store lost it) -- all three charged -- or {0, 0}: a replay of a
# settlement already recorded, charged nothing.
SETTLE = (
    _PRELUDE
    + r"""
local rid, actual = ARGV[2], ARGV[3]
local now = clock(ARGV[4])
local n = tonumber(ARGV[5])
local status, held = 1, '0'
local rec = redis.call('HGET', KEYS[1], rid)
if rec then
  held = drop(rid, rec)
elseif redis.call('ZSCORE', KEYS[3], rid) then
  return {0, 0}
elseif redis.call('ZSCORE', KEYS[2], rid) then
  redis.call('ZREM', KEYS[2], rid)
  status = 2
else
  status = 3
end
redis.call('ZADD', KEYS[3], now, rid)
local charged = {}
if tonumber(actual) > 0 then
  for i = 1, n do
    local p, k = 7 + (i - 1) * 4, 4 + (i - 1) * 3
    if ARGV[p + 2] == 'r' then
      local bucket = string.format('%d', math.floor(now / tonumber(ARGV[p + 3])))
      redis.call('HINCRBY', KEYS[k + 3], bucket, actual)
      redis.call('PEXPIRE', KEYS[k + 3], ARGV[p + 4])
      charged[i] = KEYS[k + 3] .. '@' .. bucket
    else
      redis.call('INCRBY', KEYS[k + 3], actual)
      if ARGV[p + 4] ~= '' then redis.call('PEXPIREAT', KEYS[k + 3], ARGV[p + 4]) end
      charged[i] = KEYS[k + 3]
    end
  end
end
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[7], '*', 'rid', rid, 'actual', actual,
  'held', held, 'status', status, 'at', string.format('%d', now),
  'charged', table.concat(charged, ' '))
return {status, tonumber(held)}
"""
)

# KEYS: res (others unused). ARGV: base, rid. Returns 1 if a hold was given back.
RELEASE = (
    _PRELUDE
    + r"""
local rec = redis.call('HGET', KEYS[1], ARGV[2])
if rec then
  drop(ARGV[2], rec)
  return 1
end
return 0
"""
)

# KEYS: res, exp, held, holds, spend. ARGV: base, now_us|'', batch, kind, width_us, span.
# Returns {spent, held} after reclaiming the account's expired holds.
READ = (
    _PRELUDE
    + r"""
local now = clock(ARGV[2])
reclaim(KEYS[4], now, tonumber(ARGV[3]))
return {spent(ARGV[4], KEYS[5], now, tonumber(ARGV[5]), tonumber(ARGV[6])),
        num(redis.call('GET', KEYS[3]))}
"""
)

# KEYS: one GCRA key per limiter. ARGV: now_us|'', then per limiter (3): interval_us,
# period_us, cost (see _GCRA). Returns {1} | {0, i, retry_after_us}.
RATE = (
    _CLOCK
    + _GCRA
    + r"""
local refused = gcra(0, 1, #KEYS, clock(ARGV[1]))
if refused then return refused end
return {1}
"""
)
