-- Tollgate admission: every scope and every kind of limit checked, then all reserved, in one
-- atomic call. Time is the Redis server's (TIME), never a gateway's.
-- KEYS[i]   scope prefix, e.g. tollgate:{team}:t or tollgate:{team}:k:<id> (one hash tag per team)
-- ARGV      lease, tokens, cost_nano, lease_ms, window_ms, nscopes, then per scope:
--           rpm, tpm, concurrency, budget_limit_nano (-1: none), period kind (d|m|t)
-- Returns   {1, period_1, ..., period_n}                 admitted
--           {2, spent_nano, reserved_nano}                with an empty lease: reads the first
--                                                          budget (expiring dead leases) and reserves nothing
--           {0, reason, scope_index, retry_after_ms}      refused; reason: rpm|tpm|concurrency|budget
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = ARGV[1]
local tokens = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local lease_ms = tonumber(ARGV[4])
local window = tonumber(ARGV[5])
local n = tonumber(ARGV[6])
-- Numbers handed to redis.call become strings through "%.14g" (1e+14 for big amounts): amounts
-- go as the caller's strings, or through int().
local function int(x) return string.format('%d', x) end

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

-- Drops leases of a zset whose score (expiry) has passed, subtracting their amounts from a sum.
local function expire_leases(zkey, amounts, sumkey, sumfield, before)
  local gone = redis.call('ZRANGEBYSCORE', zkey, '-inf', before)
  if #gone == 0 then return end
  local total = 0
  for _, m in ipairs(gone) do
    local a = redis.call('HGET', amounts, m)
    if a then total = total + tonumber(a) end
  end
  redis.call('HDEL', amounts, unpack(gone))
  redis.call('ZREMRANGEBYSCORE', zkey, '-inf', before)
  if sumfield then redis.call('HINCRBY', sumkey, sumfield, int(-total)) else redis.call('DECRBY', sumkey, int(total)) end
end

local periods = {}
-- Pass 1: check everything (and expire what has aged out).
for i = 1, n do
  local p = KEYS[i]
  local base = 6 + (i - 1) * 5
  local rpm, tpm, conc = tonumber(ARGV[base + 1]), tonumber(ARGV[base + 2]), tonumber(ARGV[base + 3])
  local blimit, pkind = tonumber(ARGV[base + 4]), ARGV[base + 5]
  if rpm > 0 then
    redis.call('ZREMRANGEBYSCORE', p .. ':rpm', '-inf', now - window)
    if redis.call('ZCARD', p .. ':rpm') >= rpm then
      local oldest = redis.call('ZRANGE', p .. ':rpm', 0, 0, 'WITHSCORES')
      return {0, 'rpm', i, math.max(1, tonumber(oldest[2]) + window - now)}
    end
  end
  if tpm > 0 then
    expire_leases(p .. ':tpm', p .. ':tpmv', p .. ':tpms', nil, now - window)
    local used = tonumber(redis.call('GET', p .. ':tpms') or '0')
    if used + tokens > tpm then
      local oldest = redis.call('ZRANGE', p .. ':tpm', 0, 0, 'WITHSCORES')
      local retry = window
      if #oldest > 0 then retry = math.max(1, tonumber(oldest[2]) + window - now) end
      return {0, 'tpm', i, retry}
    end
  end
  if conc > 0 then
    redis.call('ZREMRANGEBYSCORE', p .. ':conc', '-inf', now)
    if redis.call('ZCARD', p .. ':conc') >= conc then return {0, 'concurrency', i, 1000} end
  end
  if blimit >= 0 then
    local pid = period_id(pkind)
    periods[i] = pid
    local b = p .. ':b:' .. pid
    expire_leases(b .. ':l', b .. ':a', b, 'reserved', now)
    local spent = tonumber(redis.call('HGET', b, 'spent') or '0')
    local reserved = tonumber(redis.call('HGET', b, 'reserved') or '0')
    if lease == '' then return {2, int(spent), int(reserved)} end
    if spent + reserved + cost > blimit then return {0, 'budget', i, 0} end
  else
    periods[i] = ''
  end
end

-- Pass 2: reserve in every scope.
local out = {1}
for i = 1, n do
  local p = KEYS[i]
  local base = 6 + (i - 1) * 5
  local rpm, tpm, conc = tonumber(ARGV[base + 1]), tonumber(ARGV[base + 2]), tonumber(ARGV[base + 3])
  local blimit, pkind = tonumber(ARGV[base + 4]), ARGV[base + 5]
  if rpm > 0 then
    redis.call('ZADD', p .. ':rpm', now, lease)
    redis.call('PEXPIRE', p .. ':rpm', window + 1000)
  end
  if tpm > 0 then
    redis.call('ZADD', p .. ':tpm', now, lease)
    redis.call('HSET', p .. ':tpmv', lease, ARGV[2])
    redis.call('INCRBY', p .. ':tpms', ARGV[2])
    for _, k in ipairs({':tpm', ':tpmv', ':tpms'}) do redis.call('PEXPIRE', p .. k, window + 1000) end
  end
  if conc > 0 then
    redis.call('ZADD', p .. ':conc', now + lease_ms, lease)
    redis.call('PEXPIRE', p .. ':conc', lease_ms + 1000)
  end
  if blimit >= 0 then
    local b = p .. ':b:' .. periods[i]
    redis.call('ZADD', b .. ':l', now + lease_ms, lease)
    redis.call('HSET', b .. ':a', lease, ARGV[3])
    redis.call('HINCRBY', b, 'reserved', ARGV[3])
    if pkind ~= 't' then
      local keep = (pkind == 'd' and 2 or 40) * 86400000
      for _, k in ipairs({'', ':l', ':a'}) do redis.call('PEXPIRE', b .. k, keep) end
    end
  end
  out[#out + 1] = periods[i]
end
return out
