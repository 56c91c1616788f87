// SPDX-License-Identifier: Apache-2.0
// parse_time_ms: the times tollgatectl and the admin API take (--from, --to, ?from=, ?to=).
#include "gateway/core/time.hpp"

#include <gtest/gtest.h>

namespace tollgate {
namespace {

TEST(ParseTimeTest, SecondsDatesAndRfc3339TimesWithTheirZone) {
  EXPECT_EQ(parse_time_ms("2026-11-26"), 1'795'651'200'000);
  EXPECT_EQ(parse_time_ms("2026-11-26T08:00:00Z"), 1'795'651'200'000 + 8 * 3'600'000);
  EXPECT_EQ(parse_time_ms("2026-11-26T08:00:00.5+01:00"), 1'795'651'200'000 + 7 * 3'600'000 + 500);
  EXPECT_EQ(parse_time_ms("2024-02-29"), 1'709'164'800'000) << "a leap day";
  EXPECT_EQ(parse_time_ms("2000-02-29"), 951'782'400'000) << "a leap day of a year divisible by 400";
}

TEST(ParseTimeTest, ADayTheMonthDoesNotHaveIsRefusedNotMovedOn) {
  // timegm would read 2026-02-30 as March 2: an export's --to silently two days late.
  for (const char* bad : {"2026-02-29", "2026-02-30", "2026-04-31", "2100-02-29", "2026-06-31T00:00:00Z", "2026-13-01",
                          "2026-00-10", "2026-01-00"})
    EXPECT_EQ(parse_time_ms(bad), std::nullopt) << bad;
}

TEST(ParseTimeTest, ATimeCutShortOrWithABadZoneIsRefused) {
  // Each cut of a full time (the checks read no byte past the text; ASan would say so).
  const std::string full = "2026-11-26T08:00:00+01:00";
  for (std::size_t n = 11; n < full.size(); ++n) {
    const std::string cut = full.substr(0, n);
    if (n == 19) continue;  // "...08:00:00": a time without its zone, refused below
    EXPECT_EQ(parse_time_ms(std::string_view(cut)), std::nullopt) << cut;
  }
  for (const char* bad : {"2026-11-26T08:00:00", "2026-11-26T08:00:00+24:00", "2026-11-26T08:00:00+01:60",
                          "2026-11-26T24:00:00Z", "2026-11-26T08:00:00.Z", "2026-11-26x"})
    EXPECT_EQ(parse_time_ms(bad), std::nullopt) << bad;
}

}  // namespace
}  // namespace tollgate
