// SPDX-License-Identifier: Apache-2.0
// The store conformance suite on the Redis store, against a real redis-server (integration):
// the same tests as the memory store, so the Lua scripts and the C++ store agree.
#include "policy/redis_store.hpp"

#include "policy/redis_client.hpp"
#include "policy/scripts.hpp"

#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include "tests/unit/policy/redis_server.hpp"
#include "tests/unit/policy/store_conformance.hpp"

namespace tollgate::policy::testing {
namespace {

/// The suite's shared redis-server, started on first use. Its port is drawn before it starts:
/// whether it came up is server_up(), not a port of 0.
tollgate::testing::redis_server& server() {
  static tollgate::testing::redis_server s;
  return s;
}
bool server_up() {
  static const bool started = server().start();
  return started;
}

/// The config of a store under test on `port`: timeouts for behaviour, not latency (ASan builds
/// too), and its own key prefix.
config::redis_config test_config(std::uint16_t port, std::string key_prefix) {
  config::redis_config c;
  c.port = port;
  c.timeout_ms = 2000;
  c.connect_timeout_ms = 1000;
  c.key_prefix = std::move(key_prefix);
  return c;
}

struct redis_backend {
  // Real time passes on the Redis clock: a short window keeps the suite fast.
  static constexpr std::int64_t window_ms = 600;
  static std::unique_ptr<store> make(std::int64_t window) {
    if (!server_up()) return nullptr;
    auto& s = server();
    // A fresh prefix per test: no state leaks between tests.
    static int n = 0;
    return std::make_unique<redis_store>(
        test_config(s.port(), "conf" + std::to_string(::getpid()) + "-" + std::to_string(n++) + ":"), window);
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

/// The same store with the batch sums off: every batch goes through admit.lua's call-by-call
/// path, which otherwise runs only when a call does not fit or a lease is not found.
struct redis_call_by_call_backend : redis_backend {
  static std::unique_ptr<store> make(std::int64_t window) {
    auto st = redis_backend::make(window);
    if (st) static_cast<redis_store&>(*st).use_sums(false);
    return st;
  }
};

INSTANTIATE_TYPED_TEST_SUITE_P(RedisCallByCall, StoreConformance, redis_call_by_call_backend);

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
  EXPECT_FALSE(r.in_doubt) << "nothing was sent: no release is needed";
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
  EXPECT_EQ(redis_store::admissions_awaited(), 0) << "a failed admission is awaited no more";
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

/// What a store tells its owner: its notices ("<level>: <message>") and the results of its
/// queued settlements. Attach before start().
struct store_reports {
  std::vector<std::string> notices;
  std::vector<settle_result> settled;
  void attach(redis_store& st) {
    st.on_notice([this](std::string_view level, std::string_view msg) { notices.push_back(std::string(level) + ": " + std::string(msg)); });
    st.on_settled([this](unsigned, std::vector<settlement>&, const std::vector<settle_result>& r, bool) {
      settled.insert(settled.end(), r.begin(), r.end());
    });
  }
};

TEST(RedisStore, SettlementsRideTheNextAdmissionOfTheirTeamAndGoAloneOtherwise) {
  net::io_context ioc;
  auto st = started_store(ioc);
  if (!st) GTEST_FAIL() << "redis-server did not start (deploy/install-deps installs it)";
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

/// A call in one scope, worth `cost_nano`.
admission one_scope_call(std::string lease, const scope_spec& s, std::int64_t cost_nano) {
  admission a;
  a.lease = std::move(lease);
  a.scopes = {s};
  a.cost_nano = cost_nano;
  return a;
}

/// A call in two scopes (a team's and a key's), 10 tokens, worth 100 nano-USD.
admission two_scope_call(std::string lease, const scope_spec& first, const scope_spec& second) {
  admission a;
  a.lease = std::move(lease);
  a.scopes = {first, second};
  a.tokens = 10;
  a.cost_nano = 100;
  return a;
}

/// One command on its own connection to the test server (or the one on `port`), run to
/// completion (nullopt: none).
std::optional<redis::reply> raw_command(net::io_context& ioc, std::vector<std::string> args, std::uint16_t port = 0) {
  redis::options o;
  o.port = port ? port : (server_up(), server().port());
  o.timeout = std::chrono::seconds(2);
  o.connect_timeout = std::chrono::seconds(1);
  redis::connection c(executor_t(ioc.get_executor()), o);
  c.start();
  redis_backend::wait_for([&] { return c.up(); }, ioc);
  std::vector<std::string_view> argv(args.begin(), args.end());
  std::optional<redis::reply> out;
  net::co_spawn(ioc, c.command(std::span<const std::string_view>(argv)), [&](std::exception_ptr, auto r) {
    out = r ? *r : redis::reply{redis::reply::kind::error, 0, "no reply", {}};
  });
  redis_backend::wait_for([&] { return out.has_value(); }, ioc);
  c.close();
  return out;
}

TEST(RedisStore, TheScriptsCalendarAgreesWithPeriodIdOnEveryDayFrom1970To2400) {
  // admit.lua computes budget period ids on the Redis clock, and the memory store (and every
  // settlement's period) with period_id(): the two must agree, or a budget would reset on the
  // wrong day. The script's pid_of runs here on its own, at the first and the last millisecond
  // of every day for 430 years (leap years, centuries, 2000 and 2400 included).
  const std::string_view src = scripts::admit;
  const auto from = src.find("local pids = {}");
  const auto fn = src.find("local function pid_of(kind)", from);
  const auto to = src.find("\nend\n", fn);
  ASSERT_NE(from, std::string_view::npos);
  ASSERT_NE(fn, std::string_view::npos);
  ASSERT_NE(to, std::string_view::npos);
  const std::string script = "local floor = math.floor\nlocal now\n" + std::string(src.substr(from, to + 5 - from)) +
                             "local out = {}\n"
                             "for i = 1, #ARGV do now = ARGV[i] + 0; pids = {}; out[i] = pid_of('m') .. ' ' .. pid_of('d') end\n"
                             "return out\n";
  net::io_context ioc;
  ASSERT_TRUE(server_up()) << "redis-server did not start (deploy/install-deps installs it)";
  constexpr std::int64_t day = 86'400'000, days = 157'054;  // 1970-01-01 .. 2400-01-01 (+ a day)
  constexpr std::int64_t chunk = 5'000;
  std::int64_t checked = 0;
  for (std::int64_t d0 = 0; d0 < days; d0 += chunk) {
    std::vector<std::string> args{"EVAL", script, "0"};
    std::vector<std::int64_t> at;
    for (std::int64_t d = d0; d < std::min(days, d0 + chunk); ++d)
      for (const std::int64_t ms : {d * day, d * day + day - 1}) {
        at.push_back(ms);
        args.push_back(std::to_string(ms));
      }
    const auto r = raw_command(ioc, args);
    ASSERT_TRUE(r && r->type == redis::reply::kind::array) << (r ? r->str : "no reply");
    ASSERT_EQ(r->elements.size(), at.size());
    for (std::size_t i = 0; i < at.size(); ++i) {
      const std::string want = period_id(config::budget_period::monthly, at[i]) + " " +
                               period_id(config::budget_period::daily, at[i]);
      ASSERT_EQ(r->elements[i].str, want) << "at " << at[i] << " ms";
      ++checked;
    }
  }
  EXPECT_EQ(checked, 2 * days);
}

TEST(RedisStore, AnAdmissionIsAwaitedWhileOnTheWireAndASettlementAloneIsNot) {
  // The worker's event loop polls instead of sleeping while admissions_awaited() is above 0
  // (gateway/core/event_loop.hpp): it must count exactly the admission batches on the wire.
  net::io_context ioc;
  auto st = started_store(ioc);
  if (!st) GTEST_FAIL() << "redis-server did not start (deploy/install-deps installs it)";
  ASSERT_EQ(redis_store::admissions_awaited(), 0);
  const auto s = scope("t", {0, 0, 1});
  const admission a = one_scope_call("await1", s, 0);
  // Redis holds every client's commands for 300 ms: the batch stays on the wire meanwhile.
  const auto paused = raw_command(ioc, {"CLIENT", "PAUSE", "300"});
  ASSERT_TRUE(paused && paused->str == "OK");
  auto admitted = net::co_spawn(ioc, st->admit(0, a), net::use_future);
  ioc.restart();
  redis_backend::wait_for([] { return redis_store::admissions_awaited() == 1; }, ioc);
  EXPECT_EQ(redis_store::admissions_awaited(), 1);
  ASSERT_NE(admitted.wait_for(std::chrono::seconds(0)), std::future_status::ready);
  redis_backend::wait_for([&] { return admitted.wait_for(std::chrono::seconds(0)) == std::future_status::ready; }, ioc);
  const auto r = admitted.get();
  ASSERT_EQ(r.v, verdict::admitted);
  EXPECT_EQ(redis_store::admissions_awaited(), 0) << "answered: nothing is awaited";

  // Its settlement goes alone (no admission comes to carry it): nobody waits for that answer.
  bool settled = false;
  st->on_settled([&](unsigned, std::vector<settlement>&, const std::vector<settle_result>& res, bool) {
    settled = !res.empty() && res[0].reachable;
  });
  const auto paused_again = raw_command(ioc, {"CLIENT", "PAUSE", "100"});
  ASSERT_TRUE(paused_again && paused_again->str == "OK");
  st->queue_settlement(0, settlement{a, r.periods, 0, 0, r.admitted_at_ms}, executor_t(ioc.get_executor()));
  long most = 0;
  redis_backend::wait_for([&] {
    most = std::max(most, redis_store::admissions_awaited());
    return settled;
  }, ioc);
  EXPECT_TRUE(settled);
  EXPECT_EQ(most, 0);
  st->stop();
}

TEST(RedisStore, ACallSettledAfterMidnightIsChargedToTheNewDayEvenBeforeItsFirstAdmission) {
  // Redis's clock cannot be moved: the scope is put back to "yesterday" by hand, as if the call
  // had been admitted then and no admission had come since. Its settlement opens today's period.
  net::io_context ioc;
  auto st = started_store(ioc);
  if (!st) GTEST_FAIL() << "redis-server did not start (deploy/install-deps installs it)";
  auto b = budget_of(1'000);
  b.period = config::budget_period::daily;
  const scope_spec daily{"t", "team-midnight", {}, b};
  admission a = one_scope_call("midnight", daily, 100);
  const admit_result r = run_sync(ioc, st->admit(0, a));
  ASSERT_EQ(r.v, verdict::admitted);
  ASSERT_EQ(r.periods.size(), 1u);
  const std::string today = r.periods[0], yesterday = "d" + std::to_string(std::stoll(today.substr(1)) - 1);
  ASSERT_TRUE(raw_command(ioc, {"HSET", st->scope_key("team-midnight", "t"), "pid", yesterday, "spent", "500"}));
  settlement s{a, {yesterday}, 1, 80, r.admitted_at_ms};
  ASSERT_TRUE(run_sync(ioc, st->settle(0, s)).applied);
  const auto pid = raw_command(ioc, {"HGET", st->scope_key("team-midnight", "t"), "pid"});
  ASSERT_TRUE(pid);
  EXPECT_EQ(pid->str, today);
  const budget_state now = run_sync(ioc, st->budget(0, daily));
  EXPECT_EQ(now.spent, 80);  // yesterday's 500 is yesterday's
  EXPECT_EQ(now.reserved, 0);
  st->stop();
}

TEST(RedisStore, AChangeOfKindTakesTheNewKindsIdEvenWhenRefusedSoItsNextBoundaryResetsTheSpend) {
  // The spend carries over a change of the period's kind; the scope takes the new kind's id at
  // once, even when every call is refused, or the carried spend would never meet the new kind's
  // next boundary. A settlement of the old kind, and a read, leave the id alone; a stored period
  // that has ended carries nothing. (Redis's clock cannot be moved: the stored id is set by hand.)
  net::io_context ioc;
  auto st = started_store(ioc);
  if (!st) GTEST_FAIL() << "redis-server did not start (deploy/install-deps installs it)";
  auto b = budget_of(100);
  b.period = config::budget_period::daily;
  const scope_spec daily{"t", "team-kind", {}, b};
  auto mb = budget_of(100);
  mb.period = config::budget_period::monthly;
  const scope_spec monthly{"t", "team-kind", {}, mb};
  const std::string key = st->scope_key("team-kind", "t");
  const auto stored_pid = [&] {
    const auto r = raw_command(ioc, {"HGET", key, "pid"});
    return r ? r->str : std::string();
  };
  // A monthly call in flight when the config changes.
  const admission old_call = one_scope_call("old", monthly, 5);
  const admit_result old_r = run_sync(ioc, st->admit(0, old_call));
  ASSERT_EQ(old_r.v, verdict::admitted);
  const std::string month = stored_pid();
  ASSERT_EQ(month.rfind("m", 0), 0u) << month;
  ASSERT_TRUE(raw_command(ioc, {"HSET", key, "spent", "90"}));
  // A read under the new kind counts the month's spend, and changes nothing.
  EXPECT_EQ(run_sync(ioc, st->budget(0, daily)).spent, 90);
  EXPECT_EQ(stored_pid(), month);
  const admit_result refused = run_sync(ioc, st->admit(0, one_scope_call("k1", daily, 10)));
  EXPECT_EQ(refused.v, verdict::budget);  // 90 carried + 5 held + 10 > 100
  const std::string today = stored_pid();
  ASSERT_EQ(today.rfind("d", 0), 0u) << today;
  // The monthly call settles: charged to the current period, which stays today's.
  ASSERT_TRUE(run_sync(ioc, st->settle(0, settlement{old_call, old_r.periods, 1, 4, old_r.admitted_at_ms})).applied);
  EXPECT_EQ(stored_pid(), today);
  EXPECT_EQ(run_sync(ioc, st->budget(0, daily)).spent, 94);
  // The day turns (the stored id put back a day): the carried spend is gone.
  const std::string yesterday = "d" + std::to_string(std::stoll(today.substr(1)) - 1);
  ASSERT_TRUE(raw_command(ioc, {"HSET", key, "pid", yesterday}));
  EXPECT_EQ(run_sync(ioc, st->budget(0, daily)).spent, 0);
  EXPECT_EQ(run_sync(ioc, st->admit(0, one_scope_call("k2", daily, 10))).v, verdict::admitted);
  // A period of another kind that has ended (a month long gone) carries nothing either.
  ASSERT_TRUE(raw_command(ioc, {"HSET", key, "pid", "m202001", "spent", "95"}));
  EXPECT_EQ(run_sync(ioc, st->budget(0, daily)).spent, 0);
  EXPECT_EQ(run_sync(ioc, st->admit(0, one_scope_call("k3", daily, 10))).v, verdict::admitted);
  EXPECT_EQ(stored_pid(), today);
  st->stop();
}

/// A store of its own, one worker, on a redis-server of its own that a test stalls mid-call (the
/// admission script already loaded, as after another replica's calls, so a stalled EVALSHA runs
/// when Redis resumes). Team `team`: concurrency 1 and a budget.
struct stalled_redis {
  tollgate::testing::redis_server own;
  net::io_context ioc;
  std::unique_ptr<redis_store> st;
  scope_spec s;

  stalled_redis(std::uint32_t timeout_ms, const std::string& team) : s{"t", team, {0, 0, 1}, budget_of(1'000)} {
    if (!own.start()) return;
    config::redis_config c;
    c.port = own.port();
    c.timeout_ms = timeout_ms;
    c.connect_timeout_ms = 200;
    c.key_prefix = team + ":";
    st = std::make_unique<redis_store>(c, 60'000);
    st->start({executor_t(ioc.get_executor())});
    redis_backend::wait_ready(*st, ioc);
    if (!raw_command(ioc, {"SCRIPT", "LOAD", std::string(scripts::admit)}, own.port())) st.reset();
  }
  ~stalled_redis() {
    if (st) st->stop();
  }
  admit_result admit_full(const std::string& lease) { return run_sync(ioc, st->admit(0, one_scope_call(lease, s, 100))); }
  verdict admit(const std::string& lease) { return admit_full(lease).v; }

  /// After Redis resumed: once the store is back, a call is admitted (the slot is free) and it is
  /// the only one held or reserved: the stalled call holds nothing.
  void expect_nothing_held_but_the_next_call() {
    verdict after = verdict::unavailable;
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (after == verdict::unavailable && std::chrono::steady_clock::now() < until) after = admit("after");
    EXPECT_EQ(after, verdict::admitted);
    const auto held = raw_command(ioc, {"ZRANGE", st->scope_key(s.team, "l"), "0", "-1"}, own.port());
    ASSERT_TRUE(held);
    ASSERT_EQ(held->elements.size(), 2u);  // "after" and the pin; never "stalled"
    EXPECT_EQ(held->elements[0].str.rfind("after|", 0), 0u) << held->elements[0].str;
    const auto reserved = raw_command(ioc, {"HGET", st->scope_key(s.team, "t"), "res"}, own.port());
    ASSERT_TRUE(reserved);
    EXPECT_EQ(reserved->str, "100");  // "after" alone
  }
};

TEST(RedisStore, AnAdmissionRedisRunsAfterTheGatewayGaveUpReservesNothing) {
  // Redis stalls with an admission in its socket; the store gives up after timeout_ms and drops
  // the connection, but Redis runs the script when it resumes. Nobody would settle that call:
  // its concurrency slot and budget hold would stay until the lease expired. The batch's
  // deadline makes that late run reserve nothing. The stalled call is the store's very first
  // admission: the deadline comes from the Redis TIME read when the connection was made.
  stalled_redis r(50, "team-late");
  ASSERT_TRUE(r.st) << "redis-server did not start (deploy/install-deps installs it)";
  r.own.pause();
  const admit_result stalled = r.admit_full("stalled");
  EXPECT_EQ(stalled.v, verdict::unavailable);
  // Sent and never answered: for all the gateway knows Redis ran it, so the engine releases it.
  EXPECT_TRUE(stalled.in_doubt);
  r.own.resume();
  r.expect_nothing_held_but_the_next_call();
}

/// Bytes waiting in the receive queues of the sockets listening side on `port` has accepted
/// (/proc/net/tcp and tcp6): what clients have sent a stopped Redis that it has not read.
std::size_t unread_at_server(std::uint16_t port) {
  std::size_t total = 0;
  for (const char* table : {"/proc/net/tcp", "/proc/net/tcp6"}) {
    std::ifstream in(table);
    std::string line;
    std::getline(in, line);  // the header
    while (std::getline(in, line)) {
      std::istringstream f(line);
      std::string slot, local, remote, state, queues;
      f >> slot >> local >> remote >> state >> queues;
      const auto colon = local.rfind(':'), qcolon = queues.find(':');
      if (colon == std::string::npos || qcolon == std::string::npos || state != "01") continue;  // established only
      if (std::stoul(local.substr(colon + 1), nullptr, 16) != port) continue;
      total += std::stoul(queues.substr(qcolon + 1), nullptr, 16);
    }
  }
  return total;
}

TEST(RedisStore, AdmissionsOfManyTeamsGoOutTogetherNotOneRoundTripEach) {
  // A batch holds one team's calls (its script stays in one Cluster slot). Batches of different
  // teams went one round trip after another: the sixteenth team's call waited sixteen round
  // trips, and a worker admitted about two calls per round trip. Now the teams queued while a
  // batch is on the wire go out together when it is answered. Seen from a stopped Redis: what
  // reaches its socket. (The test runs the store's io_context itself, so it decides when the
  // store reads Redis's answers.)
  stalled_redis r(5'000, "rounds");
  ASSERT_TRUE(r.st) << "redis-server did not start (deploy/install-deps installs it)";
  std::vector<admission> calls;
  calls.reserve(17);  // (admit keeps a reference to each)
  for (int i = 0; i < 17; ++i) {
    const scope_spec s{"t", "rt-" + std::to_string(10 + i), {0, 0, 1}, budget_of(1'000)};
    calls.push_back(one_scope_call("round-" + std::to_string(i), s, 100));
  }
  auto run = [&](int ms) {
    r.ioc.restart();
    r.ioc.run_for(std::chrono::milliseconds(ms));
  };
  r.own.pause();
  std::vector<std::future<admit_result>> futs;
  futs.push_back(net::co_spawn(r.ioc, r.st->admit(0, calls[0]), net::use_future));
  run(100);  // the first team's batch is on the wire, unanswered
  const std::size_t one = unread_at_server(r.own.port());
  ASSERT_GT(one, 0u) << "the first batch reached Redis's socket";
  for (int i = 1; i < 17; ++i) futs.push_back(net::co_spawn(r.ioc, r.st->admit(0, calls[std::size_t(i)]), net::use_future));
  run(100);  // sixteen more teams queue behind it (a second batch may go meanwhile)
  const std::size_t before = unread_at_server(r.own.port());
  // Redis answers what it has; the store reads those answers only once Redis is stopped again.
  r.own.resume();
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  r.own.pause();
  ASSERT_EQ(unread_at_server(r.own.port()), 0u) << "Redis read what was sent";
  run(100);
  const std::size_t after = unread_at_server(r.own.port());
  r.own.resume();
  for (std::size_t i = 0; i < futs.size(); ++i) {
    while (futs[i].wait_for(std::chrono::seconds(0)) != std::future_status::ready) r.ioc.run_one_for(std::chrono::milliseconds(5));
    EXPECT_EQ(futs[i].get().v, verdict::admitted) << "call " << i;
  }
  const std::size_t queued_batches = 17 - before / one;  // (before: the first, and a second batch or not)
  EXPECT_GE(after, (queued_batches - 1) * one) << "the " << queued_batches << " queued teams' batches did not go out together: "
                                               << after << " bytes sent, " << one << " a batch";
}

TEST(RedisStore, AnAdmissionWhoseConnectionBrokeBeforeTheAnswerIsInDoubt) {
  // The admission is in Redis's socket when the connection breaks (here Redis dies, stalled, so
  // the kernel resets it), long before the store's timeout. For all the store knows Redis ran the
  // script and the answer was lost with the connection: in doubt, so the engine sends a release.
  stalled_redis r(5'000, "team-reset");
  ASSERT_TRUE(r.st) << "redis-server did not start (deploy/install-deps installs it)";
  r.own.pause();
  const auto start = std::chrono::steady_clock::now();
  const admission call = one_scope_call("broken", r.s, 100);  // (admit keeps a reference to it)
  auto fut = net::co_spawn(r.ioc, r.st->admit(0, call), net::use_future);
  r.ioc.restart();
  r.ioc.run_for(std::chrono::milliseconds(50));  // the batch is written
  ASSERT_NE(fut.wait_for(std::chrono::seconds(0)), std::future_status::ready);
  r.own.kill();
  while (fut.wait_for(std::chrono::seconds(0)) != std::future_status::ready) r.ioc.run_one_for(std::chrono::milliseconds(5));
  const admit_result broken = fut.get();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2)) << "the reset, not the timeout";
  EXPECT_EQ(broken.v, verdict::unavailable);
  EXPECT_TRUE(broken.in_doubt);
  // Nothing is in doubt once the store knows it is not connected: refused before sending.
  const admit_result unsent = r.admit_full("unsent");
  EXPECT_EQ(unsent.v, verdict::unavailable);
  EXPECT_FALSE(unsent.in_doubt);
}

TEST(RedisStore, ABatchSentBehindAnOlderCommandIsDueWhenThatOneIsGivenUp) {
  // Redis stalls with a key lookup on the wire; an admission follows 60 ms later. When the
  // lookup times out (100 ms), the connection is dropped and the admission fails with it, 40 ms
  // before its own timeout. Its deadline must be that moment, not its own timeout: Redis resumes
  // in between, and would otherwise admit a call nobody settles.
  stalled_redis r(100, "team-behind");
  ASSERT_TRUE(r.st) << "redis-server did not start (deploy/install-deps installs it)";
  r.own.pause();
  net::co_spawn(r.ioc, r.st->get_key(0, "nobody"), net::detached);
  r.ioc.run_for(std::chrono::milliseconds(60));
  EXPECT_EQ(r.admit("stalled"), verdict::unavailable);
  r.own.resume();  // ~100 ms after the lookup: before the admission's own timeout would have passed
  r.expect_nothing_held_but_the_next_call();
}

TEST(RedisStore, AnInvalidationChannelRedisRefusesIsReportedWithItsReason) {
  // A Redis 7 ACL user without channel permissions (`resetchannels`, the default for new users
  // there): SUBSCRIBE and PUBLISH are refused. Revocations then reach this replica only as its
  // key cache expires: said at once, with Redis's answer, not left to a silent retry loop.
  ASSERT_TRUE(server_up()) << "redis-server did not start (deploy/install-deps installs it)";
  auto& srv = server();
  net::io_context ioc;
  const std::string user = "nochan" + std::to_string(::getpid());
  ASSERT_TRUE(raw_command(ioc, {"ACL", "SETUSER", user, "reset", "on", ">pw-nochan", "~*", "+@all", "resetchannels"}));
  config::redis_config c = test_config(srv.port(), "nochan" + std::to_string(::getpid()) + ":");
  c.username = user;
  c.password = "pw-nochan";
  redis_store st(c, 60'000);
  std::vector<std::string> notices;
  st.on_notice([&](std::string_view level, std::string_view message) { notices.push_back(std::string(level) + " " + std::string(message)); });
  st.start({executor_t(ioc.get_executor())});
  auto told = [&](std::string_view what) {
    return std::any_of(notices.begin(), notices.end(), [&](const std::string& n) { return n.find(what) != std::string::npos; });
  };
  redis_backend::wait_for([&] { return told("the key invalidation channel is down"); }, ioc);
  EXPECT_TRUE(told("warn the key invalidation channel is down (SUBSCRIBE ")) << notices.size();
  EXPECT_TRUE(told("allchannels") || told("NOPERM"));
  // (The command connection may still be in its handshake when the subscriber is refused.)
  redis_backend::wait_for([&] { return st.healthy(); }, ioc);
  EXPECT_FALSE(run_sync(ioc, st.publish_invalidation(0, "k1")));
  EXPECT_TRUE(told("warn an invalidation could not be published (NOPERM")) << (notices.empty() ? "" : notices.back());
  for (const auto& n : notices) EXPECT_EQ(n.find("pw-nochan"), std::string::npos) << n;
  st.stop();
  (void)raw_command(ioc, {"ACL", "DELUSER", user});
}

TEST(RedisStore, AnAclUserWithTheDocumentedCommandsRunsEveryPath) {
  // docs/policy.md lists what an ACL user for Tollgate needs. A user with exactly that list (and
  // the documented key and channel patterns) runs every store path: admissions under every kind
  // of limit and a budget, a settlement riding an admission, a settlement alone, a renewal, a
  // budget read, key and team writes (compare-and-set included), listings, usage and an
  // invalidation. A command missing from the list fails here, not in an operator's Redis.
  ASSERT_TRUE(server_up()) << "redis-server did not start (deploy/install-deps installs it)";
  auto& srv = server();
  net::io_context ioc;
  const std::string user = "acl" + std::to_string(::getpid());
  const std::string prefix = "acl" + std::to_string(::getpid()) + ":";
  std::vector<std::string> acl = {"ACL", "SETUSER", user, "reset", "on", ">pw-acl", "~" + prefix + "*",
                                   "&" + prefix + "invalidate"};
  for (const char* c : {"auth", "select", "ping", "time", "evalsha", "eval", "get", "set", "del", "sadd", "srem",
                        "sscan", "hincrby", "expire", "hgetall", "zadd", "publish", "subscribe", "hmget", "hset",
                        "hdel", "zrem", "zmscore", "zrangebyscore", "zremrangebyscore", "scard", "zcard",
                        "zrangebylex"})
    acl.push_back(std::string("+") + c);
  ASSERT_TRUE(raw_command(ioc, acl));
  config::redis_config c = test_config(srv.port(), prefix);
  c.username = user;
  c.password = "pw-acl";
  redis_store st(c, 60'000);
  store_reports told;
  told.attach(st);
  auto& rode = told.settled;
  st.start({executor_t(ioc.get_executor())});
  redis_backend::wait_ready(st, ioc);
  ASSERT_TRUE(st.healthy()) << st.last_error();

  const scope_spec team{"t", "acl-team", {100, 10'000, 2}, budget_of(1'000)};
  const scope_spec key{"k", "acl-team", {100, 10'000, 2}, budget_of(1'000)};
  auto call = [&](std::string lease) { return two_scope_call(std::move(lease), team, key); };
  const admission a1 = call("a1"), a2 = call("a2");
  const admit_result r1 = run_sync(ioc, st.admit(0, a1));
  ASSERT_EQ(r1.v, verdict::admitted) << st.last_error();
  // a1's settlement rides a2's admission.
  auto second = net::co_spawn(ioc, st.admit(0, a2), net::use_future);
  st.queue_settlement(0, settlement{a1, r1.periods, 5, 60, r1.admitted_at_ms}, executor_t(ioc.get_executor()));
  redis_backend::wait_for([&] { return !rode.empty() && second.wait_for(std::chrono::seconds(0)) == std::future_status::ready; }, ioc);
  ASSERT_EQ(rode.size(), 1u);
  EXPECT_TRUE(rode[0].reachable && rode[0].applied);
  const admit_result r2 = second.get();
  ASSERT_EQ(r2.v, verdict::admitted) << st.last_error();
  EXPECT_TRUE(run_sync(ioc, st.renew(0, a2, st.clock_ms(0) + 60'000)));
  const settle_result s2 = run_sync(ioc, st.settle(0, settlement{a2, r2.periods, 5, 40, r2.admitted_at_ms}));
  EXPECT_TRUE(s2.reachable && s2.applied);
  const budget_state b = run_sync(ioc, st.budget(0, team));
  ASSERT_TRUE(b.reachable);
  EXPECT_EQ(b.spent, 100);
  EXPECT_EQ(b.reserved, 0);

  key_record k;
  k.id = "aclkey";
  k.team = "acl-team";
  k.digest = "sha256:" + std::string(64, 'b');
  ASSERT_TRUE(run_sync(ioc, st.put_key(0, k)));
  auto found = run_sync(ioc, st.get_key(0, "aclkey"));
  ASSERT_TRUE(found.key);
  k.enabled = false;
  EXPECT_EQ(run_sync(ioc, st.replace_key(0, k, found.stored)), write_result::written);
  const auto keys = run_sync(ioc, st.list_keys(0, key_query{"acl-team", "", 10}));
  ASSERT_TRUE(keys);
  ASSERT_EQ(keys->keys.size(), 1u);
  EXPECT_FALSE(keys->keys.front().enabled);
  team_record t;
  t.name = "acl-api-team";
  const auto none = run_sync(ioc, st.get_team(0, t.name));
  ASSERT_TRUE(none.reachable);
  EXPECT_EQ(run_sync(ioc, st.replace_team(0, t, none.stored)), write_result::written);
  const auto teams = run_sync(ioc, st.list_teams(0));
  ASSERT_TRUE(teams);
  EXPECT_EQ(teams->size(), 1u);
  EXPECT_EQ(run_sync(ioc, st.delete_team(0, t.name, run_sync(ioc, st.get_team(0, t.name)).stored)), write_result::written);
  EXPECT_FALSE(run_sync(ioc, st.get_team(0, t.name)).team);
  usage_row u;
  u.hour = 490'000;
  u.team = "acl-team";
  u.key_id = "aclkey";
  u.model = "m";
  u.requests = 3;
  std::vector<usage_row> one{u};
  EXPECT_TRUE(run_sync(ioc, st.add_usage(0, one)));
  const auto rows = run_sync(ioc, st.usage(0, u.hour, u.hour + 1));
  ASSERT_TRUE(rows);
  ASSERT_EQ(rows->size(), 1u);
  EXPECT_EQ(rows->front().requests, 3u);
  EXPECT_TRUE(run_sync(ioc, st.publish_invalidation(0, "aclkey")));
  EXPECT_TRUE(st.healthy());
  for (const auto& n : told.notices) EXPECT_EQ(n.find("NOPERM"), std::string::npos) << n;
  st.stop();
  (void)raw_command(ioc, {"ACL", "DELUSER", user});
}

TEST(RedisStore, ASubscriberLeftOnTheOldServerAfterAFailoverIsFoundDeafAndMoved) {
  // The address (a unix socket path switched like a DNS name) moves to a new server; the worker
  // connections are dropped and follow it, while the subscriber, which sends nothing, stays on the
  // old server and hears none of the new one's invalidations. Nothing dropped it before: a revoked
  // key stayed cached here (up to auth.key_cache_ms, 60 s at most) with no word. The store's own
  // heartbeat is not heard there: within a few beats the subscriber is moved and the caches drop.
  tollgate::testing::redis_server old_primary, new_primary;
  ASSERT_TRUE(old_primary.start() && new_primary.start()) << "redis-server did not start (deploy/install-deps installs it)";
  const std::string link = old_primary.unix_path() + ".current";
  std::filesystem::create_symlink(old_primary.unix_path(), link);
  net::io_context ioc;
  config::redis_config c = test_config(0, "deaf:");
  c.unix_path = link;
  redis_store st(c, 60'000);
  std::vector<std::string> notices, heard;
  st.on_notice([&](std::string_view level, std::string_view message) { notices.push_back(std::string(level) + " " + std::string(message)); });
  st.on_invalidation([&](std::string_view id) { heard.emplace_back(id); });
  st.start({executor_t(ioc.get_executor())});
  redis_backend::wait_for([&] { return st.healthy() && !heard.empty(); }, ioc);  // up, "*" at subscribe
  ASSERT_TRUE(st.healthy());
  ASSERT_TRUE(run_sync(ioc, st.publish_invalidation(0, "before")));
  redis_backend::wait_for([&] { return std::find(heard.begin(), heard.end(), "before") != heard.end(); }, ioc);
  ASSERT_NE(std::find(heard.begin(), heard.end(), "before"), heard.end());
  const std::string moved = link + ".new";
  std::filesystem::create_symlink(new_primary.unix_path(), moved);
  std::filesystem::rename(moved, link);
  // The workers' connections go (CLIENT KILL TYPE normal leaves subscribers alone) and come back
  // on the new server.
  ASSERT_TRUE(raw_command(ioc, {"CLIENT", "KILL", "TYPE", "normal"}, old_primary.port()));
  redis_backend::wait_for([&] { return st.healthy(); }, ioc);
  heard.clear();
  ASSERT_TRUE(run_sync(ioc, st.publish_invalidation(0, "revoked")));
  // Heard only once the subscriber is on the new server: the caches were dropped on the way.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  bool got = false;
  while (!got && std::chrono::steady_clock::now() < deadline) {
    ioc.restart();
    ioc.run_for(std::chrono::milliseconds(100));
    if (std::find(heard.begin(), heard.end(), "*") != heard.end()) {
      (void)run_sync(ioc, st.publish_invalidation(0, "revoked"));
      got = std::find(heard.begin(), heard.end(), "revoked") != heard.end();
    }
  }
  EXPECT_TRUE(got) << "the subscriber never left the old server";
  EXPECT_TRUE(std::any_of(notices.begin(), notices.end(), [](const std::string& n) {
    return n.find("warn the key invalidation channel is down (it delivered none of this replica's last 4 heartbeats") !=
           std::string::npos;
  })) << (notices.empty() ? "no notice" : notices.back());
  // Heartbeats never reach the listeners as key ids.
  for (const auto& id : heard) EXPECT_NE(id.rfind("~beat:", 0), 0u) << id;
  st.stop();
}

TEST(RedisStore, TheStoresClockIsRedissAsEstimatedFromTheTimeReadAtConnect) {
  // What the engine charges an outage call's budget period by. Known from the connection's set-up
  // on: shifted by a day, the estimate reads a day ahead (with no estimate it would be this
  // process's clock, and the shift would make it nonsense).
  net::io_context ioc;
  auto st = started_store(ioc);
  if (!st) GTEST_FAIL() << "redis-server did not start (deploy/install-deps installs it)";
  EXPECT_LE(std::abs(st->clock_ms(0) - wall_ms()), 1'000);
  st->shift_clock_estimate(0, 86'400'000);
  EXPECT_NEAR(double(st->clock_ms(0) - wall_ms()), 86'400'000.0, 1'000.0);
  EXPECT_LE(std::abs(st->clock_ms(7) - wall_ms()), 1'000);  // no such worker: this process's clock
  // A new connection may be a new server (a failover): its reading replaces the estimate, rather
  // than the estimate sinking a millisecond per reply towards it.
  ASSERT_TRUE(raw_command(ioc, {"CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"}));
  redis_backend::wait_for([&] { return std::abs(st->clock_ms(0) - wall_ms()) < 1'000; }, ioc);
  EXPECT_LE(std::abs(st->clock_ms(0) - wall_ms()), 1'000);
  st->stop();
}

namespace {
std::int64_t wall_an_hour_ahead() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
             .count() +
         3'600'000;
}
/// This process's clock as wall_ms() read it before the step.
std::int64_t real_wall_ms() { return wall_an_hour_ahead() - 3'600'000; }
struct wall_clock_stepped {
  wall_clock_stepped() { use_wall_clock_for_tests(wall_an_hour_ahead); }
  ~wall_clock_stepped() { use_wall_clock_for_tests(nullptr); }
};
}  // namespace

TEST(RedisStore, AStepOfThisHostsWallClockLeavesTheEstimateOfRedissClock) {
  // NTP or an operator steps this host's clock an hour ahead: deadlines and budget periods still
  // follow Redis's clock, and so does the reading a new connection makes.
  net::io_context ioc;
  auto st = started_store(ioc);
  if (!st) GTEST_FAIL() << "redis-server did not start (deploy/install-deps installs it)";
  EXPECT_LE(std::abs(st->clock_ms(0) - wall_ms()), 1'000);
  const wall_clock_stepped stepped;
  ASSERT_NEAR(double(wall_ms() - real_wall_ms()), 3'600'000.0, 1'000.0);
  EXPECT_LE(std::abs(st->clock_ms(0) - real_wall_ms()), 1'000) << "the estimate followed the step";
  EXPECT_NEAR(double(st->clock_ms(7) - real_wall_ms()), 3'600'000.0, 1'000.0)
      << "no estimate (no such worker): this host's clock, stepped";
  ASSERT_TRUE(raw_command(ioc, {"CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"}));
  const scope_spec s{"t", "team-step", {0, 0, 0}, budget_of(1'000)};
  admit_result r{};
  redis_backend::wait_for(
      [&] { return (r = run_sync(ioc, st->admit(0, one_scope_call("after", s, 1)))).v == verdict::admitted; }, ioc);
  EXPECT_EQ(r.v, verdict::admitted);
  EXPECT_LE(std::abs(st->clock_ms(0) - real_wall_ms()), 1'000) << "a fresh reading taken against the stepped clock";
  EXPECT_EQ(st->late_admissions(), 0u);
  st->stop();
}

TEST(RedisStore, ABatchAnsweredPastItsDeadlineIsUnavailableAndTheClockEstimateRecovers) {
  // As if the estimate of Redis's clock had been read 10 s behind: the batch's deadline is already
  // past on Redis's clock. Redis answers that it reserved nothing (the store treats the call as
  // unavailable); that answer carries Redis's time, and the next batch goes through.
  net::io_context ioc;
  auto st = started_store(ioc);
  if (!st) GTEST_FAIL() << "redis-server did not start (deploy/install-deps installs it)";
  const scope_spec s{"t", "team-skew", {0, 0, 1}, budget_of(1'000)};
  ASSERT_EQ(run_sync(ioc, st->admit(0, one_scope_call("learn", s, 1))).v, verdict::admitted);
  st->shift_clock_estimate(0, -10'000);
  const admit_result late = run_sync(ioc, st->admit(0, one_scope_call("late", s, 100)));
  EXPECT_EQ(late.v, verdict::unavailable);
  EXPECT_FALSE(late.in_doubt) << "Redis answered that it reserved nothing: no release is needed";
  EXPECT_EQ(st->late_admissions(), 1u);
  const auto held = raw_command(ioc, {"ZCARD", st->scope_key("team-skew", "l")});
  ASSERT_TRUE(held);
  EXPECT_EQ(held->integer, 2);  // "learn" and the pin
  // The concurrency slot is taken by "learn"; the estimate is right again: refused for that
  // reason, not for the deadline.
  EXPECT_EQ(run_sync(ioc, st->admit(0, one_scope_call("again", s, 100))).v, verdict::concurrency);
  EXPECT_EQ(st->late_admissions(), 1u);
  st->stop();
}

TEST(RedisStore, TheLeaseSetKeepsItsSkiplistEncodingAndItsPinHoldsNothing) {
  // admit.lua keeps one member longer than zset-max-listpack-value in each team's lease set, so
  // that Redis keeps it as a skiplist (leases found through a hash, not a scan). That member never
  // expires, is never swept and holds no slot: with a concurrency of 1, a settled call frees it.
  net::io_context ioc;
  auto st = started_store(ioc);
  if (!st) GTEST_FAIL() << "redis-server did not start (deploy/install-deps installs it)";
  std::vector<bool> applied;
  st->on_settled([&](unsigned, std::vector<settlement>&, const std::vector<settle_result>& r, bool) {
    for (auto& x : r) applied.push_back(x.reachable && x.applied);
  });
  const scope_spec s{"t", "team-pin", {0, 0, 1}, budget_of(1'000)};
  auto call = [&](std::string lease) { return one_scope_call(std::move(lease), s, 100); };
  const admission a1 = call("p1"), a2 = call("p2"), a3 = call("p3");
  const admit_result r1 = run_sync(ioc, st->admit(0, a1));
  ASSERT_EQ(r1.v, verdict::admitted);
  EXPECT_EQ(run_sync(ioc, st->admit(0, a2)).v, verdict::concurrency);
  const std::string leases = st->scope_key("team-pin", "l");
  auto enc = raw_command(ioc, {"OBJECT", "ENCODING", leases});
  ASSERT_TRUE(enc);
  EXPECT_EQ(enc->str, "skiplist");
  auto all = raw_command(ioc, {"ZRANGE", leases, "0", "-1", "WITHSCORES"});
  ASSERT_TRUE(all);
  ASSERT_EQ(all->elements.size(), 4u);  // the lease, then the pin (score +inf)
  EXPECT_EQ(all->elements[0].str.rfind("p1|", 0), 0u) << all->elements[0].str;
  EXPECT_GT(all->elements[2].str.size(), 64u);
  EXPECT_EQ(all->elements[3].str, "inf");
  st->queue_settlement(0, settlement{a1, r1.periods, 0, 40, r1.admitted_at_ms}, executor_t(ioc.get_executor()));
  redis_backend::wait_for([&] { return !applied.empty(); }, ioc);
  ASSERT_EQ(applied, std::vector<bool>{true});
  EXPECT_EQ(run_sync(ioc, st->admit(0, a3)).v, verdict::admitted);
  auto card = raw_command(ioc, {"ZCARD", leases});
  ASSERT_TRUE(card);
  EXPECT_EQ(card->integer, 2);  // p3 and the pin
  st->stop();
}

TEST(RedisStore, AReportOverAHashRedisRefusesFailsWholeAndTheConnectionServesOn) {
  // Reads pipelined in windows: one refused command (WRONGTYPE, in the middle of the second
  // window) fails the whole read, not a report with an hour silently missing.
  net::io_context ioc;
  auto st = started_store(ioc);
  if (!st) GTEST_FAIL() << "redis-server did not start (deploy/install-deps installs it)";
  const std::string tagged = st->scope_key("x", "y");  // <prefix>{x}:y
  const std::string prefix = tagged.substr(0, tagged.size() - std::string("{x}:y").size());
  const std::int64_t first = 480'000;
  std::vector<usage_row> rows;
  for (std::int64_t h = first; h < first + 100; ++h) {
    usage_row r;
    r.hour = h;
    r.team = "team-a";
    r.key_id = "k1";
    r.model = "m";
    r.requests = 1;
    rows.push_back(r);
  }
  ASSERT_TRUE(run_sync(ioc, st->add_usage(0, rows)));
  ASSERT_TRUE(raw_command(ioc, {"SET", prefix + "usage:" + std::to_string(first + 40), "not a hash"}));
  EXPECT_FALSE(run_sync(ioc, st->usage(0, first, first + 100)));
  // A write to it is refused too, with the connection up: the rows that went through are not
  // sent again by the caller's next try (which would add them every second), the refusal is said.
  std::vector<std::string> notices;
  st->on_notice([&](std::string_view level, std::string_view message) { notices.push_back(std::string(level) + " " + std::string(message)); });
  EXPECT_TRUE(run_sync(ioc, st->add_usage(0, rows)));
  ASSERT_EQ(notices.size(), 1u);
  EXPECT_NE(notices[0].find("warn Redis refused a usage count"), std::string::npos) << notices[0];
  auto rest = run_sync(ioc, st->usage(0, first + 41, first + 100));
  ASSERT_TRUE(rest);
  EXPECT_EQ(rest->size(), 59u);
  for (const auto& r : *rest) EXPECT_EQ(r.requests, 2u) << r.hour;  // written twice, once each
  // A key document Redis refuses to GET fails the listing the same way.
  key_record k;
  k.id = "good";
  k.team = "team-a";
  k.digest = "sha256:" + std::string(64, 'a');
  ASSERT_TRUE(run_sync(ioc, st->put_key(0, k)));
  ASSERT_TRUE(run_sync(ioc, st->list_keys(0, key_query{})));
  ASSERT_TRUE(raw_command(ioc, {"SADD", prefix + "keys", "bad"}));
  ASSERT_TRUE(raw_command(ioc, {"ZADD", prefix + "key_ids", "0", "bad"}));
  ASSERT_TRUE(raw_command(ioc, {"HSET", prefix + "key:bad", "f", "v"}));
  EXPECT_FALSE(run_sync(ioc, st->list_keys(0, key_query{})));
  EXPECT_TRUE(st->healthy());
  EXPECT_TRUE(run_sync(ioc, st->get_key(0, "good")).key);
  st->stop();
}

TEST(RedisStore, EveryLeaseOfABatchLastsAtLeastAsLongAsItsCallAsked) {
  // One batch carries one lease length. Calls asking for different ones (a reload changed
  // store.lease_ms between them) all get the longest: the engine renews each at half its own, so
  // a call that asked 5 s and got the 200 ms of the call before it would be swept while in flight.
  net::io_context ioc;
  auto st = started_store(ioc);
  if (!st) GTEST_FAIL() << "redis-server did not start (deploy/install-deps installs it)";
  const scope_spec s{"t", "team-lease", {0, 0, 10}, {}};
  admission first = one_scope_call("lm0", s, 0), shorter = one_scope_call("lm1", s, 0), longer = one_scope_call("lm2", s, 0);
  first.lease_ms = 60'000;
  shorter.lease_ms = 200;
  longer.lease_ms = 5'000;
  // Redis holds commands for 300 ms: the first call's batch is on the wire, and the two after it
  // wait for it and go out together.
  const auto paused = raw_command(ioc, {"CLIENT", "PAUSE", "300"});
  ASSERT_TRUE(paused && paused->str == "OK");
  auto f0 = net::co_spawn(ioc, st->admit(0, first), net::use_future);
  ioc.restart();
  redis_backend::wait_for([] { return redis_store::admissions_awaited() == 1; }, ioc);
  auto f1 = net::co_spawn(ioc, st->admit(0, shorter), net::use_future);
  auto f2 = net::co_spawn(ioc, st->admit(0, longer), net::use_future);
  auto ready = [](auto& f) { return f.wait_for(std::chrono::seconds(0)) == std::future_status::ready; };
  redis_backend::wait_for([&] { return ready(f0) && ready(f1) && ready(f2); }, ioc);
  ASSERT_TRUE(ready(f0) && ready(f1) && ready(f2));
  const admit_result r1 = f1.get(), r2 = f2.get();
  ASSERT_EQ(f0.get().v, verdict::admitted);
  ASSERT_EQ(r1.v, verdict::admitted);
  ASSERT_EQ(r2.v, verdict::admitted);
  auto all = raw_command(ioc, {"ZRANGE", st->scope_key("team-lease", "l"), "0", "-1", "WITHSCORES"});
  ASSERT_TRUE(all);
  std::map<std::string, double> expiry;  // lease -> expiry (ms, Redis's clock)
  for (std::size_t i = 0; i + 1 < all->elements.size(); i += 2) {
    const std::string& m = all->elements[i].str;
    expiry[m.substr(0, m.find('|'))] = std::stod(all->elements[i + 1].str);
  }
  ASSERT_EQ(expiry.count("lm1"), 1u);
  ASSERT_EQ(expiry.count("lm2"), 1u);
  EXPECT_GE(expiry["lm2"] - double(r2.admitted_at_ms), 5'000 - 50) << "the longer call got a shorter lease";
  EXPECT_GE(expiry["lm1"] - double(r1.admitted_at_ms), 200 - 50);
  EXPECT_EQ(expiry["lm1"], expiry["lm2"]) << "the two calls went out in one batch";
  st->stop();
}

TEST(RedisStore, ANewRecordWhoseListingIndexRefusesItIsNotWritten) {
  // A new key or team is listed before it is written. Written but unlisted, a key would escape
  // its team's deletion (which revokes the keys listed) and pass to a team created later under
  // the name; so an index that refuses it (here: the index keys hold the wrong type, as a write
  // cut by a dropped connection would) leaves no record, and the creation is unreachable.
  for (const char* refusing : {"key_ids", "team_key_ids:team-a", "keys"}) {
    net::io_context ioc;
    auto st = started_store(ioc);
    if (!st) GTEST_FAIL() << "redis-server did not start (deploy/install-deps installs it)";
    const std::string tagged = st->scope_key("x", "y");  // <prefix>{x}:y
    const std::string prefix = tagged.substr(0, tagged.size() - std::string("{x}:y").size());
    ASSERT_TRUE(raw_command(ioc, {"SET", prefix + refusing, "not an index"}));
    key_record k;
    k.id = "unlisted";
    k.team = "team-a";
    k.digest = "sha256:" + std::string(64, 'a');
    EXPECT_EQ(run_sync(ioc, st->replace_key(0, k, "")), write_result::unreachable) << refusing;
    const auto found = run_sync(ioc, st->get_key(0, "unlisted"));
    EXPECT_TRUE(found.reachable);
    EXPECT_FALSE(found.key) << "a key was written that " << refusing << " does not list";
    st->stop();
  }
  net::io_context ioc;
  auto st = started_store(ioc);
  if (!st) GTEST_FAIL() << "redis-server did not start (deploy/install-deps installs it)";
  const std::string tagged = st->scope_key("x", "y");
  const std::string prefix = tagged.substr(0, tagged.size() - std::string("{x}:y").size());
  ASSERT_TRUE(raw_command(ioc, {"SET", prefix + "teams", "not an index"}));
  team_record t;
  t.name = "unlisted-team";
  EXPECT_EQ(run_sync(ioc, st->replace_team(0, t, "")), write_result::unreachable);
  EXPECT_FALSE(run_sync(ioc, st->get_team(0, "unlisted-team")).team);
  st->stop();
}

TEST(RedisStore, AListedIdWhoseRecordWasNeverWrittenIsSkippedByListings) {
  // Listed first, a key whose write then failed leaves its id in the indexes: listings skip it,
  // and the keys around it are listed as before.
  net::io_context ioc;
  auto st = started_store(ioc);
  if (!st) GTEST_FAIL() << "redis-server did not start (deploy/install-deps installs it)";
  const std::string tagged = st->scope_key("x", "y");
  const std::string prefix = tagged.substr(0, tagged.size() - std::string("{x}:y").size());
  for (const char* id : {"a1", "c3"}) {
    key_record k;
    k.id = id;
    k.team = "team-a";
    k.digest = "sha256:" + std::string(64, 'a');
    ASSERT_EQ(run_sync(ioc, st->replace_key(0, k, "")), write_result::written);
  }
  for (const std::string index : {"key_ids", "team_key_ids:team-a"})
    ASSERT_TRUE(raw_command(ioc, {"ZADD", prefix + index, "0", "b2"}));
  ASSERT_TRUE(raw_command(ioc, {"SADD", prefix + "keys", "b2"}));
  for (const std::string team : {"", "team-a"}) {
    key_query q;
    q.team = team;
    const auto page = run_sync(ioc, st->list_keys(0, q));
    ASSERT_TRUE(page);
    ASSERT_EQ(page->keys.size(), 2u) << team;
    EXPECT_EQ(page->keys[0].id, "a1");
    EXPECT_EQ(page->keys[1].id, "c3");
    EXPECT_FALSE(page->has_more);
  }
  st->stop();
}

TEST(RedisStore, ABatchRedisRefusesIsLoggedWithItsReplyOnceNotPerRetry) {
  // A scope key of the wrong type makes admit.lua fail with WRONGTYPE: the calls are answered as
  // unavailable, and the store says why, with the team, once for a reply that repeats.
  net::io_context ioc;
  auto st = started_store(ioc);
  if (!st) GTEST_FAIL() << "redis-server did not start (deploy/install-deps installs it)";
  std::vector<std::string> notices;
  st->on_notice([&](std::string_view level, std::string_view message) { notices.push_back(std::string(level) + " " + std::string(message)); });
  ASSERT_TRUE(raw_command(ioc, {"SET", st->scope_key("team-refused", "t"), "not a hash"}));
  const scope_spec s{"t", "team-refused", {100, 0, 0}, {}};
  for (int i = 0; i < 3; ++i) {
    admission a;
    a.lease = "refused-" + std::to_string(i);
    a.scopes = {s};
    a.tokens = 1;
    const admit_result r = run_sync(ioc, st->admit(0, a));
    EXPECT_EQ(r.v, verdict::unavailable);
  }
  ASSERT_EQ(notices.size(), 1u);
  EXPECT_NE(notices[0].find("error Redis refused a policy batch of team 'team-refused': WRONGTYPE"), std::string::npos) << notices[0];
  st->stop();
}

TEST(RedisStore, ASoftThresholdFlagWrittenByAnOlderVersionCountsAsReported) {
  // Before 2026-11-29 admit.lua marked a reported threshold with soft=1; it now records the
  // threshold itself. A flag found after an upgrade stands for the current threshold: no second
  // event in that period, from the sums or call by call.
  for (const bool sums : {true, false}) {
    net::io_context ioc;
    auto st = started_store(ioc);
    if (!st) GTEST_FAIL() << "redis-server did not start (deploy/install-deps installs it)";
    st->use_sums(sums);
    const scope_spec s{"t", "team-legacy", {}, budget_of(100, 0.5)};
    const auto settle_one = [&](std::string lease, std::int64_t cost) {
      admission a;
      a.lease = std::move(lease);
      a.scopes = {s};
      a.tokens = 1;
      a.cost_nano = cost;
      const admit_result r = run_sync(ioc, st->admit(0, a));
      EXPECT_EQ(r.v, verdict::admitted);
      return run_sync(ioc, st->settle(0, settlement{a, r.periods, 1, cost, r.admitted_at_ms}));
    };
    ASSERT_TRUE(settle_one("before", 10).applied);  // the scope's state exists: 10 of 100
    ASSERT_TRUE(raw_command(ioc, {"HSET", st->scope_key("team-legacy", "t"), "soft", "1"}));
    const settle_result past = settle_one("past", 60);  // 70: past 50, reported before the upgrade
    ASSERT_EQ(past.soft_crossed.size(), 1u);
    EXPECT_FALSE(past.soft_crossed[0]) << (sums ? "from the sums" : "call by call");
    st->stop();
  }
}

TEST(RedisStore, EachScopeHashIsPinnedInItsHashtableEncodingOnceAndAgainAfterAReset) {
  // admit.lua writes a field '~' longer than hash-max-listpack-value with a scope's first state,
  // so that Redis keeps the hash a hashtable (fields found through a hash, not a scan). It writes
  // it only when the scope has no state yet: not again on every batch, and again after the hash
  // was deleted. A scope with rate limits and one with only a budget both get it.
  net::io_context ioc;
  auto st = started_store(ioc);
  if (!st) GTEST_FAIL() << "redis-server did not start (deploy/install-deps installs it)";
  const scope_spec rated{"t", "team-hpin", {1'000, 100'000, 10}, budget_of(1'000'000)};
  const scope_spec budget_only{"k:b", "team-hpin", {0, 0, 0}, budget_of(1'000'000)};
  auto call = [&](std::string lease) { return two_scope_call(std::move(lease), rated, budget_only); };
  const std::string keys[] = {st->scope_key("team-hpin", "t"), st->scope_key("team-hpin", "k:b")};
  auto field = [&](const std::string& key) { return raw_command(ioc, {"HGET", key, "~"}); };
  auto expect_pinned = [&](const std::string& key) {
    auto enc = raw_command(ioc, {"OBJECT", "ENCODING", key});
    ASSERT_TRUE(enc);
    EXPECT_EQ(enc->str, "hashtable") << key;
    auto pin = field(key);
    ASSERT_TRUE(pin);
    EXPECT_GT(pin->str.size(), 64u) << key;
  };
  const admission a1 = call("h1");
  ASSERT_EQ(run_sync(ioc, st->admit(0, a1)).v, verdict::admitted);
  for (const std::string& key : keys) {
    expect_pinned(key);
    // Marked, to tell whether a later batch writes it again.
    ASSERT_TRUE(raw_command(ioc, {"HSET", key, "~", "marked"}));
  }
  const admission a2 = call("h2");
  ASSERT_EQ(run_sync(ioc, st->admit(0, a2)).v, verdict::admitted);
  for (const std::string& key : keys) {
    auto pin = field(key);
    ASSERT_TRUE(pin);
    EXPECT_EQ(pin->str, "marked") << key << ": written again although the scope had its state";
  }
  // A reset (the hash deleted): the next batch writes the pin with the new first state.
  for (const std::string& key : keys) ASSERT_TRUE(raw_command(ioc, {"DEL", key}));
  const admission a3 = call("h3");
  ASSERT_EQ(run_sync(ioc, st->admit(0, a3)).v, verdict::admitted);
  for (const std::string& key : keys) expect_pinned(key);
  st->stop();
}

// admit.lua applies a batch from the gateway's sums when every call fits and every lease is
// found, and call by call otherwise. The same random workload (waves of concurrent calls of a
// team and two keys, settlements riding them, repeated and stale settlements, limits and
// budgets running out) on two stores, one with the sums and one without, must give the same
// answers, settlement reports and final state; the first must have used both paths.
std::string run_workload(redis_store& st, net::io_context& ioc) {
  std::mt19937 rng(20261126);
  auto pick = [&rng](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  const scope_spec team{"t", "team-sums", {150, 20'000, 40}, budget_of(40'000, 0.5)};
  const scope_spec key_a{"k:a", "team-sums", {60, 0, 0}, budget_of(12'000, 0.6)};
  const scope_spec key_b{"k:b", "team-sums", {0, 6'000, 12}, {}};
  std::ostringstream log;
  st.on_settled([&](unsigned, std::vector<settlement>& b, const std::vector<settle_result>& r, bool) {
    for (std::size_t i = 0; i < b.size(); ++i) {
      log << "settled " << b[i].adm.lease << ' ' << r[i].reachable << r[i].applied;
      for (std::size_t k = 0; k < r[i].spent.size(); ++k) log << ' ' << r[i].spent[k] << (r[i].soft_crossed[k] ? "!" : "");
      log << '\n';
    }
  });
  const executor_t ex(ioc.get_executor());
  std::vector<std::pair<admission, admit_result>> inflight;
  std::vector<settlement> done;  // applied once already: sent again, they must not count
  int lease = 0;
  std::size_t reports = 0, expected_reports = 0;
  for (int round = 0; round < 14; ++round) {
    // Settle some of the calls in flight (the first round's settlements also go twice).
    std::shuffle(inflight.begin(), inflight.end(), rng);
    const std::size_t n = inflight.size() / 2 + (round % 3 == 0 ? inflight.size() / 3 : 0);
    for (std::size_t i = 0; i < n && !inflight.empty(); ++i) {
      auto [a, r] = std::move(inflight.back());
      inflight.pop_back();
      settlement s{a, r.periods, std::uint64_t(pick(0, int(a.tokens) + 50)), pick(0, int(a.cost_nano)), r.admitted_at_ms};
      st.queue_settlement(0, s, ex);
      ++expected_reports;
      if (round == 1 && i == 0) {
        st.queue_settlement(0, s, ex);
        ++expected_reports;
      }
      done.push_back(std::move(s));
    }
    if (round % 4 == 3 && !done.empty()) {
      st.queue_settlement(0, done.front(), ex);
      ++expected_reports;
    }
    // A wave of calls at once.
    std::vector<admission> wave;
    const int calls = pick(1, 30);
    for (int i = 0; i < calls; ++i) {
      admission a;
      a.lease = "sums-" + std::to_string(lease++);
      a.scopes = {team, pick(0, 1) ? key_a : key_b};
      a.tokens = std::uint64_t(pick(10, 200));
      a.cost_nano = pick(100, 600);
      wave.push_back(std::move(a));
    }
    std::vector<std::future<admit_result>> results;
    for (auto& a : wave) results.push_back(net::co_spawn(ioc, st.admit(0, a), net::use_future));
    ioc.restart();
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    auto all_done = [&] {
      for (auto& f : results)
        if (f.wait_for(std::chrono::seconds(0)) != std::future_status::ready) return false;
      return true;
    };
    while ((!all_done() || reports < expected_reports) && std::chrono::steady_clock::now() < deadline) {
      ioc.run_one_for(std::chrono::milliseconds(5));
      const std::string so_far = log.str();
      reports = std::size_t(std::count(so_far.begin(), so_far.end(), '\n'));
    }
    for (std::size_t i = 0; i < wave.size(); ++i) {
      if (results[i].wait_for(std::chrono::seconds(0)) != std::future_status::ready) {
        log << "timeout " << wave[i].lease << '\n';
        continue;
      }
      admit_result r = results[i].get();
      log << "admit " << wave[i].lease << ' ' << int(r.v) << ' ' << r.scope << ' ' << r.requests_scope << ':'
          << r.requests_left << ' ' << r.tokens_scope << ':' << r.tokens_left;
      for (auto& p : r.periods) log << ' ' << p;
      log << '\n';
      if (r.v == verdict::admitted) inflight.emplace_back(wave[i], std::move(r));
    }
  }
  for (const auto& s : {team, key_a, key_b}) {
    const budget_state b = run_sync(ioc, st.budget(0, s));
    log << "budget " << s.id << ' ' << b.reachable << ' ' << b.spent << ' ' << b.reserved << '\n';
    admission probe;  // what is left in the scope's windows
    probe.lease = "probe-" + s.id;
    probe.scopes = {scope_spec{s.id, s.team, s.limits, {}}};
    probe.tokens = 0;
    const admit_result r = run_sync(ioc, st.admit(0, probe));
    log << "probe " << s.id << ' ' << int(r.v) << ' ' << r.requests_left << ' ' << r.tokens_left << '\n';
  }
  return log.str();
}

TEST(RedisStore, BatchSumsGiveTheSameAnswersAndStateAsCallByCall) {
  net::io_context ioc_sums, ioc_calls;
  auto with_sums = started_store(ioc_sums);
  auto by_call = started_store(ioc_calls);
  if (!with_sums || !by_call) GTEST_FAIL() << "redis-server did not start (deploy/install-deps installs it)";
  by_call->use_sums(false);
  const std::string a = run_workload(*with_sums, ioc_sums);
  const std::string b = run_workload(*by_call, ioc_calls);
  EXPECT_EQ(a, b);
  EXPECT_EQ(a.find("timeout"), std::string::npos);
  // The workload reaches every verdict (admitted, rpm, tpm, concurrency, budget), a stale
  // settlement, and the budgets' soft thresholds.
  std::set<int> verdicts;
  std::istringstream lines(a);
  for (std::string line; std::getline(lines, line);) {
    std::istringstream w(line);
    std::string what, lease;
    int v = -1;
    if (w >> what >> lease >> v && what == "admit") verdicts.insert(v);
  }
  EXPECT_EQ(verdicts, (std::set<int>{0, 1, 2, 3, 4}));
  EXPECT_NE(a.find(" 10 0 0\n"), std::string::npos);  // reachable, not applied again
  EXPECT_NE(a.find("!"), std::string::npos);
  const auto used = with_sums->sums_used();
  EXPECT_GT(used.settled, 0u);   // settlements from the sums
  EXPECT_GT(used.admitted, 0u);  // admissions from the sums
  EXPECT_LT(used.admitted, used.batches);  // and call by call, where a call did not fit
  EXPECT_LT(used.settled, used.batches);
  const auto none = by_call->sums_used();
  EXPECT_EQ(none.settled + none.admitted, 0u);
  EXPECT_GT(none.batches, 0u);
  with_sums->stop();
  by_call->stop();
}

TEST(RedisStore, WithoutZmscoreBatchesGoCallByCallAfterOneNotice) {
  // Redis before 6.2 has no ZMSCORE (simulated by renaming it away): the first batch that
  // settles with the sums fails there, before writing anything; the store says so once in the
  // log and sends that batch, and every later one, call by call. No charge is lost or doubled.
  tollgate::testing::redis_server old({"--rename-command", "ZMSCORE", ""});
  if (!old.start()) GTEST_FAIL() << "redis-server did not start (deploy/install-deps installs it)";
  net::io_context ioc;
  redis_store st(test_config(old.port(), "old:"), 60'000);
  store_reports told;
  told.attach(st);
  auto& notices = told.notices;
  auto& settled = told.settled;
  st.start({executor_t(ioc.get_executor())});
  redis_backend::wait_ready(st, ioc);
  const scope_spec s{"t", "team-old", {0, 0, 1}, budget_of(1'000)};
  auto call = [&](std::string lease) { return one_scope_call(std::move(lease), s, 300); };
  const executor_t ex(ioc.get_executor());
  admission prev = call("old-0");
  admit_result prev_r = run_sync(ioc, st.admit(0, prev));
  ASSERT_EQ(prev_r.v, verdict::admitted);
  for (int i = 1; i <= 3; ++i) {
    // Concurrency 1: each call is admitted only if the previous one's settlement, riding in the
    // same batch, was applied first.
    admission next = call("old-" + std::to_string(i));
    auto fut = net::co_spawn(ioc, st.admit(0, next), net::use_future);
    st.queue_settlement(0, settlement{prev, prev_r.periods, 1, 100, prev_r.admitted_at_ms}, ex);
    ioc.restart();
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while ((settled.size() < std::size_t(i) || fut.wait_for(std::chrono::seconds(0)) != std::future_status::ready) &&
           std::chrono::steady_clock::now() < deadline)
      ioc.run_one_for(std::chrono::milliseconds(5));
    ASSERT_EQ(fut.wait_for(std::chrono::seconds(0)), std::future_status::ready) << i;
    admit_result r = fut.get();
    ASSERT_EQ(r.v, verdict::admitted) << i;
    ASSERT_EQ(settled.size(), std::size_t(i));
    EXPECT_TRUE(settled.back().applied) << i;
    ASSERT_EQ(settled.back().spent.size(), 1u);
    EXPECT_EQ(settled.back().spent[0], 100 * i) << i;  // each charge once
    prev = std::move(next);
    prev_r = std::move(r);
  }
  ASSERT_EQ(notices.size(), 1u);
  EXPECT_NE(notices[0].find("warn: Redis lacks ZMSCORE"), std::string::npos) << notices[0];
  EXPECT_EQ(st.sums_used().settled, 0u);
  const budget_state b = run_sync(ioc, st.budget(0, s));
  EXPECT_EQ(b.spent, 300);
  EXPECT_EQ(b.reserved, 300);  // the last call, still in flight
  st.stop();
}

TEST(RedisStore, ARedisThatMayEvictAnyKeyIsWarnedOfOncePerPolicy) {
  // Leases and counters have no TTL: allkeys-* eviction could drop them. Warned of at connect;
  // a reconnect to the same policy says nothing more; noeviction (Redis's default) says nothing.
  for (const bool evicting : {true, false}) {
    tollgate::testing::redis_server srv(evicting ? std::vector<std::string>{"--maxmemory-policy", "allkeys-lru"}
                                                 : std::vector<std::string>{});
    if (!srv.start()) GTEST_FAIL() << "redis-server did not start (deploy/install-deps installs it)";
    net::io_context ioc;
    redis_store st(test_config(srv.port(), "evict:"), 60'000);
    std::vector<std::string> notices;
    st.on_notice([&](std::string_view level, std::string_view msg) { notices.push_back(std::string(level) + ": " + std::string(msg)); });
    st.start({executor_t(ioc.get_executor())});
    redis_backend::wait_ready(st, ioc);
    const auto evictions = [&] {
      return std::count_if(notices.begin(), notices.end(),
                           [](const std::string& n) { return n.find("maxmemory-policy allkeys-lru") != std::string::npos; });
    };
    // A round trip after the connect's own commands: their notice, if any, came before it.
    EXPECT_TRUE(run_sync(ioc, st.publish_invalidation(0, "x")));
    if (!evicting) {
      EXPECT_EQ(evictions(), 0) << (notices.empty() ? "" : notices.back());
      st.stop();
      continue;
    }
    ASSERT_EQ(evictions(), 1) << notices.size();
    EXPECT_EQ(notices.front().rfind("warn: Redis evicts any key", 0), 0u) << notices.front();
    EXPECT_NE(notices.front().find("noeviction"), std::string::npos);
    // A reconnect (the server closes every client): asked again, not told again.
    const auto configs = [&] {  // CONFIG GETs the server has run (INFO commandstats)
      const auto info = raw_command(ioc, {"INFO", "commandstats"}, srv.port());
      const std::string text = info ? info->str : "";
      const auto at = text.find("cmdstat_config|get:calls=");
      return at == std::string::npos ? -1 : std::atoi(text.c_str() + at + 25);
    };
    ASSERT_EQ(configs(), 1);
    ASSERT_TRUE(raw_command(ioc, {"CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"}, srv.port()));
    redis_backend::wait_for([&] { return configs() == 2; }, ioc);
    ASSERT_EQ(configs(), 2) << "the reconnect asks again";
    redis_backend::wait_ready(st, ioc);
    EXPECT_TRUE(run_sync(ioc, st.publish_invalidation(0, "y")));
    EXPECT_EQ(evictions(), 1);
    st.stop();
  }
}

TEST(RedisStore, ListingsReadOnlyTheirPageAndIndexKeysWrittenBeforeTheIndexExisted) {
  // A listing once read every key ever created (revoked ones included) to answer; it now reads a
  // sorted index of ids, then only its page's records. Keys written by an older version are in
  // the id set "keys" but not in the sorted indexes: the first listing that sees the id set
  // larger builds them, so no key goes missing from listings after an upgrade.
  ASSERT_TRUE(server_up()) << "redis-server did not start (deploy/install-deps installs it)";
  net::io_context ioc;
  const std::string prefix = "pages" + std::to_string(::getpid()) + ":";
  redis_store st(test_config(server().port(), prefix), 60'000);
  st.start({executor_t(ioc.get_executor())});
  redis_backend::wait_ready(st, ioc);
  constexpr int n = 1234;
  for (int i = 0; i < n; ++i) {
    key_record k;
    k.id = "page" + std::to_string(i);
    k.team = i % 2 ? "odd" : "even";
    k.digest = "sha256:" + std::string(64, '0');
    ASSERT_EQ(run_sync(ioc, st.replace_key(0, k, "")), write_result::written);
  }
  // Three written as an older version wrote them: the record and the id set only.
  for (const char* id : {"old1", "old2", "zold3"}) {
    key_record k;
    k.id = id;
    k.team = "even";
    k.digest = "sha256:" + std::string(64, '1');
    ASSERT_TRUE(raw_command(ioc, {"SET", prefix + "key:" + id, key_to_json(k)}));
    ASSERT_TRUE(raw_command(ioc, {"SADD", prefix + "keys", id}));
  }
  const auto page = run_sync(ioc, st.list_keys(0, key_query{"", "", 10}));
  ASSERT_TRUE(page);
  ASSERT_EQ(page->keys.size(), 10u);
  EXPECT_TRUE(page->has_more);
  EXPECT_EQ(page->keys.front().id, "old1") << "the older version's keys are indexed and sorted in";
  EXPECT_EQ(page->keys[1].id, "old2");
  EXPECT_EQ(page->keys[2].id, "page0");
  EXPECT_EQ(page->keys[3].id, "page1");
  EXPECT_EQ(page->keys[4].id, "page10");
  std::set<std::string> ids;
  key_query q{"even", "", 1000};
  for (;;) {
    auto p = run_sync(ioc, st.list_keys(0, q));
    ASSERT_TRUE(p);
    for (const auto& k : p->keys) {
      EXPECT_EQ(k.team, "even");
      EXPECT_TRUE(ids.insert(k.id).second) << k.id;
    }
    if (!p->has_more) break;
    q.after = p->keys.back().id;
  }
  EXPECT_EQ(ids.size(), std::size_t(n / 2 + 3));
  EXPECT_TRUE(ids.count("zold3"));
  st.stop();
}

}  // namespace
}  // namespace tollgate::policy::testing
