// SPDX-License-Identifier: Apache-2.0
#pragma once
/// AWS Signature Version 4 and static AWS credential resolution, for the Bedrock provider.
///
/// Pure and synchronous: no clock, no environment and no file access except through what the
/// caller passes in, no exceptions (errors are values), OpenSSL for SHA-256 and HMAC.
/// Wire format: docs in shared/PROTOCOLS.md §3.7 (botocore `SigV4Auth`, smithy `signature-v4`,
/// aws-c-auth); checked against the AWS SigV4 suites and the derived Bedrock vectors.
///
/// Signing a Bedrock call (service name `bedrock`, NOT `bedrock-runtime`):
/// ```
///   aws::http_request_view req{"POST", "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse", "",
///                              headers /* incl. host */, body};
///   auto s = aws::sign_request(creds, {region, aws::bedrock_signing_name, now}, req);
///   if (!s) ...;  // s.error() is an aws_errc error_code
///   for (auto& h : s->headers_to_add) set(h.name, h.value);   // x-amz-date, x-amz-security-token
///   set("authorization", s->authorization);
/// ```
#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <vector>

#include <boost/system/error_code.hpp>
#include <boost/system/result.hpp>

namespace tollgate::providers::aws {

/// Errors of the signer and of credential resolution. Their messages never contain a secret.
enum class aws_errc {
  ok = 0,
  missing_credentials = 1,      ///< sign: empty access key id or secret access key
  missing_host,                 ///< sign: the request has no Host header (it must be signed)
  invalid_request,              ///< sign: empty method/region/service, path not starting with '/', bad expiry
  crypto_failure,               ///< OpenSSL reported an error
  credentials_not_found,        ///< resolve: no source holds credentials
  incomplete_credentials,       ///< resolve: a source has an access key id without a secret, or the reverse
  profile_not_found,            ///< resolve: the requested profile is not in the shared credentials file
  malformed_credentials_file,   ///< resolve: the shared credentials file is not valid INI
  unreadable_credentials_file,  ///< resolve: an explicitly named shared credentials file cannot be read
};

const boost::system::error_category& aws_category() noexcept;
inline boost::system::error_code make_error_code(aws_errc e) noexcept {
  return {static_cast<int>(e), aws_category()};
}

}  // namespace tollgate::providers::aws

template <>
struct boost::system::is_error_code_enum<tollgate::providers::aws::aws_errc> : std::true_type {};

namespace tollgate::providers::aws {

template <class T>
using result = boost::system::result<T>;

/// The SigV4 signing name of Bedrock Runtime (endpoint prefix `bedrock-runtime`, signing name `bedrock`).
inline constexpr std::string_view bedrock_signing_name = "bedrock";
/// The signature algorithm name, also the `X-Amz-Algorithm` value.
inline constexpr std::string_view sigv4_algorithm = "AWS4-HMAC-SHA256";
/// Hex SHA-256 of the empty string: the payload hash of a request without a body.
inline constexpr std::string_view empty_payload_sha256 =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

// ------------------------------------------------------------------------------------------------
// Signing
// ------------------------------------------------------------------------------------------------

/// Static (or temporary, with a session token) AWS credentials.
struct credentials {
  std::string access_key_id;
  std::string secret_access_key;
  std::string session_token;  ///< empty for long-term credentials
};

/// One request header as given by the caller: any name case, duplicates allowed, values untrimmed
/// (obs-fold line breaks allowed; they are folded as whitespace).
struct header_view {
  std::string_view name;
  std::string_view value;
};

/// A header the caller must set on the outgoing request (replacing any header of that name).
struct header {
  std::string name;  ///< lower case
  std::string value;
};

/// The request to sign, exactly as it will go on the wire.
struct http_request_view {
  std::string_view method;  ///< used as given (HTTP methods are case-sensitive)
  std::string_view path;    ///< the path as sent: already percent-encoded, starts with '/', no query
  std::string_view query;   ///< the raw query string without '?', may be empty
  std::span<const header_view> headers;  ///< must contain Host
  std::string_view body;
  /// Lower-case hex SHA-256 of the body when already known (or a literal such as
  /// "UNSIGNED-PAYLOAD"); when set, `body` is not hashed.
  std::optional<std::string_view> payload_sha256;
};

/// Region, service and time of one signature.
struct signing_scope {
  std::string_view region;   ///< e.g. "us-east-1"
  std::string_view service;  ///< the signing name, e.g. bedrock_signing_name
  std::chrono::sys_seconds time;
};

struct signing_options {
  /// Percent-encode the (already encoded) path again in the canonical request: `%3A` -> `%253A`.
  /// Right for every service except S3; with false the path is used exactly as given.
  bool double_encode_path = true;
  /// Remove `.` / `..` segments and repeated slashes from the path before encoding (not for S3).
  bool normalize_path = true;
  /// Header signing only: add and sign `x-amz-content-sha256: <payload hash>`.
  bool sign_body = false;
  /// With a session token: true signs `x-amz-security-token` (Bedrock needs this); false adds it
  /// after signing, unsigned (the suites' post-sts-header-after / omit_session_token cases).
  bool sign_session_token = true;
};

/// What both signing modes compute (and tests compare against the AWS suites).
struct signature_parts {
  std::string canonical_request;
  std::string string_to_sign;
  std::string signature;          ///< lower-case hex HMAC-SHA256
  std::string signed_headers;     ///< e.g. "host;x-amz-date"
  std::string credential_scope;   ///< "<yyyymmdd>/<region>/<service>/aws4_request"
  std::string payload_sha256;     ///< the payload hash that was signed
};

/// The result of header signing. To send: set every `headers_to_add` entry and `authorization`.
struct signed_request : signature_parts {
  std::string authorization;      ///< the `Authorization` header value
  /// `x-amz-date`, then `x-amz-security-token` when the credentials carry a token, then
  /// `x-amz-content-sha256` when `sign_body`. Does not include `authorization`.
  std::vector<header> headers_to_add;
};

/// Signs `req` into an `Authorization` header.
///
/// The canonical request follows SigV4: header names lower-cased, values trimmed with inner
/// whitespace runs (including folded line breaks) collapsed to one space, duplicates joined with
/// ',' in order, sorted by name; query parameters percent-decoded then re-encoded (RFC 3986
/// unreserved set, '+' is kept literal and so encodes as %2B) and sorted by key then value.
/// Never signed: authorization, connection, expect, keep-alive, proxy-authenticate,
/// proxy-authorization, te, trailer, transfer-encoding, upgrade, user-agent, x-amzn-trace-id
/// (hop-by-hop or rewritten by proxies, as in botocore and smithy). The signer owns `x-amz-date`,
/// and also `x-amz-security-token` when the credentials hold a token and `x-amz-content-sha256`
/// when `sign_body`: copies of these in `req.headers` are ignored and replaced.
/// Errors: missing_credentials, missing_host, invalid_request, crypto_failure.
result<signed_request> sign_request(const credentials& creds, const signing_scope& scope,
                                    const http_request_view& req, const signing_options& options = {});

/// The result of query (presigned URL) signing.
struct presigned_request : signature_parts {
  /// The query string to send instead of `req.query`: the original query unchanged, then
  /// X-Amz-Algorithm, X-Amz-Credential, X-Amz-Date, X-Amz-SignedHeaders, X-Amz-Expires,
  /// X-Amz-Security-Token (when a token is set) and X-Amz-Signature.
  std::string query;
};

/// Signs `req` into query parameters (a presigned URL valid for `expires_in` seconds, 1..604800).
/// Same canonicalization as sign_request; `sign_body` is ignored; with `sign_session_token` false
/// the token is appended to the query but not signed.
result<presigned_request> presign_request(const credentials& creds, const signing_scope& scope,
                                          const http_request_view& req, std::chrono::seconds expires_in,
                                          const signing_options& options = {});

/// kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, yyyymmdd), region), service), "aws4_request").
/// Constant for one day, region and service, so a caller may cache it.
result<std::array<std::uint8_t, 32>> derive_signing_key(std::string_view secret_access_key,
                                                        std::string_view yyyymmdd, std::string_view region,
                                                        std::string_view service);

/// Lower-case hex SHA-256 of `data`.
result<std::string> sha256_hex(std::string_view data);

/// `YYYYMMDD'T'HHMMSS'Z'` (the `x-amz-date` form) of a UTC time.
std::string format_amz_date(std::chrono::sys_seconds t);
/// Parses `20150830T123600Z` or `2015-08-30T12:36:00Z` (UTC only); nullopt when malformed.
std::optional<std::chrono::sys_seconds> parse_amz_date(std::string_view text);

/// The canonical URI of a wire path (normalization and double encoding per `options`).
std::string canonical_uri(std::string_view path, const signing_options& options);
/// The canonical query string of a raw query string.
std::string canonical_query(std::string_view query);
/// Percent-encodes every byte outside A-Z a-z 0-9 - _ . ~ (and outside '/' if `keep_slash`), upper-case hex.
std::string uri_encode(std::string_view s, bool keep_slash);

// ------------------------------------------------------------------------------------------------
// Credential resolution: config -> environment -> shared credentials file
// ------------------------------------------------------------------------------------------------

/// Credentials explicitly configured for a provider (after the config's secret references are
/// resolved). All fields optional.
struct credentials_config {
  std::string access_key_id;
  std::string secret_access_key;
  std::string session_token;
  /// Profile of the shared credentials file to use. Naming one here is an explicit choice: the
  /// environment keys are then not consulted (as botocore does for an explicit profile).
  std::string profile;
  /// Path of the shared credentials file (a leading "~/" is expanded with HOME).
  std::string shared_credentials_file;
};

/// Returns the value of an environment variable, nullopt when unset (empty counts as unset).
using getenv_fn = std::function<std::optional<std::string>(std::string_view name)>;
/// Returns a whole file, nullopt when it cannot be read.
using read_file_fn = std::function<std::optional<std::string>(const std::string& path)>;

/// The outside world credential resolution may look at, injected so tests need no real
/// environment or files. Either callback may be empty (then that input is absent).
struct credentials_inputs {
  getenv_fn getenv;
  read_file_fn read_file;
};

/// The process environment (std::getenv) and the local file system (at most 1 MiB per file).
credentials_inputs system_credentials_inputs();

enum class credentials_source { config, environment, shared_credentials_file };
std::string_view to_string(credentials_source s) noexcept;

struct resolved_credentials {
  credentials creds;
  credentials_source source = credentials_source::config;
  std::string profile;  ///< shared credentials file only
  std::string path;     ///< shared credentials file only
};

/// A resolution failure: an aws_errc and a message for logs and operators. The message names
/// sources, variables, profiles, paths and line numbers, never a key, secret or token.
struct credentials_error {
  aws_errc code = aws_errc::credentials_not_found;
  std::string message;
};

template <class T>
using credentials_result = boost::system::result<T, credentials_error>;

/// Resolves credentials in this order:
/// 1. `cfg` access_key_id + secret_access_key (+ session_token); one without the other is an error;
/// 2. unless `cfg.profile` is set: AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY (+ AWS_SESSION_TOKEN);
///    one without the other is an error;
/// 3. the shared credentials file: path from `cfg.shared_credentials_file`, else
///    AWS_SHARED_CREDENTIALS_FILE, else $HOME/.aws/credentials; profile from `cfg.profile`, else
///    AWS_PROFILE, else "default"; keys aws_access_key_id, aws_secret_access_key, aws_session_token.
/// A profile or file that was asked for explicitly and is missing is an error (profile_not_found,
/// unreadable_credentials_file); a missing default file or [default] profile means "not found".
credentials_result<resolved_credentials> resolve_credentials(const credentials_config& cfg,
                                                             const credentials_inputs& inputs);

/// Step 1 alone: nullopt when `cfg` has neither key.
credentials_result<std::optional<credentials>> credentials_from_config(const credentials_config& cfg);
/// Step 2 alone: nullopt when neither AWS_ACCESS_KEY_ID nor AWS_SECRET_ACCESS_KEY is set.
credentials_result<std::optional<credentials>> credentials_from_environment(const getenv_fn& getenv);

/// Properties of one profile, keys lower-cased.
using ini_section = std::map<std::string, std::string, std::less<>>;
/// Profiles by name (case-sensitive; repeated sections merge, later values win).
using ini_file = std::map<std::string, ini_section, std::less<>>;

/// Parses the text of a shared credentials file: `[name]` sections (trailing `#`/`;` comment
/// allowed), `key = value` lines (a `#`/`;` comment after whitespace is stripped), full-line
/// `#`/`;` comments, blank lines, CRLF, a UTF-8 BOM, and more-indented continuation lines
/// (nested sub-properties, ignored). `path` is only used in error messages.
credentials_result<ini_file> parse_shared_credentials(std::string_view text, std::string_view path);

/// The static credentials of `profile` in a shared credentials file's text. Errors:
/// malformed_credentials_file, profile_not_found, incomplete_credentials.
credentials_result<credentials> credentials_from_shared_file(std::string_view text, std::string_view profile,
                                                             std::string_view path);

}  // namespace tollgate::providers::aws
