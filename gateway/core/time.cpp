// SPDX-License-Identifier: Apache-2.0
#include "gateway/core/time.hpp"

#include <charconv>
#include <cstdio>
#include <ctime>

namespace tollgate {

std::optional<std::int64_t> parse_time_ms(std::string_view s) {
  if (s.empty()) return std::nullopt;
  if (s.find_first_not_of("0123456789") == std::string_view::npos) {
    std::int64_t v = 0;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    // Up to the end of year 9999, as the RFC 3339 form: beyond, × 1000 could overflow, and a
    // wrapped bound passed the usage report's range check (billions of hours read one by one).
    if (ec != std::errc{} || v > 253'402'300'799) return std::nullopt;
    return v * 1000;
  }
  std::tm tm{};
  int frac_ms = 0, off_min = 0;
  auto num = [&](std::size_t at, std::size_t len, int& out) {
    if (at + len > s.size()) return false;
    auto [p, ec] = std::from_chars(s.data() + at, s.data() + at + len, out);
    return ec == std::errc{} && p == s.data() + at + len;
  };
  int y, mo, d, h = 0, mi = 0, se = 0;
  if (s.size() < 10 || !num(0, 4, y) || s[4] != '-' || !num(5, 2, mo) || s[7] != '-' || !num(8, 2, d)) return std::nullopt;
  std::size_t i = 10;
  if (i < s.size()) {
    if (s[i] != 'T' && s[i] != 't' && s[i] != ' ') return std::nullopt;
    if (s.size() < i + 9 || !num(i + 1, 2, h) || s[i + 3] != ':' || !num(i + 4, 2, mi) || s[i + 6] != ':' ||
        !num(i + 7, 2, se))
      return std::nullopt;
    i += 9;
    if (i < s.size() && s[i] == '.') {
      std::size_t j = i + 1, digits = 0;
      while (j < s.size() && s[j] >= '0' && s[j] <= '9') {
        if (digits < 3) frac_ms = frac_ms * 10 + (s[j] - '0');
        ++digits;
        ++j;
      }
      if (digits == 0) return std::nullopt;
      for (std::size_t k = digits; k < 3; ++k) frac_ms *= 10;
      i = j;
    }
    if (i >= s.size()) return std::nullopt;  // a time needs its zone
    if (s[i] == 'Z' || s[i] == 'z') ++i;
    else if (s[i] == '+' || s[i] == '-') {
      int oh, om;
      if (s.size() < i + 6 || !num(i + 1, 2, oh) || s[i + 3] != ':' || !num(i + 4, 2, om) || oh > 23 || om > 59)
        return std::nullopt;
      off_min = (s[i] == '-' ? -1 : 1) * (oh * 60 + om);
      i += 6;
    } else {
      return std::nullopt;
    }
    if (i != s.size()) return std::nullopt;
  }
  if (mo < 1 || mo > 12 || d < 1 || h > 23 || mi > 59 || se > 60) return std::nullopt;
  // A day the month does not have is refused, not moved on by timegm (2026-02-30 is no March 2).
  static constexpr int days_in[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  const bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
  if (d > days_in[mo - 1] + (mo == 2 && leap ? 1 : 0)) return std::nullopt;
  tm.tm_year = y - 1900;
  tm.tm_mon = mo - 1;
  tm.tm_mday = d;
  tm.tm_hour = h;
  tm.tm_min = mi;
  tm.tm_sec = se;
  const std::int64_t secs = std::int64_t(timegm(&tm)) - std::int64_t(off_min) * 60;
  return secs * 1000 + frac_ms;
}

std::string format_time_ms(std::chrono::system_clock::time_point t) {
  using namespace std::chrono;
  const auto ms = duration_cast<milliseconds>(t.time_since_epoch()).count();
  const std::time_t secs = std::time_t(ms / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[96];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                tm.tm_hour, tm.tm_min, tm.tm_sec, int(ms % 1000));
  return buf;
}

}  // namespace tollgate
