// SPDX-License-Identifier: Apache-2.0
// OpenAI embeddings ↔ Bedrock InvokeModel for Titan Text Embeddings v2 and Cohere Embed: model
// families, request bodies (one Titan call per input, Cohere batches of 96), responses back to
// the OpenAI list (shape checked against a recorded OpenAI response), base64, refusals.
#include <gtest/gtest.h>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "providers/bedrock/converse.hpp"

#include "tests/unit/testdata.hpp"

namespace {

namespace json = boost::json;
using namespace tollgate::providers::bedrock;

constexpr std::string_view titan = "amazon.titan-embed-text-v2:0";
constexpr std::string_view cohere_v3 = "cohere.embed-english-v3";
constexpr std::string_view cohere_v4 = "cohere.embed-v4:0";

embedding_calls ok(std::string_view request, std::string_view model) {
  auto r = to_embedding_calls(json::parse(request).as_object(), model);
  if (!r) {
    ADD_FAILURE() << r.error().message;
    return {};
  }
  return *r;
}

translate_error refused(std::string_view request, std::string_view model) {
  auto r = to_embedding_calls(json::parse(request).as_object(), model);
  if (r) {
    ADD_FAILURE() << "accepted";
    return {};
  }
  return r.error();
}

TEST(ConverseEmbeddingsTest, FamiliesByModelId) {
  EXPECT_EQ(find_embedding_family("amazon.titan-embed-text-v2:0"), embedding_family::titan_text_v2);
  EXPECT_EQ(find_embedding_family("cohere.embed-english-v3"), embedding_family::cohere_embed);
  EXPECT_EQ(find_embedding_family("cohere.embed-multilingual-v3"), embedding_family::cohere_embed);
  EXPECT_EQ(find_embedding_family("us.cohere.embed-v4:0"), embedding_family::cohere_embed);
  EXPECT_EQ(find_embedding_family("eu.amazon.titan-embed-text-v2:0"), embedding_family::titan_text_v2);
  EXPECT_EQ(find_embedding_family("amazon.titan-embed-text-v1"), std::nullopt);
  EXPECT_EQ(find_embedding_family("anthropic.claude-3-haiku-20240307-v1:0"), std::nullopt);
  EXPECT_EQ(find_embedding_family("us.anthropic.claude-3-haiku-20240307-v1:0"), std::nullopt);
  EXPECT_EQ(find_embedding_family("arn:aws:bedrock:us-east-1::foundation-model/cohere.embed-v4:0"), std::nullopt);
  EXPECT_EQ(find_embedding_family(""), std::nullopt);
}

TEST(ConverseEmbeddingsTest, TitanOneCallPerInput) {
  embedding_calls c = ok(R"({"model":"e","input":"hello world"})", titan);
  EXPECT_EQ(c.family, embedding_family::titan_text_v2);
  EXPECT_EQ(c.input_count, 1u);
  ASSERT_EQ(c.bodies.size(), 1u);
  EXPECT_EQ(json::serialize(c.bodies[0]), R"({"inputText":"hello world","normalize":true})");

  c = ok(R"({"input":["a","b","c"],"dimensions":512})", titan);
  ASSERT_EQ(c.bodies.size(), 3u);
  EXPECT_EQ(json::serialize(c.bodies[2]), R"({"inputText":"c","dimensions":512,"normalize":true})");
  EXPECT_FALSE(c.base64);
}

TEST(ConverseEmbeddingsTest, CohereBatchesOf96) {
  json::array inputs;
  for (int i = 0; i < 100; ++i) inputs.push_back(json::string("text " + std::to_string(i)));
  json::object req{{"input", inputs}};
  auto r = to_embedding_calls(req, cohere_v3);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->input_count, 100u);
  ASSERT_EQ(r->bodies.size(), 2u);
  EXPECT_EQ(r->bodies[0].at("texts").as_array().size(), 96u);
  EXPECT_EQ(r->bodies[1].at("texts"), json::parse(R"(["text 96","text 97","text 98","text 99"])"));
  EXPECT_EQ(r->bodies[1].at("input_type"), json::value("search_document"));
  EXPECT_EQ(json::serialize(ok(R"({"input":"one"})", cohere_v3).bodies[0]), R"({"texts":["one"],"input_type":"search_document"})");
}

TEST(ConverseEmbeddingsTest, Dimensions) {
  EXPECT_EQ(ok(R"({"input":"x","dimensions":256})", cohere_v4).bodies[0].at("output_dimension"), json::value(256));
  translate_error e = refused(R"({"input":"x","dimensions":300})", titan);
  EXPECT_EQ(e.code, translate_errc::invalid_value);
  EXPECT_EQ(e.param, "dimensions");
  e = refused(R"({"input":"x","dimensions":256})", cohere_v3);
  EXPECT_EQ(e.code, translate_errc::unsupported);
  EXPECT_EQ(e.param, "dimensions");
  EXPECT_EQ(refused(R"({"input":"x","dimensions":"big"})", titan).code, translate_errc::invalid_type);
}

TEST(ConverseEmbeddingsTest, Refusals) {
  EXPECT_EQ(refused(R"({"input":"x"})", "meta.llama3-8b-instruct-v1:0").param, "model");
  EXPECT_EQ(refused(R"({"model":"e"})", titan).code, translate_errc::missing_parameter);
  EXPECT_EQ(refused(R"({"input":""})", titan).param, "input");
  EXPECT_EQ(refused(R"({"input":[]})", titan).param, "input");
  EXPECT_EQ(refused(R"({"input":["a",""]})", titan).param, "input[1]");
  EXPECT_EQ(refused(R"({"input":["a",{}]})", titan).param, "input[1]");
  EXPECT_EQ(refused(R"({"input":[1,2,3]})", titan).code, translate_errc::unsupported);
  EXPECT_EQ(refused(R"({"input":[[1,2],[3]]})", cohere_v3).code, translate_errc::unsupported);
  EXPECT_EQ(refused(R"({"input":5})", titan).code, translate_errc::invalid_type);
  EXPECT_EQ(refused(R"({"input":"x","encoding_format":"int8"})", titan).param, "encoding_format");
}

TEST(ConverseEmbeddingsTest, TitanResponsesBecomeOneList) {
  const embedding_calls c = ok(R"({"input":["first","second"]})", titan);
  const std::vector<invoke_response> rs{
      {json::parse(R"({"embedding":[0.25,-0.5,1],"inputTextTokenCount":3,"embeddingsByType":{"float":[0.25,-0.5,1]}})"), std::nullopt},
      {json::parse(R"({"embedding":[0.125,0,-1],"inputTextTokenCount":4})"), 999},  // the body's count wins
  };
  auto r = to_openai_embeddings(c, rs, "my-embedder");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->body, json::parse(R"({"object":"list","data":[
      {"object":"embedding","index":0,"embedding":[0.25,-0.5,1]},
      {"object":"embedding","index":1,"embedding":[0.125,0,-1]}],
      "model":"my-embedder","usage":{"prompt_tokens":7,"total_tokens":7}})"));
  EXPECT_EQ(r->prompt_tokens, 7u);
  EXPECT_TRUE(r->tokens_reported);
}

TEST(ConverseEmbeddingsTest, CohereResponsesWithHeaderTokenCounts) {
  const embedding_calls c = ok(R"({"input":["a","b","c"]})", cohere_v3);
  const std::vector<invoke_response> rs{
      {json::parse(R"({"embeddings":[[1,2],[3,4],[5,6]],"id":"x","response_type":"embeddings_floats","texts":["a","b","c"]})"), 6}};
  auto r = to_openai_embeddings(c, rs, "cohere");
  ASSERT_TRUE(r) << r.error().message;
  const json::array& data = r->body.at("data").as_array();
  ASSERT_EQ(data.size(), 3u);
  EXPECT_EQ(data[2].at("index"), json::value(2));
  EXPECT_EQ(data[2].at("embedding"), json::parse("[5,6]"));
  EXPECT_EQ(r->body.at("usage"), json::parse(R"({"prompt_tokens":6,"total_tokens":6})"));

  // By-type answers (embed-v4, or embedding_types) and a call without a token count.
  const std::vector<invoke_response> by_type{
      {json::parse(R"({"embeddings":{"float":[[1,2],[3,4],[5,6]]},"response_type":"embeddings_by_type"})"), std::nullopt}};
  r = to_openai_embeddings(c, by_type, "cohere");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->body.at("data").as_array().size(), 3u);
  EXPECT_FALSE(r->tokens_reported);
  EXPECT_EQ(r->prompt_tokens, 0u);
}

TEST(ConverseEmbeddingsTest, CohereBatchesComeBackInInputOrder) {
  json::array inputs;
  for (int i = 0; i < 97; ++i) inputs.push_back(json::string("t"));
  const embedding_calls c = *to_embedding_calls(json::object{{"input", inputs}}, cohere_v3);
  json::array first;
  for (int i = 0; i < 96; ++i) first.push_back(json::array{i});
  std::vector<invoke_response> rs{{json::object{{"embeddings", first}}, 96}, {json::parse(R"({"embeddings":[[96]]})"), 1}};
  auto r = to_openai_embeddings(c, rs, "m");
  ASSERT_TRUE(r);
  const json::array& data = r->body.at("data").as_array();
  ASSERT_EQ(data.size(), 97u);
  for (std::size_t i = 0; i < data.size(); ++i) {
    EXPECT_EQ(data[i].at("index"), json::value(i));
    EXPECT_EQ(data[i].at("embedding").at(0), json::value(static_cast<std::int64_t>(i)));
  }
  EXPECT_EQ(r->prompt_tokens, 97u);
}

TEST(ConverseEmbeddingsTest, Base64IsLittleEndianFloat32) {
  const embedding_calls c = ok(R"({"input":["a","b"],"encoding_format":"base64"})", titan);
  EXPECT_TRUE(c.base64);
  const std::vector<invoke_response> rs{{json::parse(R"({"embedding":[1.0,-2.0],"inputTextTokenCount":1})"), {}},
                                        {json::parse(R"({"embedding":[0.5,0.25,-1.5],"inputTextTokenCount":1})"), {}}};
  auto r = to_openai_embeddings(c, rs, "m");
  ASSERT_TRUE(r);
  // Python: base64.b64encode(struct.pack('<ff', 1.0, -2.0)), struct.pack('<fff', 0.5, 0.25, -1.5)
  EXPECT_EQ(r->body.at("data").at(0).at("embedding"), json::value("AACAPwAAAMA="));
  EXPECT_EQ(r->body.at("data").at(1).at("embedding"), json::value("AAAAPwAAgD4AAMC/"));
}

TEST(ConverseEmbeddingsTest, BadResponsesAreRefused) {
  const embedding_calls c = ok(R"({"input":["a","b"]})", titan);
  const std::vector<invoke_response> one{{json::parse(R"({"embedding":[1]})"), {}}};
  auto r = to_openai_embeddings(c, one, "m");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, translate_errc::invalid_upstream);
  const std::vector<invoke_response> bad{{json::parse(R"({"embedding":[1]})"), {}}, {json::parse(R"({"message":"x"})"), {}}};
  EXPECT_FALSE(to_openai_embeddings(c, bad, "m"));
  const std::vector<invoke_response> nan{{json::parse(R"({"embedding":[1]})"), {}}, {json::parse(R"({"embedding":["x"]})"), {}}};
  EXPECT_FALSE(to_openai_embeddings(c, nan, "m"));
  const embedding_calls cc = ok(R"({"input":["a","b"]})", cohere_v3);
  const std::vector<invoke_response> short_list{{json::parse(R"({"embeddings":[[1]]})"), 1}};
  r = to_openai_embeddings(cc, short_list, "m");
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("1 embeddings for 2 inputs"), std::string::npos) << r.error().message;
}

/// The list has the keys and key types of a recorded OpenAI embeddings response.
TEST(ConverseEmbeddingsTest, ShapeMatchesARealOpenAiResponse) {
  const json::object openai =
      json::parse(tollgate::testing::read_file(tollgate::testing::testdata_dir() /
                                               "vercel-ai-fixtures/packages/openai/src/embedding/__fixtures__/openai-embedding.json"))
          .as_object();
  const embedding_calls c = ok(R"({"input":"x"})", titan);
  const std::vector<invoke_response> rs{{json::parse(R"({"embedding":[0.5],"inputTextTokenCount":1})"), {}}};
  auto r = to_openai_embeddings(c, rs, "m");
  ASSERT_TRUE(r);
  auto keys = [](const json::object& o) {
    std::vector<std::pair<std::string, json::kind>> k;
    for (const auto& kv : o) {
      json::kind kind = kv.value().kind();
      if (kind == json::kind::uint64) kind = json::kind::int64;
      k.emplace_back(std::string(kv.key()), kind);
    }
    return k;
  };
  EXPECT_EQ(keys(r->body), keys(openai));
  EXPECT_EQ(keys(r->body.at("data").at(0).as_object()), keys(openai.at("data").at(0).as_object()));
  EXPECT_EQ(keys(r->body.at("usage").as_object()), keys(openai.at("usage").as_object()));
}

}  // namespace
