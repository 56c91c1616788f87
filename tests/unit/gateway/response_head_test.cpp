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
  ctx.usage = {10, 20, 0, true};
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
