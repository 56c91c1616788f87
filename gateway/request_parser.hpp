// SPDX-License-Identifier: Apache-2.0
#pragma once
/// The caller request parser: Beast's HTTP/1 parser (basic_parser, which does all the parsing,
/// framing, limits and validation), keeping of the head only what the gateway reads: the
/// method, the target, the version and five fields. `http::request_parser` stores every field in
/// a `http::fields` (a node allocated per field, kept in a set ordered by case-insensitive name)
/// that the session only walked once to find those five. The head's text goes into storage the
/// session keeps across its requests; the body into a string, as with `http::string_body`.
/// docs/adr/0009-upstream-response-head.md.
#include <boost/beast/http/basic_parser.hpp>
#include <boost/beast/http/verb.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace tollgate::gateway {

/// The request fields the gateway reads, each the first of its name in the head (as `req[field]`
/// gives it; a chunked body's trailer fields are not read).
struct caller_fields {
  std::optional<std::string_view> user_agent, content_type, authorization, api_key, x_api_key;
  /// One of the credential fields (Authorization, api-key, x-api-key) came more than once. Each is
  /// a singleton field (RFC 9110 §5.3): a hop in front may have checked another copy than the one
  /// the gateway would use, so the request is refused rather than one copy picked.
  bool repeated_credential = false;
};

/// The API key a caller presented (empty when none), from `Authorization: Bearer <key>` (OpenAI
/// SDKs), `api-key` (Azure SDKs) or `x-api-key` (Anthropic SDKs). A Tollgate key (`tg_…`) wins over
/// anything else in another of these headers, such as an SDK's placeholder; else the first
/// non-empty one in that order (two different `tg_` keys: conflicting_keys). An Authorization header of another scheme (`Basic`, added by an
/// ingress) is no API key, unless what follows it, or the whole value, is a `tg_` key: such a key
/// is checked, never passed over (a revoked key must not pass an open gateway as anonymous).
/// `prefer_keys` false (the admin listener, whose tokens are no `tg_` keys): the first non-empty
/// one in header order, so an API key in another header never displaces the admin token.
std::string presented_credential(const caller_fields& c, bool prefer_keys = true);

/// Two different Tollgate keys (`tg_…`) in these fields: an ingress that meters or checks one
/// header would see another caller than the gateway bills, so the request is refused.
bool conflicting_keys(const caller_fields& c);

class caller_request_parser : public boost::beast::http::basic_parser<true> {
 public:
  /// `storage` must outlive the parser and the views it gives; it is cleared here.
  explicit caller_request_parser(std::string& storage);

  boost::beast::http::verb method() const { return method_; }
  std::string_view method_string() const { return view(method_at_); }
  std::string_view target() const { return view(target_at_); }
  /// 10 for HTTP/1.0, 11 for HTTP/1.1.
  unsigned version() const { return version_; }
  /// Valid once the head is parsed.
  const caller_fields& fields() const { return fields_; }
  /// The body read so far (all of it once is_done()).
  std::string& body() { return body_; }

 private:
  using error_code = boost::system::error_code;
  using string_view = boost::core::string_view;
  struct span {
    std::uint32_t at = 0, len = 0;
    bool set = false;
  };
  std::string_view view(span s) const { return std::string_view(storage_).substr(s.at, s.len); }
  span keep(string_view v);

  void on_request_impl(boost::beast::http::verb method, string_view method_str, string_view target, int version,
                       error_code& ec) override;
  void on_response_impl(int, string_view, int, error_code& ec) override;
  void on_field_impl(boost::beast::http::field name, string_view name_string, string_view value,
                     error_code& ec) override;
  void on_header_impl(error_code& ec) override;
  void on_body_init_impl(boost::optional<std::uint64_t> const& content_length, error_code& ec) override;
  std::size_t on_body_impl(string_view body, error_code& ec) override;
  void on_chunk_header_impl(std::uint64_t size, string_view extensions, error_code& ec) override;
  std::size_t on_chunk_body_impl(std::uint64_t remain, string_view body, error_code& ec) override;
  void on_finish_impl(error_code& ec) override;

  std::string& storage_;
  boost::beast::http::verb method_ = boost::beast::http::verb::unknown;
  unsigned version_ = 0;
  span method_at_, target_at_;
  // Offsets while the head is parsed (storage may grow and move), views once it is complete.
  span user_agent_, content_type_, authorization_, api_key_, x_api_key_;
  bool repeated_credential_ = false;
  caller_fields fields_;
  std::string body_;
};

}  // namespace tollgate::gateway
