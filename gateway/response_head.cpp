// SPDX-License-Identifier: Apache-2.0
#include "gateway/response_head.hpp"

#include <boost/beast/http/status.hpp>

namespace tollgate::gateway {
namespace {

bool clean(std::string_view s) {
  for (char c : s)
    if (c == '\r' || c == '\n' || c == '\0') return false;
  return true;
}

}  // namespace

std::string format_response_head(const response_head& h) {
  namespace http = boost::beast::http;
  std::string s;
  s.reserve(256);
  auto reason = http::obsolete_reason(http::int_to_status(h.status));
  s.append("HTTP/1.1 ").append(std::to_string(h.status)).append(" ");
  s.append(reason.data(), reason.size()).append("\r\n");
  if (!h.content_type.empty() && clean(h.content_type)) s.append("Content-Type: ").append(h.content_type).append("\r\n");
  if (!h.request_id.empty()) s.append("x-request-id: ").append(h.request_id).append("\r\n");
  if (h.extra)
    for (auto& [k, v] : *h.extra)
      if (!k.empty() && clean(k) && clean(v)) s.append(k).append(": ").append(v).append("\r\n");
  if (h.content_length) s.append("Content-Length: ").append(std::to_string(*h.content_length)).append("\r\n");
  else if (h.chunked) s.append("Transfer-Encoding: chunked\r\n");
  s.append(h.keep_alive ? "Connection: keep-alive\r\n" : "Connection: close\r\n");
  s.append("\r\n");
  return s;
}

}  // namespace tollgate::gateway
