// SPDX-License-Identifier: Apache-2.0
// The audit reader: list_segments, for_each_line across read-chunk boundaries, and verify on a
// trail the writer generated, then tampered with one way at a time. Temp directories, no sockets.
#include "gateway/audit/audit_reader.hpp"

#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <future>
#include <iterator>
#include <string>
#include <vector>

#include "gateway/audit/audit_log.hpp"
#include "gateway/audit/chain.hpp"
#include "tests/unit/audit/audit_test_util.hpp"

namespace tollgate::audit {
namespace {

using namespace test_util;

namespace fs = std::filesystem;
using namespace std::chrono_literals;





void write_lines(const std::string& path, const std::vector<std::string>& lines) {
  std::string text;
  for (auto& l : lines) text += l + "\n";
  write_file(path, text);
}

std::uint64_t seq_of(const std::string& line) {
  auto h = parse_line_head(line);
  if (!h) ADD_FAILURE() << "not a record: " << line;
  return h ? h->seq : 0;
}

std::string describe(const verify_report& r) {
  if (r.ok()) return "ok";
  const auto& p = *r.problem;
  return p.kind + " at " + p.segment + ":" + std::to_string(p.line) + " seq " + std::to_string(p.seq) + ": " + p.message;
}

// ---------------------------------------------------------------------------------------------
// list_segments and for_each_line

TEST(AuditReaderTest, ListSegmentsSortsByInstanceThenSeqAndSkipsOtherFiles) {
  temp_dir tmp;
  ASSERT_FALSE(tmp.path().empty());
  const std::string d = tmp.path();
  write_file(d + "/" + segment_name("b", 2), "123");
  write_file(d + "/" + segment_name("a", 10), "12345");
  write_file(d + "/" + segment_name("a", 9), "1");
  write_file(d + "/" + checkpoint_name("a"), "{}\n");
  write_file(d + "/" + checkpoint_name("a") + ".tmp", "{}\n");
  write_file(d + "/notes.txt", "hello");
  fs::create_directory(d + "/" + segment_name("a", 1));  // named like a segment, but a directory

  std::string error;
  auto segs = list_segments(d, error);
  EXPECT_EQ(error, "");
  ASSERT_EQ(segs.size(), 3u);
  EXPECT_EQ(segs[0].name, segment_name("a", 9));
  EXPECT_EQ(segs[0].instance, "a");
  EXPECT_EQ(segs[0].first_seq, 9u);
  EXPECT_EQ(segs[0].size, 1u);
  EXPECT_EQ(segs[0].path, d + "/" + segment_name("a", 9));
  EXPECT_EQ(segs[1].name, segment_name("a", 10));
  EXPECT_EQ(segs[1].size, 5u);
  EXPECT_EQ(segs[2].name, segment_name("b", 2));
  EXPECT_EQ(segs[2].instance, "b");
  EXPECT_EQ(segs[2].first_seq, 2u);
}

TEST(AuditReaderTest, ListSegmentsReportsAMissingDirectory) {
  temp_dir tmp;
  std::string error;
  auto segs = list_segments(tmp.path() + "/absent", error);
  EXPECT_TRUE(segs.empty());
  EXPECT_NE(error.find(tmp.path() + "/absent"), std::string::npos) << error;
}

segment_file file_segment(const std::string& path) {
  return segment_file{path, fs::path(path).filename().string(), "t", 1, fs::file_size(path)};
}

TEST(AuditReaderTest, LinesAcrossReadChunksAreDeliveredWhole) {
  temp_dir tmp;
  constexpr std::size_t mib = 1 << 20;  // the reader's chunk
  std::vector<std::string> lines;
  lines.push_back(std::string(mib - 10, 'a'));      // ends 9 bytes before the first boundary
  lines.push_back(std::string(100, 'b'));           // straddles it
  lines.push_back("");                              // an empty line
  lines.push_back(std::string(mib * 5 / 2, 'c'));   // spans whole chunks
  std::size_t used = 0;
  for (auto& l : lines) used += l.size() + 1;
  lines.push_back(std::string(4 * mib - 1 - used, 'd'));  // its newline is the chunk's last byte
  lines.push_back("after the boundary");
  const std::string torn = "{\"seq\":9,";
  std::string text;
  for (auto& l : lines) text += l + "\n";
  ASSERT_EQ(text.size() - lines.back().size() - 1, 4 * mib);
  text += torn;
  const std::string path = tmp.path() + "/t.00000000000000000001.jsonl";
  write_file(path, text);

  std::vector<std::string> got;
  std::vector<std::uint64_t> numbers;
  std::uint64_t progress = 0;
  std::string error;
  auto rest = for_each_line(
      file_segment(path),
      [&](std::string_view line, std::uint64_t n) {
        got.emplace_back(line);
        numbers.push_back(n);
        return true;
      },
      [&](std::uint64_t n) { progress += n; }, error);
  ASSERT_TRUE(rest) << error;
  EXPECT_EQ(*rest, torn.size());
  ASSERT_EQ(got.size(), lines.size());
  for (std::size_t i = 0; i < lines.size(); ++i) {
    EXPECT_EQ(got[i].size(), lines[i].size()) << "line " << i + 1;
    EXPECT_TRUE(got[i] == lines[i]) << "line " << i + 1;
    EXPECT_EQ(numbers[i], i + 1);
  }
  EXPECT_EQ(progress, text.size());
}

TEST(AuditReaderTest, ForEachLineStopsWhenTheCallbackReturnsFalse) {
  temp_dir tmp;
  const std::string path = tmp.path() + "/t.00000000000000000001.jsonl";
  write_file(path, "one\ntwo\nthree\ntorn");
  std::vector<std::string> got;
  std::string error;
  auto rest = for_each_line(
      file_segment(path),
      [&](std::string_view line, std::uint64_t) {
        got.emplace_back(line);
        return got.size() < 2;
      },
      {}, error);
  ASSERT_TRUE(rest) << error;
  EXPECT_EQ(*rest, 0u);
  EXPECT_EQ(got, (std::vector<std::string>{"one", "two"}));
}

TEST(AuditReaderTest, ForEachLineOnEmptyAndNewlineLessFiles) {
  temp_dir tmp;
  std::string error;
  int calls = 0;
  auto count = [&](std::string_view, std::uint64_t) { return ++calls, true; };

  const std::string empty = tmp.path() + "/e.00000000000000000001.jsonl";
  write_file(empty, "");
  auto r = for_each_line(file_segment(empty), count, {}, error);
  ASSERT_TRUE(r) << error;
  EXPECT_EQ(*r, 0u);

  const std::string partial = tmp.path() + "/p.00000000000000000001.jsonl";
  write_file(partial, "no newline at all");
  r = for_each_line(file_segment(partial), count, {}, error);
  ASSERT_TRUE(r) << error;
  EXPECT_EQ(*r, 17u);
  EXPECT_EQ(calls, 0);
}

TEST(AuditReaderTest, ForEachLineReportsAnUnreadableFile) {
  temp_dir tmp;
  segment_file seg{tmp.path() + "/gone.00000000000000000001.jsonl", "gone.00000000000000000001.jsonl", "gone", 1, 0};
  std::string error;
  auto r = for_each_line(seg, [](std::string_view, std::uint64_t) { return true; }, {}, error);
  EXPECT_FALSE(r);
  EXPECT_NE(error.find(seg.path), std::string::npos) << error;
}

// ---------------------------------------------------------------------------------------------
// verify on a trail the writer generated, tampered with one way per test.

class AuditVerifyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(tmp_.path().empty());
    config::audit_config cfg;
    cfg.dir = tmp_.path();
    cfg.segment_max_bytes = 4096;
    metrics::registry reg;
    audit_log log(cfg, "gw", reg, [](std::string_view, std::string_view, std::string_view) {});
    ASSERT_EQ(log.open(), "");
    // One record at a time, so that each group may rotate: several segments of ~12 records.
    for (int i = 0; i < 40; ++i) {
      std::promise<bool> p;
      auto f = p.get_future();
      log.append("{\"type\":\"call\",\"i\":" + std::to_string(i) + ",\"pad\":\"" + std::string(200, 'x') + "\"}",
                 [&p](bool ok) { p.set_value(ok); });
      ASSERT_EQ(f.wait_for(5s), std::future_status::ready) << "record " << i;
      ASSERT_TRUE(f.get()) << "record " << i;
    }
    log.close();
    std::string error;
    for (auto& s : list_segments(dir(), error)) segs_.push_back(s.name);
    ASSERT_GE(segs_.size(), 4u);
    auto r = verify(dir());
    ASSERT_TRUE(r.ok()) << describe(r);
    ASSERT_EQ(r.records, 42u);
    total_records_ = r.records;
  }

  const std::string& dir() const { return tmp_.path(); }
  std::string seg_path(std::size_t i) const { return dir() + "/" + segs_.at(i); }
  std::vector<std::string> lines(std::size_t i) const { return whole_lines(read_file(seg_path(i))); }

  temp_dir tmp_;
  std::vector<std::string> segs_;
  std::uint64_t total_records_ = 0;
};

TEST_F(AuditVerifyTest, UntouchedTrailVerifiesWithCounts) {
  std::uint64_t progress = 0, bytes = 0;
  for (std::size_t i = 0; i < segs_.size(); ++i) bytes += fs::file_size(seg_path(i));
  auto r = verify(dir(), [&](std::uint64_t n) { progress += n; });
  EXPECT_TRUE(r.ok()) << describe(r);
  EXPECT_EQ(r.segments, segs_.size());
  EXPECT_EQ(r.bytes, bytes);
  EXPECT_EQ(progress, bytes);
  EXPECT_EQ(r.instances, std::vector<std::string>{"gw"});
  EXPECT_TRUE(r.notes.empty());
}

TEST_F(AuditVerifyTest, EditedMiddleRecordIsNamed) {
  auto l = lines(1);
  const std::uint64_t seq = seq_of(l[2]);
  const auto x = l[2].find("xxx");
  ASSERT_NE(x, std::string::npos);
  l[2][x] = 'y';  // one byte inside the record, after seq and prev
  write_lines(seg_path(1), l);
  auto r = verify(dir());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.problem->kind, "edited") << describe(r);
  EXPECT_EQ(r.problem->seq, seq);
  EXPECT_EQ(r.problem->segment, segs_[1]);
  EXPECT_EQ(r.problem->line, 3u);
}

TEST_F(AuditVerifyTest, DeletedMiddleLineIsReported) {
  auto l = lines(1);
  const std::uint64_t seq = seq_of(l[2]);
  l.erase(l.begin() + 2);
  write_lines(seg_path(1), l);
  auto r = verify(dir());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.problem->kind, "deleted") << describe(r);
  EXPECT_EQ(r.problem->segment, segs_[1]);
  EXPECT_EQ(r.problem->line, 3u);         // where the record after it now is
  EXPECT_EQ(r.problem->seq, seq + 1);
  EXPECT_NE(r.problem->message.find(std::to_string(seq)), std::string::npos) << r.problem->message;
}

TEST_F(AuditVerifyTest, DeletedFirstLineOfALaterSegmentIsReportedAsDeleted) {
  auto l = lines(2);
  const std::uint64_t seq = seq_of(l[0]);
  l.erase(l.begin());
  write_lines(seg_path(2), l);
  auto r = verify(dir());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.problem->kind, "deleted") << describe(r);
  EXPECT_EQ(r.problem->segment, segs_[2]);
  EXPECT_NE(r.problem->message.find(std::to_string(seq)), std::string::npos) << r.problem->message;
}

TEST_F(AuditVerifyTest, SwappedAdjacentLinesAreReordered) {
  auto l = lines(1);
  std::swap(l[2], l[3]);
  write_lines(seg_path(1), l);
  auto r = verify(dir());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.problem->kind, "reordered") << describe(r);
  EXPECT_EQ(r.problem->segment, segs_[1]);
}

TEST_F(AuditVerifyTest, RemovedLastLineIsTruncationAgainstTheCheckpoint) {
  auto l = lines(segs_.size() - 1);
  const std::uint64_t last = seq_of(l.back());
  EXPECT_EQ(last, total_records_);
  l.pop_back();
  write_lines(seg_path(segs_.size() - 1), l);
  auto r = verify(dir());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.problem->kind, "truncated") << describe(r);
  EXPECT_EQ(r.problem->seq, last);
  EXPECT_EQ(r.problem->segment, segs_.back());
}

TEST_F(AuditVerifyTest, EditedLastLineIsCaughtByTheCheckpoint) {
  auto l = lines(segs_.size() - 1);
  const auto t = l.back().find("\"time_ms\":");
  ASSERT_NE(t, std::string::npos) << l.back();
  char& digit = l.back()[t + 11];
  digit = digit == '9' ? '8' : char(digit + 1);
  write_lines(seg_path(segs_.size() - 1), l);
  auto r = verify(dir());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.problem->kind, "edited") << describe(r);
  EXPECT_EQ(r.problem->seq, total_records_);
}

TEST_F(AuditVerifyTest, DeletedMiddleSegmentIsReported) {
  const std::uint64_t missing_from = seq_of(lines(1).front());
  fs::remove(seg_path(1));
  auto r = verify(dir());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.problem->kind, "deleted") << describe(r);
  EXPECT_EQ(r.problem->segment, segs_[2]);
  EXPECT_EQ(r.problem->line, 1u);
  EXPECT_NE(r.problem->message.find(std::to_string(missing_from)), std::string::npos) << r.problem->message;
}

TEST_F(AuditVerifyTest, NonRecordLineIsMalformed) {
  auto l = lines(1);
  l.insert(l.begin() + 2, "this is not an audit record");
  write_lines(seg_path(1), l);
  auto r = verify(dir());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.problem->kind, "malformed") << describe(r);
  EXPECT_EQ(r.problem->segment, segs_[1]);
  EXPECT_EQ(r.problem->line, 3u);
}

TEST_F(AuditVerifyTest, MissingFirstSegmentWithoutRetentionIsDeleted) {
  const std::uint64_t first = seq_of(lines(1).front());
  fs::remove(seg_path(0));
  auto r = verify(dir());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.problem->kind, "deleted") << describe(r);
  EXPECT_EQ(r.problem->segment, segs_[1]);
  EXPECT_EQ(r.problem->seq, first);
}

TEST_F(AuditVerifyTest, ChangedSeqWithAnIntactPrevIsEdited) {
  auto l = lines(1);
  const std::uint64_t seq = seq_of(l[2]);
  const std::string from = "{\"seq\":" + std::to_string(seq) + ",";
  const std::string to = "{\"seq\":" + std::to_string(seq + 100) + ",";
  ASSERT_EQ(l[2].rfind(from, 0), 0u);
  l[2].replace(0, from.size(), to);
  write_lines(seg_path(1), l);
  auto r = verify(dir());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.problem->kind, "edited") << describe(r);
  EXPECT_EQ(r.problem->seq, seq + 100);
  EXPECT_EQ(r.problem->line, 3u);
}

TEST_F(AuditVerifyTest, FirstRecordMustChainFromGenesis) {
  auto l = lines(0);
  const std::string zeros(genesis_hash);
  const auto at = l[0].find(zeros);
  ASSERT_NE(at, std::string::npos);
  l[0].replace(at, zeros.size(), std::string(64, 'f'));
  write_lines(seg_path(0), l);
  auto r = verify(dir());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.problem->kind, "edited") << describe(r);
  EXPECT_EQ(r.problem->seq, 1u);
  EXPECT_EQ(r.problem->line, 1u);
}

TEST_F(AuditVerifyTest, SegmentNamedForAnotherSeqIsEdited) {
  const std::uint64_t first = seq_of(lines(1).front());
  fs::rename(seg_path(1), dir() + "/" + segment_name("gw", first + 1));
  auto r = verify(dir());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.problem->kind, "edited") << describe(r);
  EXPECT_EQ(r.problem->segment, segment_name("gw", first + 1));
}

TEST_F(AuditVerifyTest, TornTailInAnEarlierSegmentIsUnaccountedTruncation) {
  std::ofstream(seg_path(1), std::ios::binary | std::ios::app) << "{\"seq\":99,\"prev\"";
  auto r = verify(dir());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.problem->kind, "truncated") << describe(r);
  EXPECT_EQ(r.problem->segment, segs_[1]);
}

TEST_F(AuditVerifyTest, AnIncompleteLastLineOfARunningInstanceIsARecordBeingWritten) {
  // verify run beside a live gateway: the writer holds <instance>.lock while it writes, and the
  // last line may be half written. That is no torn tail; once the writer is gone, it is.
  std::ofstream(seg_path(segs_.size() - 1), std::ios::binary | std::ios::app) << "{\"seq\":43,\"pr";
  {
    const int fd = ::open((dir() + "/gw.lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::flock(fd, LOCK_EX | LOCK_NB), 0);
    auto live = verify(dir());
    EXPECT_TRUE(live.ok()) << describe(live);
    bool noted = false;
    for (auto& n : live.notes) noted |= n.find("being written") != std::string::npos;
    EXPECT_TRUE(noted) << describe(live);
    ::close(fd);
  }
  auto r = verify(dir());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.problem->kind, "torn") << describe(r);
}

TEST_F(AuditVerifyTest, TornTailAtTheEndIsTorn) {
  std::ofstream(seg_path(segs_.size() - 1), std::ios::binary | std::ios::app) << "{\"seq\":43,\"pr";
  auto r = verify(dir());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.problem->kind, "torn") << describe(r);
  EXPECT_EQ(r.problem->segment, segs_.back());
  EXPECT_EQ(r.problem->seq, total_records_ + 1);
}

TEST_F(AuditVerifyTest, WithoutACheckpointTheTrailVerifiesWithANote) {
  fs::remove(dir() + "/" + checkpoint_name("gw"));
  auto r = verify(dir());
  EXPECT_TRUE(r.ok()) << describe(r);
  ASSERT_EQ(r.notes.size(), 1u);
  EXPECT_NE(r.notes[0].find("no checkpoint"), std::string::npos) << r.notes[0];
}

TEST_F(AuditVerifyTest, ACheckpointThatIsNotOneIsAProblemNotAMissingCheckpoint) {
  // The writer replaces its checkpoint atomically: one that cannot be read was damaged or
  // replaced. Taken for "no checkpoint", it let the last records be cut with a clean OK; a seq of
  // 0 skipped the check silently, and a seq of -1 threw out of verify.
  const std::string cp_path = dir() + "/" + checkpoint_name("gw");
  const std::string good = read_file(cp_path);
  // The last segment's last line removed: truncation only the checkpoint can show.
  const std::string last = seg_path(segs_.size() - 1);
  auto ls = lines(segs_.size() - 1);
  ls.pop_back();
  std::string cut;
  for (auto& l : ls) cut += l + "\n";
  write_file(last, cut);
  const auto hash_at = good.find("\"hash\":\"");
  ASSERT_NE(hash_at, std::string::npos);
  const std::string hash = good.substr(hash_at + 8, 64);
  for (const std::string& bad : {std::string("garbage\n"), std::string("{\"seq\":0,\"hash\":\"") + hash + "\"}\n",
                                 std::string("{\"seq\":-1,\"hash\":\"") + hash + "\"}\n",
                                 std::string("{\"seq\":31.5,\"hash\":\"") + hash + "\"}\n", std::string("{\"seq\":3}\n")}) {
    write_file(cp_path, bad);
    auto r = verify(dir());
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.problem->kind, "checkpoint") << bad << describe(r);
  }
  fs::remove(cp_path);
  fs::create_directory(cp_path);
  auto r = verify(dir());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.problem->kind, "checkpoint") << describe(r);
}

TEST_F(AuditVerifyTest, CheckpointWithAnotherHashIsEdited) {
  const std::string cp_path = dir() + "/" + checkpoint_name("gw");
  std::string cp = read_file(cp_path);
  const auto h = cp.find("\"hash\":\"");
  ASSERT_NE(h, std::string::npos) << cp;
  char& c = cp[h + 8];
  c = c == 'a' ? 'b' : 'a';
  write_file(cp_path, cp);
  auto r = verify(dir());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.problem->kind, "edited") << describe(r);
  EXPECT_EQ(r.problem->seq, total_records_);
}

// ---------------------------------------------------------------------------------------------
// verify on hand-built chains (shapes the writer only makes after hours, such as retention).

/// Writes `records` (JSON objects after seq and prev) as chained lines, split into segments that
/// start at the given seqs. Returns the lines.
std::vector<std::string> write_chain(const std::string& dir, const std::string& instance,
                                     const std::vector<std::string>& records, const std::vector<std::uint64_t>& starts) {
  std::vector<std::string> lines;
  std::string prev(genesis_hash);
  for (std::size_t i = 0; i < records.size(); ++i) {
    lines.push_back("{\"seq\":" + std::to_string(i + 1) + ",\"prev\":\"" + prev + "\"," + records[i].substr(1));
    prev = sha256_hex(lines.back());
  }
  for (std::size_t s = 0; s < starts.size(); ++s) {
    const std::uint64_t from = starts[s], to = s + 1 < starts.size() ? starts[s + 1] : records.size() + 1;
    std::vector<std::string> part(lines.begin() + std::ptrdiff_t(from - 1), lines.begin() + std::ptrdiff_t(to - 1));
    write_lines(dir + "/" + segment_name(instance, from), part);
  }
  return lines;
}

TEST(AuditVerifyChainTest, RetentionRecordExplainsAMissingStart) {
  temp_dir tmp;
  const std::vector<std::string> records = {
      R"({"type":"start"})", R"({"type":"call"})", R"({"type":"stop"})",
      R"({"type":"start"})", R"({"type":"retention","removed":["gw.00000000000000000001.jsonl"]})", R"({"type":"call"})",
      R"({"type":"stop"})"};
  write_chain(tmp.path(), "gw", records, {1, 4});
  fs::remove(tmp.path() + "/" + segment_name("gw", 1));
  auto r = verify(tmp.path());
  EXPECT_TRUE(r.ok()) << describe(r);
  EXPECT_EQ(r.records, 4u);
  bool noted = false;
  for (auto& n : r.notes) noted = noted || n.find("retention") != std::string::npos;
  EXPECT_TRUE(noted);
}

TEST(AuditVerifyChainTest, WithoutTheRetentionRecordTheSameGapIsDeleted) {
  temp_dir tmp;
  const std::vector<std::string> records = {R"({"type":"start"})", R"({"type":"call"})", R"({"type":"stop"})",
                                            R"({"type":"start"})", R"({"type":"call"})", R"({"type":"call"})"};
  write_chain(tmp.path(), "gw", records, {1, 4});
  fs::remove(tmp.path() + "/" + segment_name("gw", 1));
  auto r = verify(tmp.path());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.problem->kind, "deleted") << describe(r);
  EXPECT_EQ(r.problem->seq, 4u);
}

TEST(AuditVerifyChainTest, RetentionExcusesOnlyTheSegmentsItRemoved) {
  // Retention removed segment 1 and said the trail is kept from seq 4. Segment 4 deleted too (by
  // someone else): the trail now starts at 7, which that retention record does not explain.
  const std::vector<std::string> records = {
      R"({"type":"start"})", R"({"type":"call"})", R"({"type":"stop"})",
      R"({"type":"start"})", R"({"type":"call"})", R"({"type":"stop"})",
      R"({"type":"start"})", R"({"type":"retention","removed":["gw.00000000000000000001.jsonl"],"kept_from":4})",
      R"({"type":"call"})", R"({"type":"stop"})"};
  {
    temp_dir tmp;
    write_chain(tmp.path(), "gw", records, {1, 4, 7});
    fs::remove(tmp.path() + "/" + segment_name("gw", 1));
    auto r = verify(tmp.path());
    EXPECT_TRUE(r.ok()) << describe(r);
    EXPECT_EQ(r.records, 7u);
  }
  temp_dir tmp;
  write_chain(tmp.path(), "gw", records, {1, 4, 7});
  fs::remove(tmp.path() + "/" + segment_name("gw", 1));
  fs::remove(tmp.path() + "/" + segment_name("gw", 4));
  auto r = verify(tmp.path());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.problem->kind, "deleted") << describe(r);
  EXPECT_NE(r.problem->message.find("records 4..6 are missing"), std::string::npos) << r.problem->message;
}

TEST(AuditVerifyChainTest, RetentionTextInsideARecordIsNoRetentionRecord) {
  // A captured prompt can hold the bytes "type":"retention": only a record of that type counts.
  temp_dir tmp;
  const std::vector<std::string> records = {
      R"({"type":"start"})", R"({"type":"call"})", R"({"type":"stop"})",
      R"({"type":"start"})", R"({"type":"call","prompt":"{\"type\":\"retention\"}"})", R"({"type":"call"})"};
  write_chain(tmp.path(), "gw", records, {1, 4});
  fs::remove(tmp.path() + "/" + segment_name("gw", 1));
  auto r = verify(tmp.path());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.problem->kind, "deleted") << describe(r);
}

TEST(AuditVerifyChainTest, ACheckpointWhoseSegmentsAreAllGoneIsADeletedTrail) {
  temp_dir tmp;
  auto lines = write_chain(tmp.path(), "gw", {R"({"type":"start"})", R"({"type":"call"})"}, {1});
  write_file(tmp.path() + "/" + checkpoint_name("gw"),
             "{\"instance\":\"gw\",\"seq\":2,\"hash\":\"" + sha256_hex(lines[1]) + "\"}\n");
  ASSERT_TRUE(verify(tmp.path()).ok());
  fs::remove(tmp.path() + "/" + segment_name("gw", 1));
  auto r = verify(tmp.path());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.problem->kind, "deleted") << describe(r);
  EXPECT_NE(r.problem->message.find("has a checkpoint but no segment"), std::string::npos) << r.problem->message;
}

TEST(AuditVerifyChainTest, StaleCheckpointMatchingAnEarlierRecordIsFine) {
  // A running writer checkpoints every checkpoint_s: the trail may be ahead of it.
  temp_dir tmp;
  auto lines = write_chain(tmp.path(), "gw", {R"({"type":"start"})", R"({"type":"call"})", R"({"type":"call"})"}, {1});
  write_file(tmp.path() + "/" + checkpoint_name("gw"),
             "{\"instance\":\"gw\",\"seq\":2,\"hash\":\"" + sha256_hex(lines[1]) + "\"}\n");
  auto r = verify(tmp.path());
  EXPECT_TRUE(r.ok()) << describe(r);
  EXPECT_EQ(r.records, 3u);
}

TEST(AuditVerifyChainTest, ACutEndRemovedWithTheCheckpointIsAProblem) {
  // The last segment and the checkpoint deleted: what is left ends mid-run (no stop record).
  // A writer checkpoints with its start record, so no checkpoint there means a cut end.
  temp_dir tmp;
  write_chain(tmp.path(), "gw", {R"({"type":"start"})", R"({"type":"call"})", R"({"type":"call"})"}, {1});
  auto r = verify(tmp.path());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.problem->kind, "checkpoint") << describe(r);
  EXPECT_NE(r.problem->message.find("does not end with a stop record"), std::string::npos) << r.problem->message;
  // A record that only holds the bytes of a stop record does not count as one.
  temp_dir other;
  write_chain(other.path(), "gw", {R"({"type":"start"})", R"({"type":"call","meta":{"type":"stop"}})"}, {1});
  auto spelled = verify(other.path());
  ASSERT_FALSE(spelled.ok());
  EXPECT_EQ(spelled.problem->kind, "checkpoint") << describe(spelled);
}

TEST(AuditVerifyChainTest, EveryInstanceIsCheckedAndAProblemInTheSecondIsFound) {
  temp_dir tmp;
  write_chain(tmp.path(), "a", {R"({"type":"start"})", R"({"type":"stop"})"}, {1});
  auto b = write_chain(tmp.path(), "b", {R"({"type":"start"})", R"({"type":"call"})", R"({"type":"stop"})"}, {1});
  auto ok = verify(tmp.path());
  EXPECT_TRUE(ok.ok()) << describe(ok);
  EXPECT_EQ(ok.instances, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(ok.records, 5u);

  b[0].replace(b[0].find("start"), 5, "begin");
  write_lines(tmp.path() + "/" + segment_name("b", 1), b);
  auto r = verify(tmp.path());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.problem->kind, "edited") << describe(r);
  EXPECT_EQ(r.problem->segment, segment_name("b", 1));
  EXPECT_EQ(r.problem->seq, 1u);
}

TEST(AuditVerifyChainTest, EmptyDirectoryVerifiesAndAMissingOneDoesNot) {
  temp_dir tmp;
  auto empty = verify(tmp.path());
  EXPECT_TRUE(empty.ok()) << describe(empty);
  EXPECT_EQ(empty.records, 0u);
  auto missing = verify(tmp.path() + "/absent");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.problem->kind, "unreadable");
}

}  // namespace
}  // namespace tollgate::audit
