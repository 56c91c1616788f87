// SPDX-License-Identifier: Apache-2.0
#include "providers/bedrock/sigv4.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <utility>

namespace tollgate::providers::aws {

// ------------------------------------------------------------------------------------------------
// Error category
// ------------------------------------------------------------------------------------------------

namespace {

class aws_category_impl final : public boost::system::error_category {
 public:
  const char* name() const noexcept override { return "tollgate.aws"; }
  std::string message(int ev) const override {
    switch (static_cast<aws_errc>(ev)) {
      case aws_errc::ok: return "ok";
      case aws_errc::missing_credentials: return "AWS access key id or secret access key is empty";
      case aws_errc::missing_host: return "the request to sign has no Host header";
      case aws_errc::invalid_request: return "the request or signing scope cannot be signed";
      case aws_errc::crypto_failure: return "OpenSSL SHA-256/HMAC failed";
      case aws_errc::credentials_not_found: return "no AWS credentials found";
      case aws_errc::incomplete_credentials: return "incomplete AWS credentials";
      case aws_errc::profile_not_found: return "AWS profile not found";
      case aws_errc::malformed_credentials_file: return "malformed AWS shared credentials file";
      case aws_errc::unreadable_credentials_file: return "AWS shared credentials file cannot be read";
    }
    return "unknown tollgate.aws error";
  }
};

}  // namespace

const boost::system::error_category& aws_category() noexcept {
  static const aws_category_impl instance;
  return instance;
}

// ------------------------------------------------------------------------------------------------
// Small helpers
// ------------------------------------------------------------------------------------------------

namespace {

using digest = std::array<std::uint8_t, 32>;

constexpr bool is_unreserved(unsigned char c) noexcept {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
         c == '.' || c == '~';
}

constexpr bool is_space(char c) noexcept { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

char to_lower(char c) noexcept { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = to_lower(c);
  return out;
}

std::string_view trim(std::string_view s) noexcept {
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

/// Trims and collapses every whitespace run (spaces, tabs, folded line breaks) into one space.
std::string fold_value(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  bool pending_space = false;
  for (char c : v) {
    if (is_space(c)) {
      pending_space = !out.empty();
      continue;
    }
    if (pending_space) out.push_back(' ');
    pending_space = false;
    out.push_back(c);
  }
  return out;
}

std::string to_hex(std::span<const std::uint8_t> bytes) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (std::uint8_t b : bytes) {
    out.push_back(digits[b >> 4]);
    out.push_back(digits[b & 0x0f]);
  }
  return out;
}

int hex_value(char c) noexcept {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/// Decodes %XX escapes; a '%' not followed by two hex digits stays literal. '+' stays '+'.
std::string percent_decode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && hex_value(s[i + 1]) >= 0 && hex_value(s[i + 2]) >= 0) {
      out.push_back(static_cast<char>(hex_value(s[i + 1]) * 16 + hex_value(s[i + 2])));
      i += 2;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

bool sha256(std::string_view data, digest& out) noexcept {
  unsigned int len = 0;
  return EVP_Digest(data.data(), data.size(), out.data(), &len, EVP_sha256(), nullptr) == 1 && len == out.size();
}

bool hmac_sha256(std::span<const std::uint8_t> key, std::string_view data, digest& out) noexcept {
  if (key.size() > static_cast<std::size_t>(INT_MAX)) return false;
  unsigned int len = 0;
  const unsigned char* r = HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
                                reinterpret_cast<const unsigned char*>(data.data()), data.size(), out.data(), &len);
  return r != nullptr && len == out.size();
}

/// Headers never signed: hop-by-hop or commonly rewritten on the way (botocore and smithy lists).
constexpr std::string_view unsignable_headers[] = {
    "authorization", "connection",         "expect", "keep-alive", "proxy-authenticate", "proxy-authorization",
    "te",            "trailer",            "transfer-encoding",    "upgrade",            "user-agent",
    "x-amzn-trace-id",
};

bool is_unsignable(std::string_view lower_name) noexcept {
  return std::find(std::begin(unsignable_headers), std::end(unsignable_headers), lower_name) !=
         std::end(unsignable_headers);
}

enum class signing_mode { headers, query };

/// Everything both signing modes compute.
struct signing_core : signature_parts {
  std::string amz_date;
};

using header_entries = std::vector<std::pair<std::string, std::string>>;  // lower name -> joined value

/// Lower-cased, folded, duplicate-joined, sorted headers of `req`, without the unsignable ones and
/// without those the signer owns in this mode.
header_entries collect_headers(std::span<const header_view> headers, std::span<const std::string_view> owned) {
  std::map<std::string, std::string, std::less<>> joined;
  for (const header_view& h : headers) {
    std::string name = lower(trim(h.name));
    if (name.empty() || is_unsignable(name)) continue;
    if (std::find(owned.begin(), owned.end(), std::string_view{name}) != owned.end()) continue;
    std::string value = fold_value(h.value);
    auto [it, inserted] = joined.try_emplace(std::move(name), value);
    if (!inserted) {
      it->second.push_back(',');
      it->second += value;
    }
  }
  return {std::make_move_iterator(joined.begin()), std::make_move_iterator(joined.end())};
}

void insert_sorted(header_entries& entries, std::string name, std::string value) {
  auto at = std::lower_bound(entries.begin(), entries.end(), name,
                             [](const auto& e, const std::string& n) { return e.first < n; });
  entries.insert(at, {std::move(name), std::move(value)});
}

bool has_header(const header_entries& entries, std::string_view name) {
  return std::any_of(entries.begin(), entries.end(), [&](const auto& e) { return e.first == name; });
}

boost::system::error_code validate(const credentials& creds, const signing_scope& scope,
                                   const http_request_view& req) {
  if (creds.access_key_id.empty() || creds.secret_access_key.empty()) return aws_errc::missing_credentials;
  if (req.method.empty() || scope.region.empty() || scope.service.empty()) return aws_errc::invalid_request;
  if (!req.path.empty() && req.path.front() != '/') return aws_errc::invalid_request;
  return {};
}

result<std::string> payload_hash(const http_request_view& req) {
  if (req.payload_sha256) return std::string(*req.payload_sha256);
  return sha256_hex(req.body);
}

/// Canonical request, string to sign and signature from already canonical pieces.
result<signing_core> sign_canonical(const credentials& creds, const signing_scope& scope, std::string_view method,
                                    std::string_view uri, std::string_view query, const header_entries& headers,
                                    std::string payload, std::string amz_date) {
  signing_core core;
  core.amz_date = std::move(amz_date);
  core.payload_sha256 = std::move(payload);
  const std::string_view date8 = std::string_view{core.amz_date}.substr(0, 8);
  core.credential_scope.append(date8).append("/").append(scope.region).append("/").append(scope.service);
  core.credential_scope += "/aws4_request";

  std::string& creq = core.canonical_request;
  creq.append(method).append("\n").append(uri).append("\n").append(query).append("\n");
  for (const auto& [name, value] : headers) {
    creq.append(name).append(":").append(value).append("\n");
    if (!core.signed_headers.empty()) core.signed_headers.push_back(';');
    core.signed_headers += name;
  }
  creq.append("\n").append(core.signed_headers).append("\n").append(core.payload_sha256);

  auto creq_hash = sha256_hex(creq);
  if (!creq_hash) return creq_hash.error();
  core.string_to_sign.append(sigv4_algorithm).append("\n").append(core.amz_date).append("\n");
  core.string_to_sign.append(core.credential_scope).append("\n").append(*creq_hash);

  auto key = derive_signing_key(creds.secret_access_key, date8, scope.region, scope.service);
  if (!key) return key.error();
  digest sig{};
  const bool ok = hmac_sha256(*key, core.string_to_sign, sig);
  OPENSSL_cleanse(key->data(), key->size());
  if (!ok) return make_error_code(aws_errc::crypto_failure);
  core.signature = to_hex(sig);
  return core;
}

}  // namespace

// ------------------------------------------------------------------------------------------------
// Public signing API
// ------------------------------------------------------------------------------------------------

std::string uri_encode(std::string_view s, bool keep_slash) {
  static constexpr char digits[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(s.size());
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (is_unreserved(c) || (keep_slash && c == '/')) {
      out.push_back(ch);
    } else {
      out.push_back('%');
      out.push_back(digits[c >> 4]);
      out.push_back(digits[c & 0x0f]);
    }
  }
  return out;
}

std::string canonical_uri(std::string_view path, const signing_options& options) {
  if (path.empty()) return "/";
  std::string p;
  if (options.normalize_path) {
    // botocore's remove_dot_segments: drop empty and "." segments, ".." pops; keep a trailing '/'.
    std::vector<std::string_view> kept;
    std::string_view rest = path;
    while (!rest.empty()) {
      const std::size_t slash = rest.find('/');
      const std::string_view seg = rest.substr(0, slash);
      rest = slash == std::string_view::npos ? std::string_view{} : rest.substr(slash + 1);
      if (seg.empty() || seg == ".") continue;
      if (seg == "..") {
        if (!kept.empty()) kept.pop_back();
        continue;
      }
      kept.push_back(seg);
    }
    p = "/";
    for (std::size_t i = 0; i < kept.size(); ++i) {
      if (i != 0) p.push_back('/');
      p.append(kept[i]);
    }
    if (!kept.empty() && path.back() == '/') p.push_back('/');
  } else {
    p = std::string(path);
  }
  return options.double_encode_path ? uri_encode(p, true) : p;
}

std::string canonical_query(std::string_view query) {
  std::vector<std::pair<std::string, std::string>> params;
  while (!query.empty()) {
    const std::size_t amp = query.find('&');
    const std::string_view part = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view{} : query.substr(amp + 1);
    if (part.empty()) continue;
    const std::size_t eq = part.find('=');
    const std::string_view key = part.substr(0, eq);
    const std::string_view value = eq == std::string_view::npos ? std::string_view{} : part.substr(eq + 1);
    params.emplace_back(uri_encode(percent_decode(key), false), uri_encode(percent_decode(value), false));
  }
  std::sort(params.begin(), params.end());
  std::string out;
  for (const auto& [k, v] : params) {
    if (!out.empty()) out.push_back('&');
    out.append(k).append("=").append(v);
  }
  return out;
}

result<std::string> sha256_hex(std::string_view data) {
  digest d{};
  if (!sha256(data, d)) return make_error_code(aws_errc::crypto_failure);
  return to_hex(d);
}

result<std::array<std::uint8_t, 32>> derive_signing_key(std::string_view secret_access_key,
                                                        std::string_view yyyymmdd, std::string_view region,
                                                        std::string_view service) {
  std::string k_secret = "AWS4";
  k_secret += secret_access_key;
  digest k_date{}, k_region{}, k_service{}, k_signing{};
  const auto* secret_bytes = reinterpret_cast<const std::uint8_t*>(k_secret.data());
  const bool ok = hmac_sha256({secret_bytes, k_secret.size()}, yyyymmdd, k_date) &&
                  hmac_sha256(k_date, region, k_region) && hmac_sha256(k_region, service, k_service) &&
                  hmac_sha256(k_service, "aws4_request", k_signing);
  OPENSSL_cleanse(k_secret.data(), k_secret.size());
  OPENSSL_cleanse(k_date.data(), k_date.size());
  OPENSSL_cleanse(k_region.data(), k_region.size());
  OPENSSL_cleanse(k_service.data(), k_service.size());
  if (!ok) return make_error_code(aws_errc::crypto_failure);
  return k_signing;
}

std::string format_amz_date(std::chrono::sys_seconds t) {
  using namespace std::chrono;
  const sys_days day = floor<days>(t);
  const year_month_day ymd{day};
  const hh_mm_ss hms{t - day};
  char buf[32];
  std::snprintf(buf, sizeof buf, "%04d%02u%02uT%02d%02d%02dZ", static_cast<int>(ymd.year()),
                static_cast<unsigned>(ymd.month()), static_cast<unsigned>(ymd.day()),
                static_cast<int>(hms.hours().count()), static_cast<int>(hms.minutes().count()),
                static_cast<int>(hms.seconds().count()));
  return buf;
}

std::optional<std::chrono::sys_seconds> parse_amz_date(std::string_view text) {
  // Accept the basic form 20150830T123600Z and the extended form 2015-08-30T12:36:00Z.
  std::string digits;
  const bool extended = text.size() == 20;
  if (text.size() != 16 && !extended) return std::nullopt;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    const bool sep_pos = extended ? (i == 4 || i == 7 || i == 13 || i == 16) : false;
    const std::size_t t_pos = extended ? 10 : 8;
    if (i == t_pos) {
      if (c != 'T') return std::nullopt;
    } else if (i + 1 == text.size()) {
      if (c != 'Z') return std::nullopt;
    } else if (sep_pos) {
      if (c != ((i == 4 || i == 7) ? '-' : ':')) return std::nullopt;
    } else if (c >= '0' && c <= '9') {
      digits.push_back(c);
    } else {
      return std::nullopt;
    }
  }
  if (digits.size() != 14) return std::nullopt;
  auto num = [&](std::size_t pos, std::size_t len) {
    int v = 0;
    for (std::size_t i = pos; i < pos + len; ++i) v = v * 10 + (digits[i] - '0');
    return v;
  };
  using namespace std::chrono;
  const year_month_day ymd{year{num(0, 4)}, month{static_cast<unsigned>(num(4, 2))},
                           day{static_cast<unsigned>(num(6, 2))}};
  const int hh = num(8, 2), mm = num(10, 2), ss = num(12, 2);
  if (!ymd.ok() || hh > 23 || mm > 59 || ss > 59) return std::nullopt;
  return sys_days{ymd} + hours{hh} + minutes{mm} + seconds{ss};
}

result<signed_request> sign_request(const credentials& creds, const signing_scope& scope,
                                    const http_request_view& req, const signing_options& options) {
  if (auto ec = validate(creds, scope, req)) return ec;
  const bool has_token = !creds.session_token.empty();

  std::vector<std::string_view> owned{"x-amz-date"};
  if (has_token) owned.push_back("x-amz-security-token");
  if (options.sign_body) owned.push_back("x-amz-content-sha256");
  header_entries headers = collect_headers(req.headers, owned);
  if (!has_header(headers, "host")) return make_error_code(aws_errc::missing_host);

  auto payload = payload_hash(req);
  if (!payload) return payload.error();
  std::string amz_date = format_amz_date(scope.time);

  signed_request out;
  out.headers_to_add.push_back({"x-amz-date", amz_date});
  insert_sorted(headers, "x-amz-date", amz_date);
  if (has_token) {
    out.headers_to_add.push_back({"x-amz-security-token", creds.session_token});
    if (options.sign_session_token) insert_sorted(headers, "x-amz-security-token", creds.session_token);
  }
  if (options.sign_body) {
    out.headers_to_add.push_back({"x-amz-content-sha256", *payload});
    insert_sorted(headers, "x-amz-content-sha256", *payload);
  }

  auto core = sign_canonical(creds, scope, req.method, canonical_uri(req.path, options), canonical_query(req.query),
                             headers, std::move(*payload), std::move(amz_date));
  if (!core) return core.error();

  static_cast<signature_parts&>(out) = std::move(static_cast<signature_parts&>(*core));
  out.authorization.append(sigv4_algorithm).append(" Credential=").append(creds.access_key_id).append("/");
  out.authorization.append(out.credential_scope).append(", SignedHeaders=").append(out.signed_headers);
  out.authorization.append(", Signature=").append(out.signature);
  return out;
}

result<presigned_request> presign_request(const credentials& creds, const signing_scope& scope,
                                          const http_request_view& req, std::chrono::seconds expires_in,
                                          const signing_options& options) {
  if (auto ec = validate(creds, scope, req)) return ec;
  if (expires_in.count() < 1 || expires_in.count() > 604800) return make_error_code(aws_errc::invalid_request);
  const bool has_token = !creds.session_token.empty();

  std::vector<std::string_view> owned{"x-amz-date"};
  if (has_token) owned.push_back("x-amz-security-token");
  header_entries headers = collect_headers(req.headers, owned);
  if (!has_header(headers, "host")) return make_error_code(aws_errc::missing_host);

  auto payload = payload_hash(req);
  if (!payload) return payload.error();
  std::string amz_date = format_amz_date(scope.time);

  std::string signed_headers;
  for (const auto& entry : headers) {
    if (!signed_headers.empty()) signed_headers.push_back(';');
    signed_headers += entry.first;
  }
  std::string scope_str(std::string_view{amz_date}.substr(0, 8));
  scope_str.append("/").append(scope.region).append("/").append(scope.service).append("/aws4_request");
  const std::string credential = uri_encode(creds.access_key_id + "/" + scope_str, false);
  const std::string expires = std::to_string(expires_in.count());

  // The signing parameters, in the order they are appended to the request's query.
  std::string added = "X-Amz-Algorithm=";
  added.append(sigv4_algorithm).append("&X-Amz-Credential=").append(credential);
  added.append("&X-Amz-Date=").append(amz_date);
  added.append("&X-Amz-SignedHeaders=").append(uri_encode(signed_headers, false));
  added.append("&X-Amz-Expires=").append(expires);
  std::string token_param;
  if (has_token) token_param = "&X-Amz-Security-Token=" + uri_encode(creds.session_token, false);

  std::string to_canonicalize(req.query);
  if (!to_canonicalize.empty()) to_canonicalize.push_back('&');
  to_canonicalize += added;
  if (options.sign_session_token) to_canonicalize += token_param;

  auto core = sign_canonical(creds, scope, req.method, canonical_uri(req.path, options),
                             canonical_query(to_canonicalize), headers, std::move(*payload), std::move(amz_date));
  if (!core) return core.error();

  presigned_request out;
  static_cast<signature_parts&>(out) = std::move(static_cast<signature_parts&>(*core));
  out.query.assign(req.query);
  if (!out.query.empty()) out.query.push_back('&');
  out.query.append(added).append(token_param).append("&X-Amz-Signature=").append(out.signature);
  return out;
}

// ------------------------------------------------------------------------------------------------
// Credential resolution
// ------------------------------------------------------------------------------------------------

namespace {

credentials_error cred_error(aws_errc code, std::string message) { return {code, std::move(message)}; }

std::optional<std::string> lookup(const getenv_fn& getenv, std::string_view name) {
  if (!getenv) return std::nullopt;
  auto v = getenv(name);
  if (!v || v->empty()) return std::nullopt;
  return v;
}

/// "~" or "~/x" -> "$HOME" or "$HOME/x" when HOME is known.
std::string expand_home(std::string_view path, const std::optional<std::string>& home) {
  if (!home || path.empty() || path.front() != '~') return std::string(path);
  if (path.size() == 1 || path[1] == '/') return *home + std::string(path.substr(1));
  return std::string(path);
}

std::string quoted(std::string_view s) { return "'" + std::string(s) + "'"; }

/// Cuts a trailing " #comment" / " ;comment" (the marker must follow whitespace).
std::string_view strip_inline_comment(std::string_view v) {
  for (std::size_t i = 1; i < v.size(); ++i) {
    if ((v[i] == '#' || v[i] == ';') && is_space(v[i - 1])) return trim(v.substr(0, i));
  }
  return v;
}

const std::string* find_key(const ini_section& section, std::string_view key) {
  auto it = section.find(key);
  if (it == section.end() || it->second.empty()) return nullptr;
  return &it->second;
}

}  // namespace

std::string_view to_string(credentials_source s) noexcept {
  switch (s) {
    case credentials_source::config: return "config";
    case credentials_source::environment: return "environment";
    case credentials_source::shared_credentials_file: return "shared_credentials_file";
  }
  return "unknown";
}

credentials_inputs system_credentials_inputs() {
  credentials_inputs in;
  in.getenv = [](std::string_view name) -> std::optional<std::string> {
    const char* v = std::getenv(std::string(name).c_str());
    if (v == nullptr || *v == '\0') return std::nullopt;
    return std::string(v);
  };
  in.read_file = [](const std::string& path) -> std::optional<std::string> {
    constexpr std::size_t max_size = 1 << 20;
    std::ifstream file(path, std::ios::binary);
    if (!file) return std::nullopt;
    std::string text;
    char buf[4096];
    while (file.read(buf, sizeof buf) || file.gcount() > 0) {
      text.append(buf, static_cast<std::size_t>(file.gcount()));
      if (text.size() > max_size) return std::nullopt;
    }
    if (file.bad()) return std::nullopt;
    return text;
  };
  return in;
}

credentials_result<std::optional<credentials>> credentials_from_config(const credentials_config& cfg) {
  const bool id = !cfg.access_key_id.empty(), secret = !cfg.secret_access_key.empty();
  if (!id && !secret) {
    if (!cfg.session_token.empty()) {
      return cred_error(aws_errc::incomplete_credentials,
                        "config: session_token is set without access_key_id and secret_access_key");
    }
    return std::optional<credentials>{};
  }
  if (!secret) {
    return cred_error(aws_errc::incomplete_credentials, "config: access_key_id is set but secret_access_key is empty");
  }
  if (!id) {
    return cred_error(aws_errc::incomplete_credentials, "config: secret_access_key is set but access_key_id is empty");
  }
  return std::optional<credentials>{credentials{cfg.access_key_id, cfg.secret_access_key, cfg.session_token}};
}

credentials_result<std::optional<credentials>> credentials_from_environment(const getenv_fn& getenv) {
  auto id = lookup(getenv, "AWS_ACCESS_KEY_ID");
  auto secret = lookup(getenv, "AWS_SECRET_ACCESS_KEY");
  if (!id && !secret) return std::optional<credentials>{};
  if (!secret) {
    return cred_error(aws_errc::incomplete_credentials,
                      "environment: AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not");
  }
  if (!id) {
    return cred_error(aws_errc::incomplete_credentials,
                      "environment: AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not");
  }
  auto token = lookup(getenv, "AWS_SESSION_TOKEN");
  return std::optional<credentials>{credentials{std::move(*id), std::move(*secret), token ? std::move(*token) : ""}};
}

credentials_result<ini_file> parse_shared_credentials(std::string_view text, std::string_view path) {
  if (text.starts_with("\xEF\xBB\xBF")) text.remove_prefix(3);
  ini_file out;
  ini_section* section = nullptr;
  constexpr std::size_t no_property = std::string_view::npos;
  std::size_t property_indent = no_property;  // indent of the last property line, if any
  std::size_t line_no = 0;
  auto malformed = [&](std::string_view what) {
    // Only path, line number and a fixed description: the line itself may hold a secret.
    return cred_error(aws_errc::malformed_credentials_file,
                      std::string(path) + ":" + std::to_string(line_no) + ": " + std::string(what));
  };
  while (!text.empty()) {
    ++line_no;
    const std::size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view{} : text.substr(nl + 1);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);

    std::size_t indent = 0;
    while (indent < line.size() && (line[indent] == ' ' || line[indent] == '\t')) ++indent;
    const std::string_view content = trim(line.substr(indent));
    if (content.empty() || content.front() == '#' || content.front() == ';') continue;
    if (property_indent != no_property && indent > property_indent) continue;  // continuation / nested sub-property

    if (content.front() == '[') {
      const std::size_t close = content.find(']');
      if (close == std::string_view::npos) return malformed("section header without ']'");
      const std::string_view after = trim(content.substr(close + 1));
      if (!after.empty() && after.front() != '#' && after.front() != ';') {
        return malformed("unexpected text after a section header");
      }
      const std::string_view name = trim(content.substr(1, close - 1));
      if (name.empty()) return malformed("empty section name");
      section = &out.try_emplace(std::string(name)).first->second;
      property_indent = no_property;
      continue;
    }
    if (section == nullptr) return malformed("property before any [profile] section");
    const std::size_t eq = content.find('=');
    if (eq == std::string_view::npos) return malformed("expected 'key = value'");
    const std::string key = lower(trim(content.substr(0, eq)));
    if (key.empty()) return malformed("empty property name");
    (*section)[key] = std::string(strip_inline_comment(trim(content.substr(eq + 1))));
    property_indent = indent;
  }
  return out;
}

credentials_result<credentials> credentials_from_shared_file(std::string_view text, std::string_view profile,
                                                             std::string_view path) {
  auto parsed = parse_shared_credentials(text, path);
  if (!parsed) return parsed.error();
  auto it = parsed->find(profile);
  if (it == parsed->end()) {
    return cred_error(aws_errc::profile_not_found,
                      "profile " + quoted(profile) + " not found in " + std::string(path));
  }
  const ini_section& s = it->second;
  const std::string* id = find_key(s, "aws_access_key_id");
  const std::string* secret = find_key(s, "aws_secret_access_key");
  const std::string where = "profile " + quoted(profile) + " in " + std::string(path);
  if (id == nullptr && secret == nullptr) {
    return cred_error(aws_errc::incomplete_credentials,
                      where + " has no aws_access_key_id and aws_secret_access_key (role, SSO, process and "
                              "web-identity profiles are not supported)");
  }
  if (secret == nullptr) {
    return cred_error(aws_errc::incomplete_credentials,
                      where + ": aws_access_key_id is set but aws_secret_access_key is missing");
  }
  if (id == nullptr) {
    return cred_error(aws_errc::incomplete_credentials,
                      where + ": aws_secret_access_key is set but aws_access_key_id is missing");
  }
  const std::string* token = find_key(s, "aws_session_token");
  return credentials{*id, *secret, token ? *token : std::string{}};
}

credentials_result<resolved_credentials> resolve_credentials(const credentials_config& cfg,
                                                             const credentials_inputs& inputs) {
  // 1. Explicit keys in the config.
  auto from_cfg = credentials_from_config(cfg);
  if (!from_cfg) return from_cfg.error();
  if (*from_cfg) return resolved_credentials{std::move(**from_cfg), credentials_source::config, {}, {}};

  // 2. The environment, unless the config names a profile explicitly.
  if (cfg.profile.empty()) {
    auto from_env = credentials_from_environment(inputs.getenv);
    if (!from_env) return from_env.error();
    if (*from_env) return resolved_credentials{std::move(**from_env), credentials_source::environment, {}, {}};
  }

  // 3. The shared credentials file.
  const auto home = lookup(inputs.getenv, "HOME");
  std::string path;
  std::string path_origin;  // where an explicit path came from, empty for the default path
  if (!cfg.shared_credentials_file.empty()) {
    path = expand_home(cfg.shared_credentials_file, home);
    path_origin = "config shared_credentials_file";
  } else if (auto env_path = lookup(inputs.getenv, "AWS_SHARED_CREDENTIALS_FILE")) {
    path = expand_home(*env_path, home);
    path_origin = "AWS_SHARED_CREDENTIALS_FILE";
  } else if (home) {
    path = *home + "/.aws/credentials";
  }
  std::string profile = "default";
  std::string profile_origin;  // empty for the default profile
  if (!cfg.profile.empty()) {
    profile = cfg.profile;
    profile_origin = "config profile";
  } else if (auto env_profile = lookup(inputs.getenv, "AWS_PROFILE")) {
    profile = *env_profile;
    profile_origin = "AWS_PROFILE";
  }

  const std::string tried =
      "no AWS credentials found (config has no access_key_id/secret_access_key, AWS_ACCESS_KEY_ID and "
      "AWS_SECRET_ACCESS_KEY are not set";
  if (path.empty()) {
    if (!profile_origin.empty()) {
      return cred_error(aws_errc::unreadable_credentials_file,
                        "profile " + quoted(profile) + " (from " + profile_origin +
                            ") requested but HOME is not set, so there is no shared credentials file to read");
    }
    return cred_error(aws_errc::credentials_not_found, tried + ", and HOME is not set)");
  }
  std::optional<std::string> text = inputs.read_file ? inputs.read_file(path) : std::nullopt;
  if (!text) {
    if (!path_origin.empty()) {
      return cred_error(aws_errc::unreadable_credentials_file,
                        "cannot read the shared credentials file " + path + " (from " + path_origin + ")");
    }
    if (!profile_origin.empty()) {
      return cred_error(aws_errc::unreadable_credentials_file,
                        "profile " + quoted(profile) + " (from " + profile_origin + ") requested but " + path +
                            " cannot be read");
    }
    return cred_error(aws_errc::credentials_not_found, tried + ", and " + path + " cannot be read)");
  }
  auto from_file = credentials_from_shared_file(*text, profile, path);
  if (!from_file) {
    credentials_error e = from_file.error();
    if (e.code == aws_errc::profile_not_found) {
      if (profile_origin.empty()) {
        return cred_error(aws_errc::credentials_not_found, tried + ", and " + path + " has no [default] profile)");
      }
      e.message += " (profile from " + profile_origin + ")";
    }
    return e;
  }
  return resolved_credentials{std::move(*from_file), credentials_source::shared_credentials_file, std::move(profile),
                              std::move(path)};
}

}  // namespace tollgate::providers::aws
