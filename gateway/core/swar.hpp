// SPDX-License-Identifier: Apache-2.0
#pragma once
/// Byte tests on 8 bytes at a time (SIMD within a register), for the per-request scans of the
/// hot path: a word with no byte of interest is skipped with a few arithmetic instructions
/// instead of eight compares. Each mask has the high bit of a byte set where that byte matches;
/// "any byte matches" (mask != 0) is exact, the position of bytes after the first match is not
/// (a borrow may carry), so callers re-check a word that matches byte by byte. Pure.
#include <cstdint>
#include <cstring>

namespace tollgate::swar {

inline constexpr std::uint64_t ones = 0x0101010101010101ULL;
inline constexpr std::uint64_t highs = 0x8080808080808080ULL;

/// The 8 bytes at `p` (any alignment).
inline std::uint64_t load(const char* p) noexcept {
  std::uint64_t w;
  std::memcpy(&w, p, 8);
  return w;
}

/// Bytes below `n` (n at most 0x80; bytes of 0x80 and above never match).
constexpr std::uint64_t less_than(std::uint64_t x, unsigned char n) noexcept { return (x - ones * n) & ~x & highs; }

/// Bytes equal to `c`.
constexpr std::uint64_t equal_to(std::uint64_t x, unsigned char c) noexcept {
  const std::uint64_t y = x ^ (ones * c);
  return (y - ones) & ~y & highs;
}

}  // namespace tollgate::swar
