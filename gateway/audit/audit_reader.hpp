// SPDX-License-Identifier: Apache-2.0
#pragma once
/// Reads audit segments as a stream (a file at a time, a buffer at a time: gigabytes never sit in
/// memory), for `tollgatectl audit verify` and `audit export`. No gateway, no sockets.
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace tollgate::audit {

/// One segment file of the directory.
struct segment_file {
  std::string path, name, instance;
  std::uint64_t first_seq = 0, size = 0;
};
/// The segments in `dir`, by instance, then by first seq. Sets `error` when the directory is unreadable.
std::vector<segment_file> list_segments(const std::string& dir, std::string& error);

/// Calls `on_line(line, segment, line_number)` for every whole line of `seg` (without its newline),
/// then returns the number of bytes after the last newline (a torn tail). `on_bytes(n)` reports
/// progress. Returns nullopt (and sets `error`) when the file cannot be read.
std::optional<std::uint64_t> for_each_line(const segment_file& seg,
                                           const std::function<bool(std::string_view, std::uint64_t)>& on_line,
                                           const std::function<void(std::uint64_t)>& on_bytes, std::string& error);

/// What `verify` found wrong first.
struct verify_problem {
  std::string kind;     ///< edited | deleted | reordered | truncated | torn | malformed
  std::string segment;  ///< file name
  std::uint64_t line = 0;  ///< 1-based line in the segment (0: the segment as a whole)
  std::uint64_t seq = 0;   ///< the record named
  std::string message;
};

struct verify_report {
  std::uint64_t records = 0, segments = 0, bytes = 0;
  std::vector<std::string> instances;
  std::vector<std::string> notes;  ///< accepted irregularities (a torn tail the writer recorded, retention)
  std::optional<verify_problem> problem;
  bool ok() const { return !problem; }
};

/// Checks every instance's chain in `dir`: seq continuity, each record's prev against the hash of
/// the record before, segment boundaries, torn tails, and the checkpoint (which catches an edited
/// or removed last record). Stops at the first problem.
verify_report verify(const std::string& dir, const std::function<void(std::uint64_t)>& on_bytes = {});

}  // namespace tollgate::audit
