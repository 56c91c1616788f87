// SPDX-License-Identifier: Apache-2.0
#pragma once
// A minimal AWS event-stream encoder for tests: any frame, valid or not (the decoder's tests),
// and the frames a Bedrock stream carries (the adapter's).
#include <boost/crc.hpp>

#include <cstdint>
#include <string>
#include <string_view>

#include "providers/bedrock/event_stream.hpp"

namespace tollgate::providers::aws::testing {

inline void put_be(std::string& s, std::uint64_t v, int n) {
  for (int i = n - 1; i >= 0; --i) s.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

inline std::uint32_t crc32(std::string_view s) {
  boost::crc_32_type c;
  c.process_bytes(s.data(), s.size());
  return c.checksum();
}

/// The 12-byte prelude with a correct CRC for any lengths.
inline std::string prelude(std::uint32_t total, std::uint32_t headers_length) {
  std::string s;
  put_be(s, total, 4);
  put_be(s, headers_length, 4);
  put_be(s, crc32(s), 4);
  return s;
}

/// A complete message around raw header bytes (valid or not) and a payload, both CRCs correct.
inline std::string frame(std::string_view raw_headers, std::string_view payload) {
  const auto total = static_cast<std::uint32_t>(16 + raw_headers.size() + payload.size());
  std::string s = prelude(total, static_cast<std::uint32_t>(raw_headers.size()));
  s += raw_headers;
  s += payload;
  put_be(s, crc32(s), 4);
  return s;
}

inline std::string name_and_type(std::string_view name, header_type t) {
  std::string s;
  s.push_back(static_cast<char>(name.size()));
  s += name;
  s.push_back(static_cast<char>(t));
  return s;
}

inline std::string string_header(std::string_view name, std::string_view value,
                                 header_type t = header_type::string) {
  std::string s = name_and_type(name, t);
  put_be(s, value.size(), 2);
  s += value;
  return s;
}

inline std::string int_header(std::string_view name, header_type t, std::int64_t v) {
  std::string s = name_and_type(name, t);
  const int n = t == header_type::byte ? 1 : t == header_type::int16 ? 2 : t == header_type::int32 ? 4 : 8;
  put_be(s, static_cast<std::uint64_t>(v), n);
  return s;
}

/// A Bedrock stream event (`:message-type` event) of `type` with a JSON payload.
inline std::string event_frame(std::string_view type, std::string_view payload) {
  return frame(string_header(":event-type", type) + string_header(":content-type", "application/json") +
                   string_header(":message-type", "event"),
               payload);
}

}  // namespace tollgate::providers::aws::testing
