// SPDX-License-Identifier: Apache-2.0
#include "gateway/core/snowflake.hpp"

#include <chrono>

namespace tollgate {

std::uint64_t snowflake::next(std::uint64_t now_ms) {
  if (now_ms < epoch_ms) now_ms = epoch_ms;
  if (now_ms <= last_ms_) {
    // Same millisecond, or the clock went back: stay on the last millisecond and count on.
    // When the 12-bit sequence is spent, borrow the next millisecond (ids stay unique and ordered).
    now_ms = last_ms_;
    if (++seq_ >= (1u << sequence_bits)) {
      seq_ = 0;
      ++now_ms;
    }
  } else {
    seq_ = 0;
  }
  last_ms_ = now_ms;
  return ((now_ms - epoch_ms) << (worker_bits + sequence_bits)) | (std::uint64_t(worker_) << sequence_bits) | seq_;
}

std::uint64_t snowflake::next() {
  using namespace std::chrono;
  return next(duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count());
}

std::string snowflake::to_hex(std::uint64_t id) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string s(16, '0');
  for (int i = 15; i >= 0; --i, id >>= 4) s[i] = digits[id & 0xf];
  return s;
}

}  // namespace tollgate
