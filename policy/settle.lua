-- Tollgate settlement: releases a call's reservations and charges its actual usage, once.
-- KEYS[1..n] scope prefixes as for admit.lua; KEYS[n+1] the lease's "settled" marker
-- ARGV       lease, tokens_actual, cost_nano, nscopes, then per scope:
--            tpm (0|1), concurrency (0|1), period ('' : no budget), soft_threshold_nano (0: none)
-- Returns    {applied (0|1), then per scope: spent_nano after, soft_crossed (0|1)}
local lease = ARGV[1]
local tokens = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local n = tonumber(ARGV[4])
local function int(x) return string.format('%d', x) end
-- A settlement applied twice charges once: the marker outlives any retry.
if not redis.call('SET', KEYS[n + 1], '1', 'NX', 'PX', 86400000) then return {0} end
local out = {1}
for i = 1, n do
  local p = KEYS[i]
  local base = 4 + (i - 1) * 4
  local tpm, conc, pid, soft = ARGV[base + 1] == '1', ARGV[base + 2] == '1', ARGV[base + 3], tonumber(ARGV[base + 4])
  if conc then redis.call('ZREM', p .. ':conc', lease) end
  if tpm then
    -- Correct the reservation to the usage, if it is still inside the window.
    local old = redis.call('HGET', p .. ':tpmv', lease)
    if old then
      redis.call('HSET', p .. ':tpmv', lease, ARGV[2])
      redis.call('INCRBY', p .. ':tpms', int(tokens - tonumber(old)))
    end
  end
  local spent, crossed = 0, 0
  if pid ~= '' then
    local b = p .. ':b:' .. pid
    local held = redis.call('HGET', b .. ':a', lease)
    if held then
      redis.call('HDEL', b .. ':a', lease)
      redis.call('ZREM', b .. ':l', lease)
      redis.call('HINCRBY', b, 'reserved', int(-tonumber(held)))
    end
    spent = redis.call('HINCRBY', b, 'spent', ARGV[3])
    if soft > 0 and spent >= soft and redis.call('HSETNX', b, 'soft_sent', '1') == 1 then crossed = 1 end
  end
  out[#out + 1] = spent
  out[#out + 1] = crossed
end
return out
