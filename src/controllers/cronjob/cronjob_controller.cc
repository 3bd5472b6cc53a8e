#include "controllers/cronjob/cronjob_controller.h"

#include <algorithm>
#include <ctime>
#include <set>

#include "base/log.h"
#include "controllers/controller_utils.h"
#include "controllers/json_fields.h"

namespace skiff::controllers {
namespace cronjob {
namespace {

constexpr int kMaxMissedSchedules = 100;

int64_t time_field(const Json& obj, std::string_view section, std::string_view key) {
  auto s = obj.find(section);
  if (s == obj.end() || !s->is_object()) return -1;
  auto v = s->find(key);
  if (v == s->end() || !v->is_string()) return -1;
  return parse_rfc3339(v->get<std::string>());
}

std::optional<int64_t> starting_deadline(const Json& cj) {
  auto spec = cj.find("spec");
  if (spec == cj.end() || !spec->is_object()) return std::nullopt;
  auto v = spec->find("startingDeadlineSeconds");
  if (v == spec->end() || !v->is_number_integer()) return std::nullopt;
  return v->get<int64_t>();
}

}  // namespace

Result<ScheduleTimes> most_recent_schedule_time(const Json& cj, int64_t now,
                                                const CronSchedule& schedule,
                                                bool respect_starting_deadline) {
  ScheduleTimes out;
  out.earliest = time_field(cj, "status", "lastScheduleTime");
  if (out.earliest < 0) out.earliest = time_field(cj, "metadata", "creationTimestamp");
  if (out.earliest < 0) out.earliest = now;
  if (auto deadline = starting_deadline(cj); deadline && respect_starting_deadline) {
    // Nothing older than the deadline will be started.
    out.earliest = std::max(out.earliest, now - *deadline);
  }
  auto first = schedule.next(out.earliest);
  if (!first) {
    return error(StatusCode::kInvalidArgument,
                 "the schedule names no time within five years of " + rfc3339(out.earliest));
  }
  if (now < *first) return out;
  out.most_recent = *first;
  int count = 1;
  while (true) {
    auto t = schedule.next(*out.most_recent);
    if (!t || *t > now) break;
    out.most_recent = *t;
    if (++count > kMaxMissedSchedules) {
      // Too many to walk: jump to the last one.
      out.most_recent = schedule.prev(now);
      out.missed = Missed::kMany;
      return out;
    }
  }
  out.missed = count > 1 ? Missed::kFew : Missed::kNone;
  return out;
}

std::optional<std::chrono::milliseconds> requeue_delay(const Json& cj, int64_t now,
                                                       const CronSchedule& schedule) {
  auto times = most_recent_schedule_time(cj, now, schedule, false);
  int64_t base = now;
  if (times.is_ok()) base = times.value().most_recent.value_or(times.value().earliest);
  auto next = schedule.next(base);
  if (!next) return std::nullopt;
  return std::chrono::milliseconds(std::max<int64_t>(0, (*next - now) * 1000) + 100);
}

std::string job_name(const Json& cj, int64_t scheduled) {
  int64_t minutes = scheduled >= 0 ? scheduled / 60 : -((-scheduled + 59) / 60);
  return client::name_of(cj) + "-" + std::to_string(minutes);
}

}  // namespace cronjob

namespace {

using client::resources::kCronJobs;
using client::resources::kJobs;
using namespace cronjob;

constexpr char kOwnerIndex[] = "cronjob-controller/owner-uid";

std::optional<std::string> finished_type(const Json& job) {
  auto status = job.find("status");
  if (status == job.end()) return std::nullopt;
  const Json* complete = find_condition(*status, "Complete");
  if (complete && complete->value("status", "") == "True") return "Complete";
  const Json* failed = find_condition(*status, "Failed");
  if (failed && failed->value("status", "") == "True") return "Failed";
  return std::nullopt;
}

// "Mon, 02 Jan 2006 15:04:05 +0000" (Go's RFC1123Z, in UTC).
std::string rfc1123z(int64_t unix_seconds) {
  time_t t = static_cast<time_t>(unix_seconds);
  struct tm tm;
  gmtime_r(&t, &tm);
  static const char* kDays[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
  static const char* kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                  "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%s, %02d %s %04d %02d:%02d:%02d +0000", kDays[tm.tm_wday],
                tm.tm_mday, kMonths[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
                tm.tm_sec);
  return buf;
}

Json& active_list(Json& cj) {
  Json& status = cj["status"];
  if (!status.is_object()) status = Json::object();
  Json& active = status["active"];
  if (!active.is_array()) active = Json::array();
  return active;
}

bool has_active(const Json& cj) {
  const Json& status = cj.value("status", Json::object());
  return !status.value("active", Json::array()).empty();
}

bool in_active(const Json& cj, const std::string& uid) {
  const Json& status = cj.value("status", Json::object());
  for (const auto& ref : status.value("active", Json::array())) {
    if (ref.value("uid", "") == uid) return true;
  }
  return false;
}

bool in_active_by_name(const Json& cj, const std::string& name) {
  const Json& status = cj.value("status", Json::object());
  for (const auto& ref : status.value("active", Json::array())) {
    if (ref.value("name", "") == name &&
        ref.value("namespace", client::namespace_of(cj)) == client::namespace_of(cj)) {
      return true;
    }
  }
  return false;
}

void remove_from_active(Json& cj, const std::string& uid) {
  Json& active = active_list(cj);
  Json kept = Json::array();
  for (auto& ref : active) {
    if (ref.value("uid", "") != uid) kept.push_back(std::move(ref));
  }
  active = std::move(kept);
}

Json job_reference(const Json& job) {
  return {{"kind", "Job"},
          {"namespace", client::namespace_of(job)},
          {"name", client::name_of(job)},
          {"uid", client::uid_of(job)},
          {"apiVersion", "batch/v1"},
          {"resourceVersion", client::resource_version_of(job)}};
}

int64_t int_spec(const Json& cj, const char* key, int64_t fallback) {
  return int_field(field(cj, "spec"), key, fallback);
}

struct SyncResult {
  std::optional<std::chrono::milliseconds> requeue;
  bool update_status = false;
  Status error;
};

class CronJobController final : public Controller {
 public:
  explicit CronJobController(ControllerContext& ctx)
      : api_(ctx.api),
        clock_(ctx.clock),
        workers_count_(ctx.options.workers),
        cronjobs_(ctx.informers.informer(kCronJobs)),
        jobs_(ctx.informers.informer(kJobs)),
        recorder_(ctx.recorder("cronjob-controller")),
        workers_(
            "cronjob", queue_, [this](const std::string& key) { return reconcile(key); },
            [this] { return cronjobs_.has_synced() && jobs_.has_synced(); }) {
    jobs_.add_index(kOwnerIndex, [](const Json& job) {
      const Json* ref = client::controller_of(job);
      if (!ref || ref->value("kind", "") != "CronJob") return std::vector<std::string>{};
      return std::vector<std::string>{ref->value("uid", "")};
    });
    jobs_.add_handlers({
        [this](const ObjectPtr& job) { enqueue_owner(*job); },
        [this](const ObjectPtr& old_job, const ObjectPtr& job) {
          const Json* old_ref = client::controller_of(*old_job);
          const Json* ref = client::controller_of(*job);
          if (old_ref && (!ref || *old_ref != *ref)) enqueue_owner(*old_job);
          enqueue_owner(*job);
        },
        [this](const ObjectPtr& job) { enqueue_owner(*job); },
    });
    cronjobs_.add_handlers({
        [this](const ObjectPtr& cj) { queue_.add(client::key_of(*cj)); },
        [this](const ObjectPtr&, const ObjectPtr& cj) { queue_.add(client::key_of(*cj)); },
        nullptr,
    });
  }

  ~CronJobController() override { stop(); }

  std::string_view name() const override { return "cronjob-controller"; }
  void start() override { workers_.start(workers_count_); }
  void stop() override { workers_.stop(); }

 private:
  void enqueue_owner(const Json& job) {
    const Json* ref = client::controller_of(job);
    if (!ref || ref->value("kind", "") != "CronJob") return;
    ObjectPtr cj = cronjobs_.get(client::namespace_of(job), ref->value("name", ""));
    if (!cj || client::uid_of(*cj) != ref->value("uid", "")) return;
    queue_.add(client::key_of(*cj));
  }

  Status reconcile(const std::string& key) {
    ObjectPtr cached = cronjobs_.get(key);
    if (!cached) return Status::ok();
    std::vector<ObjectPtr> jobs;
    for (const auto& j : jobs_.by_index(kOwnerIndex, client::uid_of(*cached))) {
      if (client::namespace_of(*j) == client::namespace_of(*cached)) jobs.push_back(j);
    }
    Json cj = *cached;
    std::set<std::string> deleted;
    bool update = false;
    if (!is_being_deleted(cj)) update = cleanup_finished_jobs(cj, jobs, deleted);
    SyncResult r = sync_cronjob(cj, jobs, deleted);
    if (update || r.update_status) {
      auto [ns, name] = client::split_key(key);
      if (cj["status"].contains("active") && cj["status"]["active"].empty()) {
        cj["status"].erase("active");  // omitted when empty, as upstream writes it
      }
      auto written = api_.update(kCronJobs, ns, cj, {}, "status");
      if (!written.is_ok()) {
        return written.status().code() == StatusCode::kNotFound ? Status::ok() : written.status();
      }
    }
    if (r.requeue) queue_.add_after(key, *r.requeue);
    return r.error;
  }

  // Deletes a Job (its pods in the background) and drops it from status.active.
  bool delete_job(Json& cj, const Json& job, std::set<std::string>& deleted) {
    client::DeleteOptions options;
    options.propagation_policy = "Background";
    auto r = api_.remove(kJobs, client::namespace_of(job), client::name_of(job), options);
    if (!r.is_ok() && r.status().code() != StatusCode::kNotFound) {
      recorder_->event(cj, "Warning", "FailedDelete", "Deleted job: " + r.status().message());
      return false;
    }
    remove_from_active(cj, client::uid_of(job));
    deleted.insert(client::uid_of(job));
    if (r.is_ok()) {
      recorder_->event(cj, "Normal", "SuccessfulDelete", "Deleted job " + client::name_of(job));
    }
    return true;
  }

  bool remove_oldest(Json& cj, std::vector<ObjectPtr> jobs, int64_t limit,
                     std::set<std::string>& deleted) {
    int64_t excess = static_cast<int64_t>(jobs.size()) - std::max<int64_t>(limit, 0);
    if (excess <= 0) return false;
    // Oldest first by start time (a Job that never started counts as newest), then by name.
    std::sort(jobs.begin(), jobs.end(), [](const ObjectPtr& a, const ObjectPtr& b) {
      int64_t sa = time_field(*a, "status", "startTime");
      int64_t sb = time_field(*b, "status", "startTime");
      if ((sa < 0) != (sb < 0)) return sb < 0;
      if (sa != sb) return sa < sb;
      return client::name_of(*a) < client::name_of(*b);
    });
    bool update = false;
    for (int64_t i = 0; i < excess; ++i) {
      if (delete_job(cj, *jobs[static_cast<size_t>(i)], deleted)) update = true;
    }
    return update;
  }

  bool cleanup_finished_jobs(Json& cj, const std::vector<ObjectPtr>& jobs,
                             std::set<std::string>& deleted) {
    std::vector<ObjectPtr> succeeded, failed;
    for (const auto& j : jobs) {
      auto type = finished_type(*j);
      if (!type || is_being_deleted(*j)) continue;
      (*type == "Complete" ? succeeded : failed).push_back(j);
    }
    // The API server defaults the limits to 3 and 1.
    bool update =
        remove_oldest(cj, succeeded, int_spec(cj, "successfulJobsHistoryLimit", 3), deleted);
    if (remove_oldest(cj, failed, int_spec(cj, "failedJobsHistoryLimit", 1), deleted)) {
      update = true;
    }
    return update;
  }

  Json job_from_template(const Json& cj, int64_t scheduled, const TimeZone& zone) const {
    const Json& spec = cj.value("spec", Json::object());
    const Json& tmpl = spec.value("jobTemplate", Json::object());
    const Json& tmeta = tmpl.value("metadata", Json::object());
    Json meta = {{"name", job_name(cj, scheduled)},
                 {"namespace", client::namespace_of(cj)},
                 {"ownerReferences", Json::array({controller_ref(cj, "CronJob", "batch/v1")})}};
    if (auto labels = tmeta.find("labels"); labels != tmeta.end() && labels->is_object()) {
      meta["labels"] = *labels;
    }
    Json annotations = tmeta.value("annotations", Json::object());
    if (!annotations.is_object()) annotations = Json::object();
    annotations[std::string(kScheduledTimestampAnnotation)] = format_rfc3339_in(scheduled, zone);
    meta["annotations"] = std::move(annotations);
    return {{"apiVersion", "batch/v1"},
            {"kind", "Job"},
            {"metadata", std::move(meta)},
            {"spec", tmpl.value("spec", Json::object())}};
  }

  SyncResult sync_cronjob(Json& cj, const std::vector<ObjectPtr>& jobs,
                          const std::set<std::string>& deleted) {
    SyncResult out;
    const int64_t now = clock_.now_seconds();
    const std::string ns = client::namespace_of(cj);
    std::set<std::string> children;
    for (const auto& j : jobs) {
      std::string uid = client::uid_of(*j);
      children.insert(uid);
      bool found = in_active(cj, uid);
      auto finished = finished_type(*j);
      if (!found && !finished && !deleted.count(uid)) {
        // Maybe our cache predates the status that lists it: ask the API server.
        auto fresh = api_.get(kCronJobs, ns, client::name_of(cj));
        if (!fresh.is_ok()) {
          out.error = fresh.status();
          return out;
        }
        if (client::uid_of(fresh.value()) == client::uid_of(cj) && in_active(fresh.value(), uid)) {
          cj = std::move(fresh).value();
          for (const auto& d : deleted) remove_from_active(cj, d);
          continue;
        }
        recorder_->event(
            cj, "Warning", "UnexpectedJob",
            "Saw a job that the controller did not create or forgot: " + client::name_of(*j));
      } else if (found && finished) {
        remove_from_active(cj, uid);
        recorder_->event(cj, "Normal", "SawCompletedJob",
                         "Saw completed job: " + client::name_of(*j) + ", condition: " + *finished);
        out.update_status = true;
      }
      if (finished && *finished == "Complete") {
        // Any Job that succeeded counts, listed as active or not.
        int64_t done = time_field(*j, "status", "completionTime");
        int64_t last = time_field(cj, "status", "lastSuccessfulTime");
        if (done >= 0 && done > last) {
          cj["status"]["lastSuccessfulTime"] = rfc3339(done);
          out.update_status = true;
        }
      }
    }

    // Active Jobs that no longer exist would hold the CronJob active forever.
    Json active = cj.value("status", Json::object()).value("active", Json::array());
    for (const auto& ref : active) {
      std::string uid = ref.value("uid", "");
      if (children.count(uid)) continue;
      auto got = api_.get(kJobs, ref.value("namespace", ns), ref.value("name", ""));
      if (got.is_ok() && client::uid_of(got.value()) == uid) continue;  // the cache is behind
      if (!got.is_ok() && got.status().code() != StatusCode::kNotFound) {
        out.error = got.status();
        return out;
      }
      recorder_->event(cj, "Normal", "MissingJob",
                       "Active job went missing: " + ref.value("name", ""));
      remove_from_active(cj, uid);
      out.update_status = true;
    }
    if (is_being_deleted(cj)) return out;

    const Json& spec = cj.value("spec", Json::object());
    std::shared_ptr<const TimeZone> zone = TimeZone::utc();
    if (auto tz = spec.find("timeZone"); tz != spec.end() && tz->is_string()) {
      auto loaded = TimeZone::load(tz->get<std::string>());
      if (!loaded.is_ok()) {
        recorder_->event(
            cj, "Warning", "UnknownTimeZone",
            "invalid timeZone: \"" + tz->get<std::string>() + "\": " + loaded.status().message());
        return out;
      }
      zone = loaded.value();
    }
    if (spec.value("suspend", false)) return out;

    std::string schedule_text = spec.value("schedule", "");
    if (schedule_text.find("TZ") != std::string::npos) {
      recorder_->event(cj, "Warning", "UnsupportedSchedule",
                       "CRON_TZ or TZ used in schedule \"" + schedule_text +
                           "\" is not officially supported, see "
                           "https://kubernetes.io/docs/concepts/workloads/controllers/cron-jobs/ "
                           "for more details");
    }
    auto parsed = CronSchedule::parse(schedule_text, zone);
    if (!parsed.is_ok()) {
      // A user error: nothing to do until the spec changes.
      recorder_->event(
          cj, "Warning", "UnparseableSchedule",
          "unparseable schedule: \"" + schedule_text + "\" : " + parsed.status().message());
      return out;
    }
    const CronSchedule& schedule = parsed.value();
    auto times = most_recent_schedule_time(cj, now, schedule, true);
    if (!times.is_ok()) {
      recorder_->event(cj, "Warning", "InvalidSchedule",
                       "invalid schedule: " + schedule_text + " : " + times.status().message());
      return out;
    }
    if (times.value().missed == Missed::kMany) {
      recorder_->event(cj, "Warning", "TooManyMissedTimes",
                       "too many missed start times. Set or decrease "
                       ".spec.startingDeadlineSeconds or check clock skew");
    }
    out.requeue = requeue_delay(cj, now, schedule);
    auto deadline = starting_deadline(cj);
    if (!times.value().most_recent) {
      // Nothing due within the starting deadline; a time passed before it was missed.
      if (deadline) {
        auto unbounded = most_recent_schedule_time(cj, now, schedule, false);
        if (unbounded.is_ok() && unbounded.value().most_recent) {
          recorder_->event(
              cj, "Warning", "MissSchedule",
              "Missed scheduled time to start a job: " + rfc1123z(*unbounded.value().most_recent));
        }
      }
      return out;
    }
    const int64_t scheduled = *times.value().most_recent;
    if (deadline && scheduled + *deadline < now) {
      recorder_->event(cj, "Warning", "MissSchedule",
                       "Missed scheduled time to start a job: " + rfc1123z(scheduled));
      return out;
    }
    std::string name = job_name(cj, scheduled);
    if (in_active_by_name(cj, name) || time_field(cj, "status", "lastScheduleTime") == scheduled) {
      return out;  // already done
    }
    std::string policy = spec.value("concurrencyPolicy", "Allow");
    if (policy == "Forbid" && has_active(cj)) {
      recorder_->event(cj, "Normal", "JobAlreadyActive",
                       "Not starting job because prior execution is running and concurrency "
                       "policy is Forbid");
      return out;
    }
    if (policy == "Replace") {
      Json running = active_list(cj);
      for (const auto& ref : running) {
        auto got = api_.get(kJobs, ref.value("namespace", ns), ref.value("name", ""));
        if (!got.is_ok()) {
          if (got.status().code() == StatusCode::kNotFound) {
            remove_from_active(cj, ref.value("uid", ""));
            out.update_status = true;
            continue;
          }
          recorder_->event(cj, "Warning", "FailedGet", "Get job: " + got.status().message());
          out.error = got.status();
          return out;
        }
        std::set<std::string> replaced;
        if (!delete_job(cj, got.value(), replaced)) {
          out.error = error(StatusCode::kUnavailable,
                            "could not replace job " + ns + "/" + ref.value("name", ""));
          return out;
        }
        out.update_status = true;
      }
    }

    Json request = job_from_template(cj, scheduled, *zone);
    auto created = api_.create(kJobs, ns, request);
    Json job;
    if (created.is_ok()) {
      job = std::move(created).value();
      recorder_->event(cj, "Normal", "SuccessfulCreate", "Created job " + client::name_of(job));
    } else if (created.status().code() == StatusCode::kAlreadyExists) {
      // Created before (a status update may have been lost): take it over if it is ours.
      auto got = api_.get(kJobs, ns, name);
      if (!got.is_ok()) {
        out.error = got.status();
        return out;
      }
      job = std::move(got).value();
      if (!is_controlled_by(job, client::uid_of(cj)) || in_active(cj, client::uid_of(job))) {
        return out;
      }
    } else {
      recorder_->event(cj, "Warning", "FailedCreate",
                       "Error creating job: " + created.status().message());
      out.error = created.status();
      return out;
    }
    active_list(cj).push_back(job_reference(job));
    cj["status"]["lastScheduleTime"] = rfc3339(scheduled);
    out.update_status = true;
    out.requeue = requeue_delay(cj, now, schedule);
    return out;
  }

  client::ApiClient& api_;
  const Clock& clock_;
  const int workers_count_;
  client::Informer& cronjobs_;
  client::Informer& jobs_;
  std::unique_ptr<client::EventRecorder> recorder_;
  client::WorkQueue queue_;
  QueueWorkers workers_;
};

}  // namespace

std::unique_ptr<Controller> new_cronjob_controller(ControllerContext& ctx) {
  return std::make_unique<CronJobController>(ctx);
}

}  // namespace skiff::controllers
