// SPDX-License-Identifier: Apache-2.0
#include "gateway/core/json_out.hpp"

#include <boost/json/parse.hpp>

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

namespace tollgate::json_out {
namespace {

std::string as_json(std::string_view v) {
  std::string s;
  string(s, v);
  return s;
}

// `text` written after other output (inside an array) parses back as itself.
void expect_reads_back(const std::string& text) {
  std::string out = "[";
  string(out, text);
  out += "]";
  boost::system::error_code ec;
  auto v = boost::json::parse(out, ec);
  ASSERT_FALSE(ec) << out;
  EXPECT_EQ(std::string_view(v.as_array().at(0).as_string()), text) << out;
}

TEST(JsonOutTest, EscapesQuotesBackslashesAndControlCharacters) {
  EXPECT_EQ(as_json(""), R"("")");
  EXPECT_EQ(as_json("plain text, é中"), "\"plain text, é中\"");
  EXPECT_EQ(as_json(R"(a "b" \c\)"), R"("a \"b\" \\c\\")");
  EXPECT_EQ(as_json(std::string("\t\n\x01\x1f", 4)), R"("\u0009\u000a\u0001\u001f")");
  EXPECT_EQ(as_json(std::string("\"x\0y\\", 5)), R"("\"x\u0000y\\")");
}

// Appended runs: any text with escapes anywhere (first, last, next to each other) reads back as
// itself, and what was in the string before stays.
TEST(JsonOutTest, AnyTextReadsBackAsItself) {
  std::mt19937 rng(17);
  const std::vector<std::string> pieces = {"a", "b", " ", "\"", "\\", "\t", "\n", std::string(1, '\x01'), "\x7f", "é"};
  for (int round = 0; round < 2000; ++round) {
    std::string text;
    const int n = std::uniform_int_distribution<int>(0, 12)(rng);
    for (int i = 0; i < n; ++i) text += pieces[std::uniform_int_distribution<std::size_t>(0, pieces.size() - 1)(rng)];
    expect_reads_back(text);
  }
}

// The word test agrees with the byte test for every byte value at every position, among fillers
// that sit next to the thresholds (0x20, '!', '#', '[', ']', 0x7f, 0x80, 0xff).
TEST(JsonOutTest, WordTestMatchesTheByteTestForEveryByteAtEveryPosition) {
  auto needs = [](unsigned char c) { return c == '"' || c == '\\' || c < 0x20 || c >= 0x80; };
  for (unsigned char filler : {'a', ' ', '!', '#', '[', ']', '\x7f', '\x80', '\xff', '\xa0'}) {
    for (int c = 0; c < 256; ++c) {
      for (int pos = 0; pos < 8; ++pos) {
        unsigned char bytes[8];
        std::memset(bytes, filler, 8);
        bytes[pos] = static_cast<unsigned char>(c);
        std::uint64_t w;
        std::memcpy(&w, bytes, 8);
        EXPECT_EQ(any_needs_escape(w), needs(static_cast<unsigned char>(c)) || needs(filler))
            << "byte " << c << " at " << pos << " among " << int(filler);
      }
    }
  }
}

// Escapes at every position of texts of every length up to 40 (whole words, word edges, tails).
TEST(JsonOutTest, EscapesAtEveryPositionOfEveryLength) {
  for (const std::string& esc : {std::string("\""), std::string("\\"), std::string(1, '\x1f'), std::string(1, '\0')}) {
    for (std::size_t len = 1; len <= 40; ++len) {
      for (std::size_t at = 0; at < len; ++at) {
        std::string text(len, 'x');
        text.replace(at, 1, esc);
        if (at + 3 < len) text[at + 3] = '"';  // a second escape in the same or the next word
        expect_reads_back(text);
      }
    }
  }
}

// Valid UTF-8 of every length (2, 3 and 4 bytes), at every position, across word edges, reads
// back as itself; bytes that are no UTF-8 become U+FFFD and the rest stays: the output is always
// text a strict parser (Boost.JSON rejects invalid UTF-8) reads.
TEST(JsonOutTest, ValidUtf8IsKeptAndAnythingElseBecomesAReplacementCharacter) {
  for (const std::string& ch : {std::string("é"), std::string("中"), std::string("😀"), std::string("\xf4\x8f\xbf\xbf")}) {
    for (std::size_t len = 0; len <= 20; ++len)
      for (std::size_t at = 0; at <= len; ++at) {
        std::string text(len, 'x');
        text.insert(at, ch);
        expect_reads_back(text);
      }
  }
  const std::string fffd = "\xef\xbf\xbd";
  struct bad {
    std::string in, out;
  } cases[] = {
      {"\xff", fffd},                                       // never UTF-8
      {"ab\x80" "cd", "ab" + fffd + "cd"},                      // a stray continuation byte
      {"\xc3", fffd},                                       // truncated at the end
      {"\xe4\xb8" "x", fffd + fffd + "x"},                      // truncated before ASCII
      {"\xc0\xaf", fffd + fffd},                             // overlong '/'
      {"\xed\xa0\x80", fffd + fffd + fffd},                  // a surrogate
      {"\xf4\x90\x80\x80", fffd + fffd + fffd + fffd},       // past U+10FFFF
      {"Mozilla\xff/5.0 \"q\" é", "Mozilla" + fffd + "/5.0 \"q\" é"},
  };
  for (const auto& c : cases) {
    std::string out = "[";
    string(out, c.in);
    out += "]";
    boost::system::error_code ec;
    auto v = boost::json::parse(out, ec);
    ASSERT_FALSE(ec) << out;
    EXPECT_EQ(std::string_view(v.as_array().at(0).as_string()), c.out) << out;
  }
}

}  // namespace
}  // namespace tollgate::json_out
