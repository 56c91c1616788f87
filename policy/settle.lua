-- Tollgate settlement of a batch of one team's calls: releases each call's reservations and
-- charges its actual usage, once. One call of this script settles everything a worker finished
-- meanwhile, reading and writing each scope's hash once for the whole batch.
-- KEYS       the team's set of calls in flight and set of expired calls, then the scope hashes
--            the batch touches (as for admit.lua)
-- ARGV       window_ms, ncalls, then per call: lease, tokens_actual, cost_nano_actual, admitted_at_ms,
--            tokens_reserved, cost_nano_reserved, nscopes, then per scope: key suffix ("t",
--            "k:<id>"), kinds ('r' rate, 'c' concurrency, 'b' budget, any of them, or '-'), period
--            id of the admission ('' : no budget), soft_threshold_nano (0: none)
-- Returns    per call: applied (0|1), then per scope: spent_nano after, soft_crossed (0|1)
local function int(x) return string.format('%d', x) end
local L, X = KEYS[1], KEYS[2]
local base = string.sub(L, 1, -2)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
local ncalls = tonumber(ARGV[2])
local NB = 30  -- as in admit.lua
local bsize = math.max(1, math.floor(window / NB))
local first = math.floor(now / bsize) - NB

-- Parse the batch and find each call's lease: in flight (release and charge), expired (its hold
-- was already given back: charge only), or absent (settled before: nothing).
local calls, scopes, order = {}, {}, {}
local a = 3
for _ = 1, ncalls do
  local c = {lease = ARGV[a], tokens = tonumber(ARGV[a + 1]), cost = tonumber(ARGV[a + 2]),
             bucket = math.floor(tonumber(ARGV[a + 3]) / bsize), tokens_reserved = tonumber(ARGV[a + 4]),
             cost_reserved = tonumber(ARGV[a + 5]), scopes = {}}
  local n = tonumber(ARGV[a + 6])
  a = a + 7
  local member = {c.lease}
  for i = 1, n do
    local suffix, kinds = ARGV[a], ARGV[a + 1]
    local s = {suffix = suffix, pid = ARGV[a + 2], soft = tonumber(ARGV[a + 3]), rate = string.find(kinds, 'r', 1, true),
               conc = string.find(kinds, 'c', 1, true), budget = string.find(kinds, 'b', 1, true)}
    a = a + 4
    c.scopes[i] = s
    member[#member + 1] = suffix .. '=' .. (s.conc and 1 or 0) .. '=' .. int(s.budget and c.cost_reserved or 0)
  end
  local m = table.concat(member, '|')
  c.state = 0
  if redis.call('ZREM', L, m) == 1 then
    c.state = 1
  elseif redis.call('ZREM', X, m) == 1 then
    c.state = 2
  end
  if c.state > 0 then
    for _, s in ipairs(c.scopes) do
      local h = scopes[s.suffix]
      if not h then
        h = {fields = {'ts', 'c', 'pid', 'spent', 'res', 'soft'}, seen = {}, val = {}, dirty = {}}
        scopes[s.suffix] = h
        order[#order + 1] = s.suffix
      end
      local bf = 'b' .. c.bucket
      if s.rate and not h.seen[bf] then
        h.seen[bf] = true
        h.fields[#h.fields + 1] = bf
      end
    end
  end
  calls[#calls + 1] = c
end

for _, suffix in ipairs(order) do
  local h = scopes[suffix]
  local v = redis.call('HMGET', base .. suffix, unpack(h.fields))
  for i, f in ipairs(h.fields) do h.val[f] = v[i] end
end
local function set(h, f, x)
  h.val[f] = x
  h.dirty[f] = true
end

local out = {}
for _, c in ipairs(calls) do
  out[#out + 1] = c.state > 0 and 1 or 0
  for _, s in ipairs(c.scopes) do
    local spent, crossed = 0, 0
    if c.state > 0 then
      local h = scopes[s.suffix]
      if c.state == 1 then  -- release what admission held (the sweep released expired ones)
        if s.conc then set(h, 'c', tonumber(h.val.c or 0) - 1) end
        if s.budget then set(h, 'res', int(tonumber(h.val.res or 0) - c.cost_reserved)) end
      end
      -- Correct the token reservation to the usage, if its bucket is still in the window.
      local bf = 'b' .. c.bucket
      if s.rate and h.val[bf] and c.bucket >= first and c.tokens ~= c.tokens_reserved then
        local r, tk = string.match(h.val[bf], '^(%d+):(-?%d+)$')
        local delta = c.tokens - c.tokens_reserved
        set(h, bf, r .. ':' .. (tonumber(tk) + delta))
        set(h, 'ts', tonumber(h.val.ts or 0) + delta)
      end
      if s.budget then
        if not h.val.pid or h.val.pid < s.pid then  -- first news of a new period: its spend starts at 0
          set(h, 'pid', s.pid)
          set(h, 'spent', '0')
          set(h, 'soft', '0')
        end
        spent = tonumber(h.val.spent or 0) + c.cost
        set(h, 'spent', int(spent))
        if s.soft > 0 and spent >= s.soft and h.val.soft ~= '1' then
          set(h, 'soft', '1')
          crossed = 1
        end
      end
    end
    out[#out + 1] = int(spent)
    out[#out + 1] = crossed
  end
end

for _, suffix in ipairs(order) do
  local h, w = scopes[suffix], {}
  for f in pairs(h.dirty) do
    w[#w + 1] = f
    w[#w + 1] = h.val[f]
  end
  if #w > 0 then redis.call('HSET', base .. suffix, unpack(w)) end
end
return out
