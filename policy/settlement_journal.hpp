// SPDX-License-Identifier: Apache-2.0
#pragma once
// The settlement journal (store.settlement_journal): settlements the store could not take, kept on
// disk until it does. A gateway stopped or killed while the store is unreachable replays them at
// its next start, so their charges are applied late but not lost. Settlements are idempotent (the
// store applies a lease's settlement once, and remembers expired leases for a day), so replaying
// one the store had taken after all charges nothing twice.
//
// One file per gateway process, held with flock(LOCK_EX): JSON lines, appended and fdatasync'd.
//   {"add":{settlement}}   the store could not be reached with it (a lease added again: its
//                          new figures, which replace the earlier line's)
//   {"done":"<lease>"}     the store took it (or it was given up)
// Opening reads the file, keeps the settlements not done and rewrites the file to hold just those;
// once none is open the file is truncated. While settlements stay open, the file is rewritten the
// same way whenever it has grown to four times what they take (and at least compact_at bytes):
// during a long outage a charge taking a sum every 100 ms adds a line each time, and the file
// would otherwise grow by tens of megabytes an hour. Written only while the store is unreachable:
// the normal path never touches it.
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "policy/store.hpp"

namespace tollgate::policy {

namespace detail {
/// Called by settlement_journal::open() once it holds the lock of the file it opened, before it
/// checks that this file is still the one named by the path. Tests set it to replace the file in
/// between, as another gateway finishing its own open() does.
extern void (*journal_locked_hook)(const std::string& path);
}  // namespace detail

class settlement_journal {
 public:
  settlement_journal() = default;
  settlement_journal(const settlement_journal&) = delete;
  settlement_journal& operator=(const settlement_journal&) = delete;
  ~settlement_journal();

  struct opened {
    std::vector<settlement> open;  ///< settlements still to apply, oldest first
    std::size_t skipped = 0;       ///< lines that did not parse (a torn last line after a crash)
  };
  /// Opens (creating) `path`. Throws std::runtime_error, naming the file, when it cannot be
  /// opened, read, written or locked (another gateway holds it).
  opened open(const std::string& path);
  bool enabled() const { return fd_ >= 0; }

  /// Appends these settlements, then fdatasync. False (and `error` set) on an I/O error.
  bool add(std::span<const settlement* const> s, std::string& error);
  /// Marks these leases done; truncates the file when nothing is open any more.
  bool done(std::span<const std::string_view> leases, std::string& error);
  /// Settlements added and not done.
  std::size_t open_count() const;
  /// The journal's size on disk (bytes).
  std::size_t file_bytes() const;
  /// The least size at which the file is rewritten to hold only its open settlements (default
  /// 1 MiB; tests lower it).
  void compact_at(std::size_t bytes) {
    std::lock_guard lock(mu_);
    compact_at_ = bytes;
  }
  /// Called with open_count() after every change, under the journal's lock (so that a gauge set
  /// from it never goes back to an older count: two workers' changes each set theirs in order).
  void on_count(std::function<void(std::size_t)> f) {
    std::lock_guard lock(mu_);
    on_count_ = std::move(f);
  }

 private:
  /// Writes all of `text` to `fd`, then fdatasync; false with `error` set (naming path_) on failure.
  bool write_all(int fd, const std::string& text, std::string& error);
  /// write_all() at the end of the journal; on failure the file is cut back to where it was.
  bool append(std::string text, std::string& error);
  /// Writes the open settlements' last lines to a new file, synced, and renames it over the
  /// journal (then syncs the directory); appends go to it from then on. False (and `error` set)
  /// when any step fails: the old file, still whole, stays the journal.
  bool rewrite(const std::string& text, std::string& error);
  /// Rewrites the file when it has outgrown its open settlements (see the header); a failure is
  /// not the caller's (its line was written), and the next attempt waits for the file to double.
  void maybe_compact();
  mutable std::mutex mu_;
  int fd_ = -1;
  std::string path_;
  /// Open leases: the order they were first added in (replay keeps it) and their last line.
  struct entry {
    std::uint64_t seq;
    std::string line;
  };
  std::unordered_map<std::string, entry> open_;
  std::uint64_t seq_ = 0;
  std::size_t live_bytes_ = 0;  ///< the open settlements' lines, as a rewrite would hold them
  std::size_t file_bytes_ = 0;  ///< the file's size as this journal wrote it
  std::size_t compact_at_ = std::size_t(1) << 20;
  std::size_t retry_at_ = 0;  ///< after a failed rewrite: the size at which to try again
  bool torn_ = false;
  std::function<void(std::size_t)> on_count_;
  void counted() {
    if (on_count_) on_count_(open_.size());
  }  ///< a failed write left part of a line that could not be cut off
};

}  // namespace tollgate::policy
