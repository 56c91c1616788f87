// SPDX-License-Identifier: Apache-2.0
#pragma once
/// Rough token estimates (about four bytes a token), used only where a provider reports no usage.
#include <cstdint>
#include <string_view>

namespace tollgate {

constexpr std::uint64_t estimate_tokens_from_chars(std::uint64_t chars) noexcept { return chars == 0 ? 0 : (chars + 3) / 4; }
constexpr std::uint64_t estimate_tokens(std::string_view text) noexcept { return estimate_tokens_from_chars(text.size()); }

}  // namespace tollgate
