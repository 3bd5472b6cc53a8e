#pragma once

// Cron schedules as CronJobs use them (the standard five fields upstream parses with
// robfig/cron's ParseStandard): minute hour day-of-month month day-of-week, each a list of
// values, ranges (a-b), steps (*/n, a-b/n, a/n meaning a-max/n), * or ?, and the names JAN-DEC
// and SUN-SAT (case-insensitive). Day-of-week runs 0-6 (0 = Sunday). The descriptors @yearly,
// @annually, @monthly, @weekly, @daily, @midnight and @hourly stand for their five-field forms;
// @every is not a CronJob schedule and is rejected.
//
// When both day fields are restricted (neither starts with * or ?, a step above 1 counting as
// restricted), a day matches when EITHER matches, as cron has always done; otherwise both
// must match.
//
// Times are evaluated as wall-clock times in the schedule's time zone (UTC unless given, or
// named by a "CRON_TZ=<zone> " or "TZ=<zone> " prefix). A wall-clock time skipped by a
// daylight-saving change never fires; one that happens twice fires twice. A schedule that
// matches nothing within five years of a time reports no next time (e.g. "0 0 30 2 *").
//
// Thread-safety: a CronSchedule is immutable after parse() and safe to share.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "api/time_zone.h"
#include "base/status.h"

namespace skiff::api {

class CronSchedule {
 public:
  // Errors are kInvalidArgument with a message naming the offending field and value.
  static Result<CronSchedule> parse(std::string_view spec,
                                    std::shared_ptr<const TimeZone> zone = TimeZone::utc());

  // The first activation strictly after `unix_seconds`, or nullopt when there is none within
  // five years.
  std::optional<int64_t> next(int64_t unix_seconds) const;
  // The last activation at or before `unix_seconds`, or nullopt when there is none within the
  // five years before it.
  std::optional<int64_t> prev(int64_t unix_seconds) const;

  const TimeZone& zone() const { return *zone_; }
  // True when the spec carried a CRON_TZ= or TZ= prefix.
  bool zone_from_spec() const { return zone_from_spec_; }

 private:
  CronSchedule() = default;
  // Local wall-clock times (seconds since 1970-01-01T00:00 local, whole minutes).
  std::optional<int64_t> next_wall(int64_t wall) const;  // first match >= wall
  std::optional<int64_t> prev_wall(int64_t wall) const;  // last match <= wall
  bool day_matches(int64_t day) const;

  uint64_t minutes_ = 0;  // bit i: minute i
  uint32_t hours_ = 0;
  uint32_t days_of_month_ = 0;  // bits 1..31
  uint32_t months_ = 0;         // bits 1..12
  uint32_t days_of_week_ = 0;   // bits 0..6
  bool dom_star_ = false;
  bool dow_star_ = false;
  bool zone_from_spec_ = false;
  std::shared_ptr<const TimeZone> zone_;
};

}  // namespace skiff::api
