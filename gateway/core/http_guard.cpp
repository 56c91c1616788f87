// SPDX-License-Identifier: Apache-2.0
#include "gateway/core/http_guard.hpp"

#include "gateway/core/swar.hpp"
#include "gateway/core/text.hpp"

#include <algorithm>
#include <array>
#include <cstring>

namespace tollgate {
namespace {

using text::iequals;
using text::trim;

/// RFC 9110 tchar, by table (every field name of every request passes here).
constexpr auto tchar_table = [] {
  std::array<bool, 256> t{};
  for (int c = '0'; c <= '9'; ++c) t[c] = true;
  for (int c = 'a'; c <= 'z'; ++c) t[c] = t[c - 'a' + 'A'] = true;
  for (char c : std::string_view("!#$%&'*+-.^_`|~")) t[static_cast<unsigned char>(c)] = true;
  return t;
}();
bool is_tchar(char c) { return tchar_table[static_cast<unsigned char>(c)]; }

constexpr head_verdict bad(std::string_view why) { return {errc::bad_request, why, std::nullopt}; }

}  // namespace

std::size_t find_head_end(std::string_view buf) noexcept {
  const char* const b = buf.data();
  const std::size_t n = buf.size();
  for (std::size_t i = 0; i < n; ++i) {
    const void* nl = std::memchr(b + i, '\n', n - i);  // (a byte loop cost ~4 instructions a byte)
    if (nl == nullptr) return 0;
    i = std::size_t(static_cast<const char*>(nl) - b);
    if (i + 2 < n && b[i + 1] == '\r' && b[i + 2] == '\n') return i + 3;
    if (i + 1 < n && b[i + 1] == '\n') return i + 2;  // bare LF blank line: refused later
  }
  return 0;
}

namespace {
/// A control character other than tab, or DEL, in a field value (8 bytes at a time: the values
/// of every request's fields pass here).
bool has_control(std::string_view v) noexcept {
  auto control = [](char c) { return (static_cast<unsigned char>(c) < 0x20 && c != '\t') || c == 0x7f; };
  std::size_t i = 0;
  for (; i + 8 <= v.size(); i += 8) {
    const std::uint64_t w = swar::load(v.data() + i);
    if ((swar::less_than(w, 0x20) | swar::equal_to(w, 0x7f)) == 0) continue;
    for (std::size_t k = i; k < i + 8; ++k)  // (a tab, or the real thing)
      if (control(v[k])) return true;
  }
  for (; i < v.size(); ++i)
    if (control(v[i])) return true;
  return false;
}
}  // namespace

head_verdict check_head(std::string_view head, const head_limits& limits) noexcept {
  if (head.size() > limits.max_header_bytes) return {errc::header_fields_too_large, "request head too large", std::nullopt};
  std::size_t pos = 0, line_no = 0, fields = 0;
  bool has_cl = false, has_te = false;
  std::string_view cl_value;
  while (pos < head.size()) {
    std::size_t nl = head.find('\n', pos);
    if (nl == std::string_view::npos) return bad("unterminated header line");
    if (nl == pos || head[nl - 1] != '\r') return bad("bare LF line ending");
    std::string_view line = head.substr(pos, nl - 1 - pos);
    pos = nl + 1;
    if (line.find('\r') != std::string_view::npos) return bad("bare CR in header");
    if (line_no++ == 0) {
      // request-line = method SP request-target SP HTTP-version
      auto sp1 = line.find(' ');
      auto sp2 = line.rfind(' ');
      if (sp1 == std::string_view::npos || sp2 == sp1) return bad("malformed request line");
      if (sp2 - sp1 - 1 > limits.max_url_bytes) return {errc::uri_too_long, "request target too long", std::nullopt};
      continue;
    }
    if (line.empty()) break;  // end of head
    if (line.front() == ' ' || line.front() == '\t') return bad("obsolete line folding");
    auto colon = line.find(':');
    if (colon == std::string_view::npos || colon == 0) return bad("malformed header field");
    std::string_view name = line.substr(0, colon);
    if (!std::all_of(name.begin(), name.end(), is_tchar)) return bad("invalid header field name");
    std::string_view value = trim(line.substr(colon + 1));
    if (has_control(value)) return bad("control character in header value");
    if (++fields > limits.max_header_count) return {errc::header_fields_too_large, "too many header fields", std::nullopt};
    if (iequals(name, "content-length")) {
      // Several fields, or a list, are allowed only when every value is the same number.
      bool ok = text::for_each_item(value, [&](std::string_view v) {
        if (v.empty() || v.size() > 18 || !std::all_of(v.begin(), v.end(), [](char c) { return c >= '0' && c <= '9'; }))
          return false;
        if (has_cl && v != cl_value) return false;
        has_cl = true;
        cl_value = v;
        return true;
      });
      if (!ok) return bad("invalid or conflicting Content-Length");
    } else if (iequals(name, "transfer-encoding")) {
      if (has_te) return bad("repeated Transfer-Encoding");
      has_te = true;
      // The final coding must be chunked, and chunked must appear only there (RFC 9112 §6.1).
      std::string_view last;
      int chunked = 0;
      bool ok = text::for_each_item(value, [&](std::string_view coding) {
        if (coding.empty()) return false;
        if (iequals(coding, "chunked")) ++chunked;
        last = coding;
        return true;
      });
      if (!ok) return bad("invalid Transfer-Encoding");
      if (!iequals(last, "chunked") || chunked != 1) return bad("Transfer-Encoding must end in chunked");
    }
  }
  if (has_cl && has_te) return bad("both Content-Length and Transfer-Encoding");
  head_verdict ok;
  if (has_cl) {
    std::uint64_t n = 0;
    for (char c : cl_value) n = n * 10 + std::uint64_t(c - '0');  // (at most 18 digits: no overflow)
    ok.content_length = n;
  }
  return ok;
}

bool expects_continue(std::string_view head) noexcept {
  std::size_t pos = head.find("\r\n");
  if (pos == std::string_view::npos || !head.substr(0, pos).ends_with(" HTTP/1.1")) return false;
  while (pos != std::string_view::npos && pos + 2 < head.size()) {
    std::size_t next = head.find("\r\n", pos + 2);
    std::string_view line = head.substr(pos + 2, next == std::string_view::npos ? std::string_view::npos : next - pos - 2);
    if (auto colon = line.find(':'); colon != std::string_view::npos && iequals(line.substr(0, colon), "expect"))
      return iequals(trim(line.substr(colon + 1)), "100-continue");
    pos = next;
  }
  return false;
}

}  // namespace tollgate
