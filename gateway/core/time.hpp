// SPDX-License-Identifier: Apache-2.0
#pragma once
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace tollgate {

/// Unix milliseconds from unix seconds ("1795680000"), a date ("2026-11-26", midnight UTC) or an
/// RFC 3339 time with its zone ("2026-11-26T08:00:00Z", "...08:00:00.5+01:00"); nullopt otherwise.
/// Used by the admin API's usage range and tollgatectl's --from/--to.
std::optional<std::int64_t> parse_time_ms(std::string_view s);

/// RFC 3339 in UTC with milliseconds: "2026-11-26T08:00:00.123Z" (logs and audit records).
std::string format_time_ms(std::chrono::system_clock::time_point t);

}  // namespace tollgate
