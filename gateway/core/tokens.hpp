// SPDX-License-Identifier: Apache-2.0
#pragma once
/// Rough token estimates (about four bytes a token), used only where a provider reports no usage.
#include <cstdint>
#include <string_view>

namespace tollgate {

constexpr std::uint64_t estimate_tokens_from_chars(std::uint64_t chars) noexcept { return chars == 0 ? 0 : (chars + 3) / 4; }

/// What `text` counts for in those estimates: its bytes, and one more for each character of
/// three or four UTF-8 bytes (CJK, kana, emoji...), which is about a token on its own, not the
/// three quarters its bytes would give. Latin, Cyrillic or Greek text counts its bytes.
constexpr std::uint64_t token_chars(std::string_view text) noexcept {
  std::uint64_t n = text.size();
  for (const char c : text) n += static_cast<unsigned char>(c) >= 0xE0;
  return n;
}

}  // namespace tollgate
