// SPDX-License-Identifier: Apache-2.0
#pragma once
/// The shared store: one Redis (or a Redis Cluster: every key of a team carries the team as a
/// hash tag) for every replica. Admission and settlement are one EVALSHA each (admit.lua,
/// settle.lua), with the Redis server's clock. One connection per worker (pipelined, never
/// shared across threads) and one subscriber connection for key invalidations.
#include <memory>
#include <vector>

#include "policy/redis_client.hpp"
#include "policy/store.hpp"

namespace tollgate::policy {

class redis_store final : public store {
 public:
  /// `window_ms` is 60 000 in production; tests shorten it.
  explicit redis_store(config::redis_config cfg, std::int64_t window_ms = 60'000);
  ~redis_store() override;

  std::string_view kind() const override { return "redis"; }
  void start(const std::vector<executor_t>& workers) override;
  void stop() override;
  bool healthy() const override;

  awaitable<admit_result> admit(unsigned worker, const admission& a) override;
  awaitable<std::vector<settle_result>> settle_batch(unsigned worker, std::vector<settlement> batch) override;
  awaitable<budget_state> budget(unsigned worker, const scope_spec& s) override;
  awaitable<bool> renew(unsigned worker, const admission& a, std::int64_t expiry_ms) override;
  awaitable<key_lookup> get_key(unsigned worker, std::string id) override;
  awaitable<bool> put_key(unsigned worker, key_record k) override;
  awaitable<std::optional<std::vector<key_record>>> list_keys(unsigned worker) override;
  awaitable<team_lookup> get_team(unsigned worker, std::string name) override;
  awaitable<bool> put_team(unsigned worker, team_record t) override;
  awaitable<bool> delete_team(unsigned worker, std::string name) override;
  awaitable<std::optional<std::vector<team_record>>> list_teams(unsigned worker) override;
  awaitable<bool> add_usage(unsigned worker, std::vector<usage_row> rows) override;
  awaitable<std::optional<std::vector<usage_row>>> usage(unsigned worker, std::int64_t from_hour,
                                                         std::int64_t to_hour) override;
  awaitable<bool> publish_invalidation(unsigned worker, std::string id) override;
  void on_invalidation(std::function<void(std::string_view)> cb) override;

  /// A team's two lease sets (admit.lua explains them): <prefix>{<team>}:l and :x.
  std::vector<std::string> team_keys(const std::string& team) const;
  /// <prefix>{<team>}:<suffix>: every key of a team shares its hash tag (one Cluster slot).
  std::string scope_key(const std::string& team, const std::string& suffix) const;
  /// Appends the scope hashes of `a` not in `keys` yet (scripts declare every key they touch).
  void add_scope_keys(std::vector<std::string>& keys, const admission& a) const;

 private:
  /// EVALSHA, and EVAL once when the server does not know the script yet (NOSCRIPT).
  awaitable<boost::system::result<redis::reply>> eval(unsigned worker, const std::string& sha, std::string_view body,
                                                      const std::vector<std::string>& keys, const redis::resp_args& args);
  redis::connection& conn(unsigned worker) { return *conns_[worker % conns_.size()]; }
  /// The documents of an index set ("<prefix><kind>s" of ids, "<prefix><kind>:<id>" each).
  awaitable<std::optional<std::vector<std::string>>> members_docs(unsigned worker, std::string kind);

  /// An admission waiting for its worker's next batch.
  struct pending_admit {
    const admission* a = nullptr;  ///< owned by the awaiting caller, alive until it resumes
    admit_result result;
    bool done = false;
    std::function<void()> wake;
  };
  /// Admission batches a worker keeps on the wire at once. Measured: two gave no more throughput
  /// on the benchmark machine (CPU-bound) and smaller batches cost Redis more, so one.
  static constexpr unsigned max_flushers = 1;
  struct admit_queue {
    std::vector<std::shared_ptr<pending_admit>> items;
    unsigned flushers = 0;  ///< batches on the wire (at most max_flushers)
  };
  /// Sends the worker's queued admissions, one batch per team and round trip, until none is left.
  awaitable<void> flush_admissions(unsigned worker);
  /// admit.lua's arguments for a batch: header, scope specs (deduplicated), then the calls.
  redis::resp_args admit_args(const std::vector<const admission*>& calls) const;
  /// One call's results (four integers from `at`) in admit.lua's reply.
  static admit_result parse_admit(const std::vector<redis::reply>& e, std::size_t at, const admission& a,
                                  std::int64_t now_ms);
  /// The lease as admit.lua holds it and settle.lua finds it: "<lease>|<scope>=<c>=<amount>|...".
  static std::string lease_member(const admission& a);
  /// lease_member() written into `out` (cleared first): no allocation once `out` has grown.
  static void lease_member(const admission& a, std::string& out);

  config::redis_config cfg_;
  std::vector<admit_queue> admit_queues_;  ///< per worker; touched only on that worker's thread
  std::int64_t window_ms_;
  std::string admit_sha_, settle_sha_;
  std::vector<std::unique_ptr<redis::connection>> conns_;
  std::unique_ptr<redis::connection> sub_;
  std::vector<std::function<void(std::string_view)>> listeners_;
};

}  // namespace tollgate::policy
