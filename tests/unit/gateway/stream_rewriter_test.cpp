// SPDX-License-Identifier: Apache-2.0
// The stream rewriter of filtered responses: for any split of the translated
// SSE into reads, the caller receives valid SSE whose chunks are valid JSON,
// whose content concatenated equals the whole answer filtered at once, and
// whose other fields are the upstream's. Chunks rewritten in place (the common
// case) and chunks parsed whole (first, finish, unusual shapes) must agree.
#include "gateway/content_filters.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "gateway/core/json_out.hpp"
#include "gateway/core/sse.hpp"

namespace tg = tollgate::gateway;
namespace cf = tollgate::policy::content_filter;
namespace json = boost::json;

namespace {

struct setup {
  std::shared_ptr<const tg::content_filters> filters;
  const cf::filter_set *set = nullptr;
  std::optional<cf::scratch> scratch;
};

setup make(std::string block_word = "") {
  tollgate::config::gateway_config cfg;
  tollgate::config::filter_rule_config email;
  email.name = "email";
  email.detector = "email";
  email.action = "redact";
  cfg.content_filters.rules.push_back(email);
  if (!block_word.empty()) {
    tollgate::config::filter_rule_config w;
    w.name = "secret_word";
    w.words = {block_word};
    w.action = "block";
    cfg.content_filters.rules.push_back(w);
  }
  std::string error;
  setup s;
  s.filters = tg::content_filters::compile(cfg, error);
  EXPECT_TRUE(s.filters) << error;
  s.set = s.filters->responses_for("any-team", "any-model");
  EXPECT_NE(s.set, nullptr);
  auto sc = cf::scratch::create(*s.set);
  EXPECT_TRUE(sc.has_value());
  s.scratch.emplace(std::move(*sc));
  return s;
}

const std::string head =
    R"({"id":"chatcmpl-1","object":"chat.completion.chunk","created":1732000000,"model":"gpt-4o-mini","system_fingerprint":"fp",)";

std::string chunk(std::string_view content_json,
                  std::string_view finish = "null") {
  return "data: " + head + R"("choices":[{"index":0,"delta":{"content":)" +
         std::string(content_json) + R"(},"logprobs":null,"finish_reason":)" +
         std::string(finish) + "}]}\n\n";
}

// An answer in the OpenAI shape: a role chunk, one chunk per piece, a finish
// chunk, [DONE].
std::string stream_of(const std::vector<std::string> &pieces) {
  std::string s =
      "data: " + head +
      R"("choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}]})" +
      "\n\n";
  for (auto &p : pieces)
    s += chunk(json::serialize(json::string_view(p)));
  s +=
      "data: " + head +
      R"("choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]})" +
      "\n\n";
  s += "data: [DONE]\n\n";
  return s;
}

struct outcome {
  std::string text;          // delta contents concatenated
  std::string finish_reason; // of the last chunk that had one
  bool done = false;
  bool error_event = false;
};

// The events of what the caller gets; fails the test on invalid SSE.
std::vector<tollgate::sse::event> events_of(const std::string &sse_bytes) {
  tollgate::sse::parser p;
  std::vector<tollgate::sse::event> evs;
  EXPECT_TRUE(p.feed(sse_bytes, evs));
  return evs;
}

// Parses what the caller gets; fails the test on invalid SSE or JSON or a
// changed field.
outcome read_stream(const std::string &sse_bytes) {
  const auto evs = events_of(sse_bytes);
  outcome o;
  for (auto &ev : evs) {
    if (ev.name == "error") {
      o.error_event = true;
      continue;
    }
    if (ev.data == "[DONE]") {
      o.done = true;
      continue;
    }
    boost::system::error_code ec;
    auto v = json::parse(ev.data, ec);
    EXPECT_FALSE(ec) << ev.data;
    if (ec)
      continue;
    auto &obj = v.as_object();
    EXPECT_EQ(obj.at("id").as_string(), "chatcmpl-1");
    EXPECT_EQ(obj.at("model").as_string(), "gpt-4o-mini");
    auto &c = obj.at("choices").as_array().at(0).as_object();
    if (auto *d = c.at("delta").as_object().if_contains("content");
        d && d->is_string()) {
      // Nothing of the answer follows its finish reason.
      EXPECT_TRUE(d->as_string().empty() || o.finish_reason.empty()) << ev.data;
      o.text += d->as_string();
    }
    if (auto &f = c.at("finish_reason"); f.is_string())
      o.finish_reason = f.as_string();
  }
  return o;
}

// Feeds `in` in random reads: arbitrary splits, or (event_aligned) whole
// events, 1 to 5 at a time, as the translator writes them (the rewriter reads
// those without its parser).
std::string rewrite(setup &s, const std::string &in, std::mt19937 &rng,
                    bool *blocked = nullptr, bool event_aligned = false) {
  tollgate::request_context ctx;
  tg::stream_rewriter rw(ctx, *s.filters, *s.set, *s.scratch);
  std::string out;
  std::size_t i = 0;
  while (i < in.size()) {
    std::size_t n = std::uniform_int_distribution<std::size_t>(1, 300)(rng);
    if (event_aligned) {
      std::size_t end = i;
      for (int k = std::uniform_int_distribution<int>(1, 5)(rng);
           k > 0 && end < in.size(); --k)
        end = in.find("\n\n", end) + 2;
      n = end - i;
    }
    out += rw.process(std::string_view(in).substr(i, n));
    i += n;
  }
  if (blocked)
    *blocked = rw.blocked();
  return out;
}

} // namespace

TEST(StreamRewriterTest, AnyReadSplitGivesTheWholeAnswerFiltered) {
  auto s = make();
  std::mt19937 rng(7);
  const std::vector<std::string> words = {
      "Hello",     " there",  ", write to ", "jane.doe",
      "@exam",     "ple.com", " or",         " \"quoted\" ",
      "tab\there", " é中😀",   "\n",          " a+b@mail.co.uk",
      "."};
  for (int round = 0; round < 300; ++round) {
    std::vector<std::string> pieces;
    const int n = std::uniform_int_distribution<int>(1, 40)(rng);
    for (int k = 0; k < n; ++k)
      pieces.push_back(words[std::uniform_int_distribution<std::size_t>(
          0, words.size() - 1)(rng)]);
    std::string whole;
    for (auto &p : pieces)
      whole += p;
    auto v = cf::scan_text(*s.set, *s.scratch, whole);
    const std::string want = v.redacted_text.value_or(whole);

    const outcome o = read_stream(
        rewrite(s, stream_of(pieces), rng, nullptr, round % 2 == 0));
    EXPECT_EQ(o.text, want) << "round " << round;
    EXPECT_EQ(o.finish_reason, "stop");
    EXPECT_TRUE(o.done);
    EXPECT_FALSE(o.error_event);
  }
}

TEST(StreamRewriterTest, BlockEndsTheStreamWithContentFilter) {
  auto s = make("forbidden");
  std::mt19937 rng(11);
  const std::string in =
      stream_of({"This is ", "fine. Now the forb", "idden word",
                 " and more text", " after it"});
  for (const bool aligned : {false, true}) {
    bool blocked = false;
    const outcome o = read_stream(rewrite(s, in, rng, &blocked, aligned));
    EXPECT_TRUE(blocked);
    EXPECT_EQ(o.text, "This is fine. Now the ");
    EXPECT_EQ(o.finish_reason, "content_filter");
    EXPECT_TRUE(o.error_event);
    EXPECT_TRUE(o.done);
  }
}

TEST(StreamRewriterTest, ChunksWithoutTextAndOddShapesPassThrough) {
  auto s = make();
  std::mt19937 rng(3);
  // A tool-call chunk (no content key), a chunk whose content is null, a usage
  // chunk with no choices, and a chunk with a "content" key twice (logprobs):
  // each is relayed or parsed whole.
  std::string in = stream_of({"one "});
  const std::string finish = in.substr(
      in.find("data: " + head + R"("choices":[{"index":0,"delta":{},)"));
  in.resize(in.size() - finish.size());
  in +=
      "data: " + head +
      R"("choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"f","arguments":"{\"content\":\"x@y.com\"}"}}]},"logprobs":null,"finish_reason":null}]})" +
      "\n\n";
  in += chunk("null");
  in +=
      "data: " + head +
      R"("choices":[{"index":0,"delta":{"content":"mail me@corp.io"},"logprobs":{"content":[{"token":"mail","logprob":-0.1}]},"finish_reason":null}]})" +
      "\n\n";
  in += finish;
  for (const bool aligned : {false, true}) {
    const std::string out = rewrite(s, in, rng, nullptr, aligned);
    const outcome o = read_stream(out);
    EXPECT_EQ(o.text, "one mail [REDACTED:email]");
    EXPECT_EQ(o.finish_reason, "stop");
    EXPECT_TRUE(o.done);
    // The tool call's arguments are not content: relayed as they came.
    EXPECT_NE(out.find(R"(\"content\":\"x@y.com\")"), std::string::npos);
  }
}

// The whole answer in one read: the text held back at the end rides the last text
// chunk; a block that only the end of the text reveals (the word completes there)
// still ends the stream with the safe text and one finish reason, content_filter.
TEST(StreamRewriterTest, HeldTextAndAFinalBlockInOneRead) {
  auto s = make("forbidden");
  {
    tollgate::request_context ctx;
    tg::stream_rewriter rw(ctx, *s.filters, *s.set, *s.scratch);
    const std::string in = stream_of({"Hello", " wor", "ld, bye"});
    const std::string out = rw.process(in);
    const outcome o = read_stream(out);
    EXPECT_EQ(o.text, "Hello world, bye");
    EXPECT_EQ(o.finish_reason, "stop");
    EXPECT_TRUE(o.done);
    // Nothing to redact, and the text held back goes out with its chunk: every chunk keeps its
    // own text, no chunk of the rewriter's own: the stream as it came.
    EXPECT_EQ(out, in);
  }
  {
    tollgate::request_context ctx;
    tg::stream_rewriter rw(ctx, *s.filters, *s.set, *s.scratch);
    const std::string out = rw.process(stream_of({"Hello", " world, forbid", "den"}));
    const outcome b = read_stream(out);
    EXPECT_TRUE(rw.blocked());
    EXPECT_EQ(b.text, "Hello world, ");
    EXPECT_EQ(b.finish_reason, "content_filter");
    EXPECT_EQ(out.find(R"("finish_reason":"stop")"), std::string::npos);
    EXPECT_EQ(out.find("forbid"), std::string::npos);
  }
}

// A block found in the last run of text chunks, with the finish chunk in the same read: the
// stream ends once (one content_filter chunk, one error event, one [DONE]), not a second time
// when the finish chunk asks for the text held back.
TEST(StreamRewriterTest, ABlockInTheLastRunBeforeTheFinishChunkEndsTheStreamOnce) {
  auto s = make("forbidden");
  tollgate::request_context ctx;
  tg::stream_rewriter rw(ctx, *s.filters, *s.set, *s.scratch);
  const std::string out = rw.process(stream_of({"Hello ", "the forbidden word", " and more"}));
  EXPECT_TRUE(rw.blocked());
  const outcome o = read_stream(out);
  EXPECT_EQ(o.text, "Hello the ");
  EXPECT_EQ(o.finish_reason, "content_filter");
  auto count = [&](std::string_view needle) {
    std::size_t n = 0;
    for (auto at = out.find(needle); at != std::string::npos; at = out.find(needle, at + 1)) ++n;
    return n;
  };
  EXPECT_EQ(count("data: [DONE]"), 1u) << out;
  EXPECT_EQ(count("event: error"), 1u) << out;
  EXPECT_EQ(count(R"("finish_reason":"content_filter")"), 1u) << out;
}

namespace {
// A chunk of answer `index` (n > 1), its content as a JSON value.
std::string indexed(int index, std::string_view content_json, std::string_view finish = "null",
                    std::string_view logprobs = "null") {
  return "data: " + head + R"("choices":[{"index":)" + std::to_string(index) + R"(,"delta":{"content":)" +
         std::string(content_json) + R"(},"logprobs":)" + std::string(logprobs) + R"(,"finish_reason":)" +
         std::string(finish) + "}]}\n\n";
}
std::string indexed_finish(int index) {
  return "data: " + head + R"("choices":[{"index":)" + std::to_string(index) +
         R"(,"delta":{},"logprobs":null,"finish_reason":"stop"}]})" + "\n\n";
}
struct answers {
  std::vector<std::string> text;
  std::vector<std::string> finish;
  int errors = 0;
  int done = 0;
};
answers read_answers(const std::string& sse_bytes, std::size_t n) {
  const auto evs = events_of(sse_bytes);
  answers a;
  a.text.resize(n);
  a.finish.resize(n);
  for (auto& ev : evs) {
    if (ev.name == "error") {
      ++a.errors;
      continue;
    }
    if (ev.data == "[DONE]") {
      ++a.done;
      continue;
    }
    auto v = json::parse(ev.data);
    for (auto& c : v.at("choices").as_array()) {
      const auto i = static_cast<std::size_t>(c.at("index").to_number<std::int64_t>());
      EXPECT_LT(i, n) << ev.data;
      if (i >= n) continue;
      if (auto* d = c.at("delta").as_object().if_contains("content"); d && d->is_string()) {
        EXPECT_TRUE(d->as_string().empty() || a.finish[i].empty()) << "text after its answer's end: " << ev.data;
        a.text[i] += d->as_string();
      }
      if (auto& f = c.at("finish_reason"); f.is_string()) a.finish[i] = f.as_string();
    }
  }
  return a;
}
}  // namespace

// n: 2. Each answer has a filter of its own: a word split across the two answers' chunks is no
// match, an address in one is redacted however the other's chunks fall around it, and the
// second answer's text after the first answer's end is filtered still.
TEST(StreamRewriterTest, SeveralAnswersAreFilteredEachOnItsOwn) {
  auto s = make("forbidden");
  const std::string in = indexed(0, R"("forb")") + indexed(1, R"("idden fruit, mail a.b@exam")") +
                         indexed(0, R"("ade it")") + indexed(0, R"("")", R"("stop")") +
                         indexed(1, R"("ple.com now")") + indexed_finish(1) + "data: [DONE]\n\n";
  std::mt19937 rng(5);
  for (int round = 0; round < 20; ++round) {
    tollgate::request_context ctx;
    ctx.choices = 2;
    tg::stream_rewriter rw(ctx, *s.filters, *s.set, *s.scratch);
    std::string out;
    for (std::size_t i = 0; i < in.size();) {
      const std::size_t n = round == 0 ? in.size() : std::uniform_int_distribution<std::size_t>(1, 120)(rng);
      out += rw.process(std::string_view(in).substr(i, n));
      i += n;
    }
    EXPECT_FALSE(rw.blocked());
    const answers a = read_answers(out, 2);
    EXPECT_EQ(a.text[0], "forbade it");
    EXPECT_EQ(a.text[1], "idden fruit, mail [REDACTED:email] now");
    EXPECT_EQ(a.finish, (std::vector<std::string>{"stop", "stop"}));
    EXPECT_EQ(a.done, 1);
    EXPECT_EQ(out.find("a.b@"), std::string::npos) << out;
    EXPECT_EQ(ctx.filter_actions, std::vector<std::string>{"email:redact:response"});
  }
}

// A block in one answer ends the stream for all: every answer still open finishes with
// content_filter, once.
TEST(StreamRewriterTest, ABlockInOneOfSeveralAnswersEndsThemAll) {
  auto s = make("forbidden");
  tollgate::request_context ctx;
  ctx.choices = 3;
  tg::stream_rewriter rw(ctx, *s.filters, *s.set, *s.scratch);
  const std::string out = rw.process(indexed(0, R"("fine ")") + indexed(0, R"("")", R"("stop")") +
                                     indexed(1, R"("also fine ")") + indexed(2, R"("the forbidden word")") +
                                     indexed(1, R"("more of answer one")") + indexed_finish(1) +
                                     indexed_finish(2) + "data: [DONE]\n\n");
  EXPECT_TRUE(rw.blocked());
  const answers a = read_answers(out, 3);
  EXPECT_EQ(a.text[0], "fine ");
  EXPECT_EQ(a.text[2], "the ");
  EXPECT_EQ(a.finish, (std::vector<std::string>{"stop", "content_filter", "content_filter"}));
  EXPECT_EQ(a.errors, 1);
  EXPECT_EQ(a.done, 1);
  EXPECT_EQ(out.find("more of answer one"), std::string::npos);
  EXPECT_EQ(out.find("forbidden"), std::string::npos);
}

// An answer the request did not ask for cannot be told apart from another's text: the stream
// ends there rather than relay it unfiltered.
TEST(StreamRewriterTest, AnAnswerPastTheRequestedCountEndsTheStream) {
  auto s = make();
  tollgate::request_context ctx;
  ctx.choices = 2;
  tg::stream_rewriter rw(ctx, *s.filters, *s.set, *s.scratch);
  const std::string out = rw.process(indexed(0, R"("one ")") + indexed(5, R"("x@y.com")"));
  EXPECT_TRUE(rw.blocked());
  EXPECT_EQ(out.find("x@y.com"), std::string::npos);
  EXPECT_NE(out.find("upstream_error"), std::string::npos);
  EXPECT_EQ(ctx.error_code, "upstream_error");
}

// Log probabilities carry their tokens' text: a chunk whose text the filter changed (redacted or
// held back) loses them; one whose text went out as it came keeps them. Whole answers alike.
TEST(StreamRewriterTest, LogprobsGoOnlyWithTextThatWentOutAsItCame) {
  auto s = make();
  tollgate::request_context ctx;
  tg::stream_rewriter rw(ctx, *s.filters, *s.set, *s.scratch);
  const std::string plain_lp = R"({"content":[{"token":"plain","logprob":-0.1,"bytes":null,"top_logprobs":[]}]})";
  const std::string mail_lp = R"({"content":[{"token":"me@corp.io","logprob":-0.2,"bytes":null,"top_logprobs":[]}]})";
  const std::string out = rw.process(indexed(0, R"("plain words. ")", "null", plain_lp) +
                                     indexed(0, R"("mail me@corp.io")", "null", mail_lp) + indexed_finish(0) +
                                     "data: [DONE]\n\n");
  EXPECT_EQ(out.find("me@corp.io"), std::string::npos) << out;
  EXPECT_NE(out.find(R"("token":"plain")"), std::string::npos) << out;
  EXPECT_EQ(read_answers(out, 1).text[0], "plain words. mail [REDACTED:email]");

  const std::string whole =
      R"({"id":"c","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"mail me@corp.io"},)"
      R"("logprobs":)" + mail_lp + R"(,"finish_reason":"stop"},{"index":1,"message":{"role":"assistant","content":"plain"},)"
      R"("logprobs":)" + plain_lp + R"(,"finish_reason":"stop"}]})";
  const std::string filtered = tg::filter_answer(ctx, *s.filters, *s.set, *s.scratch, whole).value_or("");
  EXPECT_EQ(filtered.find("me@corp.io"), std::string::npos) << filtered;
  EXPECT_NE(filtered.find(R"("token":"plain")"), std::string::npos) << filtered;
}

// A 2xx body that is no chat.completion (SSE sent as text/plain, a body cut short) has no text
// the filters can find: nothing is returned to send, rather than the body unfiltered.
TEST(StreamRewriterTest, AWholeAnswerTheFiltersCannotReadIsNotPassedOn) {
  auto s = make();
  tollgate::request_context ctx;
  for (const std::string& body : {std::string("data: {\"choices\":[{\"delta\":{\"content\":\"x@y.com\"}}]}\n\n"),
                                 std::string(R"({"object":"chat.completion","choices":[{"message":{"content":"x@y.com"}})"),
                                 std::string(R"({"object":"chat.completion"})"), std::string("x@y.com")})
    EXPECT_FALSE(tg::filter_answer(ctx, *s.filters, *s.set, *s.scratch, body).has_value()) << body;
  EXPECT_EQ(tg::filter_answer(ctx, *s.filters, *s.set, *s.scratch, R"({"choices":[]})").value_or("none"), R"({"choices":[]})");
}

namespace {
std::string reasoning_chunk(std::string_view text, std::string_view key = "reasoning_content") {
  return "data: " + head + R"("choices":[{"index":0,"delta":{")" + std::string(key) + R"(":)" +
         json::serialize(json::string_view(text)) + R"(},"logprobs":null,"finish_reason":null}]})" + "\n\n";
}
struct reasoned {
  std::string reasoning, content, finish;
  bool reasoning_after_content = false;
  int done = 0;
};
reasoned read_reasoned(const std::string& sse_bytes) {
  const auto evs = events_of(sse_bytes);
  reasoned r;
  for (auto& ev : evs) {
    if (ev.data == "[DONE]") ++r.done;
    if (!ev.name.empty() || ev.data == "[DONE]") continue;
    auto v = json::parse(ev.data);
    for (auto& c : v.at("choices").as_array()) {
      const auto& d = c.at("delta").as_object();
      for (const char* key : {"reasoning_content", "reasoning"})
        if (auto* t = d.if_contains(key); t && t->is_string() && !t->as_string().empty()) {
          r.reasoning += t->as_string();
          if (!r.content.empty()) r.reasoning_after_content = true;
        }
      if (auto* t = d.if_contains("content"); t && t->is_string()) r.content += t->as_string();
      if (auto& f = c.at("finish_reason"); f.is_string()) r.finish = f.as_string();
    }
  }
  return r;
}
}  // namespace

// Reasoning text (Gemini's thoughts as the Vertex translator writes them, DeepSeek's and vLLM's
// reasoning_content, or "reasoning") is filtered as its own stream, for any read split, and what
// its filter held back goes out before the content begins.
TEST(StreamRewriterTest, ReasoningTextIsFilteredOnItsOwnBeforeTheContent) {
  auto s = make("forbidden");
  std::mt19937 rng(21);
  for (const char* key : {"reasoning_content", "reasoning"}) {
    const std::string in = reasoning_chunk("Thinking: mail x@exa", key) + reasoning_chunk("mple.com, then answer", key) +
                           chunk(R"("The answer")") + chunk(R"(" is 42.")") +
                           "data: " + head + R"("choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]})" +
                           "\n\n" + "data: [DONE]\n\n";
    for (int round = 0; round < 60; ++round) {
      tollgate::request_context ctx;
      const std::string out = rewrite(s, in, rng, nullptr, round % 2 == 0);
      const reasoned r = read_reasoned(out);
      EXPECT_EQ(r.reasoning, "Thinking: mail [REDACTED:email], then answer") << key << " round " << round;
      EXPECT_EQ(r.content, "The answer is 42.");
      EXPECT_FALSE(r.reasoning_after_content) << out;
      EXPECT_EQ(r.finish, "stop");
      EXPECT_EQ(r.done, 1);
      EXPECT_EQ(out.find("x@exa"), std::string::npos);
    }
  }
  // A block in the reasoning ends the stream before any content.
  tollgate::request_context ctx;
  tg::stream_rewriter rw(ctx, *s.filters, *s.set, *s.scratch);
  const std::string out = rw.process(reasoning_chunk("I must not say the forbidden word") + chunk(R"("Sure.")") +
                                     "data: [DONE]\n\n");
  EXPECT_TRUE(rw.blocked());
  const reasoned r = read_reasoned(out);
  EXPECT_EQ(r.reasoning, "I must not say the ");
  EXPECT_EQ(r.content, "");
  EXPECT_EQ(r.finish, "content_filter");
  EXPECT_EQ(r.done, 1);
  EXPECT_EQ(ctx.filter_actions, std::vector<std::string>{"secret_word:block:response"});

  // Whole answers alike.
  const std::string whole =
      R"({"id":"c","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"fine",)"
      R"("reasoning_content":"mail x@example.com"},"finish_reason":"stop"},{"index":1,"message":{"role":"assistant",)"
      R"("content":"fine too","reasoning":"the forbidden plan"},"finish_reason":"stop"}]})";
  const auto filtered = tg::filter_answer(ctx, *s.filters, *s.set, *s.scratch, whole);
  ASSERT_TRUE(filtered.has_value());
  const auto v = json::parse(*filtered);
  const auto& c0 = v.at("choices").at(0).as_object();
  const auto& c1 = v.at("choices").at(1).as_object();
  EXPECT_EQ(c0.at("message").at("reasoning_content").as_string(), "mail [REDACTED:email]");
  EXPECT_EQ(c0.at("message").at("content").as_string(), "fine");
  EXPECT_EQ(c1.at("message").at("reasoning").as_string(), "the ");
  EXPECT_EQ(c1.at("message").at("content").as_string(), "");
  EXPECT_EQ(c1.at("finish_reason").as_string(), "content_filter");
}

namespace {
/// A delta with the same reasoning under both keys, as vLLM sends it.
std::string both_keys_chunk(std::string_view text) {
  const std::string t = json::serialize(json::string_view(text));
  return "data: " + head + R"("choices":[{"index":0,"delta":{"reasoning_content":)" + t + R"(,"reasoning":)" + t +
         R"(},"logprobs":null,"finish_reason":null}]})" + "\n\n";
}
/// The reasoning text each key carried over the whole stream.
std::map<std::string, std::string> reasoning_per_key(const std::string& sse_bytes) {
  std::map<std::string, std::string> out;
  for (auto& ev : events_of(sse_bytes)) {
    if (!ev.name.empty() || ev.data == "[DONE]") continue;
    auto v = json::parse(ev.data);
    for (auto& c : v.at("choices").as_array())
      for (const char* key : {"reasoning_content", "reasoning"})
        if (auto* t = c.at("delta").as_object().if_contains(key); t && t->is_string()) out[key] += t->as_string();
  }
  return out;
}
}  // namespace

// vLLM sends its reasoning twice, as `reasoning_content` and as `reasoning`: both go out
// filtered alike (the second is no unfiltered copy of the first), for any read split, and what
// the filter held back goes out under the keys the stream uses.
TEST(StreamRewriterTest, ReasoningSentUnderBothKeysIsFilteredInBoth) {
  auto s = make("forbidden");
  std::mt19937 rng(27);
  const std::string finish = "data: " + head + R"("choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]})" + "\n\n";
  const std::string in = both_keys_chunk("Thinking: mail x@exa") + both_keys_chunk("mple.com, then answer") +
                         chunk(R"("The answer")") + finish + "data: [DONE]\n\n";
  for (int round = 0; round < 40; ++round) {
    const std::string out = rewrite(s, in, rng, nullptr, round % 2 == 0);
    const auto keys = reasoning_per_key(out);
    EXPECT_EQ(keys.at("reasoning_content"), "Thinking: mail [REDACTED:email], then answer") << out;
    EXPECT_EQ(keys.at("reasoning"), "Thinking: mail [REDACTED:email], then answer") << out;
    EXPECT_EQ(out.find("x@exa"), std::string::npos) << out;
    EXPECT_EQ(read_reasoned(out).content, "The answer");
  }
  // A block: neither key carries the match, whatever came before it in the chunk.
  {
    tollgate::request_context ctx;
    tg::stream_rewriter rw(ctx, *s.filters, *s.set, *s.scratch);
    const std::string out = rw.process(both_keys_chunk("I must not say the forbidden word") + chunk(R"("Sure.")") +
                                       "data: [DONE]\n\n");
    EXPECT_TRUE(rw.blocked());
    EXPECT_EQ(out.find("forbidden"), std::string::npos) << out;
    const auto keys = reasoning_per_key(out);
    EXPECT_EQ(keys.at("reasoning_content"), "I must not say the ") << out;
    EXPECT_EQ(keys.at("reasoning"), "I must not say the ") << out;
  }
  // Only `reasoning`: the text held back at the reasoning's end goes out under that key, where
  // the client reads it.
  {
    const std::string only = reasoning_chunk("Thinking about x@exa", "reasoning") + reasoning_chunk("mple.com now", "reasoning") +
                             chunk(R"("Done")") + finish + "data: [DONE]\n\n";
    tollgate::request_context ctx;
    tg::stream_rewriter rw(ctx, *s.filters, *s.set, *s.scratch);
    const auto keys = reasoning_per_key(rw.process(only));
    EXPECT_EQ(keys.count("reasoning_content"), 0u);
    EXPECT_EQ(keys.at("reasoning"), "Thinking about [REDACTED:email] now");
  }
  // Whole answers alike: redacted in both, or both cut before the block.
  tollgate::request_context ctx;
  const std::string whole =
      R"({"id":"c","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"fine",)"
      R"("reasoning_content":"mail x@example.com","reasoning":"mail x@example.com"},"finish_reason":"stop"},)"
      R"({"index":1,"message":{"role":"assistant","content":"fine too","reasoning_content":"the forbidden plan",)"
      R"("reasoning":"the forbidden plan"},"finish_reason":"stop"}]})";
  const auto filtered = tg::filter_answer(ctx, *s.filters, *s.set, *s.scratch, whole);
  ASSERT_TRUE(filtered.has_value());
  EXPECT_EQ(filtered->find("x@example.com"), std::string::npos) << *filtered;
  EXPECT_EQ(filtered->find("forbidden"), std::string::npos) << *filtered;
  const auto v = json::parse(*filtered);
  for (const char* key : {"reasoning_content", "reasoning"}) {
    EXPECT_EQ(v.at("choices").at(0).at("message").at(key).as_string(), "mail [REDACTED:email]") << key;
    EXPECT_EQ(v.at("choices").at(1).at("message").at(key).as_string(), "the ") << key;
  }
  EXPECT_EQ(v.at("choices").at(1).at("finish_reason").as_string(), "content_filter");
}

// Answer text in a shape the filters cannot read (a list of parts instead of a string) is not
// relayed: the stream ends with upstream_error, and a whole answer is not passed on.
TEST(StreamRewriterTest, AnswerTextThatIsNotAStringIsNotRelayed) {
  auto s = make();
  for (const char* key : {"content", "reasoning_content", "reasoning"}) {
    tollgate::request_context ctx;
    tg::stream_rewriter rw(ctx, *s.filters, *s.set, *s.scratch);
    const std::string parts = std::string(R"([{"type":"text","text":"mail x@y.com"}])");
    const std::string out = rw.process(chunk(R"("fine ")") + "data: " + head + R"("choices":[{"index":0,"delta":{")" + key +
                                       R"(":)" + parts + R"(},"logprobs":null,"finish_reason":null}]})" + "\n\n" +
                                       "data: [DONE]\n\n");
    EXPECT_TRUE(rw.blocked()) << key;
    EXPECT_EQ(out.find("x@y.com"), std::string::npos) << key << ": " << out;
    EXPECT_EQ(ctx.error_code, "upstream_error") << key;
    const std::string whole = R"({"object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant",")" +
                              std::string(key) + R"(":)" + parts + R"(},"finish_reason":"stop"}]})";
    EXPECT_FALSE(tg::filter_answer(ctx, *s.filters, *s.set, *s.scratch, whole).has_value()) << key;
  }
  // A null content (a tool call's delta, a refusal) is no text, and goes through.
  tollgate::request_context ctx;
  tg::stream_rewriter rw(ctx, *s.filters, *s.set, *s.scratch);
  const std::string out = rw.process("data: " + head + R"("choices":[{"index":0,"delta":{"content":null,"refusal":"no"},"logprobs":null,"finish_reason":null}]})" +
                                     "\n\n" + "data: [DONE]\n\n");
  EXPECT_FALSE(rw.blocked()) << out;
  EXPECT_NE(out.find(R"("refusal":"no")"), std::string::npos) << out;
}

// An event whose JSON is split over two data lines (legal SSE) is read whole and filtered, and
// reaches the caller as data lines it can join; an event that is no JSON is not relayed.
TEST(StreamRewriterTest, AnEventOfSeveralDataLinesIsFilteredAndOneThatIsNotJsonIsNotRelayed) {
  auto s = make();
  {
    tollgate::request_context ctx;
    tg::stream_rewriter rw(ctx, *s.filters, *s.set, *s.scratch);
    const std::string out = rw.process("data: " + head + R"("choices":[{"index":0,"delta":{"content":"mail x@example.com"},)" +
                                       "\ndata: " + R"("logprobs":null,"finish_reason":"stop"}]})" + "\n\ndata: [DONE]\n\n");
    EXPECT_FALSE(rw.blocked()) << out;
    EXPECT_EQ(out.find("x@example.com"), std::string::npos) << out;
    EXPECT_NE(out.find("[REDACTED:email]"), std::string::npos) << out;
  }
  // A content key spaced or spelt with an escape is JSON too: read as text, never passed on as a
  // chunk without any.
  for (const std::string key : {R"("content" :)", R"("content"  :  )", R"("cont\u0065nt":)"}) {
    tollgate::request_context ctx;
    tg::stream_rewriter rw(ctx, *s.filters, *s.set, *s.scratch);
    const std::string out = rw.process(chunk(R"("fine ")") + "data: " + head + R"("choices":[{"index":0,"delta":{)" + key +
                                       R"("mail x@example.com"},"logprobs":null,"finish_reason":null}]})" +
                                       "\n\ndata: [DONE]\n\n");
    EXPECT_EQ(out.find("x@example.com"), std::string::npos) << key << ": " << out;
    EXPECT_NE(out.find("[REDACTED:email]"), std::string::npos) << key << ": " << out;
  }
  tollgate::request_context ctx;
  tg::stream_rewriter rw(ctx, *s.filters, *s.set, *s.scratch);
  const std::string out = rw.process(chunk(R"("fine ")") + "data: mail x@example.com, not JSON\n\n" + "data: [DONE]\n\n");
  EXPECT_TRUE(rw.blocked());
  EXPECT_EQ(out.find("x@example.com"), std::string::npos) << out;
  EXPECT_EQ(ctx.error_code, "upstream_error");
}

// However the stream ends (moderation, an upstream failure), the rules that fired in what was
// sent are on the record.
TEST(StreamRewriterTest, RulesThatFiredAreRecordedWhenTheStreamEndsWithoutDone) {
  auto s = make();
  {
    tollgate::request_context ctx;
    tg::stream_rewriter rw(ctx, *s.filters, *s.set, *s.scratch);
    rw.process(chunk(R"("mail me@corp.io and more")"));
    rw.end_by_moderation("moderation_unavailable", "The moderation endpoint failed.");
    EXPECT_EQ(ctx.filter_actions, std::vector<std::string>{"email:redact:response"});
  }
  {
    tollgate::request_context ctx;
    tg::stream_rewriter rw(ctx, *s.filters, *s.set, *s.scratch);
    rw.process(chunk(R"("mail me@corp.io and more")"));
    EXPECT_TRUE(ctx.filter_actions.empty());
    rw.record_rules();
    rw.record_rules();
    EXPECT_EQ(ctx.filter_actions, std::vector<std::string>{"email:redact:response"});
  }
}

// A chunk with text that also ends the answer (some OpenAI-compatible servers send
// the last text with finish_reason): the text held back before it goes out in it,
// after its own text, not ahead of it.
TEST(StreamRewriterTest, TextInTheFinishChunkFollowsTheHeldText) {
  auto s = make("forbidden");
  std::mt19937 rng(5);
  auto ending_with = [](std::string last) {
    std::string in = stream_of({"Hello wor"});
    in.resize(in.find("data: " + head + R"("choices":[{"index":0,"delta":{},)"));
    return in + chunk(last, R"("stop")") + "data: [DONE]\n\n";
  };
  for (const bool aligned : {false, true}) {
    const outcome o = read_stream(rewrite(s, ending_with(R"("ld, bye")"), rng, nullptr, aligned));
    EXPECT_EQ(o.text, "Hello world, bye");
    EXPECT_EQ(o.finish_reason, "stop");
    EXPECT_TRUE(o.done);
    // A block in that chunk: the safe text, then one finish reason, content_filter.
    bool blocked = false;
    const std::string out = rewrite(s, ending_with(R"("ld, forbidden")"), rng, &blocked, aligned);
    const outcome b = read_stream(out);
    EXPECT_TRUE(blocked);
    EXPECT_EQ(b.text, "Hello world, ");
    EXPECT_EQ(b.finish_reason, "content_filter");
    EXPECT_EQ(out.find(R"("finish_reason":"stop")"), std::string::npos);
  }
}

// The common chunks (alike before and after their content string) are rewritten
// without a key search once the first has been searched: byte for byte, each keeps
// its bytes, its content "" but the last one's, which carries the run's text, as
// the engine filters it whole, and the text held back (the finish chunk is next in
// the same bytes: the answer's text ends there; no chunk of its own).
// Escapes are decoded, and a text that looks like a key stays text.
TEST(StreamRewriterTest, CommonChunksRewrittenByteForByte) {
  auto s = make();
  const std::vector<std::string> pieces = {
      "Hello",          " \"quoted\"", " back\\slash\\", " tab\there",  " é中😀",
      " jane@exam",     "ple.com",     " \"content\":\"x\"",
      "\"},\"finish_reason\":\"stop\"", " end.", "\n", " mail a+b@mail.co."};
  const std::string in = stream_of(pieces);
  std::string whole;
  for (auto &p : pieces)
    whole += p;
  auto sf = cf::stream_filter::create(*s.set, *s.scratch);
  ASSERT_TRUE(sf.has_value());
  const std::string sent = sf->feed(whole).text;
  const std::string held = sf->finish().text;
  ASSERT_FALSE(held.empty());

  std::string want =
      "data: " + head +
      R"("choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}]})" +
      "\n\n";
  for (std::size_t i = 0; i + 1 < pieces.size(); ++i)
    want += chunk(R"("")");
  auto escaped = [](std::string_view t) { // (control characters as \u00XX)
    std::string e;
    tollgate::json_out::string(e, t);
    return e;
  };
  want += chunk(escaped(sent + held));
  want += in.substr(in.find("data: " + head + R"("choices":[{"index":0,"delta":{},)"));

  tollgate::request_context ctx;
  tg::stream_rewriter rw(ctx, *s.filters, *s.set, *s.scratch);
  EXPECT_EQ(rw.process(in), want);
}

// Chunks of mixed shapes in random order (common ones; the content after another
// key; a "content" key in logprobs; another ending; another beginning; tool calls;
// null content; texts with escapes or that look like keys), split at random: the
// text is the whole answer filtered at once, and every upstream chunk arrives, in
// order, with its fields unchanged but its content (and logprobs).
TEST(StreamRewriterTest, MixedShapesKeepTheirFieldsAndText) {
  auto s = make();
  std::mt19937 rng(13);
  const std::vector<std::string> words = {
      "Hello", " there", " jane.doe", "@example.com", " \"content\":\"",
      "\\", " \"finish_reason\":\"stop\"", " é中", "\n", " a+b@mail.co.uk", "."};
  const std::string other_head =
      R"({"id":"chatcmpl-1","system_fingerprint":"fp","object":"chat.completion.chunk","created":1732000000,"model":"gpt-4o-mini",)";
  auto lit = [](const std::string &t) { return json::serialize(json::string_view(t)); };
  for (int round = 0; round < 300; ++round) {
    std::string in, whole;
    const int n = std::uniform_int_distribution<int>(1, 30)(rng);
    for (int k = 0; k < n; ++k) {
      const std::string t = words[std::uniform_int_distribution<std::size_t>(0, words.size() - 1)(rng)];
      std::string c;
      switch (std::uniform_int_distribution<int>(0, 9)(rng)) {
        case 0:
          c = head + R"("choices":[{"index":0,"delta":{"role":"assistant","content":)" + lit(t) + R"(},"logprobs":null,"finish_reason":null}]})";
          break;
        case 1:
          c = head + R"("choices":[{"index":0,"delta":{"content":)" + lit(t) +
              R"(},"logprobs":{"content":[{"token":"x","logprob":-0.1}]},"finish_reason":null}]})";
          break;
        case 2:
          c = head + R"("choices":[{"index":0,"delta":{"content":)" + lit(t) + R"(},"finish_reason":null,"logprobs":null}]})";
          break;
        case 3:
          c = other_head + R"("choices":[{"index":0,"delta":{"content":)" + lit(t) + R"(},"logprobs":null,"finish_reason":null}]})";
          break;
        case 4:
          c = head + R"("choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"content\":\"a@b.io\"}"}}]},"logprobs":null,"finish_reason":null}]})";
          break;
        case 5:
          c = head + R"("choices":[{"index":0,"delta":{"content":null},"logprobs":null,"finish_reason":null}]})";
          break;
        default:
          c = head + R"("choices":[{"index":0,"delta":{"content":)" + lit(t) + R"(},"logprobs":null,"finish_reason":null}]})";
      }
      if (c.find(R"("delta":{"tool_calls")") == std::string::npos && c.find(R"("content":null)") == std::string::npos)
        whole += t;
      in += "data: " + c + "\n\n";
    }
    if (round % 2 == 0) {
      in += chunk(lit(" last words"), R"("stop")");
      whole += " last words";
    } else {
      in += "data: " + head + R"("choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]})" + "\n\n";
    }
    in += "data: [DONE]\n\n";
    auto v = cf::scan_text(*s.set, *s.scratch, whole);
    const std::string out = rewrite(s, in, rng, nullptr, round % 3 == 0);
    const outcome o = read_stream(out);
    EXPECT_EQ(o.text, v.redacted_text.value_or(whole)) << "round " << round;
    EXPECT_EQ(o.finish_reason, "stop");
    EXPECT_TRUE(o.done);
    // The upstream's chunks (the rewriter's own carry no system_fingerprint), content aside.
    auto fields = [](const std::string &sse) {
      tollgate::sse::parser p;
      std::vector<tollgate::sse::event> evs;
      EXPECT_TRUE(p.feed(sse, evs));
      std::vector<std::string> list;
      for (auto &ev : evs) {
        if (ev.data == "[DONE]")
          continue;
        auto v = json::parse(ev.data);
        if (!v.as_object().contains("system_fingerprint"))
          continue;
        auto &ch = v.as_object()["choices"].as_array()[0].as_object();
        auto &d = ch["delta"].as_object();
        if (auto *c = d.if_contains("content"); c && c->is_string())
          *c = "";
        // (A chunk whose text changed loses its logprobs: see
        // LogprobsGoOnlyWithTextThatWentOutAsItCame.)
        if (auto *lp = ch.if_contains("logprobs"))
          *lp = nullptr;
        list.push_back(json::serialize(v));
      }
      return list;
    };
    EXPECT_EQ(fields(out), fields(in)) << "round " << round;
  }
}

namespace {

// Once common chunks are known, the same chunk framed otherwise (CRLF line
// ends, a comment line, an event split by a bare CR in its text's place) must
// leave the fast path for the general one: the answer still arrives whole and
// filtered, every event valid.
TEST(StreamRewriterTest, KnownChunksFramedOtherwiseTakeTheGeneralPath) {
  auto s = make();
  const std::vector<std::string> pieces = {"Hello", " jane@exam", "ple.com", " there", " bye"};
  std::string in = stream_of(pieces);
  std::string whole;
  for (auto &p : pieces)
    whole += p;
  // The third and fourth text chunks with CRLF framing, and a comment between.
  auto swap_framing = [&](const std::string &piece) {
    const std::string lf = chunk(json::serialize(json::string_view(piece)));
    const std::size_t at = in.find(lf);
    ASSERT_NE(at, std::string::npos) << piece;
    std::string crlf = lf.substr(0, lf.size() - 2) + "\r\n\r\n: keep-alive\r\n\r\n";
    in.replace(at, lf.size(), crlf);
  };
  swap_framing("ple.com");
  swap_framing(" there");
  auto sf = cf::stream_filter::create(*s.set, *s.scratch);
  ASSERT_TRUE(sf.has_value());
  std::string want = sf->feed(whole).text;
  want += sf->finish().text;
  ASSERT_EQ(want.find("jane@example.com"), std::string::npos);
  for (int aligned = 0; aligned < 2; ++aligned) {
    std::mt19937 rng(21 + aligned);
    for (int round = 0; round < 50; ++round) {
      const outcome o = read_stream(rewrite(s, in, rng, nullptr, aligned == 1));
      EXPECT_EQ(o.text, want);
      EXPECT_EQ(o.finish_reason, "stop");
      EXPECT_TRUE(o.done);
    }
  }
}

}  // namespace

namespace {

// A read that ends while a word may still grow into a match: the chunks whose text went out
// whole go as they came, the chunk the held-back text begins in carries the part before it,
// and the next read's text (held part first) is whole again in the caller's stream.
TEST(StreamRewriterTest, ChunksKeepTheirTextUpToWhatIsHeldBack) {
  auto s = make();
  const std::string in = stream_of({"Hello", " there", " jane", "@example.com", " bye"});
  const std::string cut = "data: " + head + R"("choices":[{"index":0,"delta":{"content":"@example.com"})";
  const std::size_t split = in.find(cut);
  ASSERT_NE(split, std::string::npos);
  tollgate::request_context ctx;
  tg::stream_rewriter rw(ctx, *s.filters, *s.set, *s.scratch);
  const std::string first = rw.process(in.substr(0, split));
  // "Hello" and " there" as they came; "jane" may still become an address: held, its chunk
  // carries what comes before it, its space.
  EXPECT_NE(first.find(chunk(R"("Hello")")), std::string::npos) << first;
  EXPECT_NE(first.find(chunk(R"(" there")")), std::string::npos) << first;
  EXPECT_EQ(first.find("jane"), std::string::npos) << first;
  EXPECT_NE(first.find(chunk(R"(" ")")), std::string::npos) << first;  // " jane": its space went out
  const std::string rest = rw.process(in.substr(split));
  const outcome o = read_stream(first + rest);
  EXPECT_EQ(o.text, "Hello there [REDACTED:email] bye");
  EXPECT_EQ(o.finish_reason, "stop");
  EXPECT_TRUE(o.done);
}

}  // namespace

TEST(StreamRewriterTest, AnEventTooLargeToFilterEndsTheStreamAfterTheEventsBeforeIt) {
  // An event past the parser's limit (4 MiB) cannot be scanned: it must not pass unfiltered. The
  // chunks completed before it in the same read still go out, filtered.
  auto s = make();
  tollgate::request_context ctx;
  tg::stream_rewriter rw(ctx, *s.filters, *s.set, *s.scratch);
  // A data line split in two, so the read takes the parser's path; then an event without end.
  const std::string split = "data: " + head +
                            R"("choices":[{"index":0,"delta":{"content":"mail a@b.example"},)" + "\n" +
                            "data: " + R"("logprobs":null,"finish_reason":null}]})" + "\n\n";
  std::string out = rw.process(chunk("\"Hello \"") + split);
  out += rw.process("data: " + std::string(5 * 1024 * 1024, 'x'));
  EXPECT_TRUE(rw.blocked());
  EXPECT_EQ(out.find(std::string(1024, 'x')), std::string::npos) << "unfiltered bytes went out";
  EXPECT_EQ(out.find("a@b.example"), std::string::npos);
  tollgate::sse::parser p;
  std::vector<tollgate::sse::event> evs;
  ASSERT_TRUE(p.feed(out, evs));
  ASSERT_GE(evs.size(), 3u);
  EXPECT_EQ(evs.back().data, "[DONE]");
  const auto& err = evs[evs.size() - 2];
  EXPECT_EQ(err.name, "error");
  const auto e = json::parse(err.data).at("error");
  EXPECT_EQ(e.at("code").as_string(), "upstream_error");
  EXPECT_EQ(e.at("type").as_string(), "server_error");
  EXPECT_NE(out.find("Hello "), std::string::npos);
  EXPECT_EQ(ctx.error_code, "upstream_error");
  EXPECT_TRUE(rw.process(chunk("\"after\"")).empty());  // nothing after the end
}
