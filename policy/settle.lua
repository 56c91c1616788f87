-- Tollgate settlement: releases a call's reservations and charges its actual usage, once.
-- KEYS[1..n] scope prefixes as for admit.lua; KEYS[n+1] the team's set of calls in flight
-- ARGV       lease, tokens_actual, cost_nano_actual, nscopes, admitted_at_ms, tokens_reserved,
--            cost_nano_reserved, window_ms, then per scope:
--            rate (0|1), concurrency (0|1), period ('' : no budget), soft_threshold_nano (0: none)
-- Returns    {applied (0|1), then per scope: spent_nano after, soft_crossed (0|1)}
local lease = ARGV[1]
local tokens = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local n = tonumber(ARGV[4])
local admitted_at = tonumber(ARGV[5])
local tokens_reserved = tonumber(ARGV[6])
local cost_reserved = ARGV[7]
local window = tonumber(ARGV[8])
local function int(x) return string.format('%d', x) end
-- A settlement applied twice charges once: only the first finds its call still in flight. (No
-- per-call marker that would outlive the call: memory stays bounded by the calls in flight.)
if redis.call('ZREM', KEYS[n + 1], lease) == 0 then return {0} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local NB = 30  -- as in admit.lua
local bsize = math.max(1, math.floor(window / NB))
local first = math.floor(now / bsize) - NB
local bucket = math.floor(admitted_at / bsize)
local out = {1}
for i = 1, n do
  local p = KEYS[i]
  local base = 8 + (i - 1) * 4
  local rate, conc, pid, soft = ARGV[base + 1] == '1', ARGV[base + 2] == '1', ARGV[base + 3], tonumber(ARGV[base + 4])
  if conc then redis.call('ZREM', p .. ':conc', lease) end
  -- Correct the token reservation to the usage, if its bucket is still in the window.
  if rate and bucket >= first and tokens ~= tokens_reserved then
    local w = p .. ':w'
    local v = redis.call('HMGET', w, 'b' .. bucket, 'ts')
    if v[1] then
      local r, tk = string.match(v[1], '^(%d+):(-?%d+)$')
      local delta = tokens - tokens_reserved
      redis.call('HSET', w, 'b' .. bucket, r .. ':' .. int(tonumber(tk) + delta), 'ts', int(tonumber(v[2] or '0') + delta))
    end
  end
  local spent, crossed = 0, 0
  if pid ~= '' then
    local b = p .. ':b:' .. pid
    local held = redis.call('ZREM', b .. ':l', lease .. ':' .. cost_reserved)
    local v = redis.call('HMGET', b, 'spent', 'reserved', 'soft_sent')
    spent = tonumber(v[1] or '0') + cost
    local reserved = tonumber(v[2] or '0')
    if held == 1 then reserved = reserved - tonumber(cost_reserved) end
    redis.call('HSET', b, 'spent', int(spent), 'reserved', int(reserved))
    if not v[1] and not v[2] and pid ~= 'all' then
      redis.call('PEXPIRE', b, (string.sub(pid, 1, 1) == 'd' and 2 or 40) * 86400000)
    end
    if soft > 0 and spent >= soft and not v[3] then
      redis.call('HSET', b, 'soft_sent', '1')
      crossed = 1
    end
  end
  out[#out + 1] = int(spent)
  out[#out + 1] = crossed
end
return out
