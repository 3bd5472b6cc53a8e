// NodeUnschedulable, NodeName, NodeReadiness, NodePorts and TaintToleration.

#include "scheduler/plugins/node_basics.h"

#include <gtest/gtest.h>

#include "scheduler/plugins/taint_toleration.h"
#include "test_util.h"

namespace skiff::scheduler::plugins {
namespace {

using testing::Cluster;
using testing::NodeBuilder;
using testing::PodBuilder;
using testing::run_filter;
using testing::run_score;

TEST(NodeUnschedulableTest, Filter) {
  Cluster c;
  c.add(NodeBuilder("ok")).add(NodeBuilder("cordoned").unschedulable());
  NodeUnschedulable pl;
  PodRef pod = PodBuilder("p").build();
  EXPECT_TRUE(run_filter(pl, c, *pod, "ok").is_success());
  PluginStatus s = run_filter(pl, c, *pod, "cordoned");
  EXPECT_EQ(s.code(), Code::kUnschedulableAndUnresolvable);
  EXPECT_EQ(s.message(), "node(s) were unschedulable");

  PodRef tolerant = PodBuilder("t")
                        .toleration({{"key", "node.kubernetes.io/unschedulable"},
                                     {"operator", "Exists"},
                                     {"effect", "NoSchedule"}})
                        .build();
  EXPECT_TRUE(run_filter(pl, c, *tolerant, "cordoned").is_success());
  PodRef wrong_effect = PodBuilder("w")
                            .toleration({{"key", "node.kubernetes.io/unschedulable"},
                                         {"operator", "Exists"},
                                         {"effect", "NoExecute"}})
                            .build();
  EXPECT_FALSE(run_filter(pl, c, *wrong_effect, "cordoned").is_success());
}

TEST(NodeNameTest, Filter) {
  Cluster c;
  c.add(NodeBuilder("n1")).add(NodeBuilder("n2"));
  NodeName pl;
  PodRef any = PodBuilder("p").build();
  EXPECT_TRUE(run_filter(pl, c, *any, "n1").is_success());
  PodRef pinned = PodBuilder("q").node("n1").build();
  EXPECT_TRUE(run_filter(pl, c, *pinned, "n1").is_success());
  PluginStatus s = run_filter(pl, c, *pinned, "n2");
  EXPECT_EQ(s.code(), Code::kUnschedulableAndUnresolvable);
  EXPECT_EQ(s.message(), "node(s) didn't match the requested node name");
}

TEST(NodeReadinessTest, Filter) {
  Cluster c;
  c.add(NodeBuilder("ready"))
      .add(NodeBuilder("not-ready").ready("False"))
      .add(NodeBuilder("unknown").ready("Unknown"));
  NodeBuilder no_condition("fresh");
  no_condition.json_ref()["status"].erase("conditions");
  c.add(no_condition);
  NodeReadiness pl;
  PodRef pod = PodBuilder("p").build();
  EXPECT_TRUE(run_filter(pl, c, *pod, "ready").is_success());
  EXPECT_TRUE(run_filter(pl, c, *pod, "fresh").is_success());
  PluginStatus s = run_filter(pl, c, *pod, "not-ready");
  EXPECT_EQ(s.code(), Code::kUnschedulableAndUnresolvable);
  EXPECT_EQ(s.message(), "node(s) were not ready");
  EXPECT_FALSE(run_filter(pl, c, *pod, "unknown").is_success());

  // Pods that tolerate the lifecycle taints (CNI daemons, say) may still land there.
  PodRef tolerates_all = PodBuilder("t").toleration({{"operator", "Exists"}}).build();
  EXPECT_TRUE(run_filter(pl, c, *tolerates_all, "not-ready").is_success());
  EXPECT_TRUE(run_filter(pl, c, *tolerates_all, "unknown").is_success());
  PodRef not_ready_only = PodBuilder("n")
                              .toleration({{"key", "node.kubernetes.io/not-ready"},
                                           {"operator", "Exists"},
                                           {"effect", "NoSchedule"}})
                              .build();
  EXPECT_TRUE(run_filter(pl, c, *not_ready_only, "not-ready").is_success());
  EXPECT_FALSE(run_filter(pl, c, *not_ready_only, "unknown").is_success());
}

TEST(NodePortsTest, Filter) {
  Cluster c;
  c.add(NodeBuilder("n1")).add(NodeBuilder("n2"));
  c.add(PodBuilder("web").node("n1").host_port(80));
  c.add(PodBuilder("dns").node("n1").host_port(53, "UDP", "10.0.0.1"));
  NodePorts pl;

  // No host ports: PreFilter skips the Filter.
  CycleState state;
  PreFilterResult r;
  PodRef plain = PodBuilder("plain").build();
  EXPECT_TRUE(pl.pre_filter(state, *plain, c.refresh(), r).is_skip());

  PodRef wants80 = PodBuilder("a").host_port(80).build();
  PluginStatus s = run_filter(pl, c, *wants80, "n1");
  EXPECT_EQ(s.code(), Code::kUnschedulable);
  EXPECT_EQ(s.message(), "node(s) didn't have free ports for the requested pod ports");
  EXPECT_TRUE(run_filter(pl, c, *wants80, "n2").is_success());

  EXPECT_TRUE(run_filter(pl, c, *PodBuilder("b").host_port(80, "UDP").build(), "n1").is_success());
  EXPECT_TRUE(run_filter(pl, c, *PodBuilder("c").host_port(53, "UDP", "10.0.0.2").build(), "n1")
                  .is_success());
  EXPECT_FALSE(run_filter(pl, c, *PodBuilder("d").host_port(53, "UDP").build(), "n1").is_success());
}

TEST(TaintTolerationTest, FilterRejectsUntoleratedNoScheduleAndNoExecute) {
  Cluster c;
  c.add(NodeBuilder("clean"))
      .add(NodeBuilder("gpu").taint("dedicated", "gpu", "NoSchedule"))
      .add(NodeBuilder("evicting").taint("maintenance", "", "NoExecute"))
      .add(NodeBuilder("soft").taint("prefer", "x", "PreferNoSchedule"));
  TaintToleration pl;
  PodRef pod = PodBuilder("p").build();
  EXPECT_TRUE(run_filter(pl, c, *pod, "clean").is_success());
  EXPECT_TRUE(run_filter(pl, c, *pod, "soft").is_success());
  PluginStatus s = run_filter(pl, c, *pod, "gpu");
  EXPECT_EQ(s.code(), Code::kUnschedulableAndUnresolvable);
  EXPECT_EQ(s.message(), "node(s) had untolerated taint {dedicated: gpu}");
  EXPECT_EQ(run_filter(pl, c, *pod, "evicting").message(),
            "node(s) had untolerated taint {maintenance: }");

  PodRef tolerant = PodBuilder("t")
                        .toleration({{"key", "dedicated"},
                                     {"operator", "Equal"},
                                     {"value", "gpu"},
                                     {"effect", "NoSchedule"}})
                        .build();
  EXPECT_TRUE(run_filter(pl, c, *tolerant, "gpu").is_success());
  PodRef wrong_value = PodBuilder("w").toleration({{"key", "dedicated"}, {"value", "cpu"}}).build();
  EXPECT_FALSE(run_filter(pl, c, *wrong_value, "gpu").is_success());
}

TEST(TaintTolerationTest, ScorePrefersFewerIntolerablePreferNoScheduleTaints) {
  Cluster c;
  c.add(NodeBuilder("a"))
      .add(NodeBuilder("b").taint("cpu-type", "arm64", "PreferNoSchedule"))
      .add(NodeBuilder("c")
               .taint("cpu-type", "arm64", "PreferNoSchedule")
               .taint("disk-type", "ssd", "PreferNoSchedule"));
  TaintToleration pl;
  auto scores = run_score(pl, c, *PodBuilder("p").build());
  EXPECT_EQ(scores["a"], 100);
  EXPECT_EQ(scores["b"], 50);
  EXPECT_EQ(scores["c"], 0);

  // Only PreferNoSchedule (or effect-less) tolerations count.
  PodRef tolerates = PodBuilder("t")
                         .toleration({{"key", "cpu-type"},
                                      {"operator", "Equal"},
                                      {"value", "arm64"},
                                      {"effect", "PreferNoSchedule"}})
                         .build();
  scores = run_score(pl, c, *tolerates);
  EXPECT_EQ(scores["a"], 100);
  EXPECT_EQ(scores["b"], 100);
  EXPECT_EQ(scores["c"], 0);
  PodRef no_schedule_toleration = PodBuilder("n")
                                      .toleration({{"key", "cpu-type"},
                                                   {"operator", "Equal"},
                                                   {"value", "arm64"},
                                                   {"effect", "NoSchedule"}})
                                      .build();
  scores = run_score(pl, c, *no_schedule_toleration);
  EXPECT_EQ(scores["b"], 50);

  // No intolerable taints anywhere: every node gets the maximum.
  Cluster clean;
  clean.add(NodeBuilder("x")).add(NodeBuilder("y").taint("k", "v", "NoSchedule"));
  scores = run_score(pl, clean, *PodBuilder("p").build());
  EXPECT_EQ(scores["x"], 100);
  EXPECT_EQ(scores["y"], 100);
}

}  // namespace
}  // namespace skiff::scheduler::plugins
