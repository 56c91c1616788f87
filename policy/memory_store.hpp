// SPDX-License-Identifier: Apache-2.0
#pragma once
/// The embedded store: the same semantics as the Redis script (admit.lua), in
/// process, under one mutex. Used by quickstart and single-node deployments, and as the
/// per-instance fallback for rate limits while Redis is unreachable.
#include <functional>
#include <map>
#include <mutex>
#include <unordered_map>

#include "policy/store.hpp"

namespace tollgate::policy {

class memory_store final : public store {
 public:
  using clock_fn = std::function<std::int64_t()>;  ///< milliseconds since the epoch
  explicit memory_store(clock_fn now = {}, std::int64_t window_ms = 60'000);

  std::string_view kind() const override { return "memory"; }
  std::int64_t clock_ms(unsigned) const override { return now_(); }
  awaitable<admit_result> admit(unsigned, const admission& a) override { co_return admit_now(a); }
  awaitable<std::vector<settle_result>> settle_batch(unsigned, std::vector<settlement> batch) override {
    std::vector<settle_result> out;
    for (auto& s : batch) out.push_back(settle_now(s));
    co_return out;
  }
  /// Applied at once (nothing to carry it): the same order and result as a queued one.
  void queue_settlement(unsigned worker, settlement s, executor_t) override {
    std::vector<settle_result> r{settle_now(s)};
    std::vector<settlement> one;
    one.push_back(std::move(s));
    report_settled(worker, one, r, true);
  }
  awaitable<budget_state> budget(unsigned, const scope_spec& s) override { co_return budget_now(s); }
  awaitable<bool> renew(unsigned, const admission& a, std::int64_t expiry_ms) override {
    renew_now(a, expiry_ms);
    co_return true;
  }
  awaitable<key_lookup> get_key(unsigned, std::string id) override;
  awaitable<bool> put_key(unsigned, key_record k) override;
  awaitable<write_result> replace_key(unsigned, key_record k, std::string stored) override;
  awaitable<std::optional<key_page>> list_keys(unsigned, key_query q) override;
  awaitable<team_lookup> get_team(unsigned, std::string name) override;
  awaitable<bool> put_team(unsigned, team_record t) override;
  awaitable<write_result> replace_team(unsigned, team_record t, std::string stored) override;
  awaitable<write_result> delete_team(unsigned, std::string name, std::string stored) override;
  awaitable<std::optional<std::vector<team_record>>> list_teams(unsigned) override;
  awaitable<bool> add_usage(unsigned, std::vector<usage_row> rows) override;
  awaitable<std::optional<std::vector<usage_row>>> usage(unsigned, std::int64_t from_hour, std::int64_t to_hour) override;
  awaitable<bool> publish_invalidation(unsigned, std::string id) override;
  void on_invalidation(std::function<void(std::string_view)> cb) override;

  // Synchronous forms (the local fallback calls these directly).
  admit_result admit_now(const admission& a);
  settle_result settle_now(const settlement& s);
  budget_state budget_now(const scope_spec& s);
  void renew_now(const admission& a, std::int64_t expiry_ms);

 private:
  /// Requests and tokens per bucket of window/30, with running sums (admit.lua's <p>:w hash).
  struct rate_window {
    std::map<std::int64_t, std::pair<std::uint64_t, std::uint64_t>> buckets;  ///< bucket -> {requests, tokens}
    std::uint64_t requests = 0, tokens = 0;
    std::int64_t lo = 0;  ///< oldest bucket that may hold counts
    bool used = false;
  };
  /// Leases scored by expiry with their amounts (admit.lua's <p>:l): budgets sum them;
  /// concurrency counts those admitted under a concurrency limit (as admit.lua's `c`), so that a
  /// limit added by a reload does not count calls admitted without one, which never release it.
  struct leases {
    struct hold {
      std::int64_t amount = 0;
      bool counted = false;  ///< admitted under a concurrency limit
    };
    std::multimap<std::int64_t, std::string> by_expiry;
    std::unordered_map<std::string, hold> holds;
    std::size_t counted = 0;  ///< holds with `counted`
    /// Drops the holds expired at `now`: {how many of them counted, amount freed}.
    std::pair<std::size_t, std::int64_t> sweep(std::int64_t now);
    void add(const std::string& lease, std::int64_t expiry, hold h);
    bool remove(const std::string& lease);
  };
  struct scope_state {
    rate_window rate;
    leases held;
    std::string pid;  ///< budget period the spend belongs to
    std::int64_t spent = 0, reserved = 0;
    /// The soft threshold (nano-USD) last reported in this period, 0: none. A threshold an admin
    /// changed mid-period is reported again at its new level (admit.lua keeps the same).
    std::int64_t soft_reported = 0;
  };
  void roll(rate_window& w, std::int64_t cur) const;
  static constexpr std::int64_t buckets = window_buckets;

  clock_fn now_;
  std::int64_t window_ms_, bucket_ms_;
  std::mutex mu_;
  std::unordered_map<std::string, scope_state> scopes_;
  std::unordered_map<std::string, std::int64_t> inflight_;  ///< lease -> admission time, until settled
  /// Leases of charge-only settlements applied (settlement::charge_only) -> when: kept a day, so a
  /// charge sent again is applied once.
  std::unordered_map<std::string, std::int64_t> charged_;
  std::map<std::string, key_record> keys_;
  std::map<std::string, team_record> teams_;
  std::map<std::string, usage_row> usage_;  ///< by "<hour>|<team>|<key>|<model>"
  std::vector<std::function<void(std::string_view)>> listeners_;
};

}  // namespace tollgate::policy
