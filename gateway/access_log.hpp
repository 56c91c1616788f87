// SPDX-License-Identifier: Apache-2.0
#pragma once
/// One structured JSON line per request, written from the log phase only. Never holds a secret
/// or prompt text. Each worker collects lines in its own buffer and writes them in batches (at
/// 32 KiB, on the worker's 50 ms tick, and at shutdown): a write(2) per request cost a fifth of
/// the gateway's throughput. Batches are whole lines, written under a mutex so that workers'
/// batches never interleave on a pipe. A crash can lose at most the last tick of lines; the
/// durable record of calls is the audit trail, not this log.
#include <mutex>
#include <string>

#include "gateway/core/request_context.hpp"

namespace tollgate::gateway {

class access_log {
 public:
  /// "stdout", "off" or a file path (opened for append). Returns false and sets `error` on failure.
  bool open(const std::string& where, std::string& error);
  bool enabled() const { return fd_ >= 0; }
  /// Appends ctx's line to a worker's buffer; writes the buffer out when it is large.
  void append(std::string& buffer, const request_context& ctx);
  /// Writes a worker's buffered lines now (thread-safe; empties `buffer`).
  void flush(std::string& buffer);
  /// The JSON line for ctx (pure, for tests).
  static std::string format(const request_context& ctx);
  ~access_log();

 private:
  int fd_ = -1;
  bool owns_ = false;
  std::mutex write_mu_;
};

/// A diagnostic line on stderr: {"level":..,"msg":..} plus extra JSON fields (pre-serialised).
void log_event(std::string_view level, std::string_view msg, std::string_view extra_json_fields = {});

}  // namespace tollgate::gateway
