// SPDX-License-Identifier: Apache-2.0
#include "gateway/session.hpp"

#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <sys/socket.h>

#include <boost/asio/post.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/read.hpp>

#include <array>
#include <cerrno>
#include <cstdio>
#include <optional>

#include "config/loader.hpp"
#include "gateway/core/http_guard.hpp"
#include "gateway/core/text.hpp"
#include "gateway/metrics.hpp"
#include "gateway/pipeline.hpp"
#include "gateway/request_parser.hpp"
#include "gateway/response_head.hpp"
#include "policy/keys.hpp"

namespace tollgate::gateway {
namespace http = beast::http;
using boost::system::error_code;
using namespace std::chrono;

namespace {

/// The caller's connection as the pipeline writes to it.
template <class Stream>
class session_sink final : public response_sink {
 public:
  session_sink(worker& w, Stream& s, request_context& ctx, session_slot* slot, bool keep_alive, bool http11 = true)
      : w_(w), s_(s), ctx_(ctx), slot_(slot), keep_alive_(keep_alive), http11_(http11) {}

  awaitable<bool> send_full(unsigned status, std::string_view content_type, std::string body,
                            const header_list& extra) override {
    const bool sealed = !audit_pending(w_, ctx_) || co_await seal(status, body);
    if (!sealed) co_return false;
    const bool ka = keep_alive();
    std::string head = format_response_head({status, content_type, ctx_.id_hex, &extra, body.size(), ka, false, &ctx_.rate});
    begin(status);
    if (first_chunk_time_unset()) ctx_.first_byte = request_context::clock::now();
    // A HEAD answer is the head alone, Content-Length included (RFC 9110 §9.3.2): body bytes after
    // it would be read as the start of the next answer on the connection.
    const std::size_t body_bytes = ctx_.method == "HEAD" ? 0 : body.size();
    std::array<net::const_buffer, 2> bufs{net::buffer(head), net::buffer(body.data(), body_bytes)};
    co_return done(co_await write(bufs, head.size() + body_bytes));
  }

  awaitable<bool> start_stream(unsigned status, std::string_view content_type, const header_list& extra) override {
    // HTTP/1.0 callers get a close-delimited body; chunked coding is HTTP/1.1 only.
    if (!http11_) ctx_.close_after = true;
    // The head waits for the first chunk: one write (one wake-up of the caller) instead of two.
    pending_head_ = format_response_head({status, content_type, ctx_.id_hex, &extra, std::nullopt, keep_alive(), http11_, &ctx_.rate});
    begin(status);
    co_return true;
  }

  awaitable<bool> send_chunk(std::string_view data) override {
    if (data.empty()) co_return true;
    if (first_chunk_time_unset()) ctx_.first_byte = request_context::clock::now();
    std::string head = std::move(pending_head_);
    pending_head_.clear();
    if (!http11_) {
      std::array<net::const_buffer, 2> bufs{net::buffer(head), net::buffer(data.data(), data.size())};
      co_return done(co_await write(bufs, head.size() + data.size()));
    }
    char size_line[24];
    int len = std::snprintf(size_line, sizeof size_line, "%zx\r\n", data.size());
    std::array<net::const_buffer, 4> bufs{net::buffer(head), net::buffer(size_line, std::size_t(len)),
                                          net::buffer(data.data(), data.size()), net::buffer("\r\n", 2)};
    co_return done(co_await write(bufs, head.size() + data.size()));
  }

  awaitable<bool> end_stream() override {
    const bool sealed = !audit_pending(w_, ctx_) || co_await seal(ctx_.status);
    if (!sealed) co_return false;
    std::string head = std::move(pending_head_);  // a stream that ended before any chunk
    pending_head_.clear();
    std::array<net::const_buffer, 2> bufs{net::buffer(head), net::buffer("0\r\n\r\n", http11_ ? 5 : 0)};
    co_return done(co_await write(bufs, head.size() + 5));
  }

  void abort() override {
    ctx_.close_after = true;
    error_code ec;
    beast::get_lowest_layer(s_).socket().shutdown(net::ip::tcp::socket::shutdown_both, ec);
    beast::get_lowest_layer(s_).close();
  }

  bool keep_alive() const { return keep_alive_ && !ctx_.close_after; }

 private:
  void begin(unsigned status) {
    ctx_.status = status;
    ctx_.response_started = true;
  }
  /// The audit record goes to the writer before the last bytes (gateway/pipeline.hpp).
  /// Called only when audit_pending() (which includes !ctx_.audit_done).
  awaitable<bool> seal(unsigned status, std::string_view body = {}) {
    // GCC 12: a co_await inside an if condition here compiled to a trap; keep it a statement.
    const bool ok = co_await seal_audit(w_, ctx_, status, body);
    if (ok) co_return true;
    abort();
    ctx_.client_gone = true;
    co_return false;
  }
  /// Writes to the caller under a deadline (the worker's sweeper cancels the socket's operations
  /// when it passes): write_ms for each MiB, so a caller that stops reading cannot hold the
  /// connection, its stream and its upstream for ever.
  template <class Buffers>
  awaitable<error_code> write(Buffers bufs, std::size_t bytes) {
    if (slot_) {
      const auto per_mib = milliseconds(ctx_.snap->cfg->server.timeouts.write_ms);
      slot_->timed_out = false;
      slot_->deadline = std::chrono::steady_clock::now() + per_mib * (1 + bytes / (std::size_t(1) << 20));
    }
    auto [ec, n] = co_await net::async_write(s_, bufs);
    if (slot_) {
      slot_->deadline = std::chrono::steady_clock::time_point::max();
      if (ec && slot_->timed_out) ctx_.write_timed_out = true;
    }
    co_return ec;
  }
  bool first_chunk_time_unset() const { return ctx_.first_byte == request_context::clock::time_point{}; }
  bool done(const error_code& ec) {
    if (ec) {
      ctx_.client_gone = true;
      ctx_.close_after = true;
    }
    return !ec;
  }

  worker& w_;
  Stream& s_;
  request_context& ctx_;
  session_slot* slot_;
  bool keep_alive_;
  bool http11_;
  std::string pending_head_;  ///< stream head not written yet
};

/// Connection gauge and drain registration for one session's lifetime.
struct session_guard {
  session_guard(worker& w, stream_t& lowest, listener_kind kind) : w_(w), kind_(kind) {
    it_ = w.sessions().insert(w.sessions().end(), session_slot{&lowest, true});
    w.live_sessions.fetch_add(1);
    gauge().add(1);
  }
  ~session_guard() {
    w_.sessions().erase(it_);
    w_.live_sessions.fetch_sub(1);
    gauge().add(-1);
  }
  metrics::gauge_cell& gauge() {
    return gateway_metrics::get().open_connections.gauge({kind_ == listener_kind::caller ? "caller" : "admin"});
  }
  session_slot& slot() { return *it_; }

  worker& w_;
  listener_kind kind_;
  std::list<session_slot>::iterator it_;
};

std::string client_address(stream_t& s) {
  error_code ec;
  auto ep = s.socket().remote_endpoint(ec);
  return ec ? std::string("unknown") : ep.address().to_string();
}

/// URI and DNS subject-alternative names of the peer's certificate, which OpenSSL has already
/// verified against the configured client CA (SSL_VERIFY_FAIL_IF_NO_PEER_CERT).
std::vector<std::string> certificate_names(SSL* ssl) {
  std::vector<std::string> out;
  X509* cert = SSL_get1_peer_certificate(ssl);
  if (!cert) return out;
  if (SSL_get_verify_result(ssl) == X509_V_OK) {
    auto* names = static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
    if (names) {
      for (int i = 0; i < sk_GENERAL_NAME_num(names); ++i) {
        const GENERAL_NAME* n = sk_GENERAL_NAME_value(names, i);
        if (n->type != GEN_URI && n->type != GEN_DNS) continue;
        const ASN1_IA5STRING* v = n->type == GEN_URI ? n->d.uniformResourceIdentifier : n->d.dNSName;
        const std::string_view raw(reinterpret_cast<const char*>(ASN1_STRING_get0_data(v)),
                                   std::size_t(ASN1_STRING_length(v)));
        // Each kind only in its own form, as identities are written: a DNS SAN spelled like a
        // SPIFFE URI (or with a NUL in it) names nothing.
        if (auto name = config::canonical_san(raw, n->type == GEN_URI)) out.push_back(std::move(*name));
      }
      GENERAL_NAMES_free(names);
    }
  }
  X509_free(cert);
  return out;
}

template <class Stream>
class session {
 public:
  session(worker& w, Stream& s, listener_kind kind)
      : w_(w), s_(s), kind_(kind), buf_(read_buffer_limit(w.snap()->cfg->server.limits)) {}

  /// The most a connection's read buffer holds: a head, read_head's last read, and one read of
  /// body. Body bytes leave it as the parser takes them, but a chunk-size line's extensions and a
  /// trailer section stay until they end, and Beast bounds neither: a caller sending megabytes of
  /// either, before any key is checked, grew it without limit.
  static std::size_t read_buffer_limit(const config::server_limits& l) { return l.max_header_bytes + 4096 + 65536; }

  /// SANs of the verified client certificate (mTLS listeners), and the worker's TLS generation
  /// at the handshake (worker::tls_generation).
  void set_peer_names(std::vector<std::string> names, std::uint64_t tls_generation) {
    peer_names_ = std::move(names);
    tls_generation_ = tls_generation;
  }

  awaitable<void> run() {
    stream_t& low = beast::get_lowest_layer(s_);
    session_guard guard(w_, low, kind_);
    slot_ = &guard.slot();
    buf_.reserve(8 * 1024);
    peer_ = client_address(low);
    bool first = true;
    while (!w_.draining() || first) {
      guard.slot().idle = true;
      if (w_.draining()) break;
      auto head = co_await read_head(first);
      first = false;
      guard.slot().idle = false;
      if (!head) break;
      if (!co_await serve_one(*head)) break;
    }
    co_await close();
  }

 private:
  const config::server_config& server() const { return w_.snap()->cfg->server; }

  /// An error answered before the pipeline (framing, limits, timeouts); closes the connection.
  /// `method` and `target`: the request's, when its head was read (so that a refused admin
  /// request is audited as one).
  awaitable<void> refuse(errc code, std::string_view reason, std::string_view method = {}, std::string_view target = {}) {
    request_context ctx;
    ctx.method = std::string(method);
    ctx.path = std::string(target.substr(0, target.find('?')));
    policy::mask_keys_in_path(ctx.path);  // a key pasted into the URL is logged by its id only
    ctx.id = w_.next_id();
    ctx.id_hex = snowflake::to_hex(ctx.id);
    ctx.worker = w_.index();
    ctx.snap = w_.snap();
    ctx.client_addr = peer_;
    ctx.admin_listener = kind_ == listener_kind::admin;
    ctx.close_after = true;
    ctx.details = std::string(reason);
    linger_ = true;  // the caller may still be sending the request we refused
    session_sink<Stream> sink(w_, s_, ctx, slot_, false);
    beast::get_lowest_layer(s_).expires_after(seconds(5));  // a caller that will not read its error
    gateway_metrics::get().rejections.counter({std::string(map_error(code).code)}).inc();
    co_await answer_error(ctx, sink, code, std::string(reason) + ".");
    log_request(w_, ctx);
  }

  /// Arms the read deadline (checked by the worker's sweeper). Not beast's expires_after: a beast
  /// timeout closes the socket, and a slow caller must still receive its 408. Cancelling the
  /// socket's operations leaves it usable.
  void arm_deadline(milliseconds d) {
    slot_->timed_out = false;
    slot_->deadline = std::chrono::steady_clock::now() + d;
  }
  void disarm_deadline() { slot_->deadline = std::chrono::steady_clock::time_point::max(); }
  bool timed_out() const { return slot_->timed_out; }

  /// Reads bytes until a whole request head is buffered; returns its size, or nullopt when the
  /// connection should end (closed, idle timeout, or refused).
  awaitable<std::optional<std::size_t>> read_head(bool first) {
    // The snapshot held across the reads: a reload meanwhile frees the one the worker had, and
    // `lim` would point into it (an idle connection waits here for minutes).
    const std::shared_ptr<const snapshot> snap = w_.snap();
    const auto& lim = snap->cfg->server.limits;
    bool started = buf_.size() > 0;
    arm_deadline(milliseconds(started || first ? snap->cfg->server.timeouts.header_read_ms : snap->cfg->server.timeouts.idle_ms));
    for (;;) {
      auto data = buf_.cdata();
      std::string_view sv(static_cast<const char*>(data.data()), data.size());
      // Tolerate the empty line some clients send after a body (RFC 9112 §2.2).
      while (sv.starts_with("\r\n")) {
        buf_.consume(2);
        sv.remove_prefix(2);
      }
      if (std::size_t n = find_head_end(sv)) {
        disarm_deadline();
        co_return n;
      }
      // (The buffer's own bound too: a reload may raise max_header_bytes past what it was made for.)
      if (sv.size() > lim.max_header_bytes || buf_.size() + 4096 > buf_.max_size()) {
        disarm_deadline();
        co_await refuse(errc::header_fields_too_large, "Request head exceeds " + std::to_string(lim.max_header_bytes) + " bytes");
        co_return std::nullopt;
      }
      auto [ec, n] = co_await s_.async_read_some(buf_.prepare(4096));
      if (ec) {
        disarm_deadline();
        if (timed_out() && (started || buf_.size())) co_await refuse(errc::request_timeout, "Request head not received in time");
        co_return std::nullopt;  // closed, reset, idle timeout or drain: just close
      }
      buf_.commit(n);
      if (!started) {
        started = true;
        arm_deadline(milliseconds(snap->cfg->server.timeouts.header_read_ms));
      }
    }
  }

  /// Reads the body and runs the request. Returns false when the connection must close.
  awaitable<bool> serve_one(std::size_t head_size) {
    stream_t& low = beast::get_lowest_layer(s_);
    const std::shared_ptr<const snapshot> snap = w_.snap();  // (held across the body's reads, as in read_head)
    const auto& srv = snap->cfg->server;
    {
      auto data = buf_.cdata();
      std::string_view head(static_cast<const char*>(data.data()), head_size);
      head_limits hl{srv.limits.max_header_bytes, srv.limits.max_header_count, srv.limits.max_url_bytes};
      const head_verdict v = check_head(head, hl);
      if (!v) {
        co_await refuse(v.code, v.reason);
        co_return false;
      }
      // Not for a body the parser will refuse at once (413): the caller would start sending it.
      const bool too_large = v.content_length && *v.content_length > srv.limits.max_body_bytes;
      if (!too_large && expects_continue(head) && buf_.size() == head_size) {
        static constexpr std::string_view interim = "HTTP/1.1 100 Continue\r\n\r\n";
        auto [wec, wn] = co_await net::async_write(s_, net::buffer(interim.data(), interim.size()));
        if (wec) co_return false;
      }
    }
    caller_request_parser parser(head_text_);
    parser.header_limit(std::uint32_t(srv.limits.max_header_bytes + 1024));
    parser.body_limit(srv.limits.max_body_bytes);
    arm_deadline(milliseconds(srv.timeouts.body_read_ms));
    auto [ec, n] = co_await http::async_read(s_, buf_, parser);
    disarm_deadline();
    if (ec) {
      // (The request line is parsed first: set when the head was, or a Content-Length past the
      // limit stopped it; empty otherwise.)
      const std::string_view method = parser.method_string();
      const std::string_view target = parser.target();
      if (ec == http::error::body_limit)
        co_await refuse(errc::request_too_large, "Request body exceeds " + std::to_string(srv.limits.max_body_bytes) + " bytes",
                        method, target);
      else if (ec == http::error::buffer_overflow)
        co_await refuse(errc::bad_request, "A chunk-size line or the trailer section is too long (chunk extensions and "
                        "trailers are limited to " + std::to_string(buf_.max_size() - 4096) + " bytes)", method, target);
      else if (timed_out())
        co_await refuse(errc::request_timeout, "Request body not received in time", method, target);
      else if (ec.category() == make_error_code(http::error::bad_target).category() && ec != http::error::end_of_stream &&
               ec != http::error::partial_message)
        co_await refuse(errc::bad_request, "Malformed HTTP request: " + ec.message());
      co_return false;
    }
    low.expires_never();
    const bool keep_alive = parser.keep_alive();  // (the parser's flags: no field lookup)
    const caller_fields& fields = parser.fields();
    if (fields.repeated_credential) {
      co_await refuse(errc::bad_request, "The request carries one of Authorization, api-key and x-api-key more than once");
      co_return false;
    }
    if (conflicting_keys(fields)) {
      co_await refuse(errc::bad_request, "The request carries two different Tollgate keys (in Authorization, api-key and x-api-key)");
      co_return false;
    }

    request_context ctx;
    ctx.id = w_.next_id();
    ctx.id_hex = snowflake::to_hex(ctx.id);
    ctx.worker = w_.index();
    ctx.snap = w_.snap();  // the config in force for this whole request, even across a reload
    ctx.client_addr = peer_;
    ctx.method = std::string(parser.method_string());
    std::string_view target = parser.target();
    const auto query_at = target.find('?');
    ctx.path = std::string(target.substr(0, query_at));
    ctx.path_masked = policy::mask_keys_in_path(ctx.path);  // before anything can log or echo it
    if (query_at != std::string_view::npos) ctx.query = std::string(target.substr(query_at + 1));
    ctx.user_agent = std::string(fields.user_agent.value_or(std::string_view()));
    ctx.credential = presented_credential(fields, kind_ == listener_kind::caller);
    ctx.peer_names = peer_names_;
    if (w_.draining()) ctx.close_after = true;
    // A client certificate verified under a CA or CRL a reload has replaced: this request is the
    // connection's last, and the next connection is verified against the new ones.
    if (!peer_names_.empty() && tls_generation_ != w_.tls_generation()) ctx.close_after = true;
    ctx.admin_listener = kind_ == listener_kind::admin;
    session_sink<Stream> sink(w_, s_, ctx, slot_, keep_alive, parser.version() >= 11);

    if (kind_ == listener_kind::admin) {
      ctx.body = std::move(parser.body());
      co_await handle_admin_request(w_, ctx, sink);
    } else {
      const std::string_view ct = fields.content_type.value_or(std::string_view());
      if (parser.method() == http::verb::post && !ct.empty() && ct.find("json") == std::string_view::npos) {
        co_await answer_error(ctx, sink, errc::unsupported_media_type,
                              "Content-Type must be application/json, got '" + std::string(ct.substr(0, 100)) + "'.");
        log_request(w_, ctx);
      } else {
        ctx.body = std::move(parser.body());
        co_await with_disconnect_watch(ctx, sink);
      }
    }
    co_return sink.keep_alive() && !ctx.client_gone && !w_.draining();
  }

  /// Runs the caller pipeline while watching the caller's socket: if the caller disconnects
  /// mid-request, the upstream request is cancelled (ctx.cancel_upstream).
  /// The watch is a readiness wait, not a read: bytes of a pipelined next request stay in the
  /// kernel for the next read_head. It is armed by the worker's sweeper once the request has run
  /// for one to two sweep ticks (50-100 ms), not at once: a readiness wait costs an epoll_ctl
  /// syscall and a cancellation (about 2.7 us, 9% of a fast proxied call), and a call that ends
  /// within 50 ms has nothing worth cancelling. A caller already gone when the watch is armed is
  /// seen at once (epoll reports the state on arming).
  awaitable<void> with_disconnect_watch(request_context& ctx, session_sink<Stream>& sink) {
    // The request in progress, for the end of a shutdown's drain (worker::close_all).
    slot_->active = &ctx;
    struct inactive {  // also if the pipeline throws
      session_slot* slot;
      ~inactive() { slot->active = nullptr; }
    } inactive_on_exit{slot_};
    if constexpr (std::is_same_v<Stream, stream_t>) {
      struct watch {
        stream_t& s;
        request_context& ctx;
        session_slot& slot;
        worker& w;
        bool done = false, pending = false;
        void gone() {  // orderly close or reset: nobody is waiting for this answer
          ctx.client_gone = true;
          ctx.close_after = true;
          if (ctx.cancel_upstream && !ctx.answer_paid) ctx.cancel_upstream();
        }
        void again() {  // checked once more at the sweeper's next tick
          slot.arm = &watch::check;
          slot.arm_ctx = this;
          slot.arm_tick = w.sweep_tick();
        }
        static void arm(void* p) {
          auto& self = *static_cast<watch*>(p);
          self.pending = true;
          auto& sock = self.s.socket();
          sock.async_wait(net::socket_base::wait_read, [&self, &sock](error_code ec) {
            self.pending = false;
            if (self.done || ec) return;
            char c;
            const ssize_t n = ::recv(sock.native_handle(), &c, 1, MSG_PEEK | MSG_DONTWAIT);
            if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) self.gone();
            // Bytes wait (a pipelined request, a stray CRLF after the body): left for read_head.
            // The socket stays readable, so a readiness wait says no more; the caller's close
            // (its FIN behind those bytes) is looked for at each tick instead.
            else if (n > 0) self.again();
          });
        }
        static void check(void* p) {
          auto& self = *static_cast<watch*>(p);
          if (self.done) return;
          pollfd pfd{self.s.socket().native_handle(), POLLRDHUP, 0};
          if (::poll(&pfd, 1, 0) > 0 && (pfd.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0) self.gone();
          else self.again();
        }
      } wt{s_, ctx, *slot_, w_};
      slot_->arm = &watch::arm;
      slot_->arm_ctx = &wt;
      slot_->arm_tick = w_.sweep_tick();
      struct disarm {  // also if the pipeline throws: the sweeper must never arm a gone frame
        session_slot* slot;
        ~disarm() { slot->arm = nullptr; }
      } disarm_on_exit{slot_};
      // A throw (a bug, bad_alloc) must not skip the wait below: an armed wait's handler writes
      // into `wt`, which lives in this frame. (No co_await in a handler: caught, then rethrown.)
      std::exception_ptr thrown;
      try {
        co_await handle_caller_request(w_, ctx, sink);
      } catch (...) {
        thrown = std::current_exception();
      }
      // Nothing below suspends unless the watch was armed (pending), so the sweeper cannot arm it
      // now; `disarm_on_exit` clears the slot on the way out.
      wt.done = true;
      if (wt.pending) {
        error_code ignored;
        s_.socket().cancel(ignored);  // the socket may be closed already (a reset fault)
        // The cancelled wait completes through the queue; let it run before `wt` goes away.
        while (wt.pending) co_await net::post(co_await net::this_coro::executor, net::use_awaitable_t<base_executor_t>{});
      }
      if (thrown) std::rethrow_exception(thrown);
    } else {
      co_await handle_caller_request(w_, ctx, sink);
    }
  }

  awaitable<void> close() {
    stream_t& low = beast::get_lowest_layer(s_);
    if constexpr (!std::is_same_v<Stream, stream_t>) {
      low.expires_after(seconds(2));
      co_await s_.async_shutdown();
    }
    error_code ec;
    low.socket().shutdown(net::ip::tcp::socket::shutdown_send, ec);
    if (linger_ && !ec) {
      // Lingering close: closing a socket with unread bytes makes the kernel answer with a
      // reset, which can discard the error response before the caller reads it (a 413 for a body
      // still being sent). Read and drop what comes until the caller closes, for a bounded time
      // and amount.
      low.expires_after(linger_time);
      std::array<char, 4096> sink;  // in close()'s own frame: only closing connections pay for it
      std::size_t drained = 0;
      for (;;) {
        auto [rec, rn] = co_await low.async_read_some(net::buffer(sink));
        drained += rn;
        if (rec || drained >= linger_max_bytes) break;
      }
    }
    low.close();
  }

  static constexpr auto linger_time = seconds(2);
  static constexpr std::size_t linger_max_bytes = 4 * 1024 * 1024;
  bool linger_ = false;  ///< an error was answered before the request was read whole

  worker& w_;
  Stream& s_;
  listener_kind kind_;
  beast::flat_buffer buf_;
  std::string head_text_;  ///< the parsed request head's kept text, reused across requests
  std::string peer_;
  std::vector<std::string> peer_names_;
  std::uint64_t tls_generation_ = 0;
  session_slot* slot_ = nullptr;  ///< this session's entry in the worker's registry
};

}  // namespace

awaitable<void> run_session(worker& w, socket_t socket, listener_kind kind) {
  stream_t stream(std::move(socket));
  stream.socket().set_option(net::ip::tcp::no_delay(true));
  session<stream_t> s(w, stream, kind);
  co_await s.run();
}

awaitable<void> run_tls_session(worker& w, socket_t socket, std::shared_ptr<net::ssl::context> tls,
                                std::uint64_t tls_generation, listener_kind kind) {
  // `tls` is held for the session's life: a reload may replace the listener's context meanwhile.
  // `tls_generation` is that context's, taken with it at the accept: read from the worker after
  // the handshake, a reload landing during it would stamp a certificate checked against the old
  // CA and CRL as checked against the new ones, and the connection would never be closed for it.
  net::ssl::stream<stream_t> stream(stream_t(std::move(socket)), *tls);
  stream.next_layer().socket().set_option(net::ip::tcp::no_delay(true));
  stream.next_layer().expires_after(milliseconds(w.snap()->cfg->server.timeouts.header_read_ms));
  auto [ec] = co_await stream.async_handshake(net::ssl::stream_base::server);
  if (ec) co_return;
  // The handshake's bound ends with it: the session's own deadlines (head, body, idle: the
  // worker's sweeper, which answers 408) take over. Left armed, it cut the first request's body
  // at header_read_ms from the accept, closing the socket with no answer.
  stream.next_layer().expires_never();
  session<net::ssl::stream<stream_t>> s(w, stream, kind);
  s.set_peer_names(certificate_names(stream.native_handle()), tls_generation);
  co_await s.run();
}

}  // namespace tollgate::gateway
