-- Tollgate admission: every scope and every kind of limit checked, then all reserved, in one
-- atomic call. Time is the Redis server's (TIME), never a gateway's. docs/policy.md explains the
-- algorithms and their error bounds; memory_store.cpp implements the same semantics.
--
-- Keys, all under the team's hash tag:
--   KEYS[i], i <= n  one hash per scope ("<prefix>{team}:t" for the team, ":k:<id>" for a key):
--            rs ts (requests and tokens in the window), lo (oldest bucket that may hold counts),
--            b<bucket> ("<requests>:<tokens>"), c (calls in flight), pid spent res soft (budget
--            period, spent and reserved nano-USD, soft-threshold flag)
--   KEYS[n+1] sorted set of the team's calls in flight, scored by lease expiry; member
--            "<lease>|<scope key suffix>=<counts for concurrency 0|1>=<reserved nano-USD>|..."
--   KEYS[n+2] sorted set of calls whose lease expired before they were settled (kept a day)
-- ARGV      lease, tokens, cost_nano, lease_ms, window_ms, nscopes, then per scope:
--           rpm, tpm, concurrency, budget_limit_nano (-1: none), period kind (d|m|t)
-- Returns   {1, now_ms, period_1, ..., period_n}         admitted
--           {0, reason, scope_index, retry_after_ms}      refused; reason: rpm|tpm|concurrency|budget
--           {2, spent_nano, reserved_nano}                with an empty lease: reads the first
--                                                          scope's budget, reserves nothing
-- Cost model (measured): Lua string building costs more than the Redis commands, so field names
-- are constants and each scope is read and written once.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = ARGV[1]
local tokens = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local lease_ms = tonumber(ARGV[4])
local window = tonumber(ARGV[5])
local n = tonumber(ARGV[6])
local L, X = KEYS[n + 1], KEYS[n + 2]
local base = string.sub(L, 1, -2)  -- "<prefix>{team}:": scope keys are base .. suffix
-- Numbers handed to redis.call become strings through "%.14g": nano-USD amounts go through int().
local function int(x) return string.format('%d', x) end

-- Rate windows: 30 buckets of window/30 plus the current one. A call counts for between 30 and 31
-- buckets after its admission: never less than the window, so no 60 s span ever holds more than
-- the limit; at most one bucket (2 s) longer.
local NB = 30
local bsize = math.max(1, math.floor(window / NB))
local cur = math.floor(now / bsize)
local first = cur - NB
local bcur = 'b' .. cur

local function period_id(kind)
  if kind == 't' then return 'all' end
  local days = math.floor(now / 86400000)
  if kind == 'd' then return 'd' .. days end
  -- Civil date from days since 1970-01-01 (H. Hinnant's algorithm), UTC.
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local y = yoe + era * 400
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local m = mp < 10 and mp + 3 or mp - 9
  if m <= 2 then y = y + 1 end
  return string.format('m%04d%02d', y, m)
end

local function counts(packed)
  if not packed then return 0, 0 end
  local r, tk = string.match(packed, '^(%d+):(-?%d+)$')
  return tonumber(r), tonumber(tk)
end

-- Read each scope once.
local scopes, by_key = {}, {}
for i = 1, n do
  local a = 6 + (i - 1) * 5
  local v = redis.call('HMGET', KEYS[i], 'rs', 'ts', 'lo', bcur, 'c', 'pid', 'spent', 'res')
  local s = {key = KEYS[i], rpm = tonumber(ARGV[a + 1]), tpm = tonumber(ARGV[a + 2]), conc = tonumber(ARGV[a + 3]),
             blimit = tonumber(ARGV[a + 4]), pkind = ARGV[a + 5], rs = tonumber(v[1] or 0), ts = tonumber(v[2] or 0),
             lo = tonumber(v[3] or cur), c = tonumber(v[5] or 0), pid = v[6], spent = tonumber(v[7] or 0),
             res = tonumber(v[8] or 0)}
  s.rc, s.tc = counts(v[4])
  scopes[i] = s
  by_key[KEYS[i]] = s
end

-- Calls whose lease expired (their gateway died, or they outlived the lease) give back what they
-- held, and are remembered for a day so that a late settlement still charges them, once.
local gone = redis.call('ZRANGEBYSCORE', L, '-inf', now)
if #gone > 0 then
  for _, m in ipairs(gone) do
    for suffix, c, amt in string.gmatch(m, '|([^=|]+)=(%d)=(%d+)') do
      local k = base .. suffix
      local s = by_key[k]
      if not s then  -- a scope this call does not touch: read it now, write it below
        local w = redis.call('HMGET', k, 'c', 'res')
        s = {key = k, other = true, c = tonumber(w[1] or 0), res = tonumber(w[2] or 0)}
        by_key[k] = s
      end
      s.c = s.c - tonumber(c)
      s.res = s.res - tonumber(amt)
      s.swept = true
    end
    redis.call('ZADD', X, now, m)
  end
  redis.call('ZREMRANGEBYSCORE', L, '-inf', now)
  redis.call('ZREMRANGEBYSCORE', X, '-inf', now - 86400000)
  for k, s in pairs(by_key) do
    if s.other then redis.call('HSET', k, 'c', s.c, 'res', int(s.res)) end
  end
end

-- Writes what the sweep and the window roll changed, when the call is refused.
local function refuse(why, i, retry)
  for _, s in ipairs(scopes) do
    if s.rolled then redis.call('HSET', s.key, 'rs', s.rs, 'ts', s.ts, 'lo', s.lo) end
    if s.swept then redis.call('HSET', s.key, 'c', s.c, 'res', int(s.res)) end
  end
  return {0, why, i, retry}
end

-- Pass 1: check everything.
local periods = {}
for i, s in ipairs(scopes) do
  if s.rpm > 0 or s.tpm > 0 then
    if s.lo < first then
      -- Buckets that left the window: subtract them (once per bucket).
      local f = {}
      for b = s.lo, math.min(first - 1, s.lo + NB) do f[#f + 1] = 'b' .. b end
      local old = redis.call('HMGET', s.key, unpack(f))
      for k = 1, #old do
        local r, tk = counts(old[k])
        s.rs = s.rs - r
        s.ts = s.ts - tk
      end
      if first - s.lo > NB then s.rs, s.ts = 0, 0 end
      redis.call('HDEL', s.key, unpack(f))
      s.lo, s.rolled = first, true
    end
    local retry = math.max(1, (s.lo + NB + 1) * bsize - now)
    if s.rpm > 0 and s.rs + 1 > s.rpm then return refuse('rpm', i, retry) end
    if s.tpm > 0 and s.ts + tokens > s.tpm then return refuse('tpm', i, retry) end
  end
  if s.conc > 0 and s.c >= s.conc then return refuse('concurrency', i, 1000) end
  periods[i] = ''
  if s.blimit >= 0 then
    local pid = period_id(s.pkind)
    periods[i] = pid
    if not s.pid or s.pid < pid then
      s.spent = 0  -- a new period: reservations in flight carry over, the spend starts again
      s.newperiod = pid
    end
    if lease == '' then
      refuse('peek', i, 0)  -- keeps what the sweep freed
      return {2, int(s.spent), int(s.res)}
    end
    if s.spent + s.res + cost > s.blimit then return refuse('budget', i, 0) end
  end
end

-- Pass 2: reserve in every scope (one write each) and hold the lease.
local member = {lease}
local blen = #base
for _, s in ipairs(scopes) do
  local c = s.conc > 0 and 1 or 0
  local amt = s.blimit >= 0 and cost or 0
  if s.rpm > 0 or s.tpm > 0 then
    if s.blimit >= 0 then
      redis.call('HSET', s.key, 'rs', s.rs + 1, 'ts', s.ts + tokens, 'lo', s.lo, bcur,
                 (s.rc + 1) .. ':' .. (s.tc + tokens), 'c', s.c + c, 'res', int(s.res + amt))
    else
      redis.call('HSET', s.key, 'rs', s.rs + 1, 'ts', s.ts + tokens, 'lo', s.lo, bcur,
                 (s.rc + 1) .. ':' .. (s.tc + tokens), 'c', s.c + c)
    end
  elseif c == 1 or s.blimit >= 0 or s.swept then
    redis.call('HSET', s.key, 'c', s.c + c, 'res', int(s.res + amt))
  end
  if s.newperiod then redis.call('HSET', s.key, 'pid', s.newperiod, 'spent', 0, 'soft', 0) end
  member[#member + 1] = string.sub(s.key, blen + 1) .. '=' .. c .. '=' .. int(amt)
end
redis.call('ZADD', L, now + lease_ms, table.concat(member, '|'))
local out = {1, now}
for i = 1, n do out[#out + 1] = periods[i] end
return out
