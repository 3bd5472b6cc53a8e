#include "api/cron_schedule.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include "base/time.h"
#include "api/time_zone.h"

namespace skiff::api {
namespace {

int64_t at(const char* text) {
  int64_t t = parse_rfc3339(text);
  EXPECT_GE(t, 0) << text;
  return t;
}

std::string next_of(const CronSchedule& s, const char* from) {
  auto n = s.next(at(from));
  return n ? rfc3339(*n) : "never";
}

std::string prev_of(const CronSchedule& s, const char* from) {
  auto p = s.prev(at(from));
  return p ? rfc3339(*p) : "never";
}

CronSchedule parse_ok(const std::string& spec,
                      std::shared_ptr<const TimeZone> zone = TimeZone::utc()) {
  auto r = CronSchedule::parse(spec, std::move(zone));
  EXPECT_TRUE(r.is_ok()) << spec << ": " << r.status().to_string();
  return std::move(r).value();
}

std::string parse_error(const std::string& spec) {
  auto r = CronSchedule::parse(spec);
  EXPECT_FALSE(r.is_ok()) << spec << " parsed";
  if (r.is_ok()) return "";
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << spec;
  return r.status().message();
}

bool have_zoneinfo(const char* name) {
  return access((std::string("/usr/share/zoneinfo/") + name).c_str(), R_OK) == 0;
}

TEST(CronSchedule, RejectsInvalidSpecsWithClearErrors) {
  EXPECT_EQ(parse_error(""), "empty schedule");
  EXPECT_NE(parse_error("* * * *").find("expected exactly 5 fields"), std::string::npos);
  EXPECT_NE(parse_error("* * * * * *").find("found 6"), std::string::npos);
  EXPECT_EQ(parse_error("60 * * * *"), "minute field \"60\": end of range (60) above maximum (59)");
  EXPECT_EQ(parse_error("* 24 * * *"), "hour field \"24\": end of range (24) above maximum (23)");
  EXPECT_EQ(parse_error("* * 0 * *"),
            "day-of-month field \"0\": beginning of range (0) below minimum (1)");
  EXPECT_EQ(parse_error("* * 32 * *"),
            "day-of-month field \"32\": end of range (32) above maximum (31)");
  EXPECT_EQ(parse_error("* * * 13 *"), "month field \"13\": end of range (13) above maximum (12)");
  EXPECT_EQ(parse_error("* * * * 7"),
            "day-of-week field \"7\": end of range (7) above maximum (6)");
  EXPECT_EQ(parse_error("5-1 * * * *"),
            "minute field \"5-1\": beginning of range (5) beyond end of range (1)");
  EXPECT_EQ(parse_error("*/0 * * * *"), "minute field \"*/0\": step must be a positive number");
  EXPECT_EQ(parse_error("*/x * * * *"), "minute field \"*/x\": step \"x\" is not a number");
  EXPECT_EQ(parse_error("a * * * *"), "minute field \"a\": \"a\" is not a number");
  EXPECT_EQ(parse_error("* * * FOO *"), "month field \"FOO\": \"FOO\" is not a number or a name");
  EXPECT_EQ(parse_error("1-2-3 * * * *"), "minute field \"1-2-3\": too many hyphens");
  EXPECT_EQ(parse_error("*/2/3 * * * *"), "minute field \"*/2/3\": too many slashes");
  EXPECT_EQ(parse_error("1,,2 * * * *"), "minute field \"1,,2\": empty list element");
  EXPECT_EQ(parse_error("-1 * * * *"), "minute field \"-1\": \"\" is not a number");
  EXPECT_NE(parse_error("@every 1h").find("@every is not supported"), std::string::npos);
  EXPECT_NE(parse_error("@fortnightly").find("unrecognized descriptor"), std::string::npos);
  EXPECT_NE(parse_error("TZ=Nowhere/Atlantis 0 * * * *").find("provided bad location"),
            std::string::npos);
  EXPECT_NE(parse_error("CRON_TZ=UTC").find("needs a schedule"), std::string::npos);
}

TEST(CronSchedule, StepsRangesListsAndNames) {
  auto s = parse_ok("*/15 * * * *");
  EXPECT_EQ(next_of(s, "2024-05-01T10:07:30Z"), "2024-05-01T10:15:00Z");
  // Strictly after: a time that matches is not its own next time.
  EXPECT_EQ(next_of(s, "2024-05-01T10:15:00Z"), "2024-05-01T10:30:00Z");
  EXPECT_EQ(next_of(s, "2024-05-01T23:50:00Z"), "2024-05-02T00:00:00Z");

  auto range_step = parse_ok("10-30/10 8-9 * * *");
  EXPECT_EQ(next_of(range_step, "2024-05-01T08:30:00Z"), "2024-05-01T09:10:00Z");
  EXPECT_EQ(next_of(range_step, "2024-05-01T09:30:00Z"), "2024-05-02T08:10:00Z");

  // "a/n" means from a to the maximum every n.
  auto from_step = parse_ok("50/5 * * * *");
  EXPECT_EQ(next_of(from_step, "2024-05-01T10:51:00Z"), "2024-05-01T10:55:00Z");
  EXPECT_EQ(next_of(from_step, "2024-05-01T10:55:00Z"), "2024-05-01T11:50:00Z");

  auto names = parse_ok("0 6 * jan,JUL mon-Fri");
  EXPECT_EQ(next_of(names, "2024-06-15T00:00:00Z"), "2024-07-01T06:00:00Z");  // a Monday
  EXPECT_EQ(next_of(names, "2024-07-05T06:00:00Z"), "2024-07-08T06:00:00Z");  // Fri -> Mon
  EXPECT_EQ(next_of(names, "2024-07-31T06:00:00Z"), "2025-01-01T06:00:00Z");  // Wednesday

  auto list = parse_ok("0 0,12 1,15 * *");
  EXPECT_EQ(next_of(list, "2024-05-01T00:00:00Z"), "2024-05-01T12:00:00Z");
  EXPECT_EQ(next_of(list, "2024-05-01T12:00:00Z"), "2024-05-15T00:00:00Z");

  auto quarterly = parse_ok("0 0 1 */3 *");
  EXPECT_EQ(next_of(quarterly, "2024-01-01T00:00:00Z"), "2024-04-01T00:00:00Z");
  EXPECT_EQ(next_of(quarterly, "2024-10-01T00:00:00Z"), "2025-01-01T00:00:00Z");
}

TEST(CronSchedule, Descriptors) {
  EXPECT_EQ(next_of(parse_ok("@hourly"), "2024-05-01T10:30:00Z"), "2024-05-01T11:00:00Z");
  EXPECT_EQ(next_of(parse_ok("@daily"), "2024-05-01T10:30:00Z"), "2024-05-02T00:00:00Z");
  EXPECT_EQ(next_of(parse_ok("@midnight"), "2024-05-01T10:30:00Z"), "2024-05-02T00:00:00Z");
  // 2024-05-05 is a Sunday.
  EXPECT_EQ(next_of(parse_ok("@weekly"), "2024-05-01T10:30:00Z"), "2024-05-05T00:00:00Z");
  EXPECT_EQ(next_of(parse_ok("@monthly"), "2024-05-01T10:30:00Z"), "2024-06-01T00:00:00Z");
  EXPECT_EQ(next_of(parse_ok("@yearly"), "2024-05-01T10:30:00Z"), "2025-01-01T00:00:00Z");
  EXPECT_EQ(next_of(parse_ok("@annually"), "2024-05-01T10:30:00Z"), "2025-01-01T00:00:00Z");
  EXPECT_EQ(next_of(parse_ok("  @hourly  "), "2024-05-01T10:30:00Z"), "2024-05-01T11:00:00Z");
}

TEST(CronSchedule, MonthEndsAndLeapYears) {
  auto last_day = parse_ok("0 0 31 * *");
  EXPECT_EQ(next_of(last_day, "2024-01-31T00:00:00Z"), "2024-03-31T00:00:00Z");  // no Feb 31
  EXPECT_EQ(next_of(last_day, "2024-04-01T00:00:00Z"), "2024-05-31T00:00:00Z");  // no Apr 31
  EXPECT_EQ(next_of(last_day, "2024-12-31T00:00:00Z"), "2025-01-31T00:00:00Z");

  auto thirtieth = parse_ok("0 0 30 * *");
  EXPECT_EQ(next_of(thirtieth, "2023-01-30T00:00:00Z"), "2023-03-30T00:00:00Z");

  auto late = parse_ok("59 23 * * *");
  EXPECT_EQ(next_of(late, "2024-12-31T23:59:00Z"), "2025-01-01T23:59:00Z");
  EXPECT_EQ(next_of(late, "2024-02-28T23:59:00Z"), "2024-02-29T23:59:00Z");
  EXPECT_EQ(next_of(late, "2023-02-28T23:59:00Z"), "2023-03-01T23:59:00Z");

  auto leap_day = parse_ok("0 0 29 2 *");
  EXPECT_EQ(next_of(leap_day, "2023-03-01T00:00:00Z"), "2024-02-29T00:00:00Z");
  EXPECT_EQ(next_of(leap_day, "2024-02-29T00:00:00Z"), "2028-02-29T00:00:00Z");
  // 2100 is not a leap year: the next after 2096 is 2104, beyond the five-year search.
  EXPECT_EQ(next_of(leap_day, "2096-03-01T00:00:00Z"), "never");
  EXPECT_EQ(prev_of(leap_day, "2025-06-01T00:00:00Z"), "2024-02-29T00:00:00Z");

  // A day that never exists: no next time.
  EXPECT_EQ(next_of(parse_ok("0 0 30 2 *"), "2024-01-01T00:00:00Z"), "never");
  EXPECT_EQ(prev_of(parse_ok("0 0 31 4 *"), "2024-01-01T00:00:00Z"), "never");
}

TEST(CronSchedule, DayOfMonthOrDayOfWeekWhenBothRestricted) {
  // October 2024: the 13th is a Sunday; Fridays are the 4th, 11th, 18th, 25th.
  auto either = parse_ok("0 0 13 * 5");
  EXPECT_EQ(next_of(either, "2024-10-05T00:00:00Z"), "2024-10-11T00:00:00Z");
  EXPECT_EQ(next_of(either, "2024-10-11T00:00:00Z"), "2024-10-13T00:00:00Z");
  EXPECT_EQ(next_of(either, "2024-10-13T00:00:00Z"), "2024-10-18T00:00:00Z");

  // One side unrestricted: both must match (here: only Mondays).
  auto mondays = parse_ok("0 0 * * 1");
  EXPECT_EQ(next_of(mondays, "2024-10-01T00:00:00Z"), "2024-10-07T00:00:00Z");
  auto question = parse_ok("0 0 ? * MON");
  EXPECT_EQ(next_of(question, "2024-10-01T00:00:00Z"), "2024-10-07T00:00:00Z");
  auto star_step_one = parse_ok("0 0 */1 * 1");
  EXPECT_EQ(next_of(star_step_one, "2024-10-01T00:00:00Z"), "2024-10-07T00:00:00Z");
  auto dom_only = parse_ok("0 0 13 * *");
  EXPECT_EQ(next_of(dom_only, "2024-10-01T00:00:00Z"), "2024-10-13T00:00:00Z");
  auto dom_and_star_dow = parse_ok("0 0 13 * ?");
  EXPECT_EQ(next_of(dom_and_star_dow, "2024-10-01T00:00:00Z"), "2024-10-13T00:00:00Z");

  // A star with a step above one restricts the field: odd days OR Mondays.
  auto odd_or_monday = parse_ok("0 0 */2 * 1");
  EXPECT_EQ(next_of(odd_or_monday, "2024-10-01T00:00:00Z"), "2024-10-03T00:00:00Z");
  EXPECT_EQ(next_of(odd_or_monday, "2024-10-27T00:00:00Z"), "2024-10-28T00:00:00Z");  // Monday
  EXPECT_EQ(next_of(odd_or_monday, "2024-10-28T00:00:00Z"), "2024-10-29T00:00:00Z");  // odd
}

TEST(CronSchedule, PreviousTimes) {
  auto s = parse_ok("*/15 * * * *");
  EXPECT_EQ(prev_of(s, "2024-05-01T10:14:59Z"), "2024-05-01T10:00:00Z");
  EXPECT_EQ(prev_of(s, "2024-05-01T10:15:00Z"), "2024-05-01T10:15:00Z");
  EXPECT_EQ(prev_of(s, "2024-05-01T00:05:00Z"), "2024-05-01T00:00:00Z");
  EXPECT_EQ(prev_of(parse_ok("0 0 31 * *"), "2024-03-30T00:00:00Z"), "2024-01-31T00:00:00Z");
  EXPECT_EQ(prev_of(parse_ok("30 12 * * 1"), "2024-10-07T12:29:00Z"), "2024-09-30T12:30:00Z");
  EXPECT_EQ(prev_of(parse_ok("@yearly"), "2024-05-01T00:00:00Z"), "2024-01-01T00:00:00Z");
}

TEST(CronSchedule, FixedOffsetZones) {
  auto india = TimeZone::fixed(5 * 3600 + 1800, "IST");
  auto s = parse_ok("0 9 * * *", india);
  EXPECT_EQ(next_of(s, "2024-05-01T00:00:00Z"), "2024-05-01T03:30:00Z");
  EXPECT_EQ(next_of(s, "2024-05-01T03:30:00Z"), "2024-05-02T03:30:00Z");
  EXPECT_EQ(prev_of(s, "2024-05-01T03:29:00Z"), "2024-04-30T03:30:00Z");
  auto west = parse_ok("0 0 1 * *", TimeZone::fixed(-8 * 3600, "PST"));
  EXPECT_EQ(next_of(west, "2024-05-01T00:00:00Z"), "2024-05-01T08:00:00Z");
}

TEST(TimeZone, UtcAndInvalidNames) {
  for (const char* utc : {"", "UTC", "Etc/UTC"}) {
    auto z = TimeZone::load(utc);
    ASSERT_TRUE(z.is_ok()) << utc;
    EXPECT_EQ(z.value()->offset_at(at("2024-07-01T00:00:00Z")), 0);
  }
  for (const char* bad :
       {"Local", "../../etc/passwd", "/etc/passwd", "Europe/../../x", "a b", "Nowhere/Atlantis"}) {
    auto z = TimeZone::load(bad);
    EXPECT_FALSE(z.is_ok()) << bad;
  }
  EXPECT_EQ(TimeZone::load("Nowhere/Atlantis").status().message(),
            "unknown time zone Nowhere/Atlantis");
  EXPECT_FALSE(TimeZone::from_tzif("x", "not a zone file").is_ok());
  EXPECT_FALSE(TimeZone::from_tzif("x", std::string("TZif2") + std::string(39, '\0')).is_ok());
}

TEST(TimeZone, PosixRules) {
  auto us = TimeZone::parse_posix_rule("EST5EDT,M3.2.0,M11.1.0");
  ASSERT_TRUE(us.is_ok());
  EXPECT_EQ(us.value().std_offset, -5 * 3600);
  EXPECT_EQ(us.value().dst_offset, -4 * 3600);
  EXPECT_EQ(us.value().start.month, 3);
  EXPECT_EQ(us.value().start.week, 2);
  EXPECT_EQ(us.value().end.time, 7200);
  auto tehran = TimeZone::parse_posix_rule("<+0330>-3:30");
  ASSERT_TRUE(tehran.is_ok());
  EXPECT_EQ(tehran.value().std_offset, 3 * 3600 + 1800);
  EXPECT_FALSE(tehran.value().has_dst);
  auto berlin = TimeZone::parse_posix_rule("CET-1CEST,M3.5.0,M10.5.0/3");
  ASSERT_TRUE(berlin.is_ok());
  EXPECT_EQ(berlin.value().end.time, 3 * 3600);
  auto julian = TimeZone::parse_posix_rule("XXX3YYY,J60/-1,300/26");
  ASSERT_TRUE(julian.is_ok());
  EXPECT_EQ(julian.value().start.time, -3600);
  EXPECT_EQ(julian.value().end.time, 26 * 3600);
  for (const char* bad : {"", "E5", "EST", "EST5EDT,M13.1.0,M11.1.0", "EST5EDT,M3.2.0",
                          "EST5EDT,M3.2.0,M11.1.0x", "<+03", "EST25"}) {
    EXPECT_FALSE(TimeZone::parse_posix_rule(bad).is_ok()) << bad;
  }
}

TEST(TimeZone, OffsetsFromTheTzDatabase) {
  if (!have_zoneinfo("Europe/Berlin") || !have_zoneinfo("Australia/Sydney")) {
    GTEST_SKIP() << "no tz database";
  }
  auto berlin = TimeZone::load("Europe/Berlin").value();
  EXPECT_EQ(berlin->offset_at(at("2024-01-15T12:00:00Z")), 3600);
  EXPECT_EQ(berlin->offset_at(at("2024-07-15T12:00:00Z")), 7200);
  EXPECT_EQ(berlin->offset_at(at("2024-03-31T00:59:59Z")), 3600);
  EXPECT_EQ(berlin->offset_at(at("2024-03-31T01:00:00Z")), 7200);
  // Far beyond the listed transitions the zone's rule still applies.
  EXPECT_EQ(berlin->offset_at(at("2070-01-15T12:00:00Z")), 3600);
  EXPECT_EQ(berlin->offset_at(at("2070-07-15T12:00:00Z")), 7200);
  auto sydney = TimeZone::load("Australia/Sydney").value();
  EXPECT_EQ(sydney->offset_at(at("2024-01-15T12:00:00Z")), 11 * 3600);
  EXPECT_EQ(sydney->offset_at(at("2024-07-15T12:00:00Z")), 10 * 3600);
  EXPECT_EQ(sydney->offset_at(at("2070-01-15T12:00:00Z")), 11 * 3600);
  EXPECT_EQ(sydney->offset_at(at("2070-07-15T12:00:00Z")), 10 * 3600);
  // The same zone loaded twice is the cached one.
  EXPECT_EQ(TimeZone::load("Europe/Berlin").value().get(), berlin.get());

  EXPECT_EQ(format_rfc3339_in(at("2024-01-15T08:00:00Z"), *berlin), "2024-01-15T09:00:00+01:00");
  EXPECT_EQ(format_rfc3339_in(at("2024-07-15T08:00:00Z"), *berlin), "2024-07-15T10:00:00+02:00");
  EXPECT_EQ(format_rfc3339_in(at("2024-07-15T08:00:00Z"), *TimeZone::utc()),
            "2024-07-15T08:00:00Z");
  EXPECT_EQ(format_rfc3339_in(at("2024-07-15T08:00:00Z"), *TimeZone::fixed(-5 * 3600, "X")),
            "2024-07-15T03:00:00-05:00");
}

TEST(CronSchedule, DaylightSavingChanges) {
  if (!have_zoneinfo("Europe/Berlin") || !have_zoneinfo("America/New_York")) {
    GTEST_SKIP() << "no tz database";
  }
  auto berlin = TimeZone::load("Europe/Berlin").value();
  // 09:00 local before and after the spring change (2024-03-31 01:00 UTC).
  auto nine = parse_ok("0 9 * * *", berlin);
  EXPECT_EQ(next_of(nine, "2024-03-30T12:00:00Z"), "2024-03-31T07:00:00Z");
  EXPECT_EQ(next_of(nine, "2024-03-29T12:00:00Z"), "2024-03-30T08:00:00Z");
  // 02:30 does not exist on 2024-03-31 in Berlin: that day is skipped.
  auto gap = parse_ok("30 2 * * *", berlin);
  EXPECT_EQ(next_of(gap, "2024-03-30T12:00:00Z"), "2024-04-01T00:30:00Z");
  // 02:30 happens twice on 2024-10-27 (03:00 CEST -> 02:00 CET): it fires twice.
  EXPECT_EQ(next_of(gap, "2024-10-26T12:00:00Z"), "2024-10-27T00:30:00Z");
  EXPECT_EQ(next_of(gap, "2024-10-27T00:30:00Z"), "2024-10-27T01:30:00Z");
  EXPECT_EQ(next_of(gap, "2024-10-27T01:30:00Z"), "2024-10-28T01:30:00Z");
  EXPECT_EQ(prev_of(gap, "2024-10-27T01:29:00Z"), "2024-10-27T00:30:00Z");
  EXPECT_EQ(prev_of(gap, "2024-10-28T00:00:00Z"), "2024-10-27T01:30:00Z");
  // The zone in the spec wins, as upstream reads "TZ=" and "CRON_TZ=" prefixes.
  auto prefixed = parse_ok("CRON_TZ=America/New_York 0 0 * * *");
  EXPECT_TRUE(prefixed.zone_from_spec());
  EXPECT_EQ(next_of(prefixed, "2024-11-02T12:00:00Z"), "2024-11-03T04:00:00Z");  // EDT midnight
  EXPECT_EQ(next_of(prefixed, "2024-11-03T04:00:00Z"), "2024-11-04T05:00:00Z");  // EST midnight
  auto tz_prefixed = parse_ok("TZ=Europe/Berlin 0 9 * * *", TimeZone::utc());
  EXPECT_EQ(next_of(tz_prefixed, "2024-07-01T00:00:00Z"), "2024-07-01T07:00:00Z");
}

}  // namespace
}  // namespace skiff::api
