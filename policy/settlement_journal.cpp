// SPDX-License-Identifier: Apache-2.0
#include "policy/settlement_journal.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <stdexcept>

namespace tollgate::policy {
namespace json = boost::json;

namespace {

std::string errno_text() { return std::strerror(errno); }

/// `text` quoted as a JSON string (leases are ASCII, but a journal must never be malformed).
std::string quoted(std::string_view text) { return json::serialize(json::value(json::string(text))); }

/// fsync of the directory holding `path`, so that a rename into it survives a power loss: else
/// the old journal could come back with the name, and the lines appended since to the new one be
/// lost with it. A file system that cannot sync a directory (EINVAL) has nothing to make durable.
bool sync_directory_of(const std::string& path) {
  const auto slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
  const int d = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (d < 0) return false;
  const bool ok = ::fsync(d) == 0 || errno == EINVAL;
  ::close(d);
  return ok;
}

}  // namespace

namespace detail {
void (*journal_locked_hook)(const std::string& path) = nullptr;
}  // namespace detail

settlement_journal::~settlement_journal() {
  if (fd_ >= 0) ::close(fd_);  // releases the lock
}

settlement_journal::opened settlement_journal::open(const std::string& path) {
  std::lock_guard lock(mu_);
  // A lock held on a file no longer at `path` guards nothing: a gateway that opened the file just
  // before another one's open() renamed its rewrite over it would lock the old file once the
  // other closed it, replay that, and rename its own rewrite over the other's live journal,
  // whose later lines then went to a file no name reaches. So the file locked must still be the
  // one the path names; else open again (the usual lock-file loop).
  int fd = -1;
  for (int attempt = 0;; ++attempt) {
    fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) throw std::runtime_error("store.settlement_journal: cannot open " + path + ": " + errno_text());
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
      const std::string why = errno == EWOULDBLOCK ? "another gateway holds it (one journal per gateway process)" : errno_text();
      ::close(fd);
      throw std::runtime_error("store.settlement_journal: cannot lock " + path + ": " + why);
    }
    if (detail::journal_locked_hook) detail::journal_locked_hook(path);
    struct stat held {}, named {};
    if (::fstat(fd, &held) == 0 && ::stat(path.c_str(), &named) == 0 && held.st_dev == named.st_dev &&
        held.st_ino == named.st_ino)
      break;
    ::close(fd);
    if (attempt == 100)
      throw std::runtime_error("store.settlement_journal: cannot lock " + path + ": it keeps being replaced");
  }
  std::string text;
  char buf[65536];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const std::string why = errno_text();
      ::close(fd);
      throw std::runtime_error("store.settlement_journal: cannot read " + path + ": " + why);
    }
    if (n == 0) break;
    text.append(buf, std::size_t(n));
  }
  // Replay the lines: adds in order, minus the leases done.
  opened out;
  std::vector<settlement> added;
  std::map<std::string, std::size_t> index;  // lease -> position in `added`
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::size_t nl = text.find('\n', pos);
    if (nl == std::string::npos) nl = text.size();
    const std::string_view line(text.data() + pos, nl - pos);
    pos = nl + 1;
    if (line.empty()) continue;
    boost::system::error_code ec;
    auto v = json::parse(line, ec);
    if (ec || !v.is_object()) {
      ++out.skipped;
      continue;
    }
    const auto& o = v.get_object();
    if (const auto* a = o.if_contains("add"); a && a->is_object()) {
      if (auto s = settlement_from_json(a->get_object())) {
        // A lease added again carries its latest figures (an outage charge that took another
        // sum before it was ever sent): the last line wins, in the first one's place.
        if (auto it = index.find(s->adm.lease); it != index.end()) added[it->second] = std::move(*s);
        else {
          index[s->adm.lease] = added.size();
          added.push_back(std::move(*s));
        }
        continue;
      }
    } else if (const auto* d = o.if_contains("done"); d && d->is_string()) {
      if (auto it = index.find(std::string(d->get_string())); it != index.end()) {
        added[it->second].adm.lease.clear();  // done
        index.erase(it);
      }
      continue;
    }
    ++out.skipped;
  }
  for (auto& s : added)
    if (!s.adm.lease.empty()) out.open.push_back(std::move(s));

  // Rewrite the file with the open ones only: a new file, locked before it replaces the old one
  // (no other process can take it in between), written and synced, then renamed over it (never
  // half-written). Appends go to it.
  std::string compact;
  for (const auto& s : out.open) {
    std::string line = "{\"add\":" + settlement_to_json(s) + "}\n";
    compact += line;
    live_bytes_ += line.size();
    open_[s.adm.lease] = entry{seq_++, std::move(line)};
  }
  path_ = path;
  fd_ = fd;
  std::string error;
  if (!rewrite(compact, error)) {
    ::close(fd_);  // the old file and its lock, or the new one
    fd_ = -1;
    open_.clear();
    live_bytes_ = 0;
    throw std::runtime_error(error);
  }
  return out;
}

bool settlement_journal::rewrite(const std::string& text, std::string& error) {
  const std::string tmp = path_ + ".tmp";
  const int tfd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600);
  const bool written = tfd >= 0 && ::flock(tfd, LOCK_EX | LOCK_NB) == 0 && write_all(tfd, text, error);
  if (written && ::rename(tmp.c_str(), path_.c_str()) == 0) {
    // From here the new file is the journal, whatever follows: appends must go to it.
    ::close(fd_);  // the old file and its lock
    fd_ = tfd;
    torn_ = false;
    if (sync_directory_of(path_)) return true;
    error = "store.settlement_journal: cannot sync the directory of " + path_ + ": " + errno_text();
    return false;
  }
  if (error.empty()) error = "store.settlement_journal: cannot rewrite " + path_ + ": " + errno_text();
  if (tfd >= 0) ::close(tfd);
  return false;
}

void settlement_journal::maybe_compact() {
  struct stat st {};
  if (::fstat(fd_, &st) != 0) return;
  const auto size = std::size_t(st.st_size);
  if (size < std::max(compact_at_, retry_at_) || size < 4 * live_bytes_) return;
  std::vector<const entry*> order;
  order.reserve(open_.size());
  for (const auto& [lease, e] : open_) order.push_back(&e);
  std::sort(order.begin(), order.end(), [](const entry* a, const entry* b) { return a->seq < b->seq; });
  std::string text;
  text.reserve(live_bytes_);
  for (const entry* e : order) text += e->line;
  std::string error;
  retry_at_ = rewrite(text, error) ? 0 : size * 2;
}

bool settlement_journal::write_all(int fd, const std::string& text, std::string& error) {
  for (std::size_t off = 0; off < text.size();) {
    const ssize_t n = ::write(fd, text.data() + off, text.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      error = "store.settlement_journal: cannot write " + path_ + ": " + errno_text();
      return false;
    }
    off += std::size_t(n);
  }
  if (::fdatasync(fd) != 0) {
    error = "store.settlement_journal: cannot sync " + path_ + ": " + errno_text();
    return false;
  }
  return true;
}

bool settlement_journal::append(std::string text, std::string& error) {
  struct stat before {};
  const bool sized = ::fstat(fd_, &before) == 0;
  if (torn_) text.insert(text.begin(), '\n');
  if (write_all(fd_, text, error)) {
    torn_ = false;
    return true;
  }
  // A short write (a full disk, a file size limit) left part of a line at the end, and a failed
  // sync a line the caller counts as not written: cut back to where it began. Else the next line
  // would be appended to that part, and both would be skipped at replay as one line that does
  // not parse; when the cut fails, the next write starts on a line of its own.
  if (!sized || ::ftruncate(fd_, before.st_size) != 0) torn_ = true;
  return false;
}

bool settlement_journal::add(std::span<const settlement* const> s, std::string& error) {
  std::lock_guard lock(mu_);
  if (fd_ < 0 || s.empty()) return fd_ >= 0;
  std::vector<std::string> lines;
  lines.reserve(s.size());
  std::string text;
  for (const settlement* x : s) {
    lines.push_back("{\"add\":" + settlement_to_json(*x) + "}\n");
    text += lines.back();
  }
  if (!append(std::move(text), error)) return false;
  for (std::size_t i = 0; i < s.size(); ++i) {
    live_bytes_ += lines[i].size();
    auto [it, fresh] = open_.try_emplace(s[i]->adm.lease, entry{seq_, std::string()});
    if (fresh) ++seq_;
    else live_bytes_ -= it->second.line.size();  // its new figures replace the old
    it->second.line = std::move(lines[i]);
  }
  counted();
  maybe_compact();
  return true;
}

bool settlement_journal::done(std::span<const std::string_view> leases, std::string& error) {
  std::lock_guard lock(mu_);
  if (fd_ < 0 || leases.empty()) return fd_ >= 0;
  for (auto l : leases)
    if (auto it = open_.find(std::string(l)); it != open_.end()) {
      live_bytes_ -= it->second.line.size();
      open_.erase(it);
    }
  counted();
  if (open_.empty()) {  // nothing left to replay: start the file afresh
    if (::ftruncate(fd_, 0) == 0 && ::fdatasync(fd_) == 0) {
      torn_ = false;
      return true;
    }
    error = "store.settlement_journal: cannot truncate " + path_ + ": " + errno_text();
    return false;
  }
  std::string text;
  for (auto l : leases) text += "{\"done\":" + quoted(l) + "}\n";
  if (!append(std::move(text), error)) return false;
  maybe_compact();
  return true;
}

std::size_t settlement_journal::open_count() const {
  std::lock_guard lock(mu_);
  return open_.size();
}

std::size_t settlement_journal::file_bytes() const {
  std::lock_guard lock(mu_);
  struct stat st {};
  return fd_ >= 0 && ::fstat(fd_, &st) == 0 ? std::size_t(st.st_size) : 0;
}

}  // namespace tollgate::policy
