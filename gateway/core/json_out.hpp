// SPDX-License-Identifier: Apache-2.0
#pragma once
/// Appending JSON to a string by hand, for the lines written on every request (access log, audit
/// records): a json::object's allocations cost more than the rest of those phases. Pure.
#include <cstdint>
#include <string>
#include <string_view>

namespace tollgate::json_out {

/// Appends `v` as a JSON string (quotes, backslashes and control characters escaped). Runs of
/// bytes that need no escape are appended whole: byte by byte showed in the filtered relay's
/// profile.
inline void string(std::string& out, std::string_view v) {
  static constexpr char hex[] = "0123456789abcdef";
  out.push_back('"');
  std::size_t run = 0;  // the first byte not appended yet
  for (std::size_t i = 0; i < v.size(); ++i) {
    const auto c = static_cast<unsigned char>(v[i]);
    if (c != '"' && c != '\\' && c >= 0x20) continue;
    out.append(v.data() + run, i - run);
    run = i + 1;
    if (c < 0x20) {
      out.append("\\u00").push_back(hex[c >> 4]);
      out.push_back(hex[c & 0xf]);
    } else {
      out.push_back('\\');
      out.push_back(char(c));
    }
  }
  out.append(v.data() + run, v.size() - run);
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
