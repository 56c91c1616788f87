// SPDX-License-Identifier: Apache-2.0
#include "providers/bedrock/event_stream.hpp"

#include <algorithm>
#include <cstdio>
#include <utility>

#include <boost/crc.hpp>

namespace tollgate::providers::aws {

namespace {

std::uint64_t read_be(std::string_view s, std::size_t pos, std::size_t n) {
  std::uint64_t v = 0;
  for (std::size_t i = 0; i < n; ++i) v = (v << 8) | static_cast<unsigned char>(s[pos + i]);
  return v;
}

std::uint32_t read_u32(std::string_view s, std::size_t pos) {
  return static_cast<std::uint32_t>(read_be(s, pos, 4));
}

std::uint32_t crc32(std::string_view s) {
  boost::crc_32_type crc;
  crc.process_bytes(s.data(), s.size());
  return crc.checksum();
}

std::string checksum_text(const char* what, std::uint32_t computed, std::uint32_t received) {
  char buf[96];
  std::snprintf(buf, sizeof buf, "%s checksum mismatch: computed 0x%08x, received 0x%08x", what,
                static_cast<unsigned>(computed), static_cast<unsigned>(received));
  return buf;
}

/// A header name for an error text: printable ASCII kept, anything else shown as '?'.
std::string printable(std::string_view name) {
  std::string s;
  s.reserve(name.size());
  for (char c : name) s.push_back(c >= 0x20 && c < 0x7f ? c : '?');
  return s;
}

std::string header_text(std::size_t index, std::string_view name, std::string_view what) {
  std::string s = "header " + std::to_string(index);
  if (!name.empty()) s += " ('" + printable(name) + "')";
  s += ": ";
  s += what;
  return s;
}

/// Fixed value sizes by type; -1 for the variable-length types 6 and 7.
constexpr int fixed_value_size[] = {0, 0, 1, 2, 4, 8, -1, -1, 8, 16};

/// Sign-extends the low `n` bytes of `v`.
std::int64_t sign_extend(std::uint64_t v, std::size_t n) {
  if (n == 8) return static_cast<std::int64_t>(v);
  const std::uint64_t sign = std::uint64_t{1} << (n * 8 - 1);
  return static_cast<std::int64_t>((v ^ sign)) - static_cast<std::int64_t>(sign);
}

}  // namespace

const event_header* message::find(std::string_view name) const {
  for (const event_header& h : headers)
    if (h.name == name) return &h;
  return nullptr;
}

std::string_view message::string_header(std::string_view name) const {
  const event_header* h = find(name);
  return h && h->is_string() ? std::string_view(h->bytes) : std::string_view();
}

message_kind message::kind() const {
  const std::string_view t = message_type();
  if (t == "event") return message_kind::event;
  if (t == "exception") return message_kind::exception;
  if (t == "error") return message_kind::error;
  return message_kind::other;
}

bool decoder::fail(decode_error e, std::string text) {
  error_ = e;
  error_text_ = std::move(text);
  buf_.clear();
  buf_.shrink_to_fit();
  total_ = 0;
  return false;
}

std::size_t decoder::check_prelude(std::string_view frame) {
  const std::uint32_t total = read_u32(frame, 0);
  const std::uint32_t headers = read_u32(frame, 4);
  const std::uint32_t received = read_u32(frame, 8);
  const std::uint32_t computed = crc32(frame.substr(0, 8));
  if (computed != received) {
    fail(decode_error::prelude_checksum_mismatch, checksum_text("prelude", computed, received));
    return 0;
  }
  if (total < min_message_bytes) {
    fail(decode_error::message_too_short,
         "message length " + std::to_string(total) + " is below the minimum of 16");
    return 0;
  }
  if (total > limits_.max_message_bytes) {
    fail(decode_error::message_too_large, "message length " + std::to_string(total) +
                                              " exceeds the maximum of " +
                                              std::to_string(limits_.max_message_bytes));
    return 0;
  }
  if (headers > total - min_message_bytes) {
    fail(decode_error::headers_length_invalid,
         "headers length " + std::to_string(headers) + " exceeds message length " +
             std::to_string(total) + " minus 16");
    return 0;
  }
  if (headers > limits_.max_headers_bytes) {
    fail(decode_error::headers_length_invalid, "headers length " + std::to_string(headers) +
                                                   " exceeds the maximum of " +
                                                   std::to_string(limits_.max_headers_bytes));
    return 0;
  }
  return total;
}

bool decoder::decode(std::string_view frame, std::vector<message>& out) {
  const std::size_t total = frame.size();
  const std::uint32_t received = read_u32(frame, total - 4);
  const std::uint32_t computed = crc32(frame.substr(0, total - 4));
  if (computed != received)
    return fail(decode_error::message_checksum_mismatch,
                checksum_text("message", computed, received));

  message m;
  m.total_length = static_cast<std::uint32_t>(total);
  m.headers_length = read_u32(frame, 4);
  m.prelude_crc = read_u32(frame, 8);
  m.message_crc = received;

  const std::string_view block = frame.substr(prelude_bytes, m.headers_length);
  std::size_t pos = 0;
  for (std::size_t index = 0; pos < block.size(); ++index) {
    const std::size_t name_len = static_cast<unsigned char>(block[pos]);
    ++pos;
    // The name and the type byte must both fit.
    if (name_len + 1 > block.size() - pos)
      return fail(decode_error::header_truncated, header_text(index, {}, "truncated name"));
    event_header h;
    h.name.assign(block.substr(pos, name_len));
    pos += name_len;
    const unsigned type = static_cast<unsigned char>(block[pos]);
    ++pos;
    if (type > static_cast<unsigned>(header_type::uuid))
      return fail(decode_error::unknown_header_type,
                  header_text(index, h.name, "unknown value type " + std::to_string(type)));
    h.type = static_cast<header_type>(type);
    const int fixed = fixed_value_size[type];
    const std::size_t left = block.size() - pos;
    if (fixed >= 0) {
      const auto n = static_cast<std::size_t>(fixed);
      if (n > left)
        return fail(decode_error::header_truncated, header_text(index, h.name, "truncated value"));
      switch (h.type) {
        case header_type::bool_true: h.integer = 1; break;
        case header_type::bool_false: h.integer = 0; break;
        case header_type::uuid: h.bytes.assign(block.substr(pos, n)); break;
        default: h.integer = sign_extend(read_be(block, pos, n), n); break;
      }
      pos += n;
    } else {
      if (left < 2)
        return fail(decode_error::header_truncated,
                    header_text(index, h.name, "truncated value length"));
      const auto n = static_cast<std::size_t>(read_be(block, pos, 2));
      pos += 2;
      if (n > left - 2)
        return fail(decode_error::header_truncated, header_text(index, h.name, "truncated value"));
      h.bytes.assign(block.substr(pos, n));
      pos += n;
    }
    m.headers.push_back(std::move(h));
  }

  const std::size_t payload_at = prelude_bytes + m.headers_length;
  m.payload.assign(frame.substr(payload_at, total - payload_at - 4));
  out.push_back(std::move(m));
  return true;
}

bool decoder::feed(std::string_view in, std::vector<message>& out) {
  if (failed()) return false;
  while (!in.empty()) {
    if (buf_.empty()) {
      // Nothing held back: decode complete messages straight from the input, without copying.
      if (in.size() < prelude_bytes) {
        buf_.assign(in);
        return true;
      }
      const std::size_t total = check_prelude(in);
      if (total == 0) return false;
      if (in.size() >= total) {
        if (!decode(in.substr(0, total), out)) return false;
        in.remove_prefix(total);
        continue;
      }
      // Grow with the bytes that actually arrive; no reserve(total) on the peer's word.
      buf_.assign(in);
      total_ = total;
      return true;
    }
    if (total_ == 0) {
      // Completing the prelude of the held-back message.
      const std::size_t take = std::min(prelude_bytes - buf_.size(), in.size());
      buf_.append(in.substr(0, take));
      in.remove_prefix(take);
      if (buf_.size() < prelude_bytes) return true;
      total_ = check_prelude(buf_);
      if (total_ == 0) return false;
    }
    const std::size_t take = std::min(total_ - buf_.size(), in.size());
    buf_.append(in.substr(0, take));
    in.remove_prefix(take);
    if (buf_.size() < total_) return true;
    if (!decode(buf_, out)) return false;
    buf_.clear();
    total_ = 0;
    // Do not keep a large message's capacity for the rest of the stream.
    if (buf_.capacity() > 64 * 1024) buf_.shrink_to_fit();
  }
  return true;
}

bool decoder::finish() {
  if (failed()) return false;
  if (buf_.empty()) return true;
  std::string text = "stream ended inside a message (" + std::to_string(buf_.size()) + " bytes";
  if (total_ != 0) text += " of " + std::to_string(total_);
  text += " received)";
  return fail(decode_error::truncated_stream, std::move(text));
}

}  // namespace tollgate::providers::aws
