// SPDX-License-Identifier: Apache-2.0
// The caller request parser: Beast's parsing, with only the method, target, version and the five
// fields the gateway reads kept, and the body in a string as http::string_body keeps it. Each case
// also goes through Beast's own request_parser<string_body>: same answers, same errors. Fed bytes
// directly (no sockets).
#include <gtest/gtest.h>

#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>

#include <string>

#include "gateway/request_parser.hpp"

namespace tollgate::gateway {
namespace {

namespace http = boost::beast::http;
using boost::system::error_code;

/// Feeds `bytes` to a parser `step` bytes at a time, as a socket delivering small reads would
/// (what a put() call leaves unconsumed comes again with the next bytes); returns the last error.
template <class Parser>
error_code feed(Parser& p, std::string_view bytes, std::size_t step) {
  error_code ec;
  std::string pending;
  std::size_t at = 0;
  while (!p.is_done()) {
    if (at < bytes.size()) {
      const std::size_t n = std::min(step, bytes.size() - at);
      pending.append(bytes.data() + at, n);
      at += n;
    }
    ec = {};
    const std::size_t used = p.put(boost::asio::buffer(pending.data(), pending.size()), ec);
    pending.erase(0, used);
    if (ec == http::error::need_more) {
      if (at == bytes.size()) break;  // nothing more to give
      continue;
    }
    if (ec) break;
  }
  return ec;
}

/// None of the five fields the gateway reads was found.
void expect_no_fields(const caller_request_parser& p) {
  EXPECT_FALSE(p.fields().user_agent);
  EXPECT_FALSE(p.fields().content_type);
  EXPECT_FALSE(p.fields().authorization);
  EXPECT_FALSE(p.fields().api_key);
  EXPECT_FALSE(p.fields().x_api_key);
}

TEST(RequestParserTest, KeepsMethodTargetVersionTheFiveFieldsAndTheBody) {
  std::string storage = "left over from the previous request";
  caller_request_parser p(storage);
  const std::string body = R"({"model":"m","messages":[{"role":"user","content":"hi"}]})";
  std::string msg = "POST /v1/chat/completions?x=1 HTTP/1.1\r\nHost: gw\r\nUser-Agent: OpenAI/Python 1.0\r\n"
                    "Content-Type: application/json\r\nAuthorization: Bearer tg_abc_secret\r\napi-key: azure-key\r\n"
                    "X-API-Key: anthropic-key\r\nUser-Agent: second\r\n";
  // Enough other fields that the storage grows (and moves) while the head is parsed.
  for (int i = 0; i < 40; ++i) msg += "x-field-" + std::to_string(i) + ": " + std::string(40, 'v') + "\r\n";
  msg += "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
  const error_code ec = feed(p, msg, 7);
  EXPECT_FALSE(ec) << ec.message();
  ASSERT_TRUE(p.is_done());
  EXPECT_EQ(p.method(), http::verb::post);
  EXPECT_EQ(p.method_string(), "POST");
  EXPECT_EQ(p.target(), "/v1/chat/completions?x=1");
  EXPECT_EQ(p.version(), 11u);
  EXPECT_TRUE(p.keep_alive());
  const caller_fields& f = p.fields();
  EXPECT_EQ(f.user_agent, "OpenAI/Python 1.0");  // the first of each name
  EXPECT_EQ(f.content_type, "application/json");
  EXPECT_EQ(f.authorization, "Bearer tg_abc_secret");
  EXPECT_EQ(f.api_key, "azure-key");
  EXPECT_EQ(f.x_api_key, "anthropic-key");
  EXPECT_FALSE(f.repeated_credential);
  EXPECT_EQ(p.body(), body);

  http::request_parser<http::string_body> beast;
  ASSERT_FALSE(feed(beast, msg, 7));
  EXPECT_EQ(beast.get().body(), p.body());
  EXPECT_EQ(beast.get()[http::field::authorization], *f.authorization);
  EXPECT_EQ(beast.get().target(), p.target());
}

TEST(RequestParserTest, AbsentFieldsChunkedBodiesHttp10AndUnknownMethods) {
  std::string storage;
  {
    caller_request_parser p(storage);
    const std::string msg = "PATCH /x HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n";
    ASSERT_FALSE(feed(p, msg, 3));
    EXPECT_EQ(p.method(), http::verb::patch);
    EXPECT_EQ(p.version(), 10u);
    EXPECT_FALSE(p.keep_alive());
    EXPECT_EQ(p.body(), "hello, world");
    expect_no_fields(p);
  }
  caller_request_parser p(storage);  // the same storage, cleared for the next request
  ASSERT_FALSE(feed(p, "BREW /pot HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 64));
  EXPECT_EQ(p.method(), http::verb::unknown);
  EXPECT_EQ(p.method_string(), "BREW");
  EXPECT_EQ(p.target(), "/pot");
  EXPECT_TRUE(p.body().empty());
  EXPECT_FALSE(p.fields().user_agent);
}

TEST(RequestParserTest, AChunkedBodysTrailerFieldsAreNotRead) {
  // RFC 9110 §6.5.2: trailer fields are not merged into the head. Beast's own message holds
  // them with the head's fields; the gateway must not take a credential, a content type or a
  // user agent from them.
  std::string storage;
  caller_request_parser p(storage);
  const std::string msg =
      "POST /v1/chat/completions HTTP/1.1\r\nTrailer: Authorization\r\nTransfer-Encoding: chunked\r\n\r\n"
      "2\r\n{}\r\n0\r\nAuthorization: Bearer tg_abc_secret\r\napi-key: k\r\nx-api-key: y\r\n"
      "Content-Type: text/plain\r\nUser-Agent: trailer\r\n\r\n";
  ASSERT_FALSE(feed(p, msg, 5));
  EXPECT_EQ(p.body(), "{}");
  expect_no_fields(p);
  EXPECT_FALSE(p.fields().repeated_credential);
  http::request_parser<http::string_body> beast;  // (where Beast's message differs)
  ASSERT_FALSE(feed(beast, msg, 5));
  EXPECT_EQ(beast.get()[http::field::authorization], "Bearer tg_abc_secret");
}

TEST(RequestParserTest, ACredentialFieldThatComesTwiceIsFlagged) {
  // Authorization, api-key and x-api-key are singletons: a second copy, even with the same value
  // or another spelling of the name, is flagged (the session refuses such a request); other
  // fields repeated are not.
  const std::string head = "GET /v1/models HTTP/1.1\r\nHost: gw\r\nUser-Agent: a\r\nUser-Agent: b\r\n";
  const char* repeats[] = {"Authorization: Bearer tg_a_1\r\nAuthorization: Bearer tg_b_2\r\n",
                           "authorization: x\r\nAUTHORIZATION: x\r\n", "api-key: k\r\nApi-Key: k\r\n",
                           "x-api-key: one\r\nX-API-KEY: two\r\n"};
  for (const char* r : repeats) {
    std::string storage;
    caller_request_parser p(storage);
    ASSERT_FALSE(feed(p, head + r + "\r\n", 4)) << r;
    EXPECT_TRUE(p.fields().repeated_credential) << r;
  }
  std::string storage;
  caller_request_parser p(storage);  // one of each is no repetition
  ASSERT_FALSE(feed(p, head + "Authorization: Bearer k\r\napi-key: k\r\nx-api-key: k\r\n\r\n", 4));
  EXPECT_FALSE(p.fields().repeated_credential);
  EXPECT_EQ(p.fields().user_agent, "a");
}

TEST(RequestParserTest, BadRequestsAndOversizedBodiesFailAsWithBeastsParser) {
  // The parsing, framing, smuggling checks and limits are Beast's: the same bytes through
  // Beast's own request parser must fail with the same error.
  const std::string bad[] = {
      "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
      "POST / HTTP/1.1\r\nBad Name: x\r\n\r\n",
      "POST / HTTP/2.5\r\n\r\n",
      "POST / HTTP/1.1\r\nContent-Length: 12x\r\n\r\n",
      "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
      "POST / HTTP/1.1\r\nContent-Length: 100\r\n\r\n" + std::string(100, 'x'),              // over body_limit
      "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n40\r\n" + std::string(64, 'x') +  // chunks over it
          "\r\n0\r\n\r\n",
      "POST / HTTP/1.1\r\nx-long: " + std::string(600, 'h') + "\r\n\r\n",  // over header_limit
  };
  for (const auto& msg : bad) {
    std::string storage;
    caller_request_parser ours(storage);
    ours.body_limit(50);
    ours.header_limit(512);
    const error_code ours_ec = feed(ours, msg, 9);
    http::request_parser<http::string_body> beast;
    beast.body_limit(50);
    beast.header_limit(512);
    const error_code beast_ec = feed(beast, msg, 9);
    EXPECT_TRUE(ours_ec) << msg;
    EXPECT_EQ(ours_ec, beast_ec) << msg;
  }
}

/// The credential fields of a request head.
using field = std::optional<std::string_view>;
caller_fields credentials(field authorization, field api_key, field x_api_key) {
  caller_fields f;
  f.authorization = authorization;
  f.api_key = api_key;
  f.x_api_key = x_api_key;
  return f;
}

TEST(PresentedCredentialTest, ATollgateKeyInAnyHeaderOrSchemeIsTheCredential) {
  const auto of = [](field a, field k = {}, field x = {}) { return presented_credential(credentials(a, k, x)); };
  // The SDKs' forms.
  EXPECT_EQ(of("Bearer tg_a_b"), "tg_a_b");
  EXPECT_EQ(of("bearer\t tg_a_b  "), "tg_a_b");
  EXPECT_EQ(of({}, " tg_a_b "), "tg_a_b");
  EXPECT_EQ(of({}, {}, "tg_a_b"), "tg_a_b");
  EXPECT_EQ(of({}), "");
  EXPECT_EQ(of("Bearer"), "");
  EXPECT_EQ(of("Bearer   "), "");
  // A foreign credential is still the credential when nothing else is sent (an open gateway lets
  // it in as anonymous; a closed one answers invalid_api_key).
  EXPECT_EQ(of("Bearer sk-placeholder"), "sk-placeholder");
  // An SDK's placeholder in one header does not hide a Tollgate key in another.
  EXPECT_EQ(of("Bearer sk-placeholder", "tg_a_b"), "tg_a_b");
  EXPECT_EQ(of("Bearer sk-placeholder", {}, "tg_a_b"), "tg_a_b");
  EXPECT_EQ(of("Bearer tg_a_b", "tg_a_b", "tg_a_b"), "tg_a_b");  // (two different keys: ConflictingKeys)
  // An ingress's Basic credentials are no key: the other headers count.
  EXPECT_EQ(of("Basic aW5ncmVzczpwYXNz", "tg_a_b"), "tg_a_b");
  EXPECT_EQ(of("Basic aW5ncmVzczpwYXNz"), "");
  // A Tollgate key without "Bearer", or after another scheme, is checked, not passed over.
  EXPECT_EQ(of("tg_a_b"), "tg_a_b");
  EXPECT_EQ(of("Token tg_a_b"), "tg_a_b");
  EXPECT_EQ(of("tg_a_b", "sk-placeholder"), "tg_a_b");
  EXPECT_EQ(of("tg_a_b trailing"), "tg_a_b trailing");  // (then refused as malformed, not skipped)
  EXPECT_EQ(of("tg_"), "tg_");
  // The admin listener: header order only, so an API key beside the admin token does not displace it.
  caller_fields admin;
  admin.authorization = "Bearer admintoken";
  admin.api_key = "tg_a_b";
  EXPECT_EQ(presented_credential(admin, /*prefer_keys=*/false), "admintoken");
  EXPECT_EQ(presented_credential(admin), "tg_a_b");
}

TEST(PresentedCredentialTest, TwoDifferentTollgateKeysConflictTheSameOneTwiceDoesNot) {
  const auto conflict = [](field a, field k = {}, field x = {}) { return conflicting_keys(credentials(a, k, x)); };
  EXPECT_TRUE(conflict("Bearer tg_a_b", "tg_c_d"));
  EXPECT_TRUE(conflict("Bearer tg_a_b", {}, "tg_c_d"));
  EXPECT_TRUE(conflict({}, "tg_a_b", "tg_a_c"));
  EXPECT_TRUE(conflict("Token tg_a_b", " tg_a_B "));
  EXPECT_FALSE(conflict("Bearer tg_a_b", " tg_a_b", "tg_a_b "));  // one key, sent in every header
  EXPECT_FALSE(conflict("Bearer sk-placeholder", "tg_a_b"));      // an SDK's placeholder beside it
  EXPECT_FALSE(conflict("Bearer tg_a_b", "sk-x", "other"));
  EXPECT_FALSE(conflict("Bearer tg_a_b"));
  EXPECT_FALSE(conflict({}, {}, {}));
}

}  // namespace
}  // namespace tollgate::gateway
