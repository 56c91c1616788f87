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
// once none is open the file is truncated. Written only while the store is unreachable: the
// normal path never touches it.
#include <cstddef>
#include <functional>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <unordered_set>
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
  mutable std::mutex mu_;
  int fd_ = -1;
  std::string path_;
  std::unordered_set<std::string> open_;
  bool torn_ = false;
  std::function<void(std::size_t)> on_count_;
  void counted() {
    if (on_count_) on_count_(open_.size());
  }  ///< a failed write left part of a line that could not be cut off
};

}  // namespace tollgate::policy
