// SPDX-License-Identifier: Apache-2.0
#include "policy/redis_tls.hpp"

#include <boost/asio/ssl/host_name_verification.hpp>
#include <boost/asio/write.hpp>

#include <openssl/ssl.h>

#include <sys/un.h>

#include <cstdlib>
#include <filesystem>
#include <unistd.h>


namespace tollgate::policy::redis {
namespace {
using error_code = boost::system::error_code;

/// Closes `bridge` if `d` passes before this guard is destroyed: the bound on one step of opening.
struct deadline {
  steady_timer_t timer;
  deadline(const std::shared_ptr<tls_bridge>& bridge, executor_t ex, std::chrono::steady_clock::duration d) : timer(ex) {
    timer.expires_after(d);
    timer.async_wait([w = std::weak_ptr<tls_bridge>(bridge)](auto ec) {
      if (auto s = w.lock(); s && !ec) s->close();
    });
  }
  ~deadline() { timer.cancel(); }
};
}  // namespace

std::shared_ptr<net::ssl::context> tls_bridge::make_context(const tls_options& o, std::string& error) {
  auto ctx = std::make_shared<net::ssl::context>(net::ssl::context::tls_client);
  ctx->set_options(net::ssl::context::default_workarounds | net::ssl::context::no_sslv2 | net::ssl::context::no_sslv3 |
                   net::ssl::context::no_tlsv1 | net::ssl::context::no_tlsv1_1);
  error_code ec;
  ctx->set_default_verify_paths(ec);
  if (!o.ca_file.empty()) {
    ctx->load_verify_file(o.ca_file, ec);
    if (ec) {
      error = "cannot load store.redis.tls.ca_file " + o.ca_file + ": " + ec.message();
      return nullptr;
    }
  }
  if (!o.cert_file.empty()) {
    ctx->use_certificate_chain_file(o.cert_file, ec);
    if (!ec) ctx->use_private_key_file(o.key_file, net::ssl::context::pem, ec);
    if (ec) {
      error = "cannot load store.redis.tls.cert_file/key_file: " + ec.message();
      return nullptr;
    }
  }
  ctx->set_verify_mode(o.verify ? net::ssl::verify_peer : net::ssl::verify_none);
  return ctx;
}

tls_bridge::tls_bridge(executor_t ex, std::shared_ptr<net::ssl::context> ctx)
    : ex_(ex), ctx_(std::move(ctx)), tls_(ex, *ctx_), acceptor_(ex), local_(ex) {}

tls_bridge::~tls_bridge() {
  close();
}

void tls_bridge::remove_path() {
  error_code ec;
  if (!path_.empty()) std::filesystem::remove(path_, ec);
  if (!dir_.empty()) std::filesystem::remove(dir_, ec);
  path_.clear();
  dir_.clear();
}

void tls_bridge::close() {
  if (closed_) return;
  closed_ = true;
  error_code ec;
  acceptor_.close(ec);
  local_.close(ec);
  tls_.next_layer().shutdown(net::socket_base::shutdown_both, ec);
  tls_.next_layer().close(ec);
  remove_path();
}

awaitable<std::shared_ptr<tls_bridge>> tls_bridge::open(const options& o, std::shared_ptr<net::ssl::context> ctx,
                                                         std::string& error) {
  auto ex = co_await net::this_coro::executor;
  auto b = std::make_shared<tls_bridge>(executor_t(ex), std::move(ctx));
  const tls_options& t = o.tls;
  const std::string name = t.server_name.empty() ? o.host : t.server_name;
  {
    // TCP connect (the host is an address: the connection resolved a name before calling).
    error_code ec;
    const auto addr = net::ip::make_address(o.host, ec);
    if (ec) {
      error = "store.redis.address: not an IP address: " + o.host;
      co_return nullptr;
    }
    deadline d(b, b->ex_, o.connect_timeout);
    auto [cec] = co_await b->tls_.next_layer().async_connect(net::ip::tcp::endpoint(addr, o.port));
    if (cec || b->closed_) {
      error = "connect: " + (cec ? cec.message() : std::string("timed out"));
      co_return nullptr;
    }
    b->tls_.next_layer().set_option(net::ip::tcp::no_delay(true), ec);
  }
  // SNI for a name, not an address; the certificate must name what we asked for either way.
  error_code aec;
  net::ip::make_address(name, aec);
  if (aec && !SSL_set_tlsext_host_name(b->tls_.native_handle(), name.c_str())) {
    error = "cannot set the TLS server name " + name;
    co_return nullptr;
  }
  if (t.verify) {
    error_code vec;  // the error_code overloads throughout: nothing here may throw into the supervisor
    b->tls_.set_verify_callback(net::ssl::host_name_verification(name), vec);
    if (vec) {
      error = "cannot set the TLS name check: " + vec.message();
      co_return nullptr;
    }
  }
  {
    deadline d(b, b->ex_, o.connect_timeout);
    auto [hec] = co_await b->tls_.async_handshake(net::ssl::stream_base::client);
    if (hec || b->closed_) {
      error = "TLS handshake with " + name + ": " + (hec ? hec.message() : std::string("timed out"));
      co_return nullptr;
    }
  }
  // The local end: a fresh directory only this user can enter, one socket in it.
  const char* tmp = std::getenv("TMPDIR");
  std::string templ = std::string(tmp && *tmp ? tmp : "/tmp") + "/tollgate-redis-XXXXXX";
  // A unix socket's path has room for 107 bytes (sun_path); Asio's endpoint throws beyond it.
  if (templ.size() + 2 >= sizeof(sockaddr_un::sun_path)) {
    error = "TMPDIR is too long for a unix socket path (the TLS relay's): " + templ;
    co_return nullptr;
  }
  if (::mkdtemp(templ.data()) == nullptr) {
    error = "cannot create a private directory for the TLS relay under " + templ;
    co_return nullptr;
  }
  b->dir_ = templ;
  b->path_ = templ + "/s";
  error_code ec;
  b->acceptor_.open(net::local::stream_protocol(), ec);
  if (!ec) b->acceptor_.bind(net::local::stream_protocol::endpoint(b->path_), ec);
  if (!ec) b->acceptor_.listen(1, ec);
  if (ec) {
    error = "cannot listen on " + b->path_ + ": " + ec.message();
    b->close();
    co_return nullptr;
  }
  co_return b;
}

awaitable<bool> tls_bridge::accept(std::chrono::steady_clock::duration step) {
  auto self = shared_from_this();
  {
    deadline d(self, ex_, step);
    auto [ec] = co_await acceptor_.async_accept(local_);
    if (ec || closed_) co_return false;
  }
  error_code ec;
  acceptor_.close(ec);
  remove_path();
  net::co_spawn(ex_, [self]() { return self->relay(self->local_, self->tls_); }, net::detached);  // hiredis -> Redis
  net::co_spawn(ex_, [self]() { return self->relay(self->tls_, self->local_); }, net::detached);  // Redis -> hiredis
  co_return true;
}

template <class From, class To>
awaitable<void> tls_bridge::relay(From& from, To& to) {
  auto self = shared_from_this();  // alive while either direction runs
  std::array<char, 16 * 1024> buf;
  while (!closed_) {
    auto [rec, n] = co_await from.async_read_some(net::buffer(buf));
    if (rec || closed_) break;
    auto [wec, w] = co_await net::async_write(to, net::buffer(buf.data(), n));
    if (wec) break;
  }
  close();
}

}  // namespace tollgate::policy::redis
