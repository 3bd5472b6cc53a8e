#include "base/time.h"

#include <gtest/gtest.h>

namespace skiff {
namespace {

using namespace std::chrono_literals;

TEST(Time, Rfc3339RoundTrips) {
  EXPECT_EQ(rfc3339(0), "1970-01-01T00:00:00Z");
  EXPECT_EQ(parse_rfc3339("2026-11-27T13:12:00Z"),
            parse_rfc3339(rfc3339(parse_rfc3339("2026-11-27T13:12:00Z"))));
  EXPECT_EQ(parse_rfc3339("2026-11-27T13:12:00.5Z"), parse_rfc3339("2026-11-27T13:12:00Z"));
  EXPECT_EQ(parse_rfc3339("2026-11-27T14:12:00+01:00"), parse_rfc3339("2026-11-27T13:12:00Z"));
  EXPECT_EQ(parse_rfc3339("yesterday"), -1);
}

TEST(Time, MicroTimeHasSixFractionDigits) {
  auto t = std::chrono::system_clock::time_point(std::chrono::microseconds(1'700'000'000'000'042));
  EXPECT_EQ(rfc3339_micro(t), "2023-11-14T22:13:20.000042Z");
}

TEST(Time, ParsesGoDurations) {
  EXPECT_EQ(parse_duration("500ms").value(), 500ms);
  EXPECT_EQ(parse_duration("40s").value(), 40s);
  EXPECT_EQ(parse_duration("5m").value(), 5min);
  EXPECT_EQ(parse_duration("1h30m").value(), 90min);
  EXPECT_EQ(parse_duration("1.5s").value(), 1500ms);
  EXPECT_EQ(parse_duration("0").value(), 0ms);
  for (const char* bad : {"", "5", "s", "5x", "-1s", "1s2"}) {
    EXPECT_FALSE(parse_duration(bad).is_ok()) << bad;
  }
}

TEST(Time, FakeClockAdvancesOnlyWhenTold) {
  FakeClock clock;
  auto t0 = clock.now();
  clock.advance(3s);
  EXPECT_EQ(clock.now() - t0, 3s);
  EXPECT_EQ(
      clock.now_seconds(),
      std::chrono::duration_cast<std::chrono::seconds>(clock.now().time_since_epoch()).count());
}

}  // namespace
}  // namespace skiff
