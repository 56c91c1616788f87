// SPDX-License-Identifier: Apache-2.0
#pragma once
/// TLS to Redis. Debian 12's hiredis (0.14.1) has no TLS and no way to hand its async context a
/// socket we made, so a connection with `tls.enabled` is made in two halves:
///  - this bridge connects to Redis over TCP and completes the TLS handshake (Asio and OpenSSL:
///    certificate chain and name verification, SNI, optional client certificate);
///  - it listens on a fresh unix socket in a private directory (mode 0700) that hiredis connects
///    to, accepts that one connection, removes the socket file, and relays bytes both ways.
/// Either side closing or failing closes both, so hiredis sees a lost connection and the client
/// reconnects as usual (with a new bridge). What this costs, and why it is not a fork of hiredis:
/// docs/adr/0007-redis-tls-bridge.md.
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/stream.hpp>

#include <chrono>
#include <memory>
#include <string>

#include "gateway/core/net.hpp"
#include "policy/redis_client.hpp"

namespace tollgate::policy::redis {

class tls_bridge : public std::enable_shared_from_this<tls_bridge> {
 public:
  using unix_socket_t = net::local::stream_protocol::socket::rebind_executor<executor_t>::other;
  using unix_acceptor_t = net::local::stream_protocol::acceptor::rebind_executor<executor_t>::other;
  using tls_stream_t = net::ssl::stream<socket_t>;

  /// The client context for `o`: built once per connection. Null, with `error` set, when a file
  /// cannot be loaded.
  static std::shared_ptr<net::ssl::context> make_context(const tls_options& o, std::string& error);

  /// Connects to `o.host`:`o.port` and completes the TLS handshake, each within
  /// `o.connect_timeout`, then listens for hiredis. Null on failure, with `error` set.
  static awaitable<std::shared_ptr<tls_bridge>> open(const options& o, std::shared_ptr<net::ssl::context> ctx,
                                                      std::string& error);

  tls_bridge(executor_t ex, std::shared_ptr<net::ssl::context> ctx);
  ~tls_bridge();
  tls_bridge(const tls_bridge&) = delete;
  tls_bridge& operator=(const tls_bridge&) = delete;

  /// The unix socket hiredis connects to (valid until accept() returns).
  const std::string& path() const { return path_; }
  /// Accepts hiredis's connection within `step`, removes the socket file and its directory, and
  /// starts relaying. False when nothing connected in time.
  awaitable<bool> accept(std::chrono::steady_clock::duration step);
  /// Closes both sides (idempotent): a relay in progress ends, hiredis sees the loss.
  void close();

 private:
  /// Copies what `from` reads to `to` until either fails or close(); then closes both.
  template <class From, class To>
  awaitable<void> relay(From& from, To& to);
  void remove_path();

  executor_t ex_;
  std::shared_ptr<net::ssl::context> ctx_;
  tls_stream_t tls_;
  unix_acceptor_t acceptor_;
  unix_socket_t local_;
  std::string dir_, path_;
  bool closed_ = false;
};

}  // namespace tollgate::policy::redis
