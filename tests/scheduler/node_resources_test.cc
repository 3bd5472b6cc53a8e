// NodeResourcesFit and NodeResourcesBalancedAllocation.

#include "scheduler/plugins/node_resources.h"

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

std::unique_ptr<Plugin> fit(const json& args = nullptr) {
  auto p = NodeResourcesFit::create(args);
  EXPECT_TRUE(p.is_ok()) << p.status().to_string();
  return std::move(p).value();
}

TEST(NodeResourcesFitTest, FitsWhenRoomRemains) {
  Cluster c;
  c.add(NodeBuilder("n").capacity("2", "4Gi"));
  c.add(PodBuilder("old").node("n").req("1", "2Gi"));
  auto pl = fit();
  EXPECT_TRUE(run_filter(*pl, c, *PodBuilder("p").req("1", "2Gi").build(), "n").is_success());
  // Pods without requests fit anywhere with a free pod slot.
  EXPECT_TRUE(run_filter(*pl, c, *PodBuilder("q").build(), "n").is_success());
}

TEST(NodeResourcesFitTest, ReportsEveryShortage) {
  Cluster c;
  c.add(NodeBuilder("n").capacity("2", "4Gi").allocatable("ephemeral-storage", "10Gi"));
  c.add(PodBuilder("old").node("n").req("1500m", "3Gi"));
  auto pl = fit();
  PluginStatus s = run_filter(
      *pl, c, *PodBuilder("p").req("1", "2Gi").request("ephemeral-storage", "1Gi").build(), "n");
  EXPECT_EQ(s.code(), Code::kUnschedulable);
  EXPECT_EQ(s.reasons(), (std::vector<std::string>{"Insufficient cpu", "Insufficient memory"}));

  // More than the whole node: preemption could not help.
  s = run_filter(*pl, c, *PodBuilder("big").req("3", "").build(), "n");
  EXPECT_EQ(s.code(), Code::kUnschedulableAndUnresolvable);
  EXPECT_EQ(s.message(), "Insufficient cpu");

  s = run_filter(*pl, c, *PodBuilder("disk").request("ephemeral-storage", "11Gi").build(), "n");
  EXPECT_EQ(s.message(), "Insufficient ephemeral-storage");
}

TEST(NodeResourcesFitTest, TooManyPods) {
  Cluster c;
  c.add(NodeBuilder("n").capacity("4", "8Gi", 1));
  c.add(PodBuilder("old").node("n"));
  auto pl = fit();
  PluginStatus s = run_filter(*pl, c, *PodBuilder("p").build(), "n");
  EXPECT_EQ(s.code(), Code::kUnschedulable);
  EXPECT_EQ(s.message(), "Too many pods");
  s = run_filter(*pl, c, *PodBuilder("q").req("5", "").build(), "n");
  EXPECT_EQ(s.reasons(), (std::vector<std::string>{"Too many pods", "Insufficient cpu"}));
}

TEST(NodeResourcesFitTest, ExtendedResources) {
  Cluster c;
  c.add(NodeBuilder("gpu").allocatable("example.com/gpu", "2"));
  c.add(NodeBuilder("plain"));
  c.add(PodBuilder("old").node("gpu").request("example.com/gpu", "1"));
  auto pl = fit();
  PodRef one = PodBuilder("one").request("example.com/gpu", "1").build();
  PodRef two = PodBuilder("two").request("example.com/gpu", "2").build();
  EXPECT_TRUE(run_filter(*pl, c, *one, "gpu").is_success());
  PluginStatus s = run_filter(*pl, c, *two, "gpu");
  EXPECT_EQ(s.code(), Code::kUnschedulable);
  EXPECT_EQ(s.message(), "Insufficient example.com/gpu");
  s = run_filter(*pl, c, *one, "plain");
  EXPECT_EQ(s.code(), Code::kUnschedulableAndUnresolvable);

  auto ignoring = fit({{"ignoredResources", {"example.com/gpu"}}});
  EXPECT_TRUE(run_filter(*ignoring, c, *two, "plain").is_success());
  auto ignoring_group = fit({{"ignoredResourceGroups", {"example.com"}}});
  EXPECT_TRUE(run_filter(*ignoring_group, c, *two, "plain").is_success());
}

TEST(NodeResourcesFitTest, LeastAllocatedScore) {
  // Upstream's example: nothing scheduled, differently sized nodes; the pod asks for 3 cpu and
  // 5000 bytes of memory.
  Cluster c;
  c.add(NodeBuilder("machine1").capacity("4", "10000"));
  c.add(NodeBuilder("machine2").capacity("6", "10000"));
  auto pl = fit();
  PodRef pod = PodBuilder("p")
                   .req("1", "2000")
                   .container({{"name", "d"},
                               {"resources", {{"requests", {{"cpu", "2"}, {"memory", "3000"}}}}}})
                   .build();
  auto scores = run_score(*pl, c, *pod);
  EXPECT_EQ(scores["machine1"], 37);  // cpu 25, memory 50
  EXPECT_EQ(scores["machine2"], 50);  // cpu 50, memory 50
}

TEST(NodeResourcesFitTest, LeastAllocatedCountsNonZeroDefaults) {
  Cluster c;
  c.add(NodeBuilder("busy").capacity("1", "1000Mi"));
  c.add(NodeBuilder("idle").capacity("1", "1000Mi"));
  // Two best-effort pods: 2 × (100m, 200Mi) count against "busy" for scoring.
  c.add(PodBuilder("a").node("busy"));
  c.add(PodBuilder("b").node("busy"));
  auto pl = fit();
  auto scores = run_score(*pl, c, *PodBuilder("p").build());
  // busy: cpu (1000-300)/1000 = 70, memory (1000-600)/1000 = 40 → 55; idle: 90, 80 → 85.
  EXPECT_EQ(scores["busy"], 55);
  EXPECT_EQ(scores["idle"], 85);
}

TEST(NodeResourcesFitTest, MostAllocatedAndRatioStrategies) {
  Cluster c;
  c.add(NodeBuilder("machine1").capacity("4", "10000"));
  c.add(NodeBuilder("machine2").capacity("6", "10000"));
  PodRef pod = PodBuilder("p").req("3", "5000").build();
  auto most = fit({{"scoringStrategy", {{"type", "MostAllocated"}}}});
  auto scores = run_score(*most, c, *pod);
  EXPECT_EQ(scores["machine1"], 62);  // cpu 75, memory 50
  EXPECT_EQ(scores["machine2"], 50);

  auto ratio = fit({{"scoringStrategy",
                     {{"type", "RequestedToCapacityRatio"},
                      {"requestedToCapacityRatio",
                       {{"shape", json::array({{{"utilization", 0}, {"score", 0}},
                                               {{"utilization", 100}, {"score", 10}}})}}}}}});
  scores = run_score(*ratio, c, *pod);
  EXPECT_EQ(scores["machine1"], 63);  // round((75 + 50) / 2)
  EXPECT_EQ(scores["machine2"], 50);

  EXPECT_FALSE(NodeResourcesFit::create({{"scoringStrategy", {{"type", "Bogus"}}}}).is_ok());
  EXPECT_FALSE(
      NodeResourcesFit::create(
          {{"scoringStrategy", {{"resources", json::array({{{"name", "cpu"}, {"weight", 0}}})}}}})
          .is_ok());
}

TEST(NodeResourcesBalancedAllocationTest, Score) {
  Cluster c;
  c.add(NodeBuilder("machine1").capacity("4", "10000"));
  c.add(NodeBuilder("machine2").capacity("6", "10000"));
  auto created = NodeResourcesBalancedAllocation::create(nullptr);
  ASSERT_TRUE(created.is_ok());
  PodRef pod = PodBuilder("p").req("3", "5000").build();
  auto scores = run_score(*created.value(), c, *pod);
  EXPECT_EQ(scores["machine1"], 87);  // fractions 0.75 and 0.5: std 0.125
  EXPECT_EQ(scores["machine2"], 100);

  // Existing requests count (actual requests, not the non-zero defaults).
  c.add(PodBuilder("old").node("machine2").req("", "5000"));
  scores = run_score(*created.value(), c, *pod);
  EXPECT_EQ(scores["machine2"], 75);  // fractions 0.5 and 1.0

  // A pod that requests nothing is not scored by this plugin.
  EXPECT_TRUE(run_score(*created.value(), c, *PodBuilder("be").build()).empty());
}

}  // namespace
}  // namespace skiff::scheduler::plugins
