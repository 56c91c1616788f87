// SPDX-License-Identifier: Apache-2.0
#include "gateway/core/error.hpp"

#include <gtest/gtest.h>

namespace tollgate {
namespace {

TEST(ErrorTest, EveryCodeMapsToItsStatusAndOpenAICode) {
  struct {
    errc e;
    unsigned status;
    const char* code;
  } cases[] = {{errc::invalid_json, 400, "invalid_json"},           {errc::invalid_type, 400, "invalid_type"},
               {errc::missing_parameter, 400, "missing_required_parameter"}, {errc::bad_request, 400, "bad_request"},
               {errc::model_not_found, 404, "model_not_found"},     {errc::not_found, 404, "not_found"},
               {errc::method_not_allowed, 405, "method_not_allowed"}, {errc::request_timeout, 408, "request_timeout"},
               {errc::request_too_large, 413, "request_too_large"}, {errc::uri_too_long, 414, "uri_too_long"},
               {errc::unsupported_media_type, 415, "unsupported_media_type"},
               {errc::header_fields_too_large, 431, "request_header_fields_too_large"},
               {errc::internal, 500, "internal_error"},             {errc::upstream_error, 502, "upstream_error"},
               {errc::shutting_down, 503, "shutting_down"},         {errc::upstream_timeout, 504, "upstream_timeout"}};
  for (auto& c : cases) {
    auto m = map_error(c.e);
    EXPECT_EQ(m.status, c.status) << c.code;
    EXPECT_EQ(m.code, c.code);
    EXPECT_FALSE(m.type.empty());
    EXPECT_EQ(make_error_code(c.e).message(), c.code);
  }
}

TEST(ErrorTest, BodyHasAllFourKeysWithNullsWhereEmpty) {
  EXPECT_EQ(openai_error_body("Bad \"thing\".", "invalid_request_error", "", ""),
            R"({"error":{"message":"Bad \"thing\".","type":"invalid_request_error","param":null,"code":null}})");
  EXPECT_EQ(openai_error_body("m", "t", "messages", "invalid_type"),
            R"({"error":{"message":"m","type":"t","param":"messages","code":"invalid_type"}})");
  // A message echoing what a caller sent: bytes that are no UTF-8 become U+FFFD (the body stays
  // JSON text), valid UTF-8 and control characters are written as JSON has them.
  EXPECT_EQ(openai_error_body("Unknown URL: /x\xff\xfey é\n", "t", "", ""),
            "{\"error\":{\"message\":\"Unknown URL: /x\xef\xbf\xbd\xef\xbf\xbdy é\\u000a\",\"type\":\"t\",\"param\":null,"
            "\"code\":null}}");
}

}  // namespace
}  // namespace tollgate
