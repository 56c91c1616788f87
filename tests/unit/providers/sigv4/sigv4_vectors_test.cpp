// SPDX-License-Identifier: Apache-2.0
// The SigV4 signer against every stored vector, byte for byte:
//  - shared/testdata/aws-sig-v4-test-suite/      classic AWS suite (.req/.creq/.sts/.authz), walked recursively;
//  - shared/testdata/aws-signing-test-suite-v4/  aws-c-auth suite (context.json, header-* and query-* results);
//  - shared/testdata/bedrock-sigv4-derived/      Bedrock Runtime requests (model ids with ':' and an ARN).
// Cases are discovered by walking the folders, so a case cannot be skipped silently.
#include <gtest/gtest.h>

// Boost.JSON header-only: the sigv4_test target does not link Boost::json. Only in this file.
#include <boost/json/src.hpp>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "providers/bedrock/sigv4.hpp"

#include "tests/unit/testdata.hpp"

namespace aws = tollgate::providers::aws;
namespace fs = std::filesystem;
namespace json = boost::json;

namespace {

const fs::path testdata{TOLLGATE_TESTDATA};
const fs::path classic_root = testdata / "aws-sig-v4-test-suite";
const fs::path crt_root = testdata / "aws-signing-test-suite-v4";
const fs::path bedrock_file = testdata / "bedrock-sigv4-derived" / "bedrock-sigv4-vectors.json";

constexpr std::string_view suite_access_key = "AKIDEXAMPLE";
constexpr std::string_view suite_secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

using tollgate::testing::read_file;
using tollgate::testing::try_read_file;

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string gtest_name(std::string_view s) {
  std::string out;
  for (char c : s) out.push_back(std::isalnum(static_cast<unsigned char>(c)) ? c : '_');
  return out;
}

/// A raw HTTP/1.1 request as stored in the suites: request line, `Name:value` headers (a line
/// starting with whitespace continues the previous value), blank line, body.
struct raw_request {
  std::string method;
  std::string target;  ///< path + optional "?query", exactly as in the file
  std::string path;
  std::string query;
  std::string version;
  std::vector<std::pair<std::string, std::string>> headers;  ///< names as written, values raw
  std::string body;

  std::optional<std::string> header(std::string_view name) const {
    for (const auto& [n, v] : headers)
      if (lower(n) == lower(name)) return v;
    return std::nullopt;
  }
  void remove_header(std::string_view name) {
    std::erase_if(headers, [&](const auto& h) { return lower(h.first) == lower(name); });
  }
  std::vector<aws::header_view> views() const {
    std::vector<aws::header_view> out;
    for (const auto& [n, v] : headers) out.push_back({n, v});
    return out;
  }
};

std::optional<raw_request> parse_raw_request(std::string_view text) {
  raw_request r;
  auto next_line = [&](std::string_view& line) {
    if (text.empty()) return false;
    const std::size_t nl = text.find('\n');
    line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view{} : text.substr(nl + 1);
    return true;
  };
  std::string_view line;
  if (!next_line(line)) return std::nullopt;
  // The target may contain spaces (get-space): method is before the first space, version after the last.
  const std::size_t first = line.find(' '), last = line.rfind(' ');
  if (first == std::string_view::npos || last == first) return std::nullopt;
  r.method = line.substr(0, first);
  r.target = line.substr(first + 1, last - first - 1);
  r.version = line.substr(last + 1);
  const std::size_t q = r.target.find('?');
  r.path = r.target.substr(0, q);
  if (q != std::string::npos) r.query = r.target.substr(q + 1);
  while (next_line(line)) {
    if (line.empty()) {
      r.body = text;
      break;
    }
    if (line.front() == ' ' || line.front() == '\t') {
      if (r.headers.empty()) return std::nullopt;
      r.headers.back().second.append("\n").append(line);
      continue;
    }
    const std::size_t colon = line.find(':');
    if (colon == std::string_view::npos) return std::nullopt;
    r.headers.emplace_back(line.substr(0, colon), line.substr(colon + 1));
  }
  return r;
}

using header_set = std::vector<std::pair<std::string, std::string>>;

header_set normalized(header_set h) {
  for (auto& e : h) e.first = lower(e.first);
  std::sort(h.begin(), h.end());
  return h;
}

// ------------------------------------------------------------------------------------------------
// Classic suite: shared/testdata/aws-sig-v4-test-suite
// ------------------------------------------------------------------------------------------------

struct classic_case {
  std::string name;  ///< relative folder, e.g. "post-sts-token/post-sts-header-after"
  fs::path dir;
  std::string stem;
};

void PrintTo(const classic_case& c, std::ostream* os) { *os << c.name; }

std::vector<classic_case> discover_classic() {
  std::vector<classic_case> cases;
  std::error_code ec;
  for (fs::recursive_directory_iterator it(classic_root, ec), end; !ec && it != end; it.increment(ec)) {
    if (!it->is_regular_file()) continue;
    const fs::path& p = it->path();
    if (p.extension() != ".req" && p.extension() != ".creq") continue;
    classic_case c{fs::relative(p.parent_path(), classic_root).generic_string(), p.parent_path(),
                   p.stem().string()};
    if (std::none_of(cases.begin(), cases.end(), [&](const auto& o) { return o.name == c.name; }))
      cases.push_back(std::move(c));
  }
  std::sort(cases.begin(), cases.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  return cases;
}

const std::vector<classic_case>& classic_cases() {
  static const std::vector<classic_case> cases = discover_classic();
  return cases;
}

/// Cases whose .sts/.authz were not computed from their own .creq (sha256(.creq) differs from the
/// hash in .sts): in AWS's published suite both form-urlencoded cases list Content-Length in .creq
/// but their .sts/.authz (and .sreq) were made without it. Only these may take the fallback path.
const std::set<std::string> classic_inconsistent = {"post-x-www-form-urlencoded",
                                                    "post-x-www-form-urlencoded-parameters"};

struct classic_outcome {
  aws::signed_request signed_req;
  std::string token;
};

/// Signs a classic-suite request with the suite's fixed inputs (aws-c-auth's configuration:
/// double encoding and path normalization on, no body-hash header).
testing::AssertionResult sign_classic(const classic_case& c, const raw_request& req, aws::signed_request& out,
                                      std::string& token_out) {
  raw_request r = req;
  // Session token: signed when the unsigned request already carries it (post-sts-header-before);
  // otherwise taken from the signed request (.sreq), and for *-header-after added after signing.
  std::string token;
  bool sign_token = true;
  if (auto t = r.header("X-Amz-Security-Token")) {
    token = *t;
  } else if (auto sreq = parse_raw_request(read_file(c.dir / (c.stem + ".sreq")))) {
    token = sreq->header("X-Amz-Security-Token").value_or("");
    sign_token = !c.stem.ends_with("-header-after");
  }
  const auto date = r.header("X-Amz-Date");
  if (!date) return testing::AssertionFailure() << "no X-Amz-Date in the request";
  const auto time = aws::parse_amz_date(*date);
  if (!time) return testing::AssertionFailure() << "bad X-Amz-Date " << *date;

  const aws::credentials creds{std::string(suite_access_key), std::string(suite_secret), token};
  const auto views = r.views();  // still holds X-Amz-Date: the signer must replace it, not sign it twice
  aws::http_request_view view{r.method, r.path, r.query, views, r.body, std::nullopt};
  aws::signing_options opts;
  opts.double_encode_path = true;
  opts.normalize_path = true;
  opts.sign_body = false;
  opts.sign_session_token = sign_token;
  auto s = aws::sign_request(creds, {"us-east-1", "service", *time}, view, opts);
  if (!s) return testing::AssertionFailure() << "sign_request failed: " << s.error().message();
  out = std::move(*s);
  token_out = token;
  return testing::AssertionSuccess();
}

class Sigv4ClassicSuiteTest : public testing::TestWithParam<classic_case> {};

TEST_P(Sigv4ClassicSuiteTest, MatchesCanonicalRequestStringToSignAndAuthorization) {
  const classic_case& c = GetParam();
  const fs::path base = c.dir / c.stem;
  for (const char* ext : {".req", ".creq", ".sts", ".authz", ".sreq"})
    ASSERT_TRUE(fs::exists(base.string() + ext)) << "case " << c.name << " lacks " << ext;
  const auto req = parse_raw_request(read_file(base.string() + ".req"));
  ASSERT_TRUE(req) << "cannot parse " << c.name << ".req";
  const std::string creq = read_file(base.string() + ".creq");
  const std::string sts = read_file(base.string() + ".sts");
  const std::string authz = read_file(base.string() + ".authz");

  aws::signed_request s;
  std::string token;
  ASSERT_TRUE(sign_classic(c, *req, s, token));
  EXPECT_EQ(s.canonical_request, creq);

  // The headers the caller must add.
  ASSERT_FALSE(s.headers_to_add.empty());
  EXPECT_EQ(s.headers_to_add[0].name, "x-amz-date");
  EXPECT_EQ(s.headers_to_add[0].value, "20150830T123600Z");
  if (!token.empty()) {
    ASSERT_EQ(s.headers_to_add.size(), 2u);
    EXPECT_EQ(s.headers_to_add[1].name, "x-amz-security-token");
    EXPECT_EQ(s.headers_to_add[1].value, token);
  } else {
    EXPECT_EQ(s.headers_to_add.size(), 1u);
  }

  const std::string sts_hash = sts.substr(sts.rfind('\n') + 1);
  const bool consistent = aws::sha256_hex(creq).value() == sts_hash;
  if (consistent) {
    EXPECT_EQ(classic_inconsistent.count(c.stem), 0u) << c.name << " is consistent now; drop it from the list";
    EXPECT_EQ(s.string_to_sign, sts);
    EXPECT_EQ(s.authorization, authz);
    EXPECT_EQ(authz.substr(authz.rfind('=') + 1), s.signature);
    return;
  }
  ASSERT_EQ(classic_inconsistent.count(c.stem), 1u)
      << c.name << ": .sts does not hash .creq, and the case is not a known inconsistent one";
  // Known inconsistent case: .sts/.authz belong to the request in .sreq (which has no Content-Length).
  auto sreq = parse_raw_request(read_file(base.string() + ".sreq"));
  ASSERT_TRUE(sreq);
  sreq->remove_header("Authorization");
  ASSERT_TRUE(sign_classic(c, *sreq, s, token));
  if (s.string_to_sign != sts) {
    GTEST_SKIP() << c.name << ": the suite's .sts/.authz match neither its .creq nor its .sreq "
                 << "(see Sigv4ClassicSuite.FormParametersVectorWasSignedWithCharsetUtf8); the canonical "
                 << "request was checked, string to sign and Authorization are not";
  }
  EXPECT_EQ(s.string_to_sign, sts);
  EXPECT_EQ(s.authorization, authz);
}

INSTANTIATE_TEST_SUITE_P(AwsSigV4TestSuite, Sigv4ClassicSuiteTest, testing::ValuesIn(classic_cases()),
                         [](const testing::TestParamInfo<classic_case>& i) { return gtest_name(i.param.name); });

TEST(Sigv4ClassicSuite, DiscoversEveryCase) {
  const auto& cases = classic_cases();
  std::cout << "[ INFO     ] aws-sig-v4-test-suite: " << cases.size() << " cases\n";
  ASSERT_GT(cases.size(), 0u) << "no case found under " << classic_root;
  // As stored: 24 top-level cases, 7 under normalize-path/, 2 under post-sts-token/.
  EXPECT_EQ(cases.size(), 33u);
  auto under = [&](std::string_view folder) {
    return std::count_if(cases.begin(), cases.end(), [&](const auto& c) { return c.name.starts_with(folder); });
  };
  EXPECT_EQ(under("normalize-path/"), 7);
  EXPECT_EQ(under("post-sts-token/"), 2);
}

// The .sts and the signature of post-x-www-form-urlencoded-parameters reproduce when the request is
// signed with "charset=utf8" (not the "charset=utf-8" of its .req/.sreq) and without Content-Length;
// its .authz also lists content-length in SignedHeaders although the signature was computed without
// it. Slips in the stored suite, not in the signer; checked here so the skip above stays explained.
TEST(Sigv4ClassicSuite, FormParametersVectorWasSignedWithCharsetUtf8) {
  const classic_case c{"post-x-www-form-urlencoded-parameters",
                       classic_root / "post-x-www-form-urlencoded-parameters",
                       "post-x-www-form-urlencoded-parameters"};
  auto req = parse_raw_request(read_file(c.dir / (c.stem + ".req")));
  ASSERT_TRUE(req);
  req->remove_header("Content-Length");
  for (auto& [n, v] : req->headers)
    if (lower(n) == "content-type") v = "application/x-www-form-urlencoded; charset=utf8";
  aws::signed_request s;
  std::string token;
  ASSERT_TRUE(sign_classic(c, *req, s, token));
  EXPECT_EQ(s.string_to_sign, read_file(c.dir / (c.stem + ".sts")));
  const std::string authz = read_file(c.dir / (c.stem + ".authz"));
  EXPECT_EQ(authz.substr(authz.rfind("Signature=") + 10), s.signature);
  EXPECT_NE(authz, s.authorization);  // SignedHeaders differ, see above
  EXPECT_EQ(s.signed_headers, "content-type;host;x-amz-date");
}

// ------------------------------------------------------------------------------------------------
// aws-c-auth suite: shared/testdata/aws-signing-test-suite-v4
// ------------------------------------------------------------------------------------------------

struct crt_case {
  std::string name;
  fs::path dir;
};

void PrintTo(const crt_case& c, std::ostream* os) { *os << c.name; }

std::vector<crt_case> discover_crt() {
  std::vector<crt_case> cases;
  std::error_code ec;
  for (fs::recursive_directory_iterator it(crt_root, ec), end; !ec && it != end; it.increment(ec)) {
    if (it->is_regular_file() && it->path().filename() == "context.json") {
      cases.push_back({fs::relative(it->path().parent_path(), crt_root).generic_string(), it->path().parent_path()});
    }
  }
  std::sort(cases.begin(), cases.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  return cases;
}

const std::vector<crt_case>& crt_cases() {
  static const std::vector<crt_case> cases = discover_crt();
  return cases;
}

struct crt_context {
  aws::credentials creds;
  std::string region;
  std::string service;
  std::chrono::sys_seconds time;
  aws::signing_options opts;
  std::chrono::seconds expires{0};
};

testing::AssertionResult load_context(const fs::path& dir, crt_context& ctx) {
  json::error_code ec;
  const json::value v = json::parse(read_file(dir / "context.json"), ec);
  if (ec || !v.is_object()) return testing::AssertionFailure() << "bad context.json: " << ec.message();
  const json::object& o = v.as_object();
  const json::object& cr = o.at("credentials").as_object();
  ctx.creds.access_key_id = json::value_to<std::string>(cr.at("access_key_id"));
  ctx.creds.secret_access_key = json::value_to<std::string>(cr.at("secret_access_key"));
  if (const auto* t = cr.if_contains("token")) ctx.creds.session_token = json::value_to<std::string>(*t);
  ctx.region = json::value_to<std::string>(o.at("region"));
  ctx.service = json::value_to<std::string>(o.at("service"));
  const auto time = aws::parse_amz_date(json::value_to<std::string>(o.at("timestamp")));
  if (!time) return testing::AssertionFailure() << "bad timestamp";
  ctx.time = *time;
  ctx.opts.double_encode_path = true;  // every case uses a non-S3 service
  ctx.opts.normalize_path = o.at("normalize").as_bool();
  ctx.opts.sign_body = o.at("sign_body").as_bool();
  const auto* omit = o.if_contains("omit_session_token");
  ctx.opts.sign_session_token = !(omit && omit->as_bool());
  ctx.expires = std::chrono::seconds{o.at("expiration_in_seconds").to_number<std::int64_t>()};
  return testing::AssertionSuccess();
}

class Sigv4CrtSuiteTest : public testing::TestWithParam<crt_case> {};

TEST_P(Sigv4CrtSuiteTest, HeaderSigningMatches) {
  const crt_case& c = GetParam();
  crt_context ctx;
  ASSERT_TRUE(load_context(c.dir, ctx));
  const auto req = parse_raw_request(read_file(c.dir / "request.txt"));
  ASSERT_TRUE(req);
  const auto views = req->views();
  aws::http_request_view view{req->method, req->path, req->query, views, req->body, std::nullopt};
  auto s = aws::sign_request(ctx.creds, {ctx.region, ctx.service, ctx.time}, view, ctx.opts);
  ASSERT_TRUE(s) << s.error().message();
  EXPECT_EQ(s->canonical_request, read_file(c.dir / "header-canonical-request.txt"));
  EXPECT_EQ(s->string_to_sign, read_file(c.dir / "header-string-to-sign.txt"));
  EXPECT_EQ(s->signature, read_file(c.dir / "header-signature.txt"));

  // The signed request = the unsigned one + headers_to_add + Authorization (names compared case-insensitively).
  const auto expected = parse_raw_request(read_file(c.dir / "header-signed-request.txt"));
  ASSERT_TRUE(expected);
  EXPECT_EQ(expected->method, req->method);
  EXPECT_EQ(expected->target, req->target);
  EXPECT_EQ(expected->body, req->body);
  header_set ours = req->headers;
  for (const auto& h : s->headers_to_add) ours.emplace_back(h.name, h.value);
  ours.emplace_back("authorization", s->authorization);
  EXPECT_EQ(normalized(ours), normalized(expected->headers));
}

TEST_P(Sigv4CrtSuiteTest, QuerySigningMatches) {
  const crt_case& c = GetParam();
  crt_context ctx;
  ASSERT_TRUE(load_context(c.dir, ctx));
  const auto req = parse_raw_request(read_file(c.dir / "request.txt"));
  ASSERT_TRUE(req);
  const auto views = req->views();
  aws::http_request_view view{req->method, req->path, req->query, views, req->body, std::nullopt};
  auto s = aws::presign_request(ctx.creds, {ctx.region, ctx.service, ctx.time}, view, ctx.expires, ctx.opts);
  ASSERT_TRUE(s) << s.error().message();
  EXPECT_EQ(s->canonical_request, read_file(c.dir / "query-canonical-request.txt"));
  EXPECT_EQ(s->string_to_sign, read_file(c.dir / "query-string-to-sign.txt"));
  EXPECT_EQ(s->signature, read_file(c.dir / "query-signature.txt"));

  const auto expected = parse_raw_request(read_file(c.dir / "query-signed-request.txt"));
  ASSERT_TRUE(expected);
  EXPECT_EQ(expected->method, req->method);
  EXPECT_EQ(expected->target, req->path + "?" + s->query);  // byte for byte, parameter order included
  EXPECT_EQ(expected->body, req->body);
  EXPECT_EQ(normalized(expected->headers), normalized(req->headers));
}

INSTANTIATE_TEST_SUITE_P(AwsSigningTestSuiteV4, Sigv4CrtSuiteTest, testing::ValuesIn(crt_cases()),
                         [](const testing::TestParamInfo<crt_case>& i) { return gtest_name(i.param.name); });

TEST(Sigv4CrtSuite, DiscoversEveryCase) {
  const auto& cases = crt_cases();
  std::cout << "[ INFO     ] aws-signing-test-suite-v4: " << cases.size() << " cases (header + query each)\n";
  ASSERT_GT(cases.size(), 0u) << "no case found under " << crt_root;
  EXPECT_EQ(cases.size(), 38u);
  for (const auto& c : cases) {
    for (const char* f : {"request.txt", "header-canonical-request.txt", "header-string-to-sign.txt",
                          "header-signature.txt", "header-signed-request.txt", "query-canonical-request.txt",
                          "query-string-to-sign.txt", "query-signature.txt", "query-signed-request.txt"})
      EXPECT_TRUE(fs::exists(c.dir / f)) << c.name << " lacks " << f;
  }
}

// ------------------------------------------------------------------------------------------------
// Bedrock vectors: shared/testdata/bedrock-sigv4-derived/bedrock-sigv4-vectors.json
// ------------------------------------------------------------------------------------------------

struct bedrock_case {
  std::string name;
  json::object v;
};

void PrintTo(const bedrock_case& c, std::ostream* os) { *os << c.name; }

std::vector<bedrock_case> load_bedrock() {
  std::vector<bedrock_case> cases;
  auto text = try_read_file(bedrock_file);
  if (!text) return cases;
  json::error_code ec;
  json::value v = json::parse(*text, ec);
  if (ec || !v.is_array()) return cases;
  for (const json::value& c : v.as_array()) {
    if (!c.is_object()) continue;
    const auto* name = c.as_object().if_contains("name");
    cases.push_back({name && name->is_string() ? std::string(name->as_string()) : "unnamed", c.as_object()});
  }
  return cases;
}

const std::vector<bedrock_case>& bedrock_cases() {
  static const std::vector<bedrock_case> cases = load_bedrock();
  return cases;
}

std::string str(const json::object& o, std::string_view key) { return json::value_to<std::string>(o.at(key)); }

class Sigv4BedrockTest : public testing::TestWithParam<bedrock_case> {};

TEST_P(Sigv4BedrockTest, MatchesDerivedVector) {
  const json::object& v = GetParam().v;
  const json::object& cr = v.at("credentials").as_object();
  aws::credentials creds{str(cr, "access_key_id"), str(cr, "secret_access_key"), ""};
  if (cr.contains("session_token")) creds.session_token = str(cr, "session_token");
  const auto time = aws::parse_amz_date(str(v, "timestamp"));
  ASSERT_TRUE(time);
  const std::string region = str(v, "region"), service = str(v, "service");
  EXPECT_EQ(service, aws::bedrock_signing_name);

  const json::object& rq = v.at("request").as_object();
  const std::string url = str(rq, "url");
  const std::size_t scheme = url.find("://");
  ASSERT_NE(scheme, std::string::npos);
  const std::size_t path_at = url.find('/', scheme + 3);
  ASSERT_NE(path_at, std::string::npos);
  std::string path = url.substr(path_at), query;
  if (const std::size_t q = path.find('?'); q != std::string::npos) {
    query = path.substr(q + 1);
    path.resize(q);
  }
  // The wire path carries the model id percent-encoded once, as uri_encode does it.
  const std::string encoded_model = aws::uri_encode(str(v, "model_id"), false);
  EXPECT_TRUE(path.starts_with("/model/" + encoded_model + "/")) << path;

  std::vector<std::string> names, values;
  for (const auto& kv : rq.at("headers").as_object()) {
    names.emplace_back(kv.key());
    values.push_back(json::value_to<std::string>(kv.value()));
  }
  std::vector<aws::header_view> headers;
  for (std::size_t i = 0; i < names.size(); ++i) headers.push_back({names[i], values[i]});
  const std::string body = str(rq, "body");
  const std::string method = str(rq, "method");
  aws::http_request_view view{method, path, query, headers, body, std::nullopt};

  auto s = aws::sign_request(creds, {region, service, *time}, view);  // defaults: the Bedrock settings
  ASSERT_TRUE(s) << s.error().message();
  EXPECT_EQ(s->payload_sha256, str(v, "payload_sha256"));
  EXPECT_EQ(s->canonical_request, str(v, "canonical_request"));
  EXPECT_EQ(s->string_to_sign, str(v, "string_to_sign"));
  EXPECT_EQ(s->signature, str(v, "signature"));

  const json::object& added = v.at("signed_headers").as_object();
  EXPECT_EQ(s->authorization, str(added, "authorization"));
  header_set expected_added, ours;
  for (const auto& kv : added)
    if (kv.key() != "authorization") expected_added.emplace_back(kv.key(), json::value_to<std::string>(kv.value()));
  for (const auto& h : s->headers_to_add) ours.emplace_back(h.name, h.value);
  EXPECT_EQ(normalized(ours), normalized(expected_added));

  // Same result when the caller passes the payload hash instead of the body.
  const std::string hash = str(v, "payload_sha256");
  view.body = {};
  view.payload_sha256 = hash;
  auto s2 = aws::sign_request(creds, {region, service, *time}, view);
  ASSERT_TRUE(s2);
  EXPECT_EQ(s2->authorization, s->authorization);
}

INSTANTIATE_TEST_SUITE_P(BedrockSigv4Derived, Sigv4BedrockTest, testing::ValuesIn(bedrock_cases()),
                         [](const testing::TestParamInfo<bedrock_case>& i) { return gtest_name(i.param.name); });

TEST(Sigv4Bedrock, LoadsEveryCase) {
  ASSERT_TRUE(fs::exists(bedrock_file)) << bedrock_file;
  const auto& cases = bedrock_cases();
  std::cout << "[ INFO     ] bedrock-sigv4-vectors.json: " << cases.size() << " cases\n";
  ASSERT_GT(cases.size(), 0u);
  EXPECT_EQ(cases.size(), 3u);
}

}  // namespace
