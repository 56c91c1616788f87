// SPDX-License-Identifier: Apache-2.0
// The store conformance suite on the memory store, with a clock the test moves.
#include "policy/memory_store.hpp"

#include "tests/unit/policy/store_conformance.hpp"

namespace tollgate::policy::testing {
namespace {

std::atomic<std::int64_t> fake_now{1'790'000'000'000};

struct memory_backend {
  static constexpr std::int64_t window_ms = 60'000;
  static std::unique_ptr<store> make(std::int64_t window) {
    return std::make_unique<memory_store>([] { return fake_now.load(); }, window);
  }
  static void advance(store&, std::int64_t ms) { fake_now += ms; }
  static void wait_ready(store&, net::io_context&) {}
  template <class F>
  static void wait_for(F&&, net::io_context&) {}  // listeners run synchronously
};

INSTANTIATE_TYPED_TEST_SUITE_P(Memory, StoreConformance, memory_backend);

/// One call of `cost_nano` in scope `s`.
admission call_of(std::string lease, const scope_spec& s, std::int64_t cost_nano) {
  admission a;
  a.lease = std::move(lease);
  a.scopes = {s};
  a.tokens = 1;
  a.cost_nano = cost_nano;
  a.lease_ms = 60'000;
  return a;
}

/// Its settlement at `cost_nano`.
settlement settled(const admission& a, const admit_result& r, std::int64_t cost_nano) {
  settlement s;
  s.adm = a;
  s.periods = r.periods;
  s.admitted_at_ms = r.admitted_at_ms;
  s.tokens = 1;
  s.cost_nano = cost_nano;
  return s;
}

TEST(MemoryStore, ACallThatSpansMidnightIsChargedToTheNewDay) {
  // Admitted at 23:59:59 on a quiet team, settled after midnight before any other admission of
  // the new day: its cost is the new day's spend (docs/policy.md), not the closed day's, which the
  // next admission would reset away.
  std::int64_t now = 1'795'564'799'999 - 1'000;  // 2026-11-24T23:59:58.999Z
  memory_store st([&] { return now; });
  const auto daily = budget_scope(100, config::budget_period::daily);
  const admission a = call_of("midnight", daily, 60);
  const admit_result r = st.admit_now(a);
  ASSERT_EQ(r.v, verdict::admitted);
  now += 2'000;
  ASSERT_TRUE(st.settle_now(settled(a, r, 60)).applied);
  EXPECT_EQ(st.budget_now(daily).spent, 60);
  EXPECT_EQ(st.admit_now(call_of("next", daily, 60)).v, verdict::budget);  // 60 + 60 > 100
}

TEST(MemoryStore, SpendCarriedOverAChangeOfKindStartsAgainAtTheNewKindsNextBoundary) {
  std::int64_t now = 1'795'564'799'999 - 10'000;  // 2026-11-24T23:59:49.999Z
  memory_store st([&] { return now; });
  const auto monthly = budget_scope(100, config::budget_period::monthly),
             daily = budget_scope(100, config::budget_period::daily);
  const admission a = call_of("m1", monthly, 70);
  const admit_result r = st.admit_now(a);
  ASSERT_EQ(r.v, verdict::admitted);
  ASSERT_TRUE(st.settle_now(settled(a, r, 70)).applied);
  const admission b = call_of("d1", daily, 40);
  EXPECT_EQ(st.admit_now(b).v, verdict::budget);  // the month's 70 count today: 70 + 40 > 100
  now += 20'000;                                  // the next day
  EXPECT_EQ(st.budget_now(daily).spent, 0);
  EXPECT_EQ(st.admit_now(b).v, verdict::admitted);
}

TEST(MemoryStore, ASoftThresholdIsReportedAgainInTheNextPeriod) {
  std::int64_t now = 1'795'564'799'999 - 10'000;  // 2026-11-24T23:59:49.999Z
  memory_store st([&] { return now; });
  auto daily = budget_scope(100, config::budget_period::daily);
  daily.budget.soft = 0.5;
  int n = 0;
  const auto crossed = [&] {
    const admission a = call_of("soft" + std::to_string(n++), daily, 60);
    const admit_result r = st.admit_now(a);
    EXPECT_EQ(r.v, verdict::admitted);
    const settle_result out = st.settle_now(settled(a, r, 60));
    return !out.soft_crossed.empty() && out.soft_crossed[0];
  };
  EXPECT_TRUE(crossed());  // 60 of 100: past 50
  now += 20'000;           // the next day
  EXPECT_TRUE(crossed());  // reported again, once in this period too
}

TEST(MemoryStore, AChangeOfKindCarriesNothingFromAPeriodThatHasEnded) {
  // The stored period is October's; the budget became daily in November: October's spend is not
  // today's (it carried only while its own period was current).
  std::int64_t now = 1'793'491'200'000 - 1'000;  // 2026-10-31T23:59:59Z
  memory_store st([&] { return now; });
  const auto monthly = budget_scope(100, config::budget_period::monthly),
             daily = budget_scope(100, config::budget_period::daily);
  const admission a = call_of("oct", monthly, 90);
  const admit_result r = st.admit_now(a);
  ASSERT_EQ(r.v, verdict::admitted);
  ASSERT_TRUE(st.settle_now(settled(a, r, 90)).applied);
  EXPECT_EQ(st.budget_now(daily).spent, 90);  // still October: carried
  now += 15ll * 86'400'000;                   // mid-November
  EXPECT_EQ(st.budget_now(daily).spent, 0);
  EXPECT_EQ(st.admit_now(call_of("nov", daily, 40)).v, verdict::admitted);
}

TEST(PeriodId, CalendarPeriodsInUtc) {
  // 2026-11-24T23:59:59.999Z and one millisecond later.
  const std::int64_t before = 1'795'564'799'999, after = before + 1;
  EXPECT_EQ(period_id(config::budget_period::monthly, before), "m202611");
  EXPECT_EQ(period_id(config::budget_period::daily, before), "d20781");
  EXPECT_EQ(period_id(config::budget_period::daily, after), "d20782");
  EXPECT_EQ(period_id(config::budget_period::total, after), "all");
  // Month and year boundaries, and a leap day.
  EXPECT_EQ(period_id(config::budget_period::monthly, 1'796'083'199'999), "m202611");  // 2026-11-30T23:59:59.999Z
  EXPECT_EQ(period_id(config::budget_period::monthly, 1'796'083'200'000), "m202612");
  EXPECT_EQ(period_id(config::budget_period::monthly, 1'798'761'600'000), "m202701");  // 2027-01-01
  EXPECT_EQ(period_id(config::budget_period::monthly, 1'709'164'800'000), "m202402");  // 2024-02-29
  EXPECT_EQ(period_id(config::budget_period::monthly, 1'709'251'200'000), "m202403");  // 2024-03-01
  // Every digit place, and years outside four digits (the general form).
  EXPECT_EQ(period_id(config::budget_period::monthly, 43'200'000), "m197001");              // 1970-01-01
  EXPECT_EQ(period_id(config::budget_period::monthly, 951'825'600'000), "m200002");         // 2000-02-29
  EXPECT_EQ(period_id(config::budget_period::monthly, -30'611'692'800'000), "m099912");     // 0999-12-15T00:00Z
  EXPECT_EQ(period_id(config::budget_period::monthly, 253'402'257'600'000), "m999912");     // 9999-12-31
  EXPECT_EQ(period_id(config::budget_period::monthly, 253'402'257'600'000 + 86'400'000), "m1000001");  // 10000-01-01
}

TEST(MemoryStore, DailyBudgetStartsAgainTheNextDay) {
  std::int64_t now = 1'795'564'000'000;  // 2026-11-24, late in the day
  memory_store st([&] { return now; });
  config::budget_config b;
  b.limit_nano = 10;
  b.period = config::budget_period::daily;
  admission a;
  a.lease = "x1";
  a.scopes = {scope_spec{"t", "team", {}, b}};
  a.cost_nano = 10;
  auto r = st.admit_now(a);
  ASSERT_EQ(r.v, verdict::admitted);
  settlement s{a, r.periods, 1, 10};
  ASSERT_TRUE(st.settle_now(s).applied);
  a.lease = "x2";
  EXPECT_EQ(st.admit_now(a).v, verdict::budget);
  now += 86'400'000;
  EXPECT_EQ(st.admit_now(a).v, verdict::admitted);
}

}  // namespace
}  // namespace tollgate::policy::testing
