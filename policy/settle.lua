-- Tollgate settlement of a batch of one team's calls: releases each call's reservations and
-- charges its actual usage, once. One call of this script settles everything a worker finished
-- meanwhile, reading and writing each scope's hash once for the whole batch (admit.lua explains
-- the keys, and why nothing is built per call).
-- KEYS       the team's set of calls in flight and set of expired calls, then the scope hashes
-- ARGV       window_ms, ncalls, nspecs, then per scope spec: scope ("t" or "k:<id>"), kinds (bits:
--            1 rate, 2 concurrency, 4 budget), soft_threshold_nano (0: none); then per call: member
--            (as admit.lua held it), tokens_actual, cost_nano_actual, admitted_at_ms, tokens_reserved,
--            cost_nano_reserved, nscopes, then per scope: spec index (1-based), period id of the
--            admission ('' : no budget)
-- Returns    per call: applied (0|1), then per scope: spent_nano after, soft_crossed (0|1)
local tonumber, floor, call = tonumber, math.floor, redis.call
-- Numbers in ARGV repeat across a batch (scope indexes, reservations): each distinct string is
-- converted once (tonumber is a strtod, ~100 ns; a table hit costs a third of that).
local N = setmetatable({}, {__index = function(n, v)
  local x = tonumber(v)
  n[v] = x
  return x
end})
local L, X = KEYS[1], KEYS[2]
local base = string.sub(L, 1, -2)
local t = call('TIME')
local now = tonumber(t[1]) * 1000 + floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
local ncalls = tonumber(ARGV[2])
local NB = 30  -- as in admit.lua
local bsize = math.max(1, floor(window / NB))
local first = floor(now / bsize) - NB

local nspecs = tonumber(ARGV[3])
local spec_sfx, spec_rate, spec_conc, spec_budget, spec_soft = {}, {}, {}, {}, {}
for k = 1, nspecs do
  local j = 4 + (k - 1) * 3
  local kinds = tonumber(ARGV[j + 1])
  spec_sfx[k], spec_rate[k], spec_conc[k], spec_budget[k], spec_soft[k] =
      ARGV[j], kinds % 2 == 1, floor(kinds / 2) % 2 == 1, kinds >= 4, tonumber(ARGV[j + 2])
end
local calls0 = 4 + nspecs * 3

-- Pass 1: find each call's lease: in flight (release and charge), expired (its hold was already
-- given back: charge only), or absent (settled before: nothing); note the fields to read.
local states, scopes, order = {}, {}, {}
local a = calls0
for ci = 1, ncalls do
  local n = N[ARGV[a + 6]]
  local st = 0
  if call('ZREM', L, ARGV[a]) == 1 then
    st = 1
  elseif call('ZREM', X, ARGV[a]) == 1 then
    st = 2
  end
  states[ci] = st
  local bucket = floor(N[ARGV[a + 3]] / bsize)
  local j = a + 7
  for _ = 1, n do
    if st > 0 then
      local k = N[ARGV[j]]
      local sfx = spec_sfx[k]
      local h = scopes[sfx]
      if not h then
        h = {fields = {'ts', 'c', 'pid', 'spent', 'res', 'soft'}, val = {}, dirty = {}, buckets = {}, tdelta = {}}
        scopes[sfx] = h
        order[#order + 1] = sfx
      end
      if spec_rate[k] and bucket >= first and not h.buckets[bucket] then
        h.buckets[bucket] = true
        h.fields[#h.fields + 1] = 'b' .. bucket
      end
    end
    j = j + 2
  end
  a = j
end

for _, suffix in ipairs(order) do
  local h = scopes[suffix]
  local v = call('HMGET', base .. suffix, unpack(h.fields))
  for i, f in ipairs(h.fields) do h.val[f] = v[i] end
end

-- Pass 2: apply, in order.
local out, no = {}, 0
a = calls0
for ci = 1, ncalls do
  local tokens, cost = N[ARGV[a + 1]], N[ARGV[a + 2]]
  local bucket = floor(N[ARGV[a + 3]] / bsize)
  local tokens_reserved, cost_reserved, n = N[ARGV[a + 4]], N[ARGV[a + 5]], N[ARGV[a + 6]]
  local st = states[ci]
  no = no + 1
  out[no] = st > 0 and 1 or 0
  local j = a + 7
  for _ = 1, n do
    local spent, crossed = 0, 0
    if st > 0 then
      local k = N[ARGV[j]]
      local h = scopes[spec_sfx[k]]
      local v, d = h.val, h.dirty
      if st == 1 then  -- release what admission held (the sweep released expired ones)
        if spec_conc[k] then v.c, d.c = tonumber(v.c or 0) - 1, true end
        if spec_budget[k] then v.res, d.res = tonumber(v.res or 0) - cost_reserved, true end
      end
      -- Correct the token reservation to the usage, if its bucket is still in the window: summed
      -- per bucket here, written into the bucket's "<requests>:<tokens>" once at the end.
      if spec_rate[k] and bucket >= first and tokens ~= tokens_reserved then
        local td = h.tdelta
        td[bucket] = (td[bucket] or 0) + tokens - tokens_reserved
      end
      if spec_budget[k] then
        local pid, soft = ARGV[j + 1], spec_soft[k]
        if not v.pid or v.pid < pid then  -- first news of a new period: its spend starts at 0
          v.pid, v.spent, v.soft, d.pid, d.spent, d.soft = pid, 0, '0', true, true, true
        end
        spent = tonumber(v.spent or 0) + cost
        v.spent, d.spent = spent, true
        if soft > 0 and spent >= soft and v.soft ~= '1' then
          v.soft, d.soft = '1', true
          crossed = 1
        end
      end
    end
    out[no + 1], out[no + 2], no = spent, crossed, no + 2
    j = j + 2
  end
  a = j
end

for _, suffix in ipairs(order) do
  local h, w = scopes[suffix], {}
  local v, d = h.val, h.dirty
  for bucket, delta in pairs(h.tdelta) do
    local bf = 'b' .. bucket
    if v[bf] and delta ~= 0 then
      local r, tk = string.match(v[bf], '^(%d+):(-?%d+)$')
      v[bf], d[bf] = r .. ':' .. (tonumber(tk) + delta), true
      v.ts, d.ts = tonumber(v.ts or 0) + delta, true
    end
  end
  for f in pairs(h.dirty) do
    w[#w + 1] = f
    w[#w + 1] = h.val[f]
  end
  if #w > 0 then call('HSET', base .. suffix, unpack(w)) end
end
return out
