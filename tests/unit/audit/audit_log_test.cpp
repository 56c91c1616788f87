// SPDX-License-Identifier: Apache-2.0
// The audit writer on real files in a private temp directory per test: chain format, completions,
// restart, rotation, torn-tail recovery and write failures (RLIMIT_FSIZE makes write() fail with
// EFBIG without needing a full disk or root-only tricks). No sockets.
#include "gateway/audit/audit_log.hpp"

#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/asio/bind_executor.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>

#include <cerrno>
#include <chrono>
#include <memory>
#include <condition_variable>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "gateway/audit/audit_reader.hpp"
#include "gateway/audit/chain.hpp"
#include "tests/unit/audit/audit_test_util.hpp"

namespace tollgate::audit {
namespace {

using namespace test_util;

namespace fs = std::filesystem;
namespace json = boost::json;
using namespace std::chrono_literals;

constexpr auto wait_limit = 5s;





/// This instance's segment file names, oldest first.
std::vector<std::string> segment_names(const std::string& dir, const std::string& instance) {
  std::vector<std::pair<std::uint64_t, std::string>> found;
  for (auto& e : fs::directory_iterator(dir)) {
    auto name = e.path().filename().string();
    if (auto id = parse_segment_name(name); id && id->instance == instance) found.emplace_back(id->first_seq, name);
  }
  std::sort(found.begin(), found.end());
  std::vector<std::string> out;
  for (auto& f : found) out.push_back(f.second);
  return out;
}

/// Every whole line of this instance's segments, in order.
std::vector<std::string> trail_lines(const std::string& dir, const std::string& instance) {
  std::vector<std::string> out;
  for (auto& name : segment_names(dir, instance)) {
    auto lines = whole_lines(read_file(dir + "/" + name));
    out.insert(out.end(), lines.begin(), lines.end());
  }
  return out;
}

json::object object_of(std::string_view line) {
  boost::system::error_code ec;
  auto v = json::parse(line, ec);
  if (ec || !v.is_object()) {
    ADD_FAILURE() << "not a JSON object: " << line;
    return {};
  }
  return v.get_object();
}

std::string type_of(std::string_view line) {
  auto o = object_of(line);
  auto t = o.if_contains("type");
  return t && t->is_string() ? std::string(t->get_string()) : std::string();
}

/// Each line is `{"seq":N,"prev":"<sha256 of the line before>",` with N counting up from `first_seq`.
void expect_chain(const std::vector<std::string>& lines, std::uint64_t first_seq, std::string prev) {
  std::uint64_t seq = first_seq;
  for (const auto& line : lines) {
    const std::string head = "{\"seq\":" + std::to_string(seq) + ",\"prev\":\"" + prev + "\",";
    EXPECT_EQ(line.substr(0, head.size()), head) << "record " << seq;
    auto h = parse_line_head(line);
    EXPECT_TRUE(h) << line;
    if (h) {
      EXPECT_EQ(h->seq, seq);
    }
    prev = sha256_hex(line);
    ++seq;
  }
}

/// `{"type":"call","i":<i>,"pad":"xxx…"}`
std::string call(int i, std::size_t pad = 0) {
  return "{\"type\":\"call\",\"i\":" + std::to_string(i) + ",\"pad\":\"" + std::string(pad, 'x') + "\"}";
}

config::audit_config strict_config(const std::string& dir) {
  config::audit_config c;
  c.dir = dir;
  return c;
}

config::audit_config batched_config(const std::string& dir, std::uint32_t batch_ms) {
  auto c = strict_config(dir);
  c.mode = config::audit_config::durability::batched;
  c.batch_ms = batch_ms;
  return c;
}

/// Collects the writer's log lines; lets a test wait for one.
class log_sink {
 public:
  audit_log::log_fn fn() {
    return [this](std::string_view level, std::string_view msg, std::string_view extra) {
      {
        std::lock_guard lk(mu_);
        entries_.push_back({std::string(level), std::string(msg), std::string(extra)});
      }
      cv_.notify_all();
    };
  }
  /// True once a line of `level` whose message contains `needle` was logged.
  bool wait_for(std::string_view level, std::string_view needle, std::chrono::milliseconds timeout = wait_limit) {
    std::unique_lock lk(mu_);
    return cv_.wait_for(lk, timeout, [&] { return find_locked(level, needle) != nullptr; });
  }
  /// The `extra` of the first such line, or nullopt.
  std::optional<std::string> extra_of(std::string_view level, std::string_view needle) {
    std::lock_guard lk(mu_);
    auto* e = find_locked(level, needle);
    return e ? std::optional<std::string>(e->extra) : std::nullopt;
  }

 private:
  struct entry {
    std::string level, msg, extra;
  };
  const entry* find_locked(std::string_view level, std::string_view needle) const {
    for (auto& e : entries_)
      if (e.level == level && e.msg.find(needle) != std::string::npos) return &e;
    return nullptr;
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<entry> entries_;
};

/// Completion callbacks that record (id → ok); a test waits for a number of them.
class completions {
 public:
  audit_log::completion make(int id, std::function<void()> also = {}) {
    return [this, id, also = std::move(also)](bool ok) {
      if (also) also();
      {
        std::lock_guard lk(mu_);
        results_[id] = ok;
        order_.push_back(id);
      }
      cv_.notify_all();
    };
  }
  bool wait_for_count(std::size_t n, std::chrono::milliseconds timeout = wait_limit) {
    std::unique_lock lk(mu_);
    return cv_.wait_for(lk, timeout, [&] { return results_.size() >= n; });
  }
  bool wait_for_id(int id, std::chrono::milliseconds timeout = wait_limit) {
    std::unique_lock lk(mu_);
    return cv_.wait_for(lk, timeout, [&] { return results_.count(id) > 0; });
  }
  std::optional<bool> result(int id) {
    std::lock_guard lk(mu_);
    auto it = results_.find(id);
    return it == results_.end() ? std::nullopt : std::optional<bool>(it->second);
  }
  std::vector<int> order() {
    std::lock_guard lk(mu_);
    return order_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<int, bool> results_;
  std::vector<int> order_;
};

/// Appends `call(i)` and waits for its completion; returns its ok (false on timeout too).
bool append_and_wait(audit_log& log, completions& done, int i, std::size_t pad = 0) {
  log.append(call(i, pad), done.make(i));
  if (!done.wait_for_id(i)) {
    ADD_FAILURE() << "no completion for record " << i;
    return false;
  }
  return *done.result(i);
}

bool exposes(const metrics::registry& reg, const std::string& sample) {
  return reg.expose().find(sample + "\n") != std::string::npos;
}

/// Lowers RLIMIT_FSIZE's soft limit (SIGXFSZ ignored, so write() fails with EFBIG); puts both back
/// when lifted or destroyed, whatever the test's path.
/// Verifies the whole trail in `dir`; the report goes to `out` when the test reads it further.
::testing::AssertionResult trail_verifies(const std::string& dir, verify_report* out = nullptr) {
  verify_report report = verify(dir);
  const bool ok = report.ok();
  std::string why = ok ? "" : report.problem->kind + " at " + report.problem->segment + ": " + report.problem->message;
  if (out) *out = std::move(report);
  if (ok) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << why;
}

/// Each test writes its trail in a private directory, with its log lines and completions.
class AuditLogTest : public ::testing::Test {
 protected:
  /// Opens writer "gw" with `cfg`, waits for an info line containing `needle`, and closes it.
  ::testing::AssertionResult run_once_until(const config::audit_config& cfg, std::string_view needle) {
    metrics::registry reg;
    audit_log log(cfg, "gw", reg, logs.fn());
    if (auto err = log.open(); !err.empty()) return ::testing::AssertionFailure() << err;
    const bool seen = logs.wait_for("info", needle, 5s);
    log.close();
    if (!seen) return ::testing::AssertionFailure() << "no info line with '" << needle << "'";
    return ::testing::AssertionSuccess();
  }

  temp_dir tmp;
  log_sink logs;
  completions done;
};

class file_size_limit {
 public:
  explicit file_size_limit(rlim_t soft) {
    ok_ = ::getrlimit(RLIMIT_FSIZE, &saved_) == 0 && (saved_.rlim_max == RLIM_INFINITY || soft <= saved_.rlim_max);
    if (!ok_) return;
    old_handler_ = std::signal(SIGXFSZ, SIG_IGN);
    rlimit lowered = saved_;
    lowered.rlim_cur = soft;
    ok_ = ::setrlimit(RLIMIT_FSIZE, &lowered) == 0;
  }
  ~file_size_limit() {
    lift();
    if (old_handler_ != SIG_ERR) std::signal(SIGXFSZ, old_handler_);
  }
  file_size_limit(const file_size_limit&) = delete;
  file_size_limit& operator=(const file_size_limit&) = delete;
  bool ok() const { return ok_; }
  void lift() {
    if (ok_) ::setrlimit(RLIMIT_FSIZE, &saved_);
  }

 private:
  rlimit saved_{};
  bool ok_ = false;
  void (*old_handler_)(int) = SIG_ERR;
};

TEST_F(AuditLogTest, StrictWriterChainsRecordsFromStartToStop) {
  ASSERT_FALSE(tmp.path().empty());
  const std::string dir = tmp.path() + "/trail";  // open() creates it
  metrics::registry reg;
  {
    audit_log log(strict_config(dir), "gw-1", reg, logs.fn());
    ASSERT_EQ(log.open(), "");
    EXPECT_TRUE(log.healthy());
    EXPECT_TRUE(log.strict());
    for (int i = 0; i < 20; ++i) {
      if (i % 5 == 4) log.append(call(i));  // fire and forget: written all the same
      else log.append(call(i), done.make(i));
    }
    ASSERT_TRUE(done.wait_for_count(16));
    log.close();
    log.close();  // idempotent: no second stop record
  }
  for (int i = 0; i < 20; ++i)
    if (i % 5 != 4) {
      EXPECT_EQ(done.result(i), std::optional<bool>(true)) << i;
    }

  struct stat st {};
  ASSERT_EQ(::stat(dir.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);  // the trail is private

  const auto segs = segment_names(dir, "gw-1");
  ASSERT_EQ(segs.size(), 1u);
  EXPECT_EQ(segs[0], segment_name("gw-1", 1));
  ASSERT_EQ(::stat((dir + "/" + segs[0]).c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);

  const std::string text = read_file(dir + "/" + segs[0]);
  ASSERT_FALSE(text.empty());
  EXPECT_EQ(text.back(), '\n');
  const auto lines = whole_lines(text);
  ASSERT_EQ(lines.size(), 22u);
  expect_chain(lines, 1, std::string(genesis_hash));

  auto start = object_of(lines.front());
  EXPECT_EQ(start.at("type").as_string(), "start");
  EXPECT_EQ(start.at("pid").to_number<std::int64_t>(), ::getpid());
  EXPECT_TRUE(start.at("time_ms").is_number());
  EXPECT_FALSE(start.contains("recovered"));
  for (int i = 0; i < 20; ++i) {
    auto o = object_of(lines[std::size_t(i) + 1]);
    EXPECT_EQ(o.at("type").as_string(), "call");
    EXPECT_EQ(o.at("i").to_number<int>(), i) << "records keep their order";
    EXPECT_FALSE(o.contains("late"));
  }
  EXPECT_EQ(type_of(lines.back()), "stop");

  auto cp = object_of(read_file(dir + "/" + checkpoint_name("gw-1")));
  EXPECT_EQ(cp.at("instance").as_string(), "gw-1");
  EXPECT_EQ(cp.at("seq").to_number<std::uint64_t>(), 22u);
  EXPECT_EQ(cp.at("hash").as_string(), sha256_hex(lines.back()));
  EXPECT_EQ(cp.at("segment").as_string(), segs[0]);
  EXPECT_FALSE(fs::exists(dir + "/" + checkpoint_name("gw-1") + ".tmp"));

  verify_report report;
  EXPECT_TRUE(trail_verifies(dir, &report));
  EXPECT_EQ(report.records, 22u);
  EXPECT_EQ(report.segments, 1u);
  EXPECT_EQ(report.instances, std::vector<std::string>{"gw-1"});
  EXPECT_TRUE(report.notes.empty());

  EXPECT_TRUE(exposes(reg, "tollgate_audit_records_total{result=\"written\"} 22")) << reg.expose();
  EXPECT_TRUE(exposes(reg, "tollgate_audit_degraded 0")) << reg.expose();
  EXPECT_TRUE(exposes(reg, "tollgate_audit_write_errors_total 0")) << reg.expose();
}

TEST_F(AuditLogTest, RecordFieldsArePreservedAfterSeqAndPrev) {
  metrics::registry reg;
  {
    audit_log log(strict_config(tmp.path()), "gw", reg, logs.fn());
    ASSERT_EQ(log.open(), "");
    log.append(R"({"type":"admin","action":"key.create","note":"quote \" and \\ and \u00e9"})", done.make(1));
    ASSERT_TRUE(done.wait_for_count(1));
  }  // the destructor closes
  const auto lines = trail_lines(tmp.path(), "gw");
  ASSERT_EQ(lines.size(), 3u);
  auto o = object_of(lines[1]);
  EXPECT_EQ(o.at("seq").to_number<int>(), 2);
  EXPECT_EQ(o.at("action").as_string(), "key.create");
  EXPECT_EQ(o.at("note").as_string(), "quote \" and \\ and \xc3\xa9");
  EXPECT_EQ(type_of(lines[2]), "stop");
}

TEST_F(AuditLogTest, StrictCompletionFiresOnceTheRecordIsInTheFile) {
  metrics::registry reg;
  audit_log log(strict_config(tmp.path()), "gw", reg, logs.fn());
  ASSERT_EQ(log.open(), "");
  const std::string seg = tmp.path() + "/" + segment_name("gw", 1);
  std::atomic<bool> seen_at_completion{false};
  log.append(call(7, 10), done.make(7, [&] {
               seen_at_completion = read_file(seg).find("\"i\":7,") != std::string::npos;
             }));
  ASSERT_TRUE(done.wait_for_id(7));
  EXPECT_EQ(done.result(7), std::optional<bool>(true));
  EXPECT_TRUE(seen_at_completion);
  log.close();
}

TEST_F(AuditLogTest, BatchedWriterCompletesEveryRecordFromManyThreads) {
  const auto cfg = batched_config(tmp.path(), 50);
  metrics::registry reg;
  constexpr int threads = 4, per_thread = 50;
  const std::string seg = tmp.path() + "/" + segment_name("gw", 1);
  std::atomic<int> missing_at_completion{0};
  {
    audit_log log(cfg, "gw", reg, logs.fn());
    ASSERT_EQ(log.open(), "");
    EXPECT_FALSE(log.strict());
    std::vector<std::thread> ts;
    for (int t = 0; t < threads; ++t)
      ts.emplace_back([&, t] {
        for (int k = 0; k < per_thread; ++k) {
          const int i = t * 1000 + k;
          log.append(call(i), done.make(i, [&, i] {
                       // batched: written to the file (not necessarily synced) when it completes
                       if (read_file(seg).find("\"i\":" + std::to_string(i) + ",") == std::string::npos) ++missing_at_completion;
                     }));
        }
      });
    for (auto& t : ts) t.join();
    ASSERT_TRUE(done.wait_for_count(threads * per_thread));
    log.close();
  }
  EXPECT_EQ(missing_at_completion, 0);
  for (int t = 0; t < threads; ++t)
    for (int k = 0; k < per_thread; ++k) EXPECT_EQ(done.result(t * 1000 + k), std::optional<bool>(true));

  const auto lines = trail_lines(tmp.path(), "gw");
  ASSERT_EQ(lines.size(), std::size_t(threads * per_thread + 2));
  expect_chain(lines, 1, std::string(genesis_hash));
  EXPECT_EQ(type_of(lines.front()), "start");
  EXPECT_EQ(type_of(lines.back()), "stop");
  // Each thread's records appear once each, in the order that thread appended them.
  std::map<int, int> next;
  for (std::size_t n = 1; n + 1 < lines.size(); ++n) {
    const int i = object_of(lines[n]).at("i").to_number<int>();
    EXPECT_EQ(i % 1000, next[i / 1000]++) << "thread " << i / 1000;
  }
  for (int t = 0; t < threads; ++t) EXPECT_EQ(next[t], per_thread);
  EXPECT_TRUE(trail_verifies(tmp.path()));
}

TEST_F(AuditLogTest, AsyncAppendCompletesOnTheHandlersExecutor) {
  metrics::registry reg;
  boost::asio::io_context ioc;  // outlives the writer, which may still post to it
  audit_log log(strict_config(tmp.path()), "gw", reg, logs.fn());
  ASSERT_EQ(log.open(), "");
  auto guard = boost::asio::make_work_guard(ioc);
  std::optional<bool> result;
  std::thread::id ran_on;
  log.async_append(call(1), boost::asio::bind_executor(ioc, [&](bool ok) {
                     result = ok;
                     ran_on = std::this_thread::get_id();
                     guard.reset();
                   }));
  ioc.run_for(wait_limit);  // returns once the guard is reset, or fails the test after wait_limit
  ASSERT_TRUE(result.has_value()) << "async_append never completed";
  EXPECT_TRUE(*result);
  EXPECT_EQ(ran_on, std::this_thread::get_id());  // in ioc.run(), not on the writer thread
  log.close();
  EXPECT_EQ(trail_lines(tmp.path(), "gw").size(), 3u);
}

TEST_F(AuditLogTest, AsyncAppendKeepsItsIoContextBusyUntilItCompletes) {
  // Asio's contract for an asynchronous operation: it keeps outstanding work on the handler's
  // executor until the handler runs, so io_context::run() does not return under it.
  metrics::registry reg;
  boost::asio::io_context ioc;
  audit_log log(strict_config(tmp.path()), "gw", reg, logs.fn());
  ASSERT_EQ(log.open(), "");
  std::optional<bool> result;
  log.async_append(call(1), boost::asio::bind_executor(ioc, [&](bool ok) { result = ok; }));
  ioc.run_for(wait_limit);
  EXPECT_EQ(result, std::optional<bool>(true)) << "io_context::run() returned before async_append completed";
  log.close();
}

TEST_F(AuditLogTest, RetentionRunsAtStartAndSaysWhereTheTrailNowBegins) {
  // Two runs' segments, the first made 10 days old; retention_days 1. The next start removes it
  // at once (not an hour later: a gateway restarted more often never applied retention), records
  // what it removed and the first seq left, and the trail verifies without the removed segment.
  auto cfg = strict_config(tmp.path());
  for (int run = 0; run < 2; ++run) {
    metrics::registry reg;
    audit_log log(cfg, "gw", reg, logs.fn());
    ASSERT_EQ(log.open(), "");
    ASSERT_TRUE(append_and_wait(log, done, run + 1));
    log.close();
  }
  const std::string first = tmp.path() + "/" + segment_name("gw", 1);
  ASSERT_TRUE(fs::exists(first));
  fs::last_write_time(first, fs::file_time_type::clock::now() - std::chrono::hours(24 * 10));
  cfg.retention_days = 1;
  ASSERT_TRUE(run_once_until(cfg, "audit: retention removed old segments"));
  EXPECT_FALSE(fs::exists(first));
  const auto lines = trail_lines(tmp.path(), "gw");
  bool found = false;
  for (const auto& l : lines) {
    auto o = object_of(l);
    if (o.at("type").as_string() != "retention") continue;
    found = true;
    EXPECT_EQ(o.at("kept_from").to_number<std::uint64_t>(), 4u) << l;  // start, 1, stop | start...
    EXPECT_EQ(o.at("removed").as_array().size(), 1u) << l;
  }
  EXPECT_TRUE(found);
  EXPECT_TRUE(trail_verifies(tmp.path()));
}

TEST_F(AuditLogTest, TheFirstCheckpointIsWrittenWithTheStartRecord) {
  // Not checkpoint_s later: a trail without a checkpoint is then one whose end was removed.
  auto cfg = strict_config(tmp.path());
  cfg.checkpoint_s = 3600;
  metrics::registry reg;
  audit_log log(cfg, "gw", reg, logs.fn());
  ASSERT_EQ(log.open(), "");
  ASSERT_TRUE(append_and_wait(log, done, 1));
  const std::string cp = tmp.path() + "/" + checkpoint_name("gw");
  for (int i = 0; i < 100 && !fs::exists(cp); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_TRUE(fs::exists(cp)) << "no checkpoint while the writer runs";
  log.close();
}

TEST_F(AuditLogTest, HourlyRetentionNeverRemovesTheSegmentBeingWritten) {
  // audit.dir with a trailing slash, and a writer idle past retention (no age rotation): its
  // open segment is as old as any other. Retention removes the old run's segment and keeps the
  // open one, to which the next records go; the trail verifies.
  auto cfg = strict_config(tmp.path() + "/");
  cfg.segment_max_age_s = 0;
  {
    metrics::registry reg;
    audit_log log(cfg, "gw", reg, logs.fn());
    ASSERT_EQ(log.open(), "");
    ASSERT_TRUE(append_and_wait(log, done, 1));
    log.close();
  }
  const std::string first = tmp.path() + "/" + segment_name("gw", 1);
  cfg.retention_days = 1;
  metrics::registry reg;
  audit_log log(cfg, "gw", reg, logs.fn());
  ASSERT_EQ(log.open(), "");
  ASSERT_TRUE(append_and_wait(log, done, 2));
  const std::string open_segment = tmp.path() + "/" + segment_name("gw", 4);  // start, 1, stop | start, 2
  ASSERT_TRUE(fs::exists(open_segment));
  for (const auto& p : {first, open_segment})
    fs::last_write_time(p, fs::file_time_type::clock::now() - std::chrono::hours(24 * 10));
  log.retain_now_for_test();
  ASSERT_TRUE(logs.wait_for("info", "audit: retention removed old segments"));
  EXPECT_FALSE(fs::exists(first));
  EXPECT_TRUE(fs::exists(open_segment)) << "the segment being written was removed";
  ASSERT_TRUE(append_and_wait(log, done, 3));
  log.close();
  const auto lines = trail_lines(tmp.path(), "gw");
  bool retention = false, third = false;
  for (const auto& l : lines) {
    auto o = object_of(l);
    if (o.at("type").as_string() == "retention") {
      retention = true;
      EXPECT_EQ(o.at("kept_from").to_number<std::uint64_t>(), 4u) << l;
      EXPECT_EQ(o.at("removed").as_array().size(), 1u) << l;
    }
    if (o.at("type").as_string() == "call" && o.at("i").to_number<int>() == 3) third = true;
  }
  EXPECT_TRUE(retention);
  EXPECT_TRUE(third) << "a record after retention is in the trail";
  EXPECT_TRUE(trail_verifies(tmp.path()));
}

TEST_F(AuditLogTest, RetentionAlsoRunsForAnIdleInstanceAndLeavesARunningOneAlone) {
  // Segments of instance names no gateway runs any more (a host renamed, a replica removed) were
  // kept forever. A writer's retention now opens each idle instance as its own writer, which
  // records the removal in that instance's chain. An instance whose writer runs is left to it.
  auto cfg = strict_config(tmp.path());
  for (const char* name : {"old", "busy"})
    for (int run = 0; run < 2; ++run) {
      metrics::registry reg;
      audit_log log(cfg, name, reg, logs.fn());
      ASSERT_EQ(log.open(), "");
      ASSERT_TRUE(append_and_wait(log, done, run + 1));
      log.close();
    }
  const auto ten_days_ago = fs::file_time_type::clock::now() - std::chrono::hours(24 * 10);
  const std::string old_first = tmp.path() + "/" + segment_name("old", 1);
  const std::string busy_first = tmp.path() + "/" + segment_name("busy", 1);
  fs::last_write_time(old_first, ten_days_ago);
  fs::last_write_time(busy_first, ten_days_ago);
  metrics::registry busy_reg;
  audit_log busy(strict_config(tmp.path()), "busy", busy_reg, logs.fn());  // running, without retention
  ASSERT_EQ(busy.open(), "");
  cfg.retention_days = 1;
  ASSERT_TRUE(run_once_until(cfg, "audit: retention ran for an idle instance"));
  EXPECT_FALSE(fs::exists(old_first)) << "the idle instance's old segment is removed";
  EXPECT_TRUE(fs::exists(busy_first)) << "a running instance's segments are its own writer's business";
  busy.close();
  std::vector<std::string> types;
  for (const auto& l : trail_lines(tmp.path(), "old")) types.push_back(type_of(l));
  const std::vector<std::string> tail(types.end() - 3, types.end());
  EXPECT_EQ(tail, (std::vector<std::string>{"start", "retention", "stop"}));
  EXPECT_TRUE(trail_verifies(tmp.path()));
  EXPECT_EQ(logs.extra_of("info", "audit: retention ran for an idle instance"), std::optional<std::string>("\"instance\":\"old\""));
}

TEST_F(AuditLogTest, ASecondWriterOfTheSameInstanceIsRefusedWhileTheFirstRuns) {
  // Two gateways given one audit.instance and one directory would both append to its chain from
  // the same head (a fork that verify reports as tampering): the second refuses to start.
  metrics::registry reg_a, reg_b, reg_c, reg_d;
  audit_log first(strict_config(tmp.path()), "gw", reg_a, logs.fn());
  ASSERT_EQ(first.open(), "");
  ASSERT_TRUE(append_and_wait(first, done, 1));
  const std::string before = read_file(tmp.path() + "/" + segment_name("gw", 1));
  {
    audit_log second(strict_config(tmp.path()), "gw", reg_b, logs.fn());
    const std::string err = second.open();
    EXPECT_NE(err.find("instance 'gw' is already writing"), std::string::npos) << err;
  }
  {
    audit_log other(strict_config(tmp.path()), "gw-2", reg_d, logs.fn());  // another instance: fine
    EXPECT_EQ(other.open(), "");
  }
  EXPECT_EQ(read_file(tmp.path() + "/" + segment_name("gw", 1)), before);
  ASSERT_TRUE(append_and_wait(first, done, 2));
  first.close();
  audit_log third(strict_config(tmp.path()), "gw", reg_c, logs.fn());  // once the first has stopped
  EXPECT_EQ(third.open(), "");
  third.close();
  EXPECT_TRUE(trail_verifies(tmp.path()));
}

TEST_F(AuditLogTest, ARestartAfterARecordLargerThanTheTailWindowContinuesTheChain) {
  // A record with captured text can be megabytes. At start the writer reads its newest segment
  // from the end; a last line longer than the first window (4 MiB) was hashed from its end alone,
  // and the chain went on from a wrong hash.
  {
    metrics::registry reg;
    audit_log first(strict_config(tmp.path()), "gw", reg, logs.fn());
    ASSERT_EQ(first.open(), "");
    first.append(R"({"type":"call","i":1,"response":")" + std::string(5u << 20, 'x') + R"("})", done.make(1));
    ASSERT_TRUE(done.wait_for_id(1));
    first.close();
  }
  // The stop record follows the big one; cut it so that the big record is the last line.
  const std::string seg = tmp.path() + "/" + segment_name("gw", 1);
  std::string text = read_file(seg);
  text.resize(text.rfind('\n', text.size() - 2) + 1);
  std::ofstream(seg, std::ios::binary | std::ios::trunc) << text;
  fs::remove(tmp.path() + "/" + checkpoint_name("gw"));  // (it named the cut stop record)
  {
    metrics::registry reg;
    audit_log second(strict_config(tmp.path()), "gw", reg, logs.fn());
    ASSERT_EQ(second.open(), "");
    ASSERT_TRUE(append_and_wait(second, done, 2));
    second.close();
  }
  const auto lines = trail_lines(tmp.path(), "gw");
  ASSERT_EQ(lines.size(), 5u);  // start, the big one, (its stop cut,) start, 2, stop
  expect_chain(lines, 1, std::string(genesis_hash));
  EXPECT_TRUE(trail_verifies(tmp.path()));
}

TEST_F(AuditLogTest, RestartContinuesTheChainInANewSegment) {
  {
    metrics::registry reg;
    audit_log first(strict_config(tmp.path()), "gw", reg, logs.fn());
    ASSERT_EQ(first.open(), "");
    for (int i = 0; i < 3; ++i) first.append(call(i), done.make(i));
    ASSERT_TRUE(done.wait_for_count(3));
    first.close();
  }
  const auto first_lines = trail_lines(tmp.path(), "gw");
  ASSERT_EQ(first_lines.size(), 5u);  // start, 3 calls, stop
  {
    metrics::registry reg;
    audit_log second(strict_config(tmp.path()), "gw", reg, logs.fn());
    ASSERT_EQ(second.open(), "");
    for (int i = 10; i < 12; ++i) second.append(call(i), done.make(i));
    ASSERT_TRUE(done.wait_for_count(5));
    second.close();
  }
  const auto segs = segment_names(tmp.path(), "gw");
  ASSERT_EQ(segs.size(), 2u);
  EXPECT_EQ(segs[0], segment_name("gw", 1));
  EXPECT_EQ(segs[1], segment_name("gw", 6));
  const auto second_lines = whole_lines(read_file(tmp.path() + "/" + segs[1]));
  ASSERT_EQ(second_lines.size(), 4u);  // start, 2 calls, stop
  EXPECT_EQ(type_of(second_lines[0]), "start");
  auto h = parse_line_head(second_lines[0]);
  ASSERT_TRUE(h);
  EXPECT_EQ(h->seq, 6u);
  EXPECT_EQ(h->prev, sha256_hex(first_lines.back()));
  expect_chain(trail_lines(tmp.path(), "gw"), 1, std::string(genesis_hash));

  auto cp = object_of(read_file(tmp.path() + "/" + checkpoint_name("gw")));
  EXPECT_EQ(cp.at("seq").to_number<std::uint64_t>(), 9u);
  EXPECT_EQ(cp.at("hash").as_string(), sha256_hex(second_lines.back()));
  EXPECT_EQ(cp.at("segment").as_string(), segs[1]);

  verify_report report;
  EXPECT_TRUE(trail_verifies(tmp.path(), &report));
  EXPECT_EQ(report.records, 9u);
  EXPECT_EQ(report.segments, 2u);
}

TEST_F(AuditLogTest, InstancesInOneDirectoryKeepSeparateChains) {
  metrics::registry reg_a, reg_b;
  {
    audit_log a(strict_config(tmp.path()), "gw-a", reg_a, logs.fn());
    audit_log b(strict_config(tmp.path()), "gw-b", reg_b, logs.fn());
    ASSERT_EQ(a.open(), "");
    for (int i = 0; i < 3; ++i) a.append(call(i), done.make(i));
    ASSERT_TRUE(done.wait_for_count(3));
    a.close();
    ASSERT_EQ(b.open(), "");  // a's segments do not move b's chain
    b.append(call(100), done.make(100));
    ASSERT_TRUE(done.wait_for_id(100));
    b.close();
  }
  EXPECT_EQ(segment_names(tmp.path(), "gw-b"), std::vector<std::string>{segment_name("gw-b", 1)});
  const auto b_lines = trail_lines(tmp.path(), "gw-b");
  ASSERT_EQ(b_lines.size(), 3u);
  expect_chain(b_lines, 1, std::string(genesis_hash));
  verify_report report;
  EXPECT_TRUE(trail_verifies(tmp.path(), &report));
  EXPECT_EQ(report.instances, (std::vector<std::string>{"gw-a", "gw-b"}));
  EXPECT_EQ(report.records, 8u);
}

TEST_F(AuditLogTest, SegmentsRotateAtMaxBytesAndAreNamedForTheirFirstSeq) {
  auto cfg = strict_config(tmp.path());
  cfg.segment_max_bytes = 4096;
  metrics::registry reg;
  {
    audit_log log(cfg, "gw", reg, logs.fn());
    ASSERT_EQ(log.open(), "");
    // One record per group (each waits for the one before), so every group can rotate.
    for (int i = 0; i < 60; ++i) ASSERT_TRUE(append_and_wait(log, done, i, 260)) << i;
    log.close();
  }
  const auto segs = segment_names(tmp.path(), "gw");
  ASSERT_GE(segs.size(), 4u);
  std::vector<std::string> all;
  for (auto& name : segs) {
    const std::string text = read_file(tmp.path() + "/" + name);
    EXPECT_LE(text.size(), cfg.segment_max_bytes) << name;
    ASSERT_FALSE(text.empty()) << name;
    EXPECT_EQ(text.back(), '\n') << name;
    const auto lines = whole_lines(text);
    auto first = parse_line_head(lines.front());
    ASSERT_TRUE(first) << name;
    EXPECT_EQ(parse_segment_name(name)->first_seq, first->seq) << name;
    all.insert(all.end(), lines.begin(), lines.end());
  }
  ASSERT_EQ(all.size(), 62u);
  expect_chain(all, 1, std::string(genesis_hash));

  auto cp = object_of(read_file(tmp.path() + "/" + checkpoint_name("gw")));
  EXPECT_EQ(cp.at("segment").as_string(), segs.back());
  verify_report report;
  EXPECT_TRUE(trail_verifies(tmp.path(), &report));
  EXPECT_EQ(report.segments, segs.size());
  EXPECT_EQ(report.records, 62u);
}

TEST_F(AuditLogTest, SegmentsRotateAtMaxAge) {
  auto cfg = strict_config(tmp.path());
  cfg.segment_max_age_s = 1;
  metrics::registry reg;
  {
    audit_log log(cfg, "gw", reg, logs.fn());
    ASSERT_EQ(log.open(), "");
    ASSERT_TRUE(append_and_wait(log, done, 1));
    std::this_thread::sleep_for(1100ms);  // let the segment age (not an assertion)
    ASSERT_TRUE(append_and_wait(log, done, 2));
    log.close();
  }
  const auto segs = segment_names(tmp.path(), "gw");
  ASSERT_EQ(segs.size(), 2u);
  EXPECT_EQ(segs[1], segment_name("gw", 3));
  EXPECT_TRUE(trail_verifies(tmp.path()));
}

TEST_F(AuditLogTest, TornTailIsRecordedByTheNextStartAndThenVerifies) {
  {
    metrics::registry reg;
    audit_log log(strict_config(tmp.path()), "gw", reg, logs.fn());
    ASSERT_EQ(log.open(), "");
    for (int i = 0; i < 3; ++i) ASSERT_TRUE(append_and_wait(log, done, i));
    log.close();
  }
  const std::string first_seg = segment_name("gw", 1);
  const auto before = whole_lines(read_file(tmp.path() + "/" + first_seg));
  ASSERT_EQ(before.size(), 5u);
  const std::string torn = "{\"seq\":6,\"prev\":\"0123";  // a crash in the middle of a line
  append_file(tmp.path() + "/" + first_seg, torn);

  auto broken = verify(tmp.path());
  ASSERT_FALSE(broken.ok());
  EXPECT_EQ(broken.problem->kind, "torn");
  EXPECT_EQ(broken.problem->segment, first_seg);

  {
    metrics::registry reg;
    audit_log log(strict_config(tmp.path()), "gw", reg, logs.fn());
    ASSERT_EQ(log.open(), "");
    ASSERT_TRUE(append_and_wait(log, done, 10));
    log.close();
  }
  auto warn = logs.extra_of("warn", "torn");
  ASSERT_TRUE(warn) << "the recovery is logged";
  EXPECT_NE(warn->find(first_seg), std::string::npos) << *warn;

  const auto segs = segment_names(tmp.path(), "gw");
  ASSERT_EQ(segs.size(), 2u);
  EXPECT_EQ(segs[1], segment_name("gw", 6));
  const auto after = whole_lines(read_file(tmp.path() + "/" + segs[1]));
  ASSERT_EQ(after.size(), 3u);
  auto start = object_of(after[0]);
  EXPECT_EQ(start.at("type").as_string(), "start");
  ASSERT_TRUE(start.contains("recovered")) << after[0];
  EXPECT_EQ(start.at("recovered").at("segment").as_string(), first_seg);
  EXPECT_EQ(start.at("recovered").at("torn_bytes").to_number<std::uint64_t>(), torn.size());
  auto h = parse_line_head(after[0]);
  ASSERT_TRUE(h);
  EXPECT_EQ(h->seq, 6u);
  EXPECT_EQ(h->prev, sha256_hex(before.back()));  // the chain skips the torn bytes

  verify_report report;
  EXPECT_TRUE(trail_verifies(tmp.path(), &report));
  ASSERT_EQ(report.notes.size(), 1u);
  EXPECT_NE(report.notes[0].find(first_seg), std::string::npos) << report.notes[0];
  EXPECT_NE(report.notes[0].find("torn"), std::string::npos) << report.notes[0];
  EXPECT_EQ(report.records, 8u);
}

TEST_F(AuditLogTest, EmptyNewestSegmentIsReused) {
  // A start that died after creating its segment and before writing a record.
  {
    metrics::registry reg;
    audit_log log(strict_config(tmp.path()), "gw", reg, logs.fn());
    ASSERT_EQ(log.open(), "");
    log.close();  // start, stop
  }
  append_file(tmp.path() + "/" + segment_name("gw", 3), "");
  ASSERT_TRUE(fs::exists(tmp.path() + "/" + segment_name("gw", 3)));
  {
    metrics::registry reg;
    audit_log log(strict_config(tmp.path()), "gw", reg, logs.fn());
    ASSERT_EQ(log.open(), "");
    ASSERT_TRUE(append_and_wait(log, done, 1));
    log.close();
  }
  EXPECT_EQ(segment_names(tmp.path(), "gw"), (std::vector<std::string>{segment_name("gw", 1), segment_name("gw", 3)}));
  EXPECT_EQ(whole_lines(read_file(tmp.path() + "/" + segment_name("gw", 3))).size(), 3u);
  EXPECT_TRUE(trail_verifies(tmp.path()));
}

TEST_F(AuditLogTest, TornTailBehindAnEmptyNewestSegmentIsStillRecorded) {
  // Two crashes in a row: the first mid-line, the second after its new segment was created and
  // before its start record. The third start must still account for the torn bytes.
  {
    metrics::registry reg;
    audit_log log(strict_config(tmp.path()), "gw", reg, logs.fn());
    ASSERT_EQ(log.open(), "");
    ASSERT_TRUE(append_and_wait(log, done, 1));
    log.close();  // seq 1..3
  }
  append_file(tmp.path() + "/" + segment_name("gw", 1), "{\"seq\":4,\"pr");
  append_file(tmp.path() + "/" + segment_name("gw", 4), "");
  {
    metrics::registry reg;
    audit_log log(strict_config(tmp.path()), "gw", reg, logs.fn());
    ASSERT_EQ(log.open(), "");
    ASSERT_TRUE(append_and_wait(log, done, 2));
    log.close();
  }
  EXPECT_TRUE(trail_verifies(tmp.path()));
}

TEST_F(AuditLogTest, NewestSegmentHoldingOnlyATornLineDoesNotBlockTheNextStart) {
  // A crash in the middle of the first line of a new segment (a start record or the first group
  // after a rotation) leaves a segment without one whole line, named for the next seq.
  {
    metrics::registry reg;
    audit_log log(strict_config(tmp.path()), "gw", reg, logs.fn());
    ASSERT_EQ(log.open(), "");
    ASSERT_TRUE(append_and_wait(log, done, 1));
    log.close();  // seq 1..3
  }
  append_file(tmp.path() + "/" + segment_name("gw", 4), "{\"seq\":4,\"prev\":\"ab");
  {
    metrics::registry reg;
    audit_log log(strict_config(tmp.path()), "gw", reg, logs.fn());
    ASSERT_EQ(log.open(), "") << "the gateway could not start after a crash mid-write";
    ASSERT_TRUE(append_and_wait(log, done, 2));
    log.close();
  }
  EXPECT_TRUE(trail_verifies(tmp.path()));
}

TEST_F(AuditLogTest, OpenRefusesATrailWhoseLastLineIsNotARecord) {
  {
    metrics::registry reg;
    audit_log log(strict_config(tmp.path()), "gw", reg, logs.fn());
    ASSERT_EQ(log.open(), "");
    log.close();
  }
  append_file(tmp.path() + "/" + segment_name("gw", 1), "not an audit record\n");
  metrics::registry reg;
  audit_log log(strict_config(tmp.path()), "gw", reg, logs.fn());
  const std::string err = log.open();
  EXPECT_NE(err.find("does not start with seq and prev"), std::string::npos) << err;
  EXPECT_EQ(segment_names(tmp.path(), "gw").size(), 1u);  // nothing new was started
}

TEST_F(AuditLogTest, OpenReportsADirectoryItCannotCreate) {
  append_file(tmp.path() + "/file", "x");
  metrics::registry reg;
  audit_log log(strict_config(tmp.path() + "/file/audit"), "gw", reg, logs.fn());
  const std::string err = log.open();
  EXPECT_EQ(err.rfind("audit.dir: cannot create '" + tmp.path() + "/file/audit'", 0), 0u) << err;
  log.close();  // harmless without a writer thread
}

/// The writer after open() and two records, plus the size of its segment at that point.
struct failing_setup {
  temp_dir tmp;
  log_sink logs;
  completions done;
  metrics::registry reg;
  std::string seg;
  std::uintmax_t size_before = 0;
  /// A strict writer holding at most `max_pending_bytes`, opened, with record 1 written; `seg`
  /// and `size_before` describe its segment then.
  std::unique_ptr<audit_log> writer(std::uint64_t max_pending_bytes) {
    seg = tmp.path() + "/" + segment_name("gw", 1);
    auto cfg = strict_config(tmp.path());
    cfg.max_pending_bytes = max_pending_bytes;
    auto log = std::make_unique<audit_log>(cfg, "gw", reg, logs.fn());
    if (!log->open().empty() || !append_and_wait(*log, done, 1, 200)) return nullptr;
    size_before = fs::file_size(seg);
    return log;
  }
};

TEST(AuditLogWriteFailureTest, WriteFailureRollsBackReportsDegradedAndWritesHeldRecordsLate) {
  failing_setup s;
  s.seg = s.tmp.path() + "/" + segment_name("gw", 1);
  audit_log log(strict_config(s.tmp.path()), "gw", s.reg, s.logs.fn());
  ASSERT_EQ(log.open(), "");
  ASSERT_TRUE(append_and_wait(log, s.done, 1, 200));
  ASSERT_TRUE(append_and_wait(log, s.done, 2, 200));
  s.size_before = fs::file_size(s.seg);
  {
    // Restored when this scope ends, however it ends, before the writer closes.
    file_size_limit limit(s.size_before + 64);
    ASSERT_TRUE(limit.ok()) << "cannot lower RLIMIT_FSIZE";

    log.append(call(3, 400), s.done.make(3));  // larger than the 64 bytes left: EFBIG
    ASSERT_TRUE(s.done.wait_for_id(3));
    EXPECT_EQ(s.done.result(3), std::optional<bool>(false));
    // Checked at once: the next retry comes no sooner than 250 ms later.
    EXPECT_EQ(fs::file_size(s.seg), s.size_before) << "the failed group is cut back to the last whole record";
    const std::string text = read_file(s.seg);
    ASSERT_FALSE(text.empty());
    EXPECT_EQ(text.back(), '\n');
    auto mid = verify(s.tmp.path());
    EXPECT_TRUE(mid.ok()) << mid.problem->kind << ": " << mid.problem->message;
    EXPECT_EQ(mid.records, 3u);

    EXPECT_FALSE(log.healthy());
    EXPECT_TRUE(exposes(s.reg, "tollgate_audit_degraded 1")) << s.reg.expose();
    EXPECT_FALSE(exposes(s.reg, "tollgate_audit_write_errors_total 0")) << s.reg.expose();
    EXPECT_TRUE(s.logs.wait_for("error", "audit: writes fail"));
    EXPECT_NE(s.logs.extra_of("error", "audit: writes fail")->find("File too large"), std::string::npos);

    // Queued behind a held record: fails too, and keeps its place.
    log.append(call(4, 10), s.done.make(4));
    ASSERT_TRUE(s.done.wait_for_id(4));
    EXPECT_EQ(s.done.result(4), std::optional<bool>(false));
    EXPECT_FALSE(log.healthy());

    limit.lift();
    const auto lifted = std::chrono::steady_clock::now();
    ASSERT_TRUE(s.logs.wait_for("info", "writing works again", 2s)) << "held records were not retried after the limit lifted";
    EXPECT_LT(std::chrono::steady_clock::now() - lifted, 1500ms);
  }
  EXPECT_TRUE(log.healthy());
  EXPECT_TRUE(exposes(s.reg, "tollgate_audit_degraded 0")) << s.reg.expose();
  ASSERT_TRUE(append_and_wait(log, s.done, 5));
  log.close();

  const auto lines = trail_lines(s.tmp.path(), "gw");
  ASSERT_EQ(lines.size(), 7u);  // start, 1, 2, 3 (late), 4 (late), 5, stop
  expect_chain(lines, 1, std::string(genesis_hash));
  const int expected_i[] = {1, 2, 3, 4, 5};
  for (std::size_t n = 1; n <= 5; ++n) {
    auto o = object_of(lines[n]);
    EXPECT_EQ(o.at("i").to_number<int>(), expected_i[n - 1]);
    const bool late = n == 3 || n == 4;
    EXPECT_EQ(o.contains("late"), late) << lines[n];
    if (late) {
      // Right after seq and prev, before the record's own fields.
      const std::size_t head = ("{\"seq\":" + std::to_string(n + 1) + ",\"prev\":\"").size() + 64 + 2;
      // And withheld: waited on by a fail_closed writer, whose caller was cut.
      constexpr std::string_view marked = "\"late\":true,\"withheld\":true,\"type\":\"call\"";
      EXPECT_EQ(lines[n].compare(head, marked.size(), marked), 0) << lines[n];
    }
  }
  EXPECT_TRUE(exposes(s.reg, "tollgate_audit_records_total{result=\"late\"} 2")) << s.reg.expose();
  EXPECT_TRUE(exposes(s.reg, "tollgate_audit_records_total{result=\"written\"} 5")) << s.reg.expose();
  EXPECT_TRUE(exposes(s.reg, "tollgate_audit_records_total{result=\"dropped\"} 0")) << s.reg.expose();
  EXPECT_TRUE(trail_verifies(s.tmp.path()));
}

TEST(AuditLogWriteFailureTest, RecordsBeyondMaxPendingBytesAreDroppedAndCounted) {
  failing_setup s;
  auto writer = s.writer(1000);
  ASSERT_TRUE(writer);
  audit_log& log = *writer;
  {
    file_size_limit limit(s.size_before + 64);
    ASSERT_TRUE(limit.ok()) << "cannot lower RLIMIT_FSIZE";
    // Each body is a little over 400 bytes: two fit in 1000 bytes, the next two do not.
    for (int i = 2; i <= 5; ++i) {
      log.append(call(i, 400), s.done.make(i));
      ASSERT_TRUE(s.done.wait_for_id(i));
      EXPECT_EQ(s.done.result(i), std::optional<bool>(false)) << i;
    }
    limit.lift();
    ASSERT_TRUE(s.logs.wait_for("info", "writing works again", 2s));
  }
  // Counted after the failed group's completions run, so read once writing works again.
  EXPECT_TRUE(exposes(s.reg, "tollgate_audit_records_total{result=\"dropped\"} 2")) << s.reg.expose();
  log.close();
  const auto lines = trail_lines(s.tmp.path(), "gw");
  ASSERT_EQ(lines.size(), 6u);  // start, 1, 2 (late), 3 (late), the loss of 4 and 5, stop
  expect_chain(lines, 1, std::string(genesis_hash));
  EXPECT_EQ(object_of(lines[2]).at("i").to_number<int>(), 2);
  EXPECT_EQ(object_of(lines[3]).at("i").to_number<int>(), 3);
  EXPECT_TRUE(object_of(lines[3]).contains("late"));
  // The chain itself records how many records were lost.
  EXPECT_EQ(object_of(lines[4]).at("type").as_string(), "dropped");
  EXPECT_EQ(object_of(lines[4]).at("count").to_number<int>(), 2);
  EXPECT_TRUE(exposes(s.reg, "tollgate_audit_records_total{result=\"late\"} 2")) << s.reg.expose();
  EXPECT_TRUE(trail_verifies(s.tmp.path()));
}

TEST(AuditLogWriteFailureTest, AWriterThatHeldNothingComesBackOnceWritingWorksAndRecordsTheLoss) {
  // max_pending_bytes 0: every record of a failed group is dropped, none held. Writing works
  // again: the writer must turn healthy (fail_closed answers 503 while it is not) and the chain
  // must say how many were lost, though nothing held is left to retry.
  failing_setup s;
  auto writer = s.writer(0);
  ASSERT_TRUE(writer);
  audit_log& log = *writer;
  {
    file_size_limit limit(s.size_before + 64);
    ASSERT_TRUE(limit.ok()) << "cannot lower RLIMIT_FSIZE";
    log.append(call(2, 400), s.done.make(2));
    ASSERT_TRUE(s.done.wait_for_id(2));
    EXPECT_EQ(s.done.result(2), std::optional<bool>(false));
    EXPECT_FALSE(log.healthy());
    limit.lift();
    ASSERT_TRUE(s.logs.wait_for("info", "writing works again", 2s)) << "the writer stayed unhealthy with nothing held";
  }
  EXPECT_TRUE(log.healthy());
  EXPECT_TRUE(exposes(s.reg, "tollgate_audit_degraded 0")) << s.reg.expose();
  ASSERT_TRUE(append_and_wait(log, s.done, 3));
  log.close();
  const auto lines = trail_lines(s.tmp.path(), "gw");
  ASSERT_EQ(lines.size(), 5u);  // start, 1, the loss of 2, 3, stop
  expect_chain(lines, 1, std::string(genesis_hash));
  EXPECT_EQ(object_of(lines[2]).at("type").as_string(), "dropped");
  EXPECT_EQ(object_of(lines[2]).at("count").to_number<int>(), 1);
  EXPECT_EQ(object_of(lines[3]).at("i").to_number<int>(), 3);
  EXPECT_TRUE(trail_verifies(s.tmp.path()));
}

namespace {
std::atomic<bool> sync_fails{false};
int failing_sync(int fd) {
  if (sync_fails.load()) {
    errno = EIO;
    return -1;
  }
  return ::fdatasync(fd);
}
}  // namespace

TEST_F(AuditLogTest, ABatchedSyncThatFailsTurnsTheWriterUnhealthyAndTheChainSaysSo) {
  // Batched mode completes a record once written; its sync comes later. A sync that fails (EIO:
  // the kernel may have dropped the pages) must not pass unseen: the writer turns unhealthy
  // (fail_closed then refuses calls), and once writing and syncing work again the chain says
  // how many records may be lost.
  const auto cfg = batched_config(tmp.path(), 20);
  metrics::registry reg;
  audit_log log(cfg, "gw", reg, logs.fn());
  log.set_sync_for_test(&failing_sync);
  ASSERT_EQ(log.open(), "");
  ASSERT_TRUE(append_and_wait(log, done, 1));
  sync_fails = true;
  log.append(call(2), done.make(2));
  log.append(call(3), done.make(3));
  ASSERT_TRUE(logs.wait_for("error", "audit: writes fail", 2s)) << "a failed sync went unseen";
  EXPECT_FALSE(log.healthy());
  EXPECT_NE(logs.extra_of("error", "audit: writes fail")->find("fdatasync"), std::string::npos);
  EXPECT_TRUE(exposes(reg, "tollgate_audit_degraded 1")) << reg.expose();
  EXPECT_FALSE(exposes(reg, "tollgate_audit_write_errors_total 0")) << reg.expose();
  sync_fails = false;
  ASSERT_TRUE(logs.wait_for("info", "writing works again", 2s));
  EXPECT_TRUE(log.healthy());
  ASSERT_TRUE(append_and_wait(log, done, 4));
  log.close();
  const auto lines = trail_lines(tmp.path(), "gw");
  expect_chain(lines, 1, std::string(genesis_hash));
  std::uint64_t lost = 0;
  for (auto& l : lines)
    if (type_of(l) == "sync_failed") {
      lost += object_of(l).at("count").to_number<std::uint64_t>();
      EXPECT_NE(std::string(object_of(l).at("error").as_string()).find("Input/output error"), std::string::npos) << l;
    }
  EXPECT_GE(lost, 2u) << "records 2 and 3 were written and their sync failed";
  EXPECT_TRUE(trail_verifies(tmp.path()));
}

TEST_F(AuditLogTest, RecordsThatAreNotObjectsWithFieldsStillMakeValidLines) {
  metrics::registry reg;
  audit_log log(strict_config(tmp.path()), "gw", reg, logs.fn());
  ASSERT_EQ(log.open(), "");
  log.append("");
  log.append("{}");
  log.append("not json");
  log.close();
  const auto lines = trail_lines(tmp.path(), "gw");
  ASSERT_EQ(lines.size(), 5u);  // start, the three, stop
  EXPECT_EQ(object_of(lines[1]).size(), 3u);  // seq, prev, type
  EXPECT_EQ(object_of(lines[1]).at("type").as_string(), "invalid_record");
  EXPECT_EQ(object_of(lines[2]).size(), 2u);  // seq and prev only
  EXPECT_EQ(object_of(lines[3]).at("type").as_string(), "invalid_record");
  EXPECT_TRUE(trail_verifies(tmp.path()));
}

TEST_F(AuditLogTest, FailedRotationRecoversOnceANewSegmentCanBeCreated) {
  // Creating the next segment fails (here: its name is taken; in production: no space, no
  // inodes, too many open files). Once creation works again, writing must resume.
  auto cfg = strict_config(tmp.path());
  cfg.segment_max_bytes = 4096;
  metrics::registry reg;
  audit_log log(cfg, "gw", reg, logs.fn());
  ASSERT_EQ(log.open(), "");
  ASSERT_TRUE(append_and_wait(log, done, 0, 200));
  std::vector<std::string> blockers;
  for (std::uint64_t seq = 2; seq < 200; ++seq) {
    blockers.push_back(tmp.path() + "/" + segment_name("gw", seq));
    append_file(blockers.back(), "");
  }
  int failed_at = -1;
  for (int i = 1; i < 100 && failed_at < 0; ++i)
    if (!append_and_wait(log, done, i, 200)) failed_at = i;
  ASSERT_GT(failed_at, 0) << "no rotation was attempted";
  EXPECT_FALSE(log.healthy());
  for (auto& b : blockers) fs::remove(b);
  ASSERT_TRUE(logs.wait_for("info", "writing works again", 3s)) << "the writer stays degraded after a failed rotation";
  EXPECT_TRUE(log.healthy());
  ASSERT_TRUE(append_and_wait(log, done, 1000));
  log.close();
  verify_report report;
  EXPECT_TRUE(trail_verifies(tmp.path(), &report));
  const auto lines = trail_lines(tmp.path(), "gw");
  ASSERT_GE(lines.size(), 3u);
  EXPECT_EQ(object_of(lines[lines.size() - 2]).at("i").to_number<int>(), 1000);
}

}  // namespace
}  // namespace tollgate::audit
