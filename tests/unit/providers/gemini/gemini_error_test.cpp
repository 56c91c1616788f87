// SPDX-License-Identifier: Apache-2.0
// Google RPC error bodies → OpenAI errors with status and Retry-After (PROTOCOLS.md §4.5 → §1.4).
#include "providers/vertex/gemini.hpp"

#include <boost/json/parse.hpp>
#include <gtest/gtest.h>

#include <cctype>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "tests/unit/testdata.hpp"

namespace tollgate::providers::vertex {
namespace {

namespace json = boost::json;
using namespace std::chrono_literals;

std::string read_fixture(std::string_view name) {
  return tollgate::testing::read_file(tollgate::testing::testdata_dir() /
                                     "vercel-ai-fixtures/packages/google/src/__fixtures__" / name);
}

TEST(GeminiErrorTest, ResourceExhaustedFixtureWithRetryInfo) {
  const upstream_error e = map_google_error(429, read_fixture("google-429-retry-info.json"));
  EXPECT_EQ(e.status, 429u);
  EXPECT_EQ(e.type, "rate_limit_error");
  EXPECT_EQ(e.code, "resource_exhausted");
  EXPECT_EQ(e.google_status, "RESOURCE_EXHAUSTED");
  EXPECT_EQ(e.message, "You exceeded your current quota, please check your plan.");
  EXPECT_TRUE(e.retryable);
  ASSERT_TRUE(e.retry_delay);
  EXPECT_EQ(*e.retry_delay, 34400ms);  // "34.4s", after the QuotaFailure detail
  EXPECT_EQ(e.retry_after_seconds(), 35u);
  EXPECT_EQ(json::value(to_openai_error_body(e)), json::parse(R"({"error":{
    "message":"You exceeded your current quota, please check your plan.",
    "type":"rate_limit_error","param":null,"code":"resource_exhausted"}})"));
}

TEST(GeminiErrorTest, StatusFromTheBodyWhenTheHttpStatusIsUnknown) {
  // A stream's in-band error: no HTTP status, `error.code` gives it.
  const upstream_error e = map_google_error(0, json::parse(R"({"error":{"code":429,"message":"slow down",
    "status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"12s"}]}})"));
  EXPECT_EQ(e.status, 429u);
  EXPECT_EQ(e.retry_after_seconds(), 12u);
}

TEST(GeminiErrorTest, StatusTable) {
  struct row {
    const char* status;
    unsigned http;
    const char* type;
    bool retryable;
  };
  const row rows[] = {
      {"INVALID_ARGUMENT", 400, "invalid_request_error", false},
      {"FAILED_PRECONDITION", 400, "invalid_request_error", false},
      {"UNAUTHENTICATED", 401, "authentication_error", false},
      {"PERMISSION_DENIED", 403, "permission_error", false},
      {"NOT_FOUND", 404, "not_found_error", false},
      {"RESOURCE_EXHAUSTED", 429, "rate_limit_error", true},
      {"INTERNAL", 500, "server_error", true},
      {"UNAVAILABLE", 503, "server_error", true},
      {"DEADLINE_EXCEEDED", 504, "server_error", true},
  };
  for (const row& r : rows) {
    SCOPED_TRACE(r.status);
    const std::string body = std::string(R"({"error":{"code":)") + std::to_string(r.http) + R"(,"message":"m","status":")" +
                             r.status + R"("}})";
    const upstream_error e = map_google_error(r.http, body);
    EXPECT_EQ(e.status, r.http);
    EXPECT_EQ(e.type, r.type);
    EXPECT_EQ(e.retryable, r.retryable);
    EXPECT_EQ(e.message, "m");
    std::string lower(r.status);
    for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    EXPECT_EQ(e.code, lower);
    EXPECT_FALSE(e.retry_delay);
  }
}

TEST(GeminiErrorTest, RealInvalidArgumentBody) {
  const upstream_error e = map_google_error(400, std::string_view(R"({
  "error": {
    "code": 400,
    "message": "Unable to submit request because it has an empty text parameter. Add a value to the parameter and try again.",
    "status": "INVALID_ARGUMENT"
  }
})"));
  EXPECT_EQ(e.status, 400u);
  EXPECT_EQ(e.type, "invalid_request_error");
  EXPECT_EQ(e.code, "invalid_argument");
  EXPECT_FALSE(e.retryable);
}

TEST(GeminiErrorTest, ArrayWrappedBody) {
  // streamGenerateContent without alt=sse answers errors inside a JSON array.
  const upstream_error e = map_google_error(404, std::string_view(
      R"([{"error":{"code":404,"message":"Publisher Model was not found","status":"NOT_FOUND"}}])"));
  EXPECT_EQ(e.status, 404u);
  EXPECT_EQ(e.type, "not_found_error");
  EXPECT_EQ(e.message, "Publisher Model was not found");
}

TEST(GeminiErrorTest, BodiesWithoutAGoogleStatusFallBackOnHttp) {
  const upstream_error html = map_google_error(502, std::string_view("<html><body>Bad Gateway</body></html>"));
  EXPECT_EQ(html.status, 502u);
  EXPECT_EQ(html.type, "server_error");
  EXPECT_EQ(html.code, "upstream_error");
  EXPECT_TRUE(html.retryable);
  EXPECT_EQ(html.message, "Vertex AI returned HTTP 502");

  const upstream_error throttled = map_google_error(429, std::string_view(""));
  EXPECT_EQ(throttled.status, 429u);
  EXPECT_EQ(throttled.type, "rate_limit_error");
  EXPECT_TRUE(throttled.retryable);

  const upstream_error teapot = map_google_error(418, std::string_view(R"({"error":{"message":"odd"}})"));
  EXPECT_EQ(teapot.status, 418u);
  EXPECT_EQ(teapot.type, "invalid_request_error");
  EXPECT_EQ(teapot.message, "odd");

  const upstream_error unknown = map_google_status("SOMETHING_NEW", "", 0);
  EXPECT_EQ(unknown.status, 502u);
  EXPECT_EQ(unknown.type, "server_error");
  EXPECT_FALSE(unknown.message.empty());
}

TEST(GeminiErrorTest, Durations) {
  EXPECT_EQ(parse_duration("12s"), 12000ms);
  EXPECT_EQ(parse_duration("34.4s"), 34400ms);
  EXPECT_EQ(parse_duration("0.000001s"), 1ms);  // rounded up
  EXPECT_EQ(parse_duration("1.000340012s"), 1001ms);
  EXPECT_EQ(parse_duration("0s"), 0ms);
  EXPECT_FALSE(parse_duration(""));
  EXPECT_FALSE(parse_duration("12"));
  EXPECT_FALSE(parse_duration("-1s"));
  EXPECT_FALSE(parse_duration("1.s"));
  EXPECT_FALSE(parse_duration("abcs"));
  upstream_error e;
  e.retry_delay = 0ms;
  EXPECT_EQ(e.retry_after_seconds(), 0u);
  e.retry_delay = 1ms;
  EXPECT_EQ(e.retry_after_seconds(), 1u);
}

}  // namespace
}  // namespace tollgate::providers::vertex
