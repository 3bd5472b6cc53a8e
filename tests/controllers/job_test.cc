#include <gtest/gtest.h>

#include <functional>
#include <set>
#include <thread>

#include "client/fake_api_client.h"
#include "controller_test_util.h"
#include "controllers/controller_utils.h"
#include "controllers/job/job_controller.h"
#include "controllers/job/job_util.h"
#include "controllers/job/ttlafterfinished_controller.h"

namespace skiff::controllers {
namespace {

using testing::ControllerTest;
using testing::eventually;
using namespace std::chrono_literals;
using client::resources::kEvents;
using client::resources::kJobs;
using client::resources::kPods;

// A Job as the API server stores it after defaulting (selector and labels by uid).
Json make_job(const std::string& name, const std::string& uid, const Json& spec = Json::object()) {
  Json job = {{"apiVersion", "batch/v1"},
              {"kind", "Job"},
              {"metadata", {{"name", name}, {"namespace", "default"}, {"uid", uid}}},
              {"spec",
               {{"parallelism", 1},
                {"completions", 1},
                {"backoffLimit", 6},
                {"completionMode", "NonIndexed"},
                {"selector", {{"matchLabels", {{"batch.kubernetes.io/controller-uid", uid}}}}},
                {"template",
                 {{"metadata",
                   {{"labels",
                     {{"batch.kubernetes.io/controller-uid", uid},
                      {"batch.kubernetes.io/job-name", name},
                      {"app", "batch"}}}}},
                  {"spec",
                   {{"restartPolicy", "Never"},
                    {"containers", {{{"name", "c"}, {"image", "busybox"}}}}}}}}}}};
  for (auto it = spec.begin(); it != spec.end(); ++it) {
    if (it.value().is_null()) {
      job["spec"].erase(it.key());
    } else {
      job["spec"][it.key()] = it.value();
    }
  }
  return job;
}

class JobTest : public ControllerTest<> {
 protected:
  // Frequent resyncs let the controllers notice FakeClock advances (back-off, deadlines, TTL).
  JobTest() : ControllerTest({}, 20ms) {}

  using Factory = std::function<std::unique_ptr<Controller>(ControllerContext&)>;

  void start(std::vector<Factory> factories = {new_job_controller}) {
    for (auto& f : factories) controllers_.push_back(f(ctx_));
    for (auto& c : controllers_) c->start();
    informers_.start();
  }

  void TearDown() override {
    for (auto& c : controllers_) c->stop();
    informers_.stop();
  }

  std::vector<Json> pods_of(const std::string& job_uid) {
    std::vector<Json> out;
    Json listed = api_.list(kPods, "default").value();
    for (auto& p : listed["items"]) {
      if (is_controlled_by(p, job_uid)) out.push_back(p);
    }
    std::sort(out.begin(), out.end(), [](const Json& a, const Json& b) {
      return a["metadata"]["name"] < b["metadata"]["name"];
    });
    return out;
  }

  std::vector<Json> active_pods_of(const std::string& job_uid) {
    std::vector<Json> out;
    for (auto& p : pods_of(job_uid)) {
      if (is_pod_active(p)) out.push_back(p);
    }
    return out;
  }

  Json job(const std::string& name) { return api_.get(kJobs, "default", name).value(); }

  Json status(const std::string& name) { return job(name).value("status", Json::object()); }

  int64_t count(const std::string& name, const char* field) {
    return status(name).value(field, int64_t{0});
  }

  bool condition(const std::string& name, const std::string& type, const std::string& reason = "") {
    Json st = status(name);
    const Json* c = find_condition(st, type);
    return c && c->value("status", "") == "True" &&
           (reason.empty() || c->value("reason", "") == reason);
  }

  // What the kubelet would report for a pod that ran and ended (written with a PUT when
  // `put`, so a test can make PATCH requests fail).
  void finish(const Json& pod, const std::string& phase, bool put = false) {
    Json patch = {{"status",
                   {{"phase", phase},
                    {"containerStatuses",
                     {{{"name", "c"},
                       {"restartCount", 0},
                       {"state",
                        {{"terminated",
                          {{"exitCode", phase == "Succeeded" ? 0 : 1},
                           {"finishedAt", rfc3339(clock_.now_seconds())}}}}}}}}}}};
    std::string name = pod["metadata"]["name"].get<std::string>();
    if (put) {
      Json current = api_.get(kPods, "default", name).value();
      current["status"] = patch["status"];
      ASSERT_TRUE(api_.update(kPods, "default", current, {}, "status").is_ok());
      return;
    }
    ASSERT_TRUE(
        api_.patch(kPods, "default", name, client::PatchType::kMerge, patch.dump(), {}, "status")
            .is_ok());
  }

  void run(const Json& pod, bool ready) {
    Json patch = {{"status",
                   {{"phase", "Running"},
                    {"conditions",
                     {{{"type", "Ready"},
                       {"status", ready ? "True" : "False"},
                       {"lastTransitionTime", rfc3339(clock_.now_seconds())}}}}}}};
    ASSERT_TRUE(api_.patch(kPods, "default", pod["metadata"]["name"].get<std::string>(),
                           client::PatchType::kMerge, patch.dump(), {}, "status")
                    .is_ok());
  }

  std::vector<std::string> events(const std::string& reason) {
    std::vector<std::string> out;
    Json listed = api_.list(kEvents, "default").value();
    for (auto& e : listed["items"]) {
      if (e.value("reason", "") == reason) out.push_back(e.value("message", ""));
    }
    return out;
  }

  bool has_event(const std::string& reason, const std::string& message_part = "") {
    for (const auto& m : events(reason)) {
      if (m.find(message_part) != std::string::npos) return true;
    }
    return false;
  }

  std::vector<std::unique_ptr<Controller>> controllers_;
};

TEST_F(JobTest, RunsCompletionsWithParallelismAndCompletes) {
  api_.seed(kJobs, make_job("pi", "uid-pi", {{"completions", 3}, {"parallelism", 2}}));
  start();
  ASSERT_TRUE(eventually([&] { return pods_of("uid-pi").size() == 2; }));
  auto pods = pods_of("uid-pi");
  for (const auto& p : pods) {
    const Json& meta = p["metadata"];
    EXPECT_EQ(meta["generateName"], "pi-");
    EXPECT_EQ(meta["name"].get<std::string>().rfind("pi-", 0), 0u);
    EXPECT_EQ(meta["labels"]["batch.kubernetes.io/job-name"], "pi");
    EXPECT_EQ(meta["labels"]["batch.kubernetes.io/controller-uid"], "uid-pi");
    EXPECT_EQ(meta["labels"]["job-name"], "pi");
    EXPECT_EQ(meta["labels"]["controller-uid"], "uid-pi");
    EXPECT_EQ(meta["labels"]["app"], "batch");
    EXPECT_EQ(meta["finalizers"], Json::array({"batch.kubernetes.io/job-tracking"}));
    EXPECT_EQ(meta["ownerReferences"][0]["kind"], "Job");
    EXPECT_EQ(meta["ownerReferences"][0]["apiVersion"], "batch/v1");
    EXPECT_TRUE(meta["ownerReferences"][0]["controller"].get<bool>());
    EXPECT_EQ(p["spec"]["restartPolicy"], "Never");
  }
  ASSERT_TRUE(eventually([&] { return count("pi", "active") == 2; }));
  EXPECT_EQ(status("pi")["startTime"], rfc3339(clock_.now_seconds()));
  EXPECT_EQ(status("pi")["ready"], 0);

  run(pods[0], true);
  ASSERT_TRUE(eventually([&] { return count("pi", "ready") == 1; }));

  finish(pods[0], "Succeeded");
  ASSERT_TRUE(eventually([&] {
    return count("pi", "succeeded") == 1 && pods_of("uid-pi").size() == 3 &&
           count("pi", "active") == 2;
  }));
  // Counted, so its finalizer is gone.
  ASSERT_TRUE(eventually([&] {
    return !job::has_tracking_finalizer(
        api_.get(kPods, "default", pods[0]["metadata"]["name"].get<std::string>()).value());
  }));
  EXPECT_FALSE(condition("pi", "Complete"));

  for (const auto& p : active_pods_of("uid-pi")) finish(p, "Succeeded");
  ASSERT_TRUE(eventually([&] { return condition("pi", "Complete"); }));
  Json st = status("pi");
  EXPECT_EQ(st["succeeded"], 3);
  EXPECT_FALSE(st.contains("failed"));
  EXPECT_FALSE(st.contains("active"));
  EXPECT_EQ(st["completionTime"], rfc3339(clock_.now_seconds()));
  EXPECT_TRUE(condition("pi", "SuccessCriteriaMet", "CompletionsReached"));
  EXPECT_EQ(st["uncountedTerminatedPods"], Json::object());
  for (const auto& p : pods_of("uid-pi")) EXPECT_FALSE(job::has_tracking_finalizer(p));
  ASSERT_TRUE(eventually([&] { return events("SuccessfulCreate").size() == 3; }));
  EXPECT_TRUE(has_event("SuccessfulCreate", "Created pod: pi-"));
  ASSERT_TRUE(eventually([&] { return has_event("Completed", "Job completed"); }));
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(pods_of("uid-pi").size(), 3u);
}

TEST_F(JobTest, WorkQueueJobCompletesWhenOneSucceededAndAllFinished) {
  api_.seed(kJobs, make_job("queue", "uid-q", {{"completions", nullptr}, {"parallelism", 2}}));
  start();
  ASSERT_TRUE(eventually([&] { return pods_of("uid-q").size() == 2; }));
  auto pods = pods_of("uid-q");
  finish(pods[0], "Succeeded");
  ASSERT_TRUE(eventually([&] { return count("queue", "succeeded") == 1; }));
  // No new pods once one succeeded; the Job waits for the other.
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(pods_of("uid-q").size(), 2u);
  EXPECT_FALSE(condition("queue", "Complete"));
  finish(pods[1], "Succeeded");
  ASSERT_TRUE(eventually([&] { return condition("queue", "Complete"); }));
  EXPECT_EQ(count("queue", "succeeded"), 2);
}

TEST_F(JobTest, IndexedJobRunsEachIndexOnce) {
  api_.seed(kJobs,
            make_job("idx", "uid-idx",
                     {{"completions", 3}, {"parallelism", 3}, {"completionMode", "Indexed"}}));
  start();
  ASSERT_TRUE(eventually([&] { return pods_of("uid-idx").size() == 3; }));
  std::map<int, Json> by_index;
  for (const auto& p : pods_of("uid-idx")) {
    int ix = job::completion_index(p);
    ASSERT_GE(ix, 0);
    std::string s = std::to_string(ix);
    EXPECT_EQ(p["metadata"]["generateName"], "idx-" + s + "-");
    EXPECT_EQ(p["metadata"]["labels"]["batch.kubernetes.io/job-completion-index"], s);
    EXPECT_EQ(p["spec"]["hostname"], "idx-" + s);
    const Json& env = p["spec"]["containers"][0]["env"][0];
    EXPECT_EQ(env["name"], "JOB_COMPLETION_INDEX");
    EXPECT_EQ(env["valueFrom"]["fieldRef"]["fieldPath"],
              "metadata.annotations['batch.kubernetes.io/job-completion-index']");
    by_index[ix] = p;
  }
  ASSERT_EQ(by_index.size(), 3u);

  finish(by_index[1], "Succeeded");
  ASSERT_TRUE(eventually([&] { return status("idx").value("completedIndexes", "") == "1"; }));
  EXPECT_EQ(count("idx", "succeeded"), 1);

  // A failed index is run again, after the back-off.
  finish(by_index[0], "Failed");
  ASSERT_TRUE(eventually([&] { return count("idx", "failed") == 1; }));
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(active_pods_of("uid-idx").size(), 1u);
  clock_.advance(11s);
  ASSERT_TRUE(eventually([&] { return active_pods_of("uid-idx").size() == 2; }));
  Json again;
  for (const auto& p : active_pods_of("uid-idx")) {
    if (job::completion_index(p) == 0) again = p;
  }
  ASSERT_FALSE(again.is_null());
  finish(again, "Succeeded");
  ASSERT_TRUE(eventually([&] { return status("idx").value("completedIndexes", "") == "0,1"; }));
  finish(by_index[2], "Succeeded");
  ASSERT_TRUE(eventually([&] { return condition("idx", "Complete"); }));
  EXPECT_EQ(status("idx")["completedIndexes"], "0-2");
  EXPECT_EQ(count("idx", "succeeded"), 3);
  EXPECT_EQ(count("idx", "failed"), 1);
}

TEST_F(JobTest, BacksOffAfterFailuresAndFailsPastTheBackoffLimit) {
  api_.seed(kJobs, make_job("flaky", "uid-f", {{"backoffLimit", 2}}));
  start();
  ASSERT_TRUE(eventually([&] { return pods_of("uid-f").size() == 1; }));
  finish(pods_of("uid-f")[0], "Failed");
  ASSERT_TRUE(eventually([&] { return count("flaky", "failed") == 1; }));
  // 10 s of back-off before the next pod.
  std::this_thread::sleep_for(150ms);
  EXPECT_EQ(active_pods_of("uid-f").size(), 0u);
  clock_.advance(9s);
  std::this_thread::sleep_for(150ms);
  EXPECT_EQ(active_pods_of("uid-f").size(), 0u);
  clock_.advance(2s);
  ASSERT_TRUE(eventually([&] { return active_pods_of("uid-f").size() == 1; }));

  finish(active_pods_of("uid-f")[0], "Failed");
  ASSERT_TRUE(eventually([&] { return count("flaky", "failed") == 2; }));
  // Now 20 s.
  clock_.advance(11s);
  std::this_thread::sleep_for(150ms);
  EXPECT_EQ(active_pods_of("uid-f").size(), 0u);
  clock_.advance(10s);
  ASSERT_TRUE(eventually([&] { return active_pods_of("uid-f").size() == 1; }));

  finish(active_pods_of("uid-f")[0], "Failed");
  ASSERT_TRUE(eventually([&] { return condition("flaky", "Failed"); }));
  EXPECT_TRUE(condition("flaky", "Failed", "BackoffLimitExceeded"));
  EXPECT_TRUE(condition("flaky", "FailureTarget", "BackoffLimitExceeded"));
  EXPECT_EQ(count("flaky", "failed"), 3);
  EXPECT_FALSE(status("flaky").contains("completionTime"));
  for (const auto& p : pods_of("uid-f")) EXPECT_FALSE(job::has_tracking_finalizer(p));
  ASSERT_TRUE(eventually([&] {
    return has_event("BackoffLimitExceeded", "Job has reached the specified backoff limit");
  }));
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(pods_of("uid-f").size(), 3u);
}

TEST_F(JobTest, RestartsOfOnFailurePodsCountAgainstTheBackoffLimit) {
  Json spec = make_job("restarts", "uid-r")["spec"];
  spec["template"]["spec"]["restartPolicy"] = "OnFailure";
  spec["backoffLimit"] = 2;
  api_.seed(kJobs, make_job("restarts", "uid-r", spec));
  start();
  ASSERT_TRUE(eventually([&] { return pods_of("uid-r").size() == 1; }));
  Json patch = {
      {"status",
       {{"phase", "Running"}, {"containerStatuses", {{{"name", "c"}, {"restartCount", 2}}}}}}};
  ASSERT_TRUE(api_.patch(kPods, "default",
                         pods_of("uid-r")[0]["metadata"]["name"].get<std::string>(),
                         client::PatchType::kMerge, patch.dump(), {}, "status")
                  .is_ok());
  ASSERT_TRUE(eventually([&] { return condition("restarts", "Failed", "BackoffLimitExceeded"); }));
  // The running pod was deleted and counted as failed.
  EXPECT_EQ(count("restarts", "failed"), 1);
  EXPECT_TRUE(pods_of("uid-r").empty());
}

TEST_F(JobTest, ActiveDeadlineFailsTheJobAndDeletesItsPods) {
  api_.seed(kJobs,
            make_job("slow", "uid-s",
                     {{"completions", 4}, {"parallelism", 2}, {"activeDeadlineSeconds", 30}}));
  start();
  ASSERT_TRUE(eventually([&] { return count("slow", "active") == 2; }));
  for (const auto& p : pods_of("uid-s")) run(p, true);
  clock_.advance(20s);
  std::this_thread::sleep_for(100ms);
  EXPECT_FALSE(condition("slow", "FailureTarget"));
  clock_.advance(11s);
  ASSERT_TRUE(eventually([&] { return condition("slow", "Failed"); }));
  EXPECT_TRUE(condition("slow", "Failed", "DeadlineExceeded"));
  EXPECT_TRUE(condition("slow", "FailureTarget", "DeadlineExceeded"));
  EXPECT_TRUE(pods_of("uid-s").empty());
  EXPECT_EQ(count("slow", "failed"), 2);
  EXPECT_EQ(count("slow", "active"), 0);
  EXPECT_EQ(status("slow")["terminating"], 0);
  ASSERT_TRUE(eventually([&] {
    return has_event("DeadlineExceeded", "Job was active longer than specified deadline");
  }));
  ASSERT_TRUE(eventually([&] { return events("SuccessfulDelete").size() == 2; }));
}

TEST_F(JobTest, SuspendDeletesPodsAndResumeRestartsTheClock) {
  api_.seed(kJobs, make_job("later", "uid-l",
                            {{"parallelism", 2}, {"completions", 2}, {"suspend", true}}));
  start();
  ASSERT_TRUE(eventually([&] { return condition("later", "Suspended", "JobSuspended"); }));
  EXPECT_TRUE(pods_of("uid-l").empty());
  EXPECT_FALSE(status("later").contains("startTime"));
  ASSERT_TRUE(eventually([&] { return has_event("Suspended", "Job suspended"); }));

  auto set_suspend = [&](bool v) {
    ASSERT_TRUE(api_.patch(kJobs, "default", "later", client::PatchType::kMerge,
                           Json{{"spec", {{"suspend", v}}}}.dump())
                    .is_ok());
  };
  set_suspend(false);
  ASSERT_TRUE(eventually([&] { return pods_of("uid-l").size() == 2; }));
  ASSERT_TRUE(eventually([&] {
    Json st = status("later");
    const Json* c = find_condition(st, "Suspended");
    return c && c->value("status", "") == "False" && c->value("reason", "") == "JobResumed";
  }));
  std::string first_start = status("later").value("startTime", "");
  EXPECT_EQ(first_start, rfc3339(clock_.now_seconds()));

  clock_.advance(100s);
  set_suspend(true);
  ASSERT_TRUE(eventually([&] { return pods_of("uid-l").empty(); }));
  ASSERT_TRUE(eventually([&] { return condition("later", "Suspended", "JobSuspended"); }));
  ASSERT_TRUE(eventually([&] { return count("later", "active") == 0; }));
  // Pods removed for a suspension are not failures.
  EXPECT_EQ(count("later", "failed"), 0);

  clock_.advance(50s);
  set_suspend(false);
  ASSERT_TRUE(eventually([&] { return pods_of("uid-l").size() == 2; }));
  ASSERT_TRUE(eventually(
      [&] { return status("later").value("startTime", "") == rfc3339(clock_.now_seconds()); }));
  EXPECT_NE(status("later").value("startTime", ""), first_start);
  ASSERT_TRUE(eventually([&] { return has_event("Resumed", "Job resumed"); }));
}

TEST_F(JobTest, PodDeletedWhileRunningIsCountedAndReplaced) {
  api_.seed(kJobs, make_job("lost", "uid-lost"));
  start();
  ASSERT_TRUE(eventually([&] { return pods_of("uid-lost").size() == 1; }));
  Json first = pods_of("uid-lost")[0];
  run(first, true);
  // The node goes away and the pod is deleted: the finalizer keeps it until it is counted.
  ASSERT_TRUE(api_.remove(kPods, "default", first["metadata"]["name"].get<std::string>()).is_ok());
  ASSERT_TRUE(eventually([&] { return count("lost", "failed") == 1; }));
  ASSERT_TRUE(eventually([&] { return pods_of("uid-lost").empty(); }));
  clock_.advance(11s);
  ASSERT_TRUE(eventually([&] { return active_pods_of("uid-lost").size() == 1; }));
  Json second = active_pods_of("uid-lost")[0];
  EXPECT_NE(second["metadata"]["name"], first["metadata"]["name"]);
  finish(second, "Succeeded");
  ASSERT_TRUE(eventually([&] { return condition("lost", "Complete"); }));
  EXPECT_EQ(count("lost", "failed"), 1);
  EXPECT_EQ(count("lost", "succeeded"), 1);
}

TEST_F(JobTest, ScalingDownParallelismDeletesTheLeastAdvancedPods) {
  api_.seed(kJobs, make_job("wide", "uid-w", {{"completions", 10}, {"parallelism", 3}}));
  start();
  ASSERT_TRUE(eventually([&] { return pods_of("uid-w").size() == 3; }));
  auto pods = pods_of("uid-w");
  run(pods[0], true);
  run(pods[1], true);
  // The controller has seen them running.
  ASSERT_TRUE(eventually([&] { return count("wide", "ready") == 2; }));
  ASSERT_TRUE(api_.patch(kJobs, "default", "wide", client::PatchType::kMerge,
                         Json{{"spec", {{"parallelism", 2}}}}.dump())
                  .is_ok());
  ASSERT_TRUE(eventually([&] { return pods_of("uid-w").size() == 2; }));
  std::set<std::string> left;
  for (const auto& p : pods_of("uid-w")) left.insert(p["metadata"]["name"]);
  EXPECT_EQ(left,
            (std::set<std::string>{pods[0]["metadata"]["name"], pods[1]["metadata"]["name"]}));
  ASSERT_TRUE(eventually([&] { return count("wide", "active") == 2; }));
  EXPECT_EQ(count("wide", "failed"), 0);
}

TEST_F(JobTest, RetriesFailedPodCreationsAndStatusConflicts) {
  api_.fail("create", "pods", error(StatusCode::kResourceExhausted, "exceeded quota: q"), 1);
  api_.fail(
      "update", "jobs.batch",
      error(StatusCode::kAborted, "Operation cannot be fulfilled: the object has been modified"),
      2);
  api_.seed(kJobs, make_job("retry", "uid-rt", {{"completions", 2}, {"parallelism", 2}}));
  start();
  ASSERT_TRUE(
      eventually([&] { return has_event("FailedCreate", "Error creating: exceeded quota: q"); }));
  ASSERT_TRUE(eventually([&] { return pods_of("uid-rt").size() == 2; }));
  ASSERT_TRUE(eventually([&] { return count("retry", "active") == 2; }));
  for (const auto& p : pods_of("uid-rt")) finish(p, "Succeeded");
  ASSERT_TRUE(eventually([&] { return condition("retry", "Complete"); }));
  EXPECT_EQ(count("retry", "succeeded"), 2);
  EXPECT_EQ(pods_of("uid-rt").size(), 2u);
}

TEST_F(JobTest, FinalizerRemovalFailureIsRetriedWithoutDoubleCounting) {
  api_.seed(kJobs, make_job("twice", "uid-t", {{"completions", 2}, {"parallelism", 1}}));
  start();
  ASSERT_TRUE(eventually([&] { return pods_of("uid-t").size() == 1; }));
  api_.fail("patch", "pods", error(StatusCode::kUnavailable, "try again"), 2);
  finish(pods_of("uid-t")[0], "Succeeded", /*put=*/true);
  ASSERT_TRUE(eventually([&] { return count("twice", "succeeded") == 1; }));
  ASSERT_TRUE(eventually([&] { return pods_of("uid-t").size() == 2; }));
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(count("twice", "succeeded"), 1);
  EXPECT_FALSE(status("twice")["uncountedTerminatedPods"].contains("succeeded"));
}

TEST_F(JobTest, DeletedJobReleasesItsPodsFinalizers) {
  api_.seed(kJobs, make_job("gone", "uid-g", {{"parallelism", 2}, {"completions", 2}}));
  start();
  ASSERT_TRUE(eventually([&] { return pods_of("uid-g").size() == 2; }));
  ASSERT_TRUE(api_.remove(kJobs, "default", "gone").is_ok());
  ASSERT_TRUE(eventually([&] {
    auto pods = pods_of("uid-g");
    return pods.size() == 2 && !job::has_tracking_finalizer(pods[0]) &&
           !job::has_tracking_finalizer(pods[1]);
  }));
}

TEST_F(JobTest, JobsManagedElsewhereAreLeftAlone) {
  api_.seed(kJobs, make_job("theirs", "uid-x", {{"managedBy", "example.com/other"}}));
  api_.seed(kJobs, make_job("ours", "uid-o", {{"managedBy", "kubernetes.io/job-controller"}}));
  start();
  ASSERT_TRUE(eventually([&] { return pods_of("uid-o").size() == 1; }));
  std::this_thread::sleep_for(100ms);
  EXPECT_TRUE(pods_of("uid-x").empty());
  EXPECT_FALSE(job("theirs").contains("status"));
}

TEST_F(JobTest, TtlDeletesFinishedJobsAfterTheirTtl) {
  std::string done_at = rfc3339(clock_.now_seconds() - 10);
  Json finished_status = {
      {"conditions", {{{"type", "Complete"}, {"status", "True"}, {"lastTransitionTime", done_at}}}},
      {"completionTime", done_at}};
  Json expiring = make_job("expiring", "uid-e", {{"ttlSecondsAfterFinished", 60}});
  expiring["status"] = finished_status;
  Json kept = make_job("kept", "uid-k");
  kept["status"] = finished_status;
  Json running = make_job("running", "uid-run", {{"ttlSecondsAfterFinished", 0}});
  Json failed = make_job("failed", "uid-fl", {{"ttlSecondsAfterFinished", 0}});
  failed["status"] = {
      {"conditions", {{{"type", "Failed"}, {"status", "True"}, {"lastTransitionTime", done_at}}}}};
  for (const Json* j : {&expiring, &kept, &running, &failed}) api_.seed(kJobs, *j);
  start({new_ttlafterfinished_controller});
  // TTL 0 after finishing: deleted at once.
  ASSERT_TRUE(eventually([&] { return !api_.get(kJobs, "default", "failed").is_ok(); }));
  std::this_thread::sleep_for(100ms);
  EXPECT_TRUE(api_.get(kJobs, "default", "expiring").is_ok());
  clock_.advance(49s);
  std::this_thread::sleep_for(100ms);
  EXPECT_TRUE(api_.get(kJobs, "default", "expiring").is_ok());
  clock_.advance(2s);
  // Deleted outright: with Background propagation no finalizer holds it (Foreground or Orphan
  // would leave it with a deletionTimestamp).
  ASSERT_TRUE(eventually([&] { return !api_.get(kJobs, "default", "expiring").is_ok(); }));
  EXPECT_TRUE(api_.get(kJobs, "default", "kept").is_ok());
  EXPECT_TRUE(api_.get(kJobs, "default", "running").is_ok());
  EXPECT_EQ(api_.actions("delete", "jobs.batch").size(), 2u);
}

TEST_F(JobTest, TtlChangesAreHonoured) {
  std::string done_at = rfc3339(clock_.now_seconds() - 100);
  Json j = make_job("changed", "uid-c", {{"ttlSecondsAfterFinished", 1000}});
  j["status"] = {{"conditions",
                  {{{"type", "Complete"}, {"status", "True"}, {"lastTransitionTime", done_at}}}}};
  api_.seed(kJobs, j);
  start({new_ttlafterfinished_controller});
  std::this_thread::sleep_for(150ms);
  EXPECT_TRUE(api_.get(kJobs, "default", "changed").is_ok());
  // Shortened below the time already passed: deleted now.
  ASSERT_TRUE(api_.patch(kJobs, "default", "changed", client::PatchType::kMerge,
                         Json{{"spec", {{"ttlSecondsAfterFinished", 60}}}}.dump())
                  .is_ok());
  ASSERT_TRUE(eventually([&] { return !api_.get(kJobs, "default", "changed").is_ok(); }));
}

// ---- the pure helpers ----

TEST(JobUtil, IndexSetsParseAndFormatAsUpstream) {
  auto s = job::IndexSet::parse("1,3-5", 10);
  EXPECT_EQ(s.total(), 4);
  EXPECT_TRUE(s.has(4));
  EXPECT_FALSE(s.has(2));
  EXPECT_EQ(s.to_string(), "1,3-5");
  s.add(2);
  EXPECT_EQ(s.to_string(), "1-5");
  s.add(7);
  s.add(8);
  EXPECT_EQ(s.to_string(), "1-5,7,8");
  s.add(0);
  s.add(6);
  EXPECT_EQ(s.to_string(), "0-8");
  // Out of range and malformed entries are skipped.
  EXPECT_EQ(job::IndexSet::parse("0,2-9,x,5-3,12", 4).to_string(), "0,2,3");
  EXPECT_EQ(job::IndexSet::parse("", 4).total(), 0);
}

TEST(JobUtil, BackoffDoublesFromTenSecondsUpToSixMinutes) {
  using std::chrono::seconds;
  EXPECT_EQ(job::backoff_remaining(0, 100, 100), seconds(0));
  EXPECT_EQ(job::backoff_remaining(1, 100, 100), seconds(10));
  EXPECT_EQ(job::backoff_remaining(1, 100, 104), seconds(6));
  EXPECT_EQ(job::backoff_remaining(1, 100, 111), seconds(0));
  EXPECT_EQ(job::backoff_remaining(2, 100, 100), seconds(20));
  EXPECT_EQ(job::backoff_remaining(3, 100, 100), seconds(40));
  EXPECT_EQ(job::backoff_remaining(6, 100, 100), seconds(320));
  EXPECT_EQ(job::backoff_remaining(7, 100, 100), seconds(360));
  EXPECT_EQ(job::backoff_remaining(50, 100, 100), seconds(360));
}

TEST(JobUtil, PodFinishTimeAndBackoffRecords) {
  Json by_containers = {
      {"metadata", {{"creationTimestamp", "2024-01-01T00:00:00Z"}}},
      {"status",
       {{"containerStatuses",
         {{{"state", {{"terminated", {{"finishedAt", "2024-01-01T00:01:00Z"}}}}}},
          {{"state", {{"terminated", {{"finishedAt", "2024-01-01T00:02:00Z"}}}}}}}}}}};
  EXPECT_EQ(job::pod_finish_time(by_containers), parse_rfc3339("2024-01-01T00:02:00Z"));
  Json by_ready = {{"metadata", {{"creationTimestamp", "2024-01-01T00:00:00Z"}}},
                   {"status",
                    {{"conditions",
                      {{{"type", "Ready"},
                        {"status", "False"},
                        {"lastTransitionTime", "2024-01-01T00:03:00Z"}}}}}}};
  EXPECT_EQ(job::pod_finish_time(by_ready), parse_rfc3339("2024-01-01T00:03:00Z"));
  Json by_deletion = {{"metadata",
                       {{"creationTimestamp", "2024-01-01T00:00:00Z"},
                        {"deletionTimestamp", "2024-01-01T00:05:00Z"},
                        {"deletionGracePeriodSeconds", 30}}}};
  EXPECT_EQ(job::pod_finish_time(by_deletion), parse_rfc3339("2024-01-01T00:04:30Z"));
  Json by_creation = {{"metadata", {{"creationTimestamp", "2024-01-01T00:00:00Z"}}}};
  EXPECT_EQ(job::pod_finish_time(by_creation), parse_rfc3339("2024-01-01T00:00:00Z"));

  job::BackoffStore store;
  auto r = store.next("ns/j", {}, {&by_creation, &by_ready});
  EXPECT_EQ(r.failures_after_last_success, 2);
  EXPECT_EQ(r.last_failure_time, parse_rfc3339("2024-01-01T00:03:00Z"));
  store.update("ns/j", r);
  // A success resets the count to the failures after it.
  r = store.next("ns/j", {&by_containers}, {&by_ready, &by_creation});
  EXPECT_EQ(r.failures_after_last_success, 1);
  EXPECT_EQ(r.last_failure_time, parse_rfc3339("2024-01-01T00:03:00Z"));
  r = store.next("ns/j", {&by_ready}, {});
  EXPECT_EQ(r.failures_after_last_success, 0);
  EXPECT_FALSE(r.last_failure_time.has_value());
}

TEST(JobUtil, DeletionOrderPrefersTheLeastAdvancedPod) {
  Json unscheduled = {{"metadata", {{"creationTimestamp", "2024-01-01T00:00:00Z"}}},
                      {"spec", Json::object()},
                      {"status", {{"phase", "Pending"}}}};
  Json pending = {{"metadata", {{"creationTimestamp", "2024-01-01T00:00:00Z"}}},
                  {"spec", {{"nodeName", "n1"}}},
                  {"status", {{"phase", "Pending"}}}};
  Json running = pending;
  running["status"]["phase"] = "Running";
  Json ready = running;
  ready["status"]["conditions"] = {
      {{"type", "Ready"}, {"status", "True"}, {"lastTransitionTime", "2024-01-01T00:01:00Z"}}};
  Json ready_longer = ready;
  ready_longer["status"]["conditions"][0]["lastTransitionTime"] = "2024-01-01T00:00:30Z";
  EXPECT_TRUE(job::delete_before(unscheduled, pending));
  EXPECT_TRUE(job::delete_before(pending, running));
  EXPECT_TRUE(job::delete_before(running, ready));
  EXPECT_TRUE(job::delete_before(ready, ready_longer));
  EXPECT_FALSE(job::delete_before(ready_longer, ready));
  Json newer = running;
  newer["metadata"]["creationTimestamp"] = "2024-01-02T00:00:00Z";
  EXPECT_TRUE(job::delete_before(newer, running));
  Json restarted = running;
  restarted["status"]["containerStatuses"] = {{{"restartCount", 3}}};
  EXPECT_TRUE(job::delete_before(restarted, newer));
}

}  // namespace
}  // namespace skiff::controllers
