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
  // A queued settlement comes back unreachable (its caller sends it again later), not lost.
  std::vector<settle_result> got;
  st.on_settled([&](unsigned, std::vector<settlement>& b, const std::vector<settle_result>& r, bool) {
    ASSERT_EQ(b.size(), 1u);
    EXPECT_EQ(b[0].adm.lease, "l");
    got.insert(got.end(), r.begin(), r.end());
  });
  st.queue_settlement(0, settlement{a, {""}, 1, 1}, executor_t(ioc.get_executor()));
  ioc.restart();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  while (got.empty() && std::chrono::steady_clock::now() < deadline) ioc.run_one_for(std::chrono::milliseconds(5));
  ASSERT_EQ(got.size(), 1u);
  EXPECT_FALSE(got[0].reachable);
  EXPECT_FALSE(run_sync(ioc, st.get_key(0, "x")).reachable);
  st.stop();
}

/// A Redis store on the test server with a fresh key prefix, started on `ioc`.
std::unique_ptr<redis_store> started_store(net::io_context& ioc) {
  auto st = redis_backend::make(60'000);
  if (!st) return nullptr;
  std::unique_ptr<redis_store> rs(static_cast<redis_store*>(st.release()));
  rs->start({executor_t(ioc.get_executor())});
  redis_backend::wait_ready(*rs, ioc);
  return rs;
}

TEST(RedisStore, SettlementsRideTheNextAdmissionOfTheirTeamAndGoAloneOtherwise) {
  net::io_context ioc;
  auto st = started_store(ioc);
  if (!st) GTEST_SKIP() << "no redis-server";
  struct report {
    std::string lease;
    bool applied, own_trip;
  };
  std::vector<report> got;
  st->on_settled([&](unsigned, std::vector<settlement>& b, const std::vector<settle_result>& r, bool own_trip) {
    for (std::size_t i = 0; i < b.size(); ++i) got.push_back({b[i].adm.lease, r[i].reachable && r[i].applied, own_trip});
  });
  const executor_t ex(ioc.get_executor());
  auto call = [](std::string lease, std::string team) {
    admission a;
    a.lease = std::move(lease);
    a.scopes = {scope_spec{"t", std::move(team), {0, 0, 1}, {}}};
    return a;
  };
  const admission a1 = call("a1", "team-a"), a2 = call("a2", "team-a"), b1 = call("b1", "team-b");
  const auto r1 = run_sync(ioc, st->admit(0, a1));
  const auto rb = run_sync(ioc, st->admit(0, b1));
  ASSERT_EQ(r1.v, verdict::admitted);
  ASSERT_EQ(rb.v, verdict::admitted);
  // a1's settlement rides a2's admission (which needs a1's slot); b1's, of another team, goes too.
  auto admitted = net::co_spawn(ioc, st->admit(0, a2), net::use_future);
  st->queue_settlement(0, settlement{a1, r1.periods, 1, 0, r1.admitted_at_ms}, ex);
  st->queue_settlement(0, settlement{b1, rb.periods, 1, 0, rb.admitted_at_ms}, ex);
  ioc.restart();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while ((got.size() < 2 || admitted.wait_for(std::chrono::seconds(0)) != std::future_status::ready) &&
         std::chrono::steady_clock::now() < deadline)
    ioc.run_one_for(std::chrono::milliseconds(5));
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(admitted.get().v, verdict::admitted);
  for (auto& g : got) {
    EXPECT_TRUE(g.applied) << g.lease;
    // Only the call of a2's team rode along.
    EXPECT_EQ(g.own_trip, g.lease == "b1") << g.lease;
  }
  st->stop();
}

}  // namespace
}  // namespace tollgate::policy::testing
