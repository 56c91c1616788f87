// SPDX-License-Identifier: Apache-2.0
#include "gateway/response_head.hpp"

#include <gtest/gtest.h>

#include <boost/beast/http/fields.hpp>
#include <boost/json/parse.hpp>

#include "gateway/access_log.hpp"
#include "gateway/core/provider.hpp"
#include "gateway/pipeline.hpp"

namespace tollgate::gateway {
namespace {
namespace http = boost::beast::http;

TEST(ResponseHeadTest, FixedLengthAndChunkedHeads) {
  header_list extra{{"Retry-After", "2"}};
  EXPECT_EQ(format_response_head({429, "application/json", "00ab", &extra, 17, true, false}),
            "HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nx-request-id: 00ab\r\nRetry-After: 2\r\n"
            "Content-Length: 17\r\nConnection: keep-alive\r\n\r\n");
  EXPECT_EQ(format_response_head({200, "text/event-stream", "00ab", nullptr, std::nullopt, false, true}),
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nx-request-id: 00ab\r\nTransfer-Encoding: chunked\r\n"
            "Connection: close\r\n\r\n");
}

TEST(ResponseHeadTest, FieldsWithLineBreaksAreDropped) {
  header_list extra{{"X-Evil", "a\r\nSet-Cookie: x=1"}, {"X-Ok", "fine"}, {"Bad\nName", "v"}};
  auto head = format_response_head({200, "application/json", "1", &extra, 0, true, false});
  EXPECT_EQ(head.find("Set-Cookie"), std::string::npos);
  EXPECT_EQ(head.find("Bad"), std::string::npos);
  EXPECT_NE(head.find("X-Ok: fine\r\n"), std::string::npos);
}

TEST(ResponseHeadTest, RateFiguresBecomeOpenAIsHeadersAndReplaceTheUpstreams) {
  header_list extra{{"X-RateLimit-Remaining-Requests", "9999"}, {"x-ratelimit-limit-tokens", "200000"}, {"X-Ok", "1"}};
  rate_figures r;
  r.limit_requests = 600;
  r.remaining_requests = 599;
  r.limit_tokens = 100000;
  r.remaining_tokens = 99936;
  r.reset_ms = 61'500;
  auto head = format_response_head({200, "application/json", "1", &extra, 2, true, false, &r});
  EXPECT_EQ(head,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nx-request-id: 1\r\nX-Ok: 1\r\n"
            "x-ratelimit-limit-requests: 600\r\nx-ratelimit-remaining-requests: 599\r\nx-ratelimit-reset-requests: 1m1.5s\r\n"
            "x-ratelimit-limit-tokens: 100000\r\nx-ratelimit-remaining-tokens: 99936\r\nx-ratelimit-reset-tokens: 1m1.5s\r\n"
            "Content-Length: 2\r\nConnection: keep-alive\r\n\r\n");
  // Only the kinds that are limited; with none, the upstream's pass through as they came.
  rate_figures tokens_only;
  tokens_only.limit_tokens = 50;
  tokens_only.remaining_tokens = 0;
  tokens_only.reset_ms = 250;
  head = format_response_head({429, "application/json", "1", &extra, 2, true, false, &tokens_only});
  EXPECT_EQ(head.find("-requests"), std::string::npos);
  EXPECT_NE(head.find("x-ratelimit-limit-tokens: 50\r\nx-ratelimit-remaining-tokens: 0\r\nx-ratelimit-reset-tokens: 250ms\r\n"),
            std::string::npos);
  rate_figures none;
  head = format_response_head({200, "application/json", "1", &extra, 2, true, false, &none});
  EXPECT_NE(head.find("X-RateLimit-Remaining-Requests: 9999\r\n"), std::string::npos);
  EXPECT_NE(head.find("x-ratelimit-limit-tokens: 200000\r\n"), std::string::npos);
}

TEST(ResponseHeadTest, ResetsAreWrittenAsGoDurationsLikeOpenAIs) {
  EXPECT_EQ(format_reset(0), "0s");
  EXPECT_EQ(format_reset(-5), "0s");
  EXPECT_EQ(format_reset(6), "6ms");
  EXPECT_EQ(format_reset(999), "999ms");
  EXPECT_EQ(format_reset(1000), "1s");
  EXPECT_EQ(format_reset(1500), "1.5s");
  EXPECT_EQ(format_reset(17'130), "17.13s");
  EXPECT_EQ(format_reset(59'999), "59.999s");
  EXPECT_EQ(format_reset(60'000), "1m0s");
  EXPECT_EQ(format_reset(62'000), "1m2s");
  EXPECT_EQ(format_reset(360'000), "6m0s");
  EXPECT_EQ(format_reset(3'600'000), "1h0m0s");
  EXPECT_EQ(format_reset(3'723'004), "1h2m3.004s");
}

TEST(PassthroughHeadersTest, HopByHopAndFramingFieldsAreDropped) {
  http::fields f;
  f.insert(http::field::connection, "keep-alive, X-Private");
  f.insert(http::field::keep_alive, "timeout=5");
  f.insert(http::field::transfer_encoding, "chunked");
  f.insert(http::field::content_length, "12");
  f.insert(http::field::upgrade, "h2c");
  f.insert(http::field::proxy_authenticate, "Basic");
  f.insert(http::field::te, "trailers");
  f.insert(http::field::set_cookie, "a=b");
  f.insert("X-Private", "secret-hop");
  f.insert("x-request-id", "req_upstream_1");
  f.insert("x-ratelimit-remaining-requests", "99");
  f.insert(http::field::retry_after, "3");
  auto out = passthrough_headers(f);
  header_list expected{{"x-ratelimit-remaining-requests", "99"}, {"Retry-After", "3"}, {"x-upstream-request-id", "req_upstream_1"}};
  auto sorted = [](header_list h) {
    std::sort(h.begin(), h.end());
    return h;
  };
  EXPECT_EQ(sorted(out), sorted(expected));
}

TEST(AccessLogTest, OneJsonLineWithoutSecrets) {
  config::provider_config pc;
  pc.name = "openai";
  pc.api_key = "sk-super-secret";
  struct fake final : provider_adapter {
    using provider_adapter::provider_adapter;
  } adapter(pc);
  model_route route{"gpt", {{&adapter, "gpt-4o"}}};
  request_context ctx;
  ctx.id_hex = "037b930af0400000";
  ctx.method = "POST";
  ctx.path = "/v1/chat/completions";
  ctx.endpoint = endpoint_kind::chat_completions;
  ctx.model = "gpt";
  ctx.route = &route;
  ctx.target = &route.targets[0];
  ctx.status = 200;
  ctx.usage = {10, 20, 0, 0, true};
  ctx.body = R"({"messages":[{"role":"user","content":"my prompt text"}]})";
  const auto line = access_log::format(ctx);
  ASSERT_EQ(line.back(), '\n');
  EXPECT_EQ(line.find('\n'), line.size() - 1);
  EXPECT_NE(line.find("\"request_id\":\"037b930af0400000\""), std::string::npos) << line;
  EXPECT_NE(line.find("\"status\":200"), std::string::npos);
  EXPECT_NE(line.find("\"provider\":\"openai\""), std::string::npos);
  EXPECT_NE(line.find("\"upstream_model\":\"gpt-4o\""), std::string::npos);
  EXPECT_NE(line.find("\"prompt_tokens\":10"), std::string::npos);
  EXPECT_NE(line.find("\"duration_ms\":"), std::string::npos);
  EXPECT_EQ(line.find("E-"), std::string::npos) << "durations must be plain decimals: " << line;
  EXPECT_EQ(line.find("sk-super-secret"), std::string::npos);
  EXPECT_EQ(line.find("my prompt text"), std::string::npos);
}

}  // namespace
}  // namespace tollgate::gateway

namespace tollgate::gateway {
namespace {

TEST(AccessLogTest, HostileStringsStayValidJson) {
  request_context ctx;
  ctx.id_hex = "0000000000000001";
  ctx.method = "GET";
  ctx.path = "/v1/\"models\\";
  ctx.user_agent = std::string("evil\"agent\n\x01\x1f") + "\t";
  ctx.status = 404;
  auto line = access_log::format(ctx);
  ASSERT_EQ(line.back(), '\n');
  line.pop_back();
  boost::system::error_code ec;
  auto v = boost::json::parse(line, ec);
  ASSERT_FALSE(ec) << line;
  EXPECT_EQ(v.at("user_agent").as_string(), ctx.user_agent);
  EXPECT_EQ(v.at("path").as_string(), ctx.path);
  EXPECT_EQ(v.at("status").as_int64(), 404);
}

}  // namespace
}  // namespace tollgate::gateway
