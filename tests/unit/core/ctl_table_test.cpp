// SPDX-License-Identifier: Apache-2.0
// tollgatectl's tables: what the gateway returns is printed safely and aligned by display width.
#include "gateway/admin/ctl_table.hpp"

#include <gtest/gtest.h>

#include <boost/json/parse.hpp>

#include <sstream>

namespace tollgate::ctl {
namespace {

TEST(CtlTableTest, ControlCharactersArePrintedEscapedNeverRaw) {
  // A model name or error message holding an escape sequence recoloured the admin's terminal; a
  // newline split a table's row.
  EXPECT_EQ(printable("mock-\x1b[31mred"), "mock-\\x1b[31mred");
  EXPECT_EQ(printable("a\nb\tc\x7f"), "a\\nb\\tc\\x7f");
  EXPECT_EQ(printable("c1:\xc2\x9b" "2J"), "c1:\\u009b2J");  // U+009B, the 8-bit CSI
  EXPECT_EQ(printable("caf\xc3\xa9 \xe5\x90\x8d"), "caf\xc3\xa9 \xe5\x90\x8d");  // other UTF-8 kept
  std::ostringstream os;
  print_table(os, boost::json::parse(R"([{"id":"a","models":"x\ny\u001b[2J"},{"id":"b","models":"z"}])").as_array());
  const std::string out = os.str();
  EXPECT_EQ(out.find('\x1b'), std::string::npos) << out;
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 3) << "header and two rows:\n" << out;
}

TEST(CtlTableTest, WideTextIsMeasuredInTerminalColumns) {
  EXPECT_EQ(text_width("abc"), 3u);
  EXPECT_EQ(text_width("\xe5\x90\x8d\xe5\x89\x8d"), 4u);  // two CJK ideographs: two columns each
  EXPECT_EQ(text_width("e\xcc\x81"), 1u);                  // e + a combining acute accent
  // Columns line up after a wide name: the next column starts at the same display column.
  std::ostringstream os;
  print_table(os, boost::json::parse(R"([{"name":"wide 名前テスト","team":"t1"},{"name":"narrow","team":"t2"}])").as_array());
  std::istringstream in(os.str());
  std::string line;
  std::vector<std::size_t> team_column;
  while (std::getline(in, line)) {
    const auto at = line.find(line.find("TEAM") != std::string::npos ? "TEAM" : "t");
    team_column.push_back(text_width(line.substr(0, at)));
  }
  ASSERT_EQ(team_column.size(), 3u) << os.str();
  EXPECT_EQ(team_column[0], team_column[1]) << os.str();
  EXPECT_EQ(team_column[0], team_column[2]) << os.str();
}

TEST(CtlTableTest, BudgetFiguresBeyondSixtyFourBitsAreNotWrapped) {
  const auto o = boost::json::parse(R"({"spent_nano": 18446744073709551615, "limit_nano": 5000000000,
    "reserved_usd": 1e300, "cap_usd": 12.5, "held_nano": -7, "big_usd": -9.3e9})").as_object();
  // An unsigned figure past 2^63 is no amount, not a negative one; neither are dollars past it.
  EXPECT_EQ(nano_of(o, "spent"), std::nullopt);
  EXPECT_EQ(nano_of(o, "reserved"), std::nullopt);
  EXPECT_EQ(nano_of(o, "big"), std::nullopt);
  EXPECT_EQ(nano_of(o, "limit"), 5'000'000'000);
  EXPECT_EQ(nano_of(o, "cap"), 12'500'000'000);
  EXPECT_EQ(nano_of(o, "held"), -7);
  EXPECT_EQ(nano_of(o, "absent"), std::nullopt);
  constexpr auto max = std::numeric_limits<std::int64_t>::max(), min = std::numeric_limits<std::int64_t>::min();
  EXPECT_EQ(remaining_nano(10, 3, 2), 5);
  EXPECT_EQ(remaining_nano(10, 30, 2), -22) << "an overrun shows as a negative remainder";
  // A spend near the store's cap and a reservation as large: held at the bottom, not wrapped to a
  // huge positive remainder; a negative spend held at the top.
  EXPECT_EQ(remaining_nano(9'000'000'000'000'000, 4'000'000'000'000'000'000, 9'000'000'000'000'000'000), min);
  EXPECT_EQ(remaining_nano(max, -5, 0), max);
  EXPECT_EQ(format_usd_nano(min), "-$9223372036.854775808");
}

}  // namespace
}  // namespace tollgate::ctl
