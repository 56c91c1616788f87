// SPDX-License-Identifier: Apache-2.0
// The Bedrock adapter's answers as the pipeline reads them: the usage it records for billing.
#include "providers/bedrock/bedrock_adapter.hpp"

#include <gtest/gtest.h>
#include <boost/json/parse.hpp>

#include "config/config.hpp"
#include "policy/policy.hpp"
#include "providers/unified.hpp"
#include "tests/unit/providers/eventstream/frames.hpp"

namespace tollgate::providers {
namespace {

/// A chat call with one user message, decoded as the pipeline hands it on.
request_context chat_call() {
  request_context ctx;
  ctx.endpoint = endpoint_kind::chat_completions;
  ctx.body = R"({"model":"m","messages":[{"role":"user","content":"x"}]})";
  EXPECT_TRUE(decode_request(ctx));
  return ctx;
}

/// A Bedrock provider with static keys (AWS's documentation example), as the loader fills it in.
config::provider_config bedrock_config() {
  config::provider_config cfg;
  cfg.name = "bedrock";
  cfg.type = "bedrock";
  cfg.region = "us-east-1";
  cfg.base_url = "https://bedrock-runtime.us-east-1.amazonaws.com";
  cfg.aws_access_key_id = "AKIDEXAMPLE";
  cfg.aws_secret_access_key = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
  cfg.proxy = "none";
  return cfg;
}

TEST(BedrockAdapterTest, AnExceptionFrameWithoutItsTypeStillEndsTheStreamWithItsMessage) {
  // Read as an event of no type, it was ignored, and the stream failed later as cut off before
  // messageStop, without what Bedrock said.
  using namespace aws::testing;
  const config::provider_config cfg = bedrock_config();
  bedrock_adapter adapter(cfg);
  request_context ctx = chat_call();
  ctx.stream = true;
  auto tr = adapter.make_stream_translator(ctx);
  std::string out;
  tr->feed(event_frame("messageStart", R"({"role":"assistant"})") +
               event_frame("contentBlockDelta", R"({"contentBlockIndex":0,"delta":{"text":"Hel"}})") +
               frame(string_header(":message-type", "exception") + string_header(":content-type", "application/json"),
                     R"({"message":"the model stopped: internal fault 42"})"),
           out);
  EXPECT_TRUE(tr->failed()) << out;
  EXPECT_NE(out.find("internal fault 42"), std::string::npos) << out;
  EXPECT_NE(out.find("\"Hel\""), std::string::npos) << "the text before it went out: " << out;
}

TEST(BedrockAdapterTest, TheGatewaysOutputCapBecomesInferenceConfigMaxTokens) {
  const config::provider_config cfg = bedrock_config();
  bedrock_adapter adapter(cfg);
  route_target target{&adapter, "anthropic.claude-3-haiku-20240307-v1:0"};
  auto sent = [&](std::uint64_t cap) {
    request_context ctx;
    ctx.endpoint = endpoint_kind::chat_completions;
    ctx.body = R"({"model":"m","messages":[{"role":"user","content":"x"}]})";
    EXPECT_TRUE(decode_request(ctx));
    ctx.target = &target;
    ctx.output_cap = cap;
    auto r = adapter.encode(ctx);
    EXPECT_TRUE(r) << ctx.reject_message;
    return r ? boost::json::parse(r->body).as_object() : boost::json::object();
  };
  EXPECT_EQ(sent(700).at("inferenceConfig").at("maxTokens").as_int64(), 700);
  const auto none = sent(0);
  EXPECT_FALSE(none.contains("inferenceConfig") && none.at("inferenceConfig").as_object().contains("maxTokens"));
}

TEST(BedrockAdapterTest, CohereEmbeddingsAreBilledTheInputTokenCountOfTheirHeader) {
  // Cohere's embeddings on Bedrock carry no token count in the body, only the response header
  // X-Amzn-Bedrock-Input-Token-Count, which the pipeline keeps for a 2xx embeddings answer. It
  // was never passed on: the caller saw prompt_tokens 0 and the call was billed an estimate.
  const config::provider_config cfg = bedrock_config();
  bedrock_adapter adapter(cfg);
  route_target target{&adapter, "cohere.embed-english-v3"};
  auto decoded = [&](std::string header) {
    request_context ctx;
    ctx.endpoint = endpoint_kind::embeddings;
    ctx.body = R"({"model":"m","input":"hello world"})";
    EXPECT_TRUE(decode_request(ctx));
    ctx.target = &target;
    ctx.upstream_input_tokens = std::move(header);
    const std::string out = adapter.decode_body(ctx, 200, R"({"id":"e1","embeddings":[[0.1,0.2]],"texts":["hello world"],"response_type":"embeddings_floats"})");
    return std::make_pair(std::move(ctx), boost::json::parse(out));
  };
  auto [ctx, body] = decoded("7");
  EXPECT_EQ(body.at("usage").at("prompt_tokens").to_number<std::int64_t>(), 7);
  EXPECT_EQ(ctx.usage.prompt, 7u);
  EXPECT_TRUE(ctx.usage.reported);
  auto [none, body2] = decoded("");  // no header: estimated, and said so
  EXPECT_FALSE(none.usage.reported);
  auto [bad, body3] = decoded("seven");
  EXPECT_FALSE(bad.usage.reported);
}

TEST(BedrockAdapterTest, AnAnswerTheGatewayCannotTranslateIsStillBilledItsOwnUsage) {
  // A 2xx Converse body without output.message (a shape the translator does not know): the caller
  // gets 502, but the provider generated and charged it, so its usage is billed, not 0 output.
  const config::provider_config cfg = bedrock_config();
  bedrock_adapter adapter(cfg);
  request_context ctx = chat_call();
  adapter.decode_body(ctx, 200, R"({"output":{"somethingNew":{}},"stopReason":"end_turn","usage":{"inputTokens":9,"outputTokens":20,"totalTokens":29}})");
  EXPECT_EQ(ctx.details, "upstream_invalid_response");
  EXPECT_TRUE(ctx.usage.reported);
  EXPECT_EQ(ctx.usage.prompt, 9u);
  EXPECT_EQ(ctx.usage.completion, 20u);
}

TEST(BedrockAdapterTest, CacheReadsAndWritesAreRecordedApartAndPricedAtTheirOwnRates) {
  const config::provider_config cfg = bedrock_config();
  bedrock_adapter adapter(cfg);
  request_context ctx = chat_call();
  // A Converse answer whose prompt was 4 plain tokens, 1,500 read from the cache and 36 written.
  const std::string out = adapter.decode_body(ctx, 200, R"({"output":{"message":{"role":"assistant","content":[{"text":"hi"}]}},
      "stopReason":"end_turn","usage":{"inputTokens":4,"outputTokens":7,"totalTokens":1547,
      "cacheReadInputTokens":1500,"cacheWriteInputTokens":36}})");
  EXPECT_NE(out.find("\"prompt_tokens\":1540"), std::string::npos) << out;
  EXPECT_TRUE(ctx.usage.reported);
  EXPECT_EQ(ctx.usage.prompt, 1540u);
  EXPECT_EQ(ctx.usage.cached, 1500u);
  EXPECT_EQ(ctx.usage.cache_write, 36u);
  EXPECT_EQ(ctx.usage.completion, 7u);
  // $3/M input, $0.30/M cache reads, $3.75/M cache writes, $15/M output:
  // 4*3 + 1500*0.3 + 36*3.75 + 7*15 = 12 + 450 + 135 + 105 = 702 millionths of a dollar.
  const config::price_config price{"m", 3, 0.30, 15, 3.75, 0};
  EXPECT_EQ(policy::cost_nano(price, ctx.usage), 702'000);
}

}  // namespace
}  // namespace tollgate::providers
