// SPDX-License-Identifier: Apache-2.0
// Bedrock errors → the status and OpenAI error object the gateway answers with: the table, the
// spellings of the error type (x-amzn-ErrorType header, body __type, stream exception names), the
// HTTP-status fallback and bodies that are not JSON.
#include <gtest/gtest.h>

#include <boost/json/parse.hpp>

#include <string_view>

#include "providers/bedrock/converse.hpp"

namespace {

namespace json = boost::json;
using namespace tollgate::providers::bedrock;

struct row {
  std::string_view bedrock_type;
  unsigned model_status;  ///< the status service-2.json gives the shape
  unsigned status;
  std::string_view type;
  std::string_view code;
  bool retryable;
};

constexpr row table[] = {
    {"ThrottlingException", 429, 429, "rate_limit_error", "rate_limit_exceeded", true},
    {"ServiceQuotaExceededException", 400, 429, "rate_limit_error", "quota_exceeded", false},
    {"ModelNotReadyException", 429, 503, "server_error", "model_not_ready", true},
    {"ValidationException", 400, 400, "invalid_request_error", "invalid_request", false},
    {"ConflictException", 400, 400, "invalid_request_error", "conflict", false},
    {"AccessDeniedException", 403, 502, "server_error", "upstream_access_denied", false},
    {"ResourceNotFoundException", 404, 404, "not_found_error", "model_not_found", false},
    {"ModelTimeoutException", 408, 504, "server_error", "upstream_timeout", true},
    {"ModelErrorException", 424, 500, "server_error", "model_error", false},
    {"ModelStreamErrorException", 424, 500, "server_error", "model_error", false},
    {"InternalServerException", 500, 500, "server_error", "internal_server_error", true},
    {"ServiceUnavailableException", 503, 503, "server_error", "service_unavailable", true},
    {"InvalidSignatureException", 403, 502, "server_error", "upstream_authentication_failed", false},
    {"UnrecognizedClientException", 403, 502, "server_error", "upstream_authentication_failed", false},
    {"ExpiredTokenException", 403, 502, "server_error", "upstream_authentication_failed", false},
};

TEST(ConverseErrorsTest, HttpErrorTable) {
  for (const row& r : table) {
    const std::string header = std::string(r.bedrock_type) + ":http://internal.amazon.com/coral/com.amazon.bedrock/";
    const upstream_error e = map_bedrock_http_error(r.model_status, header, R"({"message":"it went wrong"})");
    EXPECT_EQ(e.status, r.status) << r.bedrock_type;
    EXPECT_EQ(e.type, r.type) << r.bedrock_type;
    EXPECT_EQ(e.code, r.code) << r.bedrock_type;
    EXPECT_EQ(e.retryable, r.retryable) << r.bedrock_type;
    EXPECT_EQ(e.bedrock_type, r.bedrock_type);
    // The gateway's own credentials refused: Bedrock's text (account, role, signed request) stays.
    if (r.status == 502) EXPECT_NE(e.message.find("refused the gateway's AWS credentials (" + std::string(r.bedrock_type) + ")"), std::string::npos) << e.message;
    else EXPECT_EQ(e.message, "it went wrong");
  }
}

TEST(ConverseErrorsTest, CredentialRefusalsNeverCarryBedrocksText) {
  const std::string arn = "arn:aws:iam::123456789012:role/gateway";
  for (const char* type : {"AccessDeniedException", "InvalidSignatureException", "ExpiredTokenException"}) {
    const upstream_error e = map_bedrock_http_error(
        403, type, R"({"message":"User: )" + arn + R"( is not authorized; x-amz-security-token:IQoJb3JpZ2luX2VjEXAMPLE"})");
    EXPECT_EQ(e.status, 502u) << type;
    EXPECT_EQ(e.message.find("arn:aws"), std::string::npos) << e.message;
    EXPECT_EQ(e.message.find("IQoJ"), std::string::npos) << e.message;
  }
}

TEST(ConverseErrorsTest, StreamExceptionNamesMapLikeTheirHttpTwins) {
  for (const row& r : table) {
    std::string lower(r.bedrock_type);
    lower[0] = static_cast<char>(lower[0] - 'A' + 'a');  // throttlingException, as in :exception-type
    const upstream_error e = map_bedrock_error(lower, "m");
    EXPECT_EQ(e.status, r.status) << lower;
    EXPECT_EQ(e.code, r.code) << lower;
    EXPECT_EQ(e.bedrock_type, r.bedrock_type) << lower;
  }
}

TEST(ConverseErrorsTest, NormalizeErrorType) {
  EXPECT_EQ(normalize_error_type("ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/"),
            "ThrottlingException");
  EXPECT_EQ(normalize_error_type("com.amazon.coral.validate#ValidationException"), "ValidationException");
  EXPECT_EQ(normalize_error_type("aws.protocols#AccessDeniedException:http://x/"), "AccessDeniedException");
  EXPECT_EQ(normalize_error_type("modelStreamErrorException"), "ModelStreamErrorException");
  EXPECT_EQ(normalize_error_type(" ServiceUnavailableException "), "ServiceUnavailableException");
  EXPECT_EQ(normalize_error_type(""), "");
}

TEST(ConverseErrorsTest, TypeFromTheBodyWhenTheHeaderIsMissing) {
  upstream_error e = map_bedrock_http_error(400, "", R"({"__type":"com.amazon.coral.validate#ValidationException",
      "message":"Malformed input request: #/messages: expected minimum item count: 1"})");
  EXPECT_EQ(e.status, 400u);
  EXPECT_EQ(e.code, "invalid_request");
  EXPECT_EQ(e.message, "Malformed input request: #/messages: expected minimum item count: 1");
  e = map_bedrock_http_error(429, "", R"({"code":"ThrottlingException","Message":"Rate exceeded"})");
  EXPECT_EQ(e.type, "rate_limit_error");
  EXPECT_EQ(e.message, "Rate exceeded");
}

TEST(ConverseErrorsTest, UnknownTypesFallBackOnTheHttpStatus) {
  upstream_error e = map_bedrock_http_error(429, "SomethingNewException", R"({"message":"slow down"})");
  EXPECT_EQ(e.status, 429u);
  EXPECT_EQ(e.type, "rate_limit_error");
  EXPECT_TRUE(e.retryable);
  e = map_bedrock_http_error(502, "", "<html>Bad Gateway</html>");
  EXPECT_EQ(e.status, 502u);
  EXPECT_EQ(e.type, "server_error");
  EXPECT_TRUE(e.retryable);
  EXPECT_EQ(e.message, "Amazon Bedrock returned an error (HTTP 502).");  // the HTML is not passed on
  e = map_bedrock_http_error(413, "", "");
  EXPECT_EQ(e.status, 413u);
  EXPECT_EQ(e.type, "invalid_request_error");
  EXPECT_FALSE(e.retryable);
  e = map_bedrock_error("", "");
  EXPECT_EQ(e.status, 502u);
  EXPECT_EQ(e.message, "Amazon Bedrock returned an error.");
  e = map_bedrock_error("ThrottlingException", "", 429);
  EXPECT_EQ(e.message, "Amazon Bedrock returned ThrottlingException (HTTP 429).");
}

TEST(ConverseErrorsTest, OpenAiErrorObjects) {
  const upstream_error e = map_bedrock_http_error(
      400, "ValidationException:http://internal.amazon.com/coral/com.amazon.bedrock/",
      R"({"message":"The model returned the following errors: max_tokens must be at least 1."})");
  const json::value inner = json::parse(R"({"message":"The model returned the following errors: max_tokens must be at least 1.",
      "type":"invalid_request_error","param":null,"code":"invalid_request"})");
  EXPECT_EQ(to_openai_error(e), inner);
  EXPECT_EQ(to_openai_error_body(e), json::object({{"error", inner}}));
}

}  // namespace
