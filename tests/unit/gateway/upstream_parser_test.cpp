// SPDX-License-Identifier: Apache-2.0
// The upstream response parser: Beast's parsing with the head kept in flat storage and the body
// delivered into caller buffers as http::buffer_body does. Fed bytes directly (no sockets).
#include <gtest/gtest.h>

#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>

#include <algorithm>
#include <string>

#include "gateway/pipeline.hpp"
#include "gateway/upstream_parser.hpp"

namespace tollgate::gateway {
namespace {

namespace http = boost::beast::http;
using boost::system::error_code;

/// Feeds `bytes` to `p` until it stops consuming, reading the body into buffers of `chunk`
/// bytes; returns the body and the last error (need_buffer is handled here, as read_some does).
std::string feed(upstream_response_parser& p, std::string_view bytes, std::size_t chunk, error_code& ec) {
  std::string body;
  std::string buf(chunk, '\0');
  while (!bytes.empty() && !p.is_done()) {
    p.body_buffer(buf.data(), buf.size());
    ec = {};
    const std::size_t used = p.put(boost::asio::buffer(bytes.data(), bytes.size()), ec);
    body.append(buf.data(), buf.size() - p.body_room());
    bytes.remove_prefix(used);
    if (ec == http::error::need_buffer || ec == http::error::need_more) {
      if (used == 0 && ec == http::error::need_more) break;
      ec = {};
      continue;
    }
    if (ec) break;
  }
  return body;
}

TEST(UpstreamParserTest, HeadFieldsInOrderAndBodyThroughSmallBuffers) {
  upstream_head_storage storage;
  upstream_response_parser p(storage);
  p.body_limit(boost::none);
  const std::string body(300, 'b');
  std::string msg = "HTTP/1.1 429 Too Many Requests\r\nServer: up\r\nContent-Type: application/json\r\n"
                    "x-request-id: req_1\r\nX-Dup: first\r\nx-dup: second\r\nRetry-After: 3\r\n";
  // Enough fields that the storage grows (and moves) while the head is parsed.
  for (int i = 0; i < 40; ++i) msg += "x-field-" + std::to_string(i) + ": " + std::string(40, char('a' + i % 26)) + "\r\n";
  msg += "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
  error_code ec;
  const std::string got = feed(p, msg, 7, ec);
  EXPECT_FALSE(ec) << ec.message();
  EXPECT_TRUE(p.is_done());
  EXPECT_EQ(p.status(), 429u);
  EXPECT_EQ(got, body);
  EXPECT_TRUE(p.keep_alive());
  ASSERT_EQ(p.fields().size(), 47u);
  EXPECT_EQ(p.fields()[0].name(), http::field::server);
  EXPECT_EQ(p.fields()[0].name_string(), "Server");
  EXPECT_EQ(p.fields()[0].value(), "up");
  EXPECT_EQ(p.fields()[3].name_string(), "X-Dup");
  EXPECT_EQ(p.fields()[4].value(), "second");
  EXPECT_EQ(p.fields()[45].name_string(), "x-field-39");
  EXPECT_EQ(p.fields()[45].value(), std::string(40, char('a' + 39 % 26)));
  EXPECT_EQ(p.field_value(http::field::content_type), "application/json");
  EXPECT_EQ(p.field_value(http::field::retry_after), "3");
  EXPECT_EQ(p.field_value(http::field::etag), "");
}

TEST(UpstreamParserTest, ChunkedBodyAcrossBuffersAndConnectionClose) {
  upstream_head_storage storage;
  upstream_response_parser p(storage);
  const std::string msg =
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
      "5\r\nhello\r\n1b\r\n, world, in chunks of bytes\r\n0\r\n\r\n";
  error_code ec;
  const std::string got = feed(p, msg, 4, ec);
  EXPECT_FALSE(ec) << ec.message();
  EXPECT_TRUE(p.is_done());
  EXPECT_EQ(got, "hello, world, in chunks of bytes");
  EXPECT_FALSE(p.keep_alive());
  EXPECT_TRUE(p.chunked());
}

TEST(UpstreamParserTest, TrailerFieldsAreNotKeptAndTheHeadsFieldsStayValid) {
  // Trailers arrive after the head's views were made: kept, they would grow the storage under
  // those views (found by tests/fuzz/upstream_parser_fuzz.cpp; AddressSanitizer reported the
  // read of freed memory). They are not part of the head and are dropped.
  upstream_head_storage storage;
  upstream_response_parser p(storage);
  std::string msg = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nx-head: kept\r\n\r\n5\r\nhello\r\n0\r\n";
  for (int i = 0; i < 40; ++i) msg += "x-trailer-" + std::to_string(i) + ": " + std::string(60, 't') + "\r\n";
  msg += "\r\n";
  error_code ec;
  EXPECT_EQ(feed(p, msg, 4, ec), "hello");
  EXPECT_FALSE(ec) << ec.message();
  EXPECT_TRUE(p.is_done());
  ASSERT_EQ(p.fields().size(), 2u);
  EXPECT_EQ(p.fields()[1].name_string(), "x-head");
  EXPECT_EQ(p.fields()[1].value(), "kept");
  EXPECT_EQ(p.field_value(http::field::transfer_encoding), "chunked");
}

TEST(UpstreamParserTest, BadHeadsAreRefusedAsBeastRefusesThem) {
  // The same bytes through Beast's own response parser and ours must fail alike: the parsing,
  // framing and smuggling checks are Beast's, unchanged.
  const std::string bad[] = {
      "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
      "HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
      "HTTP/1.1 2000 OK\r\n\r\n",
      "HTTP/1.1 200 OK\r\nContent-Length: 12x\r\n\r\n",
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
  };
  for (const auto& msg : bad) {
    upstream_head_storage storage;
    upstream_response_parser ours(storage);
    error_code ours_ec;
    feed(ours, msg, 64, ours_ec);
    http::response_parser<http::string_body> beast;
    beast.eager(true);  // the whole message, not only its head
    error_code beast_ec;
    std::string_view rest = msg;
    while (!rest.empty() && !beast.is_done() && !beast_ec)
      rest.remove_prefix(beast.put(boost::asio::buffer(rest.data(), rest.size()), beast_ec));
    EXPECT_TRUE(ours_ec) << msg;
    EXPECT_EQ(ours_ec, beast_ec) << msg;
  }
}

TEST(UpstreamParserTest, BodyWithoutABufferAsksForOne) {
  upstream_head_storage storage;
  upstream_response_parser p(storage);
  const std::string msg = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc";
  error_code ec;
  std::size_t used = p.put(boost::asio::buffer(msg.data(), msg.size()), ec);  // the head
  ASSERT_FALSE(ec);
  ASSERT_TRUE(p.is_header_done());
  used = p.put(boost::asio::buffer(msg.data() + used, msg.size() - used), ec);
  EXPECT_EQ(ec, http::error::need_buffer);
  EXPECT_EQ(used, 0u);
}

TEST(UpstreamParserTest, StorageIsReusedAndClearedPerResponse) {
  upstream_head_storage storage;
  {
    upstream_response_parser p(storage);
    error_code ec;
    feed(p, "HTTP/1.1 200 OK\r\nETag: \"1\"\r\nContent-Length: 0\r\n\r\n", 16, ec);
    ASSERT_EQ(p.fields().size(), 2u);
  }
  upstream_response_parser p(storage);
  EXPECT_TRUE(p.fields().empty());
  error_code ec;
  feed(p, "HTTP/1.1 204 No Content\r\nx-a: 1\r\n\r\n", 16, ec);
  ASSERT_EQ(p.fields().size(), 1u);
  EXPECT_EQ(p.fields()[0].value(), "1");
  EXPECT_EQ(p.field_value(http::field::etag), "");
}

TEST(UpstreamParserTest, PassthroughHeadersAreTheSameAsFromBeastFields) {
  const std::string msg =
      "HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Private\r\nKeep-Alive: timeout=5\r\nX-Private: hop\r\n"
      "x-request-id: req_up\r\nx-ratelimit-remaining-requests: 99\r\nSet-Cookie: a=b\r\nopenai-version: 2020-10-01\r\n"
      "Content-Length: 0\r\n\r\n";
  upstream_head_storage storage;
  upstream_response_parser ours(storage);
  error_code ec;
  feed(ours, msg, 16, ec);
  ASSERT_FALSE(ec);
  http::response_parser<http::string_body> beast;
  beast.put(boost::asio::buffer(msg.data(), msg.size()), ec);
  ASSERT_FALSE(ec);
  const header_list a = passthrough_headers(ours.fields());
  const header_list b = passthrough_headers(beast.get().base());
  EXPECT_EQ(a, b);
  EXPECT_EQ(a.size(), 3u);  // x-ratelimit-remaining-requests, openai-version, x-upstream-request-id
}

}  // namespace
}  // namespace tollgate::gateway
