// SPDX-License-Identifier: Apache-2.0
#include "providers/openai/openai_compatible_adapter.hpp"
#include "providers/azure/azure_openai_adapter.hpp"

#include <gtest/gtest.h>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include <fstream>
#include <random>
#include <sstream>

#include "gateway/core/sse.hpp"
#include "providers/common/relayed_text.hpp"
#include "providers/unified.hpp"

#include "tests/unit/testdata.hpp"

namespace tollgate::providers {
namespace {
namespace json = boost::json;

std::string read_fixture(const std::string& rel) {
  return tollgate::testing::read_file(tollgate::testing::testdata_dir() /
                                     "vercel-ai-fixtures/packages/openai/src/chat/__fixtures__" / rel);
}

/// The recorded stream as OpenAI framed it (the fixture asked for usage, so its last chunk has it).
std::string recorded_stream() {
  std::istringstream in(read_fixture("openai-text.chunks.txt"));
  std::string line, s;
  while (std::getline(in, line))
    if (!line.empty()) s += "data: " + line + "\n\n";
  return s + "data: [DONE]\n\n";
}

struct fixture {
  config::provider_config cfg;
  std::unique_ptr<openai_compatible_adapter> adapter;
  route_target target;
  explicit fixture(std::string base = "https://api.example.com/v1/") {
    cfg.name = "openai";
    cfg.type = "openai_compatible";
    cfg.base_url = std::move(base);
    cfg.api_key = "sk-provider";
    cfg.proxy = "none";
    cfg.headers = {{"OpenAI-Organization", "org-1"}};
    adapter = std::make_unique<openai_compatible_adapter>(cfg);
    target = {adapter.get(), "gpt-4.1-nano"};
  }
  request_context ctx(std::string body, endpoint_kind e = endpoint_kind::chat_completions) {
    request_context c;
    c.endpoint = e;
    c.body = std::move(body);
    EXPECT_TRUE(decode_request(c));
    c.target = &target;
    return c;
  }
};

/// The body an Azure deployment on API version `version` is sent for `request` (with the
/// gateway's output cap `cap` when not 0).
json::object azure_body_sent(std::string version, std::string request, std::uint64_t cap = 0) {
  config::provider_config cfg;
  cfg.name = "azure";
  cfg.type = "azure_openai";
  cfg.base_url = "https://res.openai.azure.com";
  cfg.api_key = "azure-key";
  cfg.proxy = "none";
  cfg.api_version = std::move(version);
  azure_openai_adapter adapter(cfg);
  route_target target{&adapter, "prod-gpt4o"};
  request_context ctx;
  ctx.endpoint = endpoint_kind::chat_completions;
  ctx.body = std::move(request);
  EXPECT_TRUE(decode_request(ctx));
  ctx.target = &target;
  ctx.output_cap = cap;
  auto r = adapter.encode(ctx);
  EXPECT_TRUE(r);
  return r ? json::parse(r->body).as_object() : json::object();
}

std::string header(const upstream_request& r, std::string_view name) {
  for (auto& [k, v] : r.headers)
    if (k == name) return v;
  return {};
}

TEST(OpenAIAdapterTest, EncodeRewritesModelAndForcesUsageOnStreams) {
  fixture f;
  auto ctx = f.ctx(R"({"model":"public","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_obfuscation":false}})");
  auto r = f.adapter->encode(ctx);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->scheme, "https");
  EXPECT_EQ(r->host, "api.example.com");
  EXPECT_EQ(r->port, "443");
  EXPECT_EQ(r->target, "/v1/chat/completions");
  auto body = json::parse(r->body).as_object();
  EXPECT_EQ(body.at("model").as_string(), "gpt-4.1-nano");
  EXPECT_EQ(body.at("stream_options").at("include_usage").as_bool(), true);
  EXPECT_EQ(body.at("stream_options").at("include_obfuscation").as_bool(), false);  // kept
  EXPECT_EQ(header(*r, "Authorization"), "Bearer sk-provider");
  EXPECT_EQ(header(*r, "OpenAI-Organization"), "org-1");
  EXPECT_EQ(header(*r, "Accept"), "text/event-stream");
}

TEST(OpenAIAdapterTest, EncodeEmbeddingsPathAndPorts) {
  fixture f("http://127.0.0.1:8000/v1");
  auto ctx = f.ctx(R"({"model":"e","input":"x"})", endpoint_kind::embeddings);
  auto r = f.adapter->encode(ctx);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->port, "8000");
  EXPECT_EQ(r->target, "/v1/embeddings");
  EXPECT_FALSE(json::parse(r->body).as_object().contains("stream_options"));
  EXPECT_THROW(fixture("ftp://x"), std::invalid_argument);
}

TEST(OpenAIAdapterTest, ErrorBodiesOfEveryServerBecomeOpenAIShape) {
  auto check = [](unsigned status, std::string_view body, std::string_view message, std::string_view type, json::value code) {
    auto v = json::parse(normalize_error_body(status, body));
    auto& e = v.at("error");
    EXPECT_EQ(e.at("message").as_string(), message) << body;
    EXPECT_EQ(e.at("type").as_string(), type) << body;
    EXPECT_EQ(e.at("code"), code) << body;
    EXPECT_TRUE(e.as_object().contains("param")) << body;
  };
  check(429, R"({"error":{"message":"You exceeded your current quota","type":"insufficient_quota","param":null,"code":"insufficient_quota"}})",
        "You exceeded your current quota", "insufficient_quota", "insufficient_quota");
  check(400, R"({"object":"error","message":"bad input","type":"BadRequestError","param":null,"code":400})", "bad input",
        "BadRequestError", "400");  // older vLLM, numeric code
  check(503, R"({"error":{"code":503,"message":"Loading model","type":"unavailable_error"}})", "Loading model",
        "unavailable_error", "503");  // llama.cpp
  check(422, R"({"error":"Input validation error","error_type":"validation"})", "Input validation error", "validation", nullptr);  // TGI
  check(502, "<html>bad gateway</html>", "<html>bad gateway</html>", "server_error", nullptr);
  check(401, "", "upstream answered status 401", "authentication_error", nullptr);
}

TEST(OpenAIAdapterTest, RecordedFixtureErrorsKeepTheirFields) {
  auto body = read_fixture("reasoning-model-legacy-parameter-error.json");
  auto v = json::parse(body);
  const json::value* err = v.is_object() ? v.as_object().if_contains("error") : nullptr;
  ASSERT_NE(err, nullptr) << body;
  auto out = json::parse(normalize_error_body(400, json::serialize(v)));
  EXPECT_EQ(out.at("error").at("code").as_string(), "unsupported_parameter");
  EXPECT_EQ(out.at("error").at("param").as_string(), "max_tokens");
}

std::string translate(fixture& f, request_context& ctx, std::string_view in, std::mt19937* rng) {
  auto t = f.adapter->make_stream_translator(ctx);
  std::string out;
  std::size_t pos = 0;
  while (pos < in.size()) {
    std::size_t n = rng ? 1 + (*rng)() % 300 : in.size();
    t->feed(in.substr(pos, n), out);
    pos += n;
  }
  t->finish(true, {}, out);
  EXPECT_FALSE(t->failed());
  return out;
}

TEST(OpenAIAdapterTest, StreamWithUsageRequestedPassesBytesThroughAndReadsUsage) {
  fixture f;
  const auto in = recorded_stream();
  std::mt19937 rng(7);
  for (int round = 0; round < 20; ++round) {
    auto ctx = f.ctx(R"({"model":"m","messages":[{"role":"user","content":"x"}],"stream":true,"stream_options":{"include_usage":true}})");
    auto out = translate(f, ctx, in, round ? &rng : nullptr);
    EXPECT_EQ(out, in);
    EXPECT_TRUE(ctx.usage.reported);
    EXPECT_GT(ctx.usage.prompt, 0u);
    EXPECT_GT(ctx.usage.completion, 0u);
    EXPECT_GT(ctx.relayed_completion_chars, 0u);
  }
}

TEST(OpenAIAdapterTest, AnEventOfSeveralDataLinesReachesTheCallerAsOneEventItCanRead) {
  // Legal SSE: one event's JSON over two data lines. Relayed as one `data:` line it would hold a
  // raw newline, and the caller would read the second line as a field of its own and drop it.
  fixture f;
  for (const char* body : {R"({"model":"m","messages":[{"role":"user","content":"x"}],"stream":true,"stream_options":{"include_usage":true}})",
                           R"({"model":"m","messages":[{"role":"user","content":"x"}],"stream":true})"}) {
    auto ctx = f.ctx(body);
    const std::string in =
        "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}],\n"
        "data: \"usage\":null}\n\n"
        "data: [DONE]\n\n";
    const std::string out = translate(f, ctx, in, nullptr);
    tollgate::sse::parser p(1 << 20);
    std::vector<tollgate::sse::event> events;
    ASSERT_TRUE(p.feed(out, events)) << out;
    ASSERT_EQ(events.size(), 2u) << out;
    boost::system::error_code ec;
    const auto v = json::parse(events[0].data, ec);
    ASSERT_FALSE(ec) << body << ": " << out;
    EXPECT_EQ(v.at("choices").at(0).at("delta").at("content").as_string(), "hi");
    EXPECT_EQ(events[1].data, "[DONE]");
  }
}

TEST(OpenAIAdapterTest, AUsageObjectSilentOnACountKeepsWhatAnEarlierOneSaid) {
  // A server that sends usage in more than one chunk (the prompt first, the output at the end):
  // the second object does not reset the prompt to 0.
  fixture f;
  auto ctx = f.ctx(R"({"model":"m","messages":[{"role":"user","content":"x"}],"stream":true,"stream_options":{"include_usage":true}})");
  const std::string in =
      "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}],"
      "\"usage\":{\"prompt_tokens\":11,\"prompt_tokens_details\":{\"cached_tokens\":8}}}\n\n"
      "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"completion_tokens\":3}}\n\n"
      "data: [DONE]\n\n";
  translate(f, ctx, in, nullptr);
  EXPECT_TRUE(ctx.usage.reported);
  EXPECT_EQ(ctx.usage.prompt, 11u);
  EXPECT_EQ(ctx.usage.cached, 8u);
  EXPECT_EQ(ctx.usage.completion, 3u);
}

TEST(OpenAIAdapterTest, StreamWithoutUsageRequestedHidesItButStillCountsIt) {
  fixture f;
  const auto in = recorded_stream();
  std::mt19937 rng(11);
  auto ctx_full = f.ctx(R"({"model":"m","messages":[{"role":"user","content":"x"}],"stream":true,"stream_options":{"include_usage":true}})");
  translate(f, ctx_full, in, nullptr);
  for (int round = 0; round < 20; ++round) {
    auto ctx = f.ctx(R"({"model":"m","messages":[{"role":"user","content":"x"}],"stream":true})");
    auto out = translate(f, ctx, in, round ? &rng : nullptr);
    sse::parser p;
    std::vector<sse::event> events;
    ASSERT_TRUE(p.feed(out, events));
    ASSERT_FALSE(events.empty());
    EXPECT_EQ(events.back().data, "[DONE]");
    std::string text;
    for (std::size_t i = 0; i + 1 < events.size(); ++i) {
      auto v = json::parse(events[i].data).as_object();
      EXPECT_FALSE(v.contains("usage")) << events[i].data;
      EXPECT_FALSE(v.at("choices").as_array().empty()) << "usage-only chunk must be dropped";
      for (auto& c : v.at("choices").as_array())
        if (auto d = c.as_object().at("delta").as_object().if_contains("content"); d && d->is_string()) text += d->as_string();
    }
    EXPECT_FALSE(text.empty());
    EXPECT_EQ(ctx.usage.prompt, ctx_full.usage.prompt);
    EXPECT_EQ(ctx.usage.completion, ctx_full.usage.completion);
  }
}

TEST(OpenAIAdapterTest, MidStreamErrorsBecomeErrorEvents) {
  fixture f;
  for (std::string bad : {std::string("data: {\"error\":{\"message\":\"overloaded\",\"type\":\"server_error\",\"code\":\"x\"}}\n\n"),
                          std::string("error: {\"code\":500,\"message\":\"llama boom\",\"type\":\"server_error\"}\n\n")}) {
    auto ctx = f.ctx(R"({"model":"m","messages":[{"role":"user","content":"x"}],"stream":true})");
    auto t = f.adapter->make_stream_translator(ctx);
    std::string out;
    t->feed("data: {\"id\":\"1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}\n\n" + bad + "data: [DONE]\n\n", out);
    EXPECT_TRUE(t->failed());
    sse::parser p;
    std::vector<sse::event> ev;
    ASSERT_TRUE(p.feed(out, ev));
    ASSERT_EQ(ev.size(), 2u) << out;  // the content chunk, then the error; nothing after it
    EXPECT_EQ(ev[1].name, "error");
    auto err = json::parse(ev[1].data).at("error");
    EXPECT_TRUE(err.at("message").as_string() == "overloaded" || err.at("message").as_string() == "llama boom");
  }
}

TEST(RelayedTextTest, ToolCallNamesAndArgumentsCountAsRelayedOutputForEveryProvider) {
  // The Bedrock and Vertex translators emit tool calls as OpenAI chunks and count them with the
  // same function as the OpenAI relay: a tool-use stream cut before its usage is billed for them.
  request_context ctx;
  const auto chunk = boost::json::parse(R"({"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"t1",
      "type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}]}}]})")
                         .as_object();
  count_relayed_text(ctx, chunk);
  EXPECT_EQ(ctx.relayed_completion_chars, std::string("get_weather").size() + std::string(R"({"city":"Paris"})").size());
  EXPECT_TRUE(ctx.captured_response.empty());  // captured only for teams that capture text
  ctx.capture_text = true;
  const auto text = boost::json::parse(R"({"choices":[{"index":0,"delta":{"content":"Sunny","reasoning_content":"hm"}}]})").as_object();
  count_relayed_text(ctx, text);
  EXPECT_EQ(ctx.relayed_completion_chars, 11u + 16u + 5u + 2u);
  EXPECT_EQ(ctx.captured_response, "Sunnyhm");
  // The deprecated single function call (servers that still stream `function_call`).
  const auto legacy = boost::json::parse(R"({"choices":[{"index":0,"delta":{"function_call":{"name":"f","arguments":"{}"}}}]})").as_object();
  count_relayed_text(ctx, legacy);
  EXPECT_EQ(ctx.relayed_completion_chars, 11u + 16u + 5u + 2u + 1u + 2u);
  // Relayed CJK text counts about a token a character, as the prompt estimate does.
  const auto cjk = boost::json::parse("{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"\xE4\xBD\xA0\xE5\xA5\xBD\"}}]}").as_object();
  count_relayed_text(ctx, cjk);
  EXPECT_EQ(ctx.relayed_completion_chars, 11u + 16u + 5u + 2u + 1u + 2u + 8u);
}

TEST(RelayedTextTest, ReasoningSentUnderBothNamesIsCountedAndCapturedOnce) {
  // vLLM fills `reasoning` and its deprecated alias `reasoning_content` with the same text: a
  // stream cut before its usage was billed that reasoning twice.
  request_context ctx;
  ctx.capture_text = true;
  count_relayed_text(ctx, boost::json::parse(R"({"choices":[{"index":0,"delta":{"reasoning":"abcd","reasoning_content":"abcd"}}]})")
                              .as_object());
  EXPECT_EQ(ctx.relayed_completion_chars, 4u);
  EXPECT_EQ(ctx.captured_response, "abcd");
  // Either name alone counts (DeepSeek and older vLLM send only reasoning_content).
  count_relayed_text(ctx, boost::json::parse(R"({"choices":[{"index":0,"delta":{"reasoning_content":"xy"}}]})").as_object());
  count_relayed_text(ctx, boost::json::parse(R"({"choices":[{"index":0,"delta":{"reasoning":"z"}}]})").as_object());
  EXPECT_EQ(ctx.relayed_completion_chars, 7u);
  EXPECT_EQ(ctx.captured_response, "abcdxyz");
}

TEST(OpenAIAdapterTest, BrokenOrUnterminatedStreamsEndProperly) {
  fixture f;
  auto ctx = f.ctx(R"({"model":"m","messages":[{"role":"user","content":"x"}],"stream":true})");
  auto t = f.adapter->make_stream_translator(ctx);
  std::string out;
  t->feed("data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"abcd\"}}]}\n\n", out);
  t->finish(false, "timeout", out);
  EXPECT_TRUE(t->failed());
  EXPECT_NE(out.find("event: error\ndata: {\"error\":{"), std::string::npos) << out;
  EXPECT_NE(out.find("upstream_timeout"), std::string::npos);
  EXPECT_EQ(ctx.relayed_completion_chars, 4u);

  auto ctx2 = f.ctx(R"({"model":"m","messages":[{"role":"user","content":"x"}],"stream":true})");
  auto t2 = f.adapter->make_stream_translator(ctx2);
  std::string out2;
  t2->feed("data: {\"choices\":[]}\n\n", out2);
  t2->finish(true, {}, out2);  // ended cleanly without [DONE]
  EXPECT_FALSE(t2->failed());
  EXPECT_TRUE(out2.ends_with("data: [DONE]\n\n"));

  auto ctx3 = f.ctx(R"({"model":"m","messages":[{"role":"user","content":"x"}],"stream":true})");
  auto t3 = f.adapter->make_stream_translator(ctx3);
  std::string out3;
  t3->feed("data: not json\n\n", out3);
  EXPECT_TRUE(t3->failed());
}

TEST(OpenAIAdapterTest, EventsBeforeAnOversizedOneAreRelayedAndBilled) {
  // One read holds a text chunk, the usage chunk and the start of an event past the parser's
  // limit (4 MiB): the first two go out and are billed, then the stream fails.
  fixture f;
  auto ctx = f.ctx(R"({"model":"m","messages":[{"role":"user","content":"x"}],"stream":true,"stream_options":{"include_usage":true}})");
  auto t = f.adapter->make_stream_translator(ctx);
  std::string out;
  t->feed("data: {\"id\":\"1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"abcd\"}}]}\n\n"
          "data: {\"id\":\"1\",\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":900}}\n\n"
          "data: " + std::string(5 * 1024 * 1024, 'x'),
          out);
  EXPECT_TRUE(t->failed());
  EXPECT_EQ(ctx.relayed_completion_chars, 4u);
  EXPECT_TRUE(ctx.usage.reported);
  EXPECT_EQ(ctx.usage.completion, 900u);
  sse::parser p;
  std::vector<sse::event> ev;
  ASSERT_TRUE(p.feed(out, ev));
  ASSERT_EQ(ev.size(), 3u) << out.substr(0, 400);
  EXPECT_NE(ev[0].data.find("abcd"), std::string::npos);
  EXPECT_NE(ev[1].data.find("\"usage\""), std::string::npos);
  EXPECT_EQ(ev[2].name, "error");
  EXPECT_EQ(ctx.error_code, "upstream_error");
}

TEST(OpenAIAdapterTest, NonStreamUsageIsReadFromTheRecordedResponse) {
  fixture f;
  auto ctx = f.ctx(R"({"model":"m","messages":[{"role":"user","content":"x"}]})");
  auto body = read_fixture("openai-text.json");
  auto out = f.adapter->decode_body(ctx, 200, body);
  EXPECT_EQ(out, body);  // success bodies pass through untouched
  auto expected = json::parse(body).at("usage");
  EXPECT_TRUE(ctx.usage.reported);
  EXPECT_EQ(ctx.usage.prompt, expected.at("prompt_tokens").to_number<std::uint64_t>());
  EXPECT_EQ(ctx.usage.completion, expected.at("completion_tokens").to_number<std::uint64_t>());
}

TEST(OpenAIAdapterTest, UsageScanIgnoresLookalikesInsideStrings) {
  usage_counts u;
  EXPECT_TRUE(scan_usage(R"({"choices":[{"message":{"content":"say \"usage\": {\"prompt_tokens\":99}"}}],"usage":{"prompt_tokens":3,"completion_tokens":4}})", u));
  EXPECT_EQ(u.prompt, 3u);
  EXPECT_EQ(u.completion, 4u);
  usage_counts none;
  EXPECT_FALSE(scan_usage(R"({"choices":[]})", none));
  EXPECT_FALSE(scan_usage(R"({"usage":null})", none));
}

/// scan_usage reads a usage object without building it; read_usage reads the parsed object.
/// Both must agree on every body, including the odd ones.
void expect_scan_matches_dom(const std::string& body) {
  SCOPED_TRACE(body.substr(0, 200));
  usage_counts scanned, read;
  const bool found = scan_usage(body, scanned);
  const auto v = json::parse(body);
  const json::value* u = v.as_object().if_contains("usage");
  const bool expected = u && read_usage(*u, read);
  ASSERT_EQ(found, expected);
  EXPECT_EQ(scanned.prompt, read.prompt);
  EXPECT_EQ(scanned.completion, read.completion);
  EXPECT_EQ(scanned.cached, read.cached);
  EXPECT_EQ(scanned.reported, read.reported);
}

TEST(OpenAIAdapterTest, UsageScanReadsWhatTheParsedObjectHolds) {
  const auto root = tollgate::testing::testdata_dir() / "vercel-ai-fixtures/packages";
  for (const char* rel : {"openai/src/chat/__fixtures__/openai-text.json",
                          "openai/src/embedding/__fixtures__/openai-embedding.json",
                          "openai-compatible/src/chat/__fixtures__/xai-tool-call.json"})
    expect_scan_matches_dom(tollgate::testing::read_file(root / rel));
  for (const char* body : {
           // the benchmark's body: both detail objects, cached tokens 0
           R"({"id":"x","usage":{"prompt_tokens":19,"completion_tokens":22,"total_tokens":41,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0}},"service_tier":"default"})",
           R"({"usage":{"prompt_tokens":1200,"completion_tokens":5,"prompt_tokens_details":{"cached_tokens":1024}}})",
           // cached_tokens counts only inside prompt_tokens_details
           R"({"usage":{"prompt_tokens":7,"cached_tokens":99,"completion_tokens_details":{"cached_tokens":98}}})",
           // details after the counts, nested arrays and objects skipped, whitespace anywhere
           R"({ "usage" : { "extra" : [ {"prompt_tokens": 5}, [1, 2] ], "prompt_tokens_details" : { "x" : { "cached_tokens" : 4 }, "cached_tokens" : 3 } , "completion_tokens" : 2 , "prompt_tokens" : 9 } })",
           // counts that are not non-negative integers read as 0
           R"({"usage":{"prompt_tokens":-4,"completion_tokens":2.5,"prompt_tokens_details":{"cached_tokens":"3"}}})",
           R"({"usage":{"prompt_tokens":null,"completion_tokens":true,"prompt_tokens_details":[{"cached_tokens":3}]}})",
           R"({"usage":{"prompt_tokens":18446744073709551615,"completion_tokens":1e3}})",
           // escaped and overlong keys
           R"({"usage":{"prompt\u005ftokens":6,"completion_tokens_but_a_much_longer_key_than_any_we_read":8,"completion_tokens":3}})",
           R"({"usage":{}})",
       })
    expect_scan_matches_dom(body);
}

TEST(OpenAIAdapterTest, UsageScanSkipsAMalformedUsageAndStopsAtItsEnd) {
  usage_counts u;
  // A usage object cut short is not read; a later well-formed one is.
  EXPECT_FALSE(scan_usage(R"({"usage":{"prompt_tokens":3,"completion_tokens":)", u));
  EXPECT_FALSE(u.reported);
  EXPECT_TRUE(scan_usage(R"({"a":{"usage":{"prompt_tokens":1,}},"usage":{"prompt_tokens":2,"completion_tokens":5}})", u));
  EXPECT_EQ(u.prompt, 2u);
  EXPECT_EQ(u.completion, 5u);
  // What follows the object, even if it is not JSON, is never read.
  usage_counts v;
  EXPECT_TRUE(scan_usage(R"({"usage":{"prompt_tokens":8,"completion_tokens":1}}garbage{{{)", v));
  EXPECT_EQ(v.prompt, 8u);
  // A failed scan leaves earlier counts alone.
  usage_counts w;
  w.prompt = 11;
  EXPECT_FALSE(scan_usage(R"({"usage":{"prompt_tokens":1,"completion_tokens":2)", w));
  EXPECT_EQ(w.prompt, 11u);
}

}  // namespace
}  // namespace tollgate::providers

namespace tollgate::providers::testing {

TEST(AzureOpenaiAdapterTest, DatedApiTargetsTheDeploymentWithItsApiVersion) {
  EXPECT_EQ(azure_openai_adapter::target_for("", "2024-10-21", "prod-gpt4o", endpoint_kind::chat_completions),
            "/openai/deployments/prod-gpt4o/chat/completions?api-version=2024-10-21");
  EXPECT_EQ(azure_openai_adapter::target_for("/base", "2025-04-01-preview", "emb", endpoint_kind::embeddings),
            "/base/openai/deployments/emb/embeddings?api-version=2025-04-01-preview");
}

TEST(AzureOpenaiAdapterTest, DeploymentNamesAreEncodedIntoThePath) {
  EXPECT_EQ(azure_openai_adapter::target_for("", "2024-10-21", "a/b?c", endpoint_kind::chat_completions),
            "/openai/deployments/a%2Fb%3Fc/chat/completions?api-version=2024-10-21");
}

TEST(AzureOpenaiAdapterTest, V1ApiHasNoDeploymentInThePathAndNoApiVersion) {
  EXPECT_EQ(azure_openai_adapter::target_for("", "v1", "prod", endpoint_kind::chat_completions), "/openai/v1/chat/completions");
  EXPECT_EQ(azure_openai_adapter::target_for("", "v1", "prod", endpoint_kind::embeddings), "/openai/v1/embeddings");
}

TEST(AzureOpenaiAdapterTest, StreamOptionsGoOnlyToApiVersionsThatAcceptThem) {
  // Azure answers 400 "Unrecognized request argument supplied: stream_options" before
  // 2024-09-01-preview: such streams go without it (billed from counted output), the caller's
  // own stream_options included.
  EXPECT_FALSE(azure_openai_adapter::accepts_stream_options("2024-02-01"));
  EXPECT_FALSE(azure_openai_adapter::accepts_stream_options("2024-06-01"));
  EXPECT_FALSE(azure_openai_adapter::accepts_stream_options("2024-08-01-preview"));
  EXPECT_TRUE(azure_openai_adapter::accepts_stream_options("2024-09-01-preview"));
  EXPECT_TRUE(azure_openai_adapter::accepts_stream_options("2024-10-21"));
  EXPECT_TRUE(azure_openai_adapter::accepts_stream_options("2025-04-01-preview"));
  EXPECT_TRUE(azure_openai_adapter::accepts_stream_options("v1"));

  auto body_sent = [](std::string version, std::string request) { return azure_body_sent(std::move(version), std::move(request)); };
  const std::string stream = R"({"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true})";
  const std::string asked =
      R"({"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true}})";
  EXPECT_FALSE(body_sent("2024-06-01", stream).contains("stream_options"));
  EXPECT_FALSE(body_sent("2024-06-01", asked).contains("stream_options"));
  EXPECT_EQ(body_sent("2024-10-21", stream).at("stream_options").at("include_usage").as_bool(), true);
  EXPECT_EQ(body_sent("v1", stream).at("stream_options").at("include_usage").as_bool(), true);
}

TEST(OutputCapTest, TheGatewaysCapGoesUpstreamUnderTheNameEachProviderTakes) {
  // A call that gave no max_tokens but counts against a budget or token limit is held to the
  // output it reserved (policy::engine::admit sets output_cap): OpenAI under
  // max_completion_tokens (its reasoning models refuse max_tokens), local servers and old Azure
  // API versions under max_tokens, newer Azure under max_completion_tokens.
  const std::string call = R"({"model":"m","messages":[{"role":"user","content":"hi"}]})";
  auto openai_body = [&](std::string base, std::uint64_t cap, endpoint_kind e = endpoint_kind::chat_completions,
                         std::string request = "") {
    fixture f(std::move(base));
    auto ctx = f.ctx(request.empty() ? call : request, e);
    ctx.output_cap = cap;
    auto r = f.adapter->encode(ctx);
    EXPECT_TRUE(r);
    return r ? json::parse(r->body).as_object() : json::object();
  };
  auto b = openai_body("https://api.openai.com/v1", 512);
  EXPECT_EQ(b.at("max_completion_tokens").as_int64(), 512);
  EXPECT_FALSE(b.contains("max_tokens"));
  b = openai_body("http://127.0.0.1:8000/v1", 512);  // vLLM, llama.cpp, Ollama, TGI
  EXPECT_EQ(b.at("max_tokens").as_int64(), 512);
  EXPECT_FALSE(b.contains("max_completion_tokens"));
  // No cap: nothing added; embeddings never get one.
  EXPECT_FALSE(openai_body("https://api.openai.com/v1", 0).contains("max_completion_tokens"));
  EXPECT_FALSE(openai_body("https://api.openai.com/v1", 0).contains("max_tokens"));
  const auto emb = openai_body("https://api.openai.com/v1", 512, endpoint_kind::embeddings, R"({"model":"e","input":"x"})");
  EXPECT_FALSE(emb.contains("max_completion_tokens") || emb.contains("max_tokens"));

  auto azure_body = [&](std::string version) { return azure_body_sent(std::move(version), call, 300); };
  EXPECT_EQ(azure_body("2024-06-01").at("max_tokens").as_int64(), 300);
  EXPECT_FALSE(azure_body("2024-06-01").contains("max_completion_tokens"));
  EXPECT_EQ(azure_body("2024-10-21").at("max_completion_tokens").as_int64(), 300);
  EXPECT_FALSE(azure_body("2024-10-21").contains("max_tokens"));
  EXPECT_EQ(azure_body("v1").at("max_completion_tokens").as_int64(), 300);

  // A fallback to another kind of provider: the first target's name for the cap is taken back.
  request_context ctx;
  ctx.endpoint = endpoint_kind::chat_completions;
  ctx.body = call;
  ASSERT_TRUE(decode_request(ctx));
  ctx.output_cap = 64;
  apply_output_cap(ctx, "max_completion_tokens");
  apply_output_cap(ctx, "max_tokens");
  EXPECT_EQ(ctx.request_json.at("max_tokens").to_number<std::int64_t>(), 64);
  EXPECT_FALSE(ctx.request_json.contains("max_completion_tokens"));
}

TEST(AzureOpenaiAdapterTest, AzureErrorBodiesBecomeOpenaiShaped) {
  // 429 with a string code and no type; 400 content filter with type null and extra members.
  auto throttled = boost::json::parse(normalize_error_body(429, R"({"error":{"code":"429","message":"Requests ... exceeded token rate limit"}})"));
  EXPECT_EQ(throttled.at("error").at("code").as_string(), "429");
  EXPECT_EQ(throttled.at("error").at("type").as_string(), "rate_limit_error");
  auto filtered = boost::json::parse(normalize_error_body(
      400, R"({"error":{"message":"filtered","type":null,"param":"prompt","code":"content_filter","status":400,"innererror":{"code":"ResponsibleAIPolicyViolation"}}})"));
  const auto& e = filtered.at("error").as_object();
  EXPECT_EQ(e.at("code").as_string(), "content_filter");
  EXPECT_EQ(e.at("param").as_string(), "prompt");
  EXPECT_EQ(e.at("type").as_string(), "invalid_request_error");
  EXPECT_EQ(e.size(), 4u);  // message, type, param, code
}

}  // namespace tollgate::providers::testing
