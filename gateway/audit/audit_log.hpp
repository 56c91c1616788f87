// SPDX-License-Identifier: Apache-2.0
#pragma once
/// The audit trail's writer: append-only, hash-chained JSON Lines segments (gateway/audit/chain.hpp),
/// written by one dedicated thread with group commit, so a worker's event loop never waits on the
/// disk; it only awaits the completion of its own record.
///
/// Durability (`audit.durability`):
///  - strict: a record's completion fires after the fsync of the group that holds it. The gateway
///    awaits it before the last byte of the response, so a response the caller received in full
///    has its record on disk.
///  - batched: completion fires once the record is written to the file; fsync runs at least every
///    `batch_ms`. A machine crash (not a process crash: the page cache survives `kill -9`) loses at
///    most the records of the last `batch_ms`.
/// Write errors (disk full, I/O errors): the group is rolled back (the file is cut back to its last
/// whole record), its completions fire with `false`, and its records stay in memory (up to
/// `max_pending_bytes`) to be written, marked `"late":true`, once writing works again. Meanwhile
/// `healthy()` is false and the gateway fails new calls closed or lets them through (`on_error`).
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/execution/outstanding_work.hpp>
#include <boost/asio/prefer.hpp>
#include <boost/asio/post.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "config/config.hpp"
#include "gateway/core/metrics.hpp"
#include "gateway/core/net.hpp"

namespace tollgate::audit {

class audit_log {
 public:
  using log_fn = std::function<void(std::string_view level, std::string_view msg, std::string_view extra_json)>;
  /// Called on the writer thread.
  using completion = std::function<void(bool ok)>;

  audit_log(config::audit_config cfg, std::string instance, metrics::registry& reg, log_fn log);
  ~audit_log();
  audit_log(const audit_log&) = delete;
  audit_log& operator=(const audit_log&) = delete;

  /// Creates the directory, finds the chain head of this instance's last segment, starts a new
  /// segment and the writer thread. Returns "" or an error message (the gateway does not start).
  std::string open();
  /// Writes what is queued, fsyncs, writes the checkpoint and stops the thread. Idempotent.
  /// Writes the stop record and closes the trail. False when records were lost on the way out
  /// (held ones dropped, or the last sync failed): the process's exit code says so.
  bool close();

  /// Queues one record: a JSON object text (`{"type":...}`); the writer puts `seq` and `prev` in
  /// front. `done(ok)` runs on the writer thread when the record is durable (strict) or written
  /// (batched); ok is false when the write failed.
  void append(std::string record, completion done);
  /// Queues a record and does not wait for it.
  void append(std::string record);

  /// append() as an Asio operation: completes with ok on the handler's own executor.
  template <class Token>
  auto async_append(std::string record, Token&& token) {
    return boost::asio::async_initiate<Token, void(bool)>(
        [this](auto handler, std::string rec) {
          // The handler's executor counts this operation as outstanding work until it completes.
          auto ex = boost::asio::prefer(boost::asio::get_associated_executor(handler),
                                        boost::asio::execution::outstanding_work.tracked);
          auto h = std::make_shared<decltype(handler)>(std::move(handler));
          append(std::move(rec), [ex, h](bool ok) { boost::asio::post(ex, [h, ok]() mutable { std::move(*h)(ok); }); });
        },
        token, std::move(record));
  }

  /// False while writes fail (and until a retry succeeds).
  bool healthy() const { return healthy_.load(std::memory_order_relaxed); }
  bool strict() const { return cfg_.mode == config::audit_config::durability::strict; }
  bool fail_open() const { return cfg_.fail_open; }
  const std::string& dir() const { return cfg_.dir; }
  const std::string& instance() const { return instance_; }

  /// Tests only: the call that makes written records durable (::fdatasync), to make it fail.
  void set_sync_for_test(int (*sync)(int)) { sync_ = sync; }
  /// Tests only: the writer's next pass (within a second) applies retention, as its hourly one.
  void retain_now_for_test() {
    retention_due_ = true;
    cv_.notify_one();
  }

 private:
  struct item {
    std::string body;
    completion done;
    bool late = false;
    /// Written late, and its caller never got the answer it records: a strict, fail_closed
    /// writer whose group failed cuts the response before its last byte.
    bool withheld = false;
  };
  void run();
  /// Writes `batch` as one group (and fsyncs it in strict mode). False on a write error (rolled back).
  bool write_group(std::vector<item>& batch);
  bool rotate_if_needed(std::size_t incoming);
  bool open_segment();
  void write_checkpoint();
  void apply_retention();
  /// Retention for the other instances in the directory that no writer runs (no gateway holds
  /// their lock: a host or port renamed, a replica removed): each with segments past retention is
  /// opened as its own writer here, which records and applies the removal in its own chain.
  void retain_idle_instances(std::filesystem::file_time_type cutoff);
  void complete(std::vector<item>& batch, bool ok);
  void set_healthy(bool h, std::string_view why);
  /// Batched mode: makes the records written since the last sync durable. On failure the
  /// writer turns unhealthy and counts them as possibly lost (a "sync_failed" record says so
  /// once a later write and sync work).
  bool sync_batched();

  config::audit_config cfg_;
  std::string instance_;
  log_fn log_;

  std::mutex mu_;
  std::condition_variable cv_;
  std::atomic<bool> retention_due_{false};  ///< retain_now_for_test()
  std::vector<item> queue_;
  bool stop_ = false;
  bool dropped_at_stop_ = false;  ///< held records dropped as the writer stopped (close() says so)
  std::thread thread_;
  std::atomic<bool> healthy_{true};

  /// `<instance>.lock` in the directory, held (flock) from open() until closed: a second writer of
  /// the same instance (two gateways given one audit.instance and one directory) would fork its
  /// chain, so it refuses to start instead.
  int lock_fd_ = -1;
  void release_lock() noexcept;

  // Writer thread only.
  int fd_ = -1;
  std::string segment_path_;
  std::uint64_t segment_bytes_ = 0;
  std::chrono::steady_clock::time_point segment_opened_{};
  std::uint64_t next_seq_ = 0;
  std::string head_;  ///< hash of the last record written
  std::vector<item> held_;  ///< records whose write failed, to retry (in order)
  std::uint64_t held_bytes_ = 0;
  std::uint64_t dropped_ = 0;  ///< records lost since writes failed (a "dropped" record says so)
  bool unsynced_ = false;
  std::uint64_t unsynced_records_ = 0;  ///< batched: records written since the last sync
  std::uint64_t sync_lost_ = 0;         ///< batched: records of failed syncs, not yet on the chain
  std::string sync_error_;
  int (*sync_)(int) = ::fdatasync;
  std::chrono::steady_clock::time_point last_sync_{}, last_checkpoint_{}, last_retry_{}, last_retention_{};
  std::string last_error_;
  std::string group_buf_;
  bool retention_ran_ = false;  ///< retention runs once at start even if the writer stops at once
  bool idle_pass_ = false;      ///< a writer opened for retain_idle_instances: no such pass of its own
  std::atomic<bool> first_pass_done_{false};  ///< the writer's first pass (start record, retention) is over

  metrics::family& records_;   ///< {result}: written, late, dropped
  metrics::family& errors_;    ///< write errors
  metrics::family& degraded_;  ///< gauge
  metrics::family& fsync_seconds_;
  metrics::family& group_size_;
};

}  // namespace tollgate::audit
