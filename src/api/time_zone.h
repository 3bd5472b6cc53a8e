#pragma once

// IANA time zones for CronJob schedules, read from the system's tz database (TZif files under
// /usr/share/zoneinfo, RFC 8536) by skiff itself rather than through the C library: changing the
// TZ environment variable and calling localtime() is not safe while other threads run, so the
// zone's transitions and its POSIX TZ footer rule are parsed here and evaluated as plain data.
//
// Thread-safety: a TimeZone is immutable once loaded and safe to share between threads;
// TimeZone::load() may be called from any thread (loaded zones are cached behind a mutex).

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"

namespace skiff::api {

class TimeZone {
 public:
  // A POSIX TZ rule ("CET-1CEST,M3.5.0,M10.5.0/3"), used after a zone's last transition.
  struct PosixRule {
    struct Date {
      enum Kind : uint8_t { kJulianNoLeap, kZeroBasedDay, kMonthWeekDay } kind = kMonthWeekDay;
      int day = 0;          // Jn: 1..365; n: 0..365; Mm.w.d: weekday d (0 = Sunday)
      int week = 0;         // Mm.w.d: 1..5 (5 = the last)
      int month = 0;        // Mm.w.d: 1..12
      int64_t time = 7200;  // seconds after local midnight (may be negative or above a day)
    };
    int std_offset = 0;  // seconds east of UTC
    bool has_dst = false;
    int dst_offset = 0;
    Date start, end;
  };

  // "UTC", "Etc/UTC" and "" are UTC; other names are read from the tz database. Names are
  // checked (no absolute paths, no "..") before any file is opened; "Local" is rejected as
  // upstream's CronJob validation rejects it.
  static Result<std::shared_ptr<const TimeZone>> load(std::string_view name);
  static std::shared_ptr<const TimeZone> utc();
  // A zone with one fixed offset (seconds east of UTC), e.g. for tests.
  static std::shared_ptr<const TimeZone> fixed(int offset_seconds, std::string name);
  // Parses TZif bytes (versions 1-4); `name` is for messages.
  static Result<std::shared_ptr<const TimeZone>> from_tzif(std::string_view name,
                                                           std::string_view data);
  // Parses a POSIX TZ string such as "EST5EDT,M3.2.0,M11.1.0" or "<+0330>-3:30".
  static Result<PosixRule> parse_posix_rule(std::string_view text);

  const std::string& name() const { return name_; }
  // Seconds east of UTC in effect at `unix_seconds`.
  int offset_at(int64_t unix_seconds) const;
  // The instants whose local wall-clock time (seconds since 1970-01-01T00:00 local) is `local`,
  // ascending: none in a spring-forward gap, two in a fall-back overlap, one otherwise.
  std::vector<int64_t> instants_at(int64_t local) const;
  // True when the offset never changes (UTC, fixed zones).
  bool is_fixed() const { return transitions_.empty() && !rule_.has_value(); }

 private:
  struct Transition {
    int64_t at;  // unix seconds
    int offset;  // in effect from `at`
  };
  TimeZone() = default;
  int rule_offset_at(int64_t unix_seconds) const;

  std::string name_;
  int initial_offset_ = 0;               // before the first transition
  std::vector<Transition> transitions_;  // ascending
  std::optional<PosixRule> rule_;        // after the last transition
};

// RFC 3339 time of `unix_seconds` in `zone`: "2024-03-10T09:00:00+01:00", or "...Z" when the
// offset is zero (as Go formats time.RFC3339).
std::string format_rfc3339_in(int64_t unix_seconds, const TimeZone& zone);

}  // namespace skiff::api
