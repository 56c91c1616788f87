// SPDX-License-Identifier: Apache-2.0
// The store conformance suite on the Redis store, against a real redis-server (integration):
// the same tests as the memory store, so the Lua scripts and the C++ store agree.
#include "policy/redis_store.hpp"

#include "tests/unit/policy/redis_server.hpp"
#include "tests/unit/policy/store_conformance.hpp"

namespace tollgate::policy::testing {
namespace {

tollgate::testing::redis_server& server() {
  static tollgate::testing::redis_server s;
  static const bool started = s.start();
  (void)started;
  return s;
}

struct redis_backend {
  // Real time passes on the Redis clock: a short window keeps the suite fast.
  static constexpr std::int64_t window_ms = 600;
  static std::unique_ptr<store> make(std::int64_t window) {
    auto& s = server();
    if (s.port() == 0) return nullptr;
    config::redis_config c;
    c.port = s.port();
    c.timeout_ms = 2000;  // behaviour, not latency (ASan builds too)
    c.connect_timeout_ms = 1000;
    // A fresh prefix per test: no state leaks between tests.
    static int n = 0;
    c.key_prefix = "conf" + std::to_string(::getpid()) + "-" + std::to_string(n++) + ":";
    return std::make_unique<redis_store>(c, window);
  }
  static void advance(store&, std::int64_t ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }
  static void wait_ready(store& st, net::io_context& ioc) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (!st.healthy() && std::chrono::steady_clock::now() < deadline) ioc.run_one_for(std::chrono::milliseconds(10));
    // The subscriber connects on its own; give it the same chance.
    const auto settle = std::chrono::steady_clock::now() + std::chrono::milliseconds(200);
    while (std::chrono::steady_clock::now() < settle) ioc.run_one_for(std::chrono::milliseconds(10));
  }
  template <class F>
  static void wait_for(F&& done, net::io_context& ioc) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (!done() && std::chrono::steady_clock::now() < deadline) ioc.run_one_for(std::chrono::milliseconds(10));
  }
};

INSTANTIATE_TYPED_TEST_SUITE_P(Redis, StoreConformance, redis_backend);

TEST(RedisStore, UnreachableRedisIsReportedNotHung) {
  config::redis_config c;
  c.port = 1;  // nothing listens there
  c.timeout_ms = 50;
  c.connect_timeout_ms = 50;
  net::io_context ioc;  // before the store: its connections' timers belong to this context
  redis_store st(c);
  st.start({executor_t(ioc.get_executor())});
  admission a;
  a.lease = "l";
  a.scopes = {scope("t", {1, 0, 0})};
  const auto t0 = std::chrono::steady_clock::now();
  auto r = run_sync(ioc, st.admit(0, a));
  EXPECT_EQ(r.v, verdict::unavailable);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(1));
  auto s = run_sync(ioc, st.settle(0, settlement{a, {""}, 1, 1}));
  EXPECT_FALSE(s.reachable);
  EXPECT_FALSE(run_sync(ioc, st.get_key(0, "x")).reachable);
  st.stop();
}

}  // namespace
}  // namespace tollgate::policy::testing
