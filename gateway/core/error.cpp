// SPDX-License-Identifier: Apache-2.0
#include "gateway/core/error.hpp"

#include "gateway/core/json_out.hpp"

#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

namespace tollgate {
namespace {

struct category final : boost::system::error_category {
  const char* name() const noexcept override { return "tollgate"; }
  std::string message(int ev) const override {
    return std::string(map_error(static_cast<errc>(ev)).code);
  }
};

}  // namespace

const boost::system::error_category& tollgate_category() noexcept {
  static const category c;
  return c;
}

error_mapping map_error(errc e) noexcept {
  switch (e) {
    case errc::ok: return {200, "", ""};
    case errc::invalid_json: return {400, "invalid_request_error", "invalid_json"};
    case errc::invalid_type: return {400, "invalid_request_error", "invalid_type"};
    case errc::missing_parameter: return {400, "invalid_request_error", "missing_required_parameter"};
    case errc::invalid_value: return {400, "invalid_request_error", "invalid_value"};
    case errc::bad_request: return {400, "invalid_request_error", "bad_request"};
    case errc::not_found: return {404, "invalid_request_error", "not_found"};
    case errc::model_not_found: return {404, "invalid_request_error", "model_not_found"};
    case errc::method_not_allowed: return {405, "invalid_request_error", "method_not_allowed"};
    case errc::request_timeout: return {408, "invalid_request_error", "request_timeout"};
    case errc::request_too_large: return {413, "invalid_request_error", "request_too_large"};
    case errc::uri_too_long: return {414, "invalid_request_error", "uri_too_long"};
    case errc::unsupported_media_type: return {415, "invalid_request_error", "unsupported_media_type"};
    case errc::header_fields_too_large: return {431, "invalid_request_error", "request_header_fields_too_large"};
    case errc::internal: return {500, "server_error", "internal_error"};
    case errc::upstream_error: return {502, "server_error", "upstream_error"};
    case errc::shutting_down: return {503, "server_error", "shutting_down"};
    case errc::upstream_timeout: return {504, "server_error", "upstream_timeout"};
    case errc::upstream_status: return {502, "server_error", "upstream_error"};
    case errc::client_disconnected: return {499, "", "client_disconnected"};
    case errc::invalid_api_key: return {401, "invalid_request_error", "invalid_api_key"};
    case errc::permission_denied: return {403, "permission_denied", "model_not_allowed"};
    case errc::rate_limited: return {429, "rate_limit_exceeded", "rate_limit_exceeded"};
    case errc::budget_exceeded: return {429, "insufficient_quota", "budget_exceeded"};
    case errc::policy_store_unavailable: return {503, "server_error", "policy_store_unavailable"};
    case errc::audit_unavailable: return {503, "server_error", "audit_unavailable"};
    case errc::conflict: return {409, "invalid_request_error", "conflict"};
    case errc::content_filtered: return {400, "invalid_request_error", "content_filtered"};
    case errc::moderation_unavailable: return {503, "server_error", "moderation_unavailable"};
    case errc::admin_api_disabled: return {403, "permission_denied", "admin_api_disabled"};
  }
  return {500, "server_error", "internal_error"};
}

std::string openai_error_body(std::string_view message, std::string_view type, std::string_view param,
                              std::string_view code) {
  // By json_out: a message may echo what a caller sent (a path, a name) and bytes that are no
  // UTF-8 become U+FFFD, so the body is always JSON text the SDKs' strict parsers read.
  std::string out = "{\"error\":{\"message\":";
  json_out::string(out, message);
  json_out::field(out, "type", type);
  json_out::key(out, "param");
  if (param.empty()) out.append("null");
  else json_out::string(out, param);
  json_out::key(out, "code");
  if (code.empty()) out.append("null");
  else json_out::string(out, code);
  out.append("}}");
  return out;
}

failure make_failure(errc e, std::string message, std::string param, error_source src) {
  return failure{make_error_code(e), src, false, std::move(message), std::move(param), {}};
}

failure caller_gone() {
  return make_failure(errc::client_disconnected, "caller disconnected", "", error_source::downstream);
}

}  // namespace tollgate
