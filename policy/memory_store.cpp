// SPDX-License-Identifier: Apache-2.0
#include "policy/memory_store.hpp"

#include <chrono>

namespace tollgate::policy {

memory_store::memory_store(clock_fn now, std::int64_t window_ms) : now_(std::move(now)), window_ms_(window_ms) {
  if (!now_)
    now_ = [] {
      return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
          .count();
    };
}

void memory_store::leases::expire(std::int64_t now) {
  while (!by_expiry.empty() && by_expiry.begin()->first <= now) {
    auto it = amount.find(by_expiry.begin()->second);
    if (it != amount.end()) {
      reserved -= it->second;
      amount.erase(it);
    }
    by_expiry.erase(by_expiry.begin());
  }
}

void memory_store::leases::add(const std::string& lease, std::int64_t expiry, std::int64_t amt) {
  if (auto old = take(lease)) (void)old;
  by_expiry.emplace(expiry, lease);
  amount[lease] = amt;
  reserved += amt;
}

std::optional<std::int64_t> memory_store::leases::take(const std::string& lease) {
  auto it = amount.find(lease);
  if (it == amount.end()) return std::nullopt;
  const std::int64_t a = it->second;
  amount.erase(it);
  reserved -= a;
  for (auto e = by_expiry.begin(); e != by_expiry.end(); ++e)
    if (e->second == lease) {
      by_expiry.erase(e);
      break;
    }
  return a;
}

void memory_store::expire_window(window& w, std::int64_t now) {
  const std::int64_t cutoff = now - window_ms_;
  while (!w.log.empty() && w.log.begin()->first <= cutoff) {
    auto it = w.amount.find(w.log.begin()->second);
    if (it != w.amount.end()) {
      w.sum -= it->second;
      w.amount.erase(it);
    }
    w.log.erase(w.log.begin());
  }
}

admit_result memory_store::admit_now(const admission& a) {
  std::lock_guard lock(mu_);
  const std::int64_t t = now();
  admit_result r;
  r.periods.resize(a.scopes.size());
  std::vector<scope_state*> states;
  // Pass 1: check every scope and kind.
  for (std::size_t i = 0; i < a.scopes.size(); ++i) {
    const auto& sc = a.scopes[i];
    scope_state& st = scopes_[sc.id];
    states.push_back(&st);
    const auto& l = sc.limits;
    auto refuse = [&](verdict v, std::int64_t retry) {
      r.v = v;
      r.scope = i;
      r.retry_after_ms = retry;
      return r;
    };
    if (l.rpm) {
      expire_window(st.rpm, t);
      if (st.rpm.log.size() >= l.rpm) return refuse(verdict::rpm, std::max<std::int64_t>(1, st.rpm.log.begin()->first + window_ms_ - t));
    }
    if (l.tpm) {
      expire_window(st.tpm, t);
      if (st.tpm.sum + a.tokens > l.tpm)
        return refuse(verdict::tpm, st.tpm.log.empty() ? window_ms_ : std::max<std::int64_t>(1, st.tpm.log.begin()->first + window_ms_ - t));
    }
    if (l.concurrency) {
      st.conc.expire(t);
      if (st.conc.amount.size() >= l.concurrency) return refuse(verdict::concurrency, 1000);
    }
    if (sc.budget.set()) {
      r.periods[i] = period_id(sc.budget.period, t);
      budget_cell& b = st.budgets[r.periods[i]];
      b.held.expire(t);
      if (b.spent + b.held.reserved + a.cost_nano > sc.budget.limit_nano) return refuse(verdict::budget, 0);
    }
  }
  // Pass 2: reserve in all of them.
  for (std::size_t i = 0; i < a.scopes.size(); ++i) {
    const auto& l = a.scopes[i].limits;
    scope_state& st = *states[i];
    if (l.rpm) st.rpm.log.emplace(t, a.lease);
    if (l.tpm) {
      st.tpm.log.emplace(t, a.lease);
      st.tpm.amount[a.lease] = a.tokens;
      st.tpm.sum += a.tokens;
    }
    if (l.concurrency) st.conc.add(a.lease, t + a.lease_ms, 1);
    if (a.scopes[i].budget.set()) st.budgets[r.periods[i]].held.add(a.lease, t + a.lease_ms, a.cost_nano);
  }
  r.v = verdict::admitted;
  return r;
}

settle_result memory_store::settle_now(const settlement& s) {
  std::lock_guard lock(mu_);
  const std::int64_t t = now();
  settle_result r;
  r.reachable = true;
  // Forget settlement markers after a day, as the Redis marker's TTL does.
  if (settled_.size() > 4096)
    std::erase_if(settled_, [&](const auto& kv) { return kv.second < t - 86'400'000; });
  if (!settled_.emplace(s.adm.lease, t).second) return r;
  r.applied = true;
  for (std::size_t i = 0; i < s.adm.scopes.size(); ++i) {
    const auto& sc = s.adm.scopes[i];
    scope_state& st = scopes_[sc.id];
    if (sc.limits.concurrency) st.conc.take(s.adm.lease);
    if (sc.limits.tpm)
      if (auto it = st.tpm.amount.find(s.adm.lease); it != st.tpm.amount.end()) {
        st.tpm.sum = st.tpm.sum - it->second + s.tokens;
        it->second = s.tokens;
      }
    std::int64_t spent = 0;
    bool crossed = false;
    const std::string& pid = i < s.periods.size() ? s.periods[i] : std::string();
    if (!pid.empty()) {
      budget_cell& b = st.budgets[pid];
      b.held.take(s.adm.lease);
      b.spent += s.cost_nano;
      spent = b.spent;
      const auto soft = static_cast<std::int64_t>(double(sc.budget.limit_nano) * sc.budget.soft);
      if (sc.budget.soft > 0 && spent >= soft && !b.soft_sent) crossed = b.soft_sent = true;
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
  const std::int64_t t = now();
  auto& cell = scopes_[s.id].budgets[period_id(s.budget.period, t)];
  cell.held.expire(t);
  b.spent = cell.spent;
  b.reserved = cell.held.reserved;
  return b;
}

awaitable<key_lookup> memory_store::get_key(unsigned, std::string id) {
  std::lock_guard lock(mu_);
  key_lookup r{true, std::nullopt};
  if (auto it = keys_.find(id); it != keys_.end()) r.key = it->second;
  co_return r;
}

awaitable<bool> memory_store::put_key(unsigned, key_record k) {
  std::lock_guard lock(mu_);
  keys_[k.id] = std::move(k);
  co_return true;
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
