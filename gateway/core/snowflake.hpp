// SPDX-License-Identifier: Apache-2.0
#pragma once
/// Time-sortable 64-bit request ids: 41 bits of milliseconds since 2025-01-01 UTC, 10 bits of
/// worker, 12 bits of sequence. One generator per worker (worker-thread only, no locks); ids from
/// different workers never collide. Rendered as 16 lowercase hex digits, so string order equals
/// numeric order equals time order (to the millisecond).
#include <cstdint>
#include <string>

namespace tollgate {

class snowflake {
 public:
  static constexpr std::uint64_t epoch_ms = 1735689600000ULL;  // 2025-01-01T00:00:00Z
  static constexpr unsigned worker_bits = 10, sequence_bits = 12;

  explicit snowflake(unsigned worker_id) : worker_(worker_id & ((1u << worker_bits) - 1)) {}

  /// Next id. Clock passed in for tests; a clock that goes backwards reuses the last millisecond.
  std::uint64_t next(std::uint64_t now_unix_ms);
  std::uint64_t next();

  static std::string to_hex(std::uint64_t id);
  static std::uint64_t millis_of(std::uint64_t id) { return (id >> (worker_bits + sequence_bits)) + epoch_ms; }
  static unsigned worker_of(std::uint64_t id) { return (id >> sequence_bits) & ((1u << worker_bits) - 1); }

 private:
  unsigned worker_;
  std::uint64_t last_ms_ = 0;
  std::uint32_t seq_ = 0;
};

}  // namespace tollgate
