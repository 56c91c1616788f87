// SPDX-License-Identifier: Apache-2.0
// tollgatectl's HTTP client. Blocking for its caller, but built from async operations inside a
// private io_context: beast::tcp_stream applies expires_after only to asynchronous operations.
// getaddrinfo cannot be interrupted at all (Asio's resolver cancel does not stop a call already
// running): it runs on a thread of its own, waited for at most the timeout, and left behind.
#include "gateway/admin/ctl_http.hpp"

#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/url/encode.hpp>
#include <boost/url/parse.hpp>
#include <boost/url/rfc/unreserved_chars.hpp>

#include <condition_variable>
#include <exception>
#include <mutex>
#include <optional>
#include <thread>

#include "gateway/core/net.hpp"

namespace tollgate::ctl {
namespace http = beast::http;
using boost::system::error_code;
using result_t = boost::system::result<response, transport_error>;

namespace {

constexpr std::string_view user_agent = "tollgatectl/0.1.0";
/// Admin answers are small, but a usage report over a long range may not be.
constexpr std::uint64_t body_limit = 64 * 1024 * 1024;

transport_error fail(transport_error::kind k, std::string message) { return {k, std::move(message)}; }

bool is_timeout(const error_code& ec) { return ec == beast::error::timeout; }

awaitable<result_t> exchange(const options& opt, http::verb method, std::string target, std::string body) {
  using kind = transport_error::kind;
  auto ex = co_await net::this_coro::executor;
  const endpoint& e = opt.where;

  // Name resolution on its own thread, waited for at most the timeout (the process may end with
  // that thread still in getaddrinfo: nothing joins it).
  struct resolution {
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
    error_code ec;
    net::ip::tcp::resolver::results_type endpoints;
  };
  auto state = std::make_shared<resolution>();
  std::thread([state, host = e.host, port = e.port] {
    net::io_context own;
    net::ip::tcp::resolver r(own);
    error_code ec;
    auto found = r.resolve(host, port, ec);
    std::lock_guard lock(state->mu);
    state->ec = ec;
    state->endpoints = std::move(found);
    state->done = true;
    state->cv.notify_all();
  }).detach();
  bool resolved = false;
  error_code rec;
  net::ip::tcp::resolver::results_type endpoints;
  {
    std::unique_lock lock(state->mu);
    resolved = state->cv.wait_for(lock, opt.timeout, [&] { return state->done; });
    if (resolved) {
      rec = state->ec;
      endpoints = state->endpoints;
    }
  }
  if (!resolved) co_return fail(kind::unreachable, "resolving '" + e.host + "' timed out");
  if (rec) co_return fail(kind::unreachable, "cannot resolve '" + e.host + "': " + rec.message());

  stream_t stream(ex);
  stream.expires_after(opt.timeout);
  auto [cec, ep] = co_await stream.async_connect(endpoints);
  if (cec)
    co_return fail(kind::unreachable, is_timeout(cec) ? "connecting timed out" : "cannot connect: " + cec.message());

  http::request<http::string_body> req{method, target, 11};
  req.set(http::field::host, e.authority);
  req.set(http::field::user_agent, user_agent);
  req.set(http::field::accept, "application/json");
  req.set(http::field::connection, "close");
  if (!opt.token.empty()) req.set(http::field::authorization, "Bearer " + opt.token);
  if (!body.empty()) {
    req.set(http::field::content_type, "application/json");
    req.body() = std::move(body);
  }
  req.prepare_payload();

  // One budget for the whole exchange: write the request, then read the answer.
  stream.expires_after(opt.timeout);
  auto [wec, wn] = co_await http::async_write(stream, req);
  if (wec)
    co_return fail(is_timeout(wec) ? kind::timeout : kind::bad_answer,
                   is_timeout(wec) ? "sending the request timed out" : "sending the request failed: " + wec.message());

  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(body_limit);
  auto [ec, n] = co_await http::async_read(stream, buffer, parser);
  if (ec) {
    transport_error e = is_timeout(ec)
                            ? fail(kind::timeout, "no answer within " + std::to_string(opt.timeout.count() / 1000) + " s")
                            : fail(kind::bad_answer, "reading the answer failed: " + ec.message());
    e.sent = true;
    co_return e;
  }
  // Best effort: the answer is complete, a failing shutdown changes nothing.
  error_code ignored;
  stream.socket().shutdown(net::ip::tcp::socket::shutdown_both, ignored);

  auto& res = parser.get();
  co_return response{res.result_int(), std::move(res.body())};
}

}  // namespace

boost::system::result<endpoint, std::string> parse_admin_url(std::string_view url) {
  // endpoint is an aggregate, so a string would convert to either side: name the error side.
  auto bad = [](std::string m) {
    return boost::system::result<endpoint, std::string>(boost::system::in_place_error, std::move(m));
  };
  auto u = boost::urls::parse_uri(url);
  if (!u) return bad("invalid admin URL '" + std::string(url) + "' (expected http://HOST[:PORT])");
  if (u->scheme_id() == boost::urls::scheme::https) return bad("https admin URLs are not supported yet");
  if (u->scheme_id() != boost::urls::scheme::http)
    return bad("unsupported scheme '" + std::string(u->scheme()) + "' in admin URL (expected http://HOST[:PORT])");
  if (!u->has_authority() || u->encoded_host().empty()) return bad("admin URL '" + std::string(url) + "' has no host");
  if (u->has_userinfo()) return bad("admin URLs must not carry credentials; use TOLLGATE_ADMIN_TOKEN");
  if (u->has_query() || u->has_fragment()) return bad("admin URL '" + std::string(url) + "' must not have a query or fragment");
  // (port_number() is 16 bits: ":99999" wrapped to 34463, and the token went to that port.)
  if (u->has_port() && !u->port().empty()) {
    const std::string_view p = u->port();
    unsigned long n = 0;
    for (char ch : p) n = n < 100000 ? n * 10 + unsigned(ch - '0') : n;  // (digits only, by the URL grammar)
    if (n == 0 || n > 65535 || p.size() > 5) return bad("invalid port in admin URL '" + std::string(url) + "' (1-65535)");
  }
  endpoint e;
  e.url = std::string(url);
  e.host = u->host_address();
  e.port = u->port().empty() ? "80" : std::string(u->port());
  e.authority = std::string(u->encoded_host_and_port());
  e.base_path = std::string(u->encoded_path());
  while (!e.base_path.empty() && e.base_path.back() == '/') e.base_path.pop_back();
  return e;
}

result_t request(const options& opt, http::verb method, std::string_view target, std::string_view body) {
  net::io_context ioc{1};
  std::optional<result_t> out;
  std::exception_ptr failed;
  net::co_spawn(ioc, exchange(opt, method, opt.where.base_path + std::string(target), std::string(body)),
                [&](std::exception_ptr ep, result_t r) {
                  failed = ep;
                  if (!ep) out.emplace(std::move(r));
                });
  ioc.run();
  // Only allocation failures can get here; the caller's top-level handler maps them to exit 1.
  if (failed) std::rethrow_exception(failed);
  if (!out) return fail(transport_error::kind::bad_answer, "the request did not complete");
  return std::move(*out);
}

std::string encode_component(std::string_view s) { return boost::urls::encode(s, boost::urls::unreserved_chars); }

}  // namespace tollgate::ctl
