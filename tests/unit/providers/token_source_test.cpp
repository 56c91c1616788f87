// SPDX-License-Identifier: Apache-2.0
// The OAuth token source's refresh thread: a token the upstream refused (a 401) is replaced at
// once, not at its scheduled refresh up to an hour later; a token younger than min_age is kept
// (the 401s of requests sent with the token it replaced must not throw it away).
#include "providers/common/token_source.hpp"

#include <atomic>
#include <chrono>
#include <memory>
#include <thread>

#include <gtest/gtest.h>

namespace oauth = tollgate::providers::oauth;
namespace google = tollgate::providers::google;
using namespace std::chrono_literals;

namespace {

/// A token endpoint that answers t1, t2, ... each valid for an hour; counts its calls.
oauth::token_source::token_fn numbered_tokens(std::shared_ptr<std::atomic<int>> calls) {
  return [calls]() -> google::auth_result<google::access_token> {
    google::access_token t;
    t.value = "t" + std::to_string(++*calls);
    t.expires_in = std::chrono::seconds(3600);
    return t;
  };
}

/// Polls until the source hands out `want` (or 5 s pass).
bool hands_out(const oauth::token_source& ts, const std::string& want) {
  const auto until = std::chrono::steady_clock::now() + 5s;
  while (std::chrono::steady_clock::now() < until) {
    if (ts.authorization() == want) return true;
    std::this_thread::sleep_for(5ms);
  }
  return false;
}

}  // namespace

TEST(TokenSourceTest, AnInvalidatedTokenIsReplacedAtOnce) {
  auto calls = std::make_shared<std::atomic<int>>(0);
  oauth::token_source ts(numbered_tokens(calls), 0ms);
  ASSERT_TRUE(hands_out(ts, "Bearer t1"));
  ts.invalidate();
  EXPECT_NE(ts.authorization(), std::optional<std::string>("Bearer t1")) << "the refused token is not handed out again";
  EXPECT_TRUE(hands_out(ts, "Bearer t2")) << "no new token within 5 s (the scheduled refresh is an hour away)";
  EXPECT_EQ(calls->load(), 2);
}

TEST(TokenSourceTest, ATokenYoungerThanMinAgeIsKept) {
  auto calls = std::make_shared<std::atomic<int>>(0);
  oauth::token_source ts(numbered_tokens(calls), 1h);
  ASSERT_TRUE(hands_out(ts, "Bearer t1"));
  ts.invalidate();  // a 401 of a request sent with the token before it
  std::this_thread::sleep_for(200ms);
  EXPECT_EQ(ts.authorization(), std::optional<std::string>("Bearer t1"));
  EXPECT_EQ(calls->load(), 1);
}

TEST(TokenSourceTest, ASharedSourceOutlivesTheAdapterItWasMadeForWhileAnotherHoldsIt) {
  // A reload builds new adapters while the old snapshot still serves: the new ones get the live
  // source of the same credentials (its token already fetched), not a new one without a token.
  auto calls = std::make_shared<std::atomic<int>>(0);
  int made = 0;
  const auto make = [&] {
    ++made;
    return std::make_unique<oauth::token_source>(numbered_tokens(calls), 0ms);
  };
  auto old_snapshot = oauth::token_source::shared("test-identity-a", make);
  ASSERT_TRUE(hands_out(*old_snapshot, "Bearer t1"));
  auto new_snapshot = oauth::token_source::shared("test-identity-a", make);
  EXPECT_EQ(new_snapshot.get(), old_snapshot.get());
  EXPECT_EQ(new_snapshot->authorization(), std::optional<std::string>("Bearer t1"));
  auto other = oauth::token_source::shared("test-identity-b", make);  // other credentials: their own
  EXPECT_NE(other.get(), old_snapshot.get());
  EXPECT_EQ(made, 2);
  old_snapshot.reset();
  new_snapshot.reset();
  auto later = oauth::token_source::shared("test-identity-a", make);  // none alive: a new one
  EXPECT_EQ(made, 3);
}
