// SPDX-License-Identifier: Apache-2.0
#pragma once
/// Appending JSON to a string by hand, for the lines written on every request (access log, audit
/// records): a json::object's allocations cost more than the rest of those phases. Pure.
#include <cstdint>
#include <string>
#include <string_view>

#include "gateway/core/swar.hpp"

namespace tollgate::json_out {

/// True when one of the 8 bytes in `x` needs a look: '"', '\\' or a control character (< 0x20),
/// which are escaped, or a byte of 0x80 and above, which must begin or continue valid UTF-8.
constexpr bool any_needs_escape(std::uint64_t x) {
  return (swar::less_than(x, 0x20) | swar::equal_to(x, '"') | swar::equal_to(x, '\\') |
          (x & 0x8080808080808080ull)) != 0;
}

/// The length of the valid UTF-8 sequence at `p` (`n` bytes available), 0 when it is none
/// (a stray continuation byte, a truncated sequence, an overlong form, a surrogate, > U+10FFFF).
constexpr std::size_t utf8_sequence(const unsigned char* p, std::size_t n) {
  const unsigned c = p[0];
  std::size_t len = 0;
  unsigned lo = 0x80, hi = 0xbf;  // the second byte's range
  if (c >= 0xc2 && c <= 0xdf) len = 2;
  else if (c >= 0xe0 && c <= 0xef) {
    len = 3;
    if (c == 0xe0) lo = 0xa0;       // no overlong forms
    else if (c == 0xed) hi = 0x9f;  // no surrogates
  } else if (c >= 0xf0 && c <= 0xf4) {
    len = 4;
    if (c == 0xf0) lo = 0x90;
    else if (c == 0xf4) hi = 0x8f;  // at most U+10FFFF
  } else {
    return 0;
  }
  if (n < len || p[1] < lo || p[1] > hi) return 0;
  for (std::size_t k = 2; k < len; ++k)
    if ((p[k] & 0xc0) != 0x80) return 0;
  return len;
}

/// Appends `v` as a JSON string (quotes, backslashes and control characters escaped; bytes that
/// are no valid UTF-8 replaced by U+FFFD, so that every line stays JSON text a strict parser
/// reads: a caller's `User-Agent: \xff` must not keep its call out of an audit export). Runs of
/// ASCII that need no escape are appended whole, and found 8 bytes at a time: byte by byte
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
    while (i < stop) {
      const auto c = static_cast<unsigned char>(d[i]);
      if (c >= 0x80) {
        if (const std::size_t len = utf8_sequence(reinterpret_cast<const unsigned char*>(d + i), n - i)) {
          i += len;  // (may end past this word: the scan goes on from there)
          continue;
        }
        out.append(d + run, i - run);
        out.append("\xef\xbf\xbd");  // U+FFFD
        run = ++i;
        continue;
      }
      if (c != '"' && c != '\\' && c >= 0x20) {
        ++i;
        continue;
      }
      out.append(d + run, i - run);
      run = ++i;
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
