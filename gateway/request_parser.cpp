// SPDX-License-Identifier: Apache-2.0
#include "gateway/request_parser.hpp"

#include <array>

#include <boost/beast/http/error.hpp>
#include <boost/beast/http/field.hpp>

#include "gateway/core/text.hpp"

namespace tollgate::gateway {

namespace http = boost::beast::http;

caller_request_parser::caller_request_parser(std::string& storage) : storage_(storage) { storage_.clear(); }

caller_request_parser::span caller_request_parser::keep(string_view v) {
  // Beast bounds the head by header_limit (a uint32_t), so the offsets fit.
  span s{std::uint32_t(storage_.size()), std::uint32_t(v.size()), true};
  storage_.append(v.data(), v.size());
  return s;
}

void caller_request_parser::on_request_impl(http::verb method, string_view method_str, string_view target,
                                            int version, error_code&) {
  method_ = method;
  method_at_ = keep(method_str);
  target_at_ = keep(target);
  version_ = unsigned(version);
}

void caller_request_parser::on_response_impl(int, string_view, int, error_code& ec) {
  ec = http::error::bad_version;  // a request parser: never called by Beast
}

void caller_request_parser::on_field_impl(http::field name, string_view name_string, string_view value,
                                          error_code&) {
  // A chunked body's trailer fields come here too, after the head: none of them may stand in for
  // a header (RFC 9110 §6.5.2: not merged unless the field's definition allows it), least of all
  // a credential.
  if (is_header_done()) return;
  const auto first = [&](span& slot) {
    if (!slot.set) slot = keep(value);
  };
  const auto only = [&](span& slot) {
    if (slot.set) repeated_credential_ = true;
    else slot = keep(value);
  };
  switch (name) {
    case http::field::user_agent: first(user_agent_); break;
    case http::field::content_type: first(content_type_); break;
    case http::field::authorization: only(authorization_); break;
    case http::field::unknown: {
      const std::string_view n(name_string.data(), name_string.size());
      if (text::iequals(n, "api-key")) only(api_key_);
      else if (text::iequals(n, "x-api-key")) only(x_api_key_);
      break;
    }
    default: break;
  }
}

void caller_request_parser::on_header_impl(error_code&) {
  const auto opt = [this](span s) { return s.set ? std::optional<std::string_view>(view(s)) : std::nullopt; };
  fields_ = {opt(user_agent_), opt(content_type_), opt(authorization_), opt(api_key_), opt(x_api_key_),
             repeated_credential_};
}

void caller_request_parser::on_body_init_impl(boost::optional<std::uint64_t> const& content_length, error_code&) {
  // As http::string_body's reader (Beast has already checked the length against body_limit).
  if (content_length) body_.reserve(std::size_t(*content_length));
}

std::size_t caller_request_parser::on_body_impl(string_view body, error_code&) {
  body_.append(body.data(), body.size());
  return body.size();
}

void caller_request_parser::on_chunk_header_impl(std::uint64_t, string_view, error_code&) {}

std::size_t caller_request_parser::on_chunk_body_impl(std::uint64_t, string_view body, error_code& ec) {
  return on_body_impl(body, ec);
}

void caller_request_parser::on_finish_impl(error_code&) {}

namespace {
/// What each credential field offers: Authorization's (per its scheme), api-key's, x-api-key's.
std::array<std::string_view, 3> credential_candidates(const caller_fields& c) {
  const std::string_view auth = text::trim(c.authorization.value_or(std::string_view()));
  std::string_view from_auth;
  // "Bearer", then spaces or tabs (RFC 9110's 1*SP, and tabs as lenient parsers take them).
  if (auth.size() > 7 && text::iequals(auth.substr(0, 6), "bearer") && (auth[6] == ' ' || auth[6] == '\t')) {
    from_auth = text::trim(auth.substr(7));
  } else if (auth.starts_with("tg_")) {
    from_auth = auth;  // a key without a scheme (with anything after it: still checked, and refused)
  } else {
    const auto gap = auth.find_first_of(" \t");
    const std::string_view rest = gap == std::string_view::npos ? auth : text::trim(auth.substr(gap));
    if (rest.starts_with("tg_")) from_auth = rest;
  }
  return {from_auth, text::trim(c.api_key.value_or(std::string_view())), text::trim(c.x_api_key.value_or(std::string_view()))};
}
}  // namespace

bool conflicting_keys(const caller_fields& c) {
  if (!c.api_key && !c.x_api_key) return false;  // (the common case: one field, nothing to compare)
  const auto candidates = credential_candidates(c);
  std::string_view first;
  for (auto v : candidates) {
    if (!v.starts_with("tg_")) continue;
    if (first.empty()) first = v;
    else if (v != first) return true;
  }
  return false;
}

std::string presented_credential(const caller_fields& c, bool prefer_keys) {
  const auto candidates = credential_candidates(c);
  if (prefer_keys)
    for (auto v : candidates)
      if (v.starts_with("tg_")) return std::string(v);
  for (auto v : candidates)
    if (!v.empty()) return std::string(v);
  return {};
}

}  // namespace tollgate::gateway
