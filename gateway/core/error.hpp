// SPDX-License-Identifier: Apache-2.0
#pragma once
/// Gateway error codes, the boundary `failure` type, and the one map from a failure to an
/// HTTP status and an OpenAI-shaped error body.
#include <boost/system/error_code.hpp>
#include <boost/system/result.hpp>

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tollgate {

/// Gateway-level error codes; each maps to one HTTP status and one OpenAI `code` string.
enum class errc {
  ok = 0,
  invalid_json = 1,          ///< 400: body is not a JSON object
  invalid_type,              ///< 400: a field has the wrong type
  missing_parameter,         ///< 400: a required field is missing
  invalid_value,             ///< 400: a field is out of range
  bad_request,               ///< 400: malformed/ambiguous framing; close
  not_found,                 ///< 404: unknown path
  model_not_found,           ///< 404: unknown model
  method_not_allowed,        ///< 405
  request_timeout,           ///< 408; close
  request_too_large,         ///< 413; close
  uri_too_long,              ///< 414
  unsupported_media_type,    ///< 415
  header_fields_too_large,   ///< 431
  internal,                  ///< 500
  upstream_error,            ///< 502
  shutting_down,             ///< 503
  upstream_timeout,          ///< 504
  upstream_status,           ///< the upstream answered an error status; passed on as mapped
  client_disconnected,       ///< 499 in logs; no response
  invalid_api_key,           ///< 401: missing, malformed, unknown, revoked or expired credentials
  permission_denied,         ///< 403: the caller may not use this model
  rate_limited,              ///< 429: requests, tokens or concurrency limit; Retry-After
  budget_exceeded,           ///< 429 insufficient_quota: the USD budget of the period is spent
  policy_store_unavailable,  ///< 503: the policy store cannot be reached and the policy fails closed
  audit_unavailable,         ///< 503: audit records cannot be written and audit fails closed
  conflict,                  ///< 409: admin API: exists already, or declared in the config file
  content_filtered,          ///< 400: a content-filter rule blocked the prompt
  moderation_unavailable,    ///< 503: the moderation endpoint failed and moderation fails closed
  admin_api_disabled,        ///< 403: admin API: no auth.admin_tokens configured
};

const boost::system::error_category& tollgate_category() noexcept;
inline boost::system::error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), tollgate_category()};
}

enum class error_source { downstream, upstream, policy, internal };

/// What a phase returns when it cannot continue. `details` is a lower_snake word for logs.
struct failure {
  boost::system::error_code code;
  error_source source = error_source::internal;
  bool retryable = false;
  std::string message;  ///< human-readable, safe to send to the caller (no secrets)
  std::string param;    ///< OpenAI `param` (field name) or empty
  std::vector<std::pair<std::string, std::string>> headers;  ///< extra response headers (Retry-After)
};

/// Phases either continue or have already answered the caller.
enum class flow { next, responded };
using phase_result = boost::system::result<flow, failure>;
template <class T>
using result = boost::system::result<T>;

/// Status, OpenAI `type` and `code` for a gateway error.
struct error_mapping {
  unsigned status;
  std::string_view type;
  std::string_view code;
};
error_mapping map_error(errc e) noexcept;

/// `{"error":{"message":..,"type":..,"param":..,"code":..}}`; param/code null when empty.
std::string openai_error_body(std::string_view message, std::string_view type, std::string_view param,
                              std::string_view code);

/// Convenience: failure for a gateway-made error.
failure make_failure(errc e, std::string message, std::string param = {},
                     error_source src = error_source::downstream);
/// The failure of a call whose caller has gone (logged 499 client_disconnected; nothing is sent).
failure caller_gone();

}  // namespace tollgate

template <>
struct boost::system::is_error_code_enum<tollgate::errc> : std::true_type {};
