// End-to-end scheduling cycles over small clusters with the default plugins.

#include "scheduler/scheduler.h"

#include <gtest/gtest.h>

#include <map>

#include "scheduler/plugins/registry.h"
#include "test_util.h"

namespace skiff::scheduler {
namespace {

using nlohmann::json;
using testing::NodeBuilder;
using testing::PodBuilder;

constexpr const char* kHost = "kubernetes.io/hostname";
constexpr const char* kZone = "topology.kubernetes.io/zone";

// Records bindings; fails for pods named in `fail`.
class FakeBinder final : public BindPlugin, public ReservePlugin {
 public:
  static constexpr std::string_view kName = "FakeBinder";
  std::string_view name() const override { return kName; }
  PluginStatus bind(CycleState&, const PodInfo& pod, const std::string& node) override {
    if (fail.count(pod.name) != 0) return PluginStatus::error("binding rejected");
    bound[pod.name] = node;
    return {};
  }
  PluginStatus reserve(CycleState&, const PodInfo& pod, const std::string&) override {
    if (reject_reserve.count(pod.name) != 0) return {Code::kUnschedulable, "reserve refused"};
    return {};
  }
  void unreserve(CycleState&, const PodInfo& pod, const std::string&) override {
    unreserved.push_back(pod.name);
  }

  std::map<std::string, std::string> bound;
  std::set<std::string> fail;
  std::set<std::string> reject_reserve;
  std::vector<std::string> unreserved;
};

class SchedulerTest : public ::testing::Test {
 protected:
  void make(SchedulerOptions options = {}) {
    Registry r = plugins::default_registry();
    FakeBinder** slot = &binder;
    ASSERT_TRUE(
        r.add("FakeBinder", [slot](const json&, Handle&) -> Result<std::unique_ptr<Plugin>> {
           auto b = std::make_unique<FakeBinder>();
           *slot = b.get();
           return std::unique_ptr<Plugin>(std::move(b));
         }).is_ok());
    Profile p = plugins::default_profile();
    p.plugins.push_back({"FakeBinder", 0, nullptr});
    auto fw = Framework::create(r, p);
    ASSERT_TRUE(fw.is_ok()) << fw.status().to_string();
    if (options.seed == 0) options.seed = 42;
    scheduler = std::make_unique<Scheduler>(cache, std::move(fw).value(), options);
  }
  void node(const NodeBuilder& n) { cache.add_node(n.build()); }
  void pod_on(const PodBuilder& p) { ASSERT_TRUE(cache.add_pod(p.build()).is_ok()); }

  // schedule_one + bind; returns the node or the failure message.
  std::string schedule(const PodBuilder& p) {
    PodRef pod = p.build();
    CycleOutcome r = scheduler->schedule_one(pod);
    if (!r.outcome.ok()) {
      last_failure = r.outcome.failure();
      return "error: " + r.outcome.failure().message;
    }
    PluginStatus s = scheduler->bind(pod, r.outcome.result().node, *r.state);
    if (!s.is_success()) return "bind: " + s.message();
    return r.outcome.result().node;
  }

  Cache cache;
  std::unique_ptr<Scheduler> scheduler;
  FakeBinder* binder = nullptr;
  ScheduleFailure last_failure;
};

TEST(NumFeasibleNodesTest, AdaptivePercentage) {
  EXPECT_EQ(num_feasible_nodes_to_find(0, 50), 50);
  EXPECT_EQ(num_feasible_nodes_to_find(0, 100), 100);   // 49% of 100 → at least 100
  EXPECT_EQ(num_feasible_nodes_to_find(0, 1000), 420);  // 50 - 8 = 42%
  EXPECT_EQ(num_feasible_nodes_to_find(0, 5000), 500);  // 50 - 40 = 10%
  EXPECT_EQ(num_feasible_nodes_to_find(0, 6000), 300);  // 50 - 48 < 5 → 5%
  EXPECT_EQ(num_feasible_nodes_to_find(10, 500), 100);  // 50, raised to the minimum of 100
  EXPECT_EQ(num_feasible_nodes_to_find(30, 1000), 300);
  EXPECT_EQ(num_feasible_nodes_to_find(100, 1000), 1000);
}

TEST_F(SchedulerTest, SpreadsPodsByLeastAllocated) {
  make();
  for (const char* n : {"n1", "n2", "n3"}) node(NodeBuilder(n).capacity("4", "8Gi"));
  std::map<std::string, int> per_node;
  for (int i = 0; i < 6; ++i) {
    std::string where = schedule(PodBuilder("p" + std::to_string(i)).req("1", "1Gi"));
    ASSERT_EQ(where.rfind("n", 0), 0u) << where;
    per_node[where]++;
  }
  EXPECT_EQ(per_node, (std::map<std::string, int>{{"n1", 2}, {"n2", 2}, {"n3", 2}}));
  EXPECT_EQ(binder->bound.size(), 6u);
  EXPECT_EQ(cache.pod_count(), 6u);
  EXPECT_EQ(cache.node_info("n1")->requested().milli_cpu, 2000);
}

TEST_F(SchedulerTest, AssumedPodsCountAtOnce) {
  make();
  node(NodeBuilder("n1").capacity("2", "8Gi"));
  EXPECT_EQ(schedule(PodBuilder("a").req("1500m", "")), "n1");
  EXPECT_TRUE(cache.is_assumed("uid-default-a"));
  EXPECT_EQ(schedule(PodBuilder("b").req("1", "")),
            "error: 0/1 nodes are available: 1 Insufficient cpu.");
  EXPECT_EQ(last_failure.unschedulable_plugins, std::set<std::string>{"NodeResourcesFit"});
}

TEST_F(SchedulerTest, FitErrorMessages) {
  make();
  for (const char* n : {"n1", "n2", "n3"}) node(NodeBuilder(n).capacity("1", "1Gi"));
  EXPECT_EQ(schedule(PodBuilder("cpu").req("2", "")),
            "error: 0/3 nodes are available: 3 Insufficient cpu.");
  ASSERT_TRUE(last_failure.fit_error.has_value());
  EXPECT_EQ(last_failure.fit_error->diagnosis.node_statuses.size(), 3u);
  EXPECT_EQ(schedule(PodBuilder("both").req("2", "2Gi")),
            "error: 0/3 nodes are available: 3 Insufficient cpu, 3 Insufficient memory.");
}

TEST_F(SchedulerTest, FitErrorCountsAndSortsReasonsAcrossNodes) {
  make();
  node(NodeBuilder("small1").capacity("4", "1Gi"));
  node(NodeBuilder("small2").capacity("4", "1Gi"));
  for (const char* n : {"t1", "t2", "t3"}) node(NodeBuilder(n).taint("key", "value", "NoSchedule"));
  EXPECT_EQ(schedule(PodBuilder("p").req("", "2Gi")),
            "error: 0/5 nodes are available: 2 Insufficient memory, 3 node(s) had untolerated "
            "taint {key: value}.");
  EXPECT_EQ(last_failure.unschedulable_plugins,
            (std::set<std::string>{"NodeResourcesFit", "TaintToleration"}));
}

TEST_F(SchedulerTest, FitErrorSortsCountsAsStrings) {
  make();
  for (int i = 0; i < 10; ++i) node(NodeBuilder("small" + std::to_string(i)).capacity("1", "8Gi"));
  node(NodeBuilder("t1").taint("key", "value", "NoSchedule"));
  node(NodeBuilder("t2").taint("key", "value", "NoSchedule"));
  EXPECT_EQ(schedule(PodBuilder("p").req("2", "")),
            "error: 0/12 nodes are available: 10 Insufficient cpu, 2 node(s) had untolerated "
            "taint {key: value}.");
}

TEST_F(SchedulerTest, PreFilterMessages) {
  make();
  for (const char* n : {"n1", "n2", "n3"}) node(NodeBuilder(n).capacity("1", "1Gi"));
  auto fields = [](json values) {
    return json{{"nodeAffinity",
                 {{"requiredDuringSchedulingIgnoredDuringExecution",
                   {{"nodeSelectorTerms",
                     json::array({{{"matchFields", json::array({{{"key", "metadata.name"},
                                                                 {"operator", "In"},
                                                                 {"values", values}}})}}})}}}}}};
  };
  // A DaemonSet-style pod pinned to n1, which is full: the other nodes were never candidates.
  EXPECT_EQ(schedule(PodBuilder("ds").req("2", "").spec("affinity", fields({"n1"}))),
            "error: 0/3 nodes are available: 1 Insufficient cpu, 2 node(s) didn't satisfy "
            "plugin(s) [NodeAffinity].");
  // Pinned to a node that does not exist.
  EXPECT_EQ(schedule(PodBuilder("ghost").spec("affinity", fields({"n9"}))),
            "error: 0/3 nodes are available: 3 node(s) didn't satisfy plugin(s) [NodeAffinity].");
  // Conflicting name requirements: PreFilter rejects outright.
  json conflict = fields({"n1"});
  conflict["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]
          ["matchFields"]
              .push_back({{"key", "metadata.name"}, {"operator", "In"}, {"values", {"n2"}}});
  EXPECT_EQ(schedule(PodBuilder("conflict").spec("affinity", conflict)),
            "error: 0/3 nodes are available: pod affinity terms conflict.");
  EXPECT_EQ(last_failure.unschedulable_plugins, std::set<std::string>{"NodeAffinity"});
  // The pinned pod fits when it asks for less.
  EXPECT_EQ(schedule(PodBuilder("ds2").spec("affinity", fields({"n2"}))), "n2");
}

TEST_F(SchedulerTest, NoNodes) {
  make();
  PodRef pod = PodBuilder("p").build();
  CycleOutcome r = scheduler->schedule_one(pod);
  ASSERT_FALSE(r.outcome.ok());
  EXPECT_EQ(r.outcome.failure().message, "no nodes available to schedule pods");
  EXPECT_EQ(r.outcome.failure().code, Code::kUnschedulableAndUnresolvable);
}

TEST_F(SchedulerTest, FiltersCombine) {
  make();
  node(NodeBuilder("cordoned").unschedulable());
  node(NodeBuilder("tainted").taint("dedicated", "db", "NoSchedule"));
  node(NodeBuilder("hdd").label("disk", "hdd"));
  node(NodeBuilder("ssd").label("disk", "ssd"));
  node(NodeBuilder("down").label("disk", "ssd").ready("False"));
  EXPECT_EQ(schedule(PodBuilder("p").node_selector("disk", "ssd")), "ssd");
  EXPECT_EQ(schedule(PodBuilder("q").node_selector("disk", "nvme")),
            "error: 0/5 nodes are available: 1 node(s) had untolerated taint {dedicated: db}, 1 "
            "node(s) were not ready, 1 node(s) were unschedulable, 2 node(s) didn't match Pod's "
            "node affinity/selector.");
  EXPECT_EQ(schedule(PodBuilder("r").node_selector("disk", "ssd").req("5", "")),
            "error: 0/5 nodes are available: 1 Insufficient cpu, 1 node(s) didn't match Pod's "
            "node affinity/selector, 1 node(s) had untolerated taint {dedicated: db}, 1 node(s) "
            "were not ready, 1 node(s) were unschedulable.");
}

TEST_F(SchedulerTest, HostPortsSpreadOnePerNode) {
  make();
  node(NodeBuilder("n1"));
  node(NodeBuilder("n2"));
  std::set<std::string> used;
  used.insert(schedule(PodBuilder("a").host_port(80)));
  used.insert(schedule(PodBuilder("b").host_port(80)));
  EXPECT_EQ(used, (std::set<std::string>{"n1", "n2"}));
  EXPECT_EQ(
      schedule(PodBuilder("c").host_port(80)),
      "error: 0/2 nodes are available: 2 node(s) didn't have free ports for the requested pod "
      "ports.");
}

TEST_F(SchedulerTest, AntiAffinityPlacesOnePerNode) {
  make();
  for (const char* n : {"n1", "n2", "n3"}) node(NodeBuilder(n));
  std::set<std::string> used;
  for (int i = 0; i < 3; ++i) {
    used.insert(schedule(PodBuilder("web-" + std::to_string(i))
                             .label("app", "web")
                             .required_anti_affinity("app", "web", kHost)));
  }
  EXPECT_EQ(used, (std::set<std::string>{"n1", "n2", "n3"}));
  EXPECT_EQ(
      schedule(PodBuilder("web-3").label("app", "web").required_anti_affinity("app", "web", kHost)),
      "error: 0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules.");
  // A pod without terms is blocked by the existing pods' anti-affinity.
  EXPECT_EQ(schedule(PodBuilder("web-plain").label("app", "web")),
            "error: 0/3 nodes are available: 3 node(s) didn't satisfy existing pods anti-affinity "
            "rules.");
  EXPECT_EQ(schedule(PodBuilder("db").label("app", "db")).rfind("n", 0), 0u);
}

TEST_F(SchedulerTest, PodAffinityFollowsTheTarget) {
  make();
  node(NodeBuilder("a1").zone("a"));
  node(NodeBuilder("a2").zone("a"));
  node(NodeBuilder("b1").zone("b"));
  pod_on(PodBuilder("db").node("b1").label("app", "db"));
  EXPECT_EQ(schedule(PodBuilder("web").required_affinity("app", "db", kZone)), "b1");
  // Preferred affinity tips an otherwise even choice.
  EXPECT_EQ(schedule(PodBuilder("cache").preferred_affinity(100, "app", "db", kHost)), "b1");
}

TEST_F(SchedulerTest, TopologySpreadBalancesZones) {
  make();
  node(NodeBuilder("a1").zone("a"));
  node(NodeBuilder("a2").zone("a"));
  node(NodeBuilder("b1").zone("b"));
  node(NodeBuilder("b2").zone("b"));
  std::map<std::string, int> zones;
  for (int i = 0; i < 6; ++i) {
    std::string where = schedule(PodBuilder("p" + std::to_string(i))
                                     .label("app", "foo")
                                     .spread(1, kZone, "DoNotSchedule", "app", "foo"));
    ASSERT_EQ(where.size(), 2u) << where;
    zones[where.substr(0, 1)]++;
  }
  EXPECT_EQ(zones, (std::map<std::string, int>{{"a", 3}, {"b", 3}}));
}

// Many cycles in a row exercise the counts the plugins keep across cycles: the constraints must
// hold after every placement, including after pods are deleted behind the scheduler's back.
TEST_F(SchedulerTest, ConstraintsHoldOverManyCycles) {
  make();
  for (int i = 0; i < 12; ++i) {
    node(NodeBuilder("n" + std::to_string(i))
             .zone("z" + std::to_string(i % 3))
             .capacity("64", "64Gi"));
  }
  std::map<std::string, std::string> web;  // pod → node
  std::map<std::string, int> zone_count;
  int created = 0;
  for (int round = 0; round < 60; ++round) {
    if (round % 7 == 6 && !web.empty()) {
      // The informer reports a pod deleted.
      auto victim = web.begin();
      ASSERT_TRUE(cache.remove_pod("uid-default-" + victim->first).is_ok());
      zone_count["z" + std::to_string(std::stoi(victim->second.substr(1)) % 3)]--;
      web.erase(victim);
      continue;
    }
    std::string name = "web-" + std::to_string(created++);
    std::string where = schedule(PodBuilder(name)
                                     .label("app", "web")
                                     .required_anti_affinity("app", "web", kHost)
                                     .spread(1, kZone, "DoNotSchedule", "app", "web"));
    if (where.rfind("error", 0) == 0) {
      // Only when every node already runs one.
      EXPECT_EQ(web.size(), 12u) << where;
      continue;
    }
    for (const auto& [other, on] : web) ASSERT_NE(on, where) << name << " shares a node";
    web[name] = where;
    zone_count["z" + std::to_string(std::stoi(where.substr(1)) % 3)]++;
    int lo = 1 << 30, hi = 0;
    for (int z = 0; z < 3; ++z) {
      lo = std::min(lo, zone_count["z" + std::to_string(z)]);
      hi = std::max(hi, zone_count["z" + std::to_string(z)]);
    }
    ASSERT_LE(hi - lo, 1) << "after " << name;
  }
  EXPECT_GT(created, 40);
}

TEST_F(SchedulerTest, DefaultSpreadingSpreadsAReplicaSet) {
  make();
  for (const char* n : {"n1", "n2", "n3"}) node(NodeBuilder(n).capacity("100", "100Gi"));
  // Unequal other load would otherwise pull every pod to the emptiest node.
  pod_on(PodBuilder("busy").node("n1").req("2", "1Gi"));
  std::map<std::string, int> per_node;
  for (int i = 0; i < 6; ++i) per_node[schedule(PodBuilder("r" + std::to_string(i)).owner("rs"))]++;
  EXPECT_EQ(per_node.size(), 3u);
  for (const auto& [n, count] : per_node) EXPECT_EQ(count, 2) << n;
}

TEST_F(SchedulerTest, EvaluatesAFractionOfLargeClustersFromARotatingOffset) {
  make();
  for (int i = 0; i < 200; ++i) {
    char name[8];
    std::snprintf(name, sizeof(name), "n%03d", i);
    node(NodeBuilder(name));
  }
  CycleState state;
  PodRef pod = PodBuilder("p").build();
  ScheduleOutcome first = scheduler->schedule_pod(state, *pod);
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(first.result().evaluated_nodes, 100);
  EXPECT_EQ(first.result().feasible_nodes, 100);
  EXPECT_LT(first.result().node, "n100");
  CycleState state2;
  ScheduleOutcome second = scheduler->schedule_pod(state2, *pod);
  ASSERT_TRUE(second.ok());
  EXPECT_GE(second.result().node, "n100");

  SchedulerOptions all;
  all.percentage_of_nodes_to_score = 100;
  make(all);
  CycleState state3;
  ScheduleOutcome third = scheduler->schedule_pod(state3, *pod);
  EXPECT_EQ(third.result().evaluated_nodes, 200);
}

TEST_F(SchedulerTest, NominatedNodeIsTriedFirst) {
  make();
  node(NodeBuilder("n1").capacity("4", "8Gi"));
  node(NodeBuilder("n2").capacity("4", "8Gi"));
  pod_on(PodBuilder("load").node("n2").req("3", "4Gi"));
  json j = PodBuilder("p").req("1", "").json_ref();
  j["status"]["nominatedNodeName"] = "n2";
  CycleState state;
  ScheduleOutcome r = scheduler->schedule_pod(state, *PodInfo::from_json(j));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r.result().node, "n2");  // least allocated would have picked n1
}

TEST_F(SchedulerTest, FailedBindingForgetsTheAssumedPod) {
  make();
  node(NodeBuilder("n1").capacity("1", "1Gi"));
  binder->fail.insert("p");
  EXPECT_EQ(schedule(PodBuilder("p").req("1", "")),
            "bind: running Bind plugin \"FakeBinder\": binding rejected");
  EXPECT_EQ(cache.pod_count(), 0u);
  EXPECT_EQ(binder->unreserved, std::vector<std::string>{"p"});
  // The room is free again.
  EXPECT_EQ(schedule(PodBuilder("q").req("1", "")), "n1");
  EXPECT_TRUE(cache.is_assumed("uid-default-q"));  // bound, awaiting the informer
}

TEST_F(SchedulerTest, ReserveRejectionUndoesTheAssumption) {
  make();
  node(NodeBuilder("n1"));
  binder->reject_reserve.insert("p");
  PodRef pod = PodBuilder("p").build();
  CycleOutcome r = scheduler->schedule_one(pod);
  ASSERT_FALSE(r.outcome.ok());
  EXPECT_EQ(r.outcome.failure().message, "reserve refused");
  EXPECT_EQ(r.outcome.failure().unschedulable_plugins, std::set<std::string>{"FakeBinder"});
  EXPECT_EQ(cache.pod_count(), 0u);
  EXPECT_EQ(binder->unreserved, std::vector<std::string>{"p"});
}

TEST_F(SchedulerTest, TaintsPreferredAgainst) {
  make();
  node(NodeBuilder("soft").taint("k", "v", "PreferNoSchedule"));
  node(NodeBuilder("clean"));
  EXPECT_EQ(schedule(PodBuilder("p")), "clean");
}

}  // namespace
}  // namespace skiff::scheduler
