// SPDX-License-Identifier: Apache-2.0
// GenerateContentResponse → chat.completion (PROTOCOLS.md §4.3 → §1.2), on the recorded
// vercel-ai fixtures and on hand-made bodies for what the fixtures do not show.
#include "providers/vertex/gemini.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "tests/unit/testdata.hpp"

namespace tollgate::providers::vertex {
namespace {

namespace json = boost::json;

const std::filesystem::path fixture_dir =
    std::filesystem::path(TOLLGATE_TESTDATA) / "vercel-ai-fixtures/packages/google/src/__fixtures__";

using tollgate::testing::read_file;

json::value fixture(std::string_view name) { return json::parse(read_file(fixture_dir / name)); }

const completion_meta meta{"chatcmpl-1", 1700000000, "gemini-3-pro"};

chat_completion translate_ok(const json::value& response) {
  auto r = to_chat_completion(response, meta);
  EXPECT_TRUE(r) << (r ? std::string() : r.error().message);
  return r ? *r : chat_completion{};
}

const json::object& message_of(const chat_completion& c) {
  return c.body.at("choices").as_array()[0].at("message").as_object();
}

TEST(GeminiResponseTest, TextFixture) {
  const chat_completion c = translate_ok(fixture("google-text.json"));
  EXPECT_EQ(c.body.at("id"), "chatcmpl-1");
  EXPECT_EQ(c.body.at("object"), "chat.completion");
  EXPECT_EQ(c.body.at("created"), 1700000000);
  EXPECT_EQ(c.body.at("model"), "gemini-3-pro");
  const json::object& msg = message_of(c);
  EXPECT_EQ(msg.at("role"), "assistant");
  EXPECT_EQ(msg.at("content"), "There are **3** r's in strawberry.\n\nHere is the breakdown: st**r**awbe**rr**y.");
  EXPECT_FALSE(msg.contains("tool_calls"));
  EXPECT_FALSE(msg.contains("reasoning_content"));  // the thought signature on a text part is not reasoning text
  EXPECT_EQ(c.body.at("choices").as_array()[0].at("finish_reason"), "stop");
  EXPECT_EQ(c.finish_reason, "stop");
  // promptTokenCount 9, candidatesTokenCount 28 + thoughtsTokenCount 244, totalTokenCount 281.
  EXPECT_EQ(c.body.at("usage"), json::parse(R"({"prompt_tokens":9,"completion_tokens":272,"total_tokens":281,
    "completion_tokens_details":{"reasoning_tokens":244}})"));
  ASSERT_TRUE(c.usage);
  EXPECT_EQ(c.usage->total_tokens(), c.usage->openai_prompt_tokens() + c.usage->openai_completion_tokens());
  EXPECT_EQ(c.response_id, "Un6LacrVMcjUxs0PmJfWoQc");
  EXPECT_EQ(c.model_version, "gemini-3-pro-preview");
}

TEST(GeminiResponseTest, ReasoningFixture) {
  const chat_completion c = translate_ok(fixture("google-reasoning.json"));
  EXPECT_EQ(message_of(c).at("content"),
            "There are **3** \"r\"s in strawberry.\n\nHere is the breakdown: st**r**awbe**rr**y.");
  EXPECT_EQ(c.finish_reason, "stop");
  EXPECT_EQ(c.body.at("usage"), json::parse(R"({"prompt_tokens":9,"completion_tokens":311,"total_tokens":320,
    "completion_tokens_details":{"reasoning_tokens":282}})"));
}

TEST(GeminiResponseTest, ToolCallFixture) {
  const json::value response = fixture("google-tool-call.json");
  const chat_completion c = translate_ok(response);
  const json::object& msg = message_of(c);
  EXPECT_TRUE(msg.at("content").is_null());
  const json::array& calls = msg.at("tool_calls").as_array();
  ASSERT_EQ(calls.size(), 1u);
  EXPECT_EQ(calls[0].at("id"), "call_chatcmpl-1_0");
  EXPECT_EQ(calls[0].at("type"), "function");
  EXPECT_EQ(calls[0].at("function").at("name"), "weather");
  EXPECT_EQ(calls[0].at("function").at("arguments"), R"({"location":"San Francisco"})");
  const json::value& signature =
      response.at("candidates").as_array()[0].at("content").at("parts").as_array()[0].at("thoughtSignature");
  EXPECT_EQ(calls[0].at("extra_content").at("google").at("thought_signature"), signature);
  EXPECT_EQ(c.finish_reason, "tool_calls");  // finishReason STOP with a function call
  EXPECT_EQ(c.body.at("usage"), json::parse(R"({"prompt_tokens":29,"completion_tokens":908,"total_tokens":937,
    "completion_tokens_details":{"reasoning_tokens":893}})"));
}

TEST(GeminiResponseTest, ToolCallRoundTripsIntoTheNextRequest) {
  // The assistant message we answer, sent back by the client with a tool result, must give
  // Gemini the same functionCall (and its thought signature) back.
  const json::value response = fixture("google-tool-call.json");
  const chat_completion c = translate_ok(response);
  json::object assistant = message_of(c);
  const std::string id(assistant.at("tool_calls").as_array()[0].at("id").as_string());
  json::object request{{"messages", json::array{json::object{{"role", "user"}, {"content", "Weather in SF?"}},
                                                assistant,
                                                json::object{{"role", "tool"}, {"tool_call_id", id}, {"content", "sunny"}}}}};
  auto body = to_generate_content_request(request);
  ASSERT_TRUE(body) << body.error().message;
  const json::array& contents = body->at("contents").as_array();
  ASSERT_EQ(contents.size(), 3u);
  EXPECT_EQ(contents[1].at("parts"), response.at("candidates").as_array()[0].at("content").at("parts"));
  EXPECT_EQ(contents[2], json::parse(R"({"role":"user","parts":[
    {"functionResponse":{"name":"weather","response":{"content":"sunny"}}}]})"));
}

TEST(GeminiResponseTest, EveryGoogleJsonFixtureTranslates) {
  std::size_t responses = 0;
  std::size_t errors = 0;
  for (const auto& entry : std::filesystem::directory_iterator(fixture_dir)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("google-", 0) != 0 || entry.path().extension() != ".json") continue;
    SCOPED_TRACE(name);
    const json::value body = json::parse(read_file(entry.path()));
    if (body.as_object().contains("error")) {
      const upstream_error e = map_google_error(0, body);
      EXPECT_GE(e.status, 400u);
      EXPECT_FALSE(e.message.empty());
      ++errors;
      continue;
    }
    const chat_completion c = translate_ok(body);
    const json::object& choice = c.body.at("choices").as_array()[0].as_object();
    EXPECT_FALSE(choice.at("finish_reason").as_string().empty());
    // Content text = the fixture's non-thought text parts, concatenated.
    std::string text;
    for (const json::value& p : body.at("candidates").as_array()[0].at("content").at("parts").as_array())
      if (p.as_object().contains("text")) text += p.at("text").as_string();
    if (!text.empty()) {
      EXPECT_EQ(choice.at("message").at("content"), json::value(text));
    }
    ASSERT_TRUE(c.usage);
    EXPECT_EQ(c.body.at("usage").at("total_tokens"), body.at("usageMetadata").at("totalTokenCount"));
    ++responses;
  }
  EXPECT_EQ(responses, 3u);
  EXPECT_EQ(errors, 1u);
}

// --- hand-made bodies ---------------------------------------------------------------------------

TEST(GeminiResponseTest, ThoughtPartsGoToReasoningContent) {
  const chat_completion c = translate_ok(json::parse(R"({"candidates":[{"content":{"role":"model","parts":[
    {"text":"Counting letters...","thought":true},
    {"text":"There are 3.","thoughtSignature":"abc"},
    {"text":" Done."}]},"finishReason":"STOP"}],
    "usageMetadata":{"promptTokenCount":5,"candidatesTokenCount":4,"thoughtsTokenCount":6,"totalTokenCount":15}})"));
  EXPECT_EQ(message_of(c).at("content"), "There are 3. Done.");
  EXPECT_EQ(message_of(c).at("reasoning_content"), "Counting letters...");
  EXPECT_EQ(c.body.at("usage").at("completion_tokens"), 10);
}

TEST(GeminiResponseTest, TextAndParallelToolCalls) {
  const chat_completion c = translate_ok(json::parse(R"({"candidates":[{"content":{"role":"model","parts":[
    {"text":"Checking both."},
    {"functionCall":{"name":"weather","args":{"city":"SF","days":2,"metric":true}}},
    {"functionCall":{"name":"ping"}}]},"finishReason":"STOP"}]})"));
  const json::object& msg = message_of(c);
  EXPECT_EQ(msg.at("content"), "Checking both.");
  const json::array& calls = msg.at("tool_calls").as_array();
  ASSERT_EQ(calls.size(), 2u);
  EXPECT_EQ(calls[0].at("id"), "call_chatcmpl-1_0");
  EXPECT_EQ(json::parse(calls[0].at("function").at("arguments").as_string()),
            json::parse(R"({"city":"SF","days":2,"metric":true})"));
  EXPECT_FALSE(calls[0].as_object().contains("extra_content"));
  EXPECT_EQ(calls[1].at("id"), "call_chatcmpl-1_1");
  EXPECT_EQ(calls[1].at("function").at("arguments"), "{}");
  EXPECT_EQ(c.finish_reason, "tool_calls");
  EXPECT_FALSE(c.body.contains("usage"));
  EXPECT_FALSE(c.usage);
}

TEST(GeminiResponseTest, FinishReasonMapping) {
  EXPECT_EQ(map_finish_reason("STOP"), "stop");
  EXPECT_EQ(map_finish_reason("MAX_TOKENS"), "length");
  for (const char* r : {"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY"})
    EXPECT_EQ(map_finish_reason(r), "content_filter") << r;
  for (const char* r : {"OTHER", "LANGUAGE", "MALFORMED_FUNCTION_CALL", "FINISH_REASON_UNSPECIFIED", ""})
    EXPECT_EQ(map_finish_reason(r), "stop") << r;

  const chat_completion length = translate_ok(json::parse(R"({"candidates":[{"content":{"parts":[{"text":"Once upon"}]},
    "finishReason":"MAX_TOKENS"}]})"));
  EXPECT_EQ(length.finish_reason, "length");
  EXPECT_EQ(message_of(length).at("content"), "Once upon");

  // A candidate stopped for safety has no content at all.
  const chat_completion safety = translate_ok(json::parse(R"({"candidates":[{"finishReason":"SAFETY",
    "safetyRatings":[{"category":"HARM_CATEGORY_DANGEROUS_CONTENT","probability":"HIGH","blocked":true}]}]})"));
  EXPECT_EQ(safety.finish_reason, "content_filter");
  EXPECT_EQ(message_of(safety).at("content"), "");
}

TEST(GeminiResponseTest, BlockedPromptGivesAnEmptyContentFilteredMessage) {
  const chat_completion c = translate_ok(json::parse(R"({"promptFeedback":{"blockReason":"PROHIBITED_CONTENT"},
    "usageMetadata":{"promptTokenCount":12,"totalTokenCount":12},"modelVersion":"gemini-2.5-flash"})"));
  EXPECT_EQ(c.finish_reason, "content_filter");
  EXPECT_EQ(message_of(c).at("content"), "");
  EXPECT_EQ(c.body.at("usage"), json::parse(R"({"prompt_tokens":12,"completion_tokens":0,"total_tokens":12})"));
}

TEST(GeminiResponseTest, UsageWithCacheAndToolUsePrompt) {
  auto u = parse_usage(json::parse(R"({"promptTokenCount":100,"candidatesTokenCount":20,"thoughtsTokenCount":30,
    "toolUsePromptTokenCount":7,"cachedContentTokenCount":64,"totalTokenCount":157,"trafficType":"ON_DEMAND"})"));
  ASSERT_TRUE(u);
  EXPECT_EQ(json::value(to_openai_usage(*u)), json::parse(R"({"prompt_tokens":107,"completion_tokens":50,
    "total_tokens":157,"prompt_tokens_details":{"cached_tokens":64},"completion_tokens_details":{"reasoning_tokens":30}})"));
  EXPECT_FALSE(parse_usage(json::parse(R"({"trafficType":"ON_DEMAND"})")));
  EXPECT_FALSE(parse_usage(json::parse("[]")));
  auto no_total = parse_usage(json::parse(R"({"promptTokenCount":3,"candidatesTokenCount":4})"));
  ASSERT_TRUE(no_total);
  EXPECT_EQ(no_total->total_tokens(), 7u);
}

TEST(GeminiResponseTest, UnreadableBodiesAreRefused) {
  auto not_object = to_chat_completion(json::parse("[1]"), meta);
  ASSERT_FALSE(not_object);
  EXPECT_EQ(not_object.error().code, translate_errc::invalid_upstream);
  auto empty = to_chat_completion(json::parse(R"({"candidates":[],"usageMetadata":{"promptTokenCount":1}})"), meta);
  ASSERT_FALSE(empty);
  EXPECT_EQ(empty.error().code, translate_errc::invalid_upstream);
  EXPECT_EQ(to_string(empty.error().code), "invalid_upstream_response");
}

TEST(GeminiResponseTest, ToolCallIds) {
  EXPECT_EQ(tool_call_id("chatcmpl-9", 3), "call_chatcmpl-9_3");
  EXPECT_EQ(tool_call_id("", 0), "call_0");
}

}  // namespace
}  // namespace tollgate::providers::vertex
