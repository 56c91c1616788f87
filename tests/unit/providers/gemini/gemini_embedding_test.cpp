// SPDX-License-Identifier: Apache-2.0
// OpenAI embeddings ⇄ Vertex `:predict` (PROTOCOLS.md §1.5 ⇄ §4.7).
#include "providers/vertex/gemini.hpp"

#include <boost/json/parse.hpp>
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "tests/unit/testdata.hpp"

namespace tollgate::providers::vertex {
namespace {

namespace json = boost::json;

json::value embedding_fixture() {
  return json::parse(tollgate::testing::read_file(
      tollgate::testing::testdata_dir() /
      "vercel-ai-fixtures/packages/google-vertex/src/__fixtures__/google-vertex-embedding.json"));
}

predict_calls calls_ok(std::string_view request, std::size_t max = default_max_instances) {
  auto r = to_predict_requests(json::parse(request).as_object(), max);
  EXPECT_TRUE(r) << (r ? std::string() : r.error().param + ": " + r.error().message);
  return r ? *r : predict_calls{};
}

translate_error calls_fail(std::string_view request) {
  auto r = to_predict_requests(json::parse(request).as_object());
  EXPECT_FALSE(r);
  return r ? translate_error{} : r.error();
}

std::vector<float> decode_base64_floats(std::string_view b64) {
  auto val = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    return c == '+' ? 62 : c == '/' ? 63 : -1;
  };
  std::vector<unsigned char> bytes;
  std::uint32_t acc = 0;
  int bits = 0;
  for (char c : b64) {
    const int v = val(c);
    if (v < 0) break;
    acc = (acc << 6) | static_cast<std::uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      bytes.push_back(static_cast<unsigned char>((acc >> bits) & 0xff));
    }
  }
  std::vector<float> out(bytes.size() / 4);
  for (std::size_t i = 0; i < out.size(); ++i) {
    const std::uint32_t u = std::uint32_t{bytes[4 * i]} | (std::uint32_t{bytes[4 * i + 1]} << 8) |
                            (std::uint32_t{bytes[4 * i + 2]} << 16) | (std::uint32_t{bytes[4 * i + 3]} << 24);
    std::memcpy(&out[i], &u, sizeof u);
  }
  return out;
}

TEST(GeminiEmbeddingTest, RequestWithSeveralInputsAndDimensions) {
  const predict_calls c = calls_ok(R"({"model":"text-embedding-005","input":["sunny day at the beach","rainy day in the city"],
    "dimensions":256,"user":"u1"})");
  ASSERT_EQ(c.bodies.size(), 1u);
  EXPECT_EQ(c.input_count, 2u);
  EXPECT_FALSE(c.base64);
  EXPECT_EQ(json::value(c.bodies[0]), json::parse(R"({"instances":[{"content":"sunny day at the beach"},
    {"content":"rainy day in the city"}],"parameters":{"outputDimensionality":256}})"));
}

TEST(GeminiEmbeddingTest, SingleStringWithoutParameters) {
  const predict_calls c = calls_ok(R"({"input":"hello","encoding_format":"float"})");
  ASSERT_EQ(c.bodies.size(), 1u);
  EXPECT_EQ(json::value(c.bodies[0]), json::parse(R"({"instances":[{"content":"hello"}]})"));
}

TEST(GeminiEmbeddingTest, InputsAreSplitIntoCalls) {
  const predict_calls c = calls_ok(R"({"input":["a","b","c"]})", 2);
  ASSERT_EQ(c.bodies.size(), 2u);
  EXPECT_EQ(json::value(c.bodies[0]), json::parse(R"({"instances":[{"content":"a"},{"content":"b"}]})"));
  EXPECT_EQ(json::value(c.bodies[1]), json::parse(R"({"instances":[{"content":"c"}]})"));
  EXPECT_EQ(calls_ok(R"({"input":["a","b","c"]})", 1).bodies.size(), 3u);
}

TEST(GeminiEmbeddingTest, BadRequestsAreRefused) {
  EXPECT_EQ(calls_fail(R"({"model":"m"})").code, translate_errc::missing_parameter);
  EXPECT_EQ(calls_fail(R"({"input":""})").param, "input");
  EXPECT_EQ(calls_fail(R"({"input":[]})").param, "input");
  EXPECT_EQ(calls_fail(R"({"input":["a",""]})").param, "input[1]");
  const translate_error tokens = calls_fail(R"({"input":[[1,2,3]]})");
  EXPECT_EQ(tokens.code, translate_errc::unsupported);
  EXPECT_EQ(tokens.param, "input");
  EXPECT_EQ(calls_fail(R"({"input":[1,2,3]})").code, translate_errc::unsupported);
  EXPECT_EQ(calls_fail(R"({"input":"x","dimensions":0})").param, "dimensions");
  EXPECT_EQ(calls_fail(R"({"input":"x","encoding_format":"int8"})").param, "encoding_format");
}

TEST(GeminiEmbeddingTest, FixtureResponseBecomesAnOpenAIList) {
  const predict_calls c = calls_ok(R"({"input":["sunny day at the beach","rainy day in the city"]})");
  const json::value response = embedding_fixture();
  auto r = to_openai_embeddings(c, std::span(&response, 1), "text-embedding-005");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->body.at("object"), "list");
  EXPECT_EQ(r->body.at("model"), "text-embedding-005");
  const json::array& data = r->body.at("data").as_array();
  ASSERT_EQ(data.size(), 2u);
  for (std::size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(data[i].at("object"), "embedding");
    EXPECT_EQ(data[i].at("index"), static_cast<std::int64_t>(i));
    EXPECT_EQ(data[i].at("embedding"), response.at("predictions").as_array()[i].at("embeddings").at("values"));
  }
  EXPECT_EQ(data[0].at("embedding").as_array()[0].as_double(), -0.017999587580561638);
  // token_count 5 + 6.
  EXPECT_EQ(r->body.at("usage"), json::parse(R"({"prompt_tokens":11,"total_tokens":11})"));
  EXPECT_EQ(r->prompt_tokens, 11u);
  EXPECT_TRUE(r->tokens_reported);
}

TEST(GeminiEmbeddingTest, Base64EncodingIsLittleEndianFloat32) {
  const predict_calls c = calls_ok(R"({"input":["a","b"],"encoding_format":"base64"})");
  ASSERT_TRUE(c.base64);
  const json::value response = embedding_fixture();
  auto r = to_openai_embeddings(c, std::span(&response, 1), "m");
  ASSERT_TRUE(r);
  const json::array& values = response.at("predictions").as_array()[1].at("embeddings").at("values").as_array();
  const std::vector<float> decoded = decode_base64_floats(r->body.at("data").as_array()[1].at("embedding").as_string());
  ASSERT_EQ(decoded.size(), values.size());
  for (std::size_t i = 0; i < decoded.size(); ++i) EXPECT_EQ(decoded[i], static_cast<float>(values[i].as_double()));
}

TEST(GeminiEmbeddingTest, SplitCallsAreJoinedInOrder) {
  const predict_calls c = calls_ok(R"({"input":["a","b"]})", 1);
  const json::value whole = embedding_fixture();
  std::vector<json::value> answers;
  for (const json::value& p : whole.at("predictions").as_array())
    answers.push_back(json::object{{"predictions", json::array{p}}});
  auto r = to_openai_embeddings(c, answers, "m");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->body.at("data").as_array()[1].at("index"), 1);
  EXPECT_EQ(r->body.at("data").as_array()[1].at("embedding"),
            whole.at("predictions").as_array()[1].at("embeddings").at("values"));
  EXPECT_EQ(r->prompt_tokens, 11u);
}

TEST(GeminiEmbeddingTest, UnreadableResponsesAreRefused) {
  const predict_calls one = calls_ok(R"({"input":"a"})");
  const json::value fixture = embedding_fixture();  // two predictions for one input
  auto count = to_openai_embeddings(one, std::span(&fixture, 1), "m");
  ASSERT_FALSE(count);
  EXPECT_EQ(count.error().code, translate_errc::invalid_upstream);

  const json::value no_predictions = json::parse(R"({"error":"x"})");
  EXPECT_FALSE(to_openai_embeddings(one, std::span(&no_predictions, 1), "m"));
  EXPECT_FALSE(to_openai_embeddings(one, {}, "m"));

  const json::value no_stats = json::parse(R"({"predictions":[{"embeddings":{"values":[0.5,1]}}]})");
  auto r = to_openai_embeddings(one, std::span(&no_stats, 1), "m");
  ASSERT_TRUE(r);
  EXPECT_FALSE(r->tokens_reported);
  EXPECT_EQ(r->prompt_tokens, 0u);
}

}  // namespace
}  // namespace tollgate::providers::vertex
