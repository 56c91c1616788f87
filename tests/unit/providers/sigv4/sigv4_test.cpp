// SPDX-License-Identifier: Apache-2.0
// The SigV4 signer's building blocks and rules that the stored vectors do not pin down.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "providers/bedrock/sigv4.hpp"

namespace aws = tollgate::providers::aws;
using namespace std::chrono_literals;

namespace {

const aws::credentials example_creds{"AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", ""};

std::chrono::sys_seconds example_time() { return *aws::parse_amz_date("20150830T123600Z"); }

aws::signing_scope example_scope() { return {"us-east-1", "service", example_time()}; }

/// The canonical header block ("name:value\n"...) of a canonical request.
std::string header_block(const std::string& creq) {
  std::size_t pos = 0;
  for (int i = 0; i < 3; ++i) pos = creq.find('\n', pos) + 1;  // skip method, uri, query
  return creq.substr(pos, creq.find("\n\n", pos) + 1 - pos);
}

TEST(Sigv4Test, DerivesTheSigningKeyOfTheAwsDocumentationExample) {
  // docs.aws.amazon.com "Examples of how to derive a signing key for Signature Version 4".
  auto key = aws::derive_signing_key("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "20120215", "us-east-1", "iam");
  ASSERT_TRUE(key);
  static constexpr char digits[] = "0123456789abcdef";
  std::string hex;
  for (auto b : *key) {
    hex.push_back(digits[b >> 4]);
    hex.push_back(digits[b & 15]);
  }
  EXPECT_EQ(hex, "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d");
}

TEST(Sigv4Test, Sha256HexIsLowerCase) {
  EXPECT_EQ(aws::sha256_hex("").value(), aws::empty_payload_sha256);
  EXPECT_EQ(aws::sha256_hex("abc").value(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(Sigv4Test, FormatsAndParsesAmzDates) {
  using namespace std::chrono;
  const sys_seconds t = sys_days{2024y / March / 5} + 7h + 8min + 9s;
  EXPECT_EQ(aws::format_amz_date(t), "20240305T070809Z");
  EXPECT_EQ(aws::parse_amz_date("20240305T070809Z"), t);
  EXPECT_EQ(aws::parse_amz_date("2024-03-05T07:08:09Z"), t);
  for (const char* bad : {"", "20240305T070809", "2024030T0708090Z", "20240230T000000Z", "20240305T240000Z",
                          "2024-03-05 07:08:09Z", "2024-03-05T07:08:09+01", "20240305t070809Z", "2024-03-05T07-08-09Z"})
    EXPECT_FALSE(aws::parse_amz_date(bad)) << bad;
}

TEST(Sigv4Test, UriEncodeKeepsOnlyUnreservedCharacters) {
  EXPECT_EQ(aws::uri_encode("AZaz09-_.~", false), "AZaz09-_.~");
  EXPECT_EQ(aws::uri_encode("a b+c/d:e%f=\xE1\x88\xB4", false), "a%20b%2Bc%2Fd%3Ae%25f%3D%E1%88%B4");
  EXPECT_EQ(aws::uri_encode("/a b/c", true), "/a%20b/c");
}

TEST(Sigv4Test, CanonicalUriEncodesTheWirePathAgainForNonS3Services) {
  aws::signing_options opts;  // defaults: double encoding and normalization on
  EXPECT_EQ(aws::canonical_uri("/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse", opts),
            "/model/anthropic.claude-3-haiku-20240307-v1%253A0/converse");
  EXPECT_EQ(aws::canonical_uri("/model/arn%3Aaws%3Abedrock%3Aus-west-2%3A1%3Ainference-profile%2Fx/invoke", opts),
            "/model/arn%253Aaws%253Abedrock%253Aus-west-2%253A1%253Ainference-profile%252Fx/invoke");
  EXPECT_EQ(aws::canonical_uri("", opts), "/");

  aws::signing_options s3;
  s3.double_encode_path = false;
  s3.normalize_path = false;
  EXPECT_EQ(aws::canonical_uri("/bucket/a%3Ab//c/./d", s3), "/bucket/a%3Ab//c/./d");
}

TEST(Sigv4Test, CanonicalUriNormalizesDotSegmentsAndSlashes) {
  aws::signing_options opts;
  EXPECT_EQ(aws::canonical_uri("/example/..", opts), "/");
  EXPECT_EQ(aws::canonical_uri("/a/b/../c/./d", opts), "/a/c/d");
  EXPECT_EQ(aws::canonical_uri("//a//b//", opts), "/a/b/");
  EXPECT_EQ(aws::canonical_uri("/../../a", opts), "/a");
  EXPECT_EQ(aws::canonical_uri("/a/b/..", opts), "/a");  // botocore's remove_dot_segments
  EXPECT_EQ(aws::canonical_uri("/a/%2E%2E/b", opts), "/a/%252E%252E/b");  // encoded dots are not dot segments
  opts.normalize_path = false;
  EXPECT_EQ(aws::canonical_uri("//a/./b/../", opts), "//a/./b/../");
}

TEST(Sigv4Test, CanonicalQueryDecodesReencodesAndSorts) {
  EXPECT_EQ(aws::canonical_query(""), "");
  EXPECT_EQ(aws::canonical_query("b=2&a=1&a=0"), "a=0&a=1&b=2");
  // Sorted by key, then value: "Param" < "Param-3" although '-' < '=' as characters.
  EXPECT_EQ(aws::canonical_query("Param-3=x&Param=y"), "Param=y&Param-3=x");
  EXPECT_EQ(aws::canonical_query("flag&k="), "flag=&k=");
  EXPECT_EQ(aws::canonical_query("&&a=1&"), "a=1");
  EXPECT_EQ(aws::canonical_query("q=a+b%20c"), "q=a%2Bb%20c");  // '+' is not a space in SigV4
  EXPECT_EQ(aws::canonical_query("k=%7e%2F%zz%4"), "k=~%2F%25zz%254");  // bad escapes stay literal
  EXPECT_EQ(aws::canonical_query("k=a=b"), "k=a%3Db");
}

TEST(Sigv4Test, CanonicalHeadersAreLowerCasedFoldedJoinedAndSorted) {
  const std::vector<aws::header_view> headers{
      {"Host", "example.amazonaws.com"}, {"X-B", " one \t two\r\n   three "}, {"x-a", "2"}, {"X-A", "1"},
      {"Empty", ""}};
  aws::http_request_view req{"GET", "/", "", headers, "", std::nullopt};
  auto s = aws::sign_request(example_creds, example_scope(), req);
  ASSERT_TRUE(s) << s.error().message();
  EXPECT_EQ(header_block(s->canonical_request),
            "empty:\nhost:example.amazonaws.com\nx-a:2,1\nx-amz-date:20150830T123600Z\nx-b:one two three\n");
  EXPECT_EQ(s->signed_headers, "empty;host;x-a;x-amz-date;x-b");
}

TEST(Sigv4Test, HopByHopAndProxyRewrittenHeadersAreNotSigned) {
  const std::vector<aws::header_view> headers{
      {"host", "h"},
      {"User-Agent", "ua"},
      {"Connection", "keep-alive"},
      {"X-Amzn-Trace-Id", "Root=1"},
      {"Authorization", "x"},
      {"Transfer-Encoding", "chunked"},
      {"Expect", "100-continue"},
      {"content-length", "0"}};
  aws::http_request_view req{"POST", "/", "", headers, "", std::nullopt};
  auto s = aws::sign_request(example_creds, example_scope(), req);
  ASSERT_TRUE(s);
  EXPECT_EQ(s->signed_headers, "content-length;host;x-amz-date");
}

TEST(Sigv4Test, SignerOwnsDateTokenAndContentHashHeaders) {
  const std::vector<aws::header_view> headers{{"Host", "h"},
                                              {"X-Amz-Date", "19990101T000000Z"},
                                              {"X-Amz-Security-Token", "stale"},
                                              {"X-Amz-Content-Sha256", "stale"}};
  aws::credentials creds = example_creds;
  creds.session_token = "TOKEN";
  aws::signing_options opts;
  opts.sign_body = true;
  aws::http_request_view req{"PUT", "/", "", headers, "body", std::nullopt};
  auto s = aws::sign_request(creds, example_scope(), req, opts);
  ASSERT_TRUE(s);
  const std::string body_hash = aws::sha256_hex("body").value();
  EXPECT_EQ(header_block(s->canonical_request),
            "host:h\nx-amz-content-sha256:" + body_hash +
                "\nx-amz-date:20150830T123600Z\nx-amz-security-token:TOKEN\n");
  ASSERT_EQ(s->headers_to_add.size(), 3u);
  EXPECT_EQ(s->headers_to_add[0].name, "x-amz-date");
  EXPECT_EQ(s->headers_to_add[1].name, "x-amz-security-token");
  EXPECT_EQ(s->headers_to_add[1].value, "TOKEN");
  EXPECT_EQ(s->headers_to_add[2].name, "x-amz-content-sha256");
  EXPECT_EQ(s->headers_to_add[2].value, body_hash);
}

TEST(Sigv4Test, WithoutATokenACallerSecurityTokenHeaderIsAnOrdinaryHeader) {
  const std::vector<aws::header_view> headers{{"Host", "h"}, {"X-Amz-Security-Token", "T"}};
  aws::http_request_view req{"GET", "/", "", headers, "", std::nullopt};
  auto s = aws::sign_request(example_creds, example_scope(), req);
  ASSERT_TRUE(s);
  EXPECT_EQ(s->signed_headers, "host;x-amz-date;x-amz-security-token");
  ASSERT_EQ(s->headers_to_add.size(), 1u);  // only x-amz-date
}

TEST(Sigv4Test, UnsignedSessionTokenIsAddedButNotSigned) {
  const std::vector<aws::header_view> headers{{"Host", "h"}};
  aws::credentials creds = example_creds;
  creds.session_token = "TOKEN";
  aws::signing_options opts;
  opts.sign_session_token = false;
  aws::http_request_view req{"GET", "/", "", headers, "", std::nullopt};
  auto unsigned_token = aws::sign_request(creds, example_scope(), req, opts);
  auto no_token = aws::sign_request(example_creds, example_scope(), req);
  ASSERT_TRUE(unsigned_token && no_token);
  EXPECT_EQ(unsigned_token->signed_headers, "host;x-amz-date");
  EXPECT_EQ(unsigned_token->signature, no_token->signature);
  ASSERT_EQ(unsigned_token->headers_to_add.size(), 2u);
  EXPECT_EQ(unsigned_token->headers_to_add[1].value, "TOKEN");
}

TEST(Sigv4Test, PrecomputedPayloadHashIsSignedAsGiven) {
  const std::vector<aws::header_view> headers{{"Host", "h"}};
  aws::http_request_view req{"PUT", "/", "", headers, "ignored body", "UNSIGNED-PAYLOAD"};
  auto s = aws::sign_request(example_creds, example_scope(), req);
  ASSERT_TRUE(s);
  EXPECT_EQ(s->payload_sha256, "UNSIGNED-PAYLOAD");
  EXPECT_TRUE(s->canonical_request.ends_with("\nUNSIGNED-PAYLOAD"));
}

TEST(Sigv4Test, TheSignatureDependsOnEverySignedInput) {
  const std::vector<aws::header_view> headers{{"Host", "h"}};
  aws::http_request_view req{"POST", "/p", "a=1", headers, "{}", std::nullopt};
  const auto base = aws::sign_request(example_creds, example_scope(), req).value().signature;
  auto differs = [&](aws::credentials c, aws::signing_scope sc, aws::http_request_view r) {
    return aws::sign_request(c, sc, r).value().signature != base;
  };
  aws::credentials other_secret = example_creds;
  other_secret.secret_access_key += "x";
  EXPECT_TRUE(differs(other_secret, example_scope(), req));
  EXPECT_TRUE(differs(example_creds, {"us-west-2", "service", example_time()}, req));
  EXPECT_TRUE(differs(example_creds, {"us-east-1", "bedrock", example_time()}, req));
  EXPECT_TRUE(differs(example_creds, {"us-east-1", "service", example_time() + 1s}, req));
  aws::http_request_view r = req;
  r.body = "{ }";
  EXPECT_TRUE(differs(example_creds, example_scope(), r));
  r = req;
  r.query = "a=2";
  EXPECT_TRUE(differs(example_creds, example_scope(), r));
  r = req;
  r.path = "/q";
  EXPECT_TRUE(differs(example_creds, example_scope(), r));
  r = req;
  r.method = "PUT";
  EXPECT_TRUE(differs(example_creds, example_scope(), r));
}

TEST(Sigv4Test, RejectsWhatCannotBeSigned) {
  const std::vector<aws::header_view> with_host{{"Host", "h"}};
  const std::vector<aws::header_view> without_host{{"Accept", "*/*"}};
  aws::http_request_view req{"GET", "/", "", with_host, "", std::nullopt};

  aws::credentials no_secret = example_creds;
  no_secret.secret_access_key.clear();
  EXPECT_EQ(aws::sign_request(no_secret, example_scope(), req).error(), aws::aws_errc::missing_credentials);
  aws::credentials no_id = example_creds;
  no_id.access_key_id.clear();
  EXPECT_EQ(aws::sign_request(no_id, example_scope(), req).error(), aws::aws_errc::missing_credentials);

  aws::http_request_view r = req;
  r.headers = without_host;
  EXPECT_EQ(aws::sign_request(example_creds, example_scope(), r).error(), aws::aws_errc::missing_host);
  r = req;
  r.path = "model/x";
  EXPECT_EQ(aws::sign_request(example_creds, example_scope(), r).error(), aws::aws_errc::invalid_request);
  r = req;
  r.method = "";
  EXPECT_EQ(aws::sign_request(example_creds, example_scope(), r).error(), aws::aws_errc::invalid_request);
  EXPECT_EQ(aws::sign_request(example_creds, {"", "service", example_time()}, req).error(),
            aws::aws_errc::invalid_request);
  EXPECT_EQ(aws::sign_request(example_creds, {"us-east-1", "", example_time()}, req).error(),
            aws::aws_errc::invalid_request);

  EXPECT_EQ(aws::presign_request(example_creds, example_scope(), req, 0s).error(), aws::aws_errc::invalid_request);
  EXPECT_EQ(aws::presign_request(example_creds, example_scope(), req, 604801s).error(),
            aws::aws_errc::invalid_request);
  EXPECT_TRUE(aws::presign_request(example_creds, example_scope(), req, 604800s));
}

TEST(Sigv4Test, ErrorCodesBelongToTheAwsCategory) {
  const boost::system::error_code ec = aws::aws_errc::missing_host;
  EXPECT_EQ(&ec.category(), &aws::aws_category());
  EXPECT_STREQ(ec.category().name(), "tollgate.aws");
  EXPECT_EQ(ec.message(), "the request to sign has no Host header");
  EXPECT_NE(aws::make_error_code(aws::aws_errc::credentials_not_found).message(), "");
}

TEST(Sigv4Test, PresignAppendsTheSigningParametersAfterTheOriginalQuery) {
  const std::vector<aws::header_view> headers{{"Host", "h"}};
  aws::credentials creds = example_creds;
  creds.session_token = "a/b+c=";
  aws::http_request_view req{"GET", "/", "x=1", headers, "", std::nullopt};
  auto s = aws::presign_request(creds, example_scope(), req, 60s);
  ASSERT_TRUE(s);
  EXPECT_EQ(s->query,
            "x=1&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20150830%2Fus-east-1%2Fservice%2F"
            "aws4_request&X-Amz-Date=20150830T123600Z&X-Amz-SignedHeaders=host&X-Amz-Expires=60&"
            "X-Amz-Security-Token=a%2Fb%2Bc%3D&X-Amz-Signature=" +
                s->signature);
  EXPECT_NE(s->canonical_request.find("&X-Amz-Security-Token=a%2Fb%2Bc%3D&"), std::string::npos);
}

}  // namespace
