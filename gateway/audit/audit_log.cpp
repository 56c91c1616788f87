// SPDX-License-Identifier: Apache-2.0
#include "gateway/audit/audit_log.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>

#include <algorithm>
#include <limits>
#include <set>
#include <thread>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "gateway/audit/chain.hpp"

namespace tollgate::audit {
namespace fs = std::filesystem;
namespace json = boost::json;
using namespace std::chrono;

namespace {

std::int64_t now_ms() { return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count(); }

std::string errno_text(int e) { return std::strerror(e); }

bool write_all(int fd, const char* p, std::size_t n, int& err) {
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      err = errno;
      return false;
    }
    p += w;
    n -= std::size_t(w);
  }
  return true;
}

void sync_dir(const std::string& dir) {
  int d = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (d >= 0) {
    ::fsync(d);
    ::close(d);
  }
}

/// The last whole line of `path` and the number of bytes after it (a torn tail).
struct tail_info {
  std::string last_line;
  std::uint64_t torn = 0;
  bool has_line = false;
};

bool read_tail(const std::string& path, tail_info& out, std::string& error) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    error = path + ": " + errno_text(errno);
    return false;
  }
  struct stat st {};
  ::fstat(fd, &st);
  const std::uint64_t size = std::uint64_t(st.st_size);
  // The last whole line and what follows it, read from the end in growing windows: a record is
  // mostly small, but one with captured text can be megabytes, and a line cut at the window's
  // start would continue the chain from the hash of its end alone.
  for (std::uint64_t window = 4u << 20;; window *= 4) {
    const std::uint64_t from = size > window ? size - window : 0;
    std::string buf(size - from, '\0');
    const ssize_t n = buf.empty() ? 0 : ::pread(fd, buf.data(), buf.size(), off_t(from));
    if (n < 0 || std::size_t(n) != buf.size()) {
      ::close(fd);
      error = path + ": cannot read its tail";
      return false;
    }
    const auto nl = buf.rfind('\n');
    const auto prev_nl = nl == std::string::npos || nl == 0 ? std::string::npos : buf.rfind('\n', nl - 1);
    if (from > 0 && prev_nl == std::string::npos) continue;  // the last line may begin before the window
    ::close(fd);
    if (nl == std::string::npos) {
      out.torn = size;  // no whole line at all
      return true;
    }
    out.torn = buf.size() - nl - 1;
    const std::size_t begin = prev_nl == std::string::npos ? 0 : prev_nl + 1;
    out.last_line = buf.substr(begin, nl - begin);
    out.has_line = true;
    return true;
  }
}

}  // namespace

audit_log::audit_log(config::audit_config cfg, std::string instance, metrics::registry& reg, log_fn log)
    : cfg_(std::move(cfg)),
      instance_(std::move(instance)),
      log_(std::move(log)),
      records_(reg.add("tollgate_audit_records_total",
                       "Audit records by result: written, late (written after a write error), dropped (lost "
                       "after max_pending_bytes filled up while writes failed).",
                       metrics::kind::counter, {"result"})),
      errors_(reg.add("tollgate_audit_write_errors_total", "Failed audit writes or fsyncs.", metrics::kind::counter)),
      degraded_(reg.add("tollgate_audit_degraded", "1 while audit writes fail.", metrics::kind::gauge)),
      fsync_seconds_(reg.add("tollgate_audit_fsync_seconds", "Time of one group commit's fsync.",
                             metrics::kind::histogram, {},
                             {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1})),
      group_size_(reg.add("tollgate_audit_group_records", "Records per group commit.", metrics::kind::histogram, {},
                          {1, 2, 4, 8, 16, 32, 64, 128, 256, 1024})) {
  records_.counter({"written"});
  records_.counter({"late"});
  records_.counter({"dropped"});
  errors_.counter({});
  degraded_.gauge({});
}

audit_log::~audit_log() {
  close();
  release_lock();
}

void audit_log::release_lock() noexcept {
  if (lock_fd_ < 0) return;
  ::close(lock_fd_);  // (releases the flock)
  lock_fd_ = -1;
}

std::string audit_log::open() {
  std::error_code ec;
  fs::create_directories(cfg_.dir, ec);
  if (ec) return "audit.dir: cannot create '" + cfg_.dir + "': " + ec.message();
  ::chmod(cfg_.dir.c_str(), 0700);
  if (::access(cfg_.dir.c_str(), W_OK) != 0) return "audit.dir: '" + cfg_.dir + "' is not writable: " + errno_text(errno);
  if (lock_fd_ < 0) {
    const std::string lock_path = cfg_.dir + "/" + instance_ + ".lock";
    lock_fd_ = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (lock_fd_ < 0) return "audit.dir: cannot create '" + lock_path + "': " + errno_text(errno);
    if (::flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
      const int err = errno;
      release_lock();
      if (err != EWOULDBLOCK) return "audit.dir: cannot lock '" + lock_path + "': " + errno_text(err);
      return "audit.dir: instance '" + instance_ + "' is already writing in '" + cfg_.dir +
             "' (another gateway with the same audit.instance?): two writers would fork its chain; give each "
             "gateway its own audit.instance or directory";
    }
  }

  // This instance's segments, oldest first.
  std::vector<std::pair<std::uint64_t, std::string>> segs;
  for (auto& e : fs::directory_iterator(cfg_.dir, ec)) {
    auto id = parse_segment_name(e.path().filename().string());
    if (id && id->instance == instance_) segs.emplace_back(id->first_seq, e.path().string());
  }
  if (ec) return "audit.dir: cannot list '" + cfg_.dir + "': " + ec.message();
  std::sort(segs.begin(), segs.end());

  next_seq_ = 1;
  head_ = std::string(genesis_hash);
  std::string torn_segment;
  std::uint64_t torn_bytes = 0;
  bool seen_bytes = false;  // a non-empty segment was met (newer empty ones are skipped)
  // The chain head is the last whole line of the newest segment that has one.
  for (auto it = segs.rbegin(); it != segs.rend(); ++it) {
    tail_info t;
    std::string err;
    if (!read_tail(it->second, t, err)) return "audit: " + err;
    if (!seen_bytes && (t.torn > 0 || t.has_line)) {
      seen_bytes = true;
      if (t.torn > 0) {
        // Torn tail of the newest segment with any bytes: the previous run died mid-write.
        torn_segment = fs::path(it->second).filename().string();
        torn_bytes = t.torn;
        if (!t.has_line) {
          // Nothing but the torn line: its name (by first seq) is the one the next segment needs.
          // It is kept beside the trail, renamed, and named in the start record.
          const std::string aside = it->second + ".torn";
          if (::rename(it->second.c_str(), aside.c_str()) != 0) return "audit: cannot move aside " + it->second;
          torn_segment += ".torn";
        }
      }
    }
    if (!t.has_line) continue;
    auto h = parse_line_head(t.last_line);
    if (!h) return "audit: the last record of " + it->second + " does not start with seq and prev; run tollgatectl audit verify";
    next_seq_ = h->seq + 1;
    head_ = sha256_hex(t.last_line);
    break;
  }
  // An empty newest segment (a start that crashed before its first record) is reused.
  segment_path_.clear();
  if (!segs.empty() && segs.back().first == next_seq_ && fs::file_size(segs.back().second, ec) == 0 && !ec)
    segment_path_ = segs.back().second;
  if (!open_segment()) return "audit: cannot open a segment in '" + cfg_.dir + "': " + errno_text(errno);

  json::object start{{"type", "start"}, {"time_ms", now_ms()}, {"pid", ::getpid()}};
  if (!torn_segment.empty()) {
    // The previous run died in the middle of a line. Say so in the chain: verify accepts exactly
    // this many torn bytes at the end of that segment, and reports them.
    start["recovered"] = json::object{{"segment", torn_segment}, {"torn_bytes", torn_bytes}};
    log_("warn", "audit: the last segment ended in a torn record (the previous run was killed mid-write)",
         "\"segment\":\"" + torn_segment + "\",\"torn_bytes\":" + std::to_string(torn_bytes));
  }
  queue_.push_back(item{json::serialize(start), {}, false});
  last_sync_ = steady_clock::now();
  // The first checkpoint goes with the start record: a trail without one can then be told from
  // one whose end was removed together with its checkpoint (audit_reader's verify).
  last_checkpoint_ = steady_clock::now() - hours(1);
  // Retention runs at start, then hourly: a gateway restarted more often than hourly (each
  // deploy, a crash loop) would otherwise never apply it.
  last_retention_ = steady_clock::now() - hours(1);
  thread_ = std::thread([this] { run(); });
  return {};
}

bool audit_log::open_segment() {
  if (fd_ >= 0) {
    if (unsynced_) sync_batched();
    ::close(fd_);
    fd_ = -1;
  }
  int flags = O_WRONLY | O_APPEND | O_CLOEXEC;
  if (segment_path_.empty()) {
    segment_path_ = cfg_.dir + "/" + segment_name(instance_, next_seq_);
    flags |= O_CREAT | O_EXCL;
  }
  fd_ = ::open(segment_path_.c_str(), flags, 0600);
  if (fd_ < 0) {
    segment_path_.clear();
    return false;
  }
  sync_dir(cfg_.dir);  // the new name is durable before any record in it counts as durable
  segment_bytes_ = 0;
  segment_opened_ = steady_clock::now();
  return true;
}

void audit_log::append(std::string record, completion done) {
  {
    std::lock_guard lk(mu_);
    queue_.push_back(item{std::move(record), std::move(done), false});
  }
  cv_.notify_one();
}

void audit_log::append(std::string record) { append(std::move(record), completion{}); }

bool audit_log::close() {
  {
    std::lock_guard lk(mu_);
    if (stop_ || !thread_.joinable()) return true;
    queue_.push_back(item{json::serialize(json::object{{"type", "stop"}, {"time_ms", now_ms()}}), {}, false});
    stop_ = true;
  }
  cv_.notify_one();
  thread_.join();
  bool ok = !dropped_at_stop_;
  if (fd_ >= 0) {
    if (sync_(fd_) != 0) {
      log_("error", "audit: the last records may not be on disk", "\"error\":" + json::serialize(json::value(errno_text(errno))));
      ok = false;
    }
    ::close(fd_);
    fd_ = -1;
  }
  release_lock();
  return ok;
}

void audit_log::complete(std::vector<item>& batch, bool ok) {
  for (auto& it : batch)
    if (it.done) it.done(ok);
}

void audit_log::set_healthy(bool h, std::string_view why) {
  if (healthy_.exchange(h) == h) return;
  degraded_.gauge({}).set(h ? 0 : 1);
  if (h) log_("info", "audit: writing works again; held records written", "");
  else
    log_("error", cfg_.fail_open ? "audit: writes fail; calls continue (on_error: fail_open)"
                                 : "audit: writes fail; new calls answer 503 audit_unavailable (on_error: fail_closed)",
         std::string("\"error\":") + json::serialize(json::value(std::string(why))));
}

bool audit_log::sync_batched() {
  unsynced_ = false;
  last_sync_ = steady_clock::now();
  const std::uint64_t records = std::exchange(unsynced_records_, 0);
  if (sync_(fd_) == 0) return true;
  // The kernel may have dropped the pages it could not write (and will not report it again):
  // those records may be lost. Calls stop (fail_closed) until a write and sync work again.
  const int err = errno;
  errors_.counter({}).inc();
  sync_lost_ += records;
  sync_error_ = "fdatasync: " + errno_text(err);
  last_error_ = sync_error_;
  set_healthy(false, last_error_);
  return false;
}

bool audit_log::rotate_if_needed(std::size_t incoming) {
  const bool too_big = segment_bytes_ > 0 && segment_bytes_ + incoming > cfg_.segment_max_bytes;
  const bool too_old = segment_bytes_ > 0 && cfg_.segment_max_age_s > 0 &&
                       steady_clock::now() - segment_opened_ >= seconds(cfg_.segment_max_age_s);
  if (!too_big && !too_old) return true;
  segment_path_.clear();
  return open_segment();
}

bool audit_log::write_group(std::vector<item>& batch) {
  std::size_t total = 0;
  for (auto& it : batch) total += it.body.size() + 100;
  if (fd_ < 0) {
    // A rotation failed before: try again to open the next segment.
    segment_path_.clear();
    open_segment();
  }
  if (fd_ < 0 || !rotate_if_needed(total)) {
    errors_.counter({}).inc();
    last_error_ = "cannot open a new segment: " + errno_text(errno);
    return false;
  }
  // One buffer for the writer's lifetime: a fresh multi-kilobyte one per group cost malloc
  // consolidations on every commit.
  std::string& buf = group_buf_;
  buf.clear();
  buf.reserve(total);
  std::uint64_t seq = next_seq_;
  std::string head = head_;
  for (auto& it : batch) {
    const std::size_t begin = buf.size();
    buf += "{\"seq\":";
    buf += std::to_string(seq);
    buf += ",\"prev\":\"";
    buf += head;
    buf += "\",";
    if (it.late) buf += "\"late\":true,";
    if (it.withheld) buf += "\"withheld\":true,";
    if (it.body.size() > 2 && it.body.front() == '{' && it.body.back() == '}') {
      buf.append(it.body, 1, std::string::npos);  // the record's fields after its '{'
    } else {
      buf.pop_back();  // no fields of its own (or not an object: never written as such)
      buf += it.body == "{}" ? "}" : ",\"type\":\"invalid_record\"}";
    }
    head = sha256_hex(std::string_view(buf).substr(begin));
    buf += '\n';
    ++seq;
  }
  int err = 0;
  bool ok = write_all(fd_, buf.data(), buf.size(), err);
  if (ok && strict()) {
    const auto t0 = steady_clock::now();
    if (sync_(fd_) != 0) {
      ok = false;
      err = errno;
    }
    fsync_seconds_.observe({}, duration<double>(steady_clock::now() - t0).count());
    last_sync_ = steady_clock::now();
  }
  if (!ok) {
    // Cut the file back to its last whole record: no torn line, no record twice.
    if (::ftruncate(fd_, off_t(segment_bytes_)) != 0) {
      // The segment can no longer be trusted to end on a record: continue in a new one.
      segment_path_.clear();
      open_segment();
    }
    errors_.counter({}).inc();
    last_error_ = errno_text(err);
    return false;
  }
  unsynced_ = !strict();
  if (unsynced_) unsynced_records_ += batch.size();
  segment_bytes_ += buf.size();
  next_seq_ = seq;
  head_ = std::move(head);
  group_size_.observe({}, double(batch.size()));
  std::uint64_t late = 0;
  for (auto& it : batch) late += it.late;
  records_.counter({"written"}).inc(double(batch.size() - late));
  if (late) records_.counter({"late"}).inc(double(late));
  return true;
}

void audit_log::write_checkpoint() {
  json::object cp{{"instance", instance_},
                  {"seq", next_seq_ - 1},
                  {"hash", head_},
                  {"segment", fs::path(segment_path_).filename().string()},
                  {"time_ms", now_ms()}};
  const std::string final_path = cfg_.dir + "/" + checkpoint_name(instance_);
  const std::string tmp = final_path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return;
  std::string text = json::serialize(cp) + "\n";
  int err = 0;
  const bool ok = write_all(fd, text.data(), text.size(), err) && ::fsync(fd) == 0;
  ::close(fd);
  if (ok && ::rename(tmp.c_str(), final_path.c_str()) == 0) sync_dir(cfg_.dir);
}

void audit_log::apply_retention() {
  if (cfg_.retention_days == 0) return;
  const auto cutoff = fs::file_time_type::clock::now() - hours(24) * cfg_.retention_days;
  if (!idle_pass_) retain_idle_instances(cutoff);
  std::vector<std::pair<std::uint64_t, fs::path>> old;
  std::uint64_t kept_from = std::numeric_limits<std::uint64_t>::max();  // the oldest segment left
  std::error_code ec;
  // The segment being written is told by its name: its path was put together from audit.dir
  // ("/a/" + "/" + name), the listing's from the directory ("/a/name"), and compared whole, a
  // trailing slash in audit.dir made the open segment one more old file once the writer had
  // been idle past retention: removed, and every later record written to a file no name reached.
  const auto current = fs::path(segment_path_).filename();
  for (auto& e : fs::directory_iterator(cfg_.dir, ec)) {
    auto id = parse_segment_name(e.path().filename().string());
    if (!id || id->instance != instance_) continue;
    if (e.path().filename() != current && e.last_write_time(ec) < cutoff && !ec) old.emplace_back(id->first_seq, e.path());
    else kept_from = std::min(kept_from, id->first_seq);
  }
  if (old.empty()) return;
  // No segment left (none open): the retention record itself begins the next one.
  if (kept_from == std::numeric_limits<std::uint64_t>::max()) kept_from = next_seq_;
  std::sort(old.begin(), old.end());
  // Removal is itself recorded: the chain names what retention removed, so verify can tell it
  // from a deleted segment.
  json::array names;
  for (auto& [seq, p] : old) names.push_back(json::value(p.filename().string()));
  std::vector<item> rec;
  // kept_from: the first seq left after this removal. Verify accepts a trail that starts later
  // than seq 1 only up to there: a segment deleted past it is a deletion, not retention.
  rec.push_back(item{json::serialize(json::object{{"type", "retention"},
                                                  {"time_ms", now_ms()},
                                                  {"removed", names},
                                                  {"kept_from", kept_from}}),
                     {}, false});
  if (!write_group(rec)) return;
  if (!strict() && !sync_batched()) return;  // (segments are removed only once their record is durable)
  for (auto& [seq, p] : old) fs::remove(p, ec);
  sync_dir(cfg_.dir);
  log_("info", "audit: retention removed old segments", "\"count\":" + std::to_string(old.size()));
}

void audit_log::retain_idle_instances(fs::file_time_type cutoff) {
  std::set<std::string> idle;
  std::error_code ec;
  for (auto& e : fs::directory_iterator(cfg_.dir, ec)) {
    auto id = parse_segment_name(e.path().filename().string());
    std::error_code tec;
    if (id && id->instance != instance_ && e.last_write_time(tec) < cutoff && !tec) idle.insert(std::string(id->instance));
  }
  for (const std::string& name : idle) {
    metrics::registry scratch;  // (its counters are not this gateway's)
    audit_log other(cfg_, name, scratch, log_);
    other.idle_pass_ = true;
    // A running writer holds the lock: it applies its own retention, and open() refuses.
    if (auto err = other.open(); !err.empty()) {
      if (err.find("is already writing") == std::string::npos)
        log_("warn", "audit: retention could not open an idle instance", "\"instance\":" + json::serialize(json::value(name)) +
                                                                             ",\"error\":" + json::serialize(json::value(err)));
      continue;
    }
    // Its first pass writes the start record and applies retention; then it stops (start,
    // retention, stop: the idle chain says what was removed, and when).
    for (int i = 0; i < 10000 && !other.first_pass_done_.load(); ++i) std::this_thread::sleep_for(milliseconds(1));
    other.close();
    log_("info", "audit: retention ran for an idle instance", "\"instance\":" + json::serialize(json::value(name)));
  }
}

void audit_log::run() {
  std::unique_lock lk(mu_);
  for (;;) {
    const auto wait = unsynced_ ? milliseconds(cfg_.batch_ms) : (healthy() ? milliseconds(1000) : milliseconds(250));
    cv_.wait_for(lk, wait, [&] { return stop_ || !queue_.empty() || retention_due_; });
    std::vector<item> batch;
    batch.swap(queue_);
    const bool stopping = stop_;
    lk.unlock();

    const auto now = steady_clock::now();
    // (Also with nothing held but records dropped: every failed record past max_pending_bytes.
    // Only this retry's success makes the writer healthy again and writes the chain's account
    // of the loss; without it fail_closed refused every call until a restart.)
    if ((!held_.empty() || dropped_ > 0 || sync_lost_ > 0) && (now - last_retry_ >= milliseconds(250) || stopping)) {
      // Retry what failed before, in its order, before anything newer.
      last_retry_ = now;
      const bool with_dropped = dropped_ > 0, with_sync = sync_lost_ > 0;
      if (with_dropped)  // the chain itself says how many records were lost, and when
        held_.push_back(item{"{\"type\":\"dropped\",\"time_ms\":" + std::to_string(now_ms()) +
                                 ",\"count\":" + std::to_string(dropped_) + "}",
                             {}, false});
      if (with_sync)  // records written whose sync failed: maybe not on disk
        held_.push_back(item{json::serialize(json::object{{"type", "sync_failed"},
                                                          {"time_ms", now_ms()},
                                                          {"count", sync_lost_},
                                                          {"error", sync_error_}}),
                             {}, false});
      if (write_group(held_)) {
        held_.clear();
        held_bytes_ = 0;
        if (with_dropped) dropped_ = 0;
        if (with_sync) sync_lost_ = 0;
        // (Batched: healthy once this account is durable too; a failed sync counts it again.)
        if (strict() || sync_batched()) set_healthy(true, {});
      } else {
        if (with_sync) held_.pop_back();
        if (with_dropped) held_.pop_back();
      }
    }
    if (!batch.empty()) {
      const bool tried = held_.empty();
      const bool ok = tried && write_group(batch);
      if (!ok) {
        set_healthy(false, last_error_);
        if (tried) last_retry_ = now;  // records queued behind held ones do not delay the retry
        complete(batch, false);
        for (auto& it : batch) {
          if (held_bytes_ + it.body.size() > cfg_.max_pending_bytes) {
            records_.counter({"dropped"}).inc();
            ++dropped_;
            continue;
          }
          held_bytes_ += it.body.size();
          // (A record waited on is a response held for it: fail_closed cut that response.)
          held_.push_back(item{std::move(it.body), {}, true, it.done && !cfg_.fail_open});
        }
      } else {
        complete(batch, true);
      }
    }
    if (unsynced_ && (steady_clock::now() - last_sync_ >= milliseconds(cfg_.batch_ms) || stopping)) sync_batched();
    if (stopping || steady_clock::now() - last_checkpoint_ >= seconds(std::max<std::uint32_t>(1, cfg_.checkpoint_s))) {
      // Only over records on disk: a checkpoint past a failed sync would make verify call the
      // records a power loss took "removed".
      if (!unsynced_ || sync_batched()) write_checkpoint();
      last_checkpoint_ = steady_clock::now();
    }
    if (!retention_ran_ || retention_due_.exchange(false) ||
        (!stopping && steady_clock::now() - last_retention_ >= hours(1))) {
      apply_retention();
      retention_ran_ = true;
      first_pass_done_ = true;
      last_retention_ = steady_clock::now();
    }
    lk.lock();
    if (stopping && queue_.empty()) break;
  }
  if (!held_.empty()) {
    dropped_at_stop_ = true;
    records_.counter({"dropped"}).inc(double(held_.size()));
    log_("error", "audit: records could not be written before shutdown",
         "\"count\":" + std::to_string(held_.size()));
  }
}

}  // namespace tollgate::audit
