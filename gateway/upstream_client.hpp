// SPDX-License-Identifier: Apache-2.0
#pragma once
/// The upstream HTTP/1.1 client: a keep-alive pool per worker keyed by full peer identity
/// (scheme, host, port, TLS settings, proxy), async DNS, TLS with SNI and certificate plus
/// host-name verification, HTTPS_PROXY through CONNECT, and timeouts for connect, first byte
/// and idle between body reads. Worker-thread only.
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/beast/core/flat_buffer.hpp>

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "gateway/core/provider.hpp"
#include "gateway/upstream_parser.hpp"

namespace tollgate::gateway {

namespace http = beast::http;
using ssl_stream_t = net::ssl::stream<stream_t>;

/// One connection to a peer, plain or TLS.
struct upstream_connection {
  std::string key;
  /// The TLS context the stream was made with (set when TLS): outlives the stream, and a reload
  /// that replaces the pool's contexts while this connection is in use.
  std::shared_ptr<net::ssl::context> tls_ctx;
  std::unique_ptr<stream_t> tcp;     ///< set when plain
  std::unique_ptr<ssl_stream_t> tls; ///< set when TLS (owns its TCP stream)
  beast::flat_buffer buffer;
  /// Body read buffer, kept with the pooled connection: a 16 KiB allocation per exchange was
  /// ~1k instructions of jemalloc's large-size path per request (not zero-filled per read).
  std::unique_ptr<char[]> scratch;
  upstream_head_storage head;  ///< the current response's fields (upstream_response_parser)
  /// Set, while the connection is pooled, once its socket turns readable (a byte past its last
  /// answer, or the peer's close): it is then dropped instead of taken (upstream_pool).
  std::shared_ptr<bool> readable;
  std::uint64_t generation = 0;  ///< the pool's, when it was made (upstream_pool::reload)
  stream_t& lowest() { return tls ? tls->next_layer() : *tcp; }
};

class upstream_pool {
 public:
  /// A live idle connection for `key`, or null. Connections the peer closed, or that received
  /// bytes while pooled, are dropped.
  std::unique_ptr<upstream_connection> take(const std::string& key);
  void give_back(std::unique_ptr<upstream_connection> c, std::size_t max_idle);
  /// TLS client context for these settings (system CA store, optional extra CA file). One whose
  /// CA file failed to load is returned with `error` set and not kept: the next call tries again.
  std::shared_ptr<net::ssl::context> tls_context(const config::upstream_tls& tls, std::string& error);
  void clear() { idle_.clear(); }
  /// A new configuration: CA files are read again when next used (a bundle rewritten in place
  /// is taken), and idle connections, verified against the old trust and keyed by the old
  /// settings (a provider's URL or proxy changed), are closed rather than left open for good.
  /// A connection in use at the reload is closed when given back, as the idle ones are now.
  void reload() {
    contexts_.clear();
    idle_.clear();
    ++generation_;
  }
  std::uint64_t generation() const { return generation_; }

 private:
  std::unordered_map<std::string, std::vector<std::unique_ptr<upstream_connection>>> idle_;
  std::map<std::pair<bool, std::string>, std::shared_ptr<net::ssl::context>> contexts_;
  std::uint64_t generation_ = 0;
};

/// One request/response exchange with an upstream. Usage: start() → status()/header() →
/// read_some() until done (or read_all()) → release(). Destroying it without release() closes
/// the connection (RAII: only a fully read keep-alive response returns it to the pool).
class upstream_exchange {
 public:
  upstream_exchange(upstream_pool& pool, request_context& ctx) : pool_(pool), ctx_(ctx) {}
  ~upstream_exchange();

  /// Connects (or reuses), sends the request and reads the response head. A failure is an
  /// upstream failure (502 upstream_error / 504 upstream_timeout), retryable when nothing was sent
  /// to the caller yet.
  awaitable<std::optional<failure>> start(const upstream_request& req);

  unsigned status() const { return parser_->status(); }
  /// The response's fields, in order; valid until release() or the exchange ends.
  std::span<const upstream_field> headers() const { return parser_->fields(); }
  /// The first value of a known field (empty if absent).
  std::string_view header(http::field name) const { return parser_->field_value(name); }
  bool done() const { return parser_->is_done(); }

  /// Next piece of the body into `out` (replaced). Empty `out` with no error means the body ended.
  /// Errors: errc::upstream_timeout (idle), errc::upstream_error (reset, bad framing).
  awaitable<boost::system::error_code> read_some(std::string& out);
  /// The whole body, up to `limit` bytes.
  awaitable<boost::system::error_code> read_all(std::string& out, std::size_t limit);

  /// Returns the connection to the pool if the response was complete and keep-alive.
  void release();
  /// Closes the connection now (caller left, or shutdown): pending reads finish at once.
  void cancel();

 private:
  /// Takes an idle pooled connection for req's peer, if there is one.
  bool take_pooled(const upstream_request& req);
  /// Opens a new connection (resolve, connect, proxy CONNECT, TLS).
  awaitable<std::optional<failure>> connect(const upstream_request& req);
  awaitable<boost::system::error_code> send_and_read_head(const upstream_request& req);

  upstream_pool& pool_;
  request_context& ctx_;
  const upstream_request* req_ = nullptr;
  std::unique_ptr<upstream_connection> conn_;
  std::optional<upstream_response_parser> parser_;
  bool reused_ = false;
};

}  // namespace tollgate::gateway
