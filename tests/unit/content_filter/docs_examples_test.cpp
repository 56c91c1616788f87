// SPDX-License-Identifier: Apache-2.0
// Every example in docs/content-filters.md's detector table, checked: what the doc says a detector
// matches is redacted, what it says it does not match passes unchanged.
#include "policy/content_filter/content_filter.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace cf = tollgate::policy::content_filter;

namespace {

struct example {
  cf::detector d;
  std::vector<std::string> yes, no;
};

TEST(ContentFilterDocsTest, EveryDocumentedExampleBehavesAsDocumented) {
  const std::vector<example> table = {
      {cf::detector::email, {"jane.doe@example.com", "a+b@mail.co.uk"}, {"user@localhost", "jane@example", "@x.com"}},
      {cf::detector::phone,
       {"+14155552671", "+44 20 7946 0958", "(415) 555-2671", "415-555-2671", "415.555.2671"},
       {"555-1234", "123-456-7890", "1.415.555.2671.3"}},
      {cf::detector::payment_card, {"4111 1111 1111 1111"}, {"4111 1111 1111 1112", "0000 0000 0000 0000"}},
      {cf::detector::us_ssn, {"123-45-6789"}, {"000-12-3456", "666-12-3456", "900-12-3456", "123-00-4567", "123-45-0000"}},
      {cf::detector::iban, {"GB82 WEST 1234 5698 7654 32"}, {"GB00 WEST 1234 5698 7654 32", "gb82 west 1234 5698 7654 32"}},
      {cf::detector::ipv4, {"192.168.0.1", "10.0.0.255"}, {"256.1.1.1", "01.2.3.4", "1.2.3.4.5", "v1.2.3.4"}},
      {cf::detector::ipv6,
       {"2001:0db8:85a3:0000:0000:8a2e:0370:7334", "2001:db8::1"},
       {"::1", "fe80::", "std::vector", "a::b", "dead::beef"}},
      {cf::detector::aws_access_key, {"AKIAIOSFODNN7EXAMPLE"}, {"AKIAIOSFODNN7", "akiaiosfodnn7example"}},
      {cf::detector::private_key,
       {"-----BEGIN PRIVATE KEY-----", "-----BEGIN RSA PRIVATE KEY-----", "-----BEGIN OPENSSH PRIVATE KEY-----"},
       {"-----BEGIN PUBLIC KEY-----", "-----BEGIN CERTIFICATE-----"}},
      {cf::detector::jwt,
       {"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"},
       {"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0", "abc.def.ghijklmnopqrstu"}},
      {cf::detector::api_key,
       {"sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv", "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
        "AIzaSyA1234567890abcdefghijklmnopqrstuv"},
       {"sk-learn-pipeline", "ghp_short"}},
  };
  for (const auto& ex : table) {
    std::vector<cf::rule> rules{cf::rule::make_builtin(ex.d, cf::action::redact)};
    auto set = cf::compile(rules);
    ASSERT_TRUE(set) << cf::detector_name(ex.d);
    auto s = cf::scratch::create(*set);
    ASSERT_TRUE(s);
    const std::string tag = "[REDACTED:" + std::string(cf::detector_name(ex.d)) + "]";
    for (const auto& y : ex.yes) {
      const std::string text = "before " + y + " after";
      auto v = cf::scan_text(*set, *s, text);
      ASSERT_TRUE(v.redacted_text) << cf::detector_name(ex.d) << " should match: " << y;
      EXPECT_EQ(*v.redacted_text, "before " + tag + " after") << cf::detector_name(ex.d) << ": " << y;
    }
    for (const auto& n : ex.no) {
      const std::string text = "before " + n + " after";
      auto v = cf::scan_text(*set, *s, text);
      EXPECT_FALSE(v.redacted_text) << cf::detector_name(ex.d) << " should not match: " << n << " → "
                                    << (v.redacted_text ? *v.redacted_text : "");
    }
  }
}

}  // namespace
