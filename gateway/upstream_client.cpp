// SPDX-License-Identifier: Apache-2.0
#include "gateway/upstream_client.hpp"

#include <boost/asio/connect.hpp>
#include <boost/asio/ssl/host_name_verification.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/read.hpp>

#include <openssl/ssl.h>

#include <sys/socket.h>

#include <array>
#include <cerrno>
#include <cstdlib>

#include "gateway/metrics.hpp"

namespace tollgate::gateway {
namespace {

using namespace std::chrono;
using boost::system::error_code;

bool is_timeout(const error_code& ec) { return ec == beast::error::timeout; }

/// The most an upstream connection's read buffer holds: a head (Beast's header_limit, 8 KiB), one
/// read (Beast reads up to 64 KiB at a time) and a chunk-size line. Body bytes leave it as the
/// parser takes them.
constexpr std::size_t upstream_buffer_limit = 8 * 1024 + 64 * 1024 + 16 * 1024;

failure upstream_failure(bool timeout, std::string what) {
  failure f = make_failure(timeout ? errc::upstream_timeout : errc::upstream_error, std::move(what), "",
                           error_source::upstream);
  f.retryable = true;
  return f;
}

/// The upstream request's head; its body follows as a second buffer of the same write.
std::string request_head(const upstream_request& r) {
  std::string head;
  head.reserve(256 + r.target.size());
  head.append("POST ").append(r.target).append(" HTTP/1.1\r\nHost: ").append(r.host);
  if (!((r.scheme == "https" && r.port == "443") || (r.scheme == "http" && r.port == "80"))) head.append(":").append(r.port);
  head.append("\r\nContent-Length: ").append(std::to_string(r.body.size()));
  // Identity: the answer is read (usage, content filters, translation); a compressed one could
  // not be. Without the field, RFC 9110 lets a server pick any coding.
  head.append("\r\nUser-Agent: tollgate/0.1\r\nAccept-Encoding: identity\r\n");
  for (auto& [k, v] : r.headers) head.append(k).append(": ").append(v).append("\r\n");
  head.append("\r\n");
  return head;
}

}  // namespace

std::unique_ptr<upstream_connection> upstream_pool::take(const std::string& key) {
  auto it = idle_.find(key);
  if (it == idle_.end()) return nullptr;
  auto& v = it->second;
  while (!v.empty()) {
    auto c = std::move(v.back());
    v.pop_back();
    // A peer may have closed an idle connection (keep-alive timeouts: nginx 75 s, Node 5 s), or
    // sent bytes after its answer (a body longer than its Content-Length, arriving late): EOF or
    // any byte means the connection is not reusable (the bytes would be read as the next call's
    // answer). The reactor tells, as nginx's keepalive cache does: give_back() waits for the
    // socket to turn readable, which marks it. (A peek here cost a syscall per call, 3% of the
    // policy path's throughput on the benchmark machine; skipped for connections pooled under
    // 250 ms, it let a late tail reach the next caller.) Bytes OpenSSL holds count too.
    error_code ec;
    c->lowest().socket().cancel(ec);  // the wait: its handler sees operation_aborted
    if (*c->readable || ec || (c->tls && SSL_pending(c->tls->native_handle()) > 0)) continue;
    return c;
  }
  return nullptr;
}

void upstream_pool::give_back(std::unique_ptr<upstream_connection> c, std::size_t max_idle) {
  if (c->generation != generation_) return;  // made before a reload: closed (reload())
  auto& v = idle_[c->key];
  if (v.size() >= max_idle) return;  // dropping it closes it
  c->lowest().expires_never();
  // Marked (not dropped) when readable: the handler may run after the pool let go of it, so it
  // holds the flag, never the connection.
  c->readable = std::make_shared<bool>(false);
  c->lowest().socket().async_wait(net::socket_base::wait_read, [flag = c->readable](const error_code& wec) {
    if (wec != net::error::operation_aborted) *flag = true;
  });
  v.push_back(std::move(c));
}

std::shared_ptr<net::ssl::context> upstream_pool::tls_context(const config::upstream_tls& tls, std::string& error) {
  const std::pair<bool, std::string> key{tls.verify, tls.ca_file};
  if (auto it = contexts_.find(key); it != contexts_.end()) return it->second;
  auto ctx = std::make_shared<net::ssl::context>(net::ssl::context::tls_client);
  ctx->set_options(net::ssl::context::default_workarounds | net::ssl::context::no_sslv2 |
                   net::ssl::context::no_sslv3 | net::ssl::context::no_tlsv1 | net::ssl::context::no_tlsv1_1);
  error_code ec;
  ctx->set_default_verify_paths(ec);
  if (!tls.ca_file.empty()) {
    ctx->load_verify_file(tls.ca_file, ec);
    if (ec) {
      // Not kept: cached, every later call went on with the system CAs alone and no error.
      error = "cannot load ca_file " + tls.ca_file + ": " + ec.message();
      return ctx;
    }
  }
  ctx->set_verify_mode(tls.verify ? net::ssl::verify_peer : net::ssl::verify_none);
  contexts_.emplace(key, ctx);
  return ctx;
}

upstream_exchange::~upstream_exchange() { ctx_.cancel_upstream = nullptr; }

void upstream_exchange::cancel() {
  if (conn_) {
    error_code ec;
    conn_->lowest().socket().shutdown(net::ip::tcp::socket::shutdown_both, ec);
    conn_->lowest().close();
  }
}

void upstream_exchange::release() {
  ctx_.cancel_upstream = nullptr;
  // A caller that left as the answer ended may have closed this connection through
  // cancel_upstream: a closed socket must never go back to the pool.
  // Bytes already read past the answer (a body longer than its Content-Length, a 204 with one)
  // would be the next call's answer: such a connection is closed, not pooled.
  if (conn_ && conn_->lowest().socket().is_open() && parser_ && parser_->is_done() && parser_->keep_alive() &&
      conn_->buffer.size() == 0)
    pool_.give_back(std::move(conn_), req_->settings->max_idle_connections);
  conn_.reset();
}

bool upstream_exchange::take_pooled(const upstream_request& req) {
  auto c = pool_.take(*req.pool_key);
  if (!c) return false;
  conn_ = std::move(c);
  reused_ = true;
  gateway_metrics::get().upstream_connects.counter({req.settings->name, "true"}).inc();
  return true;
}

awaitable<std::optional<failure>> upstream_exchange::connect(const upstream_request& req) {
  const auto& s = *req.settings;
  const proxy_choice& proxy = *req.proxy;
  const std::string& key = *req.pool_key;
  reused_ = false;
  gateway_metrics::get().upstream_connects.counter({s.name, "false"}).inc();
  auto ex = co_await net::this_coro::executor;
  auto c = std::make_unique<upstream_connection>();
  c->key = key;
  c->generation = pool_.generation();
  // Beast reads at most the buffer's free capacity (512 bytes when empty): a larger buffer takes a
  // typical response head and body in one read instead of two.
  c->buffer.reserve(16 * 1024);
  // And no more than a head and a read of body: Beast bounds neither a chunk-size line's
  // extensions nor, while they last, the lines of a head or trailer to the buffer, so an upstream
  // sending "1;" and then megabytes without a line end grew it without limit (the caller's side
  // has the same bound: session::read_buffer_limit).
  c->buffer.max_size(upstream_buffer_limit);
  auto tcp = std::make_unique<stream_t>(ex);
  ctx_.cancel_upstream = [raw = tcp.get()] { raw->close(); };
  const auto deadline = milliseconds(s.timeouts.connect_ms);

  // DNS: the resolver runs getaddrinfo off the event loop; a timer bounds it.
  resolver_t resolver(ex);
  steady_timer_t guard(ex);
  guard.expires_after(deadline);
  bool resolve_timed_out = false;
  guard.async_wait([&](error_code ec) {
    if (!ec) {
      resolve_timed_out = true;
      resolver.cancel();
    }
  });
  const std::string& host = proxy.host.empty() ? req.host : proxy.host;
  const std::string& port = proxy.host.empty() ? req.port : proxy.port;
  auto [rec, endpoints] = co_await resolver.async_resolve(host, port);
  guard.cancel();
  // A caller gone while the name resolved (cancel_upstream closed a socket not opened yet, which
  // the connect would open): nothing is sent. (A getaddrinfo already running is not interrupted
  // by a cancel, Asio's or the guard's: its own timeouts bound it.)
  if (ctx_.client_gone) co_return caller_gone();
  if (rec) co_return upstream_failure(resolve_timed_out, "Could not resolve upstream host '" + host + "': " + rec.message());

  tcp->expires_after(deadline);
  auto [cec, ep] = co_await tcp->async_connect(endpoints);
  if (cec) co_return upstream_failure(is_timeout(cec), "Could not connect to the upstream: " + cec.message());
  tcp->socket().set_option(net::ip::tcp::no_delay(true));

  if (!proxy.host.empty()) {
    // HTTPS through an HTTP proxy: CONNECT host:port, expect 2xx, then TLS inside the tunnel.
    std::string hello = "CONNECT " + req.host + ":" + req.port + " HTTP/1.1\r\nHost: " + req.host + ":" + req.port + "\r\n\r\n";
    auto [wec, wn] = co_await net::async_write(*tcp, net::buffer(hello));
    if (wec) co_return upstream_failure(is_timeout(wec), "Could not reach the HTTPS proxy: " + wec.message());
    http::response_parser<http::empty_body> p;
    p.skip(true);  // a 2xx answer to CONNECT has no body (RFC 9110 §9.3.6)
    auto [pec, pn] = co_await http::async_read_header(*tcp, c->buffer, p);
    if (pec) co_return upstream_failure(is_timeout(pec), "The HTTPS proxy did not answer CONNECT: " + pec.message());
    if (p.get().result_int() / 100 != 2)
      co_return upstream_failure(false, "The HTTPS proxy refused CONNECT with status " + std::to_string(p.get().result_int()));
    // The tunnel's first bytes are the TLS server's, and they come after the proxy's answer. Any
    // byte read past that answer is the proxy's own: left in the buffer (the handshake reads the
    // socket, not it), it was read as the upstream's answer, past the certificate check.
    if (c->buffer.size() != 0)
      co_return upstream_failure(false, "The HTTPS proxy sent bytes after its answer to CONNECT");
  }

  if (req.scheme == "https") {
    std::string err;
    auto tls_ctx = pool_.tls_context(s.tls, err);
    if (!err.empty()) co_return upstream_failure(false, err);
    auto tls = std::make_unique<ssl_stream_t>(std::move(*tcp), *tls_ctx);
    ctx_.cancel_upstream = [raw = tls.get()] { raw->next_layer().close(); };
    if (!SSL_set_tlsext_host_name(tls->native_handle(), req.host.c_str()))
      co_return upstream_failure(false, "Could not set TLS server name");
    if (s.tls.verify) tls->set_verify_callback(net::ssl::host_name_verification(req.host));
    tls->next_layer().expires_after(deadline);
    auto [hec] = co_await tls->async_handshake(net::ssl::stream_base::client);
    if (hec) co_return upstream_failure(is_timeout(hec), "TLS handshake with the upstream failed: " + hec.message());
    c->tls_ctx = tls_ctx;  // (before the stream: members go in reverse, the stream first)
    c->tls = std::move(tls);
  } else {
    c->tcp = std::move(tcp);
  }
  conn_ = std::move(c);
  co_return std::nullopt;
}

awaitable<error_code> upstream_exchange::send_and_read_head(const upstream_request& req) {
  const auto& s = *req.settings;
  auto& low = conn_->lowest();
  ctx_.cancel_upstream = [this] { cancel(); };
  parser_.emplace(conn_->head);
  parser_->body_limit(boost::none);
  low.expires_after(milliseconds(s.timeouts.first_byte_ms));
  // Written here, not in a helper coroutine: one frame fewer per request.
  const std::string head = request_head(req);
  const std::array<net::const_buffer, 2> bufs{net::buffer(head), net::buffer(req.body)};
  error_code ec;
  if (conn_->tls) ec = std::get<0>(co_await net::async_write(*conn_->tls, bufs));
  else ec = std::get<0>(co_await net::async_write(*conn_->tcp, bufs));
  // Once a whole (non-stream) request is written, the provider generates the answer whether or
  // not the caller still waits, and charges for it: a caller that leaves now no longer cancels
  // the exchange (the disconnect watch), so that the answer is read and billed, not abandoned
  // unbilled. (A stream is cancelled: closing it stops the generation.)
  if (!ec && !ctx_.stream) ctx_.answer_paid = true;
  if (!ec && conn_->tls) ec = std::get<0>(co_await http::async_read_header(*conn_->tls, conn_->buffer, *parser_));
  else if (!ec) ec = std::get<0>(co_await http::async_read_header(*conn_->tcp, conn_->buffer, *parser_));
  // Interim answers (100 Continue, 103 Early Hints: RFC 9110 §15.2, a client must take them
  // unasked) precede the real one on the same connection. Taken as the answer, the real one was
  // left unread on a pooled connection, and the next call on it read it as its own.
  for (int interim = 0; !ec && parser_->status() / 100 == 1; ++interim) {
    if (parser_->status() == 101 || interim == 16) {  // (never asked for; no longer HTTP)
      ec = make_error_code(errc::upstream_error);
      break;
    }
    parser_.emplace(conn_->head);
    parser_->body_limit(boost::none);
    if (conn_->tls) ec = std::get<0>(co_await http::async_read_header(*conn_->tls, conn_->buffer, *parser_));
    else ec = std::get<0>(co_await http::async_read_header(*conn_->tcp, conn_->buffer, *parser_));
  }
  co_return ec;
}

namespace {
/// Adds the time until it is destroyed to the call's upstream wait.
struct upstream_wait_timer {
  request_context& ctx;
  request_context::clock::time_point from = request_context::clock::now();
  ~upstream_wait_timer() { ctx.upstream_wait += request_context::clock::now() - from; }
};

/// How soon a reused connection must fail for the request to be sent again: a peer that closed it
/// while idle answers the write with a reset or an EOF within a round trip.
constexpr auto stale_window = std::chrono::milliseconds(100);
}  // namespace

awaitable<std::optional<failure>> upstream_exchange::start(const upstream_request& req) {
  const upstream_wait_timer waiting{ctx_};
  req_ = &req;
  for (int attempt = 0; attempt < 2; ++attempt) {
    // A pooled connection is taken without a coroutine (a frame per request otherwise); a retry
    // always gets a new one.
    if (attempt > 0 || !take_pooled(req))
      if (auto f = co_await connect(req)) co_return f;
    const auto sent_at = steady_clock::now();
    error_code ec = co_await send_and_read_head(req);
    if (!ec) co_return std::nullopt;
    if (ctx_.client_gone) co_return caller_gone();
    // A pooled connection the peer closed while idle fails at once (the peek in take() can race
    // with the peer's close): try once more, on a new connection. Only at once: a POST the
    // upstream may have taken and worked on before its connection broke is not sent twice (a
    // second paid completion), it fails.
    const bool at_once = steady_clock::now() - sent_at < stale_window;
    const bool stale = reused_ && at_once && !is_timeout(ec) &&
                       (ec == http::error::end_of_stream || ec == net::error::connection_reset || ec == net::error::eof ||
                        ec == net::error::broken_pipe || ec == net::error::bad_descriptor);
    conn_.reset();
    if (stale) continue;
    co_return upstream_failure(is_timeout(ec), is_timeout(ec) ? "The upstream did not answer in time."
                                                              : "The upstream connection failed: " + ec.message());
  }
  co_return upstream_failure(false, "The upstream closed the connection.");
}

awaitable<error_code> upstream_exchange::read_some(std::string& out) {
  constexpr std::size_t scratch_size = 16 * 1024;
  const upstream_wait_timer waiting{ctx_};
  out.clear();
  if (!conn_->scratch) conn_->scratch.reset(new char[scratch_size]);
  char* const scratch = conn_->scratch.get();
  // Loops because a read can make progress on framing alone (chunk sizes) without body bytes.
  while (!parser_->is_done()) {
    parser_->body_buffer(scratch, scratch_size);
    conn_->lowest().expires_after(milliseconds(req_->settings->timeouts.idle_ms));
    error_code ec;
    if (conn_->tls) ec = std::get<0>(co_await http::async_read_some(*conn_->tls, conn_->buffer, *parser_));
    else ec = std::get<0>(co_await http::async_read_some(*conn_->tcp, conn_->buffer, *parser_));
    if (ec == http::error::need_buffer) ec = {};
    if (ec) co_return make_error_code(is_timeout(ec) ? errc::upstream_timeout : errc::upstream_error);
    out.assign(scratch, scratch_size - parser_->body_room());
    if (!out.empty()) break;
  }
  co_return error_code{};
}

awaitable<error_code> upstream_exchange::read_all(std::string& out, std::size_t limit) {
  out.clear();
  if (auto n = parser_->content_length(); n && *n <= limit) out.reserve(std::size_t(*n));
  std::string piece;
  while (!parser_->is_done()) {
    if (auto ec = co_await read_some(piece)) co_return ec;
    if (out.empty()) out.swap(piece);
    else out.append(piece);
    if (out.size() > limit) co_return make_error_code(errc::upstream_error);
  }
  co_return error_code{};
}

}  // namespace tollgate::gateway
