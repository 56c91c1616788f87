// SPDX-License-Identifier: Apache-2.0
#include "gateway/upstream_parser.hpp"

#include <boost/beast/http/error.hpp>

#include <algorithm>
#include <cstring>

namespace tollgate::gateway {

namespace http = boost::beast::http;

upstream_response_parser::upstream_response_parser(upstream_head_storage& storage) : storage_(storage) {
  storage_.text.clear();
  storage_.entries.clear();
  storage_.fields.clear();
}

std::string_view upstream_response_parser::field_value(http::field name) const {
  for (const auto& f : storage_.fields)
    if (f.name() == name) return f.value();
  return {};
}

void upstream_response_parser::on_request_impl(http::verb, string_view, string_view, int, error_code& ec) {
  ec = http::error::bad_method;  // a response parser: never called by Beast
}

void upstream_response_parser::on_response_impl(int code, string_view, int, error_code&) {
  status_ = unsigned(code);
}

void upstream_response_parser::on_field_impl(http::field name, string_view name_string, string_view value,
                                             error_code&) {
  // A chunked body's trailer fields come here too, after the head, when the views into `text`
  // are made: appending them would move `text` under those views. Trailers are not part of the
  // head (RFC 9110 §6.5.2) and are not passed on.
  if (is_header_done()) return;
  // Offsets, not views: `text` may grow (and move) while later fields arrive. Beast bounds the
  // head by header_limit, so the offsets fit.
  auto& s = storage_;
  const auto at = std::uint32_t(s.text.size());
  s.text.append(name_string.data(), name_string.size());
  s.text.append(value.data(), value.size());
  s.entries.push_back({name, at, std::uint32_t(name_string.size()), at + std::uint32_t(name_string.size()),
                       std::uint32_t(value.size())});
}

void upstream_response_parser::on_header_impl(error_code&) {
  auto& s = storage_;
  const std::string_view text = s.text;
  s.fields.reserve(s.entries.size());
  for (const auto& e : s.entries)
    s.fields.emplace_back(e.id, text.substr(e.name_at, e.name_len), text.substr(e.value_at, e.value_len));
}

void upstream_response_parser::on_body_init_impl(boost::optional<std::uint64_t> const&, error_code&) {}

std::size_t upstream_response_parser::take_body(string_view body, error_code& ec) {
  // As http::buffer_body's reader: copy what fits; need_buffer when there is no room for all.
  if (body_ == nullptr) {
    ec = http::error::need_buffer;
    return 0;
  }
  const std::size_t n = std::min(room_, body.size());
  if (n) std::memcpy(body_, body.data(), n);
  body_ += n;
  room_ -= n;
  if (n != body.size()) ec = http::error::need_buffer;
  return n;
}

std::size_t upstream_response_parser::on_body_impl(string_view body, error_code& ec) { return take_body(body, ec); }

void upstream_response_parser::on_chunk_header_impl(std::uint64_t, string_view, error_code&) {}

std::size_t upstream_response_parser::on_chunk_body_impl(std::uint64_t, string_view body, error_code& ec) {
  return take_body(body, ec);
}

void upstream_response_parser::on_finish_impl(error_code&) {}

}  // namespace tollgate::gateway
