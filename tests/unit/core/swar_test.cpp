// SPDX-License-Identifier: Apache-2.0
#include "gateway/core/swar.hpp"

#include <gtest/gtest.h>

#include <random>
#include <string>

namespace tollgate::swar {
namespace {

TEST(SwarFindTest, AgreesWithStringViewFindOnRandomTexts) {
  // A small alphabet makes partial matches (first two bytes, then a miss) common; needles and
  // starting points at every offset cover the word loop, its tail and matches across words.
  std::mt19937 rng(7);
  const std::string alphabet = "\"ab:c";
  for (int round = 0; round < 20000; ++round) {
    std::string hay(rng() % 100, ' ');
    for (auto& c : hay) c = alphabet[rng() % alphabet.size()];
    std::string needle(rng() % 7, ' ');
    for (auto& c : needle) c = alphabet[rng() % alphabet.size()];
    const std::size_t from = rng() % (hay.size() + 2);
    ASSERT_EQ(swar::find(hay, needle, from), std::string_view(hay).find(needle, from))
        << "hay [" << hay << "] needle [" << needle << "] from " << from;
  }
}

TEST(SwarFindTest, FindsKeysInJson) {
  const std::string_view chunk =
      R"({"id":"chatcmpl-1","choices":[{"index":0,"delta":{"content":"a \"content\": b"},"finish_reason":null}]})";
  EXPECT_EQ(swar::find(chunk, "\"delta\":{"), chunk.find("\"delta\":{"));
  EXPECT_EQ(swar::find(chunk, "\"content\":"), chunk.find("\"content\":"));
  const std::size_t first = swar::find(chunk, "\"content\":");
  EXPECT_EQ(swar::find(chunk, "\"content\":", first + 1), std::string_view::npos);  // the escaped one is \"content\":
  EXPECT_EQ(swar::find(chunk, "\"finish_reason\":"), chunk.find("\"finish_reason\":"));
  EXPECT_EQ(swar::find(chunk, "\"usage\":"), std::string_view::npos);
  // Bytes with the high bit set, and a needle at the very end.
  const std::string utf8 = "caf\xc3\xa9 \xc3\xa9t\xc3\xa9";
  EXPECT_EQ(swar::find(utf8, "\xc3\xa9t\xc3\xa9"), utf8.size() - 5);
  EXPECT_EQ(swar::find("ab", "ab"), 0u);
  EXPECT_EQ(swar::find("ab", "abc"), std::string_view::npos);
  EXPECT_EQ(swar::find("ab", "ab", 1), std::string_view::npos);
  EXPECT_EQ(swar::find("ab", "ab", 3), std::string_view::npos);
}

}  // namespace
}  // namespace tollgate::swar
