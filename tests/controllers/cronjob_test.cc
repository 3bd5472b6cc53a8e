#include <gtest/gtest.h>
#include <unistd.h>

#include <set>
#include <thread>

#include "client/fake_api_client.h"
#include "controller_test_util.h"
#include "controllers/controller_utils.h"
#include "controllers/cronjob/cronjob_controller.h"

namespace skiff::controllers {
namespace {

using testing::ControllerTest;
using testing::eventually;
using namespace std::chrono_literals;
using client::resources::kCronJobs;
using client::resources::kEvents;
using client::resources::kJobs;

int64_t at(const char* text) {
  return parse_rfc3339(text);
}

std::chrono::system_clock::time_point tp(const char* text) {
  return std::chrono::system_clock::time_point(std::chrono::seconds(at(text)));
}

std::string minutes(const char* text) {
  return std::to_string(at(text) / 60);
}

Json make_cronjob(const std::string& name, const std::string& schedule, const Json& spec = {}) {
  Json cj = {
      {"apiVersion", "batch/v1"},
      {"kind", "CronJob"},
      {"metadata",
       {{"name", name},
        {"namespace", "default"},
        {"uid", "uid-" + name},
        {"creationTimestamp", "2024-05-01T00:00:30Z"}}},
      {"spec",
       {{"schedule", schedule},
        {"jobTemplate",
         {{"metadata", {{"labels", {{"app", "report"}}}, {"annotations", {{"team", "data"}}}}},
          {"spec",
           {{"backoffLimit", 2},
            {"template",
             {{"spec",
               {{"restartPolicy", "OnFailure"},
                {"containers", {{{"name", "c"}, {"image", "busybox"}}}}}}}}}}}}}}};
  if (spec.is_object()) {
    for (auto it = spec.begin(); it != spec.end(); ++it) cj["spec"][it.key()] = it.value();
  }
  return cj;
}

class CronJobTest : public ControllerTest<> {
 protected:
  // Frequent resyncs let the controller notice FakeClock advances.
  CronJobTest() : ControllerTest({}, 20ms, tp("2024-05-01T00:01:00Z")) {}

  void start() {
    controller_ = new_cronjob_controller(ctx_);
    controller_->start();
    informers_.start();
  }

  void TearDown() override {
    if (controller_) controller_->stop();
    informers_.stop();
  }

  std::set<std::string> job_names() {
    std::set<std::string> out;
    Json listed = api_.list(kJobs, "default").value();
    for (auto& j : listed["items"]) out.insert(j["metadata"]["name"]);
    return out;
  }

  Json cronjob_status(const std::string& name) {
    return api_.get(kCronJobs, "default", name).value().value("status", Json::object());
  }

  std::vector<std::string> active_names(const std::string& name) {
    std::vector<std::string> out;
    for (auto& ref : cronjob_status(name).value("active", Json::array())) {
      out.push_back(ref.value("name", ""));
    }
    return out;
  }

  bool has_event(const std::string& reason, const std::string& message_part = "") {
    Json listed = api_.list(kEvents, "default").value();
    for (auto& e : listed["items"]) {
      if (e.value("reason", "") == reason &&
          e.value("message", "").find(message_part) != std::string::npos) {
        return true;
      }
    }
    return false;
  }

  // What the Job controller would write when a Job ends.
  void finish_job(const std::string& name, const std::string& type, const char* started,
                  const char* done) {
    Json status = {
        {"startTime", started},
        {"conditions", {{{"type", type}, {"status", "True"}, {"lastTransitionTime", done}}}}};
    if (type == "Complete") status["completionTime"] = done;
    ASSERT_TRUE(api_.patch(kJobs, "default", name, client::PatchType::kMerge,
                           Json{{"status", status}}.dump(), {}, "status")
                    .is_ok());
  }

  // A Job the CronJob created earlier.
  void seed_child(const std::string& cronjob, const std::string& name, const std::string& type,
                  const char* started) {
    Json job = {{"metadata",
                 {{"name", name},
                  {"namespace", "default"},
                  {"ownerReferences",
                   {{{"apiVersion", "batch/v1"},
                     {"kind", "CronJob"},
                     {"name", cronjob},
                     {"uid", "uid-" + cronjob},
                     {"controller", true}}}}}},
                {"spec", Json::object()},
                {"status",
                 {{"startTime", started},
                  {"conditions",
                   {{{"type", type}, {"status", "True"}, {"lastTransitionTime", started}}}}}}};
    if (type == "Complete") job["status"]["completionTime"] = started;
    api_.seed(kJobs, job);
  }

  std::unique_ptr<Controller> controller_;
};

TEST_F(CronJobTest, CreatesTheJobAtTheScheduledTimeAndTracksIt) {
  api_.seed(kCronJobs, make_cronjob("report", "*/5 * * * *"));
  start();
  std::this_thread::sleep_for(150ms);
  EXPECT_TRUE(job_names().empty());
  clock_.set(tp("2024-05-01T00:05:10Z"));
  const std::string name = "report-" + minutes("2024-05-01T00:05:00Z");
  ASSERT_TRUE(eventually([&] { return job_names() == std::set<std::string>{name}; }));
  Json job = api_.get(kJobs, "default", name).value();
  EXPECT_EQ(job["metadata"]["labels"]["app"], "report");
  EXPECT_EQ(job["metadata"]["annotations"]["team"], "data");
  EXPECT_EQ(job["metadata"]["annotations"]["batch.kubernetes.io/cronjob-scheduled-timestamp"],
            "2024-05-01T00:05:00Z");
  const Json& ref = job["metadata"]["ownerReferences"][0];
  EXPECT_EQ(ref["kind"], "CronJob");
  EXPECT_EQ(ref["uid"], "uid-report");
  EXPECT_TRUE(ref["controller"].get<bool>());
  EXPECT_EQ(job["spec"]["backoffLimit"], 2);
  EXPECT_EQ(job["spec"]["template"]["spec"]["restartPolicy"], "OnFailure");

  ASSERT_TRUE(eventually([&] { return !active_names("report").empty(); }));
  Json st = cronjob_status("report");
  EXPECT_EQ(st["lastScheduleTime"], "2024-05-01T00:05:00Z");
  EXPECT_EQ(st["active"][0]["name"], name);
  EXPECT_EQ(st["active"][0]["kind"], "Job");
  EXPECT_EQ(st["active"][0]["apiVersion"], "batch/v1");
  EXPECT_EQ(st["active"][0]["uid"], job["metadata"]["uid"]);
  ASSERT_TRUE(eventually([&] { return has_event("SuccessfulCreate", "Created job " + name); }));

  // Not created twice for the same time.
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(job_names().size(), 1u);

  finish_job(name, "Complete", "2024-05-01T00:05:00Z", "2024-05-01T00:06:00Z");
  ASSERT_TRUE(eventually([&] { return active_names("report").empty(); }));
  EXPECT_EQ(cronjob_status("report")["lastSuccessfulTime"], "2024-05-01T00:06:00Z");
  EXPECT_FALSE(cronjob_status("report").contains("active"));
  ASSERT_TRUE(eventually([&] {
    return has_event("SawCompletedJob", "Saw completed job: " + name + ", condition: Complete");
  })) << api_.list(kEvents, "default").value().dump();

  clock_.set(tp("2024-05-01T00:10:01Z"));
  ASSERT_TRUE(eventually([&] { return job_names().size() == 2; }));
  EXPECT_TRUE(job_names().count("report-" + minutes("2024-05-01T00:10:00Z")));
}

TEST_F(CronJobTest, ForbidSkipsWhileAJobRuns) {
  api_.seed(kCronJobs, make_cronjob("solo", "*/5 * * * *", {{"concurrencyPolicy", "Forbid"}}));
  start();
  clock_.set(tp("2024-05-01T00:05:05Z"));
  const std::string first = "solo-" + minutes("2024-05-01T00:05:00Z");
  ASSERT_TRUE(eventually([&] { return active_names("solo") == std::vector<std::string>{first}; }));
  clock_.set(tp("2024-05-01T00:10:05Z"));
  ASSERT_TRUE(eventually([&] {
    return has_event("JobAlreadyActive",
                     "Not starting job because prior execution is running and concurrency "
                     "policy is Forbid");
  }));
  EXPECT_EQ(job_names(), std::set<std::string>{first});
  EXPECT_EQ(cronjob_status("solo")["lastScheduleTime"], "2024-05-01T00:05:00Z");
  // Once it finished, the due time runs (late, as no starting deadline is set).
  finish_job(first, "Complete", "2024-05-01T00:05:05Z", "2024-05-01T00:10:30Z");
  const std::string second = "solo-" + minutes("2024-05-01T00:10:00Z");
  ASSERT_TRUE(eventually([&] { return active_names("solo") == std::vector<std::string>{second}; }));
  EXPECT_EQ(job_names(), (std::set<std::string>{first, second}));
}

TEST_F(CronJobTest, ReplaceDeletesTheRunningJob) {
  api_.seed(kCronJobs, make_cronjob("fresh", "*/5 * * * *", {{"concurrencyPolicy", "Replace"}}));
  start();
  clock_.set(tp("2024-05-01T00:05:05Z"));
  const std::string first = "fresh-" + minutes("2024-05-01T00:05:00Z");
  ASSERT_TRUE(eventually([&] { return active_names("fresh") == std::vector<std::string>{first}; }));
  clock_.set(tp("2024-05-01T00:10:05Z"));
  const std::string second = "fresh-" + minutes("2024-05-01T00:10:00Z");
  ASSERT_TRUE(eventually([&] { return job_names() == std::set<std::string>{second}; }));
  ASSERT_TRUE(
      eventually([&] { return active_names("fresh") == std::vector<std::string>{second}; }));
  ASSERT_TRUE(eventually([&] { return has_event("SuccessfulDelete", "Deleted job " + first); }));
}

TEST_F(CronJobTest, AllowRunsJobsSideBySide) {
  api_.seed(kCronJobs, make_cronjob("many", "*/5 * * * *"));
  start();
  clock_.set(tp("2024-05-01T00:05:05Z"));
  ASSERT_TRUE(eventually([&] { return active_names("many").size() == 1; }));
  clock_.set(tp("2024-05-01T00:10:05Z"));
  ASSERT_TRUE(eventually([&] { return active_names("many").size() == 2; }));
  EXPECT_EQ(job_names().size(), 2u);
}

TEST_F(CronJobTest, KeepsOnlyTheHistoryLimits) {
  api_.seed(kCronJobs,
            make_cronjob("hist", "0 0 1 1 *",
                         {{"successfulJobsHistoryLimit", 2}, {"failedJobsHistoryLimit", 1}}));
  seed_child("hist", "hist-ok-1", "Complete", "2024-04-01T00:00:00Z");
  seed_child("hist", "hist-ok-2", "Complete", "2024-04-02T00:00:00Z");
  seed_child("hist", "hist-ok-3", "Complete", "2024-04-03T00:00:00Z");
  seed_child("hist", "hist-ok-4", "Complete", "2024-04-04T00:00:00Z");
  seed_child("hist", "hist-bad-1", "Failed", "2024-04-01T00:00:00Z");
  seed_child("hist", "hist-bad-2", "Failed", "2024-04-02T00:00:00Z");
  // Someone else's finished Job is not ours to delete.
  api_.seed(kJobs, {{"metadata", {{"name", "other"}, {"namespace", "default"}}},
                    {"status",
                     {{"conditions",
                       {{{"type", "Complete"},
                         {"status", "True"},
                         {"lastTransitionTime", "2024-04-01T00:00:00Z"}}}}}}});
  start();
  ASSERT_TRUE(eventually([&] {
    return job_names() == std::set<std::string>{"hist-ok-3", "hist-ok-4", "hist-bad-2", "other"};
  }));
  ASSERT_TRUE(eventually([&] { return has_event("SuccessfulDelete", "Deleted job hist-ok-1"); }));
  // The status is written after the deletions: wait for it rather than read it once.
  EXPECT_TRUE(eventually([&] {
    return cronjob_status("hist")["lastSuccessfulTime"] == "2024-04-04T00:00:00Z";
  })) << cronjob_status("hist").dump();
}

TEST_F(CronJobTest, DefaultHistoryLimitsAreThreeAndOne) {
  api_.seed(kCronJobs, make_cronjob("defaults", "0 0 1 1 *"));
  for (int i = 1; i <= 5; ++i) {
    std::string day = "2024-04-0" + std::to_string(i) + "T00:00:00Z";
    seed_child("defaults", "ok-" + std::to_string(i), "Complete", day.c_str());
    seed_child("defaults", "bad-" + std::to_string(i), "Failed", day.c_str());
  }
  start();
  ASSERT_TRUE(eventually([&] {
    return job_names() == std::set<std::string>{"ok-3", "ok-4", "ok-5", "bad-5"};
  }));
}

TEST_F(CronJobTest, StartingDeadlineSkipsTimesMissedByTooMuch) {
  api_.seed(kCronJobs, make_cronjob("strict", "*/5 * * * *", {{"startingDeadlineSeconds", 30}}));
  // The controller was down at 00:05 and comes back 45 s late.
  clock_.set(tp("2024-05-01T00:05:45Z"));
  start();
  ASSERT_TRUE(eventually([&] {
    return has_event("MissSchedule",
                     "Missed scheduled time to start a job: Wed, 01 May 2024 00:05:00 +0000");
  }));
  EXPECT_TRUE(job_names().empty());
  EXPECT_FALSE(cronjob_status("strict").contains("lastScheduleTime"));
  // Within the deadline of the next time: it runs.
  clock_.set(tp("2024-05-01T00:10:20Z"));
  ASSERT_TRUE(eventually([&] {
    return job_names() == std::set<std::string>{"strict-" + minutes("2024-05-01T00:10:00Z")};
  }));
}

TEST_F(CronJobTest, MissedTimesRunOnlyTheLatestAndTooManyAreReported) {
  Json cj = make_cronjob("behind", "* * * * *");
  cj["metadata"]["creationTimestamp"] = "2024-04-30T20:00:00Z";
  api_.seed(kCronJobs, cj);
  start();
  ASSERT_TRUE(eventually([&] { return job_names().size() == 1; }));
  EXPECT_EQ(*job_names().begin(), "behind-" + minutes("2024-05-01T00:01:00Z"));
  ASSERT_TRUE(eventually([&] {
    return has_event("TooManyMissedTimes",
                     "too many missed start times. Set or decrease .spec.startingDeadlineSeconds "
                     "or check clock skew");
  }));
}

TEST_F(CronJobTest, SuspendedCronJobsStartNothing) {
  api_.seed(kCronJobs, make_cronjob("paused", "*/5 * * * *", {{"suspend", true}}));
  start();
  clock_.set(tp("2024-05-01T00:05:05Z"));
  std::this_thread::sleep_for(200ms);
  EXPECT_TRUE(job_names().empty());
  ASSERT_TRUE(api_.patch(kCronJobs, "default", "paused", client::PatchType::kMerge,
                         Json{{"spec", {{"suspend", false}}}}.dump())
                  .is_ok());
  ASSERT_TRUE(eventually([&] {
    return job_names() == std::set<std::string>{"paused-" + minutes("2024-05-01T00:05:00Z")};
  }));
}

TEST_F(CronJobTest, SchedulesInTheGivenTimeZone) {
  if (access("/usr/share/zoneinfo/Europe/Berlin", R_OK) != 0) GTEST_SKIP() << "no tz database";
  api_.seed(kCronJobs, make_cronjob("berlin", "0 9 * * *", {{"timeZone", "Europe/Berlin"}}));
  start();
  clock_.set(tp("2024-05-01T06:59:00Z"));
  std::this_thread::sleep_for(150ms);
  EXPECT_TRUE(job_names().empty());
  clock_.set(tp("2024-05-01T07:00:05Z"));  // 09:00 CEST
  const std::string name = "berlin-" + minutes("2024-05-01T07:00:00Z");
  ASSERT_TRUE(eventually([&] { return job_names() == std::set<std::string>{name}; }));
  EXPECT_EQ(
      api_.get(kJobs, "default", name)
          .value()["metadata"]["annotations"]["batch.kubernetes.io/cronjob-scheduled-timestamp"],
      "2024-05-01T09:00:00+02:00");
}

TEST_F(CronJobTest, BadSchedulesAndZonesAreReportedNotRun) {
  api_.seed(kCronJobs, make_cronjob("typo", "*/5 * * *"));
  api_.seed(kCronJobs, make_cronjob("nowhere", "*/5 * * * *", {{"timeZone", "Nowhere/Atlantis"}}));
  api_.seed(kCronJobs, make_cronjob("never", "0 0 30 2 *"));
  start();
  clock_.set(tp("2024-05-01T00:05:05Z"));
  ASSERT_TRUE(eventually([&] {
    return has_event("UnparseableSchedule",
                     "unparseable schedule: \"*/5 * * *\" : expected exactly 5 fields");
  }));
  ASSERT_TRUE(eventually(
      [&] { return has_event("UnknownTimeZone", "invalid timeZone: \"Nowhere/Atlantis\""); }));
  ASSERT_TRUE(
      eventually([&] { return has_event("InvalidSchedule", "invalid schedule: 0 0 30 2 *"); }));
  EXPECT_TRUE(job_names().empty());
}

TEST_F(CronJobTest, ForgetsActiveJobsThatNoLongerExist) {
  Json cj = make_cronjob("stale", "0 0 1 1 *");
  cj["status"] = {{"active",
                   {{{"kind", "Job"},
                     {"namespace", "default"},
                     {"name", "stale-1"},
                     {"uid", "gone-uid"},
                     {"apiVersion", "batch/v1"}}}}};
  api_.seed(kCronJobs, cj);
  start();
  ASSERT_TRUE(eventually([&] { return active_names("stale").empty(); }));
  ASSERT_TRUE(
      eventually([&] { return has_event("MissingJob", "Active job went missing: stale-1"); }));
}

TEST_F(CronJobTest, RetriesFailedCreatesAndAdoptsItsJobAfterALostStatusUpdate) {
  api_.fail("create", "jobs.batch", error(StatusCode::kUnavailable, "try later"), 1);
  api_.fail("update", "cronjobs.batch", error(StatusCode::kUnavailable, "lost"), 1);
  api_.seed(kCronJobs, make_cronjob("sturdy", "*/5 * * * *"));
  start();
  clock_.set(tp("2024-05-01T00:05:05Z"));
  const std::string name = "sturdy-" + minutes("2024-05-01T00:05:00Z");
  ASSERT_TRUE(
      eventually([&] { return has_event("FailedCreate", "Error creating job: try later"); }));
  ASSERT_TRUE(eventually([&] { return active_names("sturdy") == std::vector<std::string>{name}; }));
  EXPECT_EQ(job_names(), std::set<std::string>{name});
  EXPECT_EQ(cronjob_status("sturdy")["lastScheduleTime"], "2024-05-01T00:05:00Z");
}

// ---- scheduling arithmetic ----

TEST(CronJobSchedule, MostRecentTimeAndRequeueDelay) {
  Json cj = make_cronjob("calc", "*/5 * * * *");
  auto schedule = CronSchedule::parse("*/5 * * * *").value();
  auto t = cronjob::most_recent_schedule_time(cj, at("2024-05-01T00:01:00Z"), schedule, true);
  ASSERT_TRUE(t.is_ok());
  EXPECT_FALSE(t.value().most_recent.has_value());
  EXPECT_EQ(cronjob::requeue_delay(cj, at("2024-05-01T00:01:00Z"), schedule), 240100ms);

  t = cronjob::most_recent_schedule_time(cj, at("2024-05-01T00:20:10Z"), schedule, true);
  ASSERT_TRUE(t.is_ok());
  EXPECT_EQ(t.value().most_recent, at("2024-05-01T00:20:00Z"));
  EXPECT_EQ(t.value().missed, cronjob::Missed::kFew);

  cj["status"]["lastScheduleTime"] = "2024-05-01T00:20:00Z";
  t = cronjob::most_recent_schedule_time(cj, at("2024-05-01T00:20:10Z"), schedule, true);
  EXPECT_FALSE(t.value().most_recent.has_value());
  EXPECT_EQ(cronjob::requeue_delay(cj, at("2024-05-01T00:20:10Z"), schedule), 290100ms);

  // A starting deadline moves the earliest time considered up to now - deadline.
  cj["spec"]["startingDeadlineSeconds"] = 100;
  t = cronjob::most_recent_schedule_time(cj, at("2024-05-01T01:00:30Z"), schedule, true);
  EXPECT_EQ(t.value().earliest, at("2024-05-01T00:58:50Z"));
  EXPECT_EQ(t.value().most_recent, at("2024-05-01T01:00:00Z"));
  EXPECT_EQ(t.value().missed, cronjob::Missed::kNone);

  Json old = make_cronjob("old", "* * * * *");
  old["metadata"]["creationTimestamp"] = "2024-01-01T00:00:00Z";
  auto every_minute = CronSchedule::parse("* * * * *").value();
  t = cronjob::most_recent_schedule_time(old, at("2024-05-01T12:34:56Z"), every_minute, true);
  EXPECT_EQ(t.value().missed, cronjob::Missed::kMany);
  EXPECT_EQ(t.value().most_recent, at("2024-05-01T12:34:00Z"));

  auto never = CronSchedule::parse("0 0 30 2 *").value();
  EXPECT_FALSE(
      cronjob::most_recent_schedule_time(cj, at("2024-05-01T00:00:00Z"), never, true).is_ok());
  EXPECT_FALSE(cronjob::requeue_delay(cj, at("2024-05-01T00:00:00Z"), never).has_value());

  EXPECT_EQ(cronjob::job_name(cj, at("2024-05-01T00:05:00Z")), "calc-28575365");
}

}  // namespace
}  // namespace skiff::controllers
