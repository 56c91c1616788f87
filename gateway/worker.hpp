// SPDX-License-Identifier: Apache-2.0
#pragma once
/// One worker: an io_context run by one thread, and everything only that thread touches:
/// its config snapshot slot, request-id generator, upstream pool and live sessions.
#include <atomic>
#include <optional>
#include <list>
#include <memory>
#include <thread>
#include <unordered_map>

#include "gateway/access_log.hpp"
#include "gateway/core/metrics.hpp"
#include "gateway/core/net.hpp"
#include "gateway/core/provider.hpp"
#include "gateway/core/snowflake.hpp"
#include "gateway/upstream_client.hpp"
#include "policy/content_filter/content_filter.hpp"
#include "policy/policy.hpp"

namespace tollgate::audit {
class audit_log;
}

namespace tollgate::gateway {

/// A live connection, as the worker sees it for drain: its socket and whether it is between
/// requests (idle connections are closed at once on drain; busy ones finish their request).
struct session_slot {
  stream_t* lowest = nullptr;
  bool idle = true;
  /// Read deadline of the caller's connection (head or body). The worker's sweeper checks it a
  /// few times a second: a per-request timer would cost a timer-queue update and often a
  /// timerfd syscall on every request, for timeouts measured in seconds.
  std::chrono::steady_clock::time_point deadline = std::chrono::steady_clock::time_point::max();
  bool timed_out = false;
  /// A request that will watch its caller's socket for a disconnect once it has run past one
  /// sweep tick (see session::with_disconnect_watch): `arm(arm_ctx)` starts the watch. Most
  /// requests end long before, and never pay for one (docs/architecture.md, "Disconnects").
  void (*arm)(void*) = nullptr;
  void* arm_ctx = nullptr;
  std::uint64_t arm_tick = 0;  ///< the sweep tick the request began in
  /// The caller request in progress on this connection (null between requests): close_all() ends
  /// its upstream wait, so that it settles and logs before the workers stop.
  request_context* active = nullptr;
};

class worker {
 public:
  worker(unsigned index, std::shared_ptr<const snapshot> snap, access_log& log, policy::engine& policy)
      : index_(index), snap_(std::move(snap)), ids_(index), log_(log), policy_(policy) {}

  unsigned index() const { return index_; }
  net::io_context& ioc() { return ioc_; }
  executor_t executor() { return executor_t(ioc_.get_executor()); }

  // Worker-thread only from here on.
  const std::shared_ptr<const snapshot>& snap() const { return snap_; }
  void set_snapshot(std::shared_ptr<const snapshot> s) { snap_ = std::move(s); }
  /// Counts the caller listener's TLS contexts (each reload makes one): an mTLS connection made
  /// under an earlier one closes after its current request, so that its next connection is
  /// verified against the reloaded client CA and CRL (a revoked certificate must not live on in
  /// a keep-alive connection).
  std::uint64_t tls_generation() const { return tls_generation_; }
  void set_tls_generation(std::uint64_t g) { tls_generation_ = g; }
  std::uint64_t next_id() { return ids_.next(); }
  upstream_pool& pool() { return pool_; }
  access_log& log() { return log_; }
  policy::engine& policy() { return policy_; }
  /// The audit writer (shared by all workers), or nullptr when audit.enabled is false.
  audit::audit_log* audit() const { return audit_; }
  void set_audit(audit::audit_log* a) { audit_ = a; }
  /// This worker's Hyperscan scratch, grown for `set` (one scratch serves every set it was grown
  /// for). nullptr only when Hyperscan cannot allocate.
  policy::content_filter::scratch* filter_scratch(const policy::content_filter::filter_set& set) {
    if (!filter_scratch_) {
      auto s = policy::content_filter::scratch::create(set);
      if (!s) return nullptr;
      filter_scratch_.emplace(std::move(*s));
      return &*filter_scratch_;
    }
    return filter_scratch_->grow(set) ? &*filter_scratch_ : nullptr;
  }
  /// This worker's access-log lines not written yet (flushed on each sweep tick and at exit).
  std::string& log_buffer() { return log_buffer_; }

  /// The metric cells every finished request updates, for one route, provider, endpoint and
  /// status (log_request): found once per combination instead of four label lookups per request.
  struct request_cells {
    metrics::counter_cell* requests = nullptr;
    metrics::histogram_cell* duration = nullptr;
    metrics::histogram_cell* ttft = nullptr;
    metrics::histogram_cell* overhead = nullptr;
    metrics::counter_cell* prompt_tokens = nullptr;
    metrics::counter_cell* completion_tokens = nullptr;
  };
  struct request_cells_key {
    const void* route;
    const void* provider;
    int endpoint;
    unsigned status;
    bool operator==(const request_cells_key&) const = default;
  };
  struct request_cells_hash {
    std::size_t operator()(const request_cells_key& k) const noexcept {
      std::size_t h = std::hash<const void*>{}(k.route);
      h = h * 31 + std::hash<const void*>{}(k.provider);
      return h * 31 + std::size_t(k.endpoint) * 1000 + k.status;
    }
  };
  /// The cache of request_cells, keyed by route and provider addresses, which belong to
  /// `snap`: a request of another snapshot (a reload) starts the cache again, and the snapshot it
  /// keeps alive means no address is reused while the cache holds it.
  std::unordered_map<request_cells_key, request_cells, request_cells_hash>& request_cells_for(
      const std::shared_ptr<const snapshot>& snap) {
    if (snap != cells_snap_) {
      cells_.clear();
      cells_snap_ = snap;
    }
    return cells_;
  }

  bool draining() const { return draining_; }
  /// Stops keep-alive: idle sessions close now, busy ones after their current response.
  void start_drain() {
    draining_ = true;
    for (auto& s : sessions_)
      if (s.idle) {
        boost::system::error_code ec;
        s.lowest->socket().cancel(ec);
      }
  }
  /// Closes every session's socket (drain deadline passed), and ends the upstream wait of each
  /// request in progress: its caller gets no answer now, and the call settles (a paid whole answer
  /// cut here at its reservation) and logs before the workers stop. Without this, a call waiting
  /// for its provider (a head up to first_byte_ms, a paid body, a silent stream) would never
  /// reach settle: no charge, no log line, its hold kept until the lease expired.
  void close_all() {
    for (auto& s : sessions_) {
      if (request_context* ctx = s.active) {
        ctx->client_gone = true;
        ctx->close_after = true;
        if (ctx->cancel_upstream) ctx->cancel_upstream();
      }
      boost::system::error_code ec;
      s.lowest->socket().close(ec);
    }
    pool_.clear();
  }
  std::list<session_slot>& sessions() { return sessions_; }

  /// The number of sweep ticks so far (a request's disconnect watch is armed by the first tick
  /// after the one it began in).
  std::uint64_t sweep_tick() const { return sweep_tick_; }

  /// Every `tick`, cancels the reads of sessions past their deadline (they answer 408 or close),
  /// and arms the disconnect watch of requests that have run since before the previous tick.
  /// Runs until the io_context stops.
  awaitable<void> sweep_deadlines(std::chrono::milliseconds tick) {
    steady_timer_t timer(co_await net::this_coro::executor);
    for (;;) {
      timer.expires_after(tick);
      auto [ec] = co_await timer.async_wait();
      if (ec) co_return;
      log_.flush(log_buffer_);
      const auto now = std::chrono::steady_clock::now();
      const std::uint64_t tick_now = sweep_tick_++;
      for (auto& s : sessions_) {
        if (s.arm && s.arm_tick < tick_now) {  // began before the previous tick: 50-100 ms ago
          auto arm = std::exchange(s.arm, nullptr);
          arm(s.arm_ctx);
        }
        if (s.deadline > now) continue;
        s.deadline = std::chrono::steady_clock::time_point::max();
        s.timed_out = true;
        boost::system::error_code ignored;
        s.lowest->socket().cancel(ignored);
      }
    }
  }
  /// Live sessions, readable from any thread (drain waits for zero).
  std::atomic<int> live_sessions{0};

  std::thread thread;

 private:
  unsigned index_;
  std::shared_ptr<const snapshot> snap_;
  snowflake ids_;
  access_log& log_;
  policy::engine& policy_;
  audit::audit_log* audit_ = nullptr;
  bool draining_ = false;
  std::uint64_t tls_generation_ = 0;
  std::uint64_t sweep_tick_ = 0;
  std::string log_buffer_;
  std::shared_ptr<const snapshot> cells_snap_;
  std::unordered_map<request_cells_key, request_cells, request_cells_hash> cells_;
  std::optional<policy::content_filter::scratch> filter_scratch_;
  std::list<session_slot> sessions_;
  // Destroyed after the pool below and before everything above: coroutine frames that the
  // io_context destroys still see the session list and the log.
  net::io_context ioc_{1};
  // Declared after the io_context so it is destroyed first: its idle sockets must close while
  // the io_context's socket service still exists (ASan caught a use-after-free at exit).
  upstream_pool pool_;
};

}  // namespace tollgate::gateway
