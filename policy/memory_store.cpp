// SPDX-License-Identifier: Apache-2.0
// Keep in step with admit.lua: the conformance suite runs on both.
#include "policy/memory_store.hpp"

#include <algorithm>
#include <chrono>

namespace tollgate::policy {

memory_store::memory_store(clock_fn now, std::int64_t window_ms)
    : now_(std::move(now)), window_ms_(window_ms), bucket_ms_(bucket_ms_of(window_ms)) {
  if (!now_) now_ = wall_ms;
}

namespace {
/// Where a period's spend stops (admit.lua's SPENT_MAX): far above any budget, far below 2^63.
constexpr std::int64_t spent_max = 4'000'000'000'000'000'000;

/// Drops the leases a map has held for more than a day, once it has grown past a few thousand.
void forget_old(std::unordered_map<std::string, std::int64_t>& since, std::int64_t now) {
  if (since.size() > 4096) std::erase_if(since, [&](const auto& kv) { return kv.second <= now - 86'400'000; });
}
}  // namespace

std::pair<std::size_t, std::int64_t> memory_store::leases::sweep(std::int64_t now) {
  std::size_t gone = 0;
  std::int64_t freed = 0;
  while (!by_expiry.empty() && by_expiry.begin()->first <= now) {
    if (auto it = holds.find(by_expiry.begin()->second); it != holds.end()) {
      freed += it->second.amount;
      if (it->second.counted) {
        ++gone;
        --counted;
      }
      holds.erase(it);
    }
    by_expiry.erase(by_expiry.begin());
  }
  return {gone, freed};
}

void memory_store::leases::add(const std::string& lease, std::int64_t expiry, hold h) {
  remove(lease);
  by_expiry.emplace(expiry, lease);
  holds[lease] = h;
  if (h.counted) ++counted;
}

bool memory_store::leases::remove(const std::string& lease) {
  auto it = holds.find(lease);
  if (it == holds.end()) return false;
  if (it->second.counted) --counted;
  holds.erase(it);
  for (auto e = by_expiry.begin(); e != by_expiry.end(); ++e)
    if (e->second == lease) {
      by_expiry.erase(e);
      break;
    }
  return true;
}

void memory_store::roll(rate_window& w, std::int64_t cur) const {
  const std::int64_t first = cur - buckets;
  if (!w.used) w.lo = cur;
  if (w.lo >= first) return;
  for (auto it = w.buckets.begin(); it != w.buckets.end() && it->first < first;) {
    w.requests -= it->second.first;
    w.tokens -= it->second.second;
    it = w.buckets.erase(it);
  }
  w.lo = first;
}

admit_result memory_store::admit_now(const admission& a) {
  std::lock_guard lock(mu_);
  const std::int64_t now = now_();
  const std::int64_t cur = now / bucket_ms_;
  admit_result r;
  r.periods.resize(a.scopes.size());
  std::vector<scope_state*> states;
  std::vector<bool> starts_period(a.scopes.size(), false);
  r.admitted_at_ms = now;
  r.reset_ms = window_reset_ms(now, bucket_ms_);
  // The x-ratelimit-* figures: the scope with the fewest requests (tokens) left (as admit.lua).
  auto tightest = [&] {
    for (std::size_t i = 0; i < a.scopes.size(); ++i) {
      const auto& l = a.scopes[i].limits;
      if (!l.rpm && !l.tpm) continue;
      rate_window& w = states[i]->rate;  // pass 1 found every scope and rolled its window
      note_window(r, int(i), l, std::int64_t(w.requests), std::int64_t(w.tokens));
    }
  };
  auto refuse = [&](verdict v, std::size_t i, std::int64_t retry) {
    r.v = v;
    r.scope = i;
    r.retry_after_ms = retry;
    tightest();
    return r;
  };
  // Pass 1: check every scope and kind. The answer to a refused call (as admit.lua's): a budget
  // that its spend alone exhausts, in any scope (no wait in this period helps); else the rate or
  // concurrency limit that refuses for longest, with its wait (a retry after a shorter one would
  // be refused by the next limit); else a budget held only by calls in flight. Ranks 2, 1, 0.
  verdict worst = verdict::admitted;
  std::size_t worst_scope = 0;
  std::int64_t worst_retry = 0;
  int worst_rank = -1;
  auto consider = [&](verdict v, std::size_t i, std::int64_t retry, int rank) {
    if (rank > worst_rank || (rank == 1 && rank == worst_rank && retry > worst_retry)) {
      worst = v;
      worst_scope = i;
      worst_retry = retry;
      worst_rank = rank;
    }
  };
  for (std::size_t i = 0; i < a.scopes.size(); ++i) {
    const auto& sc = a.scopes[i];
    scope_state& st = scopes_[sc.id + "@" + sc.team];
    states.push_back(&st);
    const auto& l = sc.limits;
    const bool budget = sc.budget.set();
    if (l.rpm || l.tpm) {
      roll(st.rate, cur);
      // A refused caller may retry when enough of the window has left: the oldest buckets first,
      // until what they held covers the excess (admit.lua does the same).
      const auto retry = [&](bool requests, std::uint64_t excess) {
        std::int64_t at = cur;
        std::uint64_t freed = 0;
        for (const auto& [b, n] : st.rate.buckets) {
          if (b >= cur) break;
          freed += requests ? n.first : n.second;
          if (freed >= excess) {
            at = b;
            break;
          }
        }
        return std::max<std::int64_t>(1, (at + buckets + 1) * bucket_ms_ - now);
      };
      if (l.rpm && st.rate.requests + 1 > l.rpm) consider(verdict::rpm, i, retry(true, st.rate.requests + 1 - l.rpm), 1);
      if (l.tpm && st.rate.tokens + a.tokens > l.tpm) consider(verdict::tpm, i, retry(false, st.rate.tokens + a.tokens - l.tpm), 1);
    }
    std::int64_t spent = st.spent;
    if (budget) {
      r.periods[i] = period_id(sc.budget.period, now);
      // A change of kind (the config changed): the new kind's current id, the spend kept unless
      // its period has ended, also when the call is refused (admit.lua: 'A change of kind').
      if (kind_changed(st.pid, r.periods[i])) {
        if (period_ended(st.pid, now)) {
          st.spent = spent = 0;
          st.soft_reported = 0;
        }
        st.pid = r.periods[i];
      }
      if (later_period(st.pid, r.periods[i])) {
        spent = 0;  // a new period: reservations in flight carry over, the spend starts again
        starts_period[i] = true;
      }
    }
    if (l.concurrency || budget) {
      std::size_t held = l.concurrency ? st.held.counted : 0;
      // Dead leases are swept only when they could matter: when this call would not fit.
      if ((l.concurrency && held >= l.concurrency) || (budget && spent + st.reserved + a.cost_nano > sc.budget.limit_nano)) {
        auto [gone, freed] = st.held.sweep(now);
        held -= std::min(held, gone);
        st.reserved -= freed;
        if (l.concurrency && held >= l.concurrency) consider(verdict::concurrency, i, 1000, 1);
        if (budget && spent + st.reserved + a.cost_nano > sc.budget.limit_nano) {
          // Spent out: no wait helps. Held by calls in flight: their settlements may free it (1 s,
          // as for concurrency; admit.lua gives the same).
          const bool spent_out = spent + a.cost_nano > sc.budget.limit_nano;
          consider(verdict::budget, i, spent_out ? 0 : 1000, spent_out ? 2 : 0);
        }
      }
    }
  }
  if (worst != verdict::admitted) return refuse(worst, worst_scope, worst_retry);
  // Pass 2: reserve in all of them.
  for (std::size_t i = 0; i < a.scopes.size(); ++i) {
    const auto& sc = a.scopes[i];
    const auto& l = sc.limits;
    scope_state& st = *states[i];
    if (l.rpm || l.tpm) {
      auto& b = st.rate.buckets[cur];
      ++b.first;
      b.second += a.tokens;
      ++st.rate.requests;
      st.rate.tokens += a.tokens;
      st.rate.used = true;
    }
    if (sc.budget.set()) {
      st.reserved += a.cost_nano;
      if (starts_period[i]) {
        st.pid = r.periods[i];
        st.spent = 0;
        st.soft_reported = 0;
      }
    }
    if (l.concurrency || sc.budget.set())
      st.held.add(a.lease, now + a.lease_ms, {sc.budget.set() ? a.cost_nano : 0, l.concurrency != 0});
  }
  // In flight until settled (the idempotency anchor); a dead gateway's calls are forgotten after a day.
  forget_old(inflight_, now);
  inflight_[a.lease] = now;
  r.v = verdict::admitted;
  tightest();
  return r;
}

settle_result memory_store::settle_now(const settlement& s) {
  std::lock_guard lock(mu_);
  const std::int64_t now = now_();
  settle_result r;
  r.reachable = true;
  // A settlement applied twice charges once: only the first finds its call in flight (a
  // charge-only one, its lease not yet among those charged).
  if (s.charge_only) {
    forget_old(charged_, now);
    r.applied = charged_.emplace(s.adm.lease, now).second;
  } else {
    r.applied = inflight_.erase(s.adm.lease) > 0;
  }
  const std::int64_t first = now / bucket_ms_ - buckets, bucket = s.admitted_at_ms / bucket_ms_;
  for (std::size_t i = 0; i < s.adm.scopes.size(); ++i) {
    const auto& sc = s.adm.scopes[i];
    std::int64_t spent = 0;
    bool crossed = false;
    if (r.applied) {
      scope_state& st = scopes_[sc.id + "@" + sc.team];
      const bool budget = sc.budget.set();
      const bool held = !s.charge_only && (sc.limits.concurrency || budget) && st.held.remove(s.adm.lease);
      if (!s.charge_only && (sc.limits.rpm || sc.limits.tpm) && bucket >= first)
        if (auto it = st.rate.buckets.find(bucket); it != st.rate.buckets.end()) {
          it->second.second = it->second.second - s.adm.tokens + s.tokens;
          st.rate.tokens = st.rate.tokens - s.adm.tokens + s.tokens;
        }
      if (budget) {
        const std::string pid = settled_period(i < s.periods.size() ? s.periods[i] : std::string(), now);
        if (later_period(st.pid, pid)) {  // first news of a new period
          st.pid = pid;
          st.spent = 0;
          st.soft_reported = 0;
        }
        // Saturated as admit.lua does (4e18): absurd reported costs never wrap to a negative spend.
        st.spent = s.cost_nano > spent_max - st.spent ? spent_max : st.spent + s.cost_nano;
        if (held) st.reserved -= s.adm.cost_nano;
        spent = st.spent;
        const std::int64_t soft = soft_nano(sc);
        if (soft > 0 && spent >= soft && st.soft_reported != soft) {
          st.soft_reported = soft;
          crossed = true;
        }
      }
    }
    r.spent.push_back(spent);
    r.soft_crossed.push_back(crossed);
  }
  return r;
}

budget_state memory_store::budget_now(const scope_spec& s) {
  std::lock_guard lock(mu_);
  budget_state b;
  b.reachable = true;
  if (!s.budget.set()) return b;
  const std::int64_t now = now_();
  auto& st = scopes_[s.id + "@" + s.team];
  st.reserved -= st.held.sweep(now).second;
  b.spent = spend_counted(st.pid, st.spent, period_id(s.budget.period, now), now);
  b.reserved = st.reserved;
  return b;
}

void memory_store::renew_now(const admission& a, std::int64_t expiry_ms) {
  std::lock_guard lock(mu_);
  for (auto& sc : a.scopes) {
    auto it = scopes_.find(sc.id + "@" + sc.team);
    if (it == scopes_.end()) continue;
    auto& held = it->second.held;
    if (auto h = held.holds.find(a.lease); h != held.holds.end()) held.add(a.lease, expiry_ms, h->second);
  }
}

awaitable<key_lookup> memory_store::get_key(unsigned, std::string id) {
  std::lock_guard lock(mu_);
  key_lookup r{true, std::nullopt, {}};
  if (auto it = keys_.find(id); it != keys_.end()) {
    r.key = it->second;
    r.stored = key_to_json(it->second);
  }
  co_return r;
}

awaitable<write_result> memory_store::replace_key(unsigned, key_record k, std::string stored) {
  std::lock_guard lock(mu_);
  const auto it = keys_.find(k.id);
  if ((it == keys_.end() ? std::string() : key_to_json(it->second)) != stored) co_return write_result::changed;
  keys_[k.id] = std::move(k);
  co_return write_result::written;
}

awaitable<bool> memory_store::put_key(unsigned, key_record k) {
  std::lock_guard lock(mu_);
  keys_[k.id] = std::move(k);
  co_return true;
}

awaitable<std::optional<key_page>> memory_store::list_keys(unsigned, key_query q) {
  std::lock_guard lock(mu_);
  key_page out;
  for (auto it = keys_.upper_bound(q.after); it != keys_.end(); ++it) {
    if (!q.team.empty() && it->second.team != q.team) continue;
    if (out.keys.size() == q.limit) {
      out.has_more = true;
      break;
    }
    out.keys.push_back(it->second);
  }
  co_return out;
}

awaitable<team_lookup> memory_store::get_team(unsigned, std::string name) {
  std::lock_guard lock(mu_);
  team_lookup r{true, std::nullopt, {}};
  if (auto it = teams_.find(name); it != teams_.end()) {
    r.team = it->second;
    r.stored = team_to_json(it->second);
  }
  co_return r;
}

awaitable<write_result> memory_store::replace_team(unsigned, team_record t, std::string stored) {
  std::lock_guard lock(mu_);
  const auto it = teams_.find(t.name);
  if ((it == teams_.end() ? std::string() : team_to_json(it->second)) != stored) co_return write_result::changed;
  teams_[t.name] = std::move(t);
  co_return write_result::written;
}

awaitable<bool> memory_store::put_team(unsigned, team_record t) {
  std::lock_guard lock(mu_);
  teams_[t.name] = std::move(t);
  co_return true;
}

awaitable<write_result> memory_store::delete_team(unsigned, std::string name, std::string stored) {
  std::lock_guard lock(mu_);
  const auto it = teams_.find(name);
  if (it == teams_.end() || team_to_json(it->second) != stored) co_return write_result::changed;
  teams_.erase(it);
  co_return write_result::written;
}

awaitable<std::optional<std::vector<team_record>>> memory_store::list_teams(unsigned) {
  std::lock_guard lock(mu_);
  std::vector<team_record> out;
  for (auto& [name, t] : teams_) out.push_back(t);
  co_return out;
}

awaitable<bool> memory_store::add_usage(unsigned, std::vector<usage_row> rows) {
  std::lock_guard lock(mu_);
  for (auto& r : rows) usage_[r.id()].add(r);
  co_return true;
}

awaitable<std::optional<std::vector<usage_row>>> memory_store::usage(unsigned, std::int64_t from_hour,
                                                                     std::int64_t to_hour) {
  std::lock_guard lock(mu_);
  std::vector<usage_row> out;
  for (auto& [k, r] : usage_)
    if (r.hour >= from_hour && r.hour < to_hour) out.push_back(r);
  co_return out;
}

awaitable<bool> memory_store::publish_invalidation(unsigned, std::string id) {
  std::vector<std::function<void(std::string_view)>> ls;
  {
    std::lock_guard lock(mu_);
    ls = listeners_;
  }
  for (auto& l : ls) l(id);
  co_return true;
}

void memory_store::on_invalidation(std::function<void(std::string_view)> cb) {
  std::lock_guard lock(mu_);
  listeners_.push_back(std::move(cb));
}

}  // namespace tollgate::policy
