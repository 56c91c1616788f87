// SPDX-License-Identifier: Apache-2.0
#pragma once
/// One structured JSON line per request, written from the log phase only. Never holds a secret
/// or prompt text. Lines go out with one write(2) each (atomic for lines under PIPE_BUF on pipes,
/// and O_APPEND files), so workers need no lock.
#include <string>

#include "gateway/core/request_context.hpp"

namespace tollgate::gateway {

class access_log {
 public:
  /// "stdout", "off" or a file path (opened for append). Returns false and sets `error` on failure.
  bool open(const std::string& where, std::string& error);
  void write(const request_context& ctx);
  /// The JSON line for ctx (pure, for tests).
  static std::string format(const request_context& ctx);
  ~access_log();

 private:
  int fd_ = -1;
  bool owns_ = false;
};

/// A diagnostic line on stderr: {"level":..,"msg":..} plus extra JSON fields (pre-serialised).
void log_event(std::string_view level, std::string_view msg, std::string_view extra_json_fields = {});

}  // namespace tollgate::gateway
