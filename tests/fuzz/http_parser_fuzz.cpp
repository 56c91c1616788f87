// SPDX-License-Identifier: Apache-2.0
// libFuzzer target, differential: the caller request parser (gateway/request_parser.hpp) against
// Beast's own request_parser<string_body> on the same bytes, with the same limits. Both must fail
// with the same error, or both succeed with the same method, target, version, keep-alive, body
// and the same first value of each of the five fields the gateway reads in the head (Beast's head
// alone, from a header-only parse: its message also holds a chunked body's trailer fields, which
// the gateway does not read). Anything else aborts.
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>

#include "gateway/request_parser.hpp"

namespace {

namespace http = boost::beast::http;

/// Feeds all of `in` (eagerly, as async_read does with a buffer holding the whole request).
template <class Parser>
boost::system::error_code feed(Parser& p, std::string_view in) {
  p.eager(true);
  p.header_limit(2048);
  p.body_limit(512);
  boost::system::error_code ec;
  while (!in.empty() && !p.is_done()) {
    const std::size_t used = p.put(boost::asio::buffer(in.data(), in.size()), ec);
    in.remove_prefix(used);
    if (ec) return ec;
    if (used == 0) break;
  }
  if (!p.is_done() && !ec) ec = http::error::need_more;
  return ec;
}

template <class Body>
std::optional<std::string_view> first(const http::request<Body>& r, std::string_view name) {
  auto it = r.find(name);
  if (it == r.end()) return std::nullopt;
  return std::string_view(it->value().data(), it->value().size());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  std::string storage;
  tollgate::gateway::caller_request_parser ours(storage);
  http::request_parser<http::string_body> beast;
  const auto ours_ec = feed(ours, in);
  const auto beast_ec = feed(beast, in);
  if (ours_ec != beast_ec) std::abort();
  if (ours_ec) return 0;
  const auto& r = beast.get();
  const auto& f = ours.fields();
  http::request_parser<http::string_body> head_only;  // the same bytes, up to the end of the head
  head_only.header_limit(2048);
  boost::system::error_code hec;
  std::string_view rest = in;
  while (!rest.empty() && !head_only.is_header_done() && !hec) {
    const std::size_t used = head_only.put(boost::asio::buffer(rest.data(), rest.size()), hec);
    rest.remove_prefix(used);
    if (used == 0) break;
  }
  if (!head_only.is_header_done()) std::abort();  // the full parse got past it
  const auto& h = head_only.get();
  if (ours.method() != r.method()) std::abort();
  if (ours.method_string() != std::string_view(r.method_string().data(), r.method_string().size())) std::abort();
  if (ours.target() != std::string_view(r.target().data(), r.target().size())) std::abort();
  if (ours.version() != unsigned(r.version())) std::abort();
  if (ours.keep_alive() != beast.keep_alive()) std::abort();
  if (ours.body() != r.body()) std::abort();
  if (f.user_agent != first(h, "User-Agent") || f.content_type != first(h, "Content-Type") ||
      f.authorization != first(h, "Authorization") || f.api_key != first(h, "api-key") ||
      f.x_api_key != first(h, "x-api-key"))
    std::abort();
  return 0;
}
