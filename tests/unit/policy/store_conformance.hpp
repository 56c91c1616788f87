// SPDX-License-Identifier: Apache-2.0
#pragma once
// One conformance suite for every policy store. A backend provides:
//   static std::unique_ptr<policy::store> make(std::int64_t window_ms);
//   static void advance(policy::store&, std::int64_t ms);   // lets that much store time pass
//   static constexpr std::int64_t window_ms;                // short for real-time backends
// and instantiates: INSTANTIATE_TYPED_TEST_SUITE_P(Name, StoreConformance, Backend);
#include <gtest/gtest.h>

#include <boost/asio/use_future.hpp>

#include <algorithm>
#include <future>
#include <map>
#include <set>
#include <vector>

#include "policy/store.hpp"

namespace tollgate::policy::testing {

template <class T>
T run_sync(net::io_context& ioc, awaitable<T> a) {
  auto fut = net::co_spawn(ioc, std::move(a), net::use_future);
  ioc.restart();
  while (fut.wait_for(std::chrono::seconds(0)) != std::future_status::ready) ioc.run_one_for(std::chrono::milliseconds(5));
  return fut.get();
}

inline scope_spec scope(std::string id, config::limits_config l, config::budget_config b = {}) {
  return scope_spec{std::move(id), "team-a", l, b};
}

inline config::budget_config budget_of(std::int64_t nano, double soft = 0) {
  config::budget_config b;
  b.limit_nano = nano;
  b.soft = soft;
  return b;
}

/// Scope "t" with only a budget of `nano` per `period`.
inline scope_spec budget_scope(std::int64_t nano, config::budget_period period) {
  auto b = budget_of(nano);
  b.period = period;
  return scope("t", {}, b);
}

template <class Backend>
class StoreConformance : public ::testing::Test {
 protected:
  void SetUp() override {
    st = Backend::make(Backend::window_ms);
    // A backend that cannot start fails (a skip would count as a pass in ctest and hide it).
    ASSERT_TRUE(st) << "the backend did not start (redis-server: deploy/install-deps installs it)";
    std::vector<executor_t> ex{executor_t(ioc.get_executor())};
    st->start(ex);
    Backend::wait_ready(*st, ioc);
    ASSERT_TRUE(st->healthy()) << "the backend did not come up: " << st->last_error();
  }
  void TearDown() override {
    if (st) st->stop();
  }

  admission adm(std::vector<scope_spec> scopes, std::uint64_t tokens = 1, std::int64_t cost = 0,
                std::uint32_t lease_ms = 60'000) {
    admission a;
    a.lease = "lease-" + std::to_string(next_++) + "-" + ::testing::UnitTest::GetInstance()->current_test_info()->name();
    a.scopes = std::move(scopes);
    a.tokens = tokens;
    a.cost_nano = cost;
    a.lease_ms = lease_ms;
    return a;
  }
  admit_result admit(const admission& a) { return run_sync(ioc, st->admit(0, a)); }
  /// Every key of `team` ("" : all), read page by page (`limit` a page); each page's ids ascending
  /// and after the last page's. Fails the test on an unreachable store or a page out of order.
  std::vector<key_record> all_keys(std::string team, std::size_t limit, std::size_t* pages = nullptr) {
    std::vector<key_record> out;
    key_query q{std::move(team), "", limit};
    for (std::size_t n = 1;; ++n) {
      auto page = run_sync(ioc, st->list_keys(0, q));
      EXPECT_TRUE(page);
      if (!page) return out;
      EXPECT_LE(page->keys.size(), limit);
      for (auto& k : page->keys) {
        EXPECT_GT(k.id, q.after) << "page " << n << " is not after the last";
        q.after = k.id;
        out.push_back(std::move(k));
      }
      if (pages) *pages = n;
      if (!page->has_more) return out;
      EXPECT_EQ(page->keys.size(), limit) << "a page short of its limit says there is more";
      if (page->keys.empty()) return out;
    }
  }
  settle_result settle(const admission& a, const admit_result& r, std::uint64_t tokens, std::int64_t cost) {
    return run_sync(ioc, st->settle(0, settlement_of(a, r, tokens, cost)));
  }
  budget_state budget(const scope_spec& s) { return run_sync(ioc, st->budget(0, s)); }
  settlement settlement_of(const admission& a, const admit_result& r, std::uint64_t tokens, std::int64_t cost) {
    settlement s;
    s.adm = a;
    s.periods = r.periods;
    s.admitted_at_ms = r.admitted_at_ms;
    s.tokens = tokens;
    s.cost_nano = cost;
    return s;
  }
  /// Runs the io_context until `done` (at most 5 s).
  template <class F>
  void run_until(F&& done) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    ioc.restart();
    while (!done() && std::chrono::steady_clock::now() < deadline) ioc.run_one_for(std::chrono::milliseconds(5));
  }
  void advance(std::int64_t ms) { Backend::advance(*st, ms); }

  net::io_context ioc;
  std::unique_ptr<store> st;
  int next_ = 0;
};

TYPED_TEST_SUITE_P(StoreConformance);

TYPED_TEST_P(StoreConformance, RequestsPerMinuteAdmitsExactlyTheLimitThenRecoversAfterTheWindow) {
  auto s = scope("t", {3, 0, 0});
  for (int i = 0; i < 3; ++i) EXPECT_EQ(this->admit(this->adm({s})).v, verdict::admitted) << i;
  auto refused = this->admit(this->adm({s}));
  EXPECT_EQ(refused.v, verdict::rpm);
  EXPECT_EQ(refused.scope, 0u);
  EXPECT_GT(refused.retry_after_ms, 0);
  // A call counts for the window plus at most one bucket (window/30): never less than the window.
  EXPECT_LE(refused.retry_after_ms, TypeParam::window_ms + TypeParam::window_ms / 30);
  // Still counted nine tenths of the window later (the bound's lower side: at least the window)...
  this->advance(TypeParam::window_ms * 9 / 10);
  EXPECT_EQ(this->admit(this->adm({s})).v, verdict::rpm);
  // ...and released after the window plus one bucket.
  this->advance(TypeParam::window_ms / 10 + TypeParam::window_ms / 30 + 20);
  EXPECT_EQ(this->admit(this->adm({s})).v, verdict::admitted);
}

TYPED_TEST_P(StoreConformance, RetryAfterIsWhenTheCallsThatFillTheWindowLeaveIt) {
  // rpm 2: one call at 0 and one at half a window; the first has left when a third comes. A
  // fourth is refused until the second leaves, half a window on, not one bucket later (the
  // window's oldest bucket after a roll is empty: the retry is read from the counts).
  const std::int64_t w = TypeParam::window_ms, bucket = w / 30;
  auto s = scope("t", {2, 0, 0});
  ASSERT_EQ(this->admit(this->adm({s})).v, verdict::admitted);
  this->advance(w / 2);
  ASSERT_EQ(this->admit(this->adm({s})).v, verdict::admitted);
  this->advance(w / 2 + 2 * bucket);
  ASSERT_EQ(this->admit(this->adm({s})).v, verdict::admitted);
  auto refused = this->admit(this->adm({s}));
  ASSERT_EQ(refused.v, verdict::rpm);
  EXPECT_GE(refused.retry_after_ms, w / 3) << "the second call is still in the window";
  EXPECT_LE(refused.retry_after_ms, w / 2 + bucket);
  // By then it has left, and one more call fits.
  this->advance(refused.retry_after_ms + 20);
  EXPECT_EQ(this->admit(this->adm({s})).v, verdict::admitted);
}

TYPED_TEST_P(StoreConformance, ARefusedCallIsToldToWaitForEveryRateLimitThatRefusesIt) {
  // rpm 2, tpm 100: a 1-token call at 0, a 90-token call at half a window. A 20-token call is
  // over both: the requests free up when the first call leaves (half a window on), the tokens
  // only when the second does (a whole window on). The answer is the tokens' wait: a retry after
  // the requests' one would be refused again.
  const std::int64_t w = TypeParam::window_ms, bucket = w / 30;
  auto s = scope("t", {2, 100, 0});
  ASSERT_EQ(this->admit(this->adm({s}, 1)).v, verdict::admitted);
  this->advance(w / 2);
  ASSERT_EQ(this->admit(this->adm({s}, 90)).v, verdict::admitted);
  const auto call = this->adm({s}, 20);
  const auto refused = this->admit(call);
  EXPECT_EQ(refused.v, verdict::tpm);
  // Longer than the requests' wait (half a window and a bucket): the 90 tokens stay until then.
  // (Not "about a window": on Redis the time between the two calls, slow under ASan, is off it.)
  EXPECT_GT(refused.retry_after_ms, w / 2 + 2 * bucket) << "the 90 tokens are in the window until then";
  EXPECT_LE(refused.retry_after_ms, w + 2 * bucket);
  this->advance(refused.retry_after_ms + 20);
  EXPECT_EQ(this->admit(call).v, verdict::admitted);
}

TYPED_TEST_P(StoreConformance, ARefusedCallIsToldToWaitForTheScopeThatRefusesLongest) {
  // The team (rpm 3) is full from two calls of another key at 0 and one of key k at half a
  // window; k (rpm 1) is full from that one call. The team frees a request half a window on, k
  // only a whole window on: the answer names k, with its wait.
  const std::int64_t w = TypeParam::window_ms, bucket = w / 30;
  auto team = scope("t", {3, 0, 0});
  auto other = scope("k:other", {0, 0, 0});
  auto k = scope("k:k", {1, 0, 0});
  ASSERT_EQ(this->admit(this->adm({team, other})).v, verdict::admitted);
  ASSERT_EQ(this->admit(this->adm({team, other})).v, verdict::admitted);
  this->advance(w / 2);
  ASSERT_EQ(this->admit(this->adm({team, k})).v, verdict::admitted);
  const auto refused = this->admit(this->adm({team, k}));
  EXPECT_EQ(refused.v, verdict::rpm);
  EXPECT_EQ(refused.scope, 1u) << "the key refuses for longest";
  EXPECT_GT(refused.retry_after_ms, w / 2 + 2 * bucket) << "longer than the team's wait";
  EXPECT_LE(refused.retry_after_ms, w + 2 * bucket);
}

TYPED_TEST_P(StoreConformance, ASpentBudgetIsTheAnswerEvenWhenARateLimitAlsoRefuses) {
  // rpm 1 and a budget that one call spends whole: the next call is over both, and no wait helps
  // it, so the answer is the budget (429 insufficient_quota, not a retry that fails again).
  auto s = scope("t", {1, 0, 0}, budget_of(100));
  const auto a = this->adm({s}, 1, 100);
  const auto r = this->admit(a);
  ASSERT_EQ(r.v, verdict::admitted);
  ASSERT_TRUE(this->settle(a, r, 1, 100).applied);
  const auto refused = this->admit(this->adm({s}, 1, 1));
  EXPECT_EQ(refused.v, verdict::budget);
  EXPECT_EQ(refused.retry_after_ms, 0);
}

TYPED_TEST_P(StoreConformance, ABudgetHeldByCallsInFlightIsAnsweredWithAWaitASpentOneWithout) {
  // A call in flight reserves the whole budget: the next is refused, with a wait (its settlement
  // may free some). Once settled at its worst case, the budget is spent: no wait helps.
  auto s = scope("t", {}, budget_of(100));
  const auto a = this->adm({s}, 1, 100);
  const auto r = this->admit(a);
  ASSERT_EQ(r.v, verdict::admitted);
  const auto held = this->admit(this->adm({s}, 1, 1));
  EXPECT_EQ(held.v, verdict::budget);
  EXPECT_EQ(held.retry_after_ms, 1000);
  ASSERT_TRUE(this->settle(a, r, 1, 100).applied);
  const auto spent = this->admit(this->adm({s}, 1, 1));
  EXPECT_EQ(spent.v, verdict::budget);
  EXPECT_EQ(spent.retry_after_ms, 0);
}

TYPED_TEST_P(StoreConformance, AConcurrencyLimitAddedLaterCountsOnlyCallsAdmittedUnderIt) {
  // A scope with only a budget holds a lease per call in flight; a reload then adds concurrency 1.
  // The call admitted before holds no slot (it never releases one): the first call under the
  // limit is admitted, the second refused until that one settles.
  auto before = scope("t", {}, budget_of(1'000));
  auto after = scope("t", {0, 0, 1}, budget_of(1'000));
  const auto a = this->adm({before}, 1, 10);
  const auto ra = this->admit(a);
  ASSERT_EQ(ra.v, verdict::admitted);
  const auto b = this->adm({after}, 1, 10);
  const auto rb = this->admit(b);
  EXPECT_EQ(rb.v, verdict::admitted) << "the call from before the limit took its slot";
  EXPECT_EQ(this->admit(this->adm({after}, 1, 10)).v, verdict::concurrency);
  ASSERT_TRUE(this->settle(a, ra, 1, 10).applied);
  EXPECT_EQ(this->admit(this->adm({after}, 1, 10)).v, verdict::concurrency) << "b still holds the slot";
  ASSERT_TRUE(this->settle(b, rb, 1, 10).applied);
  EXPECT_EQ(this->admit(this->adm({after}, 1, 10)).v, verdict::admitted);
}

TYPED_TEST_P(StoreConformance, ASoftThresholdThatRoundsToNothingNeverFires) {
  // A $0 budget (free models only) with soft 0.8: 0 × 0.8 is no threshold, not one crossed at 0.
  auto s = scope("t", {}, budget_of(0, 0.8));
  auto a = this->adm({s}, 1, 0);
  auto r = this->admit(a);
  ASSERT_EQ(r.v, verdict::admitted);
  const settle_result done = this->settle(a, r, 1, 0);
  ASSERT_TRUE(done.applied);
  ASSERT_EQ(done.soft_crossed.size(), 1u);
  EXPECT_FALSE(done.soft_crossed[0]);
}

TYPED_TEST_P(StoreConformance, TokensPerMinuteReservesThenCorrectsToUsage) {
  auto s = scope("t", {0, 100, 0});
  auto a1 = this->adm({s}, 60);
  auto r1 = this->admit(a1);
  ASSERT_EQ(r1.v, verdict::admitted);
  EXPECT_EQ(this->admit(this->adm({s}, 60)).v, verdict::tpm);  // 60 + 60 > 100
  // The call used only 10 tokens: the window now holds 10, and 60 more fit.
  ASSERT_TRUE(this->settle(a1, r1, 10, 0).applied);
  EXPECT_EQ(this->admit(this->adm({s}, 60)).v, verdict::admitted);
  EXPECT_EQ(this->admit(this->adm({s}, 31)).v, verdict::tpm);  // 10 + 60 + 31 > 100
  EXPECT_EQ(this->admit(this->adm({s}, 30)).v, verdict::admitted);
}

TYPED_TEST_P(StoreConformance, ABatchOfSettlementsCorrectsAndChargesEachCallOnce) {
  // Calls of two scopes settled in one batch, as a worker sends them: each call's tokens are
  // corrected to its usage and its cost charged once; a settlement repeated in the batch is not.
  auto team = scope("t", {0, 300, 0}, budget_of(1000));
  auto key = scope("k:one", {0, 300, 0});
  std::vector<settlement> batch;
  for (std::uint64_t used : {10u, 70u, 60u}) {
    auto a = this->adm({team, key}, 60, 100);
    auto r = this->admit(a);
    ASSERT_EQ(r.v, verdict::admitted);
    settlement s;
    s.adm = a;
    s.periods = r.periods;
    s.admitted_at_ms = r.admitted_at_ms;
    s.tokens = used;
    s.cost_nano = std::int64_t(20 + used);
    batch.push_back(s);
  }
  batch.push_back(batch[1]);
  auto res = run_sync(this->ioc, this->st->settle_batch(0, batch));
  ASSERT_EQ(res.size(), 4u);
  for (std::size_t i = 0; i < 3; ++i) {
    EXPECT_TRUE(res[i].reachable) << i;
    EXPECT_TRUE(res[i].applied) << i;
  }
  EXPECT_TRUE(res[3].reachable);
  EXPECT_FALSE(res[3].applied);
  EXPECT_EQ(res[2].spent.at(0), 30 + 90 + 80);
  // Both windows hold 10 + 70 + 60 = 140 tokens: 160 more fit, 161 do not.
  EXPECT_EQ(this->admit(this->adm({team, key}, 161)).v, verdict::tpm);
  EXPECT_EQ(this->admit(this->adm({key}, 161)).v, verdict::tpm);
  EXPECT_EQ(this->admit(this->adm({team, key}, 160)).v, verdict::admitted);
  auto b = this->budget(team);
  ASSERT_TRUE(b.reachable);
  EXPECT_EQ(b.spent, 30 + 90 + 80);
  EXPECT_EQ(b.reserved, 0);
}

TYPED_TEST_P(StoreConformance, QueuedSettlementsAreAppliedOnceBeforeTheNextAdmission) {
  // A worker hands its finished calls to the store and admits new ones: a settlement handed over
  // before an admission is applied before it (the Redis store carries it in the admission's
  // script call), a repeated one is not applied twice, and one with no admission to carry it
  // still goes (alone).
  auto s = scope("t", {0, 100, 1}, budget_of(1000));
  auto a1 = this->adm({s}, 60, 100);
  auto r1 = this->admit(a1);
  ASSERT_EQ(r1.v, verdict::admitted);
  std::vector<settle_result> got;
  this->st->on_settled([&](unsigned, std::vector<settlement>& b, const std::vector<settle_result>& r, bool) {
    EXPECT_EQ(b.size(), r.size());
    got.insert(got.end(), r.begin(), r.end());
  });
  const executor_t ex(this->ioc.get_executor());
  // a1 holds the only slot: a2 is admitted only if a1's settlement comes first.
  auto a2 = this->adm({s}, 60, 100);
  auto admitted = net::co_spawn(this->ioc, this->st->admit(0, a2), net::use_future);
  const settlement s1 = this->settlement_of(a1, r1, 10, 30);
  this->st->queue_settlement(0, s1, ex);
  this->st->queue_settlement(0, s1, ex);
  this->run_until([&] { return got.size() == 2 && admitted.wait_for(std::chrono::seconds(0)) == std::future_status::ready; });
  ASSERT_EQ(got.size(), 2u);
  auto r2 = admitted.get();
  ASSERT_EQ(r2.v, verdict::admitted);
  EXPECT_TRUE(got[0].reachable);
  EXPECT_TRUE(got[0].applied);
  ASSERT_EQ(got[0].spent.size(), 1u);
  EXPECT_EQ(got[0].spent[0], 30);
  EXPECT_TRUE(got[1].reachable);
  EXPECT_FALSE(got[1].applied);
  auto b = this->budget(s);
  EXPECT_EQ(b.spent, 30);
  EXPECT_EQ(b.reserved, 100);
  // Nothing admitted to carry it: a2's settlement goes alone.
  this->st->queue_settlement(0, this->settlement_of(a2, r2, 60, 50), ex);
  this->run_until([&] { return got.size() == 3; });
  ASSERT_EQ(got.size(), 3u);
  EXPECT_TRUE(got[2].applied);
  b = this->budget(s);
  EXPECT_EQ(b.spent, 80);
  EXPECT_EQ(b.reserved, 0);
  // The window holds 10 + 60 tokens: 30 more fit, 31 do not.
  EXPECT_EQ(this->admit(this->adm({s}, 31)).v, verdict::tpm);
  EXPECT_EQ(this->admit(this->adm({s}, 30)).v, verdict::admitted);
}

TYPED_TEST_P(StoreConformance, ASettlementInALaterBucketCorrectsItsOwnBucket) {
  // A call settled buckets after its admission is corrected in the bucket it was counted in: the
  // window holds its usage until that bucket leaves, and then nothing of it.
  constexpr std::int64_t w = TypeParam::window_ms;
  auto s = scope("t", {0, 100, 0});
  auto a1 = this->adm({s}, 60);
  auto r1 = this->admit(a1);
  ASSERT_EQ(r1.v, verdict::admitted);
  this->advance(w / 2);
  bool settled = false;
  this->st->on_settled([&](unsigned, std::vector<settlement>&, const std::vector<settle_result>& r, bool) {
    settled = r.size() == 1 && r[0].applied;
  });
  // Carried by an admission that fits only once a1 is corrected to 10 tokens (10 + 90).
  auto a2 = this->adm({s}, 90);
  auto admitted = net::co_spawn(this->ioc, this->st->admit(0, a2), net::use_future);
  this->st->queue_settlement(0, this->settlement_of(a1, r1, 10, 0), executor_t(this->ioc.get_executor()));
  this->run_until([&] { return settled && admitted.wait_for(std::chrono::seconds(0)) == std::future_status::ready; });
  EXPECT_TRUE(settled);
  EXPECT_EQ(admitted.get().v, verdict::admitted);
  EXPECT_EQ(this->admit(this->adm({s}, 1)).v, verdict::tpm);
  // a1's bucket has left the window (a2's has not): its 10 tokens went with it, not 60.
  this->advance(w / 2 + w / 10);
  EXPECT_EQ(this->admit(this->adm({s}, 11)).v, verdict::tpm);
  EXPECT_EQ(this->admit(this->adm({s}, 10)).v, verdict::admitted);
}

TYPED_TEST_P(StoreConformance, ConcurrencyIsReleasedBySettlement) {
  auto s = scope("t", {0, 0, 2});
  auto a1 = this->adm({s}), a2 = this->adm({s});
  auto r1 = this->admit(a1);
  ASSERT_EQ(r1.v, verdict::admitted);
  ASSERT_EQ(this->admit(a2).v, verdict::admitted);
  EXPECT_EQ(this->admit(this->adm({s})).v, verdict::concurrency);
  this->settle(a1, r1, 0, 0);
  EXPECT_EQ(this->admit(this->adm({s})).v, verdict::admitted);
}

TYPED_TEST_P(StoreConformance, ManyCallsAtOnceAdmitExactlyTheLimit) {
  // 100 calls queued together (the Redis store sends them in more than one batch, two on the
  // wire at once): the team's requests-per-minute limit admits exactly 37, the key's budget
  // (room for 50) holds exactly their reservations, and every refusal names the rate limit.
  // Then a second wave against the budget alone: exactly what is left of it is admitted.
  auto t = scope("t", {37, 0, 0});
  auto k = scope("k:many", {}, budget_of(2000));
  auto wave = [&](const std::vector<scope_spec>& scopes, int n) {
    std::vector<admission> calls;
    for (int i = 0; i < n; ++i) calls.push_back(this->adm(scopes, 1, 40));
    std::vector<std::future<admit_result>> results;
    for (auto& a : calls) results.push_back(net::co_spawn(this->ioc, this->st->admit(0, a), net::use_future));
    this->run_until([&] {
      for (auto& f : results)
        if (f.wait_for(std::chrono::seconds(0)) != std::future_status::ready) return false;
      return true;
    });
    std::map<verdict, int> count;
    for (auto& f : results) {
      EXPECT_EQ(f.wait_for(std::chrono::seconds(0)), std::future_status::ready);
      if (f.wait_for(std::chrono::seconds(0)) == std::future_status::ready) ++count[f.get().v];
    }
    return count;
  };
  auto first = wave({t, k}, 100);
  EXPECT_EQ(first[verdict::admitted], 37);
  EXPECT_EQ(first[verdict::rpm], 63);
  const budget_state b = this->budget(k);
  ASSERT_TRUE(b.reachable);
  EXPECT_EQ(b.reserved, 37 * 40);
  auto second = wave({k}, 40);  // room left: (2000 - 1480) / 40 = 13
  EXPECT_EQ(second[verdict::admitted], 13);
  EXPECT_EQ(second[verdict::budget], 27);
}

TYPED_TEST_P(StoreConformance, BudgetReservesWorstCaseAndChargesActual) {
  auto s = scope("t", {}, budget_of(100));
  std::vector<std::pair<admission, admit_result>> held;
  for (int i = 0; i < 3; ++i) {
    auto a = this->adm({s}, 1, 30);
    auto r = this->admit(a);
    ASSERT_EQ(r.v, verdict::admitted) << i;
    held.emplace_back(a, r);
  }
  EXPECT_EQ(this->admit(this->adm({s}, 1, 30)).v, verdict::budget);  // 90 reserved + 30 > 100
  auto b = this->budget(s);
  ASSERT_TRUE(b.reachable);
  EXPECT_EQ(b.reserved, 90);
  EXPECT_EQ(b.spent, 0);
  for (auto& [a, r] : held) ASSERT_TRUE(this->settle(a, r, 1, 10).applied);
  b = this->budget(s);
  EXPECT_EQ(b.spent, 30);
  EXPECT_EQ(b.reserved, 0);
  // 30 spent: two more worst cases of 30 fit (90), a third does not (120).
  EXPECT_EQ(this->admit(this->adm({s}, 1, 30)).v, verdict::admitted);
  EXPECT_EQ(this->admit(this->adm({s}, 1, 30)).v, verdict::admitted);
  EXPECT_EQ(this->admit(this->adm({s}, 1, 30)).v, verdict::budget);
}

TYPED_TEST_P(StoreConformance, ABudgetWhosePeriodKindChangesKeepsWhatWasSpent) {
  // An operator changes a budget's period (monthly -> daily, say), or replicas reload one after
  // the other and admit under both kinds in turn. Until 2026-11-28 each change of kind started a
  // fresh period: changing back, or every switch between two replicas' configs, forgot the spend
  // (a $1000 monthly budget with $990 spent had $1000 again). The spend now carries over every
  // change of kind; the new kind's next boundary starts it again (MemoryStore test).
  const auto monthly = budget_scope(100, config::budget_period::monthly),
             daily = budget_scope(100, config::budget_period::daily),
             total = budget_scope(100, config::budget_period::total);
  auto a = this->adm({monthly}, 1, 30);
  auto r = this->admit(a);
  ASSERT_EQ(r.v, verdict::admitted);
  ASSERT_TRUE(this->settle(a, r, 1, 30).applied);
  EXPECT_EQ(this->budget(monthly).spent, 30);
  // Daily now: the 30 count against it.
  EXPECT_EQ(this->budget(daily).spent, 30);
  EXPECT_EQ(this->admit(this->adm({daily}, 1, 80)).v, verdict::budget);  // 30 + 80 > 100
  auto d = this->adm({daily}, 1, 60);
  auto dr = this->admit(d);
  ASSERT_EQ(dr.v, verdict::admitted);
  ASSERT_TRUE(this->settle(d, dr, 1, 50).applied);
  EXPECT_EQ(this->budget(daily).spent, 80);
  // And back to monthly (a replica not reloaded yet), and on to total: nothing is forgotten.
  EXPECT_EQ(this->budget(monthly).spent, 80);
  EXPECT_EQ(this->admit(this->adm({monthly}, 1, 30)).v, verdict::budget);  // 80 + 30 > 100
  auto m = this->adm({monthly}, 1, 20);
  auto mr = this->admit(m);
  ASSERT_EQ(mr.v, verdict::admitted);
  ASSERT_TRUE(this->settle(m, mr, 1, 15).applied);
  for (const auto& next : {total, daily, monthly}) {
    EXPECT_EQ(this->budget(next).spent, 95);
    EXPECT_EQ(this->admit(this->adm({next}, 1, 6)).v, verdict::budget);  // 95 + 6 > 100
    auto n = this->adm({next}, 1, 1);
    auto nr = this->admit(n);
    ASSERT_EQ(nr.v, verdict::admitted);
    ASSERT_TRUE(this->settle(n, nr, 1, 0).applied);
  }
}

TYPED_TEST_P(StoreConformance, ASettlementFromBeforeAPeriodChangeIsChargedToTheCurrentPeriod) {
  const auto monthly = budget_scope(1000, config::budget_period::monthly),
             daily = budget_scope(1000, config::budget_period::daily);
  auto old = this->adm({monthly}, 1, 100);
  auto oldr = this->admit(old);
  ASSERT_EQ(oldr.v, verdict::admitted);
  auto now = this->adm({daily}, 1, 100);
  auto nowr = this->admit(now);
  ASSERT_EQ(nowr.v, verdict::admitted);
  ASSERT_TRUE(this->settle(now, nowr, 1, 30).applied);
  ASSERT_TRUE(this->settle(old, oldr, 1, 20).applied);  // the monthly call ends last
  auto b = this->budget(daily);
  EXPECT_EQ(b.spent, 50) << "charged once each, neither reset by the other";
  EXPECT_EQ(b.reserved, 0);
}

TYPED_TEST_P(StoreConformance, AdmissionIsAllOrNothingAcrossScopes) {
  auto team = scope("t", {2, 0, 0});
  auto key = scope("k:abc", {1, 0, 0});
  ASSERT_EQ(this->admit(this->adm({team, key})).v, verdict::admitted);
  auto r = this->admit(this->adm({team, key}));
  EXPECT_EQ(r.v, verdict::rpm);
  EXPECT_EQ(r.scope, 1u);  // the key refused
  // The refused call reserved nothing in the team scope: one team slot is still free.
  EXPECT_EQ(this->admit(this->adm({team})).v, verdict::admitted);
  EXPECT_EQ(this->admit(this->adm({team})).v, verdict::rpm);
}

TYPED_TEST_P(StoreConformance, AnswersCarryTheTightestScopesRateFigures) {
  auto team = scope("t", {5, 1000, 0});
  auto key = scope("k:abc", {3, 5000, 0});
  auto budget_only = scope("k:b", {0, 0, 0}, budget_of(1'000'000));
  // After this call: the team has 4 requests and 900 tokens left, the key 2 and 4900.
  auto r = this->admit(this->adm({team, key}, 100));
  ASSERT_EQ(r.v, verdict::admitted);
  EXPECT_EQ(r.requests_scope, 1);  // the key has fewer requests left
  EXPECT_EQ(r.requests_left, 2);
  EXPECT_EQ(r.tokens_scope, 0);    // the team fewer tokens
  EXPECT_EQ(r.tokens_left, 900);
  // Every count now in the window has left it by the end of this bucket plus the window.
  EXPECT_GT(r.reset_ms, TypeParam::window_ms);
  EXPECT_LE(r.reset_ms, TypeParam::window_ms + TypeParam::window_ms / 30);
  // Ties go to the first scope; a scope that limits no rate is never named.
  auto tie = this->admit(this->adm({budget_only, scope("k:c", {7, 0, 0}), scope("k:d", {7, 0, 0})}, 10));
  ASSERT_EQ(tie.v, verdict::admitted);
  EXPECT_EQ(tie.requests_scope, 1);
  EXPECT_EQ(tie.requests_left, 6);
  EXPECT_EQ(tie.tokens_scope, -1);
  auto none = this->admit(this->adm({budget_only}, 10));
  ASSERT_EQ(none.v, verdict::admitted);
  EXPECT_EQ(none.requests_scope, -1);
  EXPECT_EQ(none.tokens_scope, -1);
  // A refusal reports what is left without this call: the key has 0 requests left after two more.
  ASSERT_EQ(this->admit(this->adm({team, key}, 100)).v, verdict::admitted);
  ASSERT_EQ(this->admit(this->adm({team, key}, 100)).v, verdict::admitted);
  auto refused = this->admit(this->adm({team, key}, 100));
  ASSERT_EQ(refused.v, verdict::rpm);
  EXPECT_EQ(refused.requests_scope, 1);
  EXPECT_EQ(refused.requests_left, 0);
  EXPECT_EQ(refused.tokens_scope, 0);
  EXPECT_EQ(refused.tokens_left, 700);
  // A call larger than what is left: refused, and what is left is still reported (not negative).
  auto big = this->admit(this->adm({team}, 800));
  ASSERT_EQ(big.v, verdict::tpm);
  EXPECT_EQ(big.tokens_left, 700);
  EXPECT_EQ(big.requests_left, 2);
}

TYPED_TEST_P(StoreConformance, LeasesOfADeadGatewayExpire) {
  auto s = scope("t", {0, 0, 1}, budget_of(50));
  auto a = this->adm({s}, 1, 50, 300);  // never settled: its gateway "died"
  ASSERT_EQ(this->admit(a).v, verdict::admitted);
  EXPECT_EQ(this->admit(this->adm({s}, 1, 1)).v, verdict::concurrency);
  this->advance(400);
  auto b = this->budget(s);
  EXPECT_EQ(b.reserved, 0);
  EXPECT_EQ(this->admit(this->adm({s}, 1, 50)).v, verdict::admitted);
}

TYPED_TEST_P(StoreConformance, ACallThatOutlivedItsLeaseIsStillChargedOnce) {
  auto s = scope("t", {0, 0, 1}, budget_of(100));
  auto a = this->adm({s}, 1, 50, 300);
  auto r = this->admit(a);
  ASSERT_EQ(r.v, verdict::admitted);
  this->advance(400);
  EXPECT_EQ(this->budget(s).reserved, 0);  // the lease expired: its hold went back
  auto late = this->settle(a, r, 1, 30);
  EXPECT_TRUE(late.applied);
  auto again = this->settle(a, r, 1, 30);
  EXPECT_FALSE(again.applied);
  auto b = this->budget(s);
  EXPECT_EQ(b.spent, 30);
  EXPECT_EQ(b.reserved, 0);
  // Its concurrency slot was freed by the expiry and is not freed twice.
  EXPECT_EQ(this->admit(this->adm({s}, 1, 1)).v, verdict::admitted);
  EXPECT_EQ(this->admit(this->adm({s}, 1, 1)).v, verdict::concurrency);
}

TYPED_TEST_P(StoreConformance, ARenewedLeaseKeepsItsHoldPastTheFirstExpiry) {
  auto s = scope("t", {0, 0, 1}, budget_of(100));
  auto a = this->adm({s}, 1, 50, 300);
  auto r = this->admit(a);
  ASSERT_EQ(r.v, verdict::admitted);
  ASSERT_TRUE(run_sync(this->ioc, this->st->renew(0, a, r.admitted_at_ms + 2000)));
  this->advance(400);  // past the first expiry
  EXPECT_EQ(this->budget(s).reserved, 50);
  EXPECT_EQ(this->admit(this->adm({s}, 1, 1)).v, verdict::concurrency);
  ASSERT_TRUE(this->settle(a, r, 1, 20).applied);
  auto b = this->budget(s);
  EXPECT_EQ(b.spent, 20);
  EXPECT_EQ(b.reserved, 0);
  // Renewing a settled call does not bring its hold back.
  ASSERT_TRUE(run_sync(this->ioc, this->st->renew(0, a, r.admitted_at_ms + 5000)));
  EXPECT_EQ(this->budget(s).reserved, 0);
  EXPECT_EQ(this->admit(this->adm({s}, 1, 1)).v, verdict::admitted);
}

TYPED_TEST_P(StoreConformance, SettlementAppliedTwiceChargesOnce) {
  auto s = scope("t", {}, budget_of(1000));
  auto a = this->adm({s}, 1, 100);
  auto r = this->admit(a);
  ASSERT_EQ(r.v, verdict::admitted);
  auto first = this->settle(a, r, 1, 70);
  auto second = this->settle(a, r, 1, 70);
  EXPECT_TRUE(first.reachable);
  EXPECT_TRUE(first.applied);
  EXPECT_TRUE(second.reachable);
  EXPECT_FALSE(second.applied);
  EXPECT_EQ(this->budget(s).spent, 70);
}

TYPED_TEST_P(StoreConformance, RecordsAreReplacedOnlyOverWhatWasRead) {
  // The admin API's compare-and-set: a write made over a record read before another write landed
  // is refused (`changed`), and writes nothing.
  key_record k;
  k.id = "cas" + std::to_string(this->next_++) + "x";
  k.team = "team-cas";
  k.digest = "sha256:" + std::string(64, '0');
  ASSERT_TRUE(run_sync(this->ioc, this->st->put_key(0, k)));
  const key_lookup read = run_sync(this->ioc, this->st->get_key(0, k.id));
  ASSERT_TRUE(read.key);
  ASSERT_FALSE(read.stored.empty());
  key_record revoked = k;
  revoked.enabled = false;
  EXPECT_EQ(run_sync(this->ioc, this->st->replace_key(0, revoked, read.stored)), write_result::written);
  key_record rotated = k;  // made from the read before the revocation
  rotated.digest = "sha256:" + std::string(64, '1');
  EXPECT_EQ(run_sync(this->ioc, this->st->replace_key(0, rotated, read.stored)), write_result::changed);
  const key_lookup now = run_sync(this->ioc, this->st->get_key(0, k.id));
  ASSERT_TRUE(now.key);
  EXPECT_FALSE(now.key->enabled);
  EXPECT_EQ(now.key->digest, k.digest);
  // Teams: "" stands for no record. A first write over "" creates it, once; a write over a
  // record read before its deletion does not bring it back.
  team_record t;
  t.name = "team-cas-" + std::to_string(this->next_++);
  t.limits.rpm = 5;
  EXPECT_EQ(run_sync(this->ioc, this->st->replace_team(0, t, "")), write_result::written);
  EXPECT_EQ(run_sync(this->ioc, this->st->replace_team(0, t, "")), write_result::changed);
  const team_lookup tr = run_sync(this->ioc, this->st->get_team(0, t.name));
  ASSERT_TRUE(tr.team);
  // A deletion over a record read before a change removes nothing; over the current one, it does.
  team_record changed = t;
  changed.limits.rpm = 6;
  EXPECT_EQ(run_sync(this->ioc, this->st->delete_team(0, t.name, "")), write_result::changed);
  ASSERT_EQ(run_sync(this->ioc, this->st->replace_team(0, changed, tr.stored)), write_result::written);
  EXPECT_EQ(run_sync(this->ioc, this->st->delete_team(0, t.name, tr.stored)), write_result::changed);
  EXPECT_EQ(run_sync(this->ioc, this->st->get_team(0, t.name)).team->limits.rpm, 6u) << "the newer record survives";
  const team_lookup current = run_sync(this->ioc, this->st->get_team(0, t.name));
  ASSERT_EQ(run_sync(this->ioc, this->st->delete_team(0, t.name, current.stored)), write_result::written);
  EXPECT_EQ(run_sync(this->ioc, this->st->delete_team(0, t.name, current.stored)), write_result::changed) << "gone already";
  t.limits.rpm = 9;
  EXPECT_EQ(run_sync(this->ioc, this->st->replace_team(0, t, tr.stored)), write_result::changed);
  EXPECT_FALSE(run_sync(this->ioc, this->st->get_team(0, t.name)).team);
  const auto teams = run_sync(this->ioc, this->st->list_teams(0));
  ASSERT_TRUE(teams);
  EXPECT_TRUE(std::none_of(teams->begin(), teams->end(), [&](const team_record& x) { return x.name == t.name; }));
}

TYPED_TEST_P(StoreConformance, AbsurdReportedCostsSaturateTheSpendAndNeverReopenTheBudget) {
  // Reported usage is not bounded (a broken upstream can report 2^62 tokens); each call's cost is
  // (1e18 at most), but their sum was not: it wrapped past 2^63 to a negative spend, and the
  // budget admitted calls again until the period ended.
  auto t = scope("t", {}, budget_of(1'000'000'000));
  std::vector<std::pair<admission, admit_result>> calls;
  for (int i = 0; i < 10; ++i) {
    auto a = this->adm({t}, 1, 1);
    auto r = this->admit(a);
    ASSERT_EQ(r.v, verdict::admitted);
    calls.emplace_back(std::move(a), r);
  }
  for (auto& [a, r] : calls) {
    const auto s = this->settle(a, r, 1, 1'000'000'000'000'000'000);
    ASSERT_TRUE(s.reachable);
    ASSERT_EQ(s.spent.size(), 1u);
    EXPECT_GT(s.spent[0], 0) << "the spend wrapped";
  }
  EXPECT_EQ(this->budget(t).spent, 4'000'000'000'000'000'000);
  EXPECT_EQ(this->admit(this->adm({t}, 1, 1)).v, verdict::budget);
}

TYPED_TEST_P(StoreConformance, AChargeOnlySettlementChargesItsCostOnceAndTouchesNothingElse) {
  // A call admitted without the store (an outage, budgets: fail_open) is charged later: only its
  // cost, to its scopes' budgets, once per lease; no hold released, no rate window changed.
  auto t = scope("t", {0, 0, 1}, budget_of(1000));
  auto k = scope("k:abc", {0, 100, 0}, budget_of(1000, 0.25));
  auto held = this->adm({t, k}, 10, 100);
  auto hr = this->admit(held);
  ASSERT_EQ(hr.v, verdict::admitted);
  settlement c;
  c.charge_only = true;
  c.adm.lease = "outage-1-" + held.lease;
  c.adm.scopes = {t, k};
  c.periods = {"all", "all"};
  c.tokens = 40;
  c.cost_nano = 300;
  c.admitted_at_ms = hr.admitted_at_ms;
  auto first = run_sync(this->ioc, this->st->settle_batch(0, {c, c}));  // the same charge twice in one batch
  ASSERT_EQ(first.size(), 2u);
  ASSERT_TRUE(first[0].reachable);
  EXPECT_TRUE(first[0].applied);
  ASSERT_EQ(first[0].spent.size(), 2u);
  EXPECT_EQ(first[0].spent[0], 300);
  EXPECT_EQ(first[0].spent[1], 300);
  EXPECT_EQ(first[0].soft_crossed, (std::vector<bool>{false, true}));  // the key's 250
  EXPECT_TRUE(first[1].reachable);
  EXPECT_FALSE(first[1].applied);
  auto again = run_sync(this->ioc, this->st->settle(0, c));  // sent again later (a retry, a replay)
  EXPECT_TRUE(again.reachable);
  EXPECT_FALSE(again.applied);
  auto bt = this->budget(t), bk = this->budget(k);
  EXPECT_EQ(bt.spent, 300);
  EXPECT_EQ(bk.spent, 300);
  EXPECT_EQ(bt.reserved, 100);  // the held call's reservation is still there
  EXPECT_EQ(this->admit(this->adm({t}, 1, 1)).v, verdict::concurrency);  // and its slot
  // The key's token window holds the held call's 10, not the charge's 40: 90 more fit exactly.
  EXPECT_EQ(this->admit(this->adm({k}, 90, 0)).v, verdict::admitted);
  EXPECT_EQ(this->admit(this->adm({k}, 1, 0)).v, verdict::tpm);
  // The held call settles as usual, after the charge.
  ASSERT_TRUE(this->settle(held, hr, 10, 50).applied);
  bt = this->budget(t);
  EXPECT_EQ(bt.spent, 350);
  EXPECT_EQ(bt.reserved, 0);
  EXPECT_EQ(this->admit(this->adm({t}, 1, 1)).v, verdict::admitted);
}

TYPED_TEST_P(StoreConformance, SoftThresholdIsReportedOncePerPeriod) {
  // Four calls of 20 against 100 with a soft threshold at 50: which settlements crossed it.
  const auto crossings = [this](const scope_spec& s) {
    std::vector<bool> crossed;
    for (int i = 0; i < 4; ++i) {
      auto a = this->adm({s}, 1, 20);
      auto r = this->admit(a);
      EXPECT_EQ(r.v, verdict::admitted);
      auto st = this->settle(a, r, 1, 20);
      EXPECT_EQ(st.soft_crossed.size(), 1u);
      crossed.push_back(!st.soft_crossed.empty() && st.soft_crossed[0]);
    }
    return crossed;
  };
  auto s = scope("t", {}, budget_of(100, 0.5));
  // 20, 40, 60 (crosses 50), 80.
  EXPECT_EQ(crossings(s), (std::vector<bool>{false, false, true, false}));
  // A change of the period's kind keeps the spend, and the threshold stays crossed: not reported
  // again (a new period of the new kind is: MemoryStore.ASoftThresholdIsReportedAgainInTheNextPeriod).
  s.budget.period = config::budget_period::daily;
  auto a = this->adm({s}, 1, 20);
  auto r = this->admit(a);
  ASSERT_EQ(r.v, verdict::admitted);
  auto st = this->settle(a, r, 1, 20);
  ASSERT_EQ(st.soft_crossed.size(), 1u);
  EXPECT_FALSE(st.soft_crossed[0]);
  EXPECT_EQ(this->budget(s).spent, 100);
}

TYPED_TEST_P(StoreConformance, ABudgetChangedMidPeriodReportsItsNewSoftThreshold) {
  // One settlement of `cost` against `s`: whether it crossed the soft threshold.
  const auto crossed = [this](const scope_spec& s, std::int64_t cost) {
    auto a = this->adm({s}, 1, cost);
    auto r = this->admit(a);
    EXPECT_EQ(r.v, verdict::admitted);
    auto st = this->settle(a, r, 1, cost);
    EXPECT_EQ(st.soft_crossed.size(), 1u);
    return !st.soft_crossed.empty() && st.soft_crossed[0];
  };
  auto s = scope("t", {}, budget_of(100, 0.5));
  EXPECT_TRUE(crossed(s, 60));   // 60 of 100: past 50
  EXPECT_FALSE(crossed(s, 10));  // 70: reported already
  // An admin raises the budget to 200 in the same period: its threshold is 100, not yet reached.
  s.budget.limit_nano = 200;
  EXPECT_FALSE(crossed(s, 20));  // 90
  EXPECT_TRUE(crossed(s, 20));   // 110: past the new threshold, reported at its level
  EXPECT_FALSE(crossed(s, 10));  // 120
  // A new share of the same budget is a new threshold too (150), and it is reported once.
  s.budget.soft = 0.75;
  EXPECT_TRUE(crossed(s, 40));   // 160
  EXPECT_FALSE(crossed(s, 10));  // 170
  EXPECT_EQ(this->budget(s).spent, 170);
}

TYPED_TEST_P(StoreConformance, LargeAmountsStayExact) {
  // $5,000,000 in nano-USD is 5e15: beyond 14 significant digits, exact as integers.
  const std::int64_t limit = 5'000'000'000'000'000;
  auto s = scope("t", {}, budget_of(limit));
  auto a = this->adm({s}, 1, limit - 1);
  auto r = this->admit(a);
  ASSERT_EQ(r.v, verdict::admitted);
  EXPECT_EQ(this->admit(this->adm({s}, 1, 2)).v, verdict::budget);
  ASSERT_TRUE(this->settle(a, r, 1, limit - 3).applied);
  EXPECT_EQ(this->budget(s).spent, limit - 3);
  EXPECT_EQ(this->admit(this->adm({s}, 1, 3)).v, verdict::admitted);
  EXPECT_EQ(this->admit(this->adm({s}, 1, 1)).v, verdict::budget);
}

TYPED_TEST_P(StoreConformance, KeysRoundTripAndInvalidationsReachListeners) {
  std::vector<std::string> seen;
  std::mutex mu;
  this->st->on_invalidation([&](std::string_view id) {
    std::lock_guard l(mu);
    seen.emplace_back(id);
  });
  key_record k;
  k.id = "abc123";
  k.team = "team-a";
  k.name = "ci";
  k.digest = "sha256:" + std::string(64, 'a');
  k.models = {"gpt-*"};
  k.limits.rpm = 7;
  k.budget = budget_of(9);
  ASSERT_TRUE(run_sync(this->ioc, this->st->put_key(0, k)));
  auto got = run_sync(this->ioc, this->st->get_key(0, "abc123"));
  ASSERT_TRUE(got.reachable);
  ASSERT_TRUE(got.key);
  EXPECT_EQ(got.key->team, "team-a");
  EXPECT_EQ(got.key->models, std::vector<std::string>{"gpt-*"});
  EXPECT_EQ(got.key->limits.rpm, 7u);
  EXPECT_EQ(got.key->budget.limit_nano, 9);
  EXPECT_FALSE(run_sync(this->ioc, this->st->get_key(0, "nope")).key);
  ASSERT_TRUE(run_sync(this->ioc, this->st->publish_invalidation(0, "abc123")));
  TypeParam::wait_for([&] {
    std::lock_guard l(mu);
    return std::find(seen.begin(), seen.end(), "abc123") != seen.end();
  }, this->ioc);
  std::lock_guard l(mu);
  EXPECT_NE(std::find(seen.begin(), seen.end(), "abc123"), seen.end());
}

TYPED_TEST_P(StoreConformance, EveryKeyAndTeamIsListedHoweverMany) {
  // More records than the Redis store reads at once (its GETs go in windows of 64).
  std::set<std::string> put_keys, put_teams;
  for (int i = 0; i < 150; ++i) {
    key_record k;
    k.id = "key" + std::to_string(i);
    k.team = "team-" + std::to_string(i % 7);
    k.name = "n" + std::to_string(i);
    k.digest = "sha256:" + std::string(64, 'a');
    k.limits.rpm = std::uint64_t(i + 1);
    ASSERT_TRUE(run_sync(this->ioc, this->st->put_key(0, k)));
    put_keys.insert(k.id);
  }
  for (int i = 0; i < 70; ++i) {
    team_record t;
    t.name = "team-" + std::to_string(i);
    ASSERT_TRUE(run_sync(this->ioc, this->st->put_team(0, t)));
    put_teams.insert(t.name);
  }
  const auto keys = this->all_keys("", 1000);
  std::set<std::string> listed;
  for (auto& k : keys) {
    listed.insert(k.id);
    // Each id with its own document, not a neighbour's.
    EXPECT_EQ(k.limits.rpm, std::uint64_t(std::stoi(k.id.substr(3)) + 1)) << k.id;
  }
  EXPECT_EQ(listed, put_keys);
  auto teams = run_sync(this->ioc, this->st->list_teams(0));
  ASSERT_TRUE(teams);
  std::set<std::string> listed_teams;
  for (auto& t : *teams) listed_teams.insert(t.name);
  EXPECT_EQ(listed_teams, put_teams);
}

TYPED_TEST_P(StoreConformance, KeysArePagedInIdOrderByTeamAfterACursor) {
  // 40 keys over 3 teams, created in a shuffled order, some by the admin API's compare-and-set
  // write (replace_key over no record), some replaced later (revoked): listed once each.
  std::vector<int> order(40);
  for (int i = 0; i < 40; ++i) order[i] = (i * 17) % 40;
  std::map<std::string, std::set<std::string>> by_team;
  for (const int i : order) {
    key_record k;
    k.id = "k" + std::string(i < 10 ? "0" : "") + std::to_string(i);
    k.team = "team-" + std::to_string(i % 3);
    k.digest = "sha256:" + std::string(64, 'b');
    if (i % 2) ASSERT_TRUE(run_sync(this->ioc, this->st->put_key(0, k)));
    else ASSERT_EQ(run_sync(this->ioc, this->st->replace_key(0, k, "")), write_result::written);
    by_team[k.team].insert(k.id);
    by_team[""].insert(k.id);
  }
  const key_lookup read = run_sync(this->ioc, this->st->get_key(0, "k04"));
  key_record revoked = *read.key;
  revoked.enabled = false;
  ASSERT_EQ(run_sync(this->ioc, this->st->replace_key(0, revoked, read.stored)), write_result::written);
  for (const auto& [team, ids] : by_team) {
    for (const std::size_t limit : {std::size_t(1), std::size_t(7), ids.size(), std::size_t(1000)}) {
      std::size_t pages = 0;
      std::set<std::string> listed;
      for (const auto& k : this->all_keys(team, limit, &pages)) {
        EXPECT_TRUE(listed.insert(k.id).second) << k.id << " listed twice";
        if (!team.empty()) {
          EXPECT_EQ(k.team, team);
        }
        if (k.id == "k04") {
          EXPECT_FALSE(k.enabled) << "the listing shows the record as last written";
        }
      }
      EXPECT_EQ(listed, ids) << "team '" << team << "', pages of " << limit;
      EXPECT_EQ(pages, (ids.size() + limit - 1) / limit) << "team '" << team << "', pages of " << limit;
    }
  }
  // A cursor that is no key's id (a key deleted from the file meanwhile) still pages on.
  auto page = run_sync(this->ioc, this->st->list_keys(0, key_query{"", "k10x", 3}));
  ASSERT_TRUE(page);
  ASSERT_EQ(page->keys.size(), 3u);
  EXPECT_EQ(page->keys[0].id, "k11");
  EXPECT_EQ(page->keys[2].id, "k13");
  EXPECT_TRUE(page->has_more);
  // Past the last id, and a team with no keys: empty pages, nothing more.
  page = run_sync(this->ioc, this->st->list_keys(0, key_query{"", "k39", 5}));
  ASSERT_TRUE(page);
  EXPECT_TRUE(page->keys.empty());
  EXPECT_FALSE(page->has_more);
  page = run_sync(this->ioc, this->st->list_keys(0, key_query{"team-none", "", 5}));
  ASSERT_TRUE(page);
  EXPECT_TRUE(page->keys.empty());
  EXPECT_FALSE(page->has_more);
}

TYPED_TEST_P(StoreConformance, UsageOverManyHoursIsReadBackWholeAndSummed) {
  // 200 hours (more than the Redis store reads at once), two rows an hour, each written twice.
  const std::int64_t first = 480'000;
  std::vector<usage_row> rows;
  for (std::int64_t h = first; h < first + 200; ++h)
    for (const char* team : {"team-a", "team-b"}) {
      usage_row r;
      r.hour = h;
      r.team = team;
      r.key_id = "k1";
      r.model = "gpt-4o";
      r.requests = std::uint64_t(h - first + 1);
      r.prompt = 10;
      r.completion = std::uint64_t(team[5] == 'a' ? 3 : 0);  // a zero count is not written
      r.cost_nano = 1'000'000'007;
      rows.push_back(r);
    }
  ASSERT_TRUE(run_sync(this->ioc, this->st->add_usage(0, rows)));
  ASSERT_TRUE(run_sync(this->ioc, this->st->add_usage(0, rows)));
  // Hours [first + 50, first + 180): 130 hours, 260 rows.
  auto got = run_sync(this->ioc, this->st->usage(0, first + 50, first + 180));
  ASSERT_TRUE(got);
  ASSERT_EQ(got->size(), 260u);
  std::map<std::string, usage_row> by_id;
  for (auto& r : *got) by_id[r.id()] = r;
  ASSERT_EQ(by_id.size(), 260u);
  for (std::int64_t h = first + 50; h < first + 180; ++h)
    for (const char* team : {"team-a", "team-b"}) {
      usage_row want;
      want.hour = h;
      want.team = team;
      want.key_id = "k1";
      want.model = "gpt-4o";
      const auto it = by_id.find(want.id());
      ASSERT_NE(it, by_id.end()) << want.id();
      EXPECT_EQ(it->second.requests, 2 * std::uint64_t(h - first + 1)) << want.id();
      EXPECT_EQ(it->second.prompt, 20u);
      EXPECT_EQ(it->second.completion, team[5] == 'a' ? 6u : 0u);
      EXPECT_EQ(it->second.cost_nano, 2'000'000'014);
    }
  auto none = run_sync(this->ioc, this->st->usage(0, first + 300, first + 400));
  ASSERT_TRUE(none);
  EXPECT_TRUE(none->empty());
}

REGISTER_TYPED_TEST_SUITE_P(StoreConformance, RequestsPerMinuteAdmitsExactlyTheLimitThenRecoversAfterTheWindow,
                            RetryAfterIsWhenTheCallsThatFillTheWindowLeaveIt,
                            ARefusedCallIsToldToWaitForEveryRateLimitThatRefusesIt,
                            ARefusedCallIsToldToWaitForTheScopeThatRefusesLongest,
                            ASpentBudgetIsTheAnswerEvenWhenARateLimitAlsoRefuses,
                            AConcurrencyLimitAddedLaterCountsOnlyCallsAdmittedUnderIt,
                            ABudgetHeldByCallsInFlightIsAnsweredWithAWaitASpentOneWithout,
                            ASoftThresholdThatRoundsToNothingNeverFires,
                            ABudgetChangedMidPeriodReportsItsNewSoftThreshold,
                            TokensPerMinuteReservesThenCorrectsToUsage,
                            ABatchOfSettlementsCorrectsAndChargesEachCallOnce,
                            QueuedSettlementsAreAppliedOnceBeforeTheNextAdmission,
                            ASettlementInALaterBucketCorrectsItsOwnBucket, ConcurrencyIsReleasedBySettlement,
                            ManyCallsAtOnceAdmitExactlyTheLimit,
                            BudgetReservesWorstCaseAndChargesActual,
                            ABudgetWhosePeriodKindChangesKeepsWhatWasSpent,
                            ASettlementFromBeforeAPeriodChangeIsChargedToTheCurrentPeriod,
                            AdmissionIsAllOrNothingAcrossScopes,
                            AnswersCarryTheTightestScopesRateFigures,
                            LeasesOfADeadGatewayExpire, ACallThatOutlivedItsLeaseIsStillChargedOnce,
                            ARenewedLeaseKeepsItsHoldPastTheFirstExpiry,
                            SettlementAppliedTwiceChargesOnce,
                            AChargeOnlySettlementChargesItsCostOnceAndTouchesNothingElse,
                            SoftThresholdIsReportedOncePerPeriod, LargeAmountsStayExact,
                            KeysRoundTripAndInvalidationsReachListeners, RecordsAreReplacedOnlyOverWhatWasRead,
                            EveryKeyAndTeamIsListedHoweverMany, KeysArePagedInIdOrderByTeamAfterACursor,
                            AbsurdReportedCostsSaturateTheSpendAndNeverReopenTheBudget,
                            UsageOverManyHoursIsReadBackWholeAndSummed);

}  // namespace tollgate::policy::testing
