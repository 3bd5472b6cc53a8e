#include "scheduler/plugins/pod_topology_spread.h"

#include <gtest/gtest.h>

#include "test_util.h"

namespace skiff::scheduler::plugins {
namespace {

using nlohmann::json;
using testing::Cluster;
using testing::NodeBuilder;
using testing::PodBuilder;
using testing::run_filter;
using testing::run_score;

constexpr const char* kHost = "kubernetes.io/hostname";
constexpr const char* kZone = "topology.kubernetes.io/zone";

std::unique_ptr<Plugin> make(const json& args = nullptr,
                             PodTopologySpread::DefaultSelectorFn fn = nullptr) {
  auto p = PodTopologySpread::create(args, std::move(fn));
  EXPECT_TRUE(p.is_ok()) << p.status().to_string();
  return std::move(p).value();
}

void add_pods(Cluster& c, const std::string& node, int n, const std::string& app = "foo",
              const std::string& ns = "default") {
  for (int i = 0; i < n; ++i) {
    c.add(PodBuilder(node + "-" + app + "-" + std::to_string(i), ns).node(node).label("app", app));
  }
}

TEST(PodTopologySpreadFilterTest, NoConstraintsSkips) {
  Cluster c;
  c.add(NodeBuilder("n1"));
  auto pl = make();
  CycleState state;
  PreFilterResult r;
  PodRef pod = PodBuilder("p").build();
  EXPECT_TRUE(
      dynamic_cast<PreFilterPlugin&>(*pl).pre_filter(state, *pod, c.refresh(), r).is_skip());
}

TEST(PodTopologySpreadFilterTest, SpreadAcrossNodes) {
  // 2/1/0/3 matching pods on a/b/x/y, maxSkew 1: only x fits.
  Cluster c;
  for (const char* n : {"a", "b", "x", "y"}) c.add(NodeBuilder(n));
  add_pods(c, "a", 2);
  add_pods(c, "b", 1);
  add_pods(c, "y", 3);
  add_pods(c, "x", 2, "bar");  // other pods do not count
  auto pl = make();
  PodRef pod =
      PodBuilder("p").label("app", "foo").spread(1, kHost, "DoNotSchedule", "app", "foo").build();
  PluginStatus s = run_filter(*pl, c, *pod, "a");
  EXPECT_EQ(s.code(), Code::kUnschedulable);
  EXPECT_EQ(s.message(), "node(s) didn't match pod topology spread constraints");
  EXPECT_FALSE(run_filter(*pl, c, *pod, "b").is_success());
  EXPECT_TRUE(run_filter(*pl, c, *pod, "x").is_success());
  EXPECT_FALSE(run_filter(*pl, c, *pod, "y").is_success());

  // A pod that does not match its own selector adds nothing to the skew.
  PodRef outsider = PodBuilder("q").spread(1, kHost, "DoNotSchedule", "app", "foo").build();
  EXPECT_TRUE(run_filter(*pl, c, *outsider, "b").is_success());
  EXPECT_FALSE(run_filter(*pl, c, *outsider, "a").is_success());
}

TEST(PodTopologySpreadFilterTest, SpreadAcrossZones) {
  Cluster c;
  c.add(NodeBuilder("a1").zone("a")).add(NodeBuilder("a2").zone("a"));
  c.add(NodeBuilder("b1").zone("b")).add(NodeBuilder("b2").zone("b"));
  c.add(NodeBuilder("nolabel"));
  add_pods(c, "a1", 1);
  add_pods(c, "a2", 1);
  add_pods(c, "b1", 1);
  add_pods(c, "nolabel", 5);  // not in any zone: does not count
  auto pl = make();
  PodRef pod =
      PodBuilder("p").label("app", "foo").spread(1, kZone, "DoNotSchedule", "app", "foo").build();
  // zone a: 2, zone b: 1.
  EXPECT_FALSE(run_filter(*pl, c, *pod, "a1").is_success());
  EXPECT_TRUE(run_filter(*pl, c, *pod, "b2").is_success());
  PluginStatus s = run_filter(*pl, c, *pod, "nolabel");
  EXPECT_EQ(s.code(), Code::kUnschedulableAndUnresolvable);
  EXPECT_EQ(s.message(),
            "node(s) didn't match pod topology spread constraints (missing required label)");
}

TEST(PodTopologySpreadFilterTest, OtherNamespacesAndTerminatingPodsDoNotCount) {
  Cluster c;
  c.add(NodeBuilder("a")).add(NodeBuilder("b"));
  add_pods(c, "a", 3, "foo", "other");
  c.add(PodBuilder("dying").node("a").label("app", "foo").terminating());
  auto pl = make();
  PodRef pod =
      PodBuilder("p").label("app", "foo").spread(1, kHost, "DoNotSchedule", "app", "foo").build();
  EXPECT_TRUE(run_filter(*pl, c, *pod, "a").is_success());
}

TEST(PodTopologySpreadFilterTest, MinDomains) {
  Cluster c;
  c.add(NodeBuilder("a").zone("a")).add(NodeBuilder("b").zone("b"));
  add_pods(c, "a", 1);
  add_pods(c, "b", 1);
  auto pl = make();
  json j = PodBuilder("p")
               .label("app", "foo")
               .spread(1, kZone, "DoNotSchedule", "app", "foo")
               .json_ref();
  PodRef without = PodInfo::from_json(j);
  EXPECT_TRUE(run_filter(*pl, c, *without, "a").is_success());  // 1 + 1 - 1 = 1
  // Fewer domains (2) than minDomains (3): the global minimum is taken as 0.
  j["spec"]["topologySpreadConstraints"][0]["minDomains"] = 3;
  PodRef with = PodInfo::from_json(j);
  EXPECT_FALSE(run_filter(*pl, c, *with, "a").is_success());  // 1 + 1 - 0 = 2
}

TEST(PodTopologySpreadFilterTest, NodeInclusionPolicies) {
  Cluster c;
  c.add(NodeBuilder("a").label("pool", "x"));
  c.add(NodeBuilder("b").label("pool", "x"));
  c.add(NodeBuilder("c").label("pool", "y"));  // the pod's nodeSelector excludes it
  c.add(NodeBuilder("d").label("pool", "x").taint("k", "v", "NoSchedule"));
  add_pods(c, "a", 1);
  add_pods(c, "b", 1);
  auto pl = make();
  json j = PodBuilder("p")
               .label("app", "foo")
               .node_selector("pool", "x")
               .spread(1, kHost, "DoNotSchedule", "app", "foo")
               .json_ref();
  // Defaults (affinity Honor, taints Ignore): a, b, d are eligible; d's 0 is the minimum.
  EXPECT_FALSE(run_filter(*pl, c, *PodInfo::from_json(j), "a").is_success());
  // Taints Honor: d drops out; the minimum is 1.
  j["spec"]["topologySpreadConstraints"][0]["nodeTaintsPolicy"] = "Honor";
  EXPECT_TRUE(run_filter(*pl, c, *PodInfo::from_json(j), "a").is_success());
  // Affinity Ignore as well: c (0) becomes eligible and the minimum.
  j["spec"]["topologySpreadConstraints"][0]["nodeAffinityPolicy"] = "Ignore";
  EXPECT_FALSE(run_filter(*pl, c, *PodInfo::from_json(j), "a").is_success());
}

TEST(PodTopologySpreadFilterTest, NodeAffinityHonorChangesTheMinimum) {
  Cluster c;
  c.add(NodeBuilder("a").label("pool", "x"));
  c.add(NodeBuilder("b").label("pool", "y"));
  add_pods(c, "a", 1);
  auto pl = make();
  json j = PodBuilder("p")
               .label("app", "foo")
               .node_selector("pool", "x")
               .spread(1, kHost, "DoNotSchedule", "app", "foo")
               .json_ref();
  // Honor: only a is eligible, its count (1) is the minimum: 1 + 1 - 1 = 1 fits.
  EXPECT_TRUE(run_filter(*pl, c, *PodInfo::from_json(j), "a").is_success());
  // Ignore: b (0) is the minimum: 1 + 1 - 0 = 2 does not.
  j["spec"]["topologySpreadConstraints"][0]["nodeAffinityPolicy"] = "Ignore";
  EXPECT_FALSE(run_filter(*pl, c, *PodInfo::from_json(j), "a").is_success());
}

TEST(PodTopologySpreadScoreTest, FewerMatchingPodsScoreHigher) {
  Cluster c;
  for (const char* n : {"a", "b", "c"}) c.add(NodeBuilder(n));
  add_pods(c, "a", 2);
  add_pods(c, "b", 1);
  auto pl = make();
  PodRef pod =
      PodBuilder("p").label("app", "foo").spread(1, kHost, "ScheduleAnyway", "app", "foo").build();
  auto scores = run_score(*pl, c, *pod);
  // weight log(3 + 2): raw a 3, b 2, c 0 → (max + min - s) * 100 / max.
  EXPECT_EQ(scores["a"], 0);
  EXPECT_EQ(scores["b"], 33);
  EXPECT_EQ(scores["c"], 100);
}

TEST(PodTopologySpreadScoreTest, ZonesAndIgnoredNodes) {
  Cluster c;
  c.add(NodeBuilder("a1").zone("a")).add(NodeBuilder("a2").zone("a"));
  c.add(NodeBuilder("b1").zone("b"));
  c.add(NodeBuilder("nolabel"));
  add_pods(c, "a1", 2);
  add_pods(c, "b1", 1);
  auto pl = make();
  PodRef pod =
      PodBuilder("p").label("app", "foo").spread(1, kZone, "ScheduleAnyway", "app", "foo").build();
  auto scores = run_score(*pl, c, *pod);
  // Two zones: weight log(4); raw a: round(2 × 1.386) = 3, b: round(1.386) = 1.
  EXPECT_EQ(scores["a1"], 33);  // (3 + 1 - 3) × 100 / 3
  EXPECT_EQ(scores["a2"], 33);
  EXPECT_EQ(scores["b1"], 100);  // (3 + 1 - 1) × 100 / 3
  EXPECT_EQ(scores["nolabel"], 0);
}

TEST(PodTopologySpreadScoreTest, DefaultConstraintsSpreadAController) {
  Cluster c;
  c.add(NodeBuilder("a").zone("z1"))
      .add(NodeBuilder("b").zone("z1"))
      .add(NodeBuilder("c").zone("z2"));
  for (int i = 0; i < 2; ++i) {
    c.add(PodBuilder("rs-a" + std::to_string(i)).node("a").owner("rs-1"));
  }
  c.add(PodBuilder("rs-a2").node("a").owner("rs-1"));
  c.add(PodBuilder("rs-c").node("c").owner("rs-1"));
  c.add(PodBuilder("other").node("b").owner("rs-2"));
  auto pl = make();
  PodRef pod = PodBuilder("new").owner("rs-1").build();
  auto scores = run_score(*pl, c, *pod);
  // Raw (hostname weight log 5, maxSkew 3; zone weight log 4, maxSkew 5): a 15, b 10, c 9.
  EXPECT_EQ(scores["a"], 60);
  EXPECT_EQ(scores["b"], 93);
  EXPECT_EQ(scores["c"], 100);
  // Without an owner there is nothing to spread.
  EXPECT_TRUE(run_score(*pl, c, *PodBuilder("lonely").build()).empty());

  // A selector provider replaces the owner rule.
  auto by_label = make(nullptr, [](const PodInfo& p) -> std::optional<Selector> {
    if (p.labels.find("app") == nullptr) return std::nullopt;
    return Selector::from_labels(Labels::from_json({{"app", p.labels.find("app")->str()}}));
  });
  c.add(PodBuilder("web").node("b").label("app", "web"));
  scores = run_score(*by_label, c, *PodBuilder("web-2").label("app", "web").build());
  EXPECT_LT(scores["b"], scores["a"]);
  EXPECT_TRUE(run_score(*by_label, c, *PodBuilder("x").owner("rs-1").build()).empty());
}

TEST(PodTopologySpreadArgsTest, Validation) {
  EXPECT_FALSE(
      PodTopologySpread::create(
          {{"defaultingType", "System"},
           {"defaultConstraints", json::array({{{"maxSkew", 1},
                                                {"topologyKey", kHost},
                                                {"whenUnsatisfiable", "DoNotSchedule"}}})}})
          .is_ok());
  EXPECT_FALSE(PodTopologySpread::create({{"defaultingType", "Weird"}}).is_ok());
  EXPECT_FALSE(
      PodTopologySpread::create(
          {{"defaultingType", "List"},
           {"defaultConstraints", json::array({{{"maxSkew", 0},
                                                {"topologyKey", kHost},
                                                {"whenUnsatisfiable", "DoNotSchedule"}}})}})
          .is_ok());

  // List defaults with DoNotSchedule filter pods that have no constraints of their own.
  Cluster c;
  c.add(NodeBuilder("a")).add(NodeBuilder("b"));
  c.add(PodBuilder("x").node("a").owner("rs-1"));
  auto pl = make({{"defaultingType", "List"},
                  {"defaultConstraints", json::array({{{"maxSkew", 1},
                                                       {"topologyKey", kHost},
                                                       {"whenUnsatisfiable", "DoNotSchedule"}}})}});
  PodRef pod = PodBuilder("y").owner("rs-1").build();
  EXPECT_FALSE(run_filter(*pl, c, *pod, "a").is_success());
  EXPECT_TRUE(run_filter(*pl, c, *pod, "b").is_success());
}

}  // namespace
}  // namespace skiff::scheduler::plugins
