// SPDX-License-Identifier: Apache-2.0
// streamGenerateContent?alt=sse chunks → chat.completion.chunk objects (PROTOCOLS.md §4.4 → §1.3),
// fed one recorded chunk at a time as the adapter will.
#include "providers/vertex/gemini.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "tests/unit/testdata.hpp"

namespace tollgate::providers::vertex {
namespace {

namespace json = boost::json;

const std::filesystem::path fixture_dir =
    std::filesystem::path(TOLLGATE_TESTDATA) / "vercel-ai-fixtures/packages/google/src/__fixtures__";

using tollgate::testing::read_file;

std::vector<std::string> fixture_lines(std::string_view name) {
  std::istringstream in(read_file(fixture_dir / name));
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) lines.push_back(line);
  return lines;
}

const completion_meta meta{"chatcmpl-s", 1700000001, "gemini-3-pro"};

/// What a client would assemble from the chunks.
struct assembled {
  std::vector<json::object> chunks;
  std::string content;
  std::string reasoning;
  struct call {
    std::string id, name, arguments;
    json::value extra;
  };
  std::map<std::int64_t, call> calls;
  std::string finish_reason;
  std::size_t role_deltas = 0;
  std::size_t finish_chunks = 0;
  std::optional<gemini_usage> last_usage;
  std::optional<upstream_error> error;
};

void absorb(assembled& a, stream_step step) {
  if (step.usage) a.last_usage = step.usage;
  if (step.error) a.error = step.error;
  for (json::object& chunk : step.chunks) {
    EXPECT_EQ(chunk.at("id"), json::value(meta.id));
    EXPECT_EQ(chunk.at("model"), json::value(meta.model));
    EXPECT_EQ(chunk.at("object"), "chat.completion.chunk");
    EXPECT_EQ(chunk.at("created"), meta.created);
    const json::array& choices = chunk.at("choices").as_array();
    EXPECT_EQ(choices.size(), 1u);
    const json::object& choice = choices[0].as_object();
    EXPECT_EQ(choice.at("index"), 0);
    const json::object& delta = choice.at("delta").as_object();
    if (delta.contains("role")) {
      EXPECT_EQ(delta.at("role"), "assistant");
      ++a.role_deltas;
      EXPECT_TRUE(a.chunks.empty()) << "the role must come with the first chunk";
    }
    if (const json::value* c = delta.if_contains("content")) a.content += c->as_string();
    if (const json::value* r = delta.if_contains("reasoning_content")) a.reasoning += r->as_string();
    if (const json::value* tcs = delta.if_contains("tool_calls")) {
      for (const json::value& tc : tcs->as_array()) {
        assembled::call& call = a.calls[tc.at("index").as_int64()];
        if (const json::value* id = tc.as_object().if_contains("id")) call.id = id->as_string();
        const json::object& fn = tc.at("function").as_object();
        if (const json::value* n = fn.if_contains("name")) call.name += n->as_string();
        if (const json::value* args = fn.if_contains("arguments")) call.arguments += args->as_string();
        if (const json::value* extra = tc.as_object().if_contains("extra_content")) call.extra = *extra;
      }
    }
    if (!choice.at("finish_reason").is_null()) {
      a.finish_reason = choice.at("finish_reason").as_string();
      ++a.finish_chunks;
      EXPECT_TRUE(delta.empty() || (delta.size() == 1 && delta.contains("role")));
    }
    a.chunks.push_back(std::move(chunk));
  }
}

assembled run_fixture(std::string_view name) {
  gemini_stream_translator t(meta);
  assembled a;
  for (const std::string& line : fixture_lines(name)) absorb(a, t.on_chunk(std::string_view(line)));
  absorb(a, t.on_end());
  EXPECT_FALSE(t.failed());
  EXPECT_TRUE(t.finished());
  EXPECT_EQ(t.finish_reason(), a.finish_reason);
  EXPECT_EQ(t.usage(), a.last_usage);
  return a;
}

chat_completion non_stream_twin(std::string_view name) {
  auto r = to_chat_completion(json::parse(read_file(fixture_dir / name)), meta);
  EXPECT_TRUE(r);
  return r ? *r : chat_completion{};
}

std::string fixture_text(std::string_view name) {
  std::string text;
  for (const std::string& line : fixture_lines(name)) {
    const json::value chunk = json::parse(line);
    for (const json::value& p : chunk.at("candidates").as_array()[0].at("content").at("parts").as_array())
      if (const json::value* t = p.as_object().if_contains("text")) text += t->as_string();
  }
  return text;
}

// --- recorded streams -------------------------------------------------------------------------

TEST(GeminiStreamTest, TextFixture) {
  const assembled a = run_fixture("google-text.chunks.txt");
  EXPECT_EQ(a.content, "There are **3** \"r\"s in strawberry.\n\nst**r**awbe**rr**y");
  EXPECT_EQ(a.content, fixture_text("google-text.chunks.txt"));
  // google-text.json is a separate recording with different wording, so it is no twin for the text.
  EXPECT_TRUE(a.reasoning.empty());
  EXPECT_TRUE(a.calls.empty());
  EXPECT_EQ(a.role_deltas, 1u);
  EXPECT_EQ(a.finish_chunks, 1u);
  EXPECT_EQ(a.finish_reason, "stop");
  EXPECT_EQ(a.chunks.size(), 3u);  // two text deltas (the last chunk's text is empty) + finish
  ASSERT_TRUE(a.last_usage);
  EXPECT_EQ(json::value(to_openai_usage(*a.last_usage)), json::parse(R"({"prompt_tokens":9,"completion_tokens":208,
    "total_tokens":217,"completion_tokens_details":{"reasoning_tokens":185}})"));
}

TEST(GeminiStreamTest, ReasoningFixtureMatchesItsNonStreamTwin) {
  const assembled a = run_fixture("google-reasoning.chunks.txt");
  const chat_completion twin = non_stream_twin("google-reasoning.json");
  EXPECT_EQ(json::value(a.content), twin.body.at("choices").as_array()[0].at("message").at("content"));
  EXPECT_EQ(a.finish_reason, twin.finish_reason);
  ASSERT_TRUE(a.last_usage);
  EXPECT_EQ(a.last_usage->prompt_tokens, 9u);
  EXPECT_EQ(a.last_usage->openai_completion_tokens(), 29u + 256u);
  EXPECT_EQ(a.last_usage->total_tokens(), 294u);
}

TEST(GeminiStreamTest, ToolCallFixtureMatchesItsNonStreamTwin) {
  const assembled a = run_fixture("google-tool-call.chunks.txt");
  const chat_completion twin = non_stream_twin("google-tool-call.json");
  const json::object& call = twin.body.at("choices").as_array()[0].at("message").at("tool_calls").as_array()[0].as_object();
  ASSERT_EQ(a.calls.size(), 1u);
  const assembled::call& got = a.calls.at(0);
  EXPECT_EQ(json::value(got.id), call.at("id"));  // same deterministic id as non-streamed
  EXPECT_EQ(json::value(got.name), call.at("function").at("name"));
  EXPECT_EQ(json::value(got.arguments), call.at("function").at("arguments"));
  EXPECT_EQ(got.arguments, R"({"location":"San Francisco"})");
  EXPECT_TRUE(got.extra.at("google").at("thought_signature").as_string().starts_with("EqUCCqIC"));
  EXPECT_TRUE(a.content.empty());
  EXPECT_EQ(a.finish_reason, "tool_calls");
  EXPECT_EQ(a.finish_reason, twin.finish_reason);
  // The call's delta carries everything at once, and the role (it is the first chunk).
  const json::object& first = a.chunks.front().at("choices").as_array()[0].at("delta").as_object();
  EXPECT_EQ(first.at("role"), "assistant");
  EXPECT_EQ(first.at("tool_calls").as_array()[0].at("type"), "function");
  ASSERT_TRUE(a.last_usage);
  EXPECT_EQ(json::value(make_usage_chunk(meta, *a.last_usage)), json::parse(R"({"id":"chatcmpl-s",
    "object":"chat.completion.chunk","created":1700000001,"model":"gemini-3-pro","choices":[],
    "usage":{"prompt_tokens":29,"completion_tokens":60,"total_tokens":89,"completion_tokens_details":{"reasoning_tokens":45}}})"));
}

TEST(GeminiStreamTest, VertexNestedStreamedArguments) {
  const assembled a = run_fixture("google-vertex-stream-tool-call-arguments-nested.1.chunks.txt");
  ASSERT_EQ(a.calls.size(), 1u);
  const assembled::call& call = a.calls.at(0);
  EXPECT_EQ(call.name, "cookRecipe");
  EXPECT_EQ(call.id, "call_chatcmpl-s_0");
  EXPECT_FALSE(call.extra.is_null());  // the first part's thought signature
  // One tool_calls delta with the full arguments, then the finish chunk.
  std::size_t tool_deltas = 0;
  for (const json::object& c : a.chunks)
    if (c.at("choices").as_array()[0].at("delta").as_object().contains("tool_calls")) ++tool_deltas;
  EXPECT_EQ(tool_deltas, 1u);
  EXPECT_EQ(a.chunks.size(), 2u);

  const json::value args = json::parse(call.arguments);
  const json::array& ingredients = args.at("recipe").at("ingredients").as_array();
  ASSERT_EQ(ingredients.size(), 10u);
  EXPECT_EQ(ingredients[0], json::parse(R"({"amount":"16 oz","name":"Lasagna noodles"})"));
  EXPECT_EQ(ingredients[6], json::parse(R"({"amount":"1","name":"Egg"})"));
  EXPECT_EQ(ingredients[9], json::parse(R"({"amount":"1/2 tsp","name":"Pepper"})"));
  EXPECT_EQ(args.at("recipe").at("name"), "Lasagna");
  const json::array& steps = args.at("recipe").at("steps").as_array();
  ASSERT_EQ(steps.size(), 10u);
  EXPECT_EQ(steps[0], "Preheat oven to 375\u00b0F (190\u00b0C).");
  EXPECT_EQ(steps[1], "Cook lasagna noodles according to package directions, drain and set aside.");  // 2 fragments
  EXPECT_EQ(steps[4], "In a 9x13 baking dish, spread a thin layer of meat sauce.");
  EXPECT_EQ(steps[9], "Let stand for 15 minutes before serving.");
  // Keys in the order the model produced them.
  EXPECT_TRUE(call.arguments.starts_with(R"({"recipe":{"ingredients":[{"amount":"16 oz","name":"Lasagna noodles"})"));

  EXPECT_EQ(a.finish_reason, "tool_calls");
  ASSERT_TRUE(a.last_usage);
  EXPECT_EQ(json::value(to_openai_usage(*a.last_usage)), json::parse(R"({"prompt_tokens":31,"completion_tokens":1710,
    "total_tokens":1741,"completion_tokens_details":{"reasoning_tokens":1026}})"));
}

TEST(GeminiStreamTest, EveryChunkFixtureStreamsCleanly) {
  std::size_t streams = 0;
  for (const auto& entry : std::filesystem::directory_iterator(fixture_dir)) {
    const std::string name = entry.path().filename().string();
    if (!name.ends_with(".chunks.txt")) continue;
    SCOPED_TRACE(name);
    const assembled a = run_fixture(name);
    EXPECT_FALSE(a.error);
    EXPECT_EQ(a.role_deltas, 1u);
    EXPECT_EQ(a.finish_chunks, 1u);
    EXPECT_TRUE(a.last_usage);
    for (const auto& [index, call] : a.calls) {
      EXPECT_FALSE(call.name.empty());
      EXPECT_TRUE(json::parse(call.arguments).is_object());
    }
    ++streams;
  }
  EXPECT_EQ(streams, 4u);
}

// --- hand-made chunks ---------------------------------------------------------------------------

assembled feed(std::initializer_list<std::string_view> chunks, gemini_stream_translator& t) {
  assembled a;
  for (std::string_view c : chunks) absorb(a, t.on_chunk(c));
  return a;
}

TEST(GeminiStreamTest, ThoughtPartsStreamAsReasoningContent) {
  gemini_stream_translator t(meta);
  assembled a = feed({R"({"candidates":[{"content":{"role":"model","parts":[{"text":"Let me think","thought":true}]}}]})",
                      R"({"candidates":[{"content":{"role":"model","parts":[{"text":"Answer: 3"}]},"finishReason":"STOP"}]})"},
                     t);
  EXPECT_EQ(a.reasoning, "Let me think");
  EXPECT_EQ(a.content, "Answer: 3");
  EXPECT_EQ(a.finish_reason, "stop");
  EXPECT_TRUE(a.chunks[0].at("choices").as_array()[0].at("delta").as_object().contains("role"));
}

TEST(GeminiStreamTest, SafetyBlockedChunksFinishWithContentFilter) {
  gemini_stream_translator t(meta);
  assembled a = feed({R"({"candidates":[{"content":{"parts":[{"text":"Sure, here"}]}}]})",
                      R"({"candidates":[{"finishReason":"SAFETY","safetyRatings":[{"category":"HARM_CATEGORY_HARASSMENT","blocked":true}]}]})"},
                     t);
  EXPECT_EQ(a.content, "Sure, here");
  EXPECT_EQ(a.finish_reason, "content_filter");

  gemini_stream_translator blocked(meta);
  assembled b = feed({R"({"promptFeedback":{"blockReason":"SAFETY"},"usageMetadata":{"promptTokenCount":8,"totalTokenCount":8}})"},
                     blocked);
  EXPECT_EQ(b.finish_reason, "content_filter");
  EXPECT_EQ(b.chunks.size(), 1u);
  EXPECT_EQ(b.role_deltas, 1u);
  EXPECT_TRUE(blocked.finished());
  EXPECT_TRUE(b.last_usage);
}

TEST(GeminiStreamTest, MaxTokensFinish) {
  gemini_stream_translator t(meta);
  assembled a = feed({R"({"candidates":[{"content":{"parts":[{"text":"abc"}]},"finishReason":"MAX_TOKENS"}]})"}, t);
  EXPECT_EQ(a.finish_reason, "length");
  EXPECT_EQ(a.chunks.size(), 2u);
}

TEST(GeminiStreamTest, ParallelWholeCallsGetStableIndexes) {
  gemini_stream_translator t(meta);
  assembled a = feed({R"({"candidates":[{"content":{"parts":[{"functionCall":{"name":"a","args":{"x":1}}}]}}]})",
                      R"({"candidates":[{"content":{"parts":[{"functionCall":{"name":"b","args":{}}}]},"finishReason":"STOP"}]})"},
                     t);
  ASSERT_EQ(a.calls.size(), 2u);
  EXPECT_EQ(a.calls.at(0).name, "a");
  EXPECT_EQ(a.calls.at(0).arguments, R"({"x":1})");
  EXPECT_EQ(a.calls.at(1).name, "b");
  EXPECT_EQ(a.calls.at(1).id, "call_chatcmpl-s_1");
  EXPECT_EQ(a.finish_reason, "tool_calls");
}

TEST(GeminiStreamTest, PartialArgumentsOfEveryKind) {
  gemini_stream_translator t(meta);
  assembled a = feed(
      {R"({"candidates":[{"content":{"parts":[{"functionCall":{"name":"f","willContinue":true}}]}}]})",
       R"({"candidates":[{"content":{"parts":[{"functionCall":{"partialArgs":[
            {"jsonPath":"$.n","numberValue":2},{"jsonPath":"$.x","numberValue":2.5},
            {"jsonPath":"$.ok","boolValue":false},{"jsonPath":"$.none","nullValue":"NULL_VALUE"},
            {"jsonPath":"$['odd key'].list[1]","stringValue":"b"},
            {"jsonPath":"$.s","stringValue":"he","willContinue":true}],"willContinue":true}}]}}]})",
       R"({"candidates":[{"content":{"parts":[{"functionCall":{"partialArgs":[{"jsonPath":"$.s","stringValue":"llo"}],"willContinue":true}}]}}]})",
       R"({"candidates":[{"content":{"parts":[{"functionCall":{}}]},"finishReason":"STOP"}]})"},
      t);
  ASSERT_EQ(a.calls.size(), 1u);
  EXPECT_EQ(json::parse(a.calls.at(0).arguments),
            json::parse(R"({"n":2,"x":2.5,"ok":false,"none":null,"odd key":{"list":[null,"b"]},"s":"hello"})"));
  EXPECT_EQ(a.finish_reason, "tool_calls");
}

TEST(GeminiStreamTest, PendingCallIsSentWhenTheFinishArrivesFirst) {
  gemini_stream_translator t(meta);
  assembled a = feed({R"({"candidates":[{"content":{"parts":[{"functionCall":{"name":"f","willContinue":true}}]}}]})",
                      R"({"candidates":[{"content":{"parts":[{"functionCall":{"partialArgs":[{"jsonPath":"$.a","stringValue":"z"}],"willContinue":true}}]},"finishReason":"STOP"}]})"},
                     t);
  ASSERT_EQ(a.calls.size(), 1u);
  EXPECT_EQ(a.calls.at(0).arguments, R"({"a":"z"})");
  EXPECT_EQ(a.finish_reason, "tool_calls");
}

TEST(GeminiStreamTest, UnusablePartialArgumentFailsTheStream) {
  gemini_stream_translator t(meta);
  assembled a = feed({R"({"candidates":[{"content":{"parts":[{"functionCall":{"name":"f","willContinue":true}}]}}]})",
                      R"({"candidates":[{"content":{"parts":[{"functionCall":{"partialArgs":[{"jsonPath":"recipe","stringValue":"z"}],"willContinue":true}}]}}]})"},
                     t);
  ASSERT_TRUE(a.error);
  EXPECT_EQ(a.error->status, 502u);
  EXPECT_EQ(a.error->code, "invalid_upstream_response");
  EXPECT_TRUE(t.failed());
}

// Paths that each make a long array ($.a0[99999], $.a1[99999], ...), event after event, would
// grow the arguments without bound: past 65,536 values in one call the stream fails.
TEST(GeminiStreamTest, PartialArgumentsThatGrowWithoutBoundFailTheStream) {
  gemini_stream_translator t(meta);
  std::vector<std::string> events = {R"({"candidates":[{"content":{"parts":[{"functionCall":{"name":"f","willContinue":true}}]}}]})"};
  for (int i = 0; i < 8; ++i)
    events.push_back(R"({"candidates":[{"content":{"parts":[{"functionCall":{"partialArgs":[{"jsonPath":"$.a)" +
                     std::to_string(i) + R"([99999]","stringValue":"z"}],"willContinue":true}}]}}]})");
  assembled a;
  for (const std::string& c : events) absorb(a, t.on_chunk(c));
  ASSERT_TRUE(a.error);
  EXPECT_EQ(a.error->code, "invalid_upstream_response");
  EXPECT_TRUE(t.failed());
}

TEST(GeminiStreamTest, ErrorChunkEndsTheStream) {
  gemini_stream_translator t(meta);
  assembled a = feed({R"({"candidates":[{"content":{"parts":[{"text":"partial"}]}}]})",
                      R"({"error":{"code":503,"message":"The model is overloaded.","status":"UNAVAILABLE"}})",
                      R"({"candidates":[{"content":{"parts":[{"text":"ignored"}]},"finishReason":"STOP"}]})"},
                     t);
  ASSERT_TRUE(a.error);
  EXPECT_EQ(a.error->status, 503u);
  EXPECT_EQ(a.error->type, "server_error");
  EXPECT_EQ(a.error->message, "The model is overloaded.");
  EXPECT_TRUE(a.error->retryable);
  EXPECT_EQ(a.content, "partial");
  EXPECT_TRUE(a.finish_reason.empty());
  EXPECT_TRUE(t.failed());
  EXPECT_FALSE(t.on_end().error);  // already failed: nothing more
}

TEST(GeminiStreamTest, MalformedChunksFailTheStream) {
  gemini_stream_translator bad_json(meta);
  stream_step s = bad_json.on_chunk(std::string_view("{\"candidates\":"));
  ASSERT_TRUE(s.error);
  EXPECT_EQ(s.error->status, 502u);
  EXPECT_TRUE(bad_json.failed());

  gemini_stream_translator not_object(meta);
  EXPECT_TRUE(not_object.on_chunk(json::parse("[1,2]")).error);
}

TEST(GeminiStreamTest, StreamEndingWithoutFinishReasonFails) {
  gemini_stream_translator t(meta);
  assembled a = feed({R"({"candidates":[{"content":{"parts":[{"text":"cut"}]}}]})"}, t);
  EXPECT_FALSE(a.error);
  stream_step end = t.on_end();
  ASSERT_TRUE(end.error);
  EXPECT_EQ(end.error->status, 502u);
  EXPECT_EQ(end.error->code, "invalid_upstream_response");
}

TEST(GeminiStreamTest, UsageAfterTheFinishIsStillTaken) {
  gemini_stream_translator t(meta);
  assembled a = feed({R"({"candidates":[{"content":{"parts":[{"text":"hi"}]},"finishReason":"STOP"}]})",
                      R"({"candidates":[{"content":{"parts":[{"text":"late"}]}}],"usageMetadata":{"promptTokenCount":2,"candidatesTokenCount":1,"totalTokenCount":3}})"},
                     t);
  EXPECT_EQ(a.content, "hi");
  ASSERT_TRUE(t.usage());
  EXPECT_EQ(t.usage()->total_tokens(), 3u);
  EXPECT_FALSE(t.on_end().error);
}

}  // namespace
}  // namespace tollgate::providers::vertex
