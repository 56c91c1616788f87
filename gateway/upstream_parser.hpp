// SPDX-License-Identifier: Apache-2.0
#pragma once
/// The upstream response parser: Beast's HTTP/1 parser (basic_parser, which does all the
/// parsing, framing and validation), storing the head in flat storage instead of a
/// `http::fields`. Beast's fields container allocates a node per field and keeps them in a set
/// ordered by case-insensitive name: ~300 instructions per upstream header, for a list the
/// gateway only walks. The body goes into a caller-provided buffer, exactly as with
/// `http::buffer_body` (need_buffer when it is full). docs/adr/0009-upstream-response-head.md.
#include <boost/beast/http/basic_parser.hpp>
#include <boost/beast/http/field.hpp>

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace tollgate::gateway {

/// One response field, with the member names of a `http::fields` element.
class upstream_field {
 public:
  upstream_field(boost::beast::http::field id, std::string_view name, std::string_view value)
      : id_(id), name_(name), value_(value) {}
  boost::beast::http::field name() const { return id_; }
  std::string_view name_string() const { return name_; }
  std::string_view value() const { return value_; }

 private:
  boost::beast::http::field id_;
  std::string_view name_, value_;
};

/// Storage for response heads, reused across the exchanges of one pooled connection (no
/// allocation per response once it has grown).
struct upstream_head_storage {
  std::string text;  ///< field names and values, back to back
  struct entry {
    boost::beast::http::field id;
    std::uint32_t name_at, name_len, value_at, value_len;
  };
  std::vector<entry> entries;
  std::vector<upstream_field> fields;  ///< views into `text`, made once the head is complete
};

class upstream_response_parser : public boost::beast::http::basic_parser<false> {
 public:
  /// `storage` must outlive the parser; it is cleared here.
  explicit upstream_response_parser(upstream_head_storage& storage);

  unsigned status() const { return status_; }
  /// The response's fields in order (empty until the head is parsed).
  std::span<const upstream_field> fields() const { return storage_.fields; }
  /// The first value of a field, empty if absent.
  std::string_view field_value(boost::beast::http::field name) const;

  /// Where the next body bytes go: up to `size` bytes at `data`.
  void body_buffer(char* data, std::size_t size) {
    body_ = data;
    room_ = size;
  }
  /// Room left in the body buffer.
  std::size_t body_room() const { return room_; }

 private:
  using error_code = boost::system::error_code;
  using string_view = boost::core::string_view;
  void on_request_impl(boost::beast::http::verb, string_view, string_view, int, error_code& ec) override;
  void on_response_impl(int code, string_view reason, int version, error_code& ec) override;
  void on_field_impl(boost::beast::http::field name, string_view name_string, string_view value,
                     error_code& ec) override;
  void on_header_impl(error_code& ec) override;
  void on_body_init_impl(boost::optional<std::uint64_t> const& content_length, error_code& ec) override;
  std::size_t on_body_impl(string_view body, error_code& ec) override;
  void on_chunk_header_impl(std::uint64_t size, string_view extensions, error_code& ec) override;
  std::size_t on_chunk_body_impl(std::uint64_t remain, string_view body, error_code& ec) override;
  void on_finish_impl(error_code& ec) override;
  std::size_t take_body(string_view body, error_code& ec);

  upstream_head_storage& storage_;
  unsigned status_ = 0;
  char* body_ = nullptr;
  std::size_t room_ = 0;
};

}  // namespace tollgate::gateway
