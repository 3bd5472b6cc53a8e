// The scheduler component against a fake API: which pods it takes, what it writes for pods that
// fit nowhere, how it is woken, and preemption through the API.

#include "scheduler/scheduler_server.h"

#include <gtest/gtest.h>

#include <thread>

#include "client/fake_api_client.h"
#include "support/eventually.h"

namespace skiff::scheduler {
namespace {

using client::Json;
using skiff::testing::eventually;
using skiff::testing::stays;
namespace res = client::resources;

Json node(const std::string& name, const std::string& cpu) {
  return {{"apiVersion", "v1"},
          {"kind", "Node"},
          {"metadata", {{"name", name}, {"labels", {{"kubernetes.io/hostname", name}}}}},
          {"spec", Json::object()},
          {"status",
           {{"allocatable", {{"cpu", cpu}, {"memory", "8Gi"}, {"pods", "110"}}},
            {"conditions", {{{"type", "Ready"}, {"status", "True"}}}}}}};
}

Json pod(const std::string& name, const std::string& cpu, int priority = 0) {
  return {{"apiVersion", "v1"},
          {"kind", "Pod"},
          {"metadata", {{"name", name}, {"namespace", "default"}}},
          {"spec",
           {{"priority", priority},
            {"schedulerName", "default-scheduler"},
            {"containers", {{{"name", "c"}, {"resources", {{"requests", {{"cpu", cpu}}}}}}}}}},
          {"status", {{"phase", "Pending"}}}};
}

class SchedulerServerTest : public ::testing::Test {
 protected:
  ~SchedulerServerTest() override {
    if (runner_.joinable()) {
      runner_.request_stop();
      runner_.join();
    }
  }

  void start(std::vector<std::pair<std::string, PluginFactory>> extra_plugins = {}) {
    SchedulerServerOptions options;
    options.leader_elect = false;
    options.bind_workers = 2;
    options.extra_plugins = std::move(extra_plugins);
    runner_ = std::jthread([this, options](std::stop_token stop) {
      Status s = run_scheduler_with(api_, options, stop);
      EXPECT_TRUE(s.is_ok()) << s.to_string();
    });
  }

  Json get_pod(const std::string& name) {
    auto p = api_.get(res::kPods, "default", name);
    return p.is_ok() ? *p : Json();
  }
  std::string node_of(const std::string& name) {
    Json p = get_pod(name);
    return p.is_object() ? p["spec"].value("nodeName", "") : "";
  }
  // The messages of the events with `reason` about pod `name`.
  std::vector<std::string> events(const std::string& reason, const std::string& name) {
    std::vector<std::string> out;
    auto list = api_.list(res::kEvents, "default");
    if (!list.is_ok()) return out;
    const Json items = (*list)["items"];
    for (const Json& e : items) {
      if (e.value("reason", "") == reason && e["involvedObject"].value("name", "") == name) {
        out.push_back(e.value("message", ""));
      }
    }
    return out;
  }
  Json condition(const std::string& name, const std::string& type) {
    Json p = get_pod(name);
    if (!p.is_object()) return Json();
    for (const Json& c : p["status"].value("conditions", Json::array())) {
      if (c.value("type", "") == type) return c;
    }
    return Json();
  }

  client::FakeApiClient api_;
  std::jthread runner_;
};

TEST_F(SchedulerServerTest, BindsThePodsOfItsSchedulerName) {
  api_.seed(res::kNodes, node("n1", "4"));
  api_.seed(res::kPods, pod("mine", "1"));
  Json other = pod("theirs", "1");
  other["spec"]["schedulerName"] = "someone-else";
  api_.seed(res::kPods, other);
  start();
  ASSERT_TRUE(eventually([&] { return node_of("mine") == "n1"; }));
  ASSERT_TRUE(eventually([&] { return !events("Scheduled", "mine").empty(); }));
  EXPECT_EQ(events("Scheduled", "mine")[0], "Successfully assigned default/mine to n1");
  EXPECT_TRUE(stays([&] { return node_of("theirs").empty(); }, std::chrono::milliseconds(300)));
}

TEST_F(SchedulerServerTest, APodThatFitsNowhereSaysWhyAndLandsWhenANodeComes) {
  api_.seed(res::kNodes, node("small", "1"));
  api_.seed(res::kNodes, node("busy", "4"));
  api_.seed(res::kPods, [] {
    Json p = pod("resident", "3");
    p["spec"]["nodeName"] = "busy";
    p["status"]["phase"] = "Running";
    return p;
  }());
  api_.seed(res::kPods, pod("big", "2"));
  start();
  ASSERT_TRUE(eventually([&] { return condition("big", "PodScheduled").is_object(); }));
  Json c = condition("big", "PodScheduled");
  EXPECT_EQ(c.value("status", ""), "False");
  EXPECT_EQ(c.value("reason", ""), "Unschedulable");
  EXPECT_EQ(c.value("message", "").rfind("0/2 nodes are available: 2 Insufficient cpu.", 0), 0)
      << c.dump();
  ASSERT_TRUE(eventually([&] { return !events("FailedScheduling", "big").empty(); }));
  EXPECT_EQ(events("FailedScheduling", "big")[0], c.value("message", ""));

  // A node that fits wakes the parked pod.
  api_.seed(res::kNodes, node("roomy", "8"));
  EXPECT_TRUE(eventually([&] { return node_of("big") == "roomy"; }));
}

TEST_F(SchedulerServerTest, APodDeletedFromAFullNodeMakesRoom) {
  api_.seed(res::kNodes, node("n1", "2"));
  Json resident = pod("resident", "2");
  resident["spec"]["nodeName"] = "n1";
  resident["status"]["phase"] = "Running";
  api_.seed(res::kPods, resident);
  api_.seed(res::kPods, pod("waiting", "2"));
  start();
  ASSERT_TRUE(eventually([&] { return condition("waiting", "PodScheduled").is_object(); }));
  EXPECT_TRUE(node_of("waiting").empty());
  ASSERT_TRUE(api_.remove(res::kPods, "default", "resident").is_ok());
  EXPECT_TRUE(eventually([&] { return node_of("waiting") == "n1"; }));
}

TEST_F(SchedulerServerTest, AGatedPodWaitsUntilItsGatesAreRemoved) {
  api_.seed(res::kNodes, node("n1", "4"));
  Json gated = pod("gated", "1");
  gated["spec"]["schedulingGates"] = {{{"name", "example.com/wait"}}};
  api_.seed(res::kPods, gated);
  api_.seed(res::kPods, pod("free", "1"));
  start();
  ASSERT_TRUE(eventually([&] { return node_of("free") == "n1"; }));
  EXPECT_TRUE(stays([&] { return node_of("gated").empty(); }, std::chrono::milliseconds(300)));
  EXPECT_TRUE(events("FailedScheduling", "gated").empty());
  Json ungated = get_pod("gated");
  ungated["spec"].erase("schedulingGates");
  ASSERT_TRUE(api_.update(res::kPods, "default", ungated).is_ok());
  EXPECT_TRUE(eventually([&] { return node_of("gated") == "n1"; }));
}

TEST_F(SchedulerServerTest, PreemptsLowerPriorityPodsThroughTheApi) {
  api_.seed(res::kNodes, node("n1", "2"));
  Json low = pod("low", "2", 1);
  low["spec"]["nodeName"] = "n1";
  low["status"]["phase"] = "Running";
  api_.seed(res::kPods, low);
  Json vip = api_.seed(res::kPods, pod("vip", "1", 100));
  start();
  // The victim is marked, then deleted; the preemptor is nominated, then bound.
  ASSERT_TRUE(eventually([&] { return node_of("vip") == "n1"; }));
  EXPECT_FALSE(get_pod("low").is_object());
  bool marked = false;
  for (const auto& a : api_.actions("patch", "pods")) {
    if (a.name != "low" || a.subresource != "status") continue;
    for (const Json& c : a.object["status"].value("conditions", Json::array())) {
      marked |= c.value("type", "") == "DisruptionTarget" &&
                c.value("reason", "") == "PreemptionByScheduler" &&
                c.value("message", "") ==
                    "default-scheduler: preempting to accommodate a higher priority pod";
    }
  }
  EXPECT_TRUE(marked);
  bool nominated = false;
  for (const auto& a : api_.actions("patch", "pods")) {
    nominated |= a.name == "vip" && a.object["status"].value("nominatedNodeName", "") == "n1";
  }
  EXPECT_TRUE(nominated);
  ASSERT_TRUE(eventually([&] { return !events("Preempted", "low").empty(); }));
  EXPECT_EQ(events("Preempted", "low")[0],
            "Preempted by pod " + vip["metadata"].value("uid", "") + " on node n1");
}

// A minimal coscheduling plugin, built as out-of-tree plugins are: holds pods labelled
// gang=<name> at Permit until `size` of them have got there, then lets them all through.
// Records the pods it unreserves.
class Gang final : public ReservePlugin, public PermitPlugin {
 public:
  Gang(Handle& handle, size_t size, std::chrono::milliseconds timeout,
       std::shared_ptr<std::vector<std::string>> unreserved)
      : handle_(handle), size_(size), timeout_(timeout), unreserved_(std::move(unreserved)) {}
  std::string_view name() const override { return "Gang"; }
  PluginStatus reserve(CycleState&, const PodInfo&, const std::string&) override { return {}; }
  void unreserve(CycleState&, const PodInfo& pod, const std::string&) override {
    std::lock_guard lock(mu_);
    unreserved_->push_back(pod.name);
  }
  PluginStatus permit(CycleState&, const PodInfo& pod, const std::string&,
                      std::chrono::milliseconds& timeout) override {
    const HString* gang = pod.labels.find("gang");
    if (gang == nullptr) return {};
    std::vector<std::shared_ptr<WaitingPod>> mates;
    handle_.iterate_over_waiting_pods([&](WaitingPod& wp) {
      const HString* other = wp.pod()->labels.find("gang");
      if (other != nullptr && other->str() == gang->str()) {
        mates.push_back(handle_.get_waiting_pod(wp.pod()->uid));
      }
    });
    if (mates.size() + 1 < size_) {
      timeout = timeout_;
      return {Code::kWait, ""};
    }
    for (const auto& m : mates) {
      if (m) m->allow(name());
    }
    return {};
  }
  std::vector<std::string> unreserved() {
    std::lock_guard lock(mu_);
    return *unreserved_;
  }

 private:
  Handle& handle_;
  const size_t size_;
  const std::chrono::milliseconds timeout_;
  std::mutex mu_;
  std::shared_ptr<std::vector<std::string>> unreserved_;
};

Json gang_pod(const std::string& name, const std::string& gang) {
  Json p = pod(name, "1");
  p["metadata"]["labels"] = {{"gang", gang}};
  return p;
}

class PermitWaitTest : public SchedulerServerTest {
 protected:
  void start_with_gang(size_t size, std::chrono::milliseconds timeout) {
    start({{"Gang", [this, size, timeout](const Json&, Handle& handle) {
              auto g = std::make_unique<Gang>(handle, size, timeout,
                                              std::make_shared<std::vector<std::string>>());
              gang_ = g.get();
              return Result<std::unique_ptr<Plugin>>(std::move(g));
            }}});
    ASSERT_TRUE(eventually([&] { return gang_.load() != nullptr; }));
  }
  std::atomic<Gang*> gang_{nullptr};
};

TEST_F(PermitWaitTest, APermitPluginHoldsPodsUntilItLetsThemGo) {
  api_.seed(res::kNodes, node("n1", "8"));
  api_.seed(res::kPods, gang_pod("g1", "x"));
  start_with_gang(2, std::chrono::seconds(30));
  EXPECT_TRUE(stays([&] { return node_of("g1").empty(); }, std::chrono::milliseconds(300)));
  ASSERT_TRUE(api_.create(res::kPods, "default", gang_pod("g2", "x")).is_ok());
  ASSERT_TRUE(eventually([&] { return node_of("g1") == "n1" && node_of("g2") == "n1"; }));
  EXPECT_TRUE(gang_.load()->unreserved().empty());
}

TEST_F(PermitWaitTest, AWaitThatTimesOutUndoesTheReservationAndSaysWhy) {
  api_.seed(res::kNodes, node("n1", "8"));
  api_.seed(res::kPods, gang_pod("solo", "y"));
  start_with_gang(2, std::chrono::milliseconds(300));
  ASSERT_TRUE(eventually([&] {
    Json c = condition("solo", "PodScheduled");
    return c.is_object() &&
           c.value("message", "") == "rejected due to timeout after waiting 300ms at plugin Gang";
  }));
  EXPECT_EQ(condition("solo", "PodScheduled").value("reason", ""), "Unschedulable");
  EXPECT_FALSE(gang_.load()->unreserved().empty());
  EXPECT_EQ(gang_.load()->unreserved()[0], "solo");
  EXPECT_TRUE(node_of("solo").empty());
  EXPECT_FALSE(events("FailedScheduling", "solo").empty());
}

TEST_F(PermitWaitTest, AWaitingPodThatIsDeletedIsLetGo) {
  api_.seed(res::kNodes, node("n1", "8"));
  api_.seed(res::kPods, gang_pod("doomed", "z"));
  start_with_gang(3, std::chrono::minutes(10));
  EXPECT_TRUE(
      stays([&] { return gang_.load()->unreserved().empty(); }, std::chrono::milliseconds(300)));
  ASSERT_TRUE(api_.remove(res::kPods, "default", "doomed").is_ok());
  ASSERT_TRUE(
      eventually([&] { return gang_.load()->unreserved() == std::vector<std::string>{"doomed"}; }));
}

}  // namespace
}  // namespace skiff::scheduler
