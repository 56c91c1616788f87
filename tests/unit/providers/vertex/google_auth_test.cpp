// SPDX-License-Identifier: Apache-2.0
#include "providers/vertex/google_auth.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>
#include <gtest/gtest.h>
#include <openssl/decoder.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include <fstream>
#include <cstring>
#include <map>
#include <memory>
#include <sstream>

#include "tests/unit/testdata.hpp"

namespace tollgate::providers::google {
namespace {

namespace json = boost::json;
using namespace std::chrono_literals;

// --- helpers -------------------------------------------------------------------------------------

std::string testdata(const std::string& name) {
  return tollgate::testing::read_file(tollgate::testing::testdata_dir() / "google-auth-service-account" / name);
}

const json::object& vector_json() {
  static const json::value v = json::parse(testdata("derived-rs256-jwt-vector.json"));
  return v.as_object();
}

std::string vec(std::string_view key) { return std::string(vector_json().at(key).as_string()); }

json::object key_file_object() { return json::parse(testdata("service_account.json")).as_object(); }

std::string with_field(std::string_view field, json::value v) {
  json::object o = key_file_object();
  o[field] = std::move(v);
  return json::serialize(o);
}

std::string without_field(std::string_view field) {
  json::object o = key_file_object();
  o.erase(field);
  return json::serialize(o);
}

std::string with_private_key(std::string pem) { return with_field("private_key", json::string(pem)); }

using pkey_ptr = std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)>;
using bio_ptr = std::unique_ptr<BIO, decltype(&BIO_free)>;

bio_ptr mem_bio(std::string_view s) { return {BIO_new_mem_buf(s.data(), static_cast<int>(s.size())), &BIO_free}; }

std::string bio_text(BIO* b) {
  char* p = nullptr;
  long n = BIO_get_mem_data(b, &p);
  return std::string(p, static_cast<std::size_t>(n));
}

pkey_ptr test_private_key() {
  static const std::string pem = testdata("privatekey.pem");  // a mem BIO does not copy
  auto b = mem_bio(pem);
  return {PEM_read_bio_PrivateKey(b.get(), nullptr, nullptr, nullptr), &EVP_PKEY_free};
}

/// PKCS#8 PEM of `k`, optionally encrypted with a passphrase.
std::string pkcs8_pem(EVP_PKEY* k, const char* passphrase = nullptr) {
  bio_ptr b(BIO_new(BIO_s_mem()), &BIO_free);
  const EVP_CIPHER* cipher = passphrase ? EVP_aes_256_cbc() : nullptr;
  int plen = passphrase ? static_cast<int>(std::strlen(passphrase)) : 0;
  EXPECT_EQ(PEM_write_bio_PKCS8PrivateKey(b.get(), k, cipher, passphrase, plen, nullptr, nullptr), 1);
  return bio_text(b.get());
}

/// Fails when `message` contains any 16-character slice of the PEM's base64 body, or a PEM marker.
void expect_no_key_material(const std::string& message, const std::string& pem) {
  EXPECT_EQ(message.find("BEGIN"), std::string::npos) << message;
  EXPECT_EQ(message.find("-----"), std::string::npos) << message;
  std::string body;
  std::istringstream lines(pem);
  for (std::string line; std::getline(lines, line);)
    if (line.find("-----") == std::string::npos) body += line;
  for (std::size_t i = 0; i + 16 <= body.size(); ++i)
    ASSERT_EQ(message.find(body.substr(i, 16)), std::string::npos) << "message leaks key material: " << message;
}

service_account_key test_key() {
  auto k = parse_service_account_key(testdata("service_account.json"));
  EXPECT_TRUE(k) << (k ? "" : k.error().message);
  return k ? *k : service_account_key{};
}

constexpr std::chrono::sys_seconds vector_iat{std::chrono::seconds{1700000000}};

bool verify_rs256(EVP_PKEY* pub, std::string_view data, std::string_view sig) {
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), &EVP_MD_CTX_free);
  EVP_PKEY_CTX* pctx = nullptr;
  if (EVP_DigestVerifyInit(ctx.get(), &pctx, EVP_sha256(), nullptr, pub) != 1) return false;
  if (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) != 1) return false;
  int rc = EVP_DigestVerify(ctx.get(), reinterpret_cast<const unsigned char*>(sig.data()), sig.size(),
                            reinterpret_cast<const unsigned char*>(data.data()), data.size());
  ERR_clear_error();
  return rc == 1;
}

// --- the vector, byte for byte -------------------------------------------------------------------

TEST(GoogleKeyFileTest, ParsesTheTestServiceAccount) {
  auto k = parse_service_account_key(testdata("service_account.json"));
  ASSERT_TRUE(k) << k.error().message;
  EXPECT_EQ(k->project_id, "example-project");
  EXPECT_EQ(k->private_key_id, "1");
  EXPECT_EQ(k->client_email, "service-account@example.com");
  EXPECT_EQ(k->token_uri, "https://accounts.google.com/o/oauth2/token");
  ASSERT_TRUE(k->private_key);
  EXPECT_EQ(k->private_key.bits(), 2048);
}

TEST(GoogleJwtVectorTest, EveryIntermediateMatchesByteForByte) {
  ASSERT_EQ(vector_json().at("iat").as_int64(), 1700000000);
  auto a = make_jwt_assertion(test_key(), vector_iat);
  ASSERT_TRUE(a) << a.error().message;
  EXPECT_EQ(a->header_json, vec("header_json"));
  EXPECT_EQ(a->claims_json, vec("claims_json"));
  EXPECT_EQ(a->signing_input, vec("signing_input"));
  EXPECT_EQ(a->signature, vec("signature_b64url"));
  EXPECT_EQ(a->jwt, vec("jwt"));
  EXPECT_EQ(a->issued_at.time_since_epoch().count(), vector_json().at("iat").as_int64());
  EXPECT_EQ(a->expires_at.time_since_epoch().count(), vector_json().at("exp").as_int64());
  // The signing input is the two encoded segments, and they decode to the JSON strings.
  EXPECT_EQ(base64url_decode(a->signing_input.substr(0, a->signing_input.find('.'))), vec("header_json"));
  EXPECT_EQ(base64url_decode(a->signing_input.substr(a->signing_input.find('.') + 1)), vec("claims_json"));
}

TEST(GoogleJwtVectorTest, TokenRequestMatchesByteForByte) {
  auto key = test_key();
  auto a = make_jwt_assertion(key, vector_iat);
  ASSERT_TRUE(a) << a.error().message;
  http_request_data r = make_token_request(key, a->jwt);
  const json::object& want = vector_json().at("token_request").as_object();
  EXPECT_EQ(r.method, want.at("method").as_string());
  EXPECT_EQ(r.url, want.at("url").as_string());
  EXPECT_EQ(r.header("content-type"), want.at("content_type").as_string());
  EXPECT_EQ(r.body, want.at("body").as_string());
  EXPECT_TRUE(r.body.starts_with("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion="));
}

TEST(GoogleJwtVectorTest, SignatureVerifiesWithPublicKeyAndCertificate) {
  auto a = make_jwt_assertion(test_key(), vector_iat);
  ASSERT_TRUE(a) << a.error().message;
  auto sig = base64url_decode(a->signature);
  ASSERT_TRUE(sig);
  EXPECT_EQ(sig->size(), 256u);

  // privatekey.pub is a PKCS#1 "RSA PUBLIC KEY".
  std::string pub_pem = testdata("privatekey.pub");
  EVP_PKEY* raw = nullptr;
  OSSL_DECODER_CTX* dctx =
      OSSL_DECODER_CTX_new_for_pkey(&raw, "PEM", nullptr, "RSA", EVP_PKEY_PUBLIC_KEY, nullptr, nullptr);
  ASSERT_NE(dctx, nullptr);
  const auto* p = reinterpret_cast<const unsigned char*>(pub_pem.data());
  std::size_t len = pub_pem.size();
  EXPECT_EQ(OSSL_DECODER_from_data(dctx, &p, &len), 1);
  OSSL_DECODER_CTX_free(dctx);
  pkey_ptr pub(raw, &EVP_PKEY_free);
  ASSERT_TRUE(pub);
  EXPECT_TRUE(verify_rs256(pub.get(), a->signing_input, *sig));

  const std::string cert_pem = testdata("public_cert.pem");
  auto cb = mem_bio(cert_pem);
  std::unique_ptr<X509, decltype(&X509_free)> cert(PEM_read_bio_X509(cb.get(), nullptr, nullptr, nullptr), &X509_free);
  ASSERT_TRUE(cert);
  pkey_ptr cert_key(X509_get_pubkey(cert.get()), &EVP_PKEY_free);
  ASSERT_TRUE(cert_key);
  EXPECT_TRUE(verify_rs256(cert_key.get(), a->signing_input, *sig));

  // And it is really checked: a changed claim or a changed signature does not verify.
  std::string tampered = a->signing_input;
  tampered.back() = tampered.back() == 'A' ? 'B' : 'A';
  EXPECT_FALSE(verify_rs256(cert_key.get(), tampered, *sig));
  std::string bad_sig = *sig;
  bad_sig[10] = static_cast<char>(bad_sig[10] ^ 1);
  EXPECT_FALSE(verify_rs256(cert_key.get(), a->signing_input, bad_sig));
}

TEST(GoogleJwtVectorTest, Pkcs8KeyGivesTheSameJwt) {
  auto pk = test_private_key();
  ASSERT_TRUE(pk);
  std::string pem = pkcs8_pem(pk.get());
  ASSERT_NE(pem.find("-----BEGIN PRIVATE KEY-----"), std::string::npos);
  auto k = parse_service_account_key(with_private_key(pem));
  ASSERT_TRUE(k) << k.error().message;
  auto a = make_jwt_assertion(*k, vector_iat);
  ASSERT_TRUE(a) << a.error().message;
  EXPECT_EQ(a->jwt, vec("jwt"));
}

TEST(GoogleJwtTest, OptionsShapeTheClaims) {
  auto key = test_key();
  assertion_options o;
  o.scope = "https://www.googleapis.com/auth/cloud-platform https://www.googleapis.com/auth/userinfo.email";
  o.audience = "https://example.test/token";
  o.subject = "user@example.com";
  o.lifetime = 600s;
  auto a = make_jwt_assertion(key, vector_iat, o);
  ASSERT_TRUE(a) << a.error().message;
  EXPECT_EQ(a->claims_json,
            R"({"iss":"service-account@example.com","scope":"https://www.googleapis.com/auth/cloud-platform )"
            R"(https://www.googleapis.com/auth/userinfo.email","aud":"https://example.test/token",)"
            R"("exp":1700000600,"iat":1700000000,"sub":"user@example.com"})");

  key.private_key_id.clear();  // no kid in the file → no kid in the header
  a = make_jwt_assertion(key, vector_iat);
  ASSERT_TRUE(a);
  EXPECT_EQ(a->header_json, R"({"alg":"RS256","typ":"JWT"})");
}

TEST(GoogleJwtTest, BadOptionsAreRefused) {
  auto key = test_key();
  assertion_options o;
  o.scope.clear();
  auto a = make_jwt_assertion(key, vector_iat, o);
  ASSERT_FALSE(a);
  EXPECT_EQ(a.error().code, auth_errc::invalid_argument);
  EXPECT_EQ(a.error().field, "scope");

  o = {};
  o.lifetime = 3601s;
  a = make_jwt_assertion(key, vector_iat, o);
  ASSERT_FALSE(a);
  EXPECT_EQ(a.error().field, "lifetime");

  a = make_jwt_assertion(service_account_key{}, vector_iat);
  ASSERT_FALSE(a);
  EXPECT_EQ(a.error().code, auth_errc::invalid_argument);
}

// --- key-file errors -----------------------------------------------------------------------------

TEST(GoogleKeyFileTest, ErrorsNameTheFieldAndNeverTheKey) {
  const std::string pem = std::string(key_file_object().at("private_key").as_string());
  std::string corrupted = pem;  // base64 body damaged in the middle: the DER no longer parses
  for (std::size_t i = 200; i < 260; ++i)
    if (corrupted[i] != '\n') corrupted[i] = 'A';
  std::string truncated = pem.substr(0, pem.size() / 2) + "\n-----END RSA PRIVATE KEY-----\n";
  std::string no_markers = pem.substr(pem.find('\n') + 1, 400);

  struct {
    std::string text;
    auth_errc code;
    const char* field;
    const char* says;
  } cases[] = {
      {"not json", auth_errc::invalid_key_file, "", "not valid JSON"},
      {"[1,2]", auth_errc::invalid_key_file, "", "not a JSON object"},
      {without_field("type"), auth_errc::invalid_key_file, "type", "'type' is missing"},
      {with_field("type", 7), auth_errc::invalid_key_file, "type", "'type' must be a string"},
      {with_field("type", "external_account"), auth_errc::unsupported_credentials, "type", "\"external_account\""},
      {without_field("client_email"), auth_errc::invalid_key_file, "client_email", "'client_email' is missing"},
      {with_field("client_email", 5), auth_errc::invalid_key_file, "client_email", "must be a string"},
      {with_field("client_email", ""), auth_errc::invalid_key_file, "client_email", "is empty"},
      {without_field("token_uri"), auth_errc::invalid_key_file, "token_uri", "'token_uri' is missing"},
      {with_field("token_uri", "not a url"), auth_errc::invalid_key_file, "token_uri", "absolute http(s) URL"},
      {with_field("token_uri", "ftp://example.com/token"), auth_errc::invalid_key_file, "token_uri", "http(s)"},
      {with_field("private_key_id", 1), auth_errc::invalid_key_file, "private_key_id", "must be a string"},
      {with_field("project_id", json::array{}), auth_errc::invalid_key_file, "project_id", "must be a string"},
      {without_field("private_key"), auth_errc::invalid_key_file, "private_key", "'private_key' is missing"},
      {with_field("private_key", 42), auth_errc::invalid_key_file, "private_key", "must be a string"},
      {with_private_key(no_markers), auth_errc::invalid_private_key, "private_key", "not in PEM format"},
      {with_private_key(corrupted), auth_errc::invalid_private_key, "private_key", "damaged key"},
      {with_private_key(truncated), auth_errc::invalid_private_key, "private_key", "not a valid PEM private key"},
      {with_private_key(testdata("public_cert.pem")), auth_errc::invalid_private_key, "private_key",
       "not a valid PEM private key"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.text.substr(0, 60));
    auto k = parse_service_account_key(c.text);
    ASSERT_FALSE(k);
    EXPECT_EQ(k.error().code, c.code) << to_string(k.error().code);
    EXPECT_EQ(k.error().field, c.field);
    EXPECT_NE(k.error().message.find(c.says), std::string::npos) << k.error().message;
    expect_no_key_material(k.error().message, pem);
    expect_no_key_material(k.error().message, corrupted);
  }
}

TEST(GoogleKeyFileTest, EncryptedWrongAlgorithmAndShortKeysAreRefused) {
  auto pk = test_private_key();
  ASSERT_TRUE(pk);
  std::string encrypted = pkcs8_pem(pk.get(), "secret-passphrase");
  pkey_ptr ec(EVP_EC_gen("P-256"), &EVP_PKEY_free);
  ASSERT_TRUE(ec);
  std::string ec_pem = pkcs8_pem(ec.get());
  pkey_ptr small(EVP_RSA_gen(1024), &EVP_PKEY_free);
  ASSERT_TRUE(small);
  std::string small_pem = pkcs8_pem(small.get());

  struct {
    std::string pem;
    const char* says;
  } cases[] = {
      {encrypted, "encrypted"},
      {ec_pem, "not an RSA key"},
      {small_pem, "at least 2048"},
  };
  for (const auto& c : cases) {
    auto k = parse_service_account_key(with_private_key(c.pem));
    ASSERT_FALSE(k);
    EXPECT_EQ(k.error().code, auth_errc::invalid_private_key);
    EXPECT_EQ(k.error().field, "private_key");
    EXPECT_NE(k.error().message.find(c.says), std::string::npos) << k.error().message;
    EXPECT_EQ(k.error().message.find("secret-passphrase"), std::string::npos);
    expect_no_key_material(k.error().message, c.pem);
  }
  // A refused key leaves no stale OpenSSL error behind for the next user of the thread.
  EXPECT_EQ(ERR_peek_error(), 0ul);
}

TEST(GoogleKeyFileTest, AuthorizedUserCredentialsAreRefusedClearly) {
  std::string text = testdata("authorized_user.json");
  auto k = parse_service_account_key(text);
  ASSERT_FALSE(k);
  EXPECT_EQ(k.error().code, auth_errc::unsupported_credentials);
  EXPECT_EQ(to_string(k.error().code), "unsupported_credentials");
  EXPECT_EQ(k.error().field, "type");
  const std::string& m = k.error().message;
  EXPECT_NE(m.find("authorized_user"), std::string::npos) << m;
  EXPECT_NE(m.find("service account"), std::string::npos) << m;
  EXPECT_NE(m.find("metadata server"), std::string::npos) << m;
  EXPECT_EQ(m.find("alabalaportocala"), std::string::npos) << m;  // the refresh token
  EXPECT_EQ(m.find("\"secret\""), std::string::npos) << m;        // the client secret
}

TEST(GoogleKeyFileTest, PrivateKeyIdAndProjectIdAreOptional) {
  json::object o = key_file_object();
  o.erase("private_key_id");
  o.erase("project_id");
  auto k = parse_service_account_key(json::serialize(o));
  ASSERT_TRUE(k) << k.error().message;
  EXPECT_TRUE(k->private_key_id.empty());
  EXPECT_TRUE(k->project_id.empty());
}

// --- token responses -----------------------------------------------------------------------------

TEST(GoogleTokenResponseTest, GoodResponses) {
  auto t = parse_token_response(200, R"({"access_token":"ya29.abc-DEF_123","expires_in":3599,"token_type":"Bearer"})");
  ASSERT_TRUE(t) << t.error().message;
  EXPECT_EQ(t->value, "ya29.abc-DEF_123");
  EXPECT_EQ(t->expires_in, 3599s);
  EXPECT_EQ(t->token_type, "Bearer");
  EXPECT_EQ(t->authorization(), "Bearer ya29.abc-DEF_123");

  t = parse_token_response(200, R"({"access_token":"tok","expires_in":"3599","token_type":"bearer","id_token":"x"})");
  ASSERT_TRUE(t) << t.error().message;
  EXPECT_EQ(t->expires_in, 3599s);  // a string, as python google-auth accepts
  EXPECT_EQ(t->token_type, "Bearer");

  t = parse_token_response(200, R"({"access_token":"tok","expires_in":3599.9})");
  ASSERT_TRUE(t) << t.error().message;
  EXPECT_EQ(t->expires_in, 3599s);  // rounded down
  EXPECT_EQ(t->token_type, "Bearer");
}

TEST(GoogleTokenResponseTest, OAuthErrorBodies) {
  auto t = parse_token_response(400, R"({"error":"invalid_grant","error_description":"Invalid JWT Signature."})");
  ASSERT_FALSE(t);
  EXPECT_EQ(t.error().code, auth_errc::token_rejected);
  EXPECT_FALSE(t.error().retryable);
  EXPECT_EQ(t.error().message, "token endpoint rejected the request (HTTP 400): invalid_grant: Invalid JWT Signature.");

  t = parse_token_response(400, R"({"error":"temporarily_unavailable"})");
  ASSERT_FALSE(t);
  EXPECT_TRUE(t.error().retryable);
  t = parse_token_response(503, R"({"error":"unknown_thing"})");
  ASSERT_FALSE(t);
  EXPECT_TRUE(t.error().retryable);
  // An error body wins even under 200.
  t = parse_token_response(200, R"({"error":"invalid_scope","access_token":"ya29.leak"})");
  ASSERT_FALSE(t);
  EXPECT_EQ(t.error().code, auth_errc::token_rejected);
  EXPECT_EQ(t.error().message.find("ya29.leak"), std::string::npos);
  // Google RPC style.
  t = parse_token_response(403, R"({"error":{"code":403,"message":"Permission denied","status":"PERMISSION_DENIED"}})");
  ASSERT_FALSE(t);
  EXPECT_EQ(t.error().message, "token endpoint rejected the request (HTTP 403): PERMISSION_DENIED: Permission denied");
}

TEST(GoogleTokenResponseTest, ErrorsNeverEchoTokensOrBodies) {
  const std::string jwt = vec("jwt");
  std::string body = R"({"error":"invalid_grant","error_description":"bad assertion )" + jwt +
                     R"( and token ya29.c.b0AXv0zTOpaque and 0123456789abcdef0123456789abcdef0123"})";
  auto t = parse_token_response(400, body);
  ASSERT_FALSE(t);
  const std::string& m = t.error().message;
  EXPECT_EQ(m.find("eyJ"), std::string::npos) << m;
  EXPECT_EQ(m.find("ya29"), std::string::npos) << m;
  EXPECT_EQ(m.find("0123456789abcdef0123"), std::string::npos) << m;
  EXPECT_NE(m.find("bad assertion [redacted]"), std::string::npos) << m;

  // Non-JSON bodies are never quoted.
  t = parse_token_response(503, "<html>upstream ya29.secret down</html>");
  ASSERT_FALSE(t);
  EXPECT_EQ(t.error().code, auth_errc::token_rejected);
  EXPECT_TRUE(t.error().retryable);
  EXPECT_EQ(t.error().message, "token endpoint answered HTTP 503 (body not JSON)");
  t = parse_token_response(401, "Unauthorized");
  ASSERT_FALSE(t);
  EXPECT_FALSE(t.error().retryable);
  t = parse_token_response(200, "access_token=ya29.secret&expires_in=3600");
  ASSERT_FALSE(t);
  EXPECT_EQ(t.error().code, auth_errc::invalid_token_response);
  EXPECT_EQ(t.error().message.find("ya29"), std::string::npos);
  t = parse_token_response(200, "");
  ASSERT_FALSE(t);
  EXPECT_EQ(t.error().code, auth_errc::invalid_token_response);
}

TEST(GoogleTokenResponseTest, MissingOrBadFields) {
  struct {
    const char* body;
    const char* field;
  } cases[] = {
      {R"({"expires_in":3599,"token_type":"Bearer"})", "access_token"},
      {R"({"access_token":null,"expires_in":3599})", "access_token"},
      {R"({"access_token":7,"expires_in":3599})", "access_token"},
      {R"({"access_token":"","expires_in":3599})", "access_token"},
      {R"({"access_token":"ya29.a\r\nX-Evil: 1","expires_in":3599})", "access_token"},
      {R"({"access_token":"ya29.secret","token_type":"Bearer"})", "expires_in"},
      {R"({"access_token":"ya29.secret","expires_in":-1})", "expires_in"},
      {R"({"access_token":"ya29.secret","expires_in":"soon"})", "expires_in"},
      {R"({"access_token":"ya29.secret","expires_in":true})", "expires_in"},
      {R"({"access_token":"ya29.secret","expires_in":1e300})", "expires_in"},
      {R"({"access_token":"ya29.secret","expires_in":99999999999})", "expires_in"},
      {R"({"access_token":"ya29.secret","expires_in":3599,"token_type":"mac"})", "token_type"},
      {R"({"access_token":"ya29.secret","expires_in":3599,"token_type":1})", "token_type"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.body);
    auto t = parse_token_response(200, c.body);
    ASSERT_FALSE(t);
    EXPECT_EQ(t.error().code, auth_errc::invalid_token_response);
    EXPECT_EQ(t.error().field, c.field);
    EXPECT_NE(t.error().message.find(c.field), std::string::npos) << t.error().message;
    EXPECT_EQ(t.error().message.find("ya29"), std::string::npos) << t.error().message;
    EXPECT_EQ(t.error().message.find("X-Evil"), std::string::npos) << t.error().message;
  }
}

// --- metadata server -----------------------------------------------------------------------------

TEST(GoogleMetadataTest, TokenRequestAndResponse) {
  auto r = make_metadata_token_request();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->method, "GET");
  EXPECT_EQ(r->url, "http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/default/token");
  EXPECT_EQ(r->header("Metadata-Flavor"), "Google");
  EXPECT_TRUE(r->body.empty());

  r = make_metadata_token_request("127.0.0.1:8089");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->url, "http://127.0.0.1:8089/computeMetadata/v1/instance/service-accounts/default/token");
  for (const char* bad : {"", "evil.example/x?", "user@host", "host\r\nX: y"}) {
    auto e = make_metadata_token_request(bad);
    ASSERT_FALSE(e) << bad;
    EXPECT_EQ(e.error().code, auth_errc::invalid_argument);
  }

  auto t = parse_metadata_token_response(200, R"({"access_token":"ya29.m","expires_in":3338,"token_type":"Bearer"})");
  ASSERT_TRUE(t) << t.error().message;
  EXPECT_EQ(t->value, "ya29.m");
  EXPECT_EQ(t->expires_in, 3338s);
  t = parse_metadata_token_response(404, "Not Found");
  ASSERT_FALSE(t);
  EXPECT_EQ(t.error().message, "metadata server answered HTTP 404 (body not JSON)");
  t = parse_metadata_token_response(200, R"({"access_token":"ya29.m"})");
  ASSERT_FALSE(t);
  EXPECT_EQ(t.error().message, "metadata server response: field 'expires_in' is missing");
}

// --- discovery -----------------------------------------------------------------------------------

getenv_fn fake_env(std::map<std::string, std::string> vars) {
  return [vars = std::move(vars)](std::string_view name) -> std::optional<std::string> {
    auto it = vars.find(std::string(name));
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

struct fake_fs {
  std::map<std::string, std::string> files;
  std::vector<std::string> reads;
  read_file_fn reader() {
    return [this](const std::string& path) -> boost::system::result<std::string> {
      reads.push_back(path);
      auto it = files.find(path);
      if (it == files.end()) return boost::system::error_code(ENOENT, boost::system::generic_category());
      return it->second;
    };
  }
};

TEST(GoogleDiscoveryTest, ConfigPathThenEnvironmentThenMetadataServer) {
  auto env = fake_env({{"GOOGLE_APPLICATION_CREDENTIALS", "/env/key.json"}});
  credential_source s = discover_credentials("/config/key.json", env);
  EXPECT_EQ(s.origin, credential_origin::config_key_file);
  EXPECT_EQ(s.path, "/config/key.json");

  s = discover_credentials("", env);
  EXPECT_EQ(s.origin, credential_origin::env_key_file);
  EXPECT_EQ(s.path, "/env/key.json");

  s = discover_credentials("", fake_env({}));
  EXPECT_EQ(s.origin, credential_origin::metadata_server);
  EXPECT_EQ(s.metadata_host, "metadata.google.internal");
  EXPECT_TRUE(s.path.empty());

  // An empty variable counts as unset; GCE_METADATA_HOST points at another metadata server.
  s = discover_credentials("", fake_env({{"GOOGLE_APPLICATION_CREDENTIALS", ""}, {"GCE_METADATA_HOST", "127.0.0.1:9"}}));
  EXPECT_EQ(s.origin, credential_origin::metadata_server);
  EXPECT_EQ(s.metadata_host, "127.0.0.1:9");

  s = discover_credentials("", getenv_fn{});  // no environment at all
  EXPECT_EQ(s.origin, credential_origin::metadata_server);
}

TEST(GoogleDiscoveryTest, LoadsTheDiscoveredKeyFile) {
  fake_fs fs;
  fs.files["/env/key.json"] = testdata("service_account.json");
  auto c = resolve_credentials("", fake_env({{"GOOGLE_APPLICATION_CREDENTIALS", "/env/key.json"}}), fs.reader());
  ASSERT_TRUE(c) << c.error().message;
  ASSERT_TRUE(std::holds_alternative<service_account_key>(*c));
  EXPECT_EQ(std::get<service_account_key>(*c).client_email, "service-account@example.com");
  EXPECT_EQ(fs.reads, std::vector<std::string>{"/env/key.json"});

  fs.reads.clear();
  c = resolve_credentials("", fake_env({}), fs.reader());
  ASSERT_TRUE(c) << c.error().message;
  ASSERT_TRUE(std::holds_alternative<metadata_server_credentials>(*c));
  EXPECT_EQ(std::get<metadata_server_credentials>(*c).host, "metadata.google.internal");
  EXPECT_TRUE(fs.reads.empty());  // the metadata server path reads no file
}

TEST(GoogleDiscoveryTest, AnUnreadableOrBadKeyFileIsAnErrorNotAFallback) {
  fake_fs fs;
  auto env = fake_env({{"GOOGLE_APPLICATION_CREDENTIALS", "/env/missing.json"}});
  auto c = resolve_credentials("", env, fs.reader());
  ASSERT_FALSE(c);
  EXPECT_EQ(c.error().code, auth_errc::credentials_unreadable);
  EXPECT_NE(c.error().message.find("/env/missing.json"), std::string::npos) << c.error().message;
  EXPECT_NE(c.error().message.find("GOOGLE_APPLICATION_CREDENTIALS"), std::string::npos) << c.error().message;

  c = resolve_credentials("/config/missing.json", env, fs.reader());
  ASSERT_FALSE(c);
  EXPECT_NE(c.error().message.find("/config/missing.json"), std::string::npos) << c.error().message;
  EXPECT_NE(c.error().message.find("(from config)"), std::string::npos) << c.error().message;
  EXPECT_EQ(fs.reads, (std::vector<std::string>{"/env/missing.json", "/config/missing.json"}));

  fs.files["/adc.json"] = testdata("authorized_user.json");
  c = resolve_credentials("/adc.json", env, fs.reader());
  ASSERT_FALSE(c);
  EXPECT_EQ(c.error().code, auth_errc::unsupported_credentials);
  EXPECT_NE(c.error().message.find("/adc.json"), std::string::npos) << c.error().message;
  EXPECT_NE(c.error().message.find("metadata server"), std::string::npos) << c.error().message;

  c = resolve_credentials("", fake_env({{"GCE_METADATA_HOST", "evil/x"}}), fs.reader());
  ASSERT_FALSE(c);
  EXPECT_EQ(c.error().code, auth_errc::invalid_argument);
}

// --- token cache ---------------------------------------------------------------------------------

using action = token_cache::action;
const token_cache::time_point t0 = token_cache::time_point{} + 24h;

access_token token(std::string value, std::chrono::seconds expires_in = 3600s) {
  access_token t;
  t.value = std::move(value);
  t.expires_in = expires_in;
  return t;
}

auth_error refresh_error() { return auth_error{auth_errc::token_rejected, "token endpoint answered HTTP 503", {}, true}; }

TEST(GoogleTokenCacheTest, EmptyCacheStartsOneRefreshAndOthersWait) {
  token_cache c;
  EXPECT_EQ(c.token(), nullptr);
  auto d = c.decide(t0);
  EXPECT_EQ(d.what, action::refresh);
  EXPECT_NE(d.ticket, 0u);
  EXPECT_TRUE(c.refresh_in_flight(t0));
  for (int i = 0; i < 3; ++i) {
    auto w = c.decide(t0 + std::chrono::seconds(i));
    EXPECT_EQ(w.what, action::wait);
    EXPECT_EQ(w.ticket, 0u);
  }
  EXPECT_TRUE(c.complete(d.ticket, token("a"), t0));
  EXPECT_FALSE(c.refresh_in_flight(t0));
  ASSERT_NE(c.token(), nullptr);
  EXPECT_EQ(c.token()->value, "a");
  EXPECT_EQ(c.expires_at(), t0 + 3600s);
  EXPECT_EQ(c.decide(t0 + 1s).what, action::use);
}

TEST(GoogleTokenCacheTest, RefreshesEarlyWhileTheOldTokenStaysUsable) {
  token_cache_options o;  // margin 5 min, expiry margin 10 s
  o.refresh_timeout = 600s;
  token_cache c(o);
  auto d = c.decide(t0);
  ASSERT_TRUE(c.complete(d.ticket, token("a"), t0));
  EXPECT_EQ(c.decide(t0 + 3299s).what, action::use);
  auto r = c.decide(t0 + 3300s);  // 5 minutes left
  EXPECT_EQ(r.what, action::refresh_and_use);
  EXPECT_NE(r.ticket, d.ticket);
  EXPECT_EQ(c.decide(t0 + 3301s).what, action::use);   // refresh in flight, token still good
  EXPECT_EQ(c.decide(t0 + 3590s).what, action::wait);  // within the expiry margin: no longer usable
  EXPECT_TRUE(c.complete(r.ticket, token("b"), t0 + 3300s));
  EXPECT_EQ(c.token()->value, "b");
  EXPECT_EQ(c.expires_at(), t0 + 3300s + 3600s);
  EXPECT_EQ(c.decide(t0 + 3600s).what, action::use);
}

TEST(GoogleTokenCacheTest, MarginIsConfigurableAndCappedAtHalfTheLifetime) {
  token_cache_options o;
  o.refresh_margin = 60s;
  token_cache c(o);
  auto d = c.decide(t0);
  ASSERT_TRUE(c.complete(d.ticket, token("a"), t0));
  EXPECT_EQ(c.decide(t0 + 3539s).what, action::use);
  EXPECT_EQ(c.decide(t0 + 3540s).what, action::refresh_and_use);

  token_cache s;  // default 5 min margin, but a 2-minute token refreshes at half-life, not at once
  d = s.decide(t0);
  ASSERT_TRUE(s.complete(d.ticket, token("short", 120s), t0));
  EXPECT_EQ(s.decide(t0 + 59s).what, action::use);
  EXPECT_EQ(s.decide(t0 + 60s).what, action::refresh_and_use);
}

TEST(GoogleTokenCacheTest, StaleTicketsAreIgnored) {
  token_cache c;
  auto d = c.decide(t0);
  EXPECT_FALSE(c.complete(d.ticket + 1, token("x"), t0));
  EXPECT_FALSE(c.complete(0, token("x"), t0));
  EXPECT_FALSE(c.fail(d.ticket + 1, refresh_error(), t0));
  EXPECT_EQ(c.token(), nullptr);
  EXPECT_TRUE(c.refresh_in_flight(t0));
  EXPECT_TRUE(c.complete(d.ticket, token("a"), t0));
  EXPECT_FALSE(c.complete(d.ticket, token("again"), t0));  // a ticket is good once
  EXPECT_EQ(c.token()->value, "a");
}

TEST(GoogleTokenCacheTest, ALostRefreshIsTakenOverAfterTheTimeout) {
  token_cache c;  // refresh_timeout 60 s
  auto first = c.decide(t0);
  EXPECT_EQ(c.decide(t0 + 59s).what, action::wait);
  EXPECT_FALSE(c.refresh_in_flight(t0 + 60s));
  auto second = c.decide(t0 + 60s);
  EXPECT_EQ(second.what, action::refresh);
  EXPECT_NE(second.ticket, first.ticket);
  EXPECT_FALSE(c.complete(first.ticket, token("late"), t0 + 61s));
  EXPECT_TRUE(c.complete(second.ticket, token("b"), t0 + 60s));
  EXPECT_EQ(c.token()->value, "b");
}

TEST(GoogleTokenCacheTest, FailuresBackOffExponentiallyAndSuccessResets) {
  token_cache_options o;
  o.min_backoff = 1000ms;
  o.max_backoff = 3000ms;
  token_cache c(o);
  auto d = c.decide(t0);
  EXPECT_TRUE(c.fail(d.ticket, refresh_error(), t0));
  ASSERT_NE(c.last_error(), nullptr);
  EXPECT_EQ(c.last_error()->code, auth_errc::token_rejected);
  EXPECT_FALSE(c.refresh_in_flight(t0));
  EXPECT_EQ(c.decide(t0 + 999ms).what, action::fail);
  d = c.decide(t0 + 1000ms);
  EXPECT_EQ(d.what, action::refresh);

  auto t1 = t0 + 1000ms;
  EXPECT_TRUE(c.fail(d.ticket, refresh_error(), t1));  // backoff doubles: 2 s
  EXPECT_EQ(c.retry_not_before(), t1 + 2000ms);
  EXPECT_EQ(c.decide(t1 + 1999ms).what, action::fail);
  d = c.decide(t1 + 2000ms);
  EXPECT_EQ(d.what, action::refresh);
  auto t2 = t1 + 2000ms;
  EXPECT_TRUE(c.fail(d.ticket, refresh_error(), t2));  // 4 s capped at 3 s
  EXPECT_EQ(c.retry_not_before(), t2 + 3000ms);

  d = c.decide(t2 + 3000ms);
  ASSERT_EQ(d.what, action::refresh);
  EXPECT_TRUE(c.complete(d.ticket, token("a"), t2 + 3000ms));
  EXPECT_EQ(c.last_error(), nullptr);

  // After a success the backoff starts again from the minimum.
  auto t3 = t2 + 3000ms + 3300s;
  d = c.decide(t3);
  ASSERT_EQ(d.what, action::refresh_and_use);
  EXPECT_TRUE(c.fail(d.ticket, refresh_error(), t3));
  EXPECT_EQ(c.retry_not_before(), t3 + 1000ms);
  // While backing off, a still-valid token keeps being used.
  EXPECT_EQ(c.decide(t3 + 500ms).what, action::use);
  EXPECT_EQ(c.decide(t3 + 1000ms).what, action::refresh_and_use);
}

TEST(GoogleTokenCacheTest, ATokenUnusableOnArrivalCountsAsAFailure) {
  token_cache c;  // expiry margin 10 s
  auto d = c.decide(t0);
  EXPECT_FALSE(c.complete(d.ticket, token("dying", 10s), t0));
  EXPECT_EQ(c.token(), nullptr);
  ASSERT_NE(c.last_error(), nullptr);
  EXPECT_EQ(c.last_error()->code, auth_errc::invalid_token_response);
  EXPECT_EQ(c.decide(t0 + 500ms).what, action::fail);  // no refresh storm
}

TEST(GoogleTokenCacheTest, InvalidateForcesARefresh) {
  token_cache c;
  auto d = c.decide(t0);
  ASSERT_TRUE(c.complete(d.ticket, token("a"), t0));
  c.invalidate();  // e.g. the upstream answered 401
  EXPECT_EQ(c.token(), nullptr);
  d = c.decide(t0 + 1s);
  EXPECT_EQ(d.what, action::refresh);
  EXPECT_EQ(c.decide(t0 + 2s).what, action::wait);
}

// --- encoding helpers ----------------------------------------------------------------------------

TEST(GoogleEncodingTest, Base64UrlAndFormEncoding) {
  // RFC 4648 §10 vectors, without padding.
  const std::pair<const char*, const char*> rfc[] = {{"", ""},         {"f", "Zg"},         {"fo", "Zm8"},
                                                     {"foo", "Zm9v"},  {"foob", "Zm9vYg"},  {"fooba", "Zm9vYmE"},
                                                     {"foobar", "Zm9vYmFy"}};
  for (auto [in, out] : rfc) {
    EXPECT_EQ(base64url_encode(in), out);
    EXPECT_EQ(base64url_decode(out), in);
  }
  EXPECT_EQ(base64url_encode(std::string("\xfb\xff\xbf", 3)), "-_-_");
  EXPECT_EQ(base64url_decode("-_-_"), std::string("\xfb\xff\xbf", 3));
  EXPECT_EQ(base64url_decode("Zg=="), "f");
  EXPECT_FALSE(base64url_decode("Zm9v+A"));  // '+' is not base64url
  EXPECT_FALSE(base64url_decode("Z"));
  EXPECT_FALSE(base64url_decode("Zh"));  // non-zero trailing bits

  EXPECT_EQ(form_urlencode("urn:ietf:params:oauth:grant-type:jwt-bearer"),
            "urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer");
  EXPECT_EQ(form_urlencode("a b&c=d/é~._-"), "a+b%26c%3Dd%2F%C3%A9~._-");
}

}  // namespace
}  // namespace tollgate::providers::google
