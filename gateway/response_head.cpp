// SPDX-License-Identifier: Apache-2.0
#include "gateway/response_head.hpp"

#include <boost/beast/http/status.hpp>

#include <charconv>
#include <cstring>

namespace tollgate::gateway {
namespace {

bool clean(std::string_view s) {
  for (char c : s)
    if (c == '\r' || c == '\n' || c == '\0') return false;
  return true;
}

bool is_rate_header(std::string_view name) {
  constexpr std::string_view prefix = "x-ratelimit-";
  if (name.size() < prefix.size()) return false;
  for (std::size_t i = 0; i < prefix.size(); ++i)
    if ((name[i] | 0x20) != prefix[i]) return false;  // ('-' | 0x20 is '-')
  return true;
}

/// Writes into a buffer the caller sized: the rate-limit headers are ~300 bytes written on every
/// policed response, one append instead of eighteen.
struct writer {
  char* p;
  void put(std::string_view v) {
    std::memcpy(p, v.data(), v.size());
    p += v.size();
  }
  void num(std::int64_t v) { p = std::to_chars(p, p + 20, v).ptr; }
  /// A duration as Go's time.Duration prints it, to the millisecond (at most 26 bytes).
  void reset(std::int64_t ms) {
    if (ms < 0) ms = 0;
    if (ms < 1000) {
      num(ms);
      put(ms ? "ms" : "s");  // Go writes a zero duration as "0s"
      return;
    }
    if (ms >= 3'600'000) {
      num(ms / 3'600'000);
      *p++ = 'h';
      ms %= 3'600'000;
      num(ms / 60'000);
      *p++ = 'm';
      ms %= 60'000;
    } else if (ms >= 60'000) {
      num(ms / 60'000);
      *p++ = 'm';
      ms %= 60'000;
    }
    num(ms / 1000);
    if (const std::int64_t frac = ms % 1000) {
      const char digits[3] = {char('0' + frac / 100), char('0' + frac / 10 % 10), char('0' + frac % 10)};
      std::size_t n = 3;
      while (digits[n - 1] == '0') --n;
      *p++ = '.';
      put(std::string_view(digits, n));
    }
    *p++ = 's';
  }
};

}  // namespace

std::string format_reset(std::int64_t ms) {
  char buf[32];
  writer w{buf};
  w.reset(ms);
  return std::string(buf, w.p);
}

std::string format_response_head(const response_head& h) {
  namespace http = boost::beast::http;
  const auto reason = http::obsolete_reason(http::int_to_status(h.status));
  const bool rate = h.rate && h.rate->any();
  // Written through one pointer into a buffer sized once: ~15 appends (each a capacity check and
  // a call to memcpy) cost more than the bytes they copy.
  std::size_t bound = 160 + reason.size() + h.content_type.size() + h.request_id.size() + (rate ? 384 : 0);
  if (h.extra)
    for (auto& [k, v] : *h.extra) bound += k.size() + v.size() + 4;
  std::string s(bound, '\0');
  writer w{s.data()};
  w.put("HTTP/1.1 ");
  w.num(h.status);
  w.put(" ");
  w.put(std::string_view(reason.data(), reason.size()));
  w.put("\r\n");
  if (!h.content_type.empty() && clean(h.content_type)) {
    w.put("Content-Type: ");
    w.put(h.content_type);
    w.put("\r\n");
  }
  if (!h.request_id.empty()) {
    w.put("x-request-id: ");
    w.put(h.request_id);
    w.put("\r\n");
  }
  if (h.extra)
    for (auto& [k, v] : *h.extra)
      if (!k.empty() && clean(k) && clean(v) && !(rate && is_rate_header(k))) {
        w.put(k);
        w.put(": ");
        w.put(v);
        w.put("\r\n");
      }
  if (rate) {  // per kind: 3 names (88) + 2 numbers (40) + a reset (26) + separators (12)
    const rate_figures& r = *h.rate;
    const auto kind = [&](std::string_view name, std::uint64_t limit, std::int64_t remaining) {
      if (!limit) return;
      w.put("x-ratelimit-limit-");
      w.put(name);
      w.put(": ");
      w.num(std::int64_t(limit));
      w.put("\r\nx-ratelimit-remaining-");
      w.put(name);
      w.put(": ");
      w.num(remaining);
      w.put("\r\nx-ratelimit-reset-");
      w.put(name);
      w.put(": ");
      w.reset(r.reset_ms);
      w.put("\r\n");
    };
    kind("requests", r.limit_requests, r.remaining_requests);
    kind("tokens", r.limit_tokens, r.remaining_tokens);
  }
  if (h.content_length) {
    w.put("Content-Length: ");
    w.num(std::int64_t(*h.content_length));
    w.put("\r\n");
  } else if (h.chunked) {
    w.put("Transfer-Encoding: chunked\r\n");
  }
  w.put(h.keep_alive ? "Connection: keep-alive\r\n\r\n" : "Connection: close\r\n\r\n");
  s.resize(std::size_t(w.p - s.data()));
  return s;
}

}  // namespace tollgate::gateway
