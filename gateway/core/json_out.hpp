// SPDX-License-Identifier: Apache-2.0
#pragma once
/// Appending JSON to a string by hand, for the lines written on every request (access log, audit
/// records): a json::object's allocations cost more than the rest of those phases. Pure.
#include <cstdint>
#include <string>
#include <string_view>

#include "gateway/core/swar.hpp"

namespace tollgate::json_out {

/// True when one of the 8 bytes in `x` needs an escape in a JSON string: '"', '\\' or a control
/// character (< 0x20). Bytes of 0x80 and above (UTF-8) never do.
constexpr bool any_needs_escape(std::uint64_t x) {
  return (swar::less_than(x, 0x20) | swar::equal_to(x, '"') | swar::equal_to(x, '\\')) != 0;
}

/// Appends `v` as a JSON string (quotes, backslashes and control characters escaped). Runs of
/// bytes that need no escape are appended whole, and found 8 bytes at a time: byte by byte
/// showed in the filtered relay's profile.
inline void string(std::string& out, std::string_view v) {
  static constexpr char hex[] = "0123456789abcdef";
  out.push_back('"');
  const char* const d = v.data();
  const std::size_t n = v.size();
  std::size_t run = 0;  // the first byte not appended yet
  std::size_t i = 0;
  for (;;) {
    while (i + 8 <= n) {  // skip whole words of plain bytes
      if (any_needs_escape(swar::load(d + i))) break;
      i += 8;
    }
    const std::size_t stop = i + 8 <= n ? i + 8 : n;  // the word with an escape, or the tail
    for (; i < stop; ++i) {
      const auto c = static_cast<unsigned char>(d[i]);
      if (c != '"' && c != '\\' && c >= 0x20) continue;
      out.append(d + run, i - run);
      run = i + 1;
      if (c < 0x20) {
        out.append("\\u00").push_back(hex[c >> 4]);
        out.push_back(hex[c & 0xf]);
      } else {
        out.push_back('\\');
        out.push_back(char(c));
      }
    }
    if (i >= n) break;
  }
  out.append(d + run, n - run);
  out.push_back('"');
}

/// `,"key":` (every field after the first starts with its comma).
inline std::string& key(std::string& out, std::string_view k) { return out.append(",\"").append(k).append("\":"); }

inline void field(std::string& out, std::string_view k, std::string_view value) {
  key(out, k);
  string(out, value);
}

/// A string field, or null when `value` is empty.
inline void field_or_null(std::string& out, std::string_view k, std::string_view value) {
  key(out, k);
  if (value.empty()) out.append("null");
  else string(out, value);
}

/// `,"key":["a","b"]`.
template <class List>
inline void string_list(std::string& out, std::string_view k, const List& values) {
  key(out, k).push_back('[');
  bool first = true;
  for (const auto& v : values) {
    if (!first) out.push_back(',');
    first = false;
    string(out, v);
  }
  out.push_back(']');
}

inline void number(std::string& out, std::string_view k, std::uint64_t v) { key(out, k).append(std::to_string(v)); }
inline void signed_number(std::string& out, std::string_view k, std::int64_t v) { key(out, k).append(std::to_string(v)); }
inline void boolean(std::string& out, std::string_view k, bool v) { key(out, k).append(v ? "true" : "false"); }

}  // namespace tollgate::json_out
