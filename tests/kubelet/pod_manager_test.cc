// The kubelet's pod lifecycle against an in-memory API and runtime: pods bound to the node get a
// sandbox and containers, restart as their policy says with back-off, report status as upstream
// writes it, terminate with grace when deleted, and are adopted (not recreated) by a restarted
// kubelet.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <set>

#include "base/kubeconfig.h"
#include "client/fake_api_client.h"
#include "kubelet/cri/fake_runtime.h"
#include "kubelet/kubelet.h"
#include "support/eventually.h"
#include "support/temp_dir.h"

namespace skiff::kubelet {
namespace {

using client::resources::kConfigMaps;
using client::resources::kPods;
using skiff::testing::eventually;
using skiff::testing::stays;
using std::chrono::milliseconds;

class PodManagerTest : public ::testing::Test {
 protected:
  PodManagerTest() {
    api_.set_graceful_pod_deletion(true);
    runtime_.add_image("busybox");
    options_.node.node_name = "n1";
    options_.node.node_ip = "192.0.2.10";
    options_.node.log_root = tmp_.sub("logs");
    options_.node.cgroup_root = "";
    options_.pods_dir = tmp_.sub("pods");
    options_.pleg_period = milliseconds(50);
    options_.resync_period = milliseconds(500);
    options_.backoff.initial = milliseconds(300);
    options_.backoff.max = milliseconds(1200);
  }
  ~PodManagerTest() override {
    if (manager_) manager_->stop();
  }

  void start() {
    manager_ = std::make_unique<PodManager>(api_, runtime_, runtime_, options_);
    manager_->start();
    ASSERT_TRUE(manager_->wait_for_sync(milliseconds(5000)));
  }

  Json pod(const std::string& name, Json containers, const std::string& policy = "Always") {
    for (Json& c : containers) {
      if (!c.contains("image")) c["image"] = "busybox";
      if (!c.contains("imagePullPolicy")) c["imagePullPolicy"] = "IfNotPresent";
    }
    return {{"apiVersion", "v1"},
            {"kind", "Pod"},
            {"metadata", {{"name", name}, {"namespace", "default"}}},
            {"spec",
             {{"nodeName", "n1"},
              {"restartPolicy", policy},
              {"terminationGracePeriodSeconds", 5},
              {"containers", containers}}},
            {"status", {{"phase", "Pending"}}}};
  }

  Json seed(Json p) { return api_.seed(kPods, std::move(p)); }

  Json get(const std::string& name) {
    auto p = api_.get(kPods, "default", name);
    return p.is_ok() ? *p : Json();
  }

  Json container_status(const std::string& name, size_t i = 0) {
    Json p = get(name);
    if (!p.is_object()) return Json();
    const Json& s = p.value("status", Json::object());
    if (!s.contains("containerStatuses") || s["containerStatuses"].size() <= i) return Json();
    return s["containerStatuses"][i];
  }

  std::string phase(const std::string& name) {
    Json p = get(name);
    if (!p.is_object()) return "";
    return p.value("status", Json::object()).value("phase", "");
  }

  // The ids of the pod's containers in the runtime, newest first.
  std::vector<v1::Container> containers_of(const std::string& uid) {
    v1::ContainerFilter f;
    (*f.mutable_label_selector())[kPodUidLabel] = uid;
    auto list = runtime_.list_containers(f);
    return list.is_ok() ? *list : std::vector<v1::Container>{};
  }

  std::string running_container(const std::string& uid) {
    for (const auto& c : containers_of(uid)) {
      if (c.state() == v1::CONTAINER_RUNNING) return c.id();
    }
    return "";
  }

  testing::TempDir tmp_{"skiff-kubelet-test"};
  client::FakeApiClient api_;
  cri::FakeRuntime runtime_;
  PodManagerOptions options_;
  std::unique_ptr<PodManager> manager_;
};

TEST_F(PodManagerTest, BoundPodRunsAndReportsRunningStatus) {
  Json p =
      seed(pod("web", Json::parse(R"([{"name": "main", "env": [{"name": "A", "value": "1"}]}])")));
  // A pod for another node is not ours.
  Json other = pod("elsewhere", Json::parse(R"([{"name": "main"}])"));
  other["spec"]["nodeName"] = "n2";
  seed(other);
  start();
  ASSERT_TRUE(eventually([&] { return phase("web") == "Running"; }));
  Json status = get("web")["status"];
  EXPECT_EQ(status["hostIP"], "192.0.2.10");
  EXPECT_EQ(status["podIP"].get<std::string>().rfind("10.42.0.", 0), 0u);
  EXPECT_EQ(status["containerStatuses"][0]["ready"], true);
  EXPECT_EQ(status["containerStatuses"][0]["restartCount"], 0);
  EXPECT_TRUE(status["containerStatuses"][0]["state"].contains("running"));
  EXPECT_EQ(
      status["containerStatuses"][0]["containerID"].get<std::string>().rfind("containerd://", 0),
      0u);
  std::map<std::string, std::string> conditions;
  for (const Json& c : status["conditions"]) conditions[c["type"]] = c["status"];
  EXPECT_EQ(conditions["Ready"], "True");
  EXPECT_EQ(conditions["ContainersReady"], "True");
  EXPECT_EQ(conditions["Initialized"], "True");
  EXPECT_EQ(conditions["PodReadyToStartContainers"], "True");
  EXPECT_EQ(phase("elsewhere"), "Pending");
  EXPECT_EQ(runtime_.call_count("RunPodSandbox"), 1);

  auto cs = containers_of(client::uid_of(p));
  ASSERT_EQ(cs.size(), 1u);
  auto config = runtime_.container_config(cs[0].id());
  ASSERT_TRUE(config.has_value());
  bool found = false;
  for (const auto& kv : config->envs()) found |= kv.key() == "A" && kv.value() == "1";
  EXPECT_TRUE(found);
  // The kubelet's events tell the story, as upstream's do.
  ASSERT_TRUE(eventually([&] {
    std::set<std::string> reasons;
    auto events = api_.list(client::resources::kEvents, "default");
    if (events.is_ok()) {
      for (const Json& e : (*events)["items"]) {
        if (e["involvedObject"].value("name", "") == "web") reasons.insert(e.value("reason", ""));
      }
    }
    return reasons.count("Pulled") && reasons.count("Created") && reasons.count("Started");
  }));
  // Nothing more happens while nothing changes.
  int creates = runtime_.call_count("CreateContainer");
  EXPECT_TRUE(
      stays([&] { return runtime_.call_count("CreateContainer") == creates; }, milliseconds(700)));
}

TEST_F(PodManagerTest, CrashingContainerRestartsWithBackOff) {
  Json p = seed(pod("crash", Json::parse(R"([{"name": "main"}])")));
  std::string uid = client::uid_of(p);
  start();
  ASSERT_TRUE(eventually([&] { return !running_container(uid).empty(); }));
  // First exit: restarted at once.
  ASSERT_TRUE(runtime_.exit_container(running_container(uid), 1).is_ok());
  ASSERT_TRUE(eventually([&] {
    Json s = container_status("crash");  // null until the first status is written
    return s.is_object() && s.value("restartCount", 0) == 1 && s["state"].contains("running");
  }));
  EXPECT_EQ(container_status("crash")["lastState"]["terminated"]["exitCode"], 1);
  EXPECT_EQ(container_status("crash")["lastState"]["terminated"]["reason"], "Error");
  // Second exit: CrashLoopBackOff until the back-off passes, then running again.
  ASSERT_TRUE(runtime_.exit_container(running_container(uid), 2).is_ok());
  ASSERT_TRUE(eventually([&] {
    Json s = container_status("crash");
    return s["state"].contains("waiting") && s["state"]["waiting"]["reason"] == "CrashLoopBackOff";
  }));
  EXPECT_NE(
      container_status("crash")["state"]["waiting"]["message"].get<std::string>().find("back-off"),
      std::string::npos);
  EXPECT_EQ(phase("crash"), "Running");  // restartPolicy Always: still Running
  ASSERT_TRUE(eventually([&] {
    return container_status("crash").value("restartCount", 0) == 2 &&
           container_status("crash")["state"].contains("running");
  }));
  // Old exited containers beyond the newest two are pruned.
  EXPECT_TRUE(eventually([&] { return containers_of(uid).size() <= 2u; }));
}

TEST_F(PodManagerTest, NeverAndOnFailurePoliciesEndThePod) {
  Json never = seed(pod("once", Json::parse(R"([{"name": "main"}])"), "Never"));
  Json onfail = seed(pod("retry", Json::parse(R"([{"name": "main"}])"), "OnFailure"));
  Json failing = seed(pod("fails", Json::parse(R"([{"name": "main"}])"), "Never"));
  start();
  for (const Json* p : {&never, &onfail, &failing}) {
    std::string uid = client::uid_of(*p);
    ASSERT_TRUE(eventually([&] { return !running_container(uid).empty(); }));
  }
  ASSERT_TRUE(runtime_.exit_container(running_container(client::uid_of(never)), 0).is_ok());
  ASSERT_TRUE(runtime_.exit_container(running_container(client::uid_of(failing)), 7).is_ok());
  ASSERT_TRUE(runtime_.exit_container(running_container(client::uid_of(onfail)), 3).is_ok());
  ASSERT_TRUE(eventually([&] { return phase("once") == "Succeeded"; }));
  ASSERT_TRUE(eventually([&] { return phase("fails") == "Failed"; }));
  EXPECT_EQ(container_status("once")["state"]["terminated"]["reason"], "Completed");
  EXPECT_EQ(container_status("fails")["state"]["terminated"]["exitCode"], 7);
  // OnFailure restarts a failure, then ends on success.
  std::string uid = client::uid_of(onfail);
  ASSERT_TRUE(eventually([&] {
    return container_status("retry").value("restartCount", 0) == 1 &&
           !running_container(uid).empty();
  }));
  ASSERT_TRUE(runtime_.exit_container(running_container(uid), 0).is_ok());
  ASSERT_TRUE(eventually([&] { return phase("retry") == "Succeeded"; }));
  // Finished pods keep their containers (for logs) but get no new ones; their sandboxes stop.
  EXPECT_TRUE(
      stays([&] { return running_container(client::uid_of(never)).empty(); }, milliseconds(600)));
  EXPECT_EQ(containers_of(client::uid_of(never)).size(), 1u);
  Json once = get("once");
  std::map<std::string, std::string> conditions;
  for (const Json& c : once["status"]["conditions"]) conditions[c["type"]] = c["status"];
  EXPECT_EQ(conditions["Ready"], "False");
  EXPECT_EQ(conditions["PodReadyToStartContainers"], "False");  // the sandbox was stopped
}

TEST_F(PodManagerTest, InitContainersRunInOrderBeforeContainers) {
  Json p = pod("init", Json::parse(R"([{"name": "main"}])"), "Never");
  p["spec"]["initContainers"] = Json::parse(
      R"([{"name": "first", "image": "busybox", "imagePullPolicy": "IfNotPresent"},
          {"name": "second", "image": "busybox", "imagePullPolicy": "IfNotPresent"}])");
  p = seed(p);
  std::string uid = client::uid_of(p);
  start();
  auto running_name = [&] {
    for (const auto& c : containers_of(uid)) {
      if (c.state() == v1::CONTAINER_RUNNING) return c.metadata().name();
    }
    return std::string();
  };
  ASSERT_TRUE(eventually([&] { return running_name() == "first"; }));
  ASSERT_TRUE(eventually([&] {
    return phase("init") == "Pending" &&
           container_status("init")["state"]["waiting"]["reason"] == "PodInitializing";
  }));
  ASSERT_TRUE(runtime_.exit_container(running_container(uid), 0).is_ok());
  ASSERT_TRUE(eventually([&] { return running_name() == "second"; }));
  ASSERT_TRUE(runtime_.exit_container(running_container(uid), 0).is_ok());
  ASSERT_TRUE(eventually([&] { return running_name() == "main" && phase("init") == "Running"; }));
  Json status = get("init")["status"];
  ASSERT_EQ(status["initContainerStatuses"].size(), 2u);
  EXPECT_EQ(status["initContainerStatuses"][1]["state"]["terminated"]["reason"], "Completed");
}

TEST_F(PodManagerTest, FailedInitContainerFailsANeverPod) {
  Json p = pod("badinit", Json::parse(R"([{"name": "main"}])"), "Never");
  p["spec"]["initContainers"] =
      Json::parse(R"([{"name": "setup", "image": "busybox", "imagePullPolicy": "IfNotPresent"}])");
  p = seed(p);
  std::string uid = client::uid_of(p);
  start();
  ASSERT_TRUE(eventually([&] { return !running_container(uid).empty(); }));
  ASSERT_TRUE(runtime_.exit_container(running_container(uid), 1).is_ok());
  ASSERT_TRUE(eventually([&] { return phase("badinit") == "Failed"; }));
  for (const auto& c : containers_of(uid)) EXPECT_NE(c.metadata().name(), "main");
}

TEST_F(PodManagerTest, DeletedPodIsStoppedWithGraceThenRemovedAndCleanedUp) {
  Json p = seed(pod("bye", Json::parse(R"([{"name": "main"}])")));
  std::string uid = client::uid_of(p);
  start();
  ASSERT_TRUE(eventually([&] { return phase("bye") == "Running"; }));
  std::string id = running_container(uid);
  ASSERT_TRUE(runtime_.set_stop_exit_code(id, 143).is_ok());
  ASSERT_TRUE(std::filesystem::exists(options_.pods_dir + "/" + uid));
  client::DeleteOptions graceful;
  graceful.grace_period_seconds = 4;
  ASSERT_TRUE(api_.remove(kPods, "default", "bye", graceful).is_ok());
  ASSERT_TRUE(eventually([&] { return !api_.get(kPods, "default", "bye").is_ok(); }));
  // The final status was written before the delete, and the delete was unconditional.
  bool final_status = false;
  for (const auto& a : api_.actions()) {
    if (a.verb == "patch" && a.subresource == "status" && a.name == "bye" &&
        a.object.dump().find("\"Failed\"") != std::string::npos)
      final_status = true;
  }
  EXPECT_TRUE(final_status);
  ASSERT_TRUE(eventually([&] { return containers_of(uid).empty(); }));
  v1::PodSandboxFilter f;
  (*f.mutable_label_selector())[kPodUidLabel] = uid;
  ASSERT_TRUE(eventually([&] { return runtime_.list_pod_sandbox(f)->empty(); }));
  ASSERT_TRUE(eventually([&] { return !std::filesystem::exists(options_.pods_dir + "/" + uid); }));
  ASSERT_TRUE(eventually([&] { return manager_->pods_tracked() == 0; }));
}

TEST_F(PodManagerTest, MissingConfigMapWaitsThenStarts) {
  Json p = pod("cfg", Json::parse(R"([{"name": "main", "env": [{"name": "M",
      "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "mode"}}}]}])"));
  p = seed(p);
  start();
  ASSERT_TRUE(eventually([&] {
    return container_status("cfg")["state"]["waiting"]["reason"] == "CreateContainerConfigError";
  }));
  EXPECT_EQ(container_status("cfg")["state"]["waiting"]["message"],
            "configmap \"settings\" not found");
  api_.seed(kConfigMaps, {{"apiVersion", "v1"},
                          {"kind", "ConfigMap"},
                          {"metadata", {{"name", "settings"}, {"namespace", "default"}}},
                          {"data", {{"mode", "fast"}}}});
  ASSERT_TRUE(eventually([&] { return phase("cfg") == "Running"; }, milliseconds(10000)));
}

TEST_F(PodManagerTest, ImagePullFailuresBackOff) {
  Json p = pod("img", Json::parse(R"([{"name": "main", "image": "example.invalid/nope:1"}])"));
  seed(p);
  start();
  // ErrImagePull is written first (it may be short-lived: the next sync is in back-off).
  ASSERT_TRUE(eventually([&] {
    for (const auto& a : api_.actions("patch", "pods")) {
      if (a.name == "img" && a.object.dump().find("\"ErrImagePull\"") != std::string::npos)
        return true;
    }
    return false;
  }));
  ASSERT_TRUE(eventually(
      [&] { return container_status("img")["state"]["waiting"]["reason"] == "ImagePullBackOff"; }));
  // Never: no pull at all.
  Json never = pod("never", Json::parse(R"([{"name": "main", "image": "absent:2",
                                             "imagePullPolicy": "Never"}])"));
  seed(never);
  ASSERT_TRUE(eventually([&] {
    return container_status("never")["state"]["waiting"]["reason"] == "ErrImageNeverPull";
  }));
  for (const std::string& pulled : runtime_.pulled_images())
    EXPECT_EQ(pulled.find("absent"), std::string::npos);
}

// Upstream's sequence for a failing pull: the status written right after the pull says
// ErrImagePull with the runtime's error as the message; syncs while the image's back-off runs do
// not pull and say ImagePullBackOff; the next pull comes when the back-off ends (doubling), and
// the kubelet's own status write does not make it sync again meanwhile.
TEST_F(PodManagerTest, FailedPullWritesErrImagePullAndWaitsOutTheBackOff) {
  options_.backoff.initial = milliseconds(2000);
  options_.backoff.max = milliseconds(8000);
  options_.resync_period = milliseconds(60000);  // syncs come from the back-off, not a ticker
  const std::string image = "registry.example:5000/private/app:1";
  runtime_.set_pull_error(Status(StatusCode::kInternal, "unexpected status: 401 Unauthorized"));
  const std::string pull_error =
      "failed to pull and unpack image \"" + image + "\": unexpected status: 401 Unauthorized";
  seed(pod("img",
           Json::array({{{"name", "main"}, {"image", image}, {"imagePullPolicy", "Always"}}})));
  auto waiting = [&] { return container_status("img")["state"]["waiting"]; };
  // Pulls attempted so far (pulled_images() has only the successful ones).
  auto attempts = [&] { return runtime_.call_count("PullImage"); };
  // What must hold from now until `since` + `period` (the windows are measured from when a pull
  // was seen, so a slow start of the check does not eat into the back-off).
  using Clock = std::chrono::steady_clock;
  auto holds_until = [](auto pred, Clock::time_point since, milliseconds period) {
    auto left = std::chrono::duration_cast<milliseconds>(since + period - Clock::now());
    return stays(pred, std::max(left, milliseconds(0)));
  };
  start();

  ASSERT_TRUE(eventually([&] { return attempts() == 1; }));
  Clock::time_point first_pull = Clock::now();
  // The first waiting reason written for the container is ErrImagePull, with the pull's error.
  Json first;
  ASSERT_TRUE(eventually([&] {
    for (const auto& a : api_.actions("patch", "pods")) {
      if (a.name != "img") continue;
      Json status = a.object.value("status", Json::object());
      Json statuses = status.value("containerStatuses", Json::array());
      if (!statuses.is_array() || statuses.empty()) continue;
      Json w = statuses[0].value("state", Json::object()).value("waiting", Json());
      if (w.is_object() && w.value("reason", "") != "ContainerCreating") {
        first = w;
        return true;
      }
    }
    return false;
  }));
  EXPECT_EQ(first["reason"], "ErrImagePull");
  EXPECT_EQ(first["message"], pull_error);
  int image_checks = runtime_.call_count("ImageStatus");

  // Within the back-off (2 s): no pull; a sync (the new sandbox wakes one) shows
  // ImagePullBackOff.
  EXPECT_TRUE(holds_until([&] { return attempts() == 1; }, first_pull, milliseconds(1500)));
  EXPECT_EQ(waiting()["reason"], "ImagePullBackOff");
  EXPECT_EQ(waiting()["message"], "Back-off pulling image \"" + image + "\"");

  // The back-off ends: pulled again, ErrImagePull again, and it stands through the doubled
  // back-off (4 s) with no further pull.
  ASSERT_TRUE(eventually([&] { return attempts() == 2; }, milliseconds(10000)));
  Clock::time_point second_pull = Clock::now();
  ASSERT_TRUE(eventually([&] { return waiting()["reason"] == "ErrImagePull"; }));
  EXPECT_EQ(waiting()["message"], pull_error);
  EXPECT_TRUE(holds_until([&] { return attempts() == 2 && waiting()["reason"] == "ErrImagePull"; },
                          second_pull, milliseconds(3000)));
  ASSERT_TRUE(eventually([&] { return attempts() == 3; }, milliseconds(10000)));
  // A handful of syncs in 6 s, not a worker spinning on the pod.
  EXPECT_LE(runtime_.call_count("ImageStatus") - image_checks, 8);

  // The events, as upstream words them (written in the background).
  std::set<std::string> wanted = {"Failed: Failed to pull image \"" + image + "\": " + pull_error,
                                  "Failed: Error: ErrImagePull",
                                  "BackOff: Back-off pulling image \"" + image + "\"",
                                  "Failed: Error: ImagePullBackOff"};
  std::set<std::string> seen;
  EXPECT_TRUE(eventually([&] {
    auto events = api_.list(client::resources::kEvents, "default");
    if (events.is_ok()) {
      for (const Json& e : (*events)["items"]) {
        if (e["involvedObject"].value("name", "") != "img") continue;
        seen.insert(e.value("reason", "") + ": " + e.value("message", ""));
      }
    }
    return std::includes(seen.begin(), seen.end(), wanted.begin(), wanted.end());
  })) << ::testing::PrintToString(seen);
}

TEST_F(PodManagerTest, ChangedContainerSpecReplacesTheContainer) {
  runtime_.add_image("busybox:2");
  Json p = seed(pod("upd", Json::parse(R"([{"name": "main"}])")));
  std::string uid = client::uid_of(p);
  start();
  ASSERT_TRUE(eventually([&] { return phase("upd") == "Running"; }));
  std::string before = running_container(uid);
  Json changed = get("upd");
  changed["spec"]["containers"][0]["image"] = "busybox:2";
  ASSERT_TRUE(api_.update(kPods, "default", changed).is_ok());
  ASSERT_TRUE(eventually([&] {
    std::string now = running_container(uid);
    return !now.empty() && now != before;
  }));
  ASSERT_TRUE(eventually([&] { return container_status("upd").value("restartCount", 0) == 1; }));
  EXPECT_EQ(runtime_.call_count("RunPodSandbox"), 1);  // same sandbox
}

TEST_F(PodManagerTest, RestartedKubeletAdoptsRunningPods) {
  Json p = seed(pod("keep", Json::parse(R"([{"name": "main"}])")));
  std::string uid = client::uid_of(p);
  start();
  ASSERT_TRUE(eventually([&] { return phase("keep") == "Running"; }));
  std::string id = running_container(uid);
  manager_->stop();
  manager_.reset();
  runtime_.clear_calls();
  start();
  EXPECT_TRUE(stays([&] { return running_container(uid) == id; }, milliseconds(1000)));
  EXPECT_EQ(runtime_.call_count("RunPodSandbox"), 0);
  EXPECT_EQ(runtime_.call_count("CreateContainer"), 0);
  EXPECT_EQ(phase("keep"), "Running");
}

TEST_F(PodManagerTest, RuntimePodsTheApiNoLongerHasAreRemoved) {
  Json p = seed(pod("gone", Json::parse(R"([{"name": "main"}])")));
  std::string uid = client::uid_of(p);
  start();
  ASSERT_TRUE(eventually([&] { return phase("gone") == "Running"; }));
  manager_->stop();
  manager_.reset();
  // Deleted while the kubelet was down.
  client::DeleteOptions now;
  now.grace_period_seconds = 0;
  ASSERT_TRUE(api_.remove(kPods, "default", "gone", now).is_ok());
  start();
  ASSERT_TRUE(eventually([&] { return containers_of(uid).empty(); }));
  ASSERT_TRUE(eventually([&] { return !std::filesystem::exists(options_.pods_dir + "/" + uid); }));
}

TEST_F(PodManagerTest, SandboxFailureIsRetried) {
  runtime_.inject_error("RunPodSandbox", error(StatusCode::kInternal, "cni failed"));
  seed(pod("retry-sandbox", Json::parse(R"([{"name": "main"}])")));
  start();
  ASSERT_TRUE(eventually([&] { return phase("retry-sandbox") == "Running"; }));
  EXPECT_EQ(runtime_.call_count("RunPodSandbox"), 2);
}

TEST_F(PodManagerTest, ReadinessProbeDrivesReadyAndLivenessRestarts) {
  v1::ExecSyncResponse fail;
  fail.set_exit_code(1);
  runtime_.set_exec_result({"ready"}, fail);
  runtime_.set_exec_result({"alive"}, v1::ExecSyncResponse());
  Json p = seed(pod("probed", Json::parse(R"([{"name": "main",
      "readinessProbe": {"exec": {"command": ["ready"]}, "periodSeconds": 1, "failureThreshold": 1},
      "livenessProbe": {"exec": {"command": ["alive"]}, "periodSeconds": 1, "failureThreshold": 1}}])")));
  std::string uid = client::uid_of(p);
  start();
  ASSERT_TRUE(eventually([&] { return phase("probed") == "Running"; }));
  EXPECT_TRUE(stays([&] { return container_status("probed").value("ready", true) == false; },
                    milliseconds(1500)));
  runtime_.set_exec_result({"ready"}, v1::ExecSyncResponse());
  ASSERT_TRUE(eventually([&] { return container_status("probed").value("ready", false); },
                         milliseconds(5000)));
  Json status = get("probed")["status"];
  for (const Json& c : status["conditions"]) {
    if (c["type"] == "Ready") {
      EXPECT_EQ(c["status"], "True");
    }
  }
  // Liveness fails: the container is stopped and restarted.
  runtime_.set_exec_result({"alive"}, fail);
  ASSERT_TRUE(eventually([&] { return container_status("probed").value("restartCount", 0) >= 1; },
                         milliseconds(8000)));
  runtime_.set_exec_result({"alive"}, v1::ExecSyncResponse());
  ASSERT_TRUE(eventually([&] { return container_status("probed")["state"].contains("running"); },
                         milliseconds(8000)));
}

TEST_F(PodManagerTest, LifecycleHooksRunAroundTheContainer) {
  Json p = seed(pod("hooks", Json::parse(R"([{"name": "main", "lifecycle": {
      "postStart": {"exec": {"command": ["started"]}},
      "preStop": {"exec": {"command": ["stopping"]}}}}])")));
  start();
  ASSERT_TRUE(eventually([&] { return phase("hooks") == "Running"; }));
  auto calls = runtime_.calls();
  auto start_at = std::find(calls.begin(), calls.end(), "StartContainer");
  ASSERT_NE(start_at, calls.end());
  EXPECT_NE(std::find(start_at, calls.end(), "ExecSync"), calls.end());  // postStart
  runtime_.clear_calls();
  client::DeleteOptions graceful;
  graceful.grace_period_seconds = 3;
  ASSERT_TRUE(api_.remove(kPods, "default", "hooks", graceful).is_ok());
  ASSERT_TRUE(eventually([&] { return !api_.get(kPods, "default", "hooks").is_ok(); }));
  calls = runtime_.calls();
  auto exec_at = std::find(calls.begin(), calls.end(), "ExecSync");  // preStop
  auto stop_at = std::find(calls.begin(), calls.end(), "StopContainer");
  ASSERT_NE(exec_at, calls.end());
  ASSERT_NE(stop_at, calls.end());
  EXPECT_LT(exec_at - calls.begin(), stop_at - calls.begin());
}

TEST_F(PodManagerTest, FailedPostStartHookKillsTheContainer) {
  v1::ExecSyncResponse fail;
  fail.set_exit_code(2);
  fail.set_stderr("no config");
  runtime_.set_exec_result({"setup"}, fail);
  seed(pod("badhook", Json::parse(R"([{"name": "main", "lifecycle": {
      "postStart": {"exec": {"command": ["setup"]}}}}])"),
           "Never"));
  start();
  // The container was killed right after it started; under Never the pod fails.
  ASSERT_TRUE(eventually([&] { return phase("badhook") == "Failed"; }));
  EXPECT_EQ(container_status("badhook")["state"]["terminated"]["exitCode"], 137);
}

TEST_F(PodManagerTest, StaticPodsRunWithMirrorPods) {
  std::string dir = tmp_.sub("manifests");
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/web.yaml") << "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n"
                                      "spec:\n  containers:\n  - name: main\n"
                                      "    image: busybox\n    imagePullPolicy: IfNotPresent\n";
  options_.manifest_dir = dir;
  options_.manifest_check_period = milliseconds(100);
  start();
  // The mirror pod appears and carries the static pod's status.
  ASSERT_TRUE(eventually([&] { return phase("web-n1") == "Running"; }));
  Json mirror = get("web-n1");
  std::string hash = mirror["metadata"]["annotations"]["kubernetes.io/config.mirror"];
  EXPECT_EQ(hash.size(), 32u);
  EXPECT_EQ(runtime_.call_count("RunPodSandbox"), 1);
  EXPECT_TRUE(stays([&] { return !running_container(hash).empty(); }, milliseconds(300)));
  // A deleted mirror pod comes back; the static pod keeps running.
  client::DeleteOptions now;
  now.grace_period_seconds = 0;
  std::string running = running_container(hash);
  ASSERT_TRUE(api_.remove(kPods, "default", "web-n1", now).is_ok());
  ASSERT_TRUE(eventually([&] {
    Json m = get("web-n1");
    return m.is_object() && client::uid_of(m) != client::uid_of(mirror);
  }));
  EXPECT_EQ(running_container(hash), running);
  // Removing the manifest stops the pod and deletes its mirror.
  std::filesystem::remove(dir + "/web.yaml");
  ASSERT_TRUE(eventually([&] { return containers_of(hash).empty(); }));
  ASSERT_TRUE(eventually([&] { return !api_.get(kPods, "default", "web-n1").is_ok(); }));
}

TEST_F(PodManagerTest, PullsUseThePodsImagePullSecrets) {
  runtime_.add_pullable_image("registry.example:5000/app:1");
  api_.seed(
      client::resources::kSecrets,
      {{"apiVersion", "v1"},
       {"kind", "Secret"},
       {"metadata", {{"name", "regcred"}, {"namespace", "default"}}},
       {"type", "kubernetes.io/dockerconfigjson"},
       {"data",
        {{".dockerconfigjson",
          base64_encode(
              R"({"auths": {"registry.example:5000": {"username": "u", "password": "pw"}}})")}}}});
  Json p = pod("private", Json::parse(R"([{"name": "main", "image": "registry.example:5000/app:1",
                                           "imagePullPolicy": "Always"}])"));
  p["spec"]["imagePullSecrets"] = Json::parse(R"([{"name": "regcred"}])");
  seed(p);
  start();
  ASSERT_TRUE(eventually([&] { return phase("private") == "Running"; }));
  auto auths = runtime_.pull_auths();
  ASSERT_FALSE(auths.empty());
  EXPECT_EQ(auths[0].username(), "u");
  EXPECT_EQ(auths[0].password(), "pw");
  // As upstream, no server_address: containerd would parse it as a URL and, for a scheme-less
  // "registry.example:5000", fail the pull.
  EXPECT_EQ(auths[0].server_address(), "");
}

TEST_F(PodManagerTest, EvictedPodIsKilledAndEndsFailed) {
  Json p = seed(pod("victim", Json::parse(R"([{"name": "main"}])")));
  std::string uid = client::uid_of(p);
  start();
  ASSERT_TRUE(eventually([&] { return phase("victim") == "Running"; }));
  ASSERT_EQ(manager_->active_pods().size(), 1u);
  manager_->evict(uid, "The node was low on resource: memory. ");
  ASSERT_TRUE(eventually([&] { return phase("victim") == "Failed"; }));
  Json status = get("victim")["status"];
  EXPECT_EQ(status["reason"], "Evicted");
  EXPECT_EQ(status["message"], "The node was low on resource: memory. ");
  EXPECT_TRUE(running_container(uid).empty());
  EXPECT_TRUE(manager_->active_pods().empty());
  // It stays Failed: no restart.
  EXPECT_TRUE(stays([&] { return running_container(uid).empty(); }, milliseconds(700)));
}

TEST_F(PodManagerTest, PodsTheNodesPressureWouldNotAdmitAreRejected) {
  std::vector<std::string> pressure = {"MemoryPressure"};
  std::mutex mu;
  options_.node_pressure = [&] {
    std::lock_guard lock(mu);
    return pressure;
  };
  // Under memory pressure: BestEffort is rejected, unless it tolerates the taint; a pod with
  // requests (Burstable) starts.
  Json best = seed(pod("besteffort", Json::parse(R"([{"name": "main"}])")));
  Json tolerant = pod("tolerant", Json::parse(R"([{"name": "main"}])"));
  tolerant["spec"]["tolerations"] = Json::parse(
      R"([{"key": "node.kubernetes.io/memory-pressure", "operator": "Exists",
           "effect": "NoSchedule"}])");
  seed(tolerant);
  seed(pod("burstable",
           Json::parse(R"([{"name": "main", "resources": {"requests": {"memory": "1Mi"}}}])")));
  start();
  ASSERT_TRUE(eventually([&] { return phase("besteffort") == "Failed"; }));
  Json status = get("besteffort")["status"];
  EXPECT_EQ(status["reason"], "Evicted");
  EXPECT_EQ(status["message"], "Pod was rejected: The node had condition: [MemoryPressure]. ");
  EXPECT_TRUE(containers_of(client::uid_of(best)).empty());
  ASSERT_TRUE(eventually([&] { return phase("tolerant") == "Running"; }));
  ASSERT_TRUE(eventually([&] { return phase("burstable") == "Running"; }));
  // The Warning event says why (events are written in the background).
  EXPECT_TRUE(eventually([&] {
    Json events = api_.list(client::resources::kEvents, "default").value();
    for (const Json& e : events["items"]) {
      if (e["reason"] == "Evicted" && e["involvedObject"]["name"] == "besteffort" &&
          e["message"] == "The node had condition: [MemoryPressure]. ") {
        return true;
      }
    }
    return false;
  }));

  // Under disk pressure nothing new starts but a critical pod; what runs keeps running, and the
  // rejected pod stays rejected when the pressure ends.
  {
    std::lock_guard lock(mu);
    pressure = {"MemoryPressure", "DiskPressure"};
  }
  Json late =
      pod("late", Json::parse(R"([{"name": "main", "resources": {"requests": {"cpu": "10m"}}}])"));
  seed(late);
  Json critical = pod("critical", Json::parse(R"([{"name": "main"}])"));
  critical["spec"]["priority"] = 2000001000;
  seed(critical);
  ASSERT_TRUE(eventually([&] { return phase("late") == "Failed"; }));
  EXPECT_EQ(get("late")["status"]["message"],
            "Pod was rejected: The node had condition: [MemoryPressure DiskPressure]. ");
  ASSERT_TRUE(eventually([&] { return phase("critical") == "Running"; }));
  EXPECT_EQ(phase("burstable"), "Running");
  {
    std::lock_guard lock(mu);
    pressure.clear();
  }
  EXPECT_TRUE(stays([&] { return phase("besteffort") == "Failed" && phase("late") == "Failed"; },
                    milliseconds(700)));
  EXPECT_TRUE(containers_of(client::uid_of(best)).empty());
}

TEST_F(PodManagerTest, PodsThatDoNotFitBesideTheAdmittedOnesAreRejected) {
  options_.allocatable = [] { return Allocatable{1000, 1 << 30, 10LL << 30, 3}; };
  seed(pod("first",
           Json::parse(R"([{"name": "main", "resources": {"requests": {"cpu": "600m"}}}])")));
  start();
  ASSERT_TRUE(eventually([&] { return phase("first") == "Running"; }));
  Json big = seed(
      pod("big", Json::parse(R"([{"name": "main", "resources": {"requests": {"cpu": "500m"}}}])")));
  ASSERT_TRUE(eventually([&] { return phase("big") == "Failed"; }));
  Json status = get("big")["status"];
  EXPECT_EQ(status["reason"], "OutOfcpu");
  EXPECT_EQ(status["message"],
            "Pod was rejected: Node didn't have enough resource: cpu, "
            "requested: 500, used: 600, capacity: 1000");
  EXPECT_TRUE(containers_of(client::uid_of(big)).empty());
  // What is left still fits: 400m, then a pod without requests; the fourth pod has no slot.
  seed(pod("small",
           Json::parse(R"([{"name": "main", "resources": {"requests": {"cpu": "400m"}}}])")));
  ASSERT_TRUE(eventually([&] { return phase("small") == "Running"; }));
  seed(pod("plain", Json::parse(R"([{"name": "main"}])")));
  ASSERT_TRUE(eventually([&] { return phase("plain") == "Running"; }));
  seed(pod("fourth", Json::parse(R"([{"name": "main"}])")));
  ASSERT_TRUE(eventually([&] { return phase("fourth") == "Failed"; }));
  EXPECT_EQ(get("fourth")["status"]["reason"], "OutOfpods");
  // A finished pod frees its room.
  client::DeleteOptions now;
  now.grace_period_seconds = 0;
  ASSERT_TRUE(api_.remove(kPods, "default", "first", now).is_ok());
  ASSERT_TRUE(eventually([&] { return !get("first").is_object(); }));
  seed(pod("again",
           Json::parse(R"([{"name": "main", "resources": {"requests": {"cpu": "500m"}}}])")));
  EXPECT_TRUE(eventually([&] { return phase("again") == "Running"; }));
}

TEST_F(PodManagerTest, SoftEvictionStopsContainersWithItsGracePeriod) {
  Json soft = seed(pod("soft", Json::parse(R"([{"name": "main"}])")));
  Json hard = seed(pod("hard", Json::parse(R"([{"name": "main"}])")));
  start();
  for (const Json* p : {&soft, &hard}) {
    std::string uid = client::uid_of(*p);
    ASSERT_TRUE(eventually([&] { return !running_container(uid).empty(); }));
    // The container handles the stop signal when it is given time to: it then exits 0.
    ASSERT_TRUE(runtime_.set_stop_exit_code(running_container(uid), 0).is_ok());
  }
  manager_->evict(client::uid_of(soft), "The node was low on resource: memory. ", 30);
  manager_->evict(client::uid_of(hard), "The node was low on resource: memory. ");
  ASSERT_TRUE(eventually([&] { return phase("soft") == "Failed" && phase("hard") == "Failed"; }));
  EXPECT_EQ(get("soft")["status"]["reason"], "Evicted");
  EXPECT_EQ(container_status("soft")["state"]["terminated"]["exitCode"], 0);
  EXPECT_EQ(container_status("hard")["state"]["terminated"]["exitCode"], 137);
}

TEST_F(PodManagerTest, RunInContainerAnswersTheCommandsOutput) {
  Json p = seed(pod("runner", Json::parse(R"([{"name": "main"}])")));
  std::string uid = client::uid_of(p);
  v1::ExecSyncResponse ok;
  ok.set_stdout("out\n");
  ok.set_stderr("err\n");
  runtime_.set_exec_result({"cat", "/etc/hostname"}, ok);
  v1::ExecSyncResponse failed;
  failed.set_stderr("no such file");
  failed.set_exit_code(2);
  runtime_.set_exec_result({"cat", "/nope"}, failed);
  start();
  ASSERT_TRUE(eventually([&] { return !running_container(uid).empty(); }));

  auto out = manager_->run_in_container("default", "runner", "", "main", {"cat", "/etc/hostname"});
  ASSERT_TRUE(out.is_ok()) << out.status().to_string();
  EXPECT_EQ(*out, "out\nerr\n");
  // The UID form must name this pod.
  out = manager_->run_in_container("default", "runner", uid, "main", {"cat", "/etc/hostname"});
  ASSERT_TRUE(out.is_ok()) << out.status().to_string();
  out = manager_->run_in_container("default", "runner", "other-uid", "main", {"true"});
  EXPECT_EQ(out.status().code(), StatusCode::kNotFound);

  out = manager_->run_in_container("default", "runner", "", "main", {"cat", "/nope"});
  EXPECT_EQ(out.status().code(), StatusCode::kInternal);
  EXPECT_EQ(out.status().message(), "command 'cat /nope' exited with 2: no such file");

  EXPECT_EQ(manager_->run_in_container("default", "absent", "", "main", {"true"}).status().code(),
            StatusCode::kNotFound);
  EXPECT_EQ(
      manager_->run_in_container("default", "runner", "", "sidecar", {"true"}).status().code(),
      StatusCode::kNotFound);
  // A container that no longer runs takes no commands.
  ASSERT_TRUE(runtime_.exit_container(running_container(uid), 0).is_ok());
  auto stopped = manager_->run_in_container("default", "runner", "", "main", {"true"});
  EXPECT_FALSE(stopped.is_ok());
}

}  // namespace
}  // namespace skiff::kubelet
