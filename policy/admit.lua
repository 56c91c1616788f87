-- Tollgate admission: every scope and every kind of limit checked, then all reserved, in one
-- atomic call. Time is the Redis server's (TIME), never a gateway's. docs/policy.md explains the
-- algorithms and their error bounds; memory_store.cpp implements the same semantics.
-- KEYS[i]   scope prefix, e.g. tollgate:{team}:t or tollgate:{team}:k:<id> (one hash tag per team);
--           KEYS[n+1] the team's set of calls in flight (settle.lua's idempotency anchor)
-- ARGV      lease, tokens, cost_nano, lease_ms, window_ms, nscopes, then per scope:
--           rpm, tpm, concurrency, budget_limit_nano (-1: none), period kind (d|m|t)
-- Returns   {1, now_ms, period_1, ..., period_n}         admitted
--           {0, reason, scope_index, retry_after_ms}      refused; reason: rpm|tpm|concurrency|budget
--           {2, spent_nano, reserved_nano}                with an empty lease: reads the first
--                                                          budget (expiring dead leases), reserves nothing
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = ARGV[1]
local tokens = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local lease_ms = tonumber(ARGV[4])
local window = tonumber(ARGV[5])
local n = tonumber(ARGV[6])
local peek = lease == ''
-- Numbers handed to redis.call become strings through "%.14g" (1e+14 for big amounts): amounts
-- go through int().
local function int(x) return string.format('%d', x) end

-- Rate windows: 30 buckets of window/30 plus the current one. A call counts for between 30 and 31
-- buckets after its admission: never less than the window, so no 60 s span ever holds more than
-- the limit; at most one bucket (2 s) longer. (Few fields keep the hash a small listpack.)
local NB = 30
local bsize = math.max(1, math.floor(window / NB))
local cur = math.floor(now / bsize)
local first = cur - NB

-- Civil date from days since 1970-01-01 (H. Hinnant's algorithm), for calendar periods in UTC.
local function period_id(kind)
  if kind == 't' then return 'all' end
  local days = math.floor(now / 86400000)
  if kind == 'd' then return 'd' .. days end
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

-- Request and token counts of a scope's window, with buckets that aged out dropped.
-- Hash <p>:w: rs, ts (sums), lo (oldest bucket that may hold counts), b<bucket> = "<requests>:<tokens>".
local function counts(packed)
  if not packed then return 0, 0 end
  local r, t = string.match(packed, '^(%d+):(-?%d+)$')
  return tonumber(r), tonumber(t)
end
local function rate_state(p)
  local w = p .. ':w'
  local v = redis.call('HMGET', w, 'rs', 'ts', 'lo', 'b' .. cur)
  local st = {rs = tonumber(v[1] or '0'), ts = tonumber(v[2] or '0'), lo = tonumber(v[3] or cur)}
  st.rc, st.tc = counts(v[4])
  if st.lo < first then
    if first - st.lo > NB then
      redis.call('DEL', w)
      st.rs, st.ts, st.rc, st.tc = 0, 0, 0, 0
    else
      local f = {}
      for b = st.lo, first - 1 do f[#f + 1] = 'b' .. b end
      local old = redis.call('HMGET', w, unpack(f))
      for i = 1, #old do
        local r, t = counts(old[i])
        st.rs = st.rs - r
        st.ts = st.ts - t
      end
      redis.call('HDEL', w, unpack(f))
    end
    st.lo = first
    redis.call('HSET', w, 'rs', int(st.rs), 'ts', int(st.ts), 'lo', int(st.lo))
  end
  return st
end

-- Drops expired leases (members "<lease>:<amount>", scored by expiry); returns the amount freed.
local function expire_leases(z)
  local gone = redis.call('ZRANGEBYSCORE', z, '-inf', now)
  local freed = 0
  if #gone > 0 then
    for _, m in ipairs(gone) do freed = freed + tonumber(string.match(m, ':(%d+)$') or '0') end
    redis.call('ZREMRANGEBYSCORE', z, '-inf', now)
  end
  return freed
end

local rates, budgets, periods = {}, {}, {}
-- Pass 1: check everything.
for i = 1, n do
  local p = KEYS[i]
  local base = 6 + (i - 1) * 5
  local rpm, tpm, conc = tonumber(ARGV[base + 1]), tonumber(ARGV[base + 2]), tonumber(ARGV[base + 3])
  local blimit, pkind = tonumber(ARGV[base + 4]), ARGV[base + 5]
  if rpm > 0 or tpm > 0 then
    local st = rate_state(p)
    rates[i] = st
    local retry = math.max(1, (st.lo + NB + 1) * bsize - now)
    if rpm > 0 and st.rs + 1 > rpm then return {0, 'rpm', i, retry} end
    if tpm > 0 and st.ts + tokens > tpm then return {0, 'tpm', i, retry} end
  end
  if conc > 0 then
    local c = p .. ':conc'
    if redis.call('ZCARD', c) >= conc then
      redis.call('ZREMRANGEBYSCORE', c, '-inf', now)
      if redis.call('ZCARD', c) >= conc then return {0, 'concurrency', i, 1000} end
    end
  end
  periods[i] = ''
  if blimit >= 0 then
    local pid = period_id(pkind)
    periods[i] = pid
    local b = p .. ':b:' .. pid
    local v = redis.call('HMGET', b, 'spent', 'reserved')
    local bs = {spent = tonumber(v[1] or '0'), reserved = tonumber(v[2] or '0'), fresh = not v[1] and not v[2]}
    budgets[i] = bs
    -- Dead leases are swept only when they could matter: when this call would not fit.
    if peek or bs.spent + bs.reserved + cost > blimit then
      local freed = expire_leases(b .. ':l')
      if freed > 0 then
        bs.reserved = bs.reserved - freed
        redis.call('HSET', b, 'reserved', int(bs.reserved))
      end
      if peek then return {2, int(bs.spent), int(bs.reserved)} end
      if bs.spent + bs.reserved + cost > blimit then return {0, 'budget', i, 0} end
    end
  end
end

-- Pass 2: reserve in every scope, and note the call as in flight until it is settled. Calls a
-- dead gateway never settled are forgotten after a day.
local inflight = KEYS[n + 1]
redis.call('ZADD', inflight, now, lease)
redis.call('ZREMRANGEBYSCORE', inflight, '-inf', now - 86400000)
local out = {1, now}
for i = 1, n do
  local p = KEYS[i]
  local base = 6 + (i - 1) * 5
  local conc, pkind = tonumber(ARGV[base + 3]), ARGV[base + 5]
  local st = rates[i]
  if st then
    local w = p .. ':w'
    redis.call('HSET', w, 'rs', int(st.rs + 1), 'ts', int(st.ts + tokens), 'b' .. cur,
               int(st.rc + 1) .. ':' .. int(st.tc + tokens), 'lo', int(st.lo))
    redis.call('PEXPIRE', w, (NB + 1) * bsize + 1000)
  end
  if conc > 0 then
    redis.call('ZADD', p .. ':conc', now + lease_ms, lease)
    redis.call('PEXPIRE', p .. ':conc', lease_ms + 1000)
  end
  local bs = budgets[i]
  if bs then
    local b = p .. ':b:' .. periods[i]
    redis.call('HSET', b, 'reserved', int(bs.reserved + cost))
    redis.call('ZADD', b .. ':l', now + lease_ms, lease .. ':' .. ARGV[3])
    if pkind ~= 't' then
      -- Kept past the period's end for usage reads; the lease set never outlives the hash.
      local keep = (pkind == 'd' and 2 or 40) * 86400000
      redis.call('PEXPIRE', b .. ':l', keep)
      if bs.fresh then redis.call('PEXPIRE', b, keep) end
    end
  end
  out[#out + 1] = periods[i]
end
return out
