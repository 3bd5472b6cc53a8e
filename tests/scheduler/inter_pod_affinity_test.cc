#include "scheduler/plugins/inter_pod_affinity.h"

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

std::unique_ptr<Plugin> make(const json& args = nullptr) {
  auto p = InterPodAffinity::create(args);
  EXPECT_TRUE(p.is_ok()) << p.status().to_string();
  return std::move(p).value();
}

class InterPodAffinityTest : public ::testing::Test {
 protected:
  void SetUp() override {
    c.add(NodeBuilder("n1").zone("a"));
    c.add(NodeBuilder("n2").zone("a"));
    c.add(NodeBuilder("n3").zone("b"));
    c.add(NodeBuilder("nozone"));
  }
  Cluster c;
  std::unique_ptr<Plugin> pl = make();
};

TEST_F(InterPodAffinityTest, SkipsWhenNothingToCheck) {
  c.add(PodBuilder("web").node("n1").label("app", "web"));
  CycleState state;
  PreFilterResult r;
  PodRef pod = PodBuilder("p").label("app", "web").build();
  EXPECT_TRUE(
      dynamic_cast<PreFilterPlugin&>(*pl).pre_filter(state, *pod, c.refresh(), r).is_skip());
}

TEST_F(InterPodAffinityTest, AntiAffinityOnHostname) {
  c.add(PodBuilder("web-1").node("n1").label("app", "web"));
  PodRef pod =
      PodBuilder("web-2").label("app", "web").required_anti_affinity("app", "web", kHost).build();
  PluginStatus s = run_filter(*pl, c, *pod, "n1");
  EXPECT_EQ(s.code(), Code::kUnschedulable);
  EXPECT_EQ(s.message(), "node(s) didn't match pod anti-affinity rules");
  EXPECT_TRUE(run_filter(*pl, c, *pod, "n2").is_success());
  EXPECT_TRUE(run_filter(*pl, c, *pod, "n3").is_success());
}

TEST_F(InterPodAffinityTest, AntiAffinityOnZone) {
  c.add(PodBuilder("web-1").node("n1").label("app", "web"));
  PodRef pod =
      PodBuilder("web-2").label("app", "web").required_anti_affinity("app", "web", kZone).build();
  EXPECT_FALSE(run_filter(*pl, c, *pod, "n1").is_success());
  EXPECT_FALSE(run_filter(*pl, c, *pod, "n2").is_success());
  EXPECT_TRUE(run_filter(*pl, c, *pod, "n3").is_success());
  // A node without the topology key is not in any domain.
  EXPECT_TRUE(run_filter(*pl, c, *pod, "nozone").is_success());
}

TEST_F(InterPodAffinityTest, AntiAffinityOnlyInTheTermsNamespaces) {
  c.add(PodBuilder("web-other", "other").node("n1").label("app", "web"));
  PodRef pod =
      PodBuilder("web").label("app", "web").required_anti_affinity("app", "web", kHost).build();
  EXPECT_TRUE(run_filter(*pl, c, *pod, "n1").is_success());

  // namespaceSelector {} covers every namespace.
  json j = PodBuilder("web-all").label("app", "web").json_ref();
  json term = PodBuilder::term("app", "web", kHost);
  term["namespaceSelector"] = json::object();
  j["spec"]["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"] = {
      term};
  EXPECT_FALSE(run_filter(*pl, c, *PodInfo::from_json(j), "n1").is_success());

  // namespaceSelector on namespace labels.
  term["namespaceSelector"] = {{"matchLabels", {{"team", "x"}}}};
  j["spec"]["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"] = {
      term};
  PodRef by_label = PodInfo::from_json(j);
  EXPECT_TRUE(run_filter(*pl, c, *by_label, "n1").is_success());
  c.cache.set_namespace("other", Labels::from_json({{"team", "x"}}));
  EXPECT_FALSE(run_filter(*pl, c, *by_label, "n1").is_success());
}

TEST_F(InterPodAffinityTest, RequiredAffinity) {
  c.add(PodBuilder("db").node("n3").label("app", "db"));
  PodRef pod = PodBuilder("web").required_affinity("app", "db", kZone).build();
  EXPECT_TRUE(run_filter(*pl, c, *pod, "n3").is_success());
  PluginStatus s = run_filter(*pl, c, *pod, "n1");
  EXPECT_EQ(s.code(), Code::kUnschedulableAndUnresolvable);
  EXPECT_EQ(s.message(), "node(s) didn't match pod affinity rules");
  EXPECT_FALSE(run_filter(*pl, c, *pod, "nozone").is_success());
}

TEST_F(InterPodAffinityTest, FirstPodOfASelfAffineGroupMayGoAnywhere) {
  PodRef first =
      PodBuilder("web-1").label("app", "web").required_affinity("app", "web", kZone).build();
  EXPECT_TRUE(run_filter(*pl, c, *first, "n1").is_success());
  EXPECT_TRUE(run_filter(*pl, c, *first, "n3").is_success());
  // Still needs the topology key.
  EXPECT_FALSE(run_filter(*pl, c, *first, "nozone").is_success());
  // A pod that does not match its own term gets no such pass.
  PodRef other = PodBuilder("x").label("app", "x").required_affinity("app", "web", kZone).build();
  EXPECT_FALSE(run_filter(*pl, c, *other, "n1").is_success());

  // Once one exists, the others follow it.
  c.add(PodBuilder("web-0").node("n3").label("app", "web"));
  EXPECT_FALSE(run_filter(*pl, c, *first, "n1").is_success());
  EXPECT_TRUE(run_filter(*pl, c, *first, "n3").is_success());
}

TEST_F(InterPodAffinityTest, ExistingPodsAntiAffinity) {
  c.add(PodBuilder("loner")
            .node("n1")
            .label("app", "loner")
            .required_anti_affinity("app", "web", kHost));
  c.add(PodBuilder("zonal").node("n3").required_anti_affinity("app", "web", kZone));
  PodRef web = PodBuilder("web").label("app", "web").build();
  PluginStatus s = run_filter(*pl, c, *web, "n1");
  EXPECT_EQ(s.code(), Code::kUnschedulable);
  EXPECT_EQ(s.message(), "node(s) didn't satisfy existing pods anti-affinity rules");
  EXPECT_TRUE(run_filter(*pl, c, *web, "n2").is_success());
  EXPECT_FALSE(run_filter(*pl, c, *web, "n3").is_success());
  EXPECT_TRUE(run_filter(*pl, c, *web, "nozone").is_success());
  // Pods the terms do not select are unaffected.
  EXPECT_TRUE(run_filter(*pl, c, *PodBuilder("db").label("app", "db").build(), "n1").is_success());
}

TEST_F(InterPodAffinityTest, InvalidTermsMakeThePodUnresolvable) {
  json j = PodBuilder("bad").json_ref();
  j["spec"]["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"] =
      json::array(
          {{{"labelSelector", {{"matchLabels", {{"a", "not valid!"}}}}}, {"topologyKey", kZone}}});
  PluginStatus s = run_filter(*pl, c, *PodInfo::from_json(j), "n1");
  EXPECT_EQ(s.code(), Code::kUnschedulableAndUnresolvable);
  EXPECT_EQ(s.message().rfind("parsing pod: ", 0), 0u);
}

TEST_F(InterPodAffinityTest, ScorePreferredAffinityAndAntiAffinity) {
  c.add(PodBuilder("db").node("n1").label("app", "db"));
  auto scores =
      run_score(*pl, c, *PodBuilder("p").preferred_affinity(5, "app", "db", kHost).build());
  EXPECT_EQ(scores["n1"], 100);
  EXPECT_EQ(scores["n2"], 0);
  EXPECT_EQ(scores["n3"], 0);

  scores =
      run_score(*pl, c, *PodBuilder("q").preferred_anti_affinity(5, "app", "db", kZone).build());
  EXPECT_EQ(scores["n1"], 0);
  EXPECT_EQ(scores["n2"], 0);
  EXPECT_EQ(scores["n3"], 100);
  EXPECT_EQ(scores["nozone"], 100);

  // Neither side has terms: nothing to score.
  EXPECT_TRUE(run_score(*pl, c, *PodBuilder("r").build()).empty());
}

TEST_F(InterPodAffinityTest, ScoreExistingPodsTerms) {
  // An existing pod's required affinity towards the incoming pod counts with
  // hardPodAffinityWeight; its preferred anti-affinity counts against.
  c.add(PodBuilder("fan").node("n2").required_affinity("app", "web", kHost));
  c.add(PodBuilder("hater").node("n3").preferred_anti_affinity(10, "app", "web", kHost));
  PodRef web = PodBuilder("web").label("app", "web").build();
  auto scores = run_score(*pl, c, *web);
  // Raw: n2 +1, n3 -10, others 0 → min-max normalized.
  EXPECT_EQ(scores["n2"], 100);
  EXPECT_EQ(scores["n3"], 0);
  EXPECT_EQ(scores["n1"], 90);

  auto ignoring = make({{"hardPodAffinityWeight", 0}});
  scores = run_score(*ignoring, c, *web);
  EXPECT_EQ(scores["n2"], 100);
  EXPECT_EQ(scores["n1"], 100);
  EXPECT_EQ(scores["n3"], 0);
  EXPECT_FALSE(InterPodAffinity::create({{"hardPodAffinityWeight", 101}}).is_ok());
}

}  // namespace
}  // namespace skiff::scheduler::plugins
