// SPDX-License-Identifier: Apache-2.0
#include "gateway/core/http_guard.hpp"

#include <gtest/gtest.h>

#include <random>

namespace tollgate {
namespace {

const head_limits limits{2048, 10, 64};

errc verdict(std::string_view head) { return check_head(head, limits).code; }

TEST(HttpGuardTest, FindsTheEndOfTheHead) {
  EXPECT_EQ(find_head_end("GET / HTTP/1.1\r\nHost: x\r\n\r\nbody"), 27u);
  EXPECT_EQ(find_head_end("GET / HTTP/1.1\r\nHost: x\r\n"), 0u);
  EXPECT_EQ(find_head_end("GET / HTTP/1.1\nHost: x\n\n"), 24u);  // bare LF: found, then refused
}

// The memchr scan gives the byte loop's answer on any mix of CR, LF and other bytes.
TEST(HttpGuardTest, FindsTheEndOfTheHeadLikeAByteLoop) {
  auto reference = [](std::string_view buf) -> std::size_t {
    for (std::size_t i = 0; i < buf.size(); ++i) {
      if (buf[i] != '\n') continue;
      if (i + 2 < buf.size() && buf[i + 1] == '\r' && buf[i + 2] == '\n') return i + 3;
      if (i + 1 < buf.size() && buf[i + 1] == '\n') return i + 2;
    }
    return 0;
  };
  std::mt19937 rng(5);
  const char alphabet[] = {'\r', '\n', 'a', ':'};
  for (int round = 0; round < 20000; ++round) {
    std::string buf(std::uniform_int_distribution<std::size_t>(0, 24)(rng), 'a');
    for (char& c : buf) c = alphabet[std::uniform_int_distribution<int>(0, 3)(rng)];
    EXPECT_EQ(find_head_end(buf), reference(buf)) << buf;
  }
}

// Field values: a control character or DEL anywhere in a long value is refused (whole 8-byte
// words and the tail); tabs and bytes of 0x80 and above (obs-text) are not.
TEST(HttpGuardTest, ControlCharactersAnywhereInAValue) {
  for (std::size_t len = 1; len <= 40; ++len) {
    for (std::size_t at = 0; at < len; ++at) {
      for (char c : {'\x01', '\x1f', '\x7f', '\0'}) {
        std::string value(len, 'v');
        value[at] = c;
        EXPECT_EQ(verdict("GET / HTTP/1.1\r\nX-V: " + value + "\r\n\r\n"), errc::bad_request) << len << " " << at << " " << int(c);
      }
      std::string fine(len, 'v');
      fine[at] = at % 2 ? '\t' : '\xe9';
      EXPECT_EQ(verdict("GET / HTTP/1.1\r\nX-V: " + fine + "\r\n\r\n"), errc::ok) << len << " " << at;
    }
  }
}

// Field names: exactly RFC 9110's tchar set, for every byte value.
TEST(HttpGuardTest, FieldNamesAreTokens) {
  const std::string_view specials("!#$%&'*+-.^_`|~");
  for (int c = 1; c < 256; ++c) {
    if (c == '\r' || c == '\n' || c == ':' || c == ' ' || c == '\t') continue;  // (other refusals)
    const bool tchar = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                       specials.find(char(c)) != std::string_view::npos;
    const std::string head = std::string("GET / HTTP/1.1\r\nX") + char(c) + "Y: v\r\n\r\n";
    EXPECT_EQ(verdict(head), tchar ? errc::ok : errc::bad_request) << c;
  }
}

TEST(HttpGuardTest, AcceptsOrdinaryRequests) {
  EXPECT_EQ(verdict("GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n"), errc::ok);
  EXPECT_EQ(verdict("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Type: application/json\r\n\r\n"), errc::ok);
  EXPECT_EQ(verdict("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"), errc::ok);
  EXPECT_EQ(verdict("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"), errc::ok);
  EXPECT_EQ(verdict("POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n"), errc::ok);  // equal duplicates
  EXPECT_EQ(verdict("POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n"), errc::ok);
  EXPECT_EQ(verdict("GET / HTTP/1.1\r\nX-Tab:\tv\r\n\r\n"), errc::ok);
}

TEST(HttpGuardTest, RefusesEverySmugglingShape) {
  const char* bad[] = {
      "POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
      "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
      "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
      "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
      "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
      "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
      "POST / HTTP/1.1\r\nTransfer-Encoding: ,chunked\r\n\r\n",
      "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
      "POST / HTTP/1.1\r\nContent-Length: 5, 6\r\n\r\n",
      "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
      "POST / HTTP/1.1\r\nContent-Length: 0x10\r\n\r\n",
      "POST / HTTP/1.1\r\nContent-Length: \r\n\r\n",
      "GET / HTTP/1.1\r\nX-A: a\r\n b\r\n\r\n",          // obs-fold
      "GET / HTTP/1.1\r\nX-A: a\r\n\tb\r\n\r\n",         // obs-fold with a tab
      "GET / HTTP/1.1\nHost: x\r\n\r\n",                 // bare LF after the request line
      "GET / HTTP/1.1\r\nHost: x\n\r\n",                 // bare LF after a field
      "GET / HTTP/1.1\r\nHo\rst: x\r\n\r\n",             // bare CR
      "GET / HTTP/1.1\r\nHost : x\r\n\r\n",              // space before the colon
      "GET / HTTP/1.1\r\n: x\r\n\r\n",                   // empty field name
      "GET / HTTP/1.1\r\nNoColon\r\n\r\n",
      "GET / HTTP/1.1\r\nX: a\x01" "b\r\n\r\n",          // control character
      "GET /HTTP/1.1\r\n\r\n",                           // request line without two spaces
  };
  for (const char* h : bad) EXPECT_EQ(verdict(h), errc::bad_request) << h;
}

TEST(HttpGuardTest, EnforcesUrlHeaderCountAndSizeLimits) {
  EXPECT_EQ(verdict("GET /" + std::string(64, 'a') + " HTTP/1.1\r\n\r\n"), errc::uri_too_long);
  EXPECT_EQ(verdict("GET /" + std::string(63, 'a') + " HTTP/1.1\r\n\r\n"), errc::ok);
  std::string many = "GET / HTTP/1.1\r\n";
  for (int i = 0; i < 11; ++i) many += "X-" + std::to_string(i) + ": v\r\n";
  EXPECT_EQ(verdict(many + "\r\n"), errc::header_fields_too_large);
  EXPECT_EQ(verdict("GET / HTTP/1.1\r\nX: " + std::string(3000, 'v') + "\r\n\r\n"), errc::header_fields_too_large);
}

TEST(HttpGuardTest, DetectsExpectContinue) {
  EXPECT_TRUE(expects_continue("POST / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n"));
  EXPECT_TRUE(expects_continue("POST / HTTP/1.1\r\nexpect:  100-Continue \r\n\r\n"));
  EXPECT_FALSE(expects_continue("POST / HTTP/1.1\r\nX-Expect: 100-continue\r\n\r\n"));
  EXPECT_FALSE(expects_continue("POST / HTTP/1.1\r\n\r\n"));
  // No 1xx to an HTTP/1.0 client (RFC 9110 §15.2).
  EXPECT_FALSE(expects_continue("POST / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n"));
}

TEST(HttpGuardTest, ReportsTheContentLengthOfACheckedHead) {
  const head_limits lim{8192, 100, 4096};
  EXPECT_EQ(check_head("POST / HTTP/1.1\r\nContent-Length: 999999999\r\n\r\n", lim).content_length,
            std::optional<std::uint64_t>(999999999));
  EXPECT_EQ(check_head("POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n", lim).content_length, std::optional<std::uint64_t>(5));
  EXPECT_EQ(check_head("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", lim).content_length, std::nullopt);
}

}  // namespace
}  // namespace tollgate
