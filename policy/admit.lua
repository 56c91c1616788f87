-- Tollgate's one policy script: a batch of one team's calls, settled and admitted in one script
-- call. A worker sends the admissions that arrived while its previous call was on the wire, and
-- with them the settlements of its calls that finished meanwhile: one round trip per admission,
-- and each scope read and written once for both. First the settlements, in order (each releases
-- what its admission held and charges its actual usage, once: only the first finds its lease),
-- then the admissions, in order (every scope and kind checked, then all reserved: all or
-- nothing), exactly as if they had come one by one. A batch may hold only settlements (nothing to
-- admit was on its way) or only admissions. Time is the Redis server's (TIME), never a gateway's.
-- docs/policy.md explains the algorithms and their error bounds; memory_store.cpp implements the
-- same semantics.
--
-- Keys, all under the team's hash tag "<prefix>{team}:":
--   KEYS[1]  sorted set of the team's calls in flight, scored by lease expiry; member
--            "<lease>|<scope>=<counts for concurrency 0|1>=<reserved nano-USD>|..." (built by the
--            gateway, which sends the same string to settle the call)
--   KEYS[2]  sorted set of calls whose lease expired before they were settled, and of charge-only
--            settlements ("!<lease>": calls admitted without the store during an outage) once
--            charged; each kept a day
--   KEYS[3..] the scope hashes the batch touches: "<prefix>{team}:t" for the team, ":k:<id>" for a
--            key, with fields rs ts (requests and tokens in the window), lo (oldest bucket that may
--            hold counts), b<bucket> ("<requests>:<tokens>"), c (calls in flight), pid spent res
--            soft (budget period, spent and reserved nano-USD, and the soft threshold in nano-USD
--            last reported in this period, '0': none; '1', written before 2026-11-29, stands for
--            the current one), ~ (HPIN below)
-- ARGV      lease_ms, window_ms, nadmit, nsettle, nspecs, deadline_ms (the latest Redis time at
--           which the admissions may still be applied; 0: any), then per scope spec: scope ("t" or
--           "k:<id>"), rpm, tpm, concurrency, budget_limit_nano (-1: none), period kind (d|m|t),
--           soft_threshold_nano (0: none);
--           then the batch's sums: "0" (none: call by call), or "1" and per scope spec: admissions
--           in it, their tokens, their cost_nano, settlements in it, their reserved cost_nano, their
--           actual cost_nano, their budget period id ('' : none); then the number of token
--           corrections and per correction: spec index, bucket (admitted_at_ms / bucket size),
--           summed tokens_actual - tokens_reserved;
--           then per settlement two arguments: member (as admission held it, or "!<lease>" for a
--           charge-only settlement: charged once, nothing released or corrected) and
--           "tokens_actual,cost_nano_actual,admitted_at_ms,tokens_reserved,cost_nano_reserved"
--           followed per scope by ";<spec index, 1-based>,<period id of the admission, '' : no
--           budget>";
--           then per admission two arguments: member ("" : only read the first scope's budget)
--           and "tokens,cost_nano" followed per scope by ";<spec index>".
--           A call's numbers travel as one argument: each argument costs Redis a parse, an
--           object and a Lua string, and with the sums only the slow path reads them.
-- Returns   {now_ms, then 1 and per scope spec its spend before the settlements (after a new
--           period's reset) and 1 if its current soft threshold had been reported already, else 0
--           (a threshold an admin changed mid-period is reported again at its new level): when the
--           settlements were applied from the sums; or 0 and per settlement: 0 (applied before:
--           nothing more), or 1 and then per scope the spend after it in nano-USD, as
--           -(spent + 1) when this charge crossed the soft threshold first; then 1 and per scope
--           spec its requests and tokens in the window before the admissions: when every
--           admission was admitted from the sums; or 0 and per admission: 1,requests,tokens admitted;
--           0,reason,scope_index,retry_ms,requests,tokens refused (reason 1 rpm, 2 tpm,
--           3 concurrency, 4 budget); 2,spent,reserved,0 (read); 3 (past the deadline: nothing
--           reserved). requests (tokens): the fewest
--           left in any of the call's scopes' windows, after its reservation when admitted, as
--           left * 16 + that scope's index (0: none limits them), for the x-ratelimit-* headers.
--           Every element of the reply costs a conversion here and an object in the gateway's
--           reader: the common answers are few numbers.
-- Cost model (measured on Redis 7.0): a Lua table costs ~300 ns and a string concatenation
-- ~500 ns, far more than the Redis commands here; so no table or string is built per call, and
-- each scope is read and written once per batch.
-- The sums: a batch's calls usually all fit and all leases are found. Then each scope is checked
-- and changed once with the gateway's sums (a call's own figures follow from the scope's counts
-- before the batch, which the reply carries, and the calls before it: the gateway works them
-- out), and the per-call loops below are skipped. All fit if the sums fit, since every call
-- only adds. Otherwise (a call may be refused, a lease was not found) the batch goes call by
-- call; the gateway sends no sums when two specs share a scope, a call only reads a budget, a
-- lease repeats, or a scope's settlements span budget periods. Needs ZMSCORE (Redis >= 6.2).
local floor, call, fmt = math.floor, redis.call, string.format
-- The lease set's last member, never expiring and never settled: a member longer than Redis's
-- zset-max-listpack-value (64 bytes by default) keeps the set in its skiplist encoding, where
-- ZADD, ZREM and ZMSCORE find a lease through a hash. Leases are ~60 bytes, so without it the set
-- of a team's calls in flight (up to zset-max-listpack-entries, 128) is a listpack that each of
-- them scans: 12% of Redis's instructions in EVALSHA went there (INSTRUCTIONS=1 bench/script-cost).
local PIN = '~ keeps this set in its skiplist encoding: never expires, never settled (admit.lua) ~'
-- The same for each scope hash: a field '~' with a value longer than hash-max-listpack-value (64
-- bytes by default) keeps it a hashtable, where HMGET and HSET find a field through a hash. As a
-- listpack (~40 fields: the counts, the budget and 31 buckets) every field read or written was a
-- scan, and every write a reallocation: 5.5% of Redis's instructions per call with one admission
-- and one settlement, 3.1% with 9 of each (INSTRUCTIONS=1 [CONNECTIONS=1] bench/script-cost).
-- Written with a scope's first state (or its first after a reset), never read.
local HPIN = '~ keeps this hash in its hashtable encoding: never read, only written (admit.lua) ~'
-- Strings become numbers by arithmetic ("x + 0": one strtod), not tonumber() (a C call that runs
-- strtod twice). Numbers in ARGV repeat across a batch (scope indexes, reservations): each
-- distinct string is converted once (a table hit costs a third of a strtod).
local N = setmetatable({}, {__index = function(n, v)
  local x = (v + 0)
  n[v] = x
  return x
end})
local t = call('TIME')
local now = (t[1] + 0) * 1000 + floor((t[2] + 0) / 1000)
local L, X = KEYS[1], KEYS[2]
local base = string.sub(L, 1, -2)  -- "<prefix>{team}:"
local lease_ms = (ARGV[1] + 0)
local window = (ARGV[2] + 0)
local nadmit, nsettle, nspecs = (ARGV[3] + 0), (ARGV[4] + 0), (ARGV[5] + 0)
-- The gateway gives up on a batch after its timeout, and Redis may run the script later (it had
-- the command when it stalled): then nobody would settle what it reserved. So the batch carries
-- the moment the gateway gives up, on this clock (estimated from below: docs/policy.md), and a
-- later run admits nothing.
local deadline = (ARGV[6] + 0)
local expired = deadline > 0 and now > deadline

-- Rate windows: 30 buckets of window/30 plus the current one. A call counts for between 30 and 31
-- buckets after its admission: never less than the window, so no 60 s span ever holds more than
-- the limit; at most one bucket (2 s) longer.
local NB = 30
local bsize = math.max(1, floor(window / NB))
local cur = floor(now / bsize)
local first = cur - NB
local bcur = 'b' .. cur

-- Budget period ids: 'd<days>', 'm<yyyymm>' or 'all'. Ids of one kind order by time as strings;
-- ids of two kinds do not ('m202611' sorts after 'd20419'), and a budget's period kind can be
-- reconfigured, so the tests below never let '<' alone compare two kinds. A period starts (its
-- spend from 0) only when it is later and of the same kind:
--     not sp or (sp < p and byte(sp) == byte(p))
--   where, for a settlement, p is not its own period but the current one of its kind ('d' is
--   byte 100, 'm' 109; 'all' stays): a call admitted on one day and settled on the next is
--   charged to the next, even when no admission has opened that day yet (else the next admission
--   would reset it away); one admitted before a change of kind is charged to the current period.
-- A change of kind (the config changed): an admission, admitted or refused (not a settlement, not
-- a read), takes the new kind's current id and keeps the spend, unless the stored period has ended
-- by its own kind's calendar (ended() below), when it starts from 0. So a change of kind never
-- forgets what was spent in the current period (changed back, or replicas that reload one after
-- the other, it would otherwise reset at each switch); the new kind's next boundary starts it
-- again. Reads count a stored period of another kind as the admissions would.
-- Written out where used: as functions, their two closures cost ~2k instructions per script call.
-- (policy/store.hpp: later_period, kind_changed, the memory store's copies.)
local byte = string.byte
-- A period's spend stops here (4e18 nano-USD, exact in a double): far above any budget (at most
-- 9e15), and far below 2^63, where '%d' would wrap a sum of absurd reported costs (each at most
-- 1e18) to a negative spend that reopened the budget.
local SPENT_MAX = 4e18

local pids = {}
local function pid_of(kind)
  local p = pids[kind]
  if p then return p end
  if kind == 't' then
    p = 'all'
  else
    local days = floor(now / 86400000)
    if kind == 'd' then
      p = 'd' .. days
    else
      -- Civil date from days since 1970-01-01 (H. Hinnant's algorithm), UTC.
      local z = days + 719468
      local era = floor(z / 146097)
      local doe = z - era * 146097
      local yoe = floor((doe - floor(doe / 1460) + floor(doe / 36524) - floor(doe / 146096)) / 365)
      local y = yoe + era * 400
      local doy = doe - (365 * yoe + floor(yoe / 4) - floor(yoe / 100))
      local mp = floor((5 * doy + 2) / 153)
      local m = mp < 10 and mp + 3 or mp - 9
      if m <= 2 then y = y + 1 end
      p = string.format('m%04d%02d', y, m)
    end
  end
  pids[kind] = p
  return p
end

-- A stored period of another kind than the config's (the config changed) whose own period has
-- ended ('all' never does): its spend no longer counts.
local function ended(sp)
  local sk = byte(sp)
  if sk == 100 then return sp ~= pid_of('d') end
  if sk == 109 then return sp ~= pid_of('m') end
  return false
end

local function counts(packed)
  if not packed then return 0, 0 end
  local r, tk = string.match(packed, '^(%d+):(-?%d+)$')
  return (r + 0), (tk + 0)
end

-- Scope specs, parsed once per batch (calls refer to them by index).
local SPEC = 7
local spec_sfx, spec_rpm, spec_tpm, spec_conc, spec_blimit, spec_pid, spec_soft = {}, {}, {}, {}, {}, {}, {}
local spec_softs = {}  -- the soft threshold as sent: what a scope's 'soft' field records once reported
for k = 1, nspecs do
  local j = 7 + (k - 1) * SPEC
  spec_sfx[k], spec_softs[k] = ARGV[j], ARGV[j + 6]
  spec_rpm[k], spec_tpm[k], spec_conc[k], spec_blimit[k], spec_soft[k] =
      (ARGV[j + 1] + 0), (ARGV[j + 2] + 0), (ARGV[j + 3] + 0), (ARGV[j + 4] + 0), (ARGV[j + 6] + 0)
  if spec_blimit[k] >= 0 then spec_pid[k] = pid_of(ARGV[j + 5]) end
end
local settle0 = 7 + nspecs * SPEC

-- The batch's sums, if the gateway sent them: spec k's fields start at ag + (k - 1) * 7 (see
-- the header), the token corrections at dj.
local agg = ARGV[settle0] == '1'
local ag, nd, dj = settle0 + 1, 0, 0
if agg then
  nd = (ARGV[ag + nspecs * 7] + 0)
  dj = ag + nspecs * 7 + 1
  settle0 = dj + 3 * nd
else
  settle0 = settle0 + 1
end

local states, need = {}, {}
-- A token correction in an older bucket (still in the window) of spec k's scope: that bucket is
-- read with the scope's state below.
local function need_bucket(k, bucket)
  if spec_rpm[k] > 0 or spec_tpm[k] > 0 then
    local sfx = spec_sfx[k]
    local nb = need[sfx]
    if not nb then
      nb = {}
      need[sfx] = nb
    end
    nb['b' .. bucket] = true
  end
end
local a = settle0

-- Settlements from the sums: only if every lease is in flight (ZMSCORE finds them all; the
-- gateway sent no repeated lease). Then one ZREM for all, and the buckets to read are the
-- corrections' older ones.
local fast_settle = false
if agg and nsettle > 0 then
  local ms = {}
  for ci = 1, nsettle do
    ms[ci] = ARGV[a]
    a = a + 2
  end
  local sc = call('ZMSCORE', L, unpack(ms))
  fast_settle = true
  for ci = 1, nsettle do
    if not sc[ci] then
      fast_settle = false
      break
    end
  end
  if fast_settle then
    call('ZREM', L, unpack(ms))
    for i = 0, nd - 1 do
      local bucket = N[ARGV[dj + 3 * i + 1]]
      if bucket ~= cur and bucket >= first then need_bucket(N[ARGV[dj + 3 * i]], bucket) end
    end
  end
end
local admit0 = settle0 + 2 * nsettle

-- Settlements, pass 1 (call by call): unpack each call's numbers; find its lease: in flight
-- (release and charge), expired (its hold was already given back: charge only) or absent
-- (settled before: nothing); note the buckets other than the current one whose tokens it
-- corrects (read with its scope below).
local s_tok, s_cost, s_bucket, s_tres, s_cres, s_scopes
local charged_only = false
if not fast_settle and nsettle > 0 then s_tok, s_cost, s_bucket, s_tres, s_cres, s_scopes = {}, {}, {}, {}, {}, {} end
a = settle0
for ci = 1, fast_settle and 0 or nsettle do
  local tk, c, at, tr, cr, rest = string.match(ARGV[a + 1], '^(-?%d+),(-?%d+),(-?%d+),(-?%d+),(-?%d+)(.*)$')
  local bucket = floor(N[at] / bsize)
  s_tok[ci], s_cost[ci], s_bucket[ci], s_tres[ci], s_cres[ci], s_scopes[ci] = N[tk], N[c], bucket, N[tr], N[cr], rest
  local st = 0
  if byte(ARGV[a]) == 33 then
    -- "!<lease>": a call admitted without the store during an outage; charge only, once (the
    -- member stays in the expired set for a day).
    if call('ZADD', X, 'NX', now, ARGV[a]) == 1 then
      st, charged_only = 2, true
    end
  elseif call('ZREM', L, ARGV[a]) == 1 then
    st = 1
  elseif call('ZREM', X, ARGV[a]) == 1 then
    st = 2
  end
  states[ci] = st
  if st > 0 and tk ~= tr and bucket ~= cur and bucket >= first then
    for ks in string.gmatch(rest, ';(%d+),') do need_bucket(N[ks], bucket) end
  end
  a = a + 2
end

-- Scope state, read once (with its window rolled forward) and written once at the end.
local state, order = {}, {}
local function scope(suffix)
  local s = state[suffix]
  if s then return s end
  local key = base .. suffix
  local v, bv
  local nb = need[suffix]
  if nb then
    local f = {'rs', 'ts', 'lo', bcur, 'c', 'pid', 'spent', 'res', 'soft'}
    for bf in pairs(nb) do f[#f + 1] = bf end
    v = call('HMGET', key, unpack(f))
    bv = {}
    for i = 10, #f do bv[f[i]] = v[i] end
  else
    v = call('HMGET', key, 'rs', 'ts', 'lo', bcur, 'c', 'pid', 'spent', 'res', 'soft')
  end
  s = {key = key, rs = ((v[1] or 0) + 0), ts = ((v[2] or 0) + 0), lo = ((v[3] or cur) + 0), c = ((v[5] or 0) + 0),
       pid = v[6], spent = ((v[7] or 0) + 0), res = ((v[8] or 0) + 0), soft = v[9], hascur = v[4] ~= nil, bv = bv,
       fresh = not (v[1] or v[2] or v[3] or v[5] or v[6] or v[7] or v[8])}
  s.rc, s.tc = counts(v[4])
  if s.lo < first then
    -- Buckets that left the window: subtract them (once per bucket).
    local f = {}
    for b = s.lo, math.min(first - 1, s.lo + NB) do f[#f + 1] = 'b' .. b end
    local old = call('HMGET', key, unpack(f))
    for k = 1, #old do
      local r, tk = counts(old[k])
      s.rs = s.rs - r
      s.ts = s.ts - tk
    end
    if first - s.lo > NB then s.rs, s.ts = 0, 0 end
    call('HDEL', key, unpack(f))
    s.lo, s.rolled = first, true
  end
  state[suffix] = s
  order[#order + 1] = suffix
  return s
end

-- Calls whose lease expired (their gateway died, or they outlived the lease) give back what they
-- held, and are remembered for a day so that a late settlement still charges them, once.
local gone = call('ZRANGEBYSCORE', L, '-inf', now)
if #gone > 0 then
  for _, m in ipairs(gone) do
    for suffix, c, amt in string.gmatch(m, '|([^=|]+)=(%d)=(%d+)') do
      local s = scope(suffix)
      s.c = s.c - (c + 0)
      s.res = s.res - (amt + 0)
      s.swept = true
    end
    call('ZADD', X, now, m)
  end
  call('ZREMRANGEBYSCORE', L, '-inf', now)
end
if #gone > 0 or charged_only then call('ZREMRANGEBYSCORE', X, '-inf', now - 86400000) end

local spec_scope = {}
for k = 1, nspecs do spec_scope[k] = scope(spec_sfx[k]) end

-- A settlement's token correction: the current bucket's count here, an older one's summed and
-- written once (if its bucket is still in the window and holds counts).
local function correct(s, bucket, d)
  if bucket == cur then
    if s.hascur then s.tc, s.ts, s.rate = s.tc + d, s.ts + d, true end
  else
    local bf = 'b' .. bucket
    if s.bv and s.bv[bf] then
      local td = s.tdelta
      if not td then
        td = {}
        s.tdelta = td
      end
      td[bf] = (td[bf] or 0) + d
      s.ts, s.tsd = s.ts + d, true
    end
  end
end

local out, no = {now}, 1
if fast_settle then
  -- Settlements from the sums: each scope released and charged once for all of them.
  out[2], no = 1, 2
  for k = 1, nspecs do
    local s, f = spec_scope[k], ag + (k - 1) * 7
    local cnt, before, was = N[ARGV[f + 3]], 0, 0
    if cnt > 0 then
      if spec_conc[k] > 0 then s.c, s.dirty = s.c - cnt, true end
      if spec_blimit[k] >= 0 then
        s.res, s.dirty = s.res - N[ARGV[f + 4]], true
        local pid = ARGV[f + 6]
        local pk = byte(pid)
        if pk == 100 then pid = pid_of('d') elseif pk == 109 then pid = pid_of('m') end
        if not s.pid or (s.pid < pid and byte(s.pid) == byte(pid)) then s.pid, s.spent, s.soft = pid, 0, '0' end
        before = s.spent
        if s.soft == spec_softs[k] or s.soft == '1' then was = 1 end
        local spent, soft = before + N[ARGV[f + 5]], spec_soft[k]
        if spent > SPENT_MAX then spent = SPENT_MAX end
        s.spent, s.bd = spent, true
        if soft > 0 and spent >= soft then s.soft = spec_softs[k] end
      end
    end
    out[no + 1], out[no + 2], no = before, was, no + 2
  end
  for i = 0, nd - 1 do
    local k, bucket, d = N[ARGV[dj + 3 * i]], N[ARGV[dj + 3 * i + 1]], N[ARGV[dj + 3 * i + 2]]
    if (spec_rpm[k] > 0 or spec_tpm[k] > 0) and bucket >= first and d ~= 0 then correct(spec_scope[k], bucket, d) end
  end
else
  out[2], no = 0, 2
end

-- Settlements, pass 2 (call by call): apply, in order.
for ci = 1, fast_settle and 0 or nsettle do
  local tokens, cost, bucket = s_tok[ci], s_cost[ci], s_bucket[ci]
  local tokens_reserved, cost_reserved = s_tres[ci], s_cres[ci]
  local st = states[ci]
  no = no + 1
  out[no] = st > 0 and 1 or 0
  for ks, pid in string.gmatch(st > 0 and s_scopes[ci] or '', ';(%d+),([^;]*)') do
    local spent, crossed = 0, 0
    local k = N[ks]
    local s = spec_scope[k]
    local blimit = spec_blimit[k]
    if st == 1 then  -- release what admission held (the sweep released expired ones)
      if spec_conc[k] > 0 then s.c, s.dirty = s.c - 1, true end
      if blimit >= 0 then s.res, s.dirty = s.res - cost_reserved, true end
    end
    -- Correct the token reservation to the usage, if its bucket is still in the window (and
    -- holds counts): the current bucket's count here, an older one's summed and written once.
    if (spec_rpm[k] > 0 or spec_tpm[k] > 0) and bucket >= first and tokens ~= tokens_reserved then
      correct(s, bucket, tokens - tokens_reserved)
    end
    if blimit >= 0 then
      local soft = spec_soft[k]
      local pk = byte(pid)
      if pk == 100 then pid = pid_of('d') elseif pk == 109 then pid = pid_of('m') end
      if not s.pid or (s.pid < pid and byte(s.pid) == byte(pid)) then  -- first news of a new period: its spend starts at 0
        s.pid, s.spent, s.soft = pid, 0, '0'
      end
      spent = s.spent + cost
      if spent > SPENT_MAX then spent = SPENT_MAX end
      s.spent, s.bd = spent, true
      if soft > 0 and spent >= soft and s.soft ~= spec_softs[k] and s.soft ~= '1' then
        s.soft = spec_softs[k]
        crossed = 1
      end
    end
    no = no + 1
    out[no] = crossed == 1 and -spent - 1 or spent
  end
end

-- Admissions.
local held, nh = {}, 0
-- Every lease of the batch expires at the same time: formatted once (Redis formats each number
-- it is given with %.17g, ~0.4 us).
local expiry = fmt('%d', now + lease_ms)

-- Admissions from the sums, if every scope has room for all of them: each scope checked and
-- reserved once; the reply gives each scope's counts before them.
local fast_admit = false
if agg and nadmit > 0 and not expired then
  fast_admit = true
  for k = 1, nspecs do
    local s, f = spec_scope[k], ag + (k - 1) * 7
    local n = N[ARGV[f]]
    if n > 0 then
      local rpm, tpm, conc, blimit = spec_rpm[k], spec_tpm[k], spec_conc[k], spec_blimit[k]
      local p = spec_pid[k]
      if blimit >= 0 and s.pid and byte(s.pid) ~= byte(p) then  -- a change of kind: see 'kind' above
        if ended(s.pid) then s.spent, s.soft = 0, '0' end
        s.pid, s.bd = p, true
      end
      if (rpm > 0 and s.rs + n > rpm) or (tpm > 0 and s.ts + N[ARGV[f + 1]] > tpm) or (conc > 0 and s.c + n > conc) then
        fast_admit = false
        break
      end
      if blimit >= 0 then
        local spent = s.spent  -- (of the config's kind: switched above)
        if not s.pid or (s.pid < p and byte(s.pid) == byte(p)) then spent = 0 end
        if spent + s.res + N[ARGV[f + 2]] > blimit then
          fast_admit = false
          break
        end
      end
    end
  end
end
if fast_admit then
  no = no + 1
  out[no] = 1
  for k = 1, nspecs do
    local s, f = spec_scope[k], ag + (k - 1) * 7
    out[no + 1], out[no + 2], no = s.rs, s.ts, no + 2
    local n = N[ARGV[f]]
    if n > 0 then
      s.dirty = true
      if spec_rpm[k] > 0 or spec_tpm[k] > 0 then
        local tokens = N[ARGV[f + 1]]
        s.rs, s.ts, s.rc, s.tc, s.rate = s.rs + n, s.ts + tokens, s.rc + n, s.tc + tokens, true
      end
      if spec_conc[k] > 0 then s.c = s.c + n end
      if spec_blimit[k] >= 0 then
        s.res = s.res + N[ARGV[f + 2]]
        local pid = spec_pid[k]
        if not s.pid or (s.pid < pid and byte(s.pid) == byte(pid)) then s.pid, s.spent, s.soft, s.bd = pid, 0, '0', true end  -- holds carry over
      end
    end
  end
  for i = 0, nadmit - 1 do held[nh + 1], held[nh + 2], nh = expiry, ARGV[admit0 + 2 * i], nh + 2 end
else
  no = no + 1
  out[no] = 0
end

-- When a refused call may retry for one rate limit of scope s (why 1: requests, 2: tokens; excess:
-- how much must leave the window): when enough of the window has left, its oldest buckets first
-- (lo may be an empty bucket after a roll) until what they held covers the excess; the current
-- bucket last. In ms, at least 1.
local function rate_retry(s, why, excess)
  local at = cur
  if cur > s.lo then
    local f = {}
    for b = s.lo, cur - 1 do f[#f + 1] = 'b' .. b end
    local v = call('HMGET', s.key, unpack(f))
    local freed = 0
    for j = 1, #f do
      local r, tk = counts(v[j])
      if why == 2 and s.tdelta then tk = tk + (s.tdelta[f[j]] or 0) end
      freed = freed + (why == 1 and r or tk)
      if freed >= excess then
        at = s.lo + j - 1
        break
      end
    end
  end
  local retry = (at + NB + 1) * bsize - now
  if retry < 1 then retry = 1 end
  return retry
end

-- Admissions, call by call.
local ks = not fast_admit and {} or nil  -- the call's spec indexes (reused: a table per call would cost more)
a = admit0
for _ = 1, (fast_admit or expired) and 0 or nadmit do
  local member, tk_, c_, rest = ARGV[a], string.match(ARGV[a + 1], '^(%d+),(-?%d+)(.*)$')
  local tokens, cost, n = N[tk_], N[c_], 0
  for k in string.gmatch(rest, ';(%d+)') do
    n = n + 1
    ks[n] = N[k]
  end
  a = a + 2
  -- Check every scope and kind.
  local code, why, idx, retry = 1, 0, 0, 0
  for i = 1, n do
    local k = ks[i]
    local s, rpm, tpm, conc, blimit = spec_scope[k], spec_rpm[k], spec_tpm[k], spec_conc[k], spec_blimit[k]
    if blimit >= 0 and member ~= '' and s.pid and byte(s.pid) ~= byte(spec_pid[k]) then  -- a change of kind
      if ended(s.pid) then s.spent, s.soft = 0, '0' end
      s.pid, s.bd = spec_pid[k], true
    end
    if rpm > 0 or tpm > 0 then
      if rpm > 0 and s.rs + 1 > rpm then code, why, idx = 0, 1, i break end
      if tpm > 0 and s.ts + tokens > tpm then code, why, idx = 0, 2, i break end
    end
    if conc > 0 and s.c >= conc then code, why, idx, retry = 0, 3, i, 1000 break end
    if blimit >= 0 then
      local spent = s.spent
      if not s.pid or (s.pid < spec_pid[k] and byte(s.pid) == byte(spec_pid[k])) or (byte(s.pid) ~= byte(spec_pid[k]) and ended(s.pid)) then spent = 0 end  -- a new period: the spend starts again
      if member == '' then code, why, idx = 2, spent, s.res break end
      if spent + s.res + cost > blimit then code, why, idx = 0, 4, i break end
    end
  end
  if code == 0 and member ~= '' then
    -- The first check that failed is not always the one to answer with. A budget that its spend
    -- alone exhausts, in any scope, answers first (no wait in this period helps); then the rate
    -- or concurrency limit that refuses for longest, with its wait (a retry after a shorter one
    -- would be refused by the next limit); a budget held only by calls in flight, last.
    local first_why, first_idx, best, spent_out = why, idx, 0, false
    for i = 1, n do
      local k = ks[i]
      local s, blimit = spec_scope[k], spec_blimit[k]
      if blimit >= 0 then
        local spent = s.spent
        if not s.pid or (s.pid < spec_pid[k] and byte(s.pid) == byte(spec_pid[k])) or (byte(s.pid) ~= byte(spec_pid[k]) and ended(s.pid)) then spent = 0 end
        if spent + cost > blimit then
          why, idx, retry, spent_out = 4, i, 0, true
          break
        end
      end
    end
    if not spent_out then
      for i = 1, n do
        local k = ks[i]
        local s, rpm, tpm, conc = spec_scope[k], spec_rpm[k], spec_tpm[k], spec_conc[k]
        if rpm > 0 and s.rs + 1 > rpm then
          local r = rate_retry(s, 1, s.rs + 1 - rpm)
          if r > best then why, idx, best = 1, i, r end
        end
        if tpm > 0 and s.ts + tokens > tpm then
          local r = rate_retry(s, 2, s.ts + tokens - tpm)
          if r > best then why, idx, best = 2, i, r end
        end
        if conc > 0 and s.c >= conc and 1000 > best then why, idx, best = 3, i, 1000 end
      end
      -- (No rate or concurrency limit refuses: the first failure was a budget held by calls in
      -- flight. Their settlements may free it: a wait of 1 s, as for concurrency.)
      if best > 0 then retry = best else why, idx, retry = first_why, first_idx, 1000 end
    end
  end
  -- The x-ratelimit-* figures: the fewest requests (tokens) left in any of the call's scopes,
  -- as left * 16 + the scope's index (0: no scope limits them); after the reservation when
  -- admitted. The engine makes at most 2 scopes per call (script_args refuses more than 15).
  local rq, rqi, tk, tki = 0, 0, 0, 0
  if code == 1 then
    -- Reserve in every scope and hold the lease.
    for i = 1, n do
      local k = ks[i]
      local s = spec_scope[k]
      s.dirty = true
      local rpm, tpm = spec_rpm[k], spec_tpm[k]
      if rpm > 0 or tpm > 0 then
        local rs, ts = s.rs + 1, s.ts + tokens
        s.rs, s.ts, s.rc, s.tc, s.rate = rs, ts, s.rc + 1, s.tc + tokens, true
        if rpm > 0 and (rqi == 0 or rpm - rs < rq) then rq, rqi = rpm - rs, i end
        if tpm > 0 and (tki == 0 or tpm - ts < tk) then tk, tki = tpm - ts, i end
      end
      if spec_conc[k] > 0 then s.c = s.c + 1 end
      if spec_blimit[k] >= 0 then
        s.res = s.res + cost
        local pid = spec_pid[k]
        if not s.pid or (s.pid < pid and byte(s.pid) == byte(pid)) then s.pid, s.spent, s.soft, s.bd = pid, 0, '0', true end  -- holds carry over
      end
    end
    held[nh + 1], held[nh + 2], nh = expiry, member, nh + 2
  end
  if code == 0 then
    for i = 1, n do
      local k = ks[i]
      local s = spec_scope[k]
      local rpm, tpm = spec_rpm[k], spec_tpm[k]
      if rpm > 0 and (rqi == 0 or rpm - s.rs < rq) then rq, rqi = rpm - s.rs, i end
      if tpm > 0 and (tki == 0 or tpm - s.ts < tk) then tk, tki = tpm - s.ts, i end
    end
  end
  if rq < 0 then rq = 0 end
  if tk < 0 then tk = 0 end
  if code == 1 then
    out[no + 1], out[no + 2], out[no + 3], no = 1, rq * 16 + rqi, tk * 16 + tki, no + 3
  elseif code == 0 then
    out[no + 1], out[no + 2], out[no + 3], out[no + 4], out[no + 5], out[no + 6], no =
        0, why, idx, retry, rq * 16 + rqi, tk * 16 + tki, no + 6
  else
    out[no + 1], out[no + 2], out[no + 3], out[no + 4], no = code, why, idx, retry, no + 4
  end
end
if expired then
  for _ = 1, nadmit do
    no = no + 1
    out[no] = 3
  end
end

-- Write each scope once, and hold the leases. Numbers go as strings formatted here with %d: Redis
-- formats a number argument with %.17g, several times slower.
for _, suffix in ipairs(order) do
  local s = state[suffix]
  local wrote = true
  if s.rate then
    if s.bd then
      call('HSET', s.key, 'rs', fmt('%d', s.rs), 'ts', fmt('%d', s.ts), 'lo', fmt('%d', s.lo),
           bcur, fmt('%d:%d', s.rc, s.tc), 'c', fmt('%d', s.c), 'res', fmt('%d', s.res),
           'pid', s.pid, 'spent', fmt('%d', s.spent), 'soft', s.soft or '0')
    else
      call('HSET', s.key, 'rs', fmt('%d', s.rs), 'ts', fmt('%d', s.ts), 'lo', fmt('%d', s.lo),
           bcur, fmt('%d:%d', s.rc, s.tc), 'c', fmt('%d', s.c), 'res', fmt('%d', s.res))
    end
  elseif s.rolled or s.tsd then
    if s.bd then
      call('HSET', s.key, 'rs', fmt('%d', s.rs), 'ts', fmt('%d', s.ts), 'lo', fmt('%d', s.lo),
           'c', fmt('%d', s.c), 'res', fmt('%d', s.res), 'pid', s.pid, 'spent', fmt('%d', s.spent),
           'soft', s.soft or '0')
    else
      call('HSET', s.key, 'rs', fmt('%d', s.rs), 'ts', fmt('%d', s.ts), 'lo', fmt('%d', s.lo),
           'c', fmt('%d', s.c), 'res', fmt('%d', s.res))
    end
  elseif s.dirty or s.swept then
    if s.bd then
      call('HSET', s.key, 'c', fmt('%d', s.c), 'res', fmt('%d', s.res), 'pid', s.pid,
           'spent', fmt('%d', s.spent), 'soft', s.soft or '0')
    else
      call('HSET', s.key, 'c', fmt('%d', s.c), 'res', fmt('%d', s.res))
    end
  elseif s.bd then
    call('HSET', s.key, 'pid', s.pid, 'spent', fmt('%d', s.spent), 'soft', s.soft or '0')
  else
    wrote = false
  end
  -- (Every write above leaves one of the fields that fresh tests.)
  if s.fresh and wrote then call('HSET', s.key, '~', HPIN) end
  if s.tdelta then
    for bf, d in pairs(s.tdelta) do
      if d ~= 0 then
        local r, tk = string.match(s.bv[bf], '^(%d+):(-?%d+)$')
        call('HSET', s.key, bf, fmt('%d:%d', r, tk + d))
      end
    end
  end
end
if nh > 0 then
  held[nh + 1], held[nh + 2] = '+inf', PIN  -- (an existing member: a hash lookup)
  call('ZADD', L, unpack(held))
end
return out
