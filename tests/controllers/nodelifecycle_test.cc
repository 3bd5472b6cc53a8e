#include <gtest/gtest.h>

#include <thread>

#include "client/fake_api_client.h"
#include "controller_test_util.h"
#include "controllers/controller_utils.h"
#include "controllers/nodelifecycle/nodelifecycle_controller.h"
#include "controllers/nodelifecycle/taints.h"

namespace skiff::controllers {
namespace {

using client::FakeApiClient;
using testing::ControllerTest;
using testing::eventually;
using testing::stays;
using namespace client::resources;
using namespace std::chrono_literals;

const auto kT0 = std::chrono::system_clock::time_point(std::chrono::seconds(1772323200));

class NodeLifecycleTest : public ControllerTest<> {
 protected:
  NodeLifecycleTest() : ControllerTest(options(), 0ms, kT0) {}

  ~NodeLifecycleTest() override {
    if (controller_) controller_->stop();
    informers_.stop();
  }

  static ControllerOptions options() {
    ControllerOptions o;
    o.node_monitor_period = 5s;
    o.node_monitor_grace_period = 40s;
    o.workers = 2;
    return o;
  }

  std::string now_text() { return rfc3339(clock_.now_seconds()); }

  void seed_node(const std::string& name, bool with_conditions = true,
                 Json labels = Json::object()) {
    Json node = {
        {"metadata", {{"name", name}, {"labels", labels}, {"creationTimestamp", now_text()}}},
        {"spec", Json::object()},
        {"status", Json::object()}};
    if (with_conditions) {
      Json conds = Json::array();
      for (const char* t : {"MemoryPressure", "DiskPressure", "PIDPressure"}) {
        conds.push_back({{"type", t},
                         {"status", "False"},
                         {"reason", "KubeletHasSufficientMemory"},
                         {"lastHeartbeatTime", now_text()},
                         {"lastTransitionTime", now_text()}});
      }
      conds.push_back({{"type", "Ready"},
                       {"status", "True"},
                       {"reason", "KubeletReady"},
                       {"message", "kubelet is posting ready status"},
                       {"lastHeartbeatTime", now_text()},
                       {"lastTransitionTime", now_text()}});
      node["status"]["conditions"] = conds;
    }
    api_.seed(kNodes, node);
    renew(name);
  }

  // The kubelet renews its Lease; returns once the shared cache has seen it.
  void renew(const std::string& node) {
    std::string t = rfc3339_micro(clock_.now());
    api_.seed(
        kLeases,
        {{"metadata", {{"namespace", "kube-node-lease"}, {"name", node}}},
         {"spec", {{"holderIdentity", node}, {"leaseDurationSeconds", 40}, {"renewTime", t}}}});
    if (!started_) return;
    ASSERT_TRUE(eventually([&] {
      auto lease = informers_.informer(kLeases).get("kube-node-lease", node);
      return lease && (*lease)["spec"]["renewTime"] == t;
    }));
  }

  // Advances the clock, the given nodes renewing their Leases (as of the new time) first, so the
  // monitor pass the step triggers sees them fresh.
  void advance(std::chrono::seconds d, const std::vector<std::string>& alive) {
    const std::string t = rfc3339_micro(clock_.now() + d);
    for (const auto& n : alive) {
      api_.seed(kLeases, {{"metadata", {{"namespace", "kube-node-lease"}, {"name", n}}},
                          {"spec", {{"holderIdentity", n}, {"renewTime", t}}}});
      ASSERT_TRUE(eventually([&] {
        auto lease = informers_.informer(kLeases).get("kube-node-lease", n);
        return lease && (*lease)["spec"]["renewTime"] == t;
      }));
    }
    clock_.advance(d);
  }

  void seed_pod(const std::string& name, const std::string& node, Json tolerations = Json()) {
    Json pod = {
        {"metadata", {{"namespace", "default"}, {"name", name}}},
        {"spec", {{"nodeName", node}, {"containers", {{{"name", "c"}}}}}},
        {"status",
         {{"phase", "Running"},
          {"conditions",
           {{{"type", "Ready"}, {"status", "True"}, {"lastTransitionTime", now_text()}}}}}}};
    if (!tolerations.is_null()) pod["spec"]["tolerations"] = tolerations;
    api_.seed(kPods, pod);
  }

  void start() {
    controller_ = new_nodelifecycle_controller(ctx_);
    informers_.start();
    controller_->start();
    started_ = true;
  }

  Json node(const std::string& name) { return api_.get(kNodes, "", name).value(); }

  std::string condition(const std::string& node_name, const std::string& type,
                        const std::string& field = "status") {
    Json n = node(node_name);
    const Json* c = find_condition(n["status"], type);
    return c ? c->value(field, "") : "";
  }

  bool has_taint(const std::string& node_name, const std::string& key, const std::string& effect) {
    return nodelifecycle::taint_exists(node(node_name)["spec"].value("taints", Json::array()),
                                       {key, effect});
  }

  bool pod_exists(const std::string& name) { return api_.get(kPods, "default", name).is_ok(); }

  std::vector<Json> events(const std::string& reason) {
    std::vector<Json> out;
    auto list = api_.list(kEvents, "");
    if (!list.is_ok()) return out;
    for (const auto& e : list.value()["items"]) {
      if (e.value("reason", "") == reason) out.push_back(e);
    }
    return out;
  }

  bool has_event(const std::string& reason, const std::string& message) {
    for (const auto& e : events(reason)) {
      if (e.value("message", "") == message) return true;
    }
    return false;
  }

  std::unique_ptr<Controller> controller_;
  bool started_ = false;
};

Json default_tolerations() {
  return Json::parse(R"([
    {"key":"node.kubernetes.io/not-ready","operator":"Exists","effect":"NoExecute","tolerationSeconds":300},
    {"key":"node.kubernetes.io/unreachable","operator":"Exists","effect":"NoExecute","tolerationSeconds":300}])");
}

TEST_F(NodeLifecycleTest, UnreachableNodeIsMarkedTaintedAndEvictedThenRecovers) {
  seed_node("healthy");
  seed_node("sick");
  seed_pod("intolerant", "sick");
  seed_pod("tolerant", "sick", default_tolerations());
  seed_pod("forever", "sick",
           Json::parse(R"([{"key":"node.kubernetes.io/unreachable","operator":"Exists"}])"));
  seed_pod("elsewhere", "healthy");
  start();
  ASSERT_TRUE(eventually([&] {
    return has_event("RegisteredNode", "Node sick event: Registered Node sick in Controller") &&
           has_event("RegisteredNode", "Node healthy event: Registered Node healthy in Controller");
  }));

  // Within the grace period nothing happens.
  advance(39s, {});
  EXPECT_TRUE(stays([&] { return condition("sick", "Ready") == "True"; }, 300ms));

  // Past it: the sick node (no heartbeat, no lease) is Unknown; the healthy one renewed its
  // Lease (its Ready heartbeat is as old) and stays Ready.
  advance(6s, {"healthy"});  // a full monitor period later
  ASSERT_TRUE(eventually([&] { return condition("sick", "Ready") == "Unknown"; }));
  EXPECT_EQ(condition("sick", "Ready", "reason"), "NodeStatusUnknown");
  EXPECT_EQ(condition("sick", "Ready", "message"), "Kubelet stopped posting node status.");
  EXPECT_EQ(condition("sick", "Ready", "lastTransitionTime"), now_text());
  for (const char* t : {"MemoryPressure", "DiskPressure", "PIDPressure"}) {
    EXPECT_EQ(condition("sick", t), "Unknown") << t;
    EXPECT_EQ(condition("sick", t, "reason"), "NodeStatusUnknown") << t;
  }
  EXPECT_EQ(condition("healthy", "Ready"), "True");
  EXPECT_TRUE(eventually(
      [&] { return has_event("NodeNotReady", "Node sick status is now: NodeNotReady"); }));
  // Its pods are marked not ready; others are not.
  ASSERT_TRUE(eventually([&] {
    auto p = api_.get(kPods, "default", "tolerant").value();
    return !is_pod_ready(p);
  }));
  EXPECT_TRUE(is_pod_ready(api_.get(kPods, "default", "elsewhere").value()));
  // TaintNodesByCondition.
  ASSERT_TRUE(eventually(
      [&] { return has_taint("sick", "node.kubernetes.io/unreachable", "NoSchedule"); }));

  // The next pass taints it NoExecute: the pod that does not tolerate it goes at once.
  advance(5s, {"healthy"});
  ASSERT_TRUE(
      eventually([&] { return has_taint("sick", "node.kubernetes.io/unreachable", "NoExecute"); }));
  EXPECT_FALSE(has_taint("healthy", "node.kubernetes.io/unreachable", "NoExecute"));
  ASSERT_TRUE(eventually([&] { return !pod_exists("intolerant"); }));
  EXPECT_TRUE(eventually([&] {
    return has_event("TaintManagerEviction", "Marking for deletion Pod default/intolerant");
  }));
  bool disruption_target = false;
  for (const auto& a : api_.actions("update", "pods")) {
    if (a.name != "intolerant" || a.subresource != "status") continue;
    const Json* c = find_condition(a.object["status"], "DisruptionTarget");
    if (c && (*c)["reason"] == "DeletionByTaintManager") disruption_target = true;
  }
  EXPECT_TRUE(disruption_target);
  EXPECT_TRUE(pod_exists("tolerant"));
  EXPECT_TRUE(pod_exists("forever"));

  // The tolerant pod goes when its 300 s run out, not before.
  advance(295s, {"healthy"});
  EXPECT_TRUE(stays([&] { return pod_exists("tolerant"); }, 600ms));
  advance(6s, {"healthy"});
  ASSERT_TRUE(eventually([&] { return !pod_exists("tolerant"); }));
  EXPECT_TRUE(has_event("TaintManagerEviction", "Marking for deletion Pod default/tolerant") ||
              eventually([&] {
                return has_event("TaintManagerEviction",
                                 "Marking for deletion Pod default/tolerant");
              }));
  EXPECT_TRUE(pod_exists("forever"));
  EXPECT_TRUE(pod_exists("elsewhere"));

  // The kubelet comes back: it renews its Lease and posts Ready. The taints go.
  Json back = node("sick");
  for (auto& c : back["status"]["conditions"]) {
    c["status"] = c["type"] == "Ready" ? "True" : "False";
    c["reason"] = "KubeletReady";
    c["lastHeartbeatTime"] = now_text();
    c["lastTransitionTime"] = now_text();
  }
  ASSERT_TRUE(api_.update(kNodes, "", back, {}, "status").is_ok());
  advance(5s, {"healthy", "sick"});
  ASSERT_TRUE(eventually([&] {
    return node("sick")["spec"].value("taints", Json::array()).empty();
  })) << node("sick").dump(2);
  EXPECT_EQ(condition("sick", "Ready"), "True");
  EXPECT_TRUE(pod_exists("forever"));
}

TEST_F(NodeLifecycleTest, KubeletReportedNotReadyTaintsNotReadyWithoutTouchingStatus) {
  seed_node("healthy");
  seed_node("sick");
  seed_pod("p", "sick");
  start();
  ASSERT_TRUE(eventually([&] { return events("RegisteredNode").size() == 2; }));
  Json n = node("sick");
  for (auto& c : n["status"]["conditions"]) {
    if (c["type"] != "Ready") continue;
    c["status"] = "False";
    c["reason"] = "KubeletNotReady";
    c["lastHeartbeatTime"] = rfc3339(clock_.now_seconds() + 5);
  }
  ASSERT_TRUE(api_.update(kNodes, "", n, {}, "status").is_ok());
  ASSERT_TRUE(
      eventually([&] { return has_taint("sick", "node.kubernetes.io/not-ready", "NoSchedule"); }));
  advance(5s, {"healthy", "sick"});
  ASSERT_TRUE(
      eventually([&] { return has_taint("sick", "node.kubernetes.io/not-ready", "NoExecute"); }));
  const Json& taints = node("sick")["spec"]["taints"];
  for (const auto& t : taints) EXPECT_TRUE(t.contains("timeAdded")) << t.dump();
  EXPECT_FALSE(has_taint("sick", "node.kubernetes.io/unreachable", "NoExecute"));
  EXPECT_EQ(condition("sick", "Ready", "reason"), "KubeletNotReady");
  // The intolerant pod is evicted; the controller did not mark it not ready itself.
  ASSERT_TRUE(eventually([&] { return !pod_exists("p"); }));
  for (const auto& a : api_.actions("update", "pods")) {
    const Json* ready = find_condition(a.object["status"], "Ready");
    EXPECT_TRUE(ready && (*ready)["status"] == "True") << a.object.dump();
  }
  EXPECT_TRUE(events("NodeNotReady").empty());

  // The node then goes silent too: not-ready turns into unreachable at once.
  advance(41s, {"healthy"});
  ASSERT_TRUE(eventually([&] { return condition("sick", "Ready") == "Unknown"; }));
  advance(5s, {"healthy"});
  ASSERT_TRUE(eventually([&] {
    return has_taint("sick", "node.kubernetes.io/unreachable", "NoExecute") &&
           !has_taint("sick", "node.kubernetes.io/not-ready", "NoExecute");
  }));
}

TEST_F(NodeLifecycleTest, WholeClusterDownPausesNoExecuteTaints) {
  seed_node("only");
  seed_pod("p", "only");
  start();
  ASSERT_TRUE(eventually([&] { return events("RegisteredNode").size() == 1; }));
  advance(41s, {});
  ASSERT_TRUE(eventually([&] { return condition("only", "Ready") == "Unknown"; }));
  ASSERT_TRUE(eventually(
      [&] { return has_taint("only", "node.kubernetes.io/unreachable", "NoSchedule"); }));
  advance(5s, {});
  advance(5s, {});
  EXPECT_TRUE(stays(
      [&] {
        return !has_taint("only", "node.kubernetes.io/unreachable", "NoExecute") && pod_exists("p");
      },
      600ms));
}

TEST_F(NodeLifecycleTest, TaintsAtMostOneNodeEveryTenSecondsPerZone) {
  for (const char* n : {"a", "b", "c", "x", "y"}) seed_node(n);
  start();
  ASSERT_TRUE(eventually([&] { return events("RegisteredNode").size() == 5; }));
  const std::vector<std::string> alive = {"a", "b", "c"};
  advance(41s, alive);
  ASSERT_TRUE(eventually([&] {
    return condition("x", "Ready") == "Unknown" && condition("y", "Ready") == "Unknown";
  }));
  advance(5s, alive);
  ASSERT_TRUE(eventually([&] {
    return has_taint("x", "node.kubernetes.io/unreachable", "NoExecute") ||
           has_taint("y", "node.kubernetes.io/unreachable", "NoExecute");
  }));
  EXPECT_TRUE(stays(
      [&] {
        return !(has_taint("x", "node.kubernetes.io/unreachable", "NoExecute") &&
                 has_taint("y", "node.kubernetes.io/unreachable", "NoExecute"));
      },
      600ms));
  advance(10s, alive);
  ASSERT_TRUE(eventually([&] {
    return has_taint("x", "node.kubernetes.io/unreachable", "NoExecute") &&
           has_taint("y", "node.kubernetes.io/unreachable", "NoExecute");
  }));
}

TEST_F(NodeLifecycleTest, NeverPostedNodeGetsTheStartupGracePeriod) {
  seed_node("healthy");
  seed_node("new", /*with_conditions=*/false);
  start();
  ASSERT_TRUE(eventually([&] { return events("RegisteredNode").size() == 2; }));
  // Past the usual grace period, within the startup one.
  advance(45s, {"healthy"});
  EXPECT_TRUE(stays([&] { return condition("new", "Ready").empty(); }, 300ms));
  advance(16s, {"healthy"});
  ASSERT_TRUE(eventually([&] { return condition("new", "Ready") == "Unknown"; }));
  EXPECT_EQ(condition("new", "Ready", "reason"), "NodeStatusNeverUpdated");
  EXPECT_EQ(condition("new", "Ready", "message"), "Kubelet never posted node status.");
  EXPECT_EQ(condition("new", "MemoryPressure", "reason"), "NodeStatusNeverUpdated");
}

TEST_F(NodeLifecycleTest, RetriesConflictingStatusUpdates) {
  seed_node("healthy");
  seed_node("sick");
  start();
  ASSERT_TRUE(eventually([&] { return events("RegisteredNode").size() == 2; }));
  api_.fail("update", "nodes", error(StatusCode::kAborted, "the object has been modified"), 2);
  advance(41s, {"healthy"});
  ASSERT_TRUE(eventually([&] { return condition("sick", "Ready") == "Unknown"; }));
}

TEST_F(NodeLifecycleTest, UnschedulableAndPressureTaints) {
  seed_node("n");
  start();
  Json n = node("n");
  n["spec"]["unschedulable"] = true;
  ASSERT_TRUE(api_.update(kNodes, "", n).is_ok());
  ASSERT_TRUE(
      eventually([&] { return has_taint("n", "node.kubernetes.io/unschedulable", "NoSchedule"); }));
  n = node("n");
  for (auto& c : n["status"]["conditions"]) {
    if (c["type"] == "DiskPressure") c["status"] = "True";
  }
  ASSERT_TRUE(api_.update(kNodes, "", n, {}, "status").is_ok());
  ASSERT_TRUE(
      eventually([&] { return has_taint("n", "node.kubernetes.io/disk-pressure", "NoSchedule"); }));
  n = node("n");
  n["spec"].erase("unschedulable");
  // A taint of the user's stays.
  n["spec"]["taints"].push_back({{"key", "dedicated"}, {"value", "db"}, {"effect", "NoSchedule"}});
  ASSERT_TRUE(api_.update(kNodes, "", n).is_ok());
  ASSERT_TRUE(eventually(
      [&] { return !has_taint("n", "node.kubernetes.io/unschedulable", "NoSchedule"); }));
  EXPECT_TRUE(has_taint("n", "dedicated", "NoSchedule"));
  EXPECT_TRUE(has_taint("n", "node.kubernetes.io/disk-pressure", "NoSchedule"));
}

TEST_F(NodeLifecycleTest, PodBoundToANotReadyNodeIsMarkedNotReady) {
  seed_node("healthy");
  seed_node("sick");
  start();
  ASSERT_TRUE(eventually([&] { return events("RegisteredNode").size() == 2; }));
  advance(41s, {"healthy"});
  ASSERT_TRUE(eventually([&] { return condition("sick", "Ready") == "Unknown"; }));
  seed_pod("late", "sick",
           Json::parse(R"([{"key":"node.kubernetes.io/unreachable","operator":"Exists"}])"));
  ASSERT_TRUE(eventually([&] {
    auto p = api_.get(kPods, "default", "late");
    return p.is_ok() && !is_pod_ready(p.value());
  }));
}

TEST(Tolerations, MatchAsUpstream) {
  using nodelifecycle::matching_tolerations;
  using nodelifecycle::min_toleration_seconds;
  using nodelifecycle::tolerates;
  Json taint = {{"key", "node.kubernetes.io/unreachable"}, {"effect", "NoExecute"}};
  EXPECT_TRUE(tolerates({{"operator", "Exists"}}, taint));
  EXPECT_TRUE(
      tolerates({{"key", "node.kubernetes.io/unreachable"}, {"operator", "Exists"}}, taint));
  EXPECT_FALSE(tolerates(
      {{"key", "node.kubernetes.io/unreachable"}, {"operator", "Exists"}, {"effect", "NoSchedule"}},
      taint));
  EXPECT_TRUE(tolerates({{"key", "node.kubernetes.io/unreachable"}, {"value", ""}}, taint));
  EXPECT_FALSE(tolerates({{"key", "node.kubernetes.io/unreachable"}, {"value", "x"}}, taint));
  EXPECT_FALSE(tolerates({{"key", "other"}, {"operator", "Exists"}}, taint));

  Json not_ready = {{"key", "node.kubernetes.io/not-ready"}, {"effect", "NoExecute"}};
  auto m = matching_tolerations({taint, not_ready}, default_tolerations());
  EXPECT_TRUE(m.all_tolerated);
  ASSERT_EQ(m.used.size(), 2u);
  EXPECT_EQ(min_toleration_seconds(m.used), 300);
  Json mixed = Json::parse(R"([
    {"key":"node.kubernetes.io/unreachable","operator":"Exists","tolerationSeconds":-5},
    {"operator":"Exists"}])");
  m = matching_tolerations({taint, not_ready}, mixed);
  EXPECT_TRUE(m.all_tolerated);
  EXPECT_EQ(min_toleration_seconds(m.used), 0);
  m = matching_tolerations({taint}, Json::parse(R"([{"operator":"Exists"}])"));
  EXPECT_EQ(min_toleration_seconds(m.used), std::nullopt);
  m = matching_tolerations(
      {taint, not_ready},
      Json::parse(R"([{"key":"node.kubernetes.io/unreachable","operator":"Exists"}])"));
  EXPECT_FALSE(m.all_tolerated);
}

}  // namespace
}  // namespace skiff::controllers
