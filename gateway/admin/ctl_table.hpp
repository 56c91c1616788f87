// SPDX-License-Identifier: Apache-2.0
#pragma once
/// tollgatectl's human-readable output: admin API JSON as aligned (field, value) rows or as a table.
/// Pure, apart from the stream it is given.
#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <charconv>
#include <cstdint>
#include <ctime>
#include <limits>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tollgate::ctl {

/// One (field, value) line of a two-column view.
using field_row = std::pair<std::string, std::string>;

/// `t` (seconds since the epoch) as RFC 3339 UTC, e.g. 2025-01-31T12:00:00Z.
inline std::string format_rfc3339(std::int64_t t) {
  const std::time_t tt = static_cast<std::time_t>(t);
  std::tm tm{};
  if (!gmtime_r(&tt, &tm)) return std::to_string(t);
  char buf[32];
  const auto n = std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return n ? std::string(buf, n) : std::to_string(t);
}

/// Nano-USD as dollars without float rounding: 21000 → "$0.000021", 500000000 → "$0.50".
inline std::string format_usd_nano(std::int64_t nano) {
  std::string sign = nano < 0 ? "-" : "";
  const std::uint64_t a = nano < 0 ? std::uint64_t(0) - std::uint64_t(nano) : std::uint64_t(nano);
  std::string frac = std::to_string(a % 1000000000);
  frac.insert(0, 9 - frac.size(), '0');
  while (frac.size() > 2 && frac.back() == '0') frac.pop_back();
  return sign + "$" + std::to_string(a / 1000000000) + "." + frac;
}

/// A JSON number as a 64-bit integer; nullopt when it is not one (1.5, 1e30, 2^63): the throwing
/// to_number turned such a figure in an edited record or a server's answer into the end of the run.
inline std::optional<std::int64_t> int_of(const boost::json::value& v) {
  if (!v.is_number()) return std::nullopt;
  boost::system::error_code ec;
  const auto n = v.to_number<std::int64_t>(ec);
  if (ec) return std::nullopt;
  return n;
}

/// `<name>_nano` (an integer) or `<name>_usd` (dollars) of an admin API answer, in nano-USD; nullopt
/// when neither is there, or the figure is beyond what 64 bits of nano-USD hold (not wrapped into
/// a negative amount, nor rounded by an undefined conversion).
inline std::optional<std::int64_t> nano_of(const boost::json::object& o, std::string_view name) {
  if (auto* n = o.if_contains(std::string(name) + "_nano"); n && (n->is_int64() || n->is_uint64())) return int_of(*n);
  if (auto* u = o.if_contains(std::string(name) + "_usd"); u && u->is_number()) {
    const double nano = u->to_number<double>() * 1e9;
    if (std::isfinite(nano) && std::fabs(nano) < 9.2e18) return std::llround(nano);
  }
  return std::nullopt;
}

/// What a budget has left: limit - spent - reserved, held to the 64-bit range (a server's figures
/// are not trusted to be small: a spend near the store's cap minus a negative reservation wrapped).
inline std::int64_t remaining_nano(std::int64_t limit, std::int64_t spent, std::int64_t reserved) {
  auto sub = [](std::int64_t a, std::int64_t b) {
    std::int64_t r;
    if (!__builtin_sub_overflow(a, b, &r)) return r;
    return b < 0 ? std::numeric_limits<std::int64_t>::max() : std::numeric_limits<std::int64_t>::min();
  };
  return sub(sub(limit, spent), reserved);
}

/// A JSON number as people write it (Boost.JSON serializes 0.5 as 5E-1).
inline std::string format_number(const boost::json::value& v) {
  if (v.is_int64()) return std::to_string(v.get_int64());
  if (v.is_uint64()) return std::to_string(v.get_uint64());
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v.get_double());
  return ec == std::errc{} ? std::string(buf, end) : boost::json::serialize(v);
}

/// A value for display: null, "" and [] as "-". Fields named `*_unix` are timestamps: shown with
/// their RFC 3339 form, and 0 as "never" (expiry) or "-".
inline std::string format_value(std::string_view name, const boost::json::value& v) {
  namespace json = boost::json;
  switch (v.kind()) {
    case json::kind::null: return "-";
    case json::kind::bool_: return v.get_bool() ? "true" : "false";
    case json::kind::string: return v.get_string().empty() ? "-" : std::string(v.get_string());
    case json::kind::int64:
    case json::kind::uint64:
      if (name.ends_with("_unix")) {
        const std::int64_t t = v.is_int64() ? v.get_int64() : std::int64_t(v.get_uint64());
        if (t == 0) return name.find("expire") != std::string_view::npos ? "never" : "-";
        return std::to_string(t) + " (" + format_rfc3339(t) + ")";
      }
      return format_number(v);
    case json::kind::double_: return format_number(v);
    case json::kind::array: {
      const auto& a = v.get_array();
      if (a.empty()) return "-";
      std::string out;
      for (const auto& e : a) {
        if (e.is_object() || e.is_array()) return json::serialize(v);
        if (!out.empty()) out += ",";
        out += format_value(name, e);
      }
      return out;
    }
    case json::kind::object: return json::serialize(v);
  }
  return json::serialize(v);
}

/// Appends the rows of `o`: nested objects become dotted names (limits.rpm), lists of scalars are
/// comma-joined. Member order is the server's.
inline void flatten(const boost::json::object& o, std::string_view prefix, std::vector<field_row>& out) {
  for (const auto& [k, v] : o) {
    std::string name = prefix.empty() ? std::string(k) : std::string(prefix) + "." + std::string(k);
    if (v.is_object() && !v.get_object().empty()) flatten(v.get_object(), name, out);
    else out.emplace_back(name, format_value(k, v));
  }
}

/// Text from the gateway made safe for a terminal: C0 and C1 control characters and DEL become
/// `\n`, `\t` or `\xNN` (`\u0080`.. for C1), so that a name or model cannot move the cursor,
/// recolour the terminal or break a table's row. Other UTF-8 is kept.
inline std::string printable(std::string_view s) {
  static constexpr char hex[] = "0123456789abcdef";
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c == '\n') out += "\\n";
    else if (c == '\t') out += "\\t";
    else if (c < 0x20 || c == 0x7f) out.append("\\x").push_back(hex[c >> 4]), out.push_back(hex[c & 15]);
    else if (c == 0xC2 && i + 1 < s.size() && static_cast<unsigned char>(s[i + 1]) >= 0x80 &&
             static_cast<unsigned char>(s[i + 1]) <= 0x9F) {  // C1 controls (U+0080..U+009F)
      const auto d = static_cast<unsigned char>(s[++i]);
      out.append("\\u00").push_back(hex[d >> 4]), out.push_back(hex[d & 15]);
    } else out.push_back(static_cast<char>(c));
  }
  return out;
}

/// Columns a code point takes in a terminal: 2 for East Asian wide and fullwidth ranges and
/// emoji, 0 for combining marks, 1 otherwise (wcwidth's answer for the common cases, without
/// depending on the process's locale).
inline std::size_t code_point_width(char32_t cp) {
  if ((cp >= 0x0300 && cp <= 0x036F) || (cp >= 0x200B && cp <= 0x200F) || (cp >= 0xFE00 && cp <= 0xFE0F)) return 0;
  if ((cp >= 0x1100 && cp <= 0x115F) || (cp >= 0x2E80 && cp <= 0x303E) || (cp >= 0x3041 && cp <= 0x33FF) ||
      (cp >= 0x3400 && cp <= 0x4DBF) || (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0xA000 && cp <= 0xA4CF) ||
      (cp >= 0xAC00 && cp <= 0xD7A3) || (cp >= 0xF900 && cp <= 0xFAFF) || (cp >= 0xFE30 && cp <= 0xFE4F) ||
      (cp >= 0xFF00 && cp <= 0xFF60) || (cp >= 0xFFE0 && cp <= 0xFFE6) || (cp >= 0x1F300 && cp <= 0x1F64F) ||
      (cp >= 0x1F900 && cp <= 0x1F9FF) || (cp >= 0x20000 && cp <= 0x3FFFD))
    return 2;
  return 1;
}

/// Display width of (printable) UTF-8 text in terminal columns.
inline std::size_t text_width(std::string_view s) {
  std::size_t w = 0;
  for (std::size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    const std::size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 1;
    char32_t cp = n == 1 ? c : c & (0x7F >> n);
    for (std::size_t k = 1; k < n && i + k < s.size(); ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
    w += code_point_width(cp);
    i += n;
  }
  return w;
}

/// Writes `rows` as two aligned columns (values made printable).
inline void print_fields(std::ostream& os, const std::vector<field_row>& rows) {
  std::size_t w = 0;
  for (const auto& r : rows) w = std::max(w, text_width(printable(r.first)));
  for (const auto& r : rows) {
    const std::string name = printable(r.first);
    os << name << std::string(w - text_width(name) + 2, ' ') << printable(r.second) << '\n';
  }
}

/// Writes a list of objects as a table: one column per flattened field (in order of first
/// appearance), an upper-case header, "-" for missing cells. An empty list prints "(none)".
inline void print_table(std::ostream& os, const boost::json::array& items) {
  std::vector<std::string> columns;
  std::vector<std::vector<field_row>> rows;
  for (const auto& item : items) {
    std::vector<field_row> r;
    if (item.is_object()) flatten(item.get_object(), "", r);
    else r.emplace_back("value", format_value("value", item));
    for (const auto& [name, _] : r)
      if (std::find(columns.begin(), columns.end(), name) == columns.end()) columns.push_back(name);
    rows.push_back(std::move(r));
  }
  if (rows.empty()) {
    os << "(none)\n";
    return;
  }
  std::vector<std::vector<std::string>> cells;
  std::vector<std::string> header;
  for (const auto& c : columns) {
    std::string h = printable(c);
    for (auto& ch : h) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
    header.push_back(std::move(h));
  }
  cells.push_back(std::move(header));
  for (const auto& r : rows) {
    std::vector<std::string> line;
    for (const auto& c : columns) {
      auto it = std::find_if(r.begin(), r.end(), [&](const field_row& f) { return f.first == c; });
      line.push_back(it == r.end() ? "-" : printable(it->second));
    }
    cells.push_back(std::move(line));
  }
  std::vector<std::size_t> width(columns.size(), 0);
  for (const auto& line : cells)
    for (std::size_t i = 0; i < line.size(); ++i) width[i] = std::max(width[i], text_width(line[i]));
  for (const auto& line : cells) {
    for (std::size_t i = 0; i < line.size(); ++i) {
      os << line[i];
      if (i + 1 < line.size()) os << std::string(width[i] - text_width(line[i]) + 2, ' ');
    }
    os << '\n';
  }
}

/// The list in a list answer: the value itself when it is an array, else `data`, else the first
/// member holding an array of objects. Null when there is none.
inline const boost::json::array* find_list(const boost::json::value& v) {
  if (v.is_array()) return &v.get_array();
  if (!v.is_object()) return nullptr;
  const auto& o = v.get_object();
  if (auto* d = o.if_contains("data"); d && d->is_array()) return &d->get_array();
  for (const auto& [k, m] : o)
    if (m.is_array() && !m.get_array().empty() && m.get_array().front().is_object()) return &m.get_array();
  for (const auto& [k, m] : o)
    if (m.is_array()) return &m.get_array();
  return nullptr;
}

}  // namespace tollgate::ctl
