// SPDX-License-Identifier: Apache-2.0
#include "gateway/response_head.hpp"

#include <boost/beast/http/status.hpp>

#include <charconv>

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

void append_number(std::string& s, std::int64_t v) {
  char buf[24];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  s.append(buf, end);
}

}  // namespace

std::string format_reset(std::int64_t ms) {
  std::string s;
  if (ms < 0) ms = 0;
  if (ms < 1000) {
    append_number(s, ms);
    s.append(ms ? "ms" : "s");  // Go writes a zero duration as "0s"
    return s;
  }
  if (ms >= 3'600'000) {
    append_number(s, ms / 3'600'000);
    s.push_back('h');
    ms %= 3'600'000;
    append_number(s, ms / 60'000);
    s.push_back('m');
    ms %= 60'000;
  } else if (ms >= 60'000) {
    append_number(s, ms / 60'000);
    s.push_back('m');
    ms %= 60'000;
  }
  append_number(s, ms / 1000);
  if (const std::int64_t frac = ms % 1000) {
    char digits[4] = {char('0' + frac / 100), char('0' + frac / 10 % 10), char('0' + frac % 10), 0};
    std::size_t n = 3;
    while (digits[n - 1] == '0') --n;
    s.push_back('.');
    s.append(digits, n);
  }
  s.push_back('s');
  return s;
}

std::string format_response_head(const response_head& h) {
  namespace http = boost::beast::http;
  std::string s;
  s.reserve(256);
  auto reason = http::obsolete_reason(http::int_to_status(h.status));
  s.append("HTTP/1.1 ").append(std::to_string(h.status)).append(" ");
  s.append(reason.data(), reason.size()).append("\r\n");
  if (!h.content_type.empty() && clean(h.content_type)) s.append("Content-Type: ").append(h.content_type).append("\r\n");
  if (!h.request_id.empty()) s.append("x-request-id: ").append(h.request_id).append("\r\n");
  const bool rate = h.rate && h.rate->any();
  if (h.extra)
    for (auto& [k, v] : *h.extra)
      if (!k.empty() && clean(k) && clean(v) && !(rate && is_rate_header(k))) s.append(k).append(": ").append(v).append("\r\n");
  if (rate) {
    const rate_figures& r = *h.rate;
    const std::string reset = format_reset(r.reset_ms);
    const auto kind = [&](std::string_view name, std::uint64_t limit, std::int64_t remaining) {
      if (!limit) return;
      s.append("x-ratelimit-limit-").append(name).append(": ");
      append_number(s, std::int64_t(limit));
      s.append("\r\nx-ratelimit-remaining-").append(name).append(": ");
      append_number(s, remaining);
      s.append("\r\nx-ratelimit-reset-").append(name).append(": ").append(reset).append("\r\n");
    };
    kind("requests", r.limit_requests, r.remaining_requests);
    kind("tokens", r.limit_tokens, r.remaining_tokens);
  }
  if (h.content_length) s.append("Content-Length: ").append(std::to_string(*h.content_length)).append("\r\n");
  else if (h.chunked) s.append("Transfer-Encoding: chunked\r\n");
  s.append(h.keep_alive ? "Connection: keep-alive\r\n" : "Connection: close\r\n");
  s.append("\r\n");
  return s;
}

}  // namespace tollgate::gateway
