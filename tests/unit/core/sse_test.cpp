// SPDX-License-Identifier: Apache-2.0
#include "gateway/core/sse.hpp"

#include <gtest/gtest.h>

#include <fstream>
#include <random>
#include <sstream>

namespace tollgate::sse {
namespace {

std::vector<event> parse_whole(std::string_view in) {
  parser p;
  std::vector<event> out;
  EXPECT_TRUE(p.feed(in, out));
  return out;
}

std::vector<event> parse_split(std::string_view in, const std::vector<std::size_t>& cuts) {
  parser p;
  std::vector<event> out;
  std::size_t pos = 0;
  for (std::size_t c : cuts) {
    EXPECT_TRUE(p.feed(in.substr(pos, c - pos), out));
    pos = c;
  }
  EXPECT_TRUE(p.feed(in.substr(pos), out));
  return out;
}

void expect_same(const std::vector<event>& a, const std::vector<event>& b, const std::string& why) {
  ASSERT_EQ(a.size(), b.size()) << why;
  for (std::size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].name, b[i].name) << why << " event " << i;
    EXPECT_EQ(a[i].data, b[i].data) << why << " event " << i;
    EXPECT_EQ(a[i].id, b[i].id) << why << " event " << i;
  }
}

/// The recorded OpenAI stream (one JSON chunk a line) framed as the API sends it.
std::string recorded_stream() {
  std::ifstream in(std::string(TOLLGATE_TESTDATA) +
                   "/vercel-ai-fixtures/packages/openai/src/chat/__fixtures__/openai-text.chunks.txt");
  EXPECT_TRUE(in) << "fixture missing: is ../shared/testdata there?";
  std::string line, s;
  while (std::getline(in, line))
    if (!line.empty()) s += "data: " + line + "\n\n";
  s += "data: [DONE]\n\n";
  return s;
}

TEST(SseParserTest, RecordedStreamGivesEveryChunk) {
  auto s = recorded_stream();
  auto ev = parse_whole(s);
  ASSERT_GT(ev.size(), 100u);
  EXPECT_EQ(ev.back().data, "[DONE]");
  EXPECT_EQ(ev.front().data.front(), '{');
  for (auto& e : ev) EXPECT_TRUE(e.name.empty());
}

TEST(SseParserTest, EverySingleSplitPointGivesTheSameEvents) {
  const std::string s = "data: {\"a\":1}\r\n\r\nevent: ping\r\ndata: x\r\ndata: y\r\nid: 7\r\n\r\n: comment\n\ndata: z\r\rdata: [DONE]\n\n";
  auto whole = parse_whole(s);
  ASSERT_EQ(whole.size(), 4u);
  EXPECT_EQ(whole[1].name, "ping");
  EXPECT_EQ(whole[1].data, "x\ny");
  EXPECT_EQ(whole[1].id, "7");
  EXPECT_EQ(whole[2].data, "z");
  for (std::size_t cut = 0; cut <= s.size(); ++cut) expect_same(whole, parse_split(s, {cut}), "cut at " + std::to_string(cut));
  for (std::size_t a = 0; a <= s.size(); ++a)
    for (std::size_t b = a; b <= s.size(); b += 3) expect_same(whole, parse_split(s, {a, b}), "cuts " + std::to_string(a) + "," + std::to_string(b));
}

TEST(SseParserTest, ByteByByteAndRandomSplitsOfTheRecordedStream) {
  const auto s = recorded_stream();
  const auto whole = parse_whole(s);
  std::vector<std::size_t> every;
  for (std::size_t i = 1; i < s.size(); ++i) every.push_back(i);
  expect_same(whole, parse_split(s, every), "byte by byte");
  std::mt19937 rng(12345);
  for (int round = 0; round < 200; ++round) {
    std::vector<std::size_t> cuts;
    std::size_t pos = 0;
    while (true) {
      pos += 1 + rng() % 97;
      if (pos >= s.size()) break;
      cuts.push_back(pos);
    }
    expect_same(whole, parse_split(s, cuts), "random round " + std::to_string(round));
  }
}

TEST(SseParserTest, RawSseFixturesParseTheSameWhateverTheSplit) {
  for (const char* name : {"anthropic-fallback-tool-call.sse"}) {
    std::ifstream in(std::string(TOLLGATE_TESTDATA) + "/vercel-ai-fixtures/packages/openai-compatible/src/chat/__fixtures__/" + name,
                     std::ios::binary);
    ASSERT_TRUE(in) << name;
    std::stringstream ss;
    ss << in.rdbuf();
    const std::string s = ss.str();
    auto whole = parse_whole(s);
    ASSERT_FALSE(whole.empty()) << name;
    for (std::size_t cut = 0; cut <= s.size(); cut += 7) expect_same(whole, parse_split(s, {cut}), name);
  }
}

TEST(SseParserTest, CrAtTheEndOfAReadBelongsWithTheNextLf) {
  parser p;
  std::vector<event> out;
  ASSERT_TRUE(p.feed("data: a\r", out));
  ASSERT_TRUE(p.feed("\n\r", out));
  ASSERT_TRUE(p.feed("\n", out));
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].data, "a");
}

TEST(SseParserTest, LlamaCppErrorLineBecomesAnErrorEvent) {
  auto ev = parse_whole("data: {\"x\":1}\n\nerror: {\"code\":500,\"message\":\"boom\"}\n\n");
  ASSERT_EQ(ev.size(), 2u);
  EXPECT_EQ(ev[1].name, "error");
  EXPECT_EQ(ev[1].data, "{\"code\":500,\"message\":\"boom\"}");
}

TEST(SseParserTest, BomIsSkippedEvenWhenSplit) {
  const std::string s = "\xEF\xBB\xBF" "data: a\n\n";
  for (std::size_t cut = 0; cut <= s.size(); ++cut) {
    auto ev = parse_split(s, {cut});
    ASSERT_EQ(ev.size(), 1u) << cut;
    EXPECT_EQ(ev[0].data, "a") << cut;
  }
}

TEST(SseParserTest, OversizedEventIsRefused) {
  parser p(64);
  std::vector<event> out;
  EXPECT_FALSE(p.feed("data: " + std::string(100, 'x'), out));
}

TEST(SseWriterTest, FormatsDataAndNamedEvents) {
  EXPECT_EQ(format_data("{\"a\":1}"), "data: {\"a\":1}\n\n");
  EXPECT_EQ(format_event("error", "{}"), "event: error\ndata: {}\n\n");
  auto ev = parse_whole(format_event("error", "{\"e\":1}") + format_data("[DONE]"));
  ASSERT_EQ(ev.size(), 2u);
  EXPECT_EQ(ev[0].name, "error");
}

TEST(SseWriterTest, APayloadOfSeveralLinesBecomesADataLineEachAndReadsBackJoined) {
  // An upstream's event split over data lines, relayed: one `data:` line per line (LF, CRLF or
  // CR), never a bare second line a reader would take for a field of its own.
  EXPECT_EQ(format_data("{\"a\":[1\n]}"), "data: {\"a\":[1\ndata: ]}\n\n");
  EXPECT_EQ(format_data("x\r\ny\rz\n"), "data: x\ndata: y\ndata: z\ndata: \n\n");
  for (const std::string payload : {"{\"a\":[1\n]}", "one\ntwo", "x\r\ny", "\nlead", "trail\n"}) {
    auto ev = parse_whole(format_data(payload));
    ASSERT_EQ(ev.size(), 1u) << payload;
    std::string joined = payload;  // (the reader joins with LF: CRLF and CR read back as LF)
    for (std::size_t at; (at = joined.find("\r\n")) != std::string::npos;) joined.replace(at, 2, "\n");
    for (auto& c : joined)
      if (c == '\r') c = '\n';
    EXPECT_EQ(ev[0].data, joined) << payload;
  }
}

}  // namespace
}  // namespace tollgate::sse
