#include "scheduler/plugins/node_affinity.h"

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

std::unique_ptr<Plugin> make(const json& args = nullptr) {
  auto p = NodeAffinity::create(args);
  EXPECT_TRUE(p.is_ok()) << p.status().to_string();
  return std::move(p).value();
}

json expr(const std::string& k, const std::string& op, json values = nullptr) {
  json e = {{"key", k}, {"operator", op}};
  if (!values.is_null()) e["values"] = std::move(values);
  return e;
}

json required(json terms) {
  return {{"nodeAffinity",
           {{"requiredDuringSchedulingIgnoredDuringExecution",
             {{"nodeSelectorTerms", std::move(terms)}}}}}};
}

class NodeAffinityTest : public ::testing::Test {
 protected:
  void SetUp() override {
    c.add(NodeBuilder("ssd-a").label("disk", "ssd").zone("a"));
    c.add(NodeBuilder("hdd-b").label("disk", "hdd").zone("b"));
    c.add(NodeBuilder("bare"));
  }
  Cluster c;
};

TEST_F(NodeAffinityTest, SkipsPodsWithoutConstraints) {
  auto pl = make();
  CycleState state;
  PreFilterResult r;
  PodRef pod = PodBuilder("p").build();
  EXPECT_TRUE(
      dynamic_cast<PreFilterPlugin&>(*pl).pre_filter(state, *pod, c.refresh(), r).is_skip());
}

TEST_F(NodeAffinityTest, NodeSelector) {
  auto pl = make();
  PodRef pod = PodBuilder("p").node_selector("disk", "ssd").build();
  EXPECT_TRUE(run_filter(*pl, c, *pod, "ssd-a").is_success());
  PluginStatus s = run_filter(*pl, c, *pod, "hdd-b");
  EXPECT_EQ(s.code(), Code::kUnschedulableAndUnresolvable);
  EXPECT_EQ(s.message(), "node(s) didn't match Pod's node affinity/selector");
  EXPECT_FALSE(run_filter(*pl, c, *pod, "bare").is_success());
}

TEST_F(NodeAffinityTest, RequiredTermsAreOredAndExpressionsAnded) {
  auto pl = make();
  PodRef pod =
      PodBuilder("p")
          .spec("affinity",
                required(json::array({{{"matchExpressions",
                                        {expr("disk", "In", {"ssd"}),
                                         expr("topology.kubernetes.io/zone", "In", {"a"})}}},
                                      {{"matchExpressions", {expr("disk", "In", {"nvme"})}}}})))
          .build();
  EXPECT_TRUE(run_filter(*pl, c, *pod, "ssd-a").is_success());
  EXPECT_FALSE(run_filter(*pl, c, *pod, "hdd-b").is_success());

  // Both the nodeSelector and the affinity must hold.
  PodRef both = PodBuilder("q")
                    .node_selector("disk", "hdd")
                    .spec("affinity",
                          required(json::array({{{"matchExpressions", {expr("disk", "Exists")}}}})))
                    .build();
  EXPECT_FALSE(run_filter(*pl, c, *both, "ssd-a").is_success());
  EXPECT_TRUE(run_filter(*pl, c, *both, "hdd-b").is_success());

  // An empty term matches nothing.
  PodRef empty = PodBuilder("e").spec("affinity", required(json::array({json::object()}))).build();
  EXPECT_FALSE(run_filter(*pl, c, *empty, "ssd-a").is_success());
}

TEST_F(NodeAffinityTest, MetadataNameFieldsNarrowTheNodes) {
  auto pl = make();
  // A DaemonSet pod: pinned by name.
  PodRef pod =
      PodBuilder("ds")
          .spec(
              "affinity",
              required(json::array({{{"matchFields", {expr("metadata.name", "In", {"hdd-b"})}}}})))
          .build();
  CycleState state;
  PreFilterResult r;
  ASSERT_TRUE(
      dynamic_cast<PreFilterPlugin&>(*pl).pre_filter(state, *pod, c.refresh(), r).is_success());
  EXPECT_FALSE(r.all_nodes);
  EXPECT_EQ(r.node_names, std::vector<std::string>{"hdd-b"});
  EXPECT_TRUE(run_filter(*pl, c, *pod, "hdd-b").is_success());

  // Terms naming disjoint nodes are unioned; a term without names lifts the restriction.
  PodRef two =
      PodBuilder("two")
          .spec("affinity",
                required(json::array({{{"matchFields", {expr("metadata.name", "In", {"a"})}}},
                                      {{"matchFields", {expr("metadata.name", "In", {"b"})}}}})))
          .build();
  r = {};
  ASSERT_TRUE(
      dynamic_cast<PreFilterPlugin&>(*pl).pre_filter(state, *two, c.refresh(), r).is_success());
  EXPECT_EQ(r.node_names, (std::vector<std::string>{"a", "b"}));
  PodRef open =
      PodBuilder("open")
          .spec("affinity",
                required(json::array({{{"matchFields", {expr("metadata.name", "In", {"a"})}}},
                                      {{"matchExpressions", {expr("disk", "Exists")}}}})))
          .build();
  r = {};
  ASSERT_TRUE(
      dynamic_cast<PreFilterPlugin&>(*pl).pre_filter(state, *open, c.refresh(), r).is_success());
  EXPECT_TRUE(r.all_nodes);
}

TEST_F(NodeAffinityTest, PreferredTermsScore) {
  auto pl = make();
  json preferred = {
      {"nodeAffinity",
       {{"preferredDuringSchedulingIgnoredDuringExecution",
         json::array(
             {{{"weight", 2},
               {"preference", {{"matchExpressions", {expr("disk", "In", {"ssd"})}}}}},
              {{"weight", 8},
               {"preference",
                {{"matchExpressions", {expr("topology.kubernetes.io/zone", "In", {"b"})}}}}}})}}}};
  PodRef pod = PodBuilder("p").spec("affinity", preferred).build();
  auto scores = run_score(*pl, c, *pod);
  EXPECT_EQ(scores["ssd-a"], 25);  // 2 of a maximum 8
  EXPECT_EQ(scores["hdd-b"], 100);
  EXPECT_EQ(scores["bare"], 0);
  EXPECT_TRUE(run_score(*pl, c, *PodBuilder("q").build()).empty());
}

TEST_F(NodeAffinityTest, AddedAffinityFromArgs) {
  auto pl = make({{"addedAffinity",
                   {{"requiredDuringSchedulingIgnoredDuringExecution",
                     {{"nodeSelectorTerms",
                       json::array({{{"matchExpressions", {expr("disk", "Exists")}}}})}}}}}});
  PodRef pod = PodBuilder("p").build();
  EXPECT_TRUE(run_filter(*pl, c, *pod, "ssd-a").is_success());
  PluginStatus s = run_filter(*pl, c, *pod, "bare");
  EXPECT_EQ(s.message(), "node(s) didn't match scheduler-enforced node affinity");
}

}  // namespace
}  // namespace skiff::scheduler::plugins
