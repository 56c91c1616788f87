// SPDX-License-Identifier: Apache-2.0
// libFuzzer target, differential: the upstream response parser (gateway/upstream_parser.hpp)
// against Beast's own response_parser (dynamic_body) on the same bytes, with the same limits. Both
// must fail with the same error, or both succeed (or both wait for more) with the same status, keep-alive, chunked flag,
// body and the head's fields in order (a chunked body's trailer fields are not compared: Beast's
// message keeps them with the head's, the gateway's parser does not expose them). The body goes
// into buffers of a size taken from the input's first byte, as read_some hands them out.
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/core/buffers_to_string.hpp>
#include <boost/beast/http/dynamic_body.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cctype>
#include <cstdlib>
#include <map>
#include <utility>
#include <vector>
#include <string>
#include <string_view>

#include "gateway/upstream_parser.hpp"

namespace {

namespace http = boost::beast::http;
using boost::system::error_code;

error_code feed_ours(tollgate::gateway::upstream_response_parser& p, std::string_view in, std::size_t chunk,
                     std::string& body) {
  std::string buf(chunk, '\0');
  error_code ec;
  while (!p.is_done()) {
    p.body_buffer(buf.data(), buf.size());
    ec = {};
    const std::size_t used = p.put(boost::asio::buffer(in.data(), in.size()), ec);
    body.append(buf.data(), buf.size() - p.body_room());
    in.remove_prefix(used);
    if (ec == http::error::need_buffer) continue;
    if (ec) return ec;
    if (used == 0 && !p.is_done()) return http::error::need_more;
  }
  return ec;
}

error_code feed_beast(http::response_parser<http::dynamic_body>& p, std::string_view in) {
  p.eager(true);
  error_code ec;
  while (!p.is_done()) {
    const std::size_t used = p.put(boost::asio::buffer(in.data(), in.size()), ec);
    in.remove_prefix(used);
    if (ec) return ec;
    if (used == 0) return http::error::need_more;
  }
  return ec;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const std::size_t chunk = 1 + data[0] % 64;
  const std::string_view in(reinterpret_cast<const char*>(data + 1), size - 1);
  tollgate::gateway::upstream_head_storage storage;
  tollgate::gateway::upstream_response_parser ours(storage);
  ours.eager(true);
  // No body limit, as the exchange sets it (read_all bounds the body itself). Beast counts a
  // body-to-EOF chunk against body_limit before the reader takes it, so with a limit a reader
  // that takes part of a read (need_buffer) would be charged for the rest again.
  ours.header_limit(2048);
  ours.body_limit(boost::none);
  // dynamic_body, not string_body: string_body reserves Content-Length up front (an input saying
  // 3.7 GB ran the harness out of memory), dynamic_body grows with what arrives (read_all
  // reserves only up to its own limit).
  http::response_parser<http::dynamic_body> beast;
  beast.header_limit(2048);
  beast.body_limit(boost::none);
  std::string body;
  const error_code ours_ec = feed_ours(ours, in, chunk, body);
  const error_code beast_ec = feed_beast(beast, in);
  if (ours_ec != beast_ec) std::abort();
  if (ours_ec) return 0;
  const auto& r = beast.get();
  if (ours.status() != unsigned(r.result_int())) std::abort();
  if (ours.keep_alive() != beast.keep_alive() || ours.chunked() != beast.chunked()) std::abort();
  if (body != boost::beast::buffers_to_string(r.body().data())) std::abort();
  // The head's fields: Beast's list puts a field after the last one of the same name (and keeps
  // trailer fields there too), the gateway's keeps the wire order. So compare per name: the same
  // (name, value) pairs in the same order; for a chunked body Beast's may go on with trailers.
  std::map<std::string, std::vector<std::pair<std::string, std::string>>> a, b;
  const auto lower = [](std::string_view n) {
    std::string l(n);
    for (char& c : l) c = char(std::tolower(static_cast<unsigned char>(c)));
    return l;
  };
  for (const auto& f : ours.fields())
    a[lower(f.name_string())].emplace_back(std::string(f.name_string()), std::string(f.value()));
  for (const auto& f : r) {
    const std::string_view n(f.name_string().data(), f.name_string().size());
    b[lower(n)].emplace_back(std::string(n), std::string(f.value()));
  }
  for (const auto& [name, list] : a) {
    const auto it = b.find(name);
    if (it == b.end() || it->second.size() < list.size() || !std::equal(list.begin(), list.end(), it->second.begin()))
      std::abort();
    if (!beast.chunked() && it->second.size() != list.size()) std::abort();
  }
  if (!beast.chunked() && a.size() != b.size()) std::abort();  // no trailers without chunking
  return 0;
}
