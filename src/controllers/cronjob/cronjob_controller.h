#pragma once

// The CronJob controller (batch/v1, upstream's CronJob controller v2 as of Kubernetes 1.32):
// creates a Job from spec.jobTemplate at each time spec.schedule names (cron_schedule.h), in
// spec.timeZone (an IANA name, read from the system's tz database; UTC when unset). The Job is
// named "<cronjob>-<scheduled time in minutes since the epoch>" (so a schedule is never run twice),
// carries the template's labels and annotations plus
// batch.kubernetes.io/cronjob-scheduled-timestamp, and is controlled by the CronJob.
//
// Only the most recent missed time is run; one older than startingDeadlineSeconds is skipped
// (event MissSchedule), and more than 100 missed times raise TooManyMissedTimes.
// concurrencyPolicy Allow runs Jobs side by side, Forbid skips a time while a Job runs, Replace
// deletes the running Jobs first. suspend stops new Jobs. Finished Jobs beyond
// successfulJobsHistoryLimit (3) / failedJobsHistoryLimit (1) are deleted, oldest first.
// status.active lists the running Jobs; lastScheduleTime and lastSuccessfulTime are kept. A
// CronJob is requeued for its next scheduled time rather than polled.
//
// Thread-safety: as every Controller (controller.h); the free functions are pure.

#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "api/cron_schedule.h"
#include "controllers/controller.h"

namespace skiff::controllers {

using api::CronSchedule;
using api::TimeZone;

std::unique_ptr<Controller> new_cronjob_controller(ControllerContext& ctx);

namespace cronjob {

inline constexpr std::string_view kScheduledTimestampAnnotation =
    "batch.kubernetes.io/cronjob-scheduled-timestamp";

enum class Missed : uint8_t { kNone, kFew, kMany };

struct ScheduleTimes {
  // lastScheduleTime, else creationTimestamp (moved up to now - startingDeadlineSeconds when
  // asked to respect the deadline).
  int64_t earliest = 0;
  // The most recent scheduled time after `earliest` and at or before now, if any.
  std::optional<int64_t> most_recent;
  Missed missed = Missed::kNone;
};

// Upstream's mostRecentScheduleTime: which scheduled time is due now. An error when the
// schedule names no time within five years.
Result<ScheduleTimes> most_recent_schedule_time(const Json& cronjob, int64_t now,
                                                const CronSchedule& schedule,
                                                bool respect_starting_deadline);

// How long until the CronJob needs its next sync: the next scheduled time plus 100 ms (clock
// skew), or nullopt when the schedule names no later time.
std::optional<std::chrono::milliseconds> requeue_delay(const Json& cronjob, int64_t now,
                                                       const CronSchedule& schedule);

// "<cronjob>-<scheduled time in minutes since the epoch>".
std::string job_name(const Json& cronjob, int64_t scheduled);

}  // namespace cronjob
}  // namespace skiff::controllers
