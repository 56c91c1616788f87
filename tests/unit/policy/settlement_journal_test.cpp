// SPDX-License-Identifier: Apache-2.0
// The settlement journal: settlements the store could not take survive the process (real files in
// a temporary directory; no sockets).
#include "policy/settlement_journal.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "tests/unit/policy/file_size_limit.hpp"

namespace tollgate::policy {
namespace {

namespace fs = std::filesystem;

class SettlementJournalTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir = fs::temp_directory_path() / ("tollgate-journal-" + std::to_string(::getpid()) + "-" +
                                       ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir);
    fs::create_directories(dir);
    path = (dir / "settlements.journal").string();
  }
  void TearDown() override { fs::remove_all(dir); }
  std::string read() const {
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
  fs::path dir;
  std::string path;
};

/// A settlement with two scopes (a team with limits and a budget, a key with a total budget).
settlement sample(std::string lease, std::int64_t cost) {
  settlement s;
  s.adm.lease = std::move(lease);
  s.adm.lease_ms = 300'000;
  s.adm.tokens = 120;
  s.adm.cost_nano = 9'000;
  config::budget_config team_budget;
  team_budget.limit_nano = 5'000'000'000'000'000;
  team_budget.period = config::budget_period::daily;
  team_budget.soft = 0.8;
  config::budget_config key_budget;
  key_budget.limit_nano = 7;
  key_budget.period = config::budget_period::total;
  key_budget.soft = 0;
  s.adm.scopes = {scope_spec{"t", "search", {600, 100'000, 20}, team_budget},
                  scope_spec{"k:abc123", "search", {5, 0, 1}, key_budget}};
  s.periods = {"d20419", "all"};
  s.admitted_at_ms = 1'795'564'799'999;
  s.tokens = 77;
  s.cost_nano = cost;
  return s;
}

std::vector<const settlement*> ptrs(const std::vector<settlement>& v) {
  std::vector<const settlement*> out;
  for (auto& s : v) out.push_back(&s);
  return out;
}

TEST_F(SettlementJournalTest, WhatIsNotDoneComesBackWhole) {
  std::vector<settlement> s{sample("a", 1), sample("b", 2), sample("c", 3)};
  s[2].charge_only = true;  // (a call admitted during an outage: its cost only)
  {
    settlement_journal j;
    EXPECT_TRUE(j.open(path).open.empty());
    std::string error;
    ASSERT_TRUE(j.add(ptrs(s), error)) << error;
    const std::vector<std::string_view> done{"b"};
    ASSERT_TRUE(j.done(done, error)) << error;
    EXPECT_EQ(j.open_count(), 2u);
  }  // the process ends: the file stays
  settlement_journal again;
  const auto opened = again.open(path);
  EXPECT_EQ(opened.skipped, 0u);
  ASSERT_EQ(opened.open.size(), 2u);
  EXPECT_EQ(settlement_to_json(opened.open[0]), settlement_to_json(s[0]));
  EXPECT_EQ(settlement_to_json(opened.open[1]), settlement_to_json(s[2]));
  // Every field survives, the budget's 5e15 nano-USD exactly.
  const settlement& c = opened.open[1];
  EXPECT_EQ(c.adm.lease, "c");
  EXPECT_TRUE(c.charge_only);
  EXPECT_FALSE(opened.open[0].charge_only);
  EXPECT_EQ(c.cost_nano, 3);
  EXPECT_EQ(c.tokens, 77u);
  EXPECT_EQ(c.adm.cost_nano, 9'000);
  EXPECT_EQ(c.adm.tokens, 120u);
  EXPECT_EQ(c.adm.lease_ms, 300'000u);
  EXPECT_EQ(c.admitted_at_ms, 1'795'564'799'999);
  EXPECT_EQ(c.periods, (std::vector<std::string>{"d20419", "all"}));
  ASSERT_EQ(c.adm.scopes.size(), 2u);
  EXPECT_EQ(c.adm.scopes[0].budget.limit_nano, 5'000'000'000'000'000);
  EXPECT_EQ(c.adm.scopes[0].budget.period, config::budget_period::daily);
  EXPECT_EQ(c.adm.scopes[0].limits.tpm, 100'000u);
  EXPECT_EQ(c.adm.scopes[1].id, "k:abc123");
  EXPECT_EQ(c.adm.scopes[1].budget.period, config::budget_period::total);
  EXPECT_EQ(c.adm.scopes[1].limits.concurrency, 1u);
  // Opening compacted the file to the two still open.
  const std::string text = read();
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 2) << text;
  EXPECT_EQ(text.find("\"done\""), std::string::npos) << text;
}

TEST_F(SettlementJournalTest, OnceNothingIsOpenTheFileIsEmpty) {
  settlement_journal j;
  j.open(path);
  const std::vector<settlement> s{sample("a", 1), sample("b", 2)};
  std::string error;
  ASSERT_TRUE(j.add(ptrs(s), error)) << error;
  EXPECT_GT(fs::file_size(path), 0u);
  const std::vector<std::string_view> first{"a"};
  ASSERT_TRUE(j.done(first, error));
  EXPECT_GT(fs::file_size(path), 0u);
  const std::vector<std::string_view> second{"b"};
  ASSERT_TRUE(j.done(second, error));
  EXPECT_EQ(fs::file_size(path), 0u);
  // And appending starts at the beginning again.
  const std::vector<settlement> t{sample("c", 3)};
  ASSERT_TRUE(j.add(ptrs(t), error));
  EXPECT_EQ(read().find("{\"add\":{\"lease\":\"c\""), 0u) << read();
}

TEST_F(SettlementJournalTest, ATornLastLineAndForeignLinesAreSkippedAndCounted) {
  // A charge-only flag that is not a boolean: which kind of settlement it is is unknown.
  std::string odd_flag = settlement_to_json(sample("odd-flag", 7));
  odd_flag.insert(1, "\"charge_only\":\"yes\",");
  {
    std::ofstream out(path);
    out << "{\"add\":" << settlement_to_json(sample("kept", 5)) << "}\n"
        << "not json at all\n"
        << "{\"add\":{\"lease\":\"no-scopes\"}}\n"
        << "{\"done\":\"never-added\"}\n"
        << "{\"add\":" << odd_flag << "}\n"
        << "{\"add\":" << settlement_to_json(sample("torn", 6)).substr(0, 40);  // a crash mid-write
  }
  settlement_journal j;
  const auto opened = j.open(path);
  EXPECT_EQ(opened.skipped, 4u);
  ASSERT_EQ(opened.open.size(), 1u);
  EXPECT_EQ(opened.open[0].adm.lease, "kept");
  EXPECT_EQ(opened.open[0].cost_nano, 5);
}

TEST_F(SettlementJournalTest, ALeaseAddedAgainComesBackWithItsLastFigures) {
  // An outage charge that took another sum before it was ever sent is journaled again: the
  // last line's figures, in the first one's place, once.
  {
    settlement_journal j;
    ASSERT_TRUE(j.open(path).open.empty());
    std::string error;
    const settlement a = sample("a", 1), b = sample("b", 2), a2 = sample("a", 5);
    const settlement* both[] = {&a, &b};
    const settlement* again[] = {&a2};
    ASSERT_TRUE(j.add(both, error)) << error;
    ASSERT_TRUE(j.add(again, error)) << error;
    EXPECT_EQ(j.open_count(), 2u);
  }
  settlement_journal j;
  const auto opened = j.open(path);
  ASSERT_EQ(opened.open.size(), 2u);
  EXPECT_EQ(opened.open[0].adm.lease, "a");
  EXPECT_EQ(opened.open[0].cost_nano, 5);
  EXPECT_EQ(opened.open[1].adm.lease, "b");
  std::string error;
  const std::vector<std::string_view> done{"a"};
  ASSERT_TRUE(j.done(done, error)) << error;
  EXPECT_EQ(j.open_count(), 1u);
}

TEST_F(SettlementJournalTest, AShortWriteLeavesNoPartOfALineForTheNextToJoin) {
  // A file size limit (as a full disk would) lets only part of the second add's line reach the
  // file. The add fails; the next one, once there is room, must come back at the next start: not
  // glued to that part and skipped with it as one line that does not parse.
  {
    settlement_journal j;
    ASSERT_TRUE(j.open(path).open.empty());
    std::string error;
    const settlement a = sample("a", 1), b = sample("b", 2), c = sample("c", 3);
    const settlement* first[] = {&a};
    ASSERT_TRUE(j.add(first, error)) << error;
    const auto size = fs::file_size(path);
    const settlement* second[] = {&b};
    bool added = true;
    {
      testing::file_size_limit full(size + 40);  // room for part of a line only
      added = j.add(second, error);
    }
    EXPECT_FALSE(added);
    EXPECT_NE(error.find("cannot write"), std::string::npos) << error;
    EXPECT_EQ(fs::file_size(path), size) << "the part of b's line was left in the file";
    const settlement* third[] = {&c};
    ASSERT_TRUE(j.add(third, error)) << error;
    EXPECT_EQ(j.open_count(), 2u);  // a and c: b was not journaled (its caller keeps it in memory)
  }  // the process ends
  settlement_journal j;
  const auto opened = j.open(path);
  EXPECT_EQ(opened.skipped, 0u);
  ASSERT_EQ(opened.open.size(), 2u);
  EXPECT_EQ(opened.open[0].adm.lease, "a");
  EXPECT_EQ(opened.open[1].adm.lease, "c");
}

TEST_F(SettlementJournalTest, ASecondGatewayCannotTakeAJournalInUse) {
  settlement_journal first;
  first.open(path);
  settlement_journal second;
  try {
    second.open(path);
    FAIL() << "opened a journal another one holds";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("another gateway holds it"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
  }
  EXPECT_FALSE(second.enabled());
}

TEST_F(SettlementJournalTest, AFileReplacedWhileItWasBeingLockedIsOpenedAgainByName) {
  // Another gateway's open() renamed its rewrite over the journal after this one opened the old
  // file and before this one took its lock: the old file, unlinked, must not be what is replayed
  // and rewritten over the live one.
  {
    settlement_journal old;
    old.open(path);
    std::string error;
    const std::vector<settlement> s{sample("stale", 1)};
    ASSERT_TRUE(old.add(ptrs(s), error)) << error;
  }
  static std::string fresh_line;
  fresh_line = "{\"add\":" + settlement_to_json(sample("fresh", 2)) + "}\n";
  static int calls;
  calls = 0;
  detail::journal_locked_hook = [](const std::string& p) {
    if (calls++ > 0) return;
    fs::rename(p, p + ".old");
    std::ofstream(p) << fresh_line;
  };
  settlement_journal j;
  const auto opened = j.open(path);
  detail::journal_locked_hook = nullptr;
  EXPECT_EQ(calls, 2) << "opened once more after the file was replaced";
  ASSERT_EQ(opened.open.size(), 1u);
  EXPECT_EQ(opened.open[0].adm.lease, "fresh");
  std::string error;
  const std::vector<settlement> more{sample("more", 3)};
  ASSERT_TRUE(j.add(ptrs(more), error)) << error;
  const std::string text = read();
  EXPECT_NE(text.find("\"fresh\""), std::string::npos) << text;
  EXPECT_NE(text.find("\"more\""), std::string::npos) << "appends go to the file the path names: " << text;
  EXPECT_EQ(text.find("\"stale\""), std::string::npos) << text;
}

TEST_F(SettlementJournalTest, AFileThatOutgrowsItsOpenSettlementsIsRewrittenWithJustThose) {
  // A long outage: one charge takes a new sum every seal (its line written again each time),
  // others come and are done. The file stays near what is open, and replays the last figures.
  std::size_t one_line = 0;
  {
    settlement_journal j;
    j.open(path);
    j.compact_at(8192);
    std::string error;
    const std::vector<settlement> first{sample("a", 1)};
    ASSERT_TRUE(j.add(ptrs(first), error)) << error;
    one_line = j.file_bytes();
    std::size_t largest = 0;
    for (int i = 1; i <= 300; ++i) {
      const std::vector<settlement> again{sample("b", i)};
      ASSERT_TRUE(j.add(ptrs(again), error)) << error;
      if (i % 10 == 0) {
        const std::vector<settlement> passing{sample("c" + std::to_string(i), 5)};
        ASSERT_TRUE(j.add(ptrs(passing), error)) << error;
        const std::vector<std::string_view> gone{passing[0].adm.lease};
        ASSERT_TRUE(j.done(gone, error)) << error;
      }
      largest = std::max(largest, j.file_bytes());
    }
    EXPECT_GT(300 * one_line, 10 * 8192u) << "without rewrites the file would pass the threshold many times over";
    EXPECT_LE(largest, 8192 + 2 * one_line) << "rewritten once past the threshold";
    EXPECT_EQ(j.open_count(), 2u);
    EXPECT_EQ(j.file_bytes(), read().size()) << "appends go to the rewritten file";
  }
  settlement_journal again;
  const auto opened = again.open(path);
  EXPECT_EQ(opened.skipped, 0u);
  ASSERT_EQ(opened.open.size(), 2u);
  EXPECT_EQ(opened.open[0].adm.lease, "a") << "in the order first added";
  EXPECT_EQ(opened.open[0].cost_nano, 1);
  EXPECT_EQ(opened.open[1].adm.lease, "b");
  EXPECT_EQ(opened.open[1].cost_nano, 300) << "the last figures";
  EXPECT_EQ(again.file_bytes(), read().size());
  EXPECT_LT(again.file_bytes(), 3 * one_line) << "two lines";
}

TEST_F(SettlementJournalTest, APathThatCannotBeCreatedIsAClearError) {
  settlement_journal j;
  const std::string bad = (dir / "no-such-dir" / "settlements.journal").string();
  try {
    j.open(bad);
    FAIL() << "opened " << bad;
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("store.settlement_journal: cannot open " + bad), std::string::npos) << e.what();
  }
  EXPECT_FALSE(j.enabled());
  std::string error;
  const std::vector<settlement> s{sample("a", 1)};
  EXPECT_FALSE(j.add(ptrs(s), error)) << "nothing to write to";
}

}  // namespace
}  // namespace tollgate::policy
