// SPDX-License-Identifier: Apache-2.0
#pragma once
#include <cstdint>
#include <optional>
#include <string_view>

namespace tollgate {

/// Unix milliseconds from unix seconds ("1795680000"), a date ("2026-11-26", midnight UTC) or an
/// RFC 3339 time with its zone ("2026-11-26T08:00:00Z", "...08:00:00.5+01:00"); nullopt otherwise.
/// Used by the admin API's usage range and tollgatectl's --from/--to.
std::optional<std::int64_t> parse_time_ms(std::string_view s);

}  // namespace tollgate
