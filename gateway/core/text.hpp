// SPDX-License-Identifier: Apache-2.0
#pragma once
/// Small text helpers for HTTP field values and environment lists. Pure.
#include <string_view>

namespace tollgate::text {

/// ASCII lower case of one byte (no locale: HTTP names and tokens are ASCII).
constexpr unsigned char ascii_lower(unsigned char c) noexcept { return c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c; }

/// ASCII case-insensitive equality (HTTP field names and tokens). Inline, without libc's
/// locale-aware tolower: it runs for every header line of every request (http_guard).
constexpr bool iequals(std::string_view a, std::string_view b) noexcept {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (ascii_lower(static_cast<unsigned char>(a[i])) != ascii_lower(static_cast<unsigned char>(b[i]))) return false;
  return true;
}

/// Strips optional whitespace (spaces and tabs) at both ends.
inline std::string_view trim(std::string_view s) noexcept {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

/// Calls `f(item)` for each comma-separated item of `list`, trimmed; empty items included (some
/// callers must refuse them). Stops early when `f` returns false; returns false in that case.
template <class F>
bool for_each_item(std::string_view list, F&& f) {
  for (;;) {
    const auto comma = list.find(',');
    if (!f(trim(list.substr(0, comma)))) return false;
    if (comma == std::string_view::npos) return true;
    list.remove_prefix(comma + 1);
  }
}

}  // namespace tollgate::text
