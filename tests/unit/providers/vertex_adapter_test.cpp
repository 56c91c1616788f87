// SPDX-License-Identifier: Apache-2.0
// The Vertex adapter's stream translator as the pipeline drives it: raw upstream reads in,
// the caller's OpenAI SSE out (the chunk-by-chunk translation is tests/unit/providers/gemini).
#include "providers/vertex/vertex_adapter.hpp"

#include <gtest/gtest.h>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include <filesystem>
#include <fstream>

#include "gateway/core/sse.hpp"
#include "providers/unified.hpp"
#include "tests/unit/testdata.hpp"

namespace tollgate::providers {
namespace {

/// A chat call as the pipeline hands it to the translator (the adapter itself is not built: it
/// would start fetching a Google token at once).
request_context stream_call(std::string body) {
  request_context c;
  c.endpoint = endpoint_kind::chat_completions;
  c.body = std::move(body);
  EXPECT_TRUE(decode_request(c));
  return c;
}

/// The test service account's key file, written into `dir` with a token endpoint nothing listens
/// on (an adapter built on it fetches no token).
std::filesystem::path unreachable_service_account(const std::filesystem::path& dir) {
  std::filesystem::create_directories(dir);
  auto sa = boost::json::parse(tollgate::testing::read_file(tollgate::testing::testdata_dir() /
                                                            "google-auth-service-account/service_account.json"))
                .as_object();
  sa["token_uri"] = "http://127.0.0.1:1/token";
  const auto key = dir / "sa.json";
  std::ofstream(key) << boost::json::serialize(sa);
  return key;
}

TEST(VertexAdapterTest, EventsBeforeAnOversizedOneAreRelayedAndBilled) {
  // One read holds a chunk with text and usage, and the start of an event past the SSE parser's
  // limit (4 MiB): the text goes out and the usage is billed, then the stream fails closed.
  auto ctx = stream_call(R"({"model":"m","messages":[{"role":"user","content":"x"}],"stream":true,"stream_options":{"include_usage":true}})");
  auto t = make_vertex_stream_translator(ctx);
  ASSERT_TRUE(t);
  std::string out;
  t->feed("data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"abcd\"}],\"role\":\"model\"},\"index\":0}],"
          "\"usageMetadata\":{\"promptTokenCount\":7,\"candidatesTokenCount\":900,\"totalTokenCount\":907}}\r\n\r\n"
          "data: " + std::string(5 * 1024 * 1024, 'x'),
          out);
  EXPECT_TRUE(t->failed());
  EXPECT_EQ(ctx.relayed_completion_chars, 4u);
  EXPECT_TRUE(ctx.usage.reported);
  EXPECT_EQ(ctx.usage.prompt, 7u);
  EXPECT_EQ(ctx.usage.completion, 900u);
  sse::parser p;
  std::vector<sse::event> ev;
  ASSERT_TRUE(p.feed(out, ev));
  ASSERT_GE(ev.size(), 2u) << out.substr(0, 400);
  EXPECT_NE(ev.front().data.find("abcd"), std::string::npos);
  EXPECT_EQ(ev.back().name, "error");
  EXPECT_EQ(ctx.error_code, "upstream_error");
  // Nothing more is relayed after the failure, not even the end of a stream.
  std::string more;
  t->finish(true, {}, more);
  EXPECT_TRUE(more.empty()) << more;
}

TEST(VertexAdapterTest, AStreamCutWhileACallIsAssembledBillsTheCallSoFar) {
  // Streamed arguments (willContinue) are sent as one tool call when the call ends. A stream cut
  // before that relayed none of it, but the model generated it: it is counted for billing, both
  // for a reset and for a body that closed before its finishReason.
  const std::string parts =
      "data: {\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[{\"functionCall\":"
      "{\"name\":\"lookup\",\"willContinue\":true}}]}}]}\r\n\r\n"
      "data: {\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[{\"functionCall\":{\"partialArgs\":"
      "[{\"jsonPath\":\"$.city\",\"stringValue\":\"Paris\",\"willContinue\":true}],\"willContinue\":true}}]}}]}\r\n\r\n";
  const std::uint64_t want = std::string("lookup").size() + std::string(R"({"city":"Paris"})").size();
  for (const bool complete : {false, true}) {
    auto ctx = stream_call(R"({"model":"m","messages":[{"role":"user","content":"x"}],"stream":true})");
    auto t = make_vertex_stream_translator(ctx);
    ASSERT_TRUE(t);
    std::string out;
    t->feed(parts, out);
    EXPECT_EQ(ctx.relayed_completion_chars, 0u) << "nothing sent yet";
    t->finish(complete, "connection reset", out);
    EXPECT_TRUE(t->failed());
    EXPECT_EQ(ctx.relayed_completion_chars, want) << "complete=" << complete;
    EXPECT_EQ(out.find("lookup"), std::string::npos) << "the unfinished call is not sent: " << out;
  }
  // The caller left, or a response filter stopped the stream (no finish()): abandon() counts it.
  {
    auto ctx = stream_call(R"({"model":"m","messages":[{"role":"user","content":"x"}],"stream":true})");
    auto t = make_vertex_stream_translator(ctx);
    std::string out;
    t->feed(parts, out);
    t->abandon();
    t->abandon();
    EXPECT_EQ(ctx.relayed_completion_chars, want) << "counted once";
  }
  // Google sent an error chunk while the call was assembled: the stream fails, the call is counted.
  {
    auto ctx = stream_call(R"({"model":"m","messages":[{"role":"user","content":"x"}],"stream":true})");
    auto t = make_vertex_stream_translator(ctx);
    std::string out;
    t->feed(parts + "data: {\"error\":{\"code\":500,\"message\":\"Internal error\",\"status\":\"INTERNAL\"}}\r\n\r\n", out);
    EXPECT_TRUE(t->failed());
    t->finish(true, {}, out);
    EXPECT_EQ(ctx.relayed_completion_chars, want);
  }
  // A call that ended normally is counted once, when it is sent.
  auto ctx = stream_call(R"({"model":"m","messages":[{"role":"user","content":"x"}],"stream":true})");
  auto t = make_vertex_stream_translator(ctx);
  std::string out;
  t->feed(parts +
              "data: {\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[{\"functionCall\":{}}]},"
              "\"finishReason\":\"STOP\"}]}\r\n\r\n",
          out);
  t->finish(true, {}, out);
  EXPECT_FALSE(t->failed());
  EXPECT_EQ(ctx.relayed_completion_chars, want);
  EXPECT_NE(out.find("lookup"), std::string::npos) << out;
}

}  // namespace

// A provider without an endpoint calls Google's host for its location: the us and eu
// multi-regions are aiplatform.<loc>.rep.googleapis.com (PROTOCOLS 4.1), not <loc>-aiplatform.
// A full model name in another location than the provider's is refused with the fix, not sent
// to the wrong host. (The token endpoint is a closed port: no token, no network.)
TEST(VertexAdapterTest, AnAnswerTheGatewayCannotTranslateIsStillBilledItsOwnUsage) {
  // A 2xx body with usage but no candidates and no block reason: the caller gets 502, but the
  // provider charged it, so its usageMetadata is billed, not the prompt estimate alone.
  const auto dir = std::filesystem::temp_directory_path() / ("tollgate-vertex-usage-" + std::to_string(::getpid()));
  const auto key = unreachable_service_account(dir);
  config::provider_config cfg;
  cfg.name = "v";
  cfg.type = "vertex";
  cfg.project = "p";
  cfg.location = "us-central1";
  cfg.credentials_file = key.string();
  cfg.proxy = "none";
  {
    vertex_adapter a(cfg);
    auto ctx = stream_call(R"({"model":"m","messages":[{"role":"user","content":"x"}]})");
    a.decode_body(ctx, 200, R"({"usageMetadata":{"promptTokenCount":9,"candidatesTokenCount":20,"totalTokenCount":29}})");
    EXPECT_EQ(ctx.details, "upstream_invalid_response");
    EXPECT_TRUE(ctx.usage.reported);
    EXPECT_EQ(ctx.usage.prompt, 9u);
    EXPECT_EQ(ctx.usage.completion, 20u);
  }
  std::filesystem::remove_all(dir);
}

TEST(VertexAdapterTest, GooglesHostForTheLocationAndAFullNameElsewhereIsRefused) {
  const auto dir = std::filesystem::temp_directory_path() / ("tollgate-vertex-" + std::to_string(::getpid()));
  const auto key = unreachable_service_account(dir);
  for (const auto& [location, host] : {std::pair<std::string, std::string>{"us", "aiplatform.us.rep.googleapis.com"},
                                       {"eu", "aiplatform.eu.rep.googleapis.com"},
                                       {"europe-west4", "europe-west4-aiplatform.googleapis.com"},
                                       {"global", "aiplatform.googleapis.com"}}) {
    config::provider_config cfg;
    cfg.name = "v";
    cfg.type = "vertex";
    cfg.project = "p";
    cfg.location = location;
    cfg.credentials_file = key.string();
    cfg.proxy = "none";
    vertex_adapter a(cfg);
    route_target here{&a, "gemini-2.5-flash"};
    auto ctx = stream_call(R"({"model":"m","messages":[{"role":"user","content":"x"}]})");
    ctx.target = &here;
    auto r = a.encode(ctx);
    EXPECT_FALSE(r);  // no token: but the URL was checked first
    EXPECT_NE(ctx.reject_message.find("no Vertex AI access token"), std::string::npos) << location << ": " << ctx.reject_message;
    route_target elsewhere{&a, "projects/p/locations/us-east5/publishers/google/models/gemini-2.5-flash"};
    auto ctx2 = stream_call(R"({"model":"m","messages":[{"role":"user","content":"x"}]})");
    ctx2.target = &elsewhere;
    EXPECT_FALSE(a.encode(ctx2));
    EXPECT_EQ(ctx2.reject_status, 502u);
    EXPECT_NE(ctx2.reject_message.find("us-east5-aiplatform.googleapis.com, but provider 'v' calls " + host), std::string::npos)
        << ctx2.reject_message;
  }
  std::filesystem::remove_all(dir);
}

}  // namespace tollgate::providers
