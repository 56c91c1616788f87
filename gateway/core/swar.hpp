// SPDX-License-Identifier: Apache-2.0
#pragma once
/// Byte tests on 8 bytes at a time (SIMD within a register), for the per-request scans of the
/// hot path: a word with no byte of interest is skipped with a few arithmetic instructions
/// instead of eight compares. Each mask has the high bit of a byte set where that byte matches;
/// "any byte matches" (mask != 0) is exact, the position of bytes after the first match is not
/// (a borrow may carry), so callers re-check a word that matches byte by byte. Pure.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

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

/// The first `needle` in `hay` at or after `from`, or npos (as `string_view::find`). Candidates are
/// the positions holding the needle's first two bytes, found 8 positions at a time; each is then
/// compared whole. For the short keys searched in short JSON texts, where glibc's memmem spends
/// more on its per-call set-up than on the search, and where `string_view::find` stops at every
/// '"' (a key's first byte) to compare. With SSE2, 16 positions at a time (the words then only
/// take the tail).
inline std::size_t find(std::string_view hay, std::string_view needle, std::size_t from = 0) noexcept {
  const std::size_t n = hay.size(), m = needle.size();
  if (from > n || n - from < m) return std::string_view::npos;
  if (m < 2) return hay.find(needle, from);
  const char* const p = hay.data();
  const auto a = static_cast<unsigned char>(needle[0]), b = static_cast<unsigned char>(needle[1]);
  const std::size_t last = n - m;  // the last position a match can start at
  std::size_t i = from;
  auto at = [&](std::size_t k) { return std::memcmp(p + k + 2, needle.data() + 2, m - 2) == 0; };
#if defined(__SSE2__)
  // 16 positions at a time where SSE2 is (every x86-64): a quarter of the word loop's instructions.
  const __m128i va = _mm_set1_epi8(static_cast<char>(a)), vb = _mm_set1_epi8(static_cast<char>(b));
  for (; i + 17 <= n && i <= last; i += 16) {  // (the second load reads p[i+1 .. i+16])
    const __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + i));
    const __m128i y = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + i + 1));
    auto bits = static_cast<unsigned>(_mm_movemask_epi8(_mm_and_si128(_mm_cmpeq_epi8(x, va), _mm_cmpeq_epi8(y, vb))));
    while (bits != 0) {
      const std::size_t k = i + static_cast<std::size_t>(__builtin_ctz(bits));
      if (k > last) return std::string_view::npos;
      if (at(k)) return k;
      bits &= bits - 1;
    }
  }
#endif
  for (; i + 9 <= n && i <= last; i += 8) {  // (the second load reads p[i+1 .. i+8])
    if ((equal_to(load(p + i), a) & equal_to(load(p + i + 1), b)) == 0) continue;
    for (std::size_t k = i; k < i + 8 && k <= last; ++k)
      if (static_cast<unsigned char>(p[k]) == a && static_cast<unsigned char>(p[k + 1]) == b && at(k)) return k;
  }
  for (; i <= last; ++i)
    if (static_cast<unsigned char>(p[i]) == a && static_cast<unsigned char>(p[i + 1]) == b && at(i)) return i;
  return std::string_view::npos;
}

}  // namespace tollgate::swar
