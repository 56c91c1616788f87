// SPDX-License-Identifier: Apache-2.0
#pragma once
/// The audit trail's on-disk conventions, shared by the writer (gateway) and the reader
/// (tollgatectl audit export|verify). docs/audit.md describes the format.
///
/// A segment is a file `<instance>.<first seq, 20 digits>.jsonl` of JSON lines. Every line starts
/// with `{"seq":N,"prev":"<hex>",` where `prev` is the SHA-256 (hex) of the previous line's bytes
/// (without its newline): the previous line of the same segment, or the last line of the
/// instance's previous segment; the very first record's `prev` is 64 zeros. `seq` counts up by one
/// per record across an instance's segments. `<instance>.checkpoint` holds the chain head.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace tollgate::audit {

inline constexpr std::string_view genesis_hash = "0000000000000000000000000000000000000000000000000000000000000000";

/// Lowercase hex SHA-256 of `data`.
std::string sha256_hex(std::string_view data);

/// "<instance>.<seq padded to 20 digits>.jsonl"
std::string segment_name(std::string_view instance, std::uint64_t first_seq);

struct segment_id {
  std::string instance;
  std::uint64_t first_seq = 0;
};
/// Parses a segment file name (no directory); nullopt when it is not one.
std::optional<segment_id> parse_segment_name(std::string_view file);

/// "<instance>.checkpoint"
std::string checkpoint_name(std::string_view instance);

/// The record's "seq" and "prev" as the writer put them at the start of the line (a fast path
/// that needs no JSON parse); nullopt when the line does not start that way.
struct line_head {
  std::uint64_t seq = 0;
  std::string_view prev;
};
std::optional<line_head> parse_line_head(std::string_view line);

}  // namespace tollgate::audit
