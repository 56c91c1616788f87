// SPDX-License-Identifier: Apache-2.0
// Reading a moderation endpoint's answer (OpenAI's CreateModerationResponse): flagged when any
// result is, with the categories that were true; anything unreadable is a failure, never a pass.
#include "gateway/moderation.hpp"

#include <gtest/gtest.h>

namespace tg = tollgate::gateway;
using outcome = tg::moderation_result::outcome;

TEST(ModerationAnswerTest, FlaggedWhenAnyResultIsWithItsCategories) {
  auto r = tg::read_moderation_answer(
      R"({"id":"modr-1","model":"omni-moderation-latest","results":[)"
      R"({"flagged":false,"categories":{"hate":false,"violence":false}},)"
      R"({"flagged":true,"categories":{"hate":false,"violence":true,"self-harm":true,"illicit":null}}]})");
  EXPECT_EQ(r.what, outcome::flagged);
  EXPECT_EQ(r.categories, (std::vector<std::string>{"violence", "self-harm"}));
  r = tg::read_moderation_answer(R"({"results":[{"flagged":false,"categories":{"violence":false}}]})");
  EXPECT_EQ(r.what, outcome::passed);
  EXPECT_TRUE(r.categories.empty());
}

TEST(ModerationAnswerTest, AnythingUnreadableIsAFailure) {
  for (const char* body : {"", "not json", "[]", R"({"results":[]})", R"({"results":{}})", R"({"error":{"message":"x"}})",
                           R"({"results":[{"flagged":"yes"}]})", R"({"results":[{"categories":{}}]})",
                           R"({"results":[{"flagged":true},{"flagged":1}]})"}) {
    const auto r = tg::read_moderation_answer(body);
    EXPECT_EQ(r.what, outcome::failed) << body;
    EXPECT_FALSE(r.error.empty()) << body;
  }
}
