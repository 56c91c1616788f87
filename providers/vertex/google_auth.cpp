// SPDX-License-Identifier: Apache-2.0
#include "providers/vertex/google_auth.hpp"

#include "gateway/core/text.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>
#include <boost/url/parse.hpp>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include <algorithm>
#include <climits>

namespace tollgate::providers::google {
namespace {

namespace json = boost::json;

constexpr std::size_t max_key_file_size = 64 * 1024;
constexpr std::size_t max_token_response_size = 64 * 1024;
constexpr int min_rsa_bits = 2048;
constexpr std::int64_t max_expires_in = 7 * 24 * 3600;  // Google tokens last an hour; a week is absurd

auth_error make_error(auth_errc code, std::string message, std::string field = {}, bool retryable = false) {
  return auth_error{code, std::move(message), std::move(field), retryable};
}

using text::iequals;

bool is_alnum(char c) noexcept { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'); }

/// A short word made only of [A-Za-z0-9_.-], so it can be quoted in a message without risk.
bool is_safe_word(std::string_view s, std::size_t max_len = 64) noexcept {
  return !s.empty() && s.size() <= max_len &&
         std::all_of(s.begin(), s.end(), [](char c) { return is_alnum(c) || c == '_' || c == '-' || c == '.'; });
}

/// Visible ASCII only: what an access token may hold before it goes into an Authorization header.
bool is_visible_ascii(std::string_view s) noexcept {
  return std::all_of(s.begin(), s.end(), [](char c) { return c > 0x20 && c < 0x7f; });
}

/// Overwrites key material that we hold, so it does not linger in freed heap memory.
void cleanse(json::string& s) noexcept {
  if (!s.empty()) OPENSSL_cleanse(s.data(), s.size());
}

// --- key file fields -----------------------------------------------------------------------------

std::string key_field_error(std::string_view field, std::string_view what) {
  std::string m = "service account key file: field '";
  m.append(field).append("' ").append(what);
  return m;
}

/// A required, non-empty string field.
auth_result<std::string_view> required_string(const json::object& obj, std::string_view field) {
  const json::value* v = obj.if_contains(field);
  if (!v || v->is_null())
    return make_error(auth_errc::invalid_key_file, key_field_error(field, "is missing"), std::string(field));
  if (!v->is_string())
    return make_error(auth_errc::invalid_key_file, key_field_error(field, "must be a string"), std::string(field));
  if (v->get_string().empty())
    return make_error(auth_errc::invalid_key_file, key_field_error(field, "is empty"), std::string(field));
  return std::string_view(v->get_string());
}

/// An optional string field: empty when absent or null.
auth_result<std::string_view> optional_string(const json::object& obj, std::string_view field) {
  const json::value* v = obj.if_contains(field);
  if (!v || v->is_null()) return std::string_view{};
  if (!v->is_string())
    return make_error(auth_errc::invalid_key_file, key_field_error(field, "must be a string"), std::string(field));
  return std::string_view(v->get_string());
}

bool is_http_url(std::string_view s) {
  auto u = boost::urls::parse_absolute_uri(s);
  if (!u) return false;
  auto scheme = u->scheme();
  return (iequals(scheme, "https") || iequals(scheme, "http")) && u->has_authority() && !u->host().empty() &&
         !u->has_userinfo() && !u->has_fragment();
}

auth_error unsupported_type_error(std::string_view type) {
  if (type == "authorized_user")
    return make_error(auth_errc::unsupported_credentials,
                      "user credentials (type \"authorized_user\", from gcloud auth application-default login) are "
                      "not supported; only service account key files and the metadata server are supported",
                      "type");
  std::string m = "credential type ";
  if (is_safe_word(type, 40))
    m.append("\"").append(type).append("\" ");
  m.append("is not supported: only service account key files (type \"service_account\") and the metadata server "
           "are supported");
  return make_error(auth_errc::unsupported_credentials, std::move(m), "type");
}

// --- OpenSSL helpers -----------------------------------------------------------------------------

struct bio_free {
  void operator()(BIO* b) const noexcept { BIO_free(b); }
};
struct md_ctx_free {
  void operator()(EVP_MD_CTX* c) const noexcept { EVP_MD_CTX_free(c); }
};

constexpr std::string_view self_test_message = "tollgate google_auth key self-test";

bool verify_rs256(EVP_PKEY* pkey, std::string_view data, std::string_view sig) {
  std::unique_ptr<EVP_MD_CTX, md_ctx_free> ctx(EVP_MD_CTX_new());
  EVP_PKEY_CTX* pctx = nullptr;  // owned by ctx
  bool ok = ctx && EVP_DigestVerifyInit(ctx.get(), &pctx, EVP_sha256(), nullptr, pkey) == 1 &&
            EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) == 1 &&
            EVP_DigestVerify(ctx.get(), reinterpret_cast<const unsigned char*>(sig.data()), sig.size(),
                             reinterpret_cast<const unsigned char*>(data.data()), data.size()) == 1;
  ERR_clear_error();
  return ok;
}

/// Never prompt for a passphrase (OpenSSL would read the terminal when the callback is null).
int refuse_passphrase(char*, int, int, void*) { return 0; }

// --- token responses -----------------------------------------------------------------------------

bool retryable_status(unsigned status) noexcept {
  return status == 408 || status == 429 || status == 500 || status == 502 || status == 503 || status == 504;
}

bool retryable_oauth_error(std::string_view error) noexcept {
  return error == "internal_failure" || error == "server_error" || error == "temporarily_unavailable";
}

/// A word that looks like a credential: an access token (ya29.), a JWT (eyJ), or any long run of
/// token characters.
bool looks_like_secret(std::string_view w) noexcept {
  if (w.starts_with("ya29.") || w.starts_with("1//") || w.find("eyJ") != std::string_view::npos) return true;
  if (w.size() < 32) return false;
  return std::all_of(w.begin(), w.end(), [](char c) {
    return is_alnum(c) || c == '-' || c == '_' || c == '.' || c == '~' || c == '+' || c == '/' || c == '=';
  });
}

/// Makes a server-supplied description safe to log: printable ASCII, at most 200 characters,
/// anything that looks like a token replaced by [redacted].
std::string sanitize_description(std::string_view text) {
  constexpr std::size_t max_len = 200;
  std::string out;
  std::size_t i = 0;
  while (i < text.size() && out.size() < max_len) {
    if (text[i] == ' ' || text[i] == '\t' || text[i] == '\r' || text[i] == '\n') {
      if (!out.empty() && out.back() != ' ') out.push_back(' ');
      ++i;
      continue;
    }
    std::size_t j = i;
    while (j < text.size() && text[j] != ' ' && text[j] != '\t' && text[j] != '\r' && text[j] != '\n') ++j;
    std::string_view word = text.substr(i, j - i);
    if (looks_like_secret(word)) {
      out.append("[redacted]");
    } else {
      for (char c : word) out.push_back((c >= 0x20 && c < 0x7f) ? c : '?');
    }
    i = j;
  }
  if (out.size() > max_len) out.resize(max_len);
  while (!out.empty() && out.back() == ' ') out.pop_back();
  if (i < text.size()) out.append("...");
  return out;
}

std::string_view string_or_empty(const json::object& obj, std::string_view key) noexcept {
  const json::value* v = obj.if_contains(key);
  return (v && v->is_string()) ? std::string_view(v->get_string()) : std::string_view{};
}

/// `{"error":"invalid_grant","error_description":"..."}` (OAuth, RFC 6749 §5.2), or Google RPC
/// style `{"error":{"code":..,"message":..,"status":..}}`.
auth_error oauth_error(std::string_view label, unsigned status, const json::object& obj) {
  const json::value& e = *obj.if_contains("error");  // the caller checked it is there
  std::string_view code, description;
  if (e.is_string()) {
    code = e.get_string();
    description = string_or_empty(obj, "error_description");
  } else if (e.is_object()) {
    code = string_or_empty(e.get_object(), "status");
    description = string_or_empty(e.get_object(), "message");
  }
  std::string m(label);
  m.append(" rejected the request (HTTP ").append(std::to_string(status)).append(")");
  if (is_safe_word(code)) m.append(": ").append(code);
  std::string d = sanitize_description(description);
  if (!d.empty()) m.append(": ").append(d);
  bool retry = retryable_status(status) || retryable_oauth_error(code);
  return make_error(auth_errc::token_rejected, std::move(m), "error", retry);
}

auth_result<std::chrono::seconds> read_expires_in(std::string_view label, const json::value* v) {
  auto bad = [&](std::string_view what) {
    std::string m(label);
    m.append(" response: field 'expires_in' ").append(what);
    return make_error(auth_errc::invalid_token_response, std::move(m), "expires_in");
  };
  if (!v || v->is_null()) return bad("is missing");
  std::int64_t n = -1;
  if (v->is_int64()) {
    n = v->get_int64();
  } else if (v->is_uint64()) {
    n = v->get_uint64() > static_cast<std::uint64_t>(max_expires_in) ? max_expires_in + 1
                                                                        : static_cast<std::int64_t>(v->get_uint64());
  } else if (v->is_double()) {
    double d = v->get_double();
    if (!(d >= 0 && d <= static_cast<double>(max_expires_in))) return bad("is out of range");
    n = static_cast<std::int64_t>(d);  // whole seconds, rounded down (errs early)
  } else if (v->is_string()) {
    std::string_view s = v->get_string();
    if (s.empty() || s.size() > 10 || !std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; }))
      return bad("must be a number of seconds");
    n = 0;
    for (char c : s) n = n * 10 + (c - '0');
  } else {
    return bad("must be a number of seconds");
  }
  if (n < 0 || n > max_expires_in) return bad("is out of range");
  return std::chrono::seconds(n);
}

auth_result<access_token> parse_token_body(std::string_view label, unsigned status, std::string_view body) {
  json::value doc;
  if (body.size() <= max_token_response_size) {
    boost::system::error_code ec;
    doc = json::parse(body, ec);
    if (ec) doc = nullptr;
  }
  const json::object* obj = doc.if_object();
  if (obj && obj->contains("error")) return oauth_error(label, status, *obj);
  if (status < 200 || status >= 300) {
    std::string m(label);
    m.append(" answered HTTP ").append(std::to_string(status));
    if (!obj) m.append(" (body not JSON)");
    return make_error(auth_errc::token_rejected, std::move(m), {}, retryable_status(status));
  }
  if (!obj) {
    std::string m(label);
    m.append(" response: body is not a JSON object");
    return make_error(auth_errc::invalid_token_response, std::move(m));
  }

  auto bad = [&](std::string_view field, std::string_view what) {
    std::string m(label);
    m.append(" response: field '").append(field).append("' ").append(what);
    return make_error(auth_errc::invalid_token_response, std::move(m), std::string(field));
  };
  access_token tok;
  const json::value* at = obj->if_contains("access_token");
  if (!at || at->is_null()) return bad("access_token", "is missing");
  if (!at->is_string()) return bad("access_token", "must be a string");
  if (at->get_string().empty()) return bad("access_token", "is empty");
  // It goes into an Authorization header: refuse anything that could split or fold it.
  if (!is_visible_ascii(at->get_string())) return bad("access_token", "holds characters not allowed in a header");
  tok.value = std::string(at->get_string());

  auto exp = read_expires_in(label, obj->if_contains("expires_in"));
  if (!exp) return exp.error();
  tok.expires_in = *exp;

  if (const json::value* tt = obj->if_contains("token_type"); tt && !tt->is_null()) {
    if (!tt->is_string()) return bad("token_type", "must be a string");
    std::string_view type = tt->get_string();
    if (!iequals(type, "bearer")) {
      std::string what = "is ";
      if (is_safe_word(type, 20)) what.append("\"").append(type).append("\", ");
      what.append("not \"Bearer\"");
      return bad("token_type", what);
    }
    tok.token_type = "Bearer";
  }
  return tok;
}

bool is_valid_metadata_host(std::string_view host) noexcept {
  return !host.empty() && host.size() <= 255 && std::all_of(host.begin(), host.end(), [](char c) {
           return is_alnum(c) || c == '.' || c == '-' || c == ':' || c == '[' || c == ']';
         });
}

}  // namespace

// --- errors --------------------------------------------------------------------------------------

std::string_view to_string(auth_errc e) noexcept {
  switch (e) {
    case auth_errc::invalid_key_file: return "invalid_key_file";
    case auth_errc::unsupported_credentials: return "unsupported_credentials";
    case auth_errc::invalid_private_key: return "invalid_private_key";
    case auth_errc::signing_failed: return "signing_failed";
    case auth_errc::invalid_argument: return "invalid_argument";
    case auth_errc::credentials_unreadable: return "credentials_unreadable";
    case auth_errc::token_rejected: return "token_rejected";
    case auth_errc::invalid_token_response: return "invalid_token_response";
  }
  return "unknown";
}

std::string_view to_string(credential_origin o) noexcept {
  switch (o) {
    case credential_origin::config_key_file: return "config";
    case credential_origin::env_key_file: return "GOOGLE_APPLICATION_CREDENTIALS";
    case credential_origin::metadata_server: return "metadata_server";
  }
  return "unknown";
}

// --- encoding ------------------------------------------------------------------------------------

std::string base64url_encode(std::string_view bytes) {
  static constexpr char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string out;
  out.reserve((bytes.size() * 4 + 2) / 3);
  std::size_t i = 0;
  auto byte = [&](std::size_t k) { return static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[k])); };
  for (; i + 3 <= bytes.size(); i += 3) {
    std::uint32_t n = (byte(i) << 16) | (byte(i + 1) << 8) | byte(i + 2);
    out.push_back(alphabet[(n >> 18) & 63]);
    out.push_back(alphabet[(n >> 12) & 63]);
    out.push_back(alphabet[(n >> 6) & 63]);
    out.push_back(alphabet[n & 63]);
  }
  if (std::size_t rest = bytes.size() - i; rest == 1) {
    std::uint32_t n = byte(i) << 16;
    out.push_back(alphabet[(n >> 18) & 63]);
    out.push_back(alphabet[(n >> 12) & 63]);
  } else if (rest == 2) {
    std::uint32_t n = (byte(i) << 16) | (byte(i + 1) << 8);
    out.push_back(alphabet[(n >> 18) & 63]);
    out.push_back(alphabet[(n >> 12) & 63]);
    out.push_back(alphabet[(n >> 6) & 63]);
  }
  return out;
}

std::optional<std::string> base64url_decode(std::string_view text) {
  while (!text.empty() && text.back() == '=') text.remove_suffix(1);
  if (text.size() % 4 == 1) return std::nullopt;
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '-') return 62;
    if (c == '_') return 63;
    return -1;
  };
  std::string out;
  out.reserve(text.size() * 3 / 4);
  std::uint32_t acc = 0;
  int bits = 0;
  for (char c : text) {
    int v = value(c);
    if (v < 0) return std::nullopt;
    acc = (acc << 6) | static_cast<std::uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xff));
    }
  }
  // Leftover bits must be zero (canonical encoding).
  if (bits > 0 && (acc & ((1u << bits) - 1)) != 0) return std::nullopt;
  return out;
}

std::string form_urlencode(std::string_view value) {
  static constexpr char hex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (is_alnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
      out.push_back(c);
    } else if (c == ' ') {
      out.push_back('+');
    } else {
      auto u = static_cast<unsigned char>(c);
      out.push_back('%');
      out.push_back(hex[u >> 4]);
      out.push_back(hex[u & 15]);
    }
  }
  return out;
}

// --- rsa_signing_key -----------------------------------------------------------------------------

auth_result<rsa_signing_key> rsa_signing_key::from_pem(std::string_view pem, std::string_view field) {
  auto bad = [&](std::string_view what) {
    std::string m = "service account key file: field '";
    m.append(field).append("' ").append(what);
    return make_error(auth_errc::invalid_private_key, std::move(m), std::string(field));
  };
  if (pem.find("-----BEGIN ") == std::string_view::npos) return bad("is not in PEM format");
  if (pem.size() > static_cast<std::size_t>(INT_MAX)) return bad("is too large");

  std::unique_ptr<BIO, bio_free> bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!bio) return bad("could not be read (out of memory)");
  EVP_PKEY* raw = PEM_read_bio_PrivateKey(bio.get(), nullptr, refuse_passphrase, nullptr);
  ERR_clear_error();  // the queue may describe the input; nobody reads it, and it must not leak to others
  if (!raw) {
    if (pem.find("ENCRYPTED") != std::string_view::npos) return bad("is encrypted; passphrase-protected keys are not supported");
    return bad("is not a valid PEM private key (expected PKCS#1 \"RSA PRIVATE KEY\" or PKCS#8 \"PRIVATE KEY\")");
  }
  std::shared_ptr<evp_pkey_st> pkey(raw, [](EVP_PKEY* k) { EVP_PKEY_free(k); });
  if (EVP_PKEY_get_base_id(raw) != EVP_PKEY_RSA) return bad("is not an RSA key (RS256 needs RSA)");
  if (int bits = EVP_PKEY_get_bits(raw); bits < min_rsa_bits) {
    std::string what = "is an RSA key of ";
    what.append(std::to_string(bits)).append(" bits; at least 2048 are required");
    return bad(what);
  }
  rsa_signing_key key;
  key.pkey_ = std::move(pkey);
  // Parsing checks only the ASN.1 shape. A signature that verifies under the key's own public half
  // proves the key works, so a damaged key fails here and not as "invalid_grant" at Google. (About
  // a millisecond; EVP_PKEY_pairwise_check would cost ~70 ms for its primality tests.)
  auto probe = key.sign_rs256(self_test_message);
  if (!probe || !verify_rs256(raw, self_test_message, *probe)) return bad("is not a working RSA key pair (damaged key)");
  return key;
}

int rsa_signing_key::bits() const noexcept { return pkey_ ? EVP_PKEY_get_bits(pkey_.get()) : 0; }

auth_result<std::string> rsa_signing_key::sign_rs256(std::string_view data) const {
  auto failed = [](std::string_view step) {
    ERR_clear_error();
    std::string m = "RS256 signing failed (";
    m.append(step).append(")");
    return make_error(auth_errc::signing_failed, std::move(m));
  };
  if (!pkey_) return make_error(auth_errc::invalid_argument, "RS256 signing: no private key loaded");
  std::unique_ptr<EVP_MD_CTX, md_ctx_free> ctx(EVP_MD_CTX_new());
  if (!ctx) return failed("EVP_MD_CTX_new");
  EVP_PKEY_CTX* pctx = nullptr;  // owned by ctx
  if (EVP_DigestSignInit(ctx.get(), &pctx, EVP_sha256(), nullptr, pkey_.get()) != 1) return failed("init");
  if (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) != 1) return failed("padding");
  const auto* in = reinterpret_cast<const unsigned char*>(data.data());
  std::size_t len = 0;
  if (EVP_DigestSign(ctx.get(), nullptr, &len, in, data.size()) != 1) return failed("size");
  std::string sig(len, '\0');
  if (EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(sig.data()), &len, in, data.size()) != 1)
    return failed("sign");
  sig.resize(len);
  return sig;
}

// --- key file ------------------------------------------------------------------------------------

auth_result<service_account_key> parse_service_account_key(std::string_view text) {
  if (text.size() > max_key_file_size)
    return make_error(auth_errc::invalid_key_file, "service account key file: larger than 64 KiB");
  boost::system::error_code ec;
  json::value doc = json::parse(text, ec);
  if (ec) return make_error(auth_errc::invalid_key_file, "service account key file: not valid JSON");
  json::object* obj = doc.if_object();
  if (!obj) return make_error(auth_errc::invalid_key_file, "service account key file: not a JSON object");

  // Whatever happens below, wipe our copy of the PEM on the way out.
  struct wipe_private_key {
    json::object& o;
    ~wipe_private_key() {
      if (json::value* v = o.if_contains("private_key"); v && v->is_string()) cleanse(v->get_string());
    }
  } wipe{*obj};

  const json::value* type = obj->if_contains("type");
  if (!type || type->is_null())
    return make_error(auth_errc::invalid_key_file,
                      key_field_error("type", "is missing (expected \"service_account\")"), "type");
  if (!type->is_string())
    return make_error(auth_errc::invalid_key_file, key_field_error("type", "must be a string"), "type");
  if (type->get_string() != "service_account") return unsupported_type_error(type->get_string());

  service_account_key key;
  auto project_id = optional_string(*obj, "project_id");
  if (!project_id) return project_id.error();
  auto key_id = optional_string(*obj, "private_key_id");
  if (!key_id) return key_id.error();
  auto email = required_string(*obj, "client_email");
  if (!email) return email.error();
  auto token_uri = required_string(*obj, "token_uri");
  if (!token_uri) return token_uri.error();
  if (!is_http_url(*token_uri))
    return make_error(auth_errc::invalid_key_file, key_field_error("token_uri", "must be an absolute http(s) URL"),
                      "token_uri");
  auto pem = required_string(*obj, "private_key");
  if (!pem) return pem.error();
  auto signer = rsa_signing_key::from_pem(*pem, "private_key");
  if (!signer) return signer.error();

  key.project_id = std::string(*project_id);
  key.private_key_id = std::string(*key_id);
  key.client_email = std::string(*email);
  key.token_uri = std::string(*token_uri);
  key.private_key = std::move(*signer);
  return key;
}

// --- assertion and token request -----------------------------------------------------------------

auth_result<jwt_assertion> make_jwt_assertion(const service_account_key& key, std::chrono::sys_seconds issued_at,
                                              const assertion_options& options) {
  if (!key.private_key) return make_error(auth_errc::invalid_argument, "JWT assertion: no private key loaded");
  if (key.client_email.empty())
    return make_error(auth_errc::invalid_argument, "JWT assertion: client_email is empty", "client_email");
  if (options.scope.empty()) return make_error(auth_errc::invalid_argument, "JWT assertion: scope is empty", "scope");
  if (options.audience.empty())
    return make_error(auth_errc::invalid_argument, "JWT assertion: audience is empty", "audience");
  if (options.lifetime.count() < 1 || options.lifetime.count() > 3600)
    return make_error(auth_errc::invalid_argument, "JWT assertion: lifetime must be 1..3600 seconds", "lifetime");

  jwt_assertion a;
  a.issued_at = issued_at;
  a.expires_at = issued_at + options.lifetime;

  // Key order is part of the byte-for-byte contract (PROTOCOLS.md §4.6 vector); json::object keeps
  // insertion order and serialize() writes compact JSON without escaping '/'.
  json::object header;
  header.emplace("alg", "RS256");
  header.emplace("typ", "JWT");
  if (!key.private_key_id.empty()) header.emplace("kid", key.private_key_id);
  json::object claims;
  claims.emplace("iss", key.client_email);
  claims.emplace("scope", options.scope);
  claims.emplace("aud", options.audience);
  claims.emplace("exp", static_cast<std::int64_t>(a.expires_at.time_since_epoch().count()));
  claims.emplace("iat", static_cast<std::int64_t>(issued_at.time_since_epoch().count()));
  if (!options.subject.empty()) claims.emplace("sub", options.subject);

  a.header_json = json::serialize(header);
  a.claims_json = json::serialize(claims);
  a.signing_input = base64url_encode(a.header_json);
  a.signing_input.push_back('.');
  a.signing_input.append(base64url_encode(a.claims_json));

  auto sig = key.private_key.sign_rs256(a.signing_input);
  if (!sig) return sig.error();
  a.signature = base64url_encode(*sig);
  a.jwt.reserve(a.signing_input.size() + 1 + a.signature.size());
  a.jwt.append(a.signing_input).append(".").append(a.signature);
  return a;
}

std::string_view http_request_data::header(std::string_view name) const noexcept {
  for (const auto& [k, v] : headers)
    if (iequals(k, name)) return v;
  return {};
}

http_request_data make_token_request(const service_account_key& key, std::string_view jwt) {
  http_request_data r;
  r.method = "POST";
  r.url = key.token_uri;
  r.headers.emplace_back("Content-Type", "application/x-www-form-urlencoded");
  r.body.reserve(100 + jwt.size());
  r.body.append("grant_type=").append(form_urlencode(jwt_bearer_grant_type));
  r.body.append("&assertion=").append(form_urlencode(jwt));
  return r;
}

std::string access_token::authorization() const {
  std::string s = token_type.empty() ? std::string("Bearer") : token_type;
  s.push_back(' ');
  s.append(value);
  return s;
}

auth_result<access_token> parse_token_response(unsigned status, std::string_view body) {
  return parse_token_body("token endpoint", status, body);
}

// --- metadata server -----------------------------------------------------------------------------

auth_result<http_request_data> make_metadata_token_request(std::string_view host) {
  if (!is_valid_metadata_host(host))
    return make_error(auth_errc::invalid_argument, "metadata server host must be host[:port]", "metadata_host");
  http_request_data r;
  r.method = "GET";
  r.url = "http://";
  r.url.append(host).append(metadata_token_path);
  r.headers.emplace_back("Metadata-Flavor", "Google");
  return r;
}

auth_result<access_token> parse_metadata_token_response(unsigned status, std::string_view body) {
  return parse_token_body("metadata server", status, body);
}

// --- discovery -----------------------------------------------------------------------------------

credential_source discover_credentials(std::string_view configured_path, const getenv_fn& getenv) {
  auto env = [&](std::string_view name) -> std::string {
    if (!getenv) return {};
    return getenv(name).value_or(std::string{});
  };
  credential_source s;
  if (!configured_path.empty()) {
    s.origin = credential_origin::config_key_file;
    s.path = std::string(configured_path);
    return s;
  }
  if (std::string p = env(credentials_env); !p.empty()) {
    s.origin = credential_origin::env_key_file;
    s.path = std::move(p);
    return s;
  }
  s.origin = credential_origin::metadata_server;
  s.metadata_host = env(metadata_host_env);
  if (s.metadata_host.empty()) s.metadata_host = std::string(default_metadata_host);
  return s;
}

auth_result<credentials> load_credentials(const credential_source& source, const read_file_fn& read_file) {
  if (source.origin == credential_origin::metadata_server) {
    if (!is_valid_metadata_host(source.metadata_host))
      return make_error(auth_errc::invalid_argument,
                        std::string(metadata_host_env) + ": metadata server host must be host[:port]",
                        "metadata_host");
    return credentials{metadata_server_credentials{source.metadata_host}};
  }
  std::string where = "service account key file '";
  where.append(source.path).append("' (from ").append(to_string(source.origin)).append(")");
  if (source.path.empty())
    return make_error(auth_errc::invalid_argument, where + ": empty path");
  if (!read_file) return make_error(auth_errc::invalid_argument, where + ": no file reader");
  auto text = read_file(source.path);
  if (!text) return make_error(auth_errc::credentials_unreadable, where + ": cannot read: " + text.error().message());
  auto key = parse_service_account_key(*text);
  if (!text->empty()) OPENSSL_cleanse(text->data(), text->size());
  if (!key) {
    auth_error e = key.error();
    e.message = where + ": " + e.message;
    return e;
  }
  return credentials{std::move(*key)};
}

auth_result<credentials> resolve_credentials(std::string_view configured_path, const getenv_fn& getenv,
                                             const read_file_fn& read_file) {
  return load_credentials(discover_credentials(configured_path, getenv), read_file);
}

// --- token_cache ---------------------------------------------------------------------------------

token_cache::token_cache(token_cache_options options) : options_(options) {}

bool token_cache::refresh_in_flight(time_point now) const noexcept {
  return in_flight_ticket_ != 0 && now - in_flight_since_ < options_.refresh_timeout;
}

bool token_cache::usable(time_point now) const noexcept {
  return token_.has_value() && now < expires_at_ - options_.expiry_margin;
}

bool token_cache::needs_refresh(time_point now) const noexcept { return !token_ || now >= refresh_at_; }

token_cache::decision token_cache::decide(time_point now) {
  if (in_flight_ticket_ != 0 && !refresh_in_flight(now)) in_flight_ticket_ = 0;  // presumed lost
  const bool ok = usable(now);
  if (ok && !needs_refresh(now)) return {action::use, 0};
  if (in_flight_ticket_ != 0) return {ok ? action::use : action::wait, 0};
  if (now < retry_not_before_) return {ok ? action::use : action::fail, 0};
  in_flight_ticket_ = next_ticket_++;
  in_flight_since_ = now;
  return {ok ? action::refresh_and_use : action::refresh, in_flight_ticket_};
}

bool token_cache::complete(std::uint64_t ticket, access_token token, time_point requested_at) {
  if (ticket == 0 || ticket != in_flight_ticket_) return false;
  if (token.expires_in <= options_.expiry_margin) {
    // Unusable on arrival: treat as a failed refresh, or every caller would start another at once.
    auth_error e = make_error(auth_errc::invalid_token_response,
                              "token expires in " + std::to_string(token.expires_in.count()) +
                                  " s, within the expiry margin",
                              "expires_in", true);
    fail(ticket, std::move(e), requested_at);
    return false;
  }
  const auto lifetime = token.expires_in;
  const auto margin = std::min<std::chrono::seconds>(options_.refresh_margin, lifetime / 2);
  token_ = std::move(token);
  expires_at_ = requested_at + lifetime;
  refresh_at_ = expires_at_ - std::max<std::chrono::seconds>(margin, options_.expiry_margin);
  in_flight_ticket_ = 0;
  last_error_.reset();
  backoff_ = std::chrono::milliseconds{0};
  retry_not_before_ = time_point{};
  return true;
}

bool token_cache::fail(std::uint64_t ticket, auth_error error, time_point now) {
  if (ticket == 0 || ticket != in_flight_ticket_) return false;
  in_flight_ticket_ = 0;
  backoff_ = backoff_.count() == 0 ? options_.min_backoff : std::min(backoff_ * 2, options_.max_backoff);
  retry_not_before_ = now + backoff_;
  last_error_ = std::move(error);
  return true;
}

void token_cache::invalidate() noexcept {
  token_.reset();
  expires_at_ = time_point{};
  refresh_at_ = time_point{};
}

}  // namespace tollgate::providers::google
