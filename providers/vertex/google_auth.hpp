// SPDX-License-Identifier: Apache-2.0
#pragma once
/// Google authentication for the Vertex AI provider: the pure parts, with no sockets and no threads.
///
///   key file JSON ──parse_service_account_key──► service_account_key
///   key + time ──make_jwt_assertion──► RS256 JWT ──make_token_request──► POST token_uri (form body)
///   token endpoint / metadata server response ──parse_*_token_response──► access_token
///   token_cache: when to refresh, one refresh in flight at a time, backoff after failures
///   discover_credentials / load_credentials: config path → GOOGLE_APPLICATION_CREDENTIALS → metadata server
///
/// Wire formats: PROTOCOLS.md §4.6 (google-auth-library-python `service_account.py`, `_client.py`,
/// `jwt.py`; `compute_engine/_metadata.py`). Nothing here throws except std::bad_alloc; errors are
/// values (`auth_result`). No error message ever contains the private key, an assertion or a token.
#include <boost/system/result.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

struct evp_pkey_st;  // OpenSSL's EVP_PKEY, kept out of this header

namespace tollgate::providers::google {

// ---------------------------------------------------------------------------------------------
// Errors

/// What went wrong, as a stable lower_snake word (`to_string`) for logs and response details.
enum class auth_errc {
  invalid_key_file = 1,     ///< key file is not a JSON object, or a field is missing or has a bad value
  unsupported_credentials,  ///< a credential type other than service_account (authorized_user, ...)
  invalid_private_key,      ///< `private_key` is not a usable PEM RSA private key (PKCS#1 or PKCS#8)
  signing_failed,           ///< OpenSSL could not sign (should not happen with a loaded key)
  invalid_argument,         ///< a caller-supplied value is unusable (empty scope, bad metadata host, ...)
  credentials_unreadable,   ///< the key file named by config or the environment cannot be read
  token_rejected,           ///< the token endpoint / metadata server answered an error
  invalid_token_response,   ///< a success status whose body is not a usable token response
};

/// `invalid_key_file`, `token_rejected`, ...
std::string_view to_string(auth_errc e) noexcept;

struct auth_error {
  auth_errc code = auth_errc::invalid_argument;
  std::string message;     ///< for operators; never holds key material, assertions or tokens
  std::string field;       ///< key-file field or response field concerned, or empty
  bool retryable = false;  ///< a later attempt may succeed (5xx, 429, temporarily_unavailable, ...)
};

template <class T>
using auth_result = boost::system::result<T, auth_error>;

// ---------------------------------------------------------------------------------------------
// Keys

/// A loaded RSA private key (>= 2048 bits). Cheap to copy (shared, immutable); usable from several
/// threads at once. Holds no PEM text.
class rsa_signing_key {
 public:
  rsa_signing_key() = default;

  /// Loads a PEM private key: PKCS#1 (`BEGIN RSA PRIVATE KEY`) or PKCS#8 (`BEGIN PRIVATE KEY`).
  /// Encrypted keys are refused (no passphrase prompt). Errors name `field` and never quote the PEM.
  static auth_result<rsa_signing_key> from_pem(std::string_view pem, std::string_view field = "private_key");

  /// RSASSA-PKCS1-v1_5 with SHA-256 over `data` (OpenSSL EVP_DigestSign); raw signature bytes.
  auth_result<std::string> sign_rs256(std::string_view data) const;

  /// Modulus size in bits; 0 when empty.
  int bits() const noexcept;
  explicit operator bool() const noexcept { return pkey_ != nullptr; }

 private:
  std::shared_ptr<evp_pkey_st> pkey_;
};

inline constexpr std::string_view default_token_uri = "https://oauth2.googleapis.com/token";

/// A parsed `type: service_account` key file. Unknown fields are ignored.
struct service_account_key {
  std::string project_id;      ///< optional in the file; empty when absent
  std::string private_key_id;  ///< JWT header `kid`; optional in the file (then no `kid`)
  std::string client_email;    ///< JWT `iss`
  std::string token_uri;       ///< where the token request is POSTed (http or https URL)
  rsa_signing_key private_key;
};

/// Parses a key file's text. Required: `type` == "service_account", `client_email`, `private_key`,
/// `token_uri`; `project_id` and `private_key_id` must be strings when present. `authorized_user`
/// (user credentials from `gcloud auth application-default login`) and other types are refused
/// with `unsupported_credentials`. Errors name the field (`auth_error::field`) and never contain
/// any part of the private key.
auth_result<service_account_key> parse_service_account_key(std::string_view json);

// ---------------------------------------------------------------------------------------------
// JWT-bearer assertion (RFC 7523) and the token request

inline constexpr std::string_view cloud_platform_scope = "https://www.googleapis.com/auth/cloud-platform";
/// google-auth-library-python always puts this in `aud`, whatever the key file's token_uri says.
inline constexpr std::string_view google_token_audience = "https://oauth2.googleapis.com/token";
inline constexpr std::string_view jwt_bearer_grant_type = "urn:ietf:params:oauth:grant-type:jwt-bearer";

struct assertion_options {
  std::string scope{cloud_platform_scope};     ///< space-separated scopes; must not be empty
  std::string audience{google_token_audience};
  std::string subject;                         ///< `sub` for domain-wide delegation; omitted when empty
  std::chrono::seconds lifetime{3600};         ///< exp = iat + lifetime; 1..3600 s (Google's maximum)
};

/// The assertion and every intermediate, so each can be checked against the test vector.
struct jwt_assertion {
  std::string header_json;   ///< {"alg":"RS256","typ":"JWT","kid":"<private_key_id>"}
  std::string claims_json;   ///< {"iss":..,"scope":..,"aud":..,"exp":..,"iat":..[,"sub":..]}
  std::string signing_input; ///< b64url(header_json) "." b64url(claims_json)
  std::string signature;     ///< b64url(RS256(signing_input)), no padding
  std::string jwt;           ///< signing_input "." signature
  std::chrono::sys_seconds issued_at{};
  std::chrono::sys_seconds expires_at{};
};

/// Builds and signs the JWT-bearer assertion issued at `issued_at` (wall-clock time).
auth_result<jwt_assertion> make_jwt_assertion(const service_account_key& key, std::chrono::sys_seconds issued_at,
                                              const assertion_options& options = {});

/// An HTTP request described as data; the caller's HTTP client sends it.
struct http_request_data {
  std::string method;                                        ///< "POST" or "GET"
  std::string url;                                           ///< absolute http(s) URL
  std::vector<std::pair<std::string, std::string>> headers;  ///< besides Host / Content-Length
  std::string body;

  /// The value of header `name` (ASCII case-insensitive), or empty.
  std::string_view header(std::string_view name) const noexcept;
};

/// POST `key.token_uri`, Content-Type application/x-www-form-urlencoded,
/// body `grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=<jwt>`.
http_request_data make_token_request(const service_account_key& key, std::string_view jwt);

/// An OAuth access token as the token endpoint or metadata server returned it.
struct access_token {
  std::string value;                 ///< `access_token`; secret
  std::string token_type = "Bearer"; ///< `token_type` (Google always says Bearer)
  std::chrono::seconds expires_in{0};

  /// "Bearer <value>" for the Authorization header.
  std::string authorization() const;
};

/// Parses the token endpoint's answer to `make_token_request`. 200 + {"access_token","expires_in"
/// (number or digit string),"token_type"?} → token. An OAuth error body {"error","error_description"}
/// (any status) → `token_rejected` naming the error; retryable for 408/429/5xx and for
/// internal_failure / server_error / temporarily_unavailable. A non-JSON body is never echoed.
auth_result<access_token> parse_token_response(unsigned status, std::string_view body);

// ---------------------------------------------------------------------------------------------
// Metadata server (GCE, GKE workload identity, Cloud Run)

inline constexpr std::string_view default_metadata_host = "metadata.google.internal";
inline constexpr std::string_view metadata_token_path = "/computeMetadata/v1/instance/service-accounts/default/token";

/// GET http://<host>/computeMetadata/v1/instance/service-accounts/default/token with
/// `Metadata-Flavor: Google`. `host` is host[:port] (GCE_METADATA_HOST); bad hosts are refused.
auth_result<http_request_data> make_metadata_token_request(std::string_view host = default_metadata_host);

/// Same JSON shape as the token endpoint; errors say "metadata server".
auth_result<access_token> parse_metadata_token_response(unsigned status, std::string_view body);

// ---------------------------------------------------------------------------------------------
// Credential discovery (pure: the environment and the file system are injected)

/// Returns the variable's value, or nullopt when unset.
using getenv_fn = std::function<std::optional<std::string>(std::string_view name)>;
/// Returns the file's bytes or the error (e.g. errc::no_such_file_or_directory).
using read_file_fn = std::function<boost::system::result<std::string>(const std::string& path)>;

inline constexpr std::string_view credentials_env = "GOOGLE_APPLICATION_CREDENTIALS";
inline constexpr std::string_view metadata_host_env = "GCE_METADATA_HOST";

enum class credential_origin {
  config_key_file,  ///< the provider config names a key file
  env_key_file,     ///< GOOGLE_APPLICATION_CREDENTIALS names a key file
  metadata_server,  ///< neither: ask the metadata server
};
std::string_view to_string(credential_origin o) noexcept;

/// Where credentials come from, decided before any file is read.
struct credential_source {
  credential_origin origin = credential_origin::metadata_server;
  std::string path;           ///< key file path (key-file origins)
  std::string metadata_host;  ///< host[:port] (metadata origin): GCE_METADATA_HOST or the default
};

/// Order: `configured_path` when non-empty, else GOOGLE_APPLICATION_CREDENTIALS when set and
/// non-empty, else the metadata server. (gcloud's well-known ADC file is not consulted: it holds
/// user credentials, which are not supported.)
credential_source discover_credentials(std::string_view configured_path, const getenv_fn& getenv);

/// Service-account key file or metadata server: the two supported kinds of credentials.
struct metadata_server_credentials {
  std::string host;
};
using credentials = std::variant<service_account_key, metadata_server_credentials>;

/// Reads and parses the key file of a key-file source (errors name the path and where it came
/// from, and never fall back to the metadata server); for the metadata source checks the host.
auth_result<credentials> load_credentials(const credential_source& source, const read_file_fn& read_file);

/// discover_credentials + load_credentials.
auth_result<credentials> resolve_credentials(std::string_view configured_path, const getenv_fn& getenv,
                                             const read_file_fn& read_file);

// ---------------------------------------------------------------------------------------------
// Token cache policy (a pure state machine: the caller supplies `now` and does the I/O)

struct token_cache_options {
  /// Refresh when less than this remains (node google-auth-library: 5 min; python: 3m45s). Capped
  /// at half the token's lifetime, so a short-lived token does not trigger a refresh storm.
  std::chrono::seconds refresh_margin{300};
  /// Stop handing out a token this long before it expires (covers request latency and skew).
  std::chrono::seconds expiry_margin{10};
  /// A refresh in flight longer than this is presumed lost; the next caller may start another.
  std::chrono::seconds refresh_timeout{60};
  /// After a failed refresh, no new one starts for a backoff that doubles from min to max.
  std::chrono::milliseconds min_backoff{1000};
  std::chrono::milliseconds max_backoff{60000};
};

/// Decides, for a given `now`, whether the cached token can be used and whether a refresh must
/// start, allowing one refresh in flight at a time. Not thread-safe: one owner (a worker, or a
/// strand) calls it; waiters are woken by the owner's own mechanism when `complete`/`fail` is called.
class token_cache {
 public:
  using clock = std::chrono::steady_clock;
  using time_point = clock::time_point;

  enum class action {
    use,              ///< the cached token is good: use `token()`
    refresh,          ///< the caller now owns the refresh (`ticket`); no usable token until it ends
    refresh_and_use,  ///< the caller owns the refresh (`ticket`); `token()` is still usable meanwhile
    wait,             ///< another refresh is in flight and no token is usable: wait for it
    fail,             ///< no usable token and backing off after a failure: `last_error()`
  };
  struct decision {
    action what = action::wait;
    std::uint64_t ticket = 0;  ///< for refresh / refresh_and_use: pass to complete()/fail()
  };

  explicit token_cache(token_cache_options options = {});

  /// What to do at `now`. Returns a refresh action to at most one caller until that refresh
  /// completes, fails or times out (`refresh_timeout`).
  decision decide(time_point now);

  /// Records the refreshed token. `requested_at` is when the token request was sent, so the
  /// expiry errs early. False (and nothing changes) for a stale ticket, e.g. one that timed out.
  bool complete(std::uint64_t ticket, access_token token, time_point requested_at);

  /// Records a failed refresh and starts the backoff. False for a stale ticket.
  bool fail(std::uint64_t ticket, auth_error error, time_point now);

  /// Forgets the token (e.g. after the upstream answered 401 with it); the next decide refreshes.
  void invalidate() noexcept;

  /// The cached token, or nullptr. Usable only as `decide` says.
  const access_token* token() const noexcept { return token_ ? &*token_ : nullptr; }
  /// When the cached token expires (meaningless without a token).
  time_point expires_at() const noexcept { return expires_at_; }
  /// The error of the last failed refresh since the last success, or nullptr.
  const auth_error* last_error() const noexcept { return last_error_ ? &*last_error_ : nullptr; }
  /// True while a refresh handed out by `decide` has neither ended nor timed out at `now`.
  bool refresh_in_flight(time_point now) const noexcept;
  /// Earliest time a new refresh may start after a failure.
  time_point retry_not_before() const noexcept { return retry_not_before_; }

 private:
  bool usable(time_point now) const noexcept;
  bool needs_refresh(time_point now) const noexcept;

  token_cache_options options_;
  std::optional<access_token> token_;
  time_point expires_at_{};
  time_point refresh_at_{};
  std::optional<auth_error> last_error_;
  std::uint64_t next_ticket_ = 1;
  std::uint64_t in_flight_ticket_ = 0;  ///< 0: none
  time_point in_flight_since_{};
  time_point retry_not_before_{};
  std::chrono::milliseconds backoff_{0};
};

// ---------------------------------------------------------------------------------------------
// Encoding helpers (exposed for tests and the provider)

/// RFC 4648 §5 base64url without padding.
std::string base64url_encode(std::string_view bytes);
/// Inverse of base64url_encode; padding optional. nullopt on a bad character or length.
std::optional<std::string> base64url_decode(std::string_view text);
/// application/x-www-form-urlencoded value: ALPHA / DIGIT / "-._~" kept, space → '+', rest %XX.
std::string form_urlencode(std::string_view value);

}  // namespace tollgate::providers::google
