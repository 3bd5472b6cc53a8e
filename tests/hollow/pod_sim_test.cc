#include "hollow/pod_sim.h"

#include <gtest/gtest.h>

#include "base/time.h"

namespace skiff::hollow {
namespace {

using namespace std::chrono_literals;

const Instant kT0{MonoTime(std::chrono::hours(1)), WallTime(std::chrono::seconds(1700000000))};

Json pod(Json containers, const std::string& restart_policy = "Always") {
  return {{"metadata", {{"name", "p"}, {"namespace", "ns"}, {"uid", "uid-1"}}},
          {"spec", {{"containers", containers}, {"restartPolicy", restart_policy}}},
          {"status", {{"phase", "Pending"}}}};
}

Json container(const std::string& name, Json command = nullptr) {
  Json c = {{"name", name}, {"image", "busybox:1.36"}};
  if (!command.is_null()) c["command"] = command;
  return c;
}

const Json* condition(const Json& status, const std::string& type) {
  for (const Json& c : status["conditions"]) {
    if (c["type"] == type) return &c;
  }
  return nullptr;
}

TEST(PodSim, RunningPodStatus) {
  Json p = pod({container("main", {"sleep", "3600"}), container("aux")});
  p["spec"]["initContainers"] = {container("init", {"true"})};
  p["status"]["conditions"] = {{{"type", "PodScheduled"}, {"status", "True"}}};
  PodRun run = start_pod(p, kT0);
  EXPECT_EQ(advance(run, kT0, {}), kT0.mono + 3600s);
  Json s = build_pod_status(p, run, "10.200.0.1", "10.128.0.2", kT0);
  EXPECT_EQ(s["phase"], "Running");
  EXPECT_EQ(s["hostIP"], "10.200.0.1");
  EXPECT_EQ(s["podIP"], "10.128.0.2");
  EXPECT_EQ(s["podIPs"], Json::array({{{"ip", "10.128.0.2"}}}));
  EXPECT_EQ(s["startTime"], rfc3339(1700000000));
  std::vector<std::string> types;
  for (const Json& c : s["conditions"]) {
    types.push_back(c["type"]);
    EXPECT_EQ(c["status"], "True") << c.dump();
  }
  EXPECT_EQ(types, (std::vector<std::string>{"PodReadyToStartContainers", "Initialized", "Ready",
                                             "ContainersReady", "PodScheduled"}));
  ASSERT_EQ(s["containerStatuses"].size(), 2u);
  const Json& aux = s["containerStatuses"][0];  // sorted by name
  const Json& main = s["containerStatuses"][1];
  EXPECT_EQ(aux["name"], "aux");
  EXPECT_EQ(main["name"], "main");
  EXPECT_EQ(main["image"], "busybox:1.36");
  EXPECT_EQ(main["imageID"], "hollow://sha256:" + sha256_hex("busybox:1.36"));
  EXPECT_EQ(main["containerID"].get<std::string>().rfind("hollow://", 0), 0u);
  EXPECT_NE(main["containerID"], aux["containerID"]);
  EXPECT_EQ(main["ready"], true);
  EXPECT_EQ(main["started"], true);
  EXPECT_EQ(main["restartCount"], 0);
  EXPECT_EQ(main["state"]["running"]["startedAt"], rfc3339(1700000000));
  const Json& init = s["initContainerStatuses"][0];
  EXPECT_EQ(init["state"]["terminated"]["reason"], "Completed");
  EXPECT_EQ(init["state"]["terminated"]["exitCode"], 0);
  EXPECT_EQ(init["ready"], false);

  // Unchanged run, later: unchanged status (no rewrite for nothing).
  p["status"] = s;
  EXPECT_EQ(merge_patch_diff(p["status"],
                             build_pod_status(p, run, "10.200.0.1", "10.128.0.2", kT0.plus(30s))),
            Json::object());
}

TEST(PodSim, NeverFailsWithTheExitCode) {
  Json p = pod({container("main", {"sh", "-c", "sleep 2; exit 3"})}, "Never");
  PodRun run = start_pod(p, kT0);
  EXPECT_EQ(advance(run, kT0.plus(1s), {}), kT0.mono + 2s);
  EXPECT_FALSE(is_terminal(run));
  EXPECT_EQ(advance(run, kT0.plus(2500ms), {}), std::nullopt);
  ASSERT_TRUE(is_terminal(run));
  Json s = build_pod_status(p, run, "h", "10.128.0.2", kT0.plus(2500ms));
  EXPECT_EQ(s["phase"], "Failed");
  const Json& term = s["containerStatuses"][0]["state"]["terminated"];
  EXPECT_EQ(term["exitCode"], 3);
  EXPECT_EQ(term["reason"], "Error");
  EXPECT_EQ(term["startedAt"], rfc3339(1700000000));
  EXPECT_EQ(term["finishedAt"], rfc3339(1700000002));
  EXPECT_EQ(s["containerStatuses"][0]["ready"], false);
  EXPECT_EQ((*condition(s, "Ready"))["status"], "False");
  EXPECT_EQ((*condition(s, "Ready"))["reason"], "PodCompleted");
  EXPECT_EQ((*condition(s, "ContainersReady"))["reason"], "PodCompleted");
  EXPECT_EQ((*condition(s, "PodReadyToStartContainers"))["status"], "False");
  EXPECT_EQ(s["podIP"], "10.128.0.2");
}

TEST(PodSim, SucceedsOnlyWhenEveryContainerEnded) {
  Json p = pod({container("a", {"sleep", "1"}), container("b", {"sleep", "3"})}, "Never");
  PodRun run = start_pod(p, kT0);
  advance(run, kT0.plus(2s), {});
  EXPECT_EQ(pod_phase(run), "Running");
  Json s = build_pod_status(p, run, "h", "i", kT0.plus(2s));
  EXPECT_EQ((*condition(s, "Ready"))["reason"], "ContainersNotReady");
  EXPECT_EQ((*condition(s, "Ready"))["message"], "containers with unready status: [a]");
  advance(run, kT0.plus(3s), {});
  EXPECT_EQ(pod_phase(run), "Succeeded");
}

TEST(PodSim, OnFailureRestartsWithBackoff) {
  Json p = pod({container("main", {"sh", "-c", "sleep 1; exit 1"})}, "OnFailure");
  PodRun run = start_pod(p, kT0);
  RestartBackoff b{10s, 40s};
  // Exits at 1 s and restarts at once (first restart), exits again at 2 s, then waits 10 s.
  auto next = advance(run, kT0.plus(2500ms), b);
  const ContainerRun& c = run.containers[0];
  EXPECT_EQ(c.restart_count, 1);
  EXPECT_EQ(c.state, ContainerRun::State::kBackOff);
  EXPECT_EQ(next, kT0.mono + 12s);
  Json s = build_pod_status(p, run, "h", "i", kT0.plus(2500ms));
  EXPECT_EQ(s["phase"], "Running");
  const Json& cs = s["containerStatuses"][0];
  EXPECT_EQ(cs["state"]["waiting"]["reason"], "CrashLoopBackOff");
  EXPECT_EQ(cs["lastState"]["terminated"]["exitCode"], 1);
  EXPECT_EQ(cs["ready"], false);
  // Restarts at 12 s; the next back-off doubles.
  next = advance(run, kT0.plus(12s), b);
  EXPECT_EQ(c.restart_count, 2);
  EXPECT_EQ(c.state, ContainerRun::State::kRunning);
  EXPECT_EQ(next, kT0.mono + 13s);
  advance(run, kT0.plus(13s), b);
  EXPECT_EQ(c.restart_at.mono, kT0.mono + 33s);
  s = build_pod_status(p, run, "h", "i", kT0.plus(13s));
  EXPECT_EQ(s["containerStatuses"][0]["lastState"]["terminated"]["finishedAt"],
            rfc3339(1700000013));
}

TEST(PodSim, OnFailureWithCodeZeroSucceedsAndAlwaysRestarts) {
  Json ok = pod({container("main", {"sleep", "1"})}, "OnFailure");
  PodRun run = start_pod(ok, kT0);
  advance(run, kT0.plus(5s), {});
  EXPECT_EQ(pod_phase(run), "Succeeded");
  EXPECT_EQ(run.containers[0].restart_count, 0);

  Json always = pod({container("main", {"sleep", "1"})}, "Always");
  run = start_pod(always, kT0);
  advance(run, kT0.plus(1500ms), {});
  EXPECT_EQ(pod_phase(run), "Running");
  EXPECT_EQ(run.containers[0].restart_count, 1);
  Json s = build_pod_status(always, run, "h", "i", kT0.plus(1500ms));
  EXPECT_EQ(s["containerStatuses"][0]["lastState"]["terminated"]["reason"], "Completed");
  EXPECT_NE(s["containerStatuses"][0]["containerID"],
            s["containerStatuses"][0]["lastState"]["terminated"]["containerID"]);
}

TEST(PodSim, KilledContainersExitWith143) {
  Json p = pod({container("main")});
  PodRun run = start_pod(p, kT0);
  kill_pod(run, kT0.plus(5s));
  EXPECT_TRUE(is_terminal(run));
  Json s = build_pod_status(p, run, "h", "i", kT0.plus(5s));
  EXPECT_EQ(s["phase"], "Failed");
  EXPECT_EQ(s["containerStatuses"][0]["state"]["terminated"]["exitCode"], 143);
}

TEST(PodSim, ReadinessProbeDelaysReady) {
  Json c = container("main");
  c["readinessProbe"] = {{"initialDelaySeconds", 5}};
  Json p = pod({c});
  PodRun run = start_pod(p, kT0);
  EXPECT_EQ(advance(run, kT0.plus(1s), {}), kT0.mono + 5s);
  Json s = build_pod_status(p, run, "h", "i", kT0.plus(1s));
  EXPECT_EQ((*condition(s, "Ready"))["status"], "False");
  EXPECT_EQ(s["containerStatuses"][0]["ready"], false);
  EXPECT_EQ(advance(run, kT0.plus(5s), {}), std::nullopt);
  p["status"] = s;
  s = build_pod_status(p, run, "h", "i", kT0.plus(5s));
  EXPECT_EQ((*condition(s, "Ready"))["status"], "True");
  EXPECT_EQ((*condition(s, "Ready"))["lastTransitionTime"], rfc3339(1700000005));
  // Conditions whose status did not change keep their transition time.
  EXPECT_EQ((*condition(s, "Initialized"))["lastTransitionTime"], rfc3339(1700000001));
}

TEST(PodSim, ReadinessGatesHoldReady) {
  Json p = pod({container("main")});
  p["spec"]["readinessGates"] = {{{"conditionType", "example.com/lb"}}};
  PodRun run = start_pod(p, kT0);
  Json s = build_pod_status(p, run, "h", "i", kT0);
  EXPECT_EQ((*condition(s, "Ready"))["status"], "False");
  EXPECT_EQ((*condition(s, "Ready"))["reason"], "ReadinessGatesNotReady");
  EXPECT_EQ((*condition(s, "ContainersReady"))["status"], "True");
  p["status"]["conditions"] = {{{"type", "example.com/lb"}, {"status", "True"}}};
  s = build_pod_status(p, run, "h", "i", kT0);
  EXPECT_EQ((*condition(s, "Ready"))["status"], "True");
  EXPECT_NE(condition(s, "example.com/lb"), nullptr);
}

TEST(PodSim, AdoptsARunFromItsStatus) {
  Json p = pod({container("main", {"sleep", "100"})}, "Always");
  PodRun first = start_pod(p, kT0);
  first.containers[0].restart_count = 2;
  p["status"] = build_pod_status(p, first, "h", "10.128.0.9", kT0);
  // 60 s later, another process takes over: the run goes on where it was.
  Instant later = kT0.plus(60s);
  PodRun adopted = adopt_pod(p, later);
  EXPECT_EQ(adopted.containers[0].restart_count, 2);
  EXPECT_EQ(advance(adopted, later, {}), later.mono + 40s);
  EXPECT_EQ(merge_patch_diff(p["status"], build_pod_status(p, adopted, "h", "10.128.0.9", later)),
            Json::object());
}

TEST(MergePatchDiff, NullsRemovedKeysAndRecursesIntoObjects) {
  Json from = {{"a", 1}, {"b", {{"x", 1}, {"y", 2}}}, {"c", {1, 2}}, {"gone", true}};
  Json to = {{"a", 1}, {"b", {{"x", 1}, {"y", 3}}}, {"c", {1}}, {"new", "v"}};
  EXPECT_EQ(merge_patch_diff(from, to),
            (Json{{"b", {{"y", 3}}}, {"c", {1}}, {"gone", nullptr}, {"new", "v"}}));
  EXPECT_EQ(merge_patch_diff(to, to), Json::object());
}

}  // namespace
}  // namespace skiff::hollow
