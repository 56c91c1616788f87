// SPDX-License-Identifier: Apache-2.0
#include "gateway/core/snowflake.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <thread>
#include <unordered_set>

namespace tollgate {
namespace {

TEST(SnowflakeTest, IdsOfOneGeneratorStrictlyIncreaseAndHexSortsTheSame) {
  snowflake g(3);
  std::uint64_t prev = 0;
  std::string prev_hex;
  for (int i = 0; i < 100000; ++i) {
    auto id = g.next();
    auto hex = snowflake::to_hex(id);
    ASSERT_GT(id, prev);
    ASSERT_EQ(hex.size(), 16u);
    ASSERT_GT(hex, prev_hex);
    prev = id;
    prev_hex = hex;
  }
}

TEST(SnowflakeTest, UniqueAcrossThreads) {
  constexpr int threads = 8, per_thread = 100000;
  std::vector<std::vector<std::uint64_t>> ids(threads);
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t)
    ts.emplace_back([&, t] {
      snowflake g{unsigned(t)};
      ids[t].reserve(per_thread);
      for (int i = 0; i < per_thread; ++i) ids[t].push_back(g.next());
    });
  for (auto& t : ts) t.join();
  std::unordered_set<std::uint64_t> all;
  for (int t = 0; t < threads; ++t)
    for (auto id : ids[t]) {
      ASSERT_TRUE(all.insert(id).second);
      ASSERT_EQ(snowflake::worker_of(id), unsigned(t));
    }
  EXPECT_EQ(all.size(), std::size_t(threads) * per_thread);
}

TEST(SnowflakeTest, ClockGoingBackwardsStillGivesIncreasingIds) {
  snowflake g(1);
  const std::uint64_t t0 = snowflake::epoch_ms + 1'000'000;
  auto a = g.next(t0);
  auto b = g.next(t0 - 500);  // clock stepped back
  auto c = g.next(t0 + 1);
  EXPECT_LT(a, b);
  EXPECT_LT(b, c);
  EXPECT_EQ(snowflake::millis_of(a), t0);
}

TEST(SnowflakeTest, SequenceOverflowBorrowsTheNextMillisecond) {
  snowflake g(2);
  const std::uint64_t t0 = snowflake::epoch_ms + 42;
  std::uint64_t prev = 0;
  for (int i = 0; i < 5000; ++i) {  // more than 4096 in one millisecond
    auto id = g.next(t0);
    ASSERT_GT(id, prev);
    prev = id;
  }
  EXPECT_EQ(snowflake::millis_of(prev), t0 + 1);
  EXPECT_EQ(snowflake::worker_of(prev), 2u);
}

TEST(SnowflakeTest, TimeOfAnIdIsItsCreationTime) {
  snowflake g(0);
  const std::uint64_t t = snowflake::epoch_ms + 123456789;
  EXPECT_EQ(snowflake::millis_of(g.next(t)), t);
  EXPECT_EQ(snowflake::to_hex(0x037b930af0400000ULL), "037b930af0400000");
}

}  // namespace
}  // namespace tollgate
