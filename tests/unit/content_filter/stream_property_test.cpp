// SPDX-License-Identifier: Apache-2.0
// Property: for any split of a text into pieces, the concatenated stream_filter output equals the
// whole-text scan_text output (same redactions, same block point, same fired rules), and the
// held-back text never exceeds stream_filter::hold_bound().
#include "policy/content_filter/content_filter.hpp"

#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace cf = tollgate::policy::content_filter;

namespace {

const std::vector<std::string> planted = {
    "john.smith@example.com", "+14155552671", "(415) 555-2671", "415-555-2671", "4111 1111 1111 1111",
    "4111111111111111", "4111111111111112", "123-45-6789", "000-12-3456", "DE89370400440532013000",
    "GB82 WEST 1234 5698 7654 32", "DE89370400440532013001", "192.168.1.10", "1.2.3.4.5",
    "2001:db8::1", "2001:0db8:85a3:0000:0000:8a2e:0370:7334", "AKIAIOSFODNN7EXAMPLE",
    "-----BEGIN RSA PRIVATE KEY-----",
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
    "sk-proj-Ab3dEfGhIjKlMnOpQrStUvWx", "sk-ant-api03-AbCdEf0123456789_xyzXYZ-abcdefgh",
    "ghp_1234567890abcdefghijABCDEFGHIJ123456", "xoxb-123456789012-abcdefghijkl",
    "AIzaSyA1234567890abcdefghijklmnopqrstuv", "bluebird", "Night Owl", "forbidden", "TOKEN-12345",
    // An address longer than the email clip (254 bytes), and an '@' with no local part.
    std::string(250, 'a') + "@mail.example.com", "@@example.org",
};
const std::vector<std::string> filler = {
    "the ",  "quick ", "brown ", "fox ",  "é",     "中文",  "😀",     " ",    "\n",  ".",    "-",
    "1",     "42 ",    "@",      "+",     ":",     "::",    "eyJ",    "sk-",  "ça ",  "naïve ", "x",
    "9.",    "AKIA",   "GB",     "(",     ")",     "-----", "1234 ", "日本 ", "🎉🎉", "\t"};

std::string random_text(std::mt19937& rng) {
  std::string t;
  const int parts = std::uniform_int_distribution<int>(1, 60)(rng);
  for (int i = 0; i < parts; ++i) {
    if (std::uniform_int_distribution<int>(0, 3)(rng) == 0) {
      t += planted[std::uniform_int_distribution<std::size_t>(0, planted.size() - 1)(rng)];
    } else {
      t += filler[std::uniform_int_distribution<std::size_t>(0, filler.size() - 1)(rng)];
    }
  }
  if (std::uniform_int_distribution<int>(0, 9)(rng) == 0) t += std::string(700, 'z');  // long stretch
  return t;
}

std::vector<std::string_view> random_split(std::mt19937& rng, std::string_view t) {
  std::vector<std::string_view> pieces;
  const int mode = std::uniform_int_distribution<int>(0, 3)(rng);
  std::size_t i = 0;
  while (i < t.size()) {
    std::size_t n = 1;
    if (mode == 1) n = std::uniform_int_distribution<std::size_t>(1, 4)(rng);
    if (mode == 2) n = std::uniform_int_distribution<std::size_t>(1, 64)(rng);
    if (mode == 3) n = std::uniform_int_distribution<std::size_t>(0, 900)(rng);  // empty pieces too
    n = std::min(n, t.size() - i);
    pieces.push_back(t.substr(i, n));
    i += n;
  }
  return pieces;
}

bool utf8_boundary_ok(const std::string& s) {
  // The piece must not end inside a multi-byte character (inputs here are valid UTF-8).
  std::size_t i = s.size();
  int cont = 0;
  while (i > 0 && (static_cast<unsigned char>(s[i - 1]) & 0xC0) == 0x80) {
    --i;
    ++cont;
  }
  if (i == 0) return cont == 0;
  const auto lead = static_cast<unsigned char>(s[i - 1]);
  const int need = lead < 0x80 ? 0 : lead >= 0xF0 ? 3 : lead >= 0xE0 ? 2 : 1;
  return cont == need;
}

// Variants 0-2 include a custom regex (its reach is unknown: streams hold the whole horizon);
// 3-5 do not (streams hold only the run of text some rule could still be matching).
std::vector<cf::rule> rule_mix(int variant) {
  const bool with_regex = variant < 3;
  variant %= 3;
  std::vector<cf::rule> rules;
  int k = variant;
  for (cf::detector d : cf::all_detectors()) {
    const cf::action a = (variant == 0) ? (k % 2 == 0 ? cf::action::redact : cf::action::flag)
                                        : static_cast<cf::action>(k % 3);
    rules.push_back(cf::rule::make_builtin(d, a));
    ++k;
  }
  rules.push_back(cf::rule::make_word_list("codenames", {"bluebird", "night owl"}, cf::action::redact));
  if (with_regex) rules.push_back(cf::rule::make_regex("ticket", R"(TOKEN-[0-9]{3,8})", cf::action::redact));
  rules.push_back(cf::rule::make_word_list("banned", {"forbidden"},
                                           variant == 0 ? cf::action::flag : cf::action::block));
  return rules;
}

// What a stream filter emits for `text` fed in `pieces`, and how it behaved on the way.
struct streamed {
  std::string text;
  bool blocked = false;
  bool utf8_ok = true;        ///< no piece of output ended inside a character
  std::size_t max_held = 0;   ///< the most text held back after any piece
  std::vector<std::string> rules;  ///< fired_rules() at the end
};

streamed stream_through(const cf::filter_set& set, cf::scratch& scratch, const std::vector<std::string_view>& pieces) {
  streamed out;
  auto sf = cf::stream_filter::create(set, scratch);
  EXPECT_TRUE(sf.has_value());
  if (!sf) return out;
  for (std::string_view piece : pieces) {
    auto r = sf->feed(piece);
    out.utf8_ok = out.utf8_ok && utf8_boundary_ok(r.text);
    out.text += r.text;
    if ((out.blocked = r.blocked)) break;
    out.max_held = std::max(out.max_held, sf->held_back());
  }
  if (!out.blocked) {
    auto r = sf->finish();
    out.text += r.text;
    out.blocked = r.blocked;
  }
  out.rules = sf->fired_rules();
  return out;
}

// The corpus ships beside this file (no CMake change needed: __FILE__ is the source path).
std::string corpus_dir() {
  std::string f = __FILE__;
  return f.substr(0, f.find_last_of('/') + 1) + "corpus/";
}

}  // namespace

TEST(ContentFilterStreamPropertyTest, AnySplitEqualsWholeText) {
  std::mt19937 rng(20240611);
  int cases = 0;
  int blocked_cases = 0;
  int redacted_cases = 0;
  for (int variant = 0; variant < 6; ++variant) {
    auto set = cf::compile(rule_mix(variant));
    ASSERT_TRUE(set.has_value()) << set.error().message;
    auto scratch = cf::scratch::create(*set);
    ASSERT_TRUE(scratch.has_value());
    const std::size_t bound = cf::stream_filter::hold_bound(*set);
    for (int n = 0; n < 1500; ++n, ++cases) {
      std::string text = random_text(rng);
      // Texts from small_text bytes on are scanned with the per-group databases, shorter ones
      // with the single one: both must agree with the stream.
      if (n % 20 == 0)
        while (text.size() < 5000) text += random_text(rng);
      const cf::verdict want = cf::scan_text(*set, *scratch, text);
      const std::string want_text = want.redacted_text.value_or(text);
      blocked_cases += want.blocked ? 1 : 0;
      redacted_cases += (!want.blocked && want.redacted_text) ? 1 : 0;

      const streamed st = stream_through(*set, *scratch, random_split(rng, text));
      ASSERT_TRUE(st.utf8_ok) << "case " << n;
      ASSERT_LE(st.max_held, bound) << "case " << n;
      const bool blocked = st.blocked;
      const std::string& got = st.text;
      ASSERT_EQ(blocked, want.blocked) << "variant " << variant << " case " << n << " text: " << text;
      ASSERT_EQ(got, want_text) << "variant " << variant << " case " << n << " text: " << text;
      ASSERT_EQ(st.rules, want.rules) << "variant " << variant << " case " << n << " text: " << text;
    }
  }
  EXPECT_EQ(cases, 9000);
  EXPECT_GT(blocked_cases, 100);   // the property covers the block path...
  EXPECT_GT(redacted_cases, 100);  // ...and the redaction path
}

TEST(ContentFilterCorpusTest, OrdinaryTextRaisesNoFalsePositive) {
  // Every built-in detector, and the built-in prompt-injection phrases at their default threshold.
  auto rules = cf::builtin_rules(cf::action::flag);
  rules.push_back(cf::rule::make_injection("prompt_injection", {}, cf::builtin_injection_threshold, cf::action::flag));
  auto set = cf::compile(rules);
  ASSERT_TRUE(set.has_value()) << set.error().message;
  auto scratch = cf::scratch::create(*set);
  ASSERT_TRUE(scratch.has_value());
  int files = 0;
  for (const char* name : {"prose.txt", "source.txt", "numbers.txt"}) {
    std::ifstream in(corpus_dir() + name, std::ios::binary);
    ASSERT_TRUE(in.good()) << name;
    std::stringstream ss;
    ss << in.rdbuf();
    const std::string text = ss.str();
    ASSERT_GT(text.size(), 1000u) << name;
    const cf::verdict v = cf::scan_text(*set, *scratch, text);
    EXPECT_TRUE(v.rules.empty()) << name << ": " << (v.rules.empty() ? "" : v.rules.front());
    // Pinpoint offenders line by line for a readable failure.
    std::istringstream lines(text);
    for (std::string line; std::getline(lines, line);) {
      const cf::verdict lv = cf::scan_text(*set, *scratch, line);
      EXPECT_TRUE(lv.rules.empty()) << name << ": '" << line << "' fired " << lv.rules.front();
    }
    ++files;
  }
  EXPECT_EQ(files, 3);
}

TEST(ContentFilterStreamPropertyTest, AnySplitEqualsWholeTextForEachDetectorAlone) {
  // Alone, a detector's hold rests on its own reach (the bytes its matches can contain), with no
  // other rule's reach to cover a mistake in it.
  std::mt19937 rng(77);
  for (cf::detector d : cf::all_detectors()) {
    for (cf::action a : {cf::action::redact, cf::action::block}) {
      auto set = cf::compile(std::vector<cf::rule>{cf::rule::make_builtin(d, a)});
      ASSERT_TRUE(set.has_value());
      auto scratch = cf::scratch::create(*set);
      ASSERT_TRUE(scratch.has_value());
      for (int n = 0; n < 200; ++n) {
        const std::string text = random_text(rng);
        const cf::verdict want = cf::scan_text(*set, *scratch, text);
        const streamed st = stream_through(*set, *scratch, random_split(rng, text));
        ASSERT_EQ(st.text, want.redacted_text.value_or(text)) << cf::detector_name(d) << " case " << n << " text: " << text;
      }
    }
  }
}

TEST(ContentFilterStreamHoldTest, OnlyTextARuleCouldStillMatchIsHeldBack) {
  // Every built-in and a word list: each reach is known, so ordinary prose is held back only
  // from the start of the run (a word, a number) that a rule could still be matching.
  auto rules = cf::builtin_rules(cf::action::redact);
  rules.push_back(cf::rule::make_word_list("codenames", {"bluebird", "night owl"}, cf::action::redact));
  auto set = cf::compile(rules);
  ASSERT_TRUE(set.has_value());
  auto scratch = cf::scratch::create(*set);
  ASSERT_TRUE(scratch.has_value());
  auto sf = cf::stream_filter::create(*set, *scratch);
  ASSERT_TRUE(sf.has_value());
  std::string got = sf->feed("It was a bright cold day in April, and the clocks were striking").text;
  EXPECT_EQ(got, "It was a bright cold day in April, and the clocks were ");  // "striking" could be an email's start
  EXPECT_EQ(sf->held_back(), 8u);
  got += sf->feed(" thirteen. Mail jane.doe@exa").text;
  EXPECT_EQ(got, "It was a bright cold day in April, and the clocks were striking thirteen. Mail ");
  got += sf->feed("mple.com today.").text;
  got += sf->finish().text;
  EXPECT_EQ(got, "It was a bright cold day in April, and the clocks were striking thirteen. Mail [REDACTED:email] today.");

  // A custom regex's reach is unknown: the stream holds the whole horizon (longest match + 2).
  rules.push_back(cf::rule::make_regex("ticket", R"(TOKEN-[0-9]{3,8})", cf::action::redact));
  auto set2 = cf::compile(rules);
  ASSERT_TRUE(set2.has_value());
  ASSERT_TRUE(scratch->grow(*set2));
  auto sf2 = cf::stream_filter::create(*set2, *scratch);
  ASSERT_TRUE(sf2.has_value());
  const std::string prose(600, 'a');
  EXPECT_EQ(sf2->feed(prose + " ").text.size(), 601 - (set2->max_match_length() + 2));
}

// Many redactions selected in one piece and emitted in turn (the queue of selected redactions
// is compacted as it goes): the same text as the whole-text scan, for one piece and any split.
TEST(ContentFilterStreamPropertyTest, ManyRedactionsInOnePiece) {
  auto set = cf::compile(std::vector<cf::rule>{cf::rule::make_builtin(cf::detector::email, cf::action::redact)});
  ASSERT_TRUE(set.has_value()) << set.error().message;
  auto scratch = cf::scratch::create(*set);
  ASSERT_TRUE(scratch.has_value());
  std::mt19937 rng(99);
  for (const int n : {31, 33, 64, 65, 200}) {
    std::string text;
    for (int i = 0; i < n; ++i) text += "mail u" + std::to_string(i) + "@mail.example.com, ";
    text += "last z@q.io";
    const cf::verdict want = cf::scan_text(*set, *scratch, text);
    ASSERT_TRUE(want.redacted_text.has_value());
    EXPECT_EQ(stream_through(*set, *scratch, {text}).text, *want.redacted_text) << n;
    EXPECT_EQ(stream_through(*set, *scratch, random_split(rng, text)).text, *want.redacted_text) << n;
  }
}
