// SPDX-License-Identifier: Apache-2.0
#include "providers/unified.hpp"

#include <boost/json/serialize.hpp>
#include <gtest/gtest.h>

#include <optional>

#include "gateway/core/tokens.hpp"

namespace tollgate::providers {
namespace {

struct outcome {
  bool ok;
  std::string code, param;
  request_context ctx;
};

outcome decode(std::string body, endpoint_kind e = endpoint_kind::chat_completions) {
  outcome o{};
  o.ctx.endpoint = e;
  o.ctx.body = std::move(body);
  auto r = decode_request(o.ctx);
  o.ok = bool(r);
  if (!r) {
    o.code = r.error().code.message();
    o.param = r.error().param;
  }
  return o;
}

TEST(UnifiedDecodeTest, ValidChatRequest) {
  auto o = decode(R"({"model":"m","messages":[{"role":"user","content":"hello world"}],"stream":true,
                      "stream_options":{"include_usage":true},"max_completion_tokens":50,"max_tokens":10})");
  ASSERT_TRUE(o.ok) << o.code;
  EXPECT_EQ(o.ctx.model, "m");
  EXPECT_TRUE(o.ctx.stream);
  EXPECT_TRUE(o.ctx.caller_wants_usage);
  EXPECT_EQ(o.ctx.max_output_tokens, 50u);  // max_completion_tokens wins over the deprecated max_tokens
  EXPECT_GT(o.ctx.prompt_estimate, 0u);
}

TEST(UnifiedDecodeTest, ThePromptEstimateCountsToolsSchemasToolCallsAndImages) {
  // What reaches the model as prompt text is reserved: without it an agent's call (its tools
  // often most of its prompt) reserved less than it cost, and a budget could be overrun.
  const std::string msgs = R"("messages":[{"role":"user","content":"hello world"}])";  // 11 + 16 chars
  const auto base = decode(R"({"model":"m",)" + msgs + "}");
  ASSERT_TRUE(base.ok) << base.code;
  EXPECT_EQ(base.ctx.prompt_estimate, 7u);  // ceil(27 / 4)
  const std::string desc(400, 'd');
  const auto tools = decode(R"({"model":"m",)" + msgs +
                            R"(,"tools":[{"type":"function","function":{"name":"lookup","description":")" + desc +
                            R"(","parameters":{"type":"object"}}}]})");
  ASSERT_TRUE(tools.ok) << tools.code;
  EXPECT_GE(tools.ctx.prompt_estimate, base.ctx.prompt_estimate + 100);  // the description alone
  const auto schema = decode(R"({"model":"m",)" + msgs + R"(,"response_format":{"type":"json_schema","json_schema":{"name":"x","schema":{"description":")" + desc + R"("}}}})");
  ASSERT_TRUE(schema.ok) << schema.code;
  EXPECT_GE(schema.ctx.prompt_estimate, base.ctx.prompt_estimate + 100);
  const auto calls = decode(R"({"model":"m","messages":[{"role":"user","content":"hello world"},)"
                            R"({"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function",)"
                            R"("function":{"name":"lookup","arguments":")" + desc + R"("}}]}]})");
  ASSERT_TRUE(calls.ok) << calls.code;
  EXPECT_GE(calls.ctx.prompt_estimate, base.ctx.prompt_estimate + 4 + 100);  // its framing and arguments
  const auto image = decode(R"({"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"hello world"},)"
                            R"({"type":"image_url","image_url":{"url":"https://x/y.png"}}]}]})");
  ASSERT_TRUE(image.ok) << image.code;
  EXPECT_EQ(image.ctx.prompt_estimate, base.ctx.prompt_estimate + 1'445);  // the largest high-detail image
}

TEST(UnifiedDecodeTest, CharactersOfThreeOrFourUtf8BytesCountAboutATokenEach) {
  // 10 CJK characters (30 bytes) are about 10 tokens; by bytes alone they estimated 7.5. Text of
  // two-byte characters (Cyrillic here) counts its bytes, as before.
  std::string cjk;
  for (int i = 0; i < 10; ++i) cjk += "\xE4\xBD\xA0";  // U+4F60
  EXPECT_EQ(token_chars(cjk), 40u);
  EXPECT_EQ(token_chars("\xD0\xBF\xD1\x80\xD0\xB8"), 6u);  // three Cyrillic letters
  EXPECT_EQ(token_chars("\xF0\x9F\x98\x80"), 5u);            // one emoji: at least a token
  EXPECT_EQ(token_chars("plain"), 5u);
  const auto o = decode(R"({"model":"m","messages":[{"role":"user","content":")" + cjk + R"("}]})");
  ASSERT_TRUE(o.ok) << o.code;
  EXPECT_EQ(o.ctx.prompt_estimate, 14u);  // ceil((40 + 16) / 4)
}

TEST(UnifiedDecodeTest, BadBodiesNameTheField) {
  struct {
    const char* body;
    const char* code;
    const char* param;
  } cases[] = {
      {"{bad", "invalid_json", ""},
      {"[1,2]", "invalid_json", ""},
      {R"({"messages":[{"role":"user","content":"x"}]})", "missing_required_parameter", "model"},
      {R"({"model":5,"messages":[]})", "invalid_type", "model"},
      {R"({"model":""})", "invalid_value", "model"},
      {R"({"model":"m"})", "missing_required_parameter", "messages"},
      {R"({"model":"m","messages":"hi"})", "invalid_type", "messages"},
      {R"({"model":"m","messages":[]})", "invalid_value", "messages"},
      {R"({"model":"m","messages":["hi"]})", "invalid_type", "messages[0]"},
      {R"({"model":"m","messages":[{"content":"x"}]})", "missing_required_parameter", "messages[0].role"},
      {R"({"model":"m","messages":[{"role":1}]})", "invalid_type", "messages[0].role"},
      {R"({"model":"m","messages":[{"role":"user","content":5}]})", "invalid_type", "messages[0].content"},
      {R"({"model":"m","messages":[{"role":"user","content":"x"}],"stream":"yes"})", "invalid_type", "stream"},
      {R"({"model":"m","messages":[{"role":"user","content":"x"}],"stream_options":{"include_usage":1}})", "invalid_type",
       "stream_options.include_usage"},
      {R"({"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":-1})", "invalid_value", "max_tokens"},
      {R"({"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":"10"})", "invalid_type", "max_tokens"},
      // Bounded, so that what the policy reserves (tokens × n, and their cost) cannot wrap around.
      {R"({"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":18446744073709551615})", "invalid_value",
       "max_tokens"},
      {R"({"model":"m","messages":[{"role":"user","content":"x"}],"max_completion_tokens":100000001})", "invalid_value",
       "max_completion_tokens"},
      {R"({"model":"m","messages":[{"role":"user","content":"x"}],"n":129})", "invalid_value", "n"},
      {R"({"model":"m","messages":[{"role":"user","content":"x"}],"temperature":"hot"})", "invalid_type", "temperature"},
      {R"({"model":"m","messages":[{"role":"user","content":"x"}],"tools":{}})", "invalid_type", "tools"},
  };
  for (auto& c : cases) {
    auto o = decode(c.body);
    EXPECT_FALSE(o.ok) << c.body;
    EXPECT_EQ(o.code, c.code) << c.body;
    EXPECT_EQ(o.param, c.param) << c.body;
  }
}

TEST(UnifiedDecodeTest, TheBodyLivesInItsOwnArenaAndCopiesOutliveTheRequest) {
  const std::string big(200 * 1024, 'x');  // far past the arena's first block
  std::optional<outcome> o = decode(R"({"model":"m","messages":[{"role":"user","content":")" + big +
                                    R"("},{"role":"user","content":"second"}]})");
  ASSERT_TRUE(o->ok) << o->code;
  // Not the default resource: the decoded body's nodes come from the request's arena.
  EXPECT_NE(o->ctx.request_json.storage().get(), boost::json::storage_ptr().get());
  // Edited in place (as encode does), then copied out: the copy shares the arena's ownership.
  o->ctx.request_json["model"] = "upstream-model";
  boost::json::value messages = o->ctx.request_json.at("messages");
  const std::string model = boost::json::serialize(o->ctx.request_json.at("model"));
  o.reset();  // the request is gone (AddressSanitizer would catch a freed arena here)
  ASSERT_TRUE(messages.is_array());
  ASSERT_EQ(messages.as_array().size(), 2u);
  EXPECT_EQ(messages.as_array()[0].as_object().at("content").as_string().size(), big.size());
  EXPECT_EQ(messages.as_array()[1].as_object().at("content").as_string(), "second");
  EXPECT_EQ(model, R"("upstream-model")");
}

TEST(UnifiedDecodeTest, TheLargestAcceptedBoundsAndNAreKept) {
  auto o = decode(R"({"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":100000000,"n":128})");
  ASSERT_TRUE(o.ok) << o.code;
  EXPECT_EQ(o.ctx.max_output_tokens, 100'000'000u);
  EXPECT_EQ(o.ctx.choices, 128u);
  EXPECT_EQ(decode(R"({"model":"m","messages":[{"role":"user","content":"x"}]})").ctx.choices, 1u);
  auto e = decode(R"({"model":"m","input":"x","dimensions":4000000000})", endpoint_kind::embeddings);
  EXPECT_FALSE(e.ok);
  EXPECT_EQ(e.code, "invalid_value");
  EXPECT_EQ(e.param, "dimensions");
  EXPECT_TRUE(decode(R"({"model":"m","input":"x","dimensions":3072})", endpoint_kind::embeddings).ok);
}

TEST(UnifiedDecodeTest, NullOptionalFieldsCountAsAbsent) {
  auto o = decode(R"({"model":"m","messages":[{"role":"assistant","content":null}],"stream":null,"max_tokens":null})");
  EXPECT_TRUE(o.ok) << o.code << " " << o.param;
  EXPECT_FALSE(o.ctx.stream);
}

TEST(UnifiedDecodeTest, EmbeddingInputs) {
  EXPECT_TRUE(decode(R"({"model":"e","input":"text"})", endpoint_kind::embeddings).ok);
  EXPECT_TRUE(decode(R"({"model":"e","input":["a","b"]})", endpoint_kind::embeddings).ok);
  EXPECT_TRUE(decode(R"({"model":"e","input":[1,2,3]})", endpoint_kind::embeddings).ok);
  EXPECT_TRUE(decode(R"({"model":"e","input":[[1,2],[3]]})", endpoint_kind::embeddings).ok);
  auto missing = decode(R"({"model":"e"})", endpoint_kind::embeddings);
  EXPECT_EQ(missing.param, "input");
  EXPECT_EQ(decode(R"({"model":"e","input":[]})", endpoint_kind::embeddings).code, "invalid_value");
  EXPECT_EQ(decode(R"({"model":"e","input":{}})", endpoint_kind::embeddings).code, "invalid_type");
  EXPECT_EQ(decode(R"({"model":"e","input":"x","dimensions":0})", endpoint_kind::embeddings).param, "dimensions");
}

}  // namespace
}  // namespace tollgate::providers
