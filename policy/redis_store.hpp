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
  awaitable<key_lookup> get_key(unsigned worker, std::string id) override;
  awaitable<bool> put_key(unsigned worker, key_record k) override;
  awaitable<bool> publish_invalidation(unsigned worker, std::string id) override;
  void on_invalidation(std::function<void(std::string_view)> cb) override;

  /// The three keys of a team (admit.lua explains them): <prefix>{<team>}:s, :l and :x.
  std::vector<std::string> team_keys(const std::string& team) const;

 private:
  /// EVALSHA, and EVAL once when the server does not know the script yet (NOSCRIPT).
  awaitable<boost::system::result<redis::reply>> eval(unsigned worker, const std::string& sha, const std::string& body,
                                                      std::vector<std::string> keys, std::vector<std::string> args);
  redis::connection& conn(unsigned worker) { return *conns_[worker % conns_.size()]; }

  config::redis_config cfg_;
  std::int64_t window_ms_;
  std::string admit_sha_, settle_sha_;
  std::vector<std::unique_ptr<redis::connection>> conns_;
  std::unique_ptr<redis::connection> sub_;
  std::vector<std::function<void(std::string_view)>> listeners_;
};

}  // namespace tollgate::policy
