#include "scheduler/cache.h"

#include <gtest/gtest.h>

#include "test_util.h"

namespace skiff::scheduler {
namespace {

using testing::NodeBuilder;
using testing::PodBuilder;

std::vector<std::string> names(const std::vector<const NodeInfo*>& nodes) {
  std::vector<std::string> out;
  for (const NodeInfo* n : nodes) out.push_back(n->name());
  return out;
}

TEST(CacheTest, AssumeCountsAtOnceAndAddConfirms) {
  Cache cache;
  cache.add_node(NodeBuilder("n1").build());
  cache.add_node(NodeBuilder("n2").build());
  PodRef pod = PodBuilder("p").req("1", "1Gi").build();
  ASSERT_TRUE(cache.assume_pod(pod, "n1").is_ok());
  EXPECT_TRUE(cache.is_assumed(pod->uid));
  EXPECT_EQ(cache.node_info("n1")->requested().milli_cpu, 1000);
  EXPECT_EQ(cache.assume_pod(pod, "n1").code(), StatusCode::kAlreadyExists);

  ASSERT_TRUE(cache.finish_binding(pod->uid).is_ok());
  // The informer reports the pod bound: the assumption is confirmed, counted once.
  ASSERT_TRUE(cache.add_pod(PodBuilder("p").req("1", "1Gi").node("n1").build()).is_ok());
  EXPECT_FALSE(cache.is_assumed(pod->uid));
  EXPECT_EQ(cache.node_info("n1")->requested().milli_cpu, 1000);
  EXPECT_EQ(cache.node_info("n1")->pods().size(), 1u);
  EXPECT_EQ(cache.pod_count(), 1u);
  EXPECT_EQ(cache.forget_pod(pod->uid).code(), StatusCode::kNotFound);
}

TEST(CacheTest, ConfirmationOnAnotherNodeMovesThePod) {
  Cache cache;
  cache.add_node(NodeBuilder("n1").build());
  cache.add_node(NodeBuilder("n2").build());
  ASSERT_TRUE(cache.assume_pod(PodBuilder("p").req("1", "").build(), "n1").is_ok());
  ASSERT_TRUE(cache.add_pod(PodBuilder("p").req("1", "").node("n2").build()).is_ok());
  EXPECT_EQ(cache.node_info("n1")->requested().milli_cpu, 0);
  EXPECT_EQ(cache.node_info("n2")->requested().milli_cpu, 1000);
  EXPECT_EQ(cache.pod_node("uid-default-p"), "n2");
}

TEST(CacheTest, ForgetUndoesAnAssumption) {
  Cache cache;
  cache.add_node(NodeBuilder("n1").build());
  PodRef pod = PodBuilder("p").req("1", "").host_port(80).build();
  ASSERT_TRUE(cache.assume_pod(pod, "n1").is_ok());
  ASSERT_TRUE(cache.forget_pod(pod->uid).is_ok());
  auto info = cache.node_info("n1");
  EXPECT_EQ(info->requested().milli_cpu, 0);
  EXPECT_TRUE(info->pods().empty());
  EXPECT_TRUE(info->used_ports().empty());
  EXPECT_EQ(cache.pod_count(), 0u);
  // Only assumed pods can be forgotten.
  ASSERT_TRUE(cache.add_pod(PodBuilder("q").node("n1").build()).is_ok());
  EXPECT_EQ(cache.forget_pod("uid-default-q").code(), StatusCode::kNotFound);
}

TEST(CacheTest, AssumedPodsExpireAfterBindingOnlyWithATtl) {
  auto now = std::chrono::steady_clock::now();
  auto clock = [&now] { return now; };
  Cache cache(std::chrono::seconds(30), clock);
  cache.add_node(NodeBuilder("n1").build());
  PodRef bound = PodBuilder("bound").build();
  PodRef binding = PodBuilder("binding").build();
  ASSERT_TRUE(cache.assume_pod(bound, "n1").is_ok());
  ASSERT_TRUE(cache.assume_pod(binding, "n1").is_ok());
  ASSERT_TRUE(cache.finish_binding(bound->uid).is_ok());
  now += std::chrono::seconds(29);
  EXPECT_EQ(cache.cleanup_expired_assumed_pods(), 0u);
  now += std::chrono::seconds(2);
  EXPECT_EQ(cache.cleanup_expired_assumed_pods(), 1u);  // the one still binding stays
  EXPECT_FALSE(cache.pod_node(bound->uid).has_value());
  EXPECT_TRUE(cache.is_assumed(binding->uid));

  Cache forever;  // TTL 0: never expires
  forever.add_node(NodeBuilder("n1").build());
  ASSERT_TRUE(forever.assume_pod(bound, "n1").is_ok());
  ASSERT_TRUE(forever.finish_binding(bound->uid).is_ok());
  EXPECT_EQ(forever.cleanup_expired_assumed_pods(), 0u);
}

TEST(CacheTest, UpdateAndRemovePods) {
  Cache cache;
  cache.add_node(NodeBuilder("n1").build());
  ASSERT_TRUE(cache.add_pod(PodBuilder("p").node("n1").req("1", "").build()).is_ok());
  ASSERT_TRUE(cache.update_pod(PodBuilder("p").node("n1").req("2", "").build()).is_ok());
  EXPECT_EQ(cache.node_info("n1")->requested().milli_cpu, 2000);
  EXPECT_EQ(cache.node_info("n1")->pods().size(), 1u);
  ASSERT_TRUE(cache.remove_pod("uid-default-p").is_ok());
  EXPECT_EQ(cache.node_info("n1")->requested().milli_cpu, 0);
  EXPECT_EQ(cache.remove_pod("uid-default-p").code(), StatusCode::kNotFound);
  EXPECT_EQ(cache.add_pod(PodBuilder("unbound").build()).code(), StatusCode::kInvalidArgument);
}

TEST(CacheTest, NodeRemovalKeepsPodsAccountedUntilTheyGo) {
  Cache cache;
  Snapshot snap;
  cache.add_node(NodeBuilder("n1").build());
  cache.add_node(NodeBuilder("n2").build());
  ASSERT_TRUE(cache.add_pod(PodBuilder("p").node("n1").req("1", "").build()).is_ok());
  cache.update_snapshot(snap);
  EXPECT_EQ(snap.num_nodes(), 2u);

  cache.remove_node("n1");
  cache.update_snapshot(snap);
  EXPECT_EQ(names(snap.list()), std::vector<std::string>{"n2"});
  EXPECT_EQ(snap.get("n1"), nullptr);
  EXPECT_EQ(cache.node_count(), 1u);
  // The pod still counts if the node comes back before the pod is deleted.
  cache.add_node(NodeBuilder("n1").build());
  cache.update_snapshot(snap);
  ASSERT_NE(snap.get("n1"), nullptr);
  EXPECT_EQ(snap.get("n1")->requested().milli_cpu, 1000);

  cache.remove_node("n1");
  ASSERT_TRUE(cache.remove_pod("uid-default-p").is_ok());
  EXPECT_FALSE(cache.node_info("n1").has_value());
  cache.update_snapshot(snap);
  EXPECT_EQ(snap.num_nodes(), 1u);

  // Pods may arrive before their node.
  ASSERT_TRUE(cache.add_pod(PodBuilder("early").node("n3").build()).is_ok());
  cache.update_snapshot(snap);
  EXPECT_EQ(snap.get("n3"), nullptr);
  cache.add_node(NodeBuilder("n3").build());
  cache.update_snapshot(snap);
  ASSERT_NE(snap.get("n3"), nullptr);
  EXPECT_EQ(snap.get("n3")->pods().size(), 1u);
}

TEST(CacheTest, SnapshotCopiesOnlyChangedNodes) {
  Cache cache;
  Snapshot snap;
  for (int i = 0; i < 5; ++i) cache.add_node(NodeBuilder("n" + std::to_string(i)).build());
  cache.update_snapshot(snap);
  const NodeInfo* n0 = snap.get("n0");
  const NodeInfo* n1 = snap.get("n1");
  uint64_t n0_generation = n0->generation();
  uint64_t n1_generation = n1->generation();

  ASSERT_TRUE(cache.assume_pod(PodBuilder("p").req("1", "").build(), "n1").is_ok());
  cache.update_snapshot(snap);
  // Same objects (the list holds them), n1 refreshed in place, n0 untouched.
  EXPECT_EQ(snap.get("n0"), n0);
  EXPECT_EQ(snap.get("n1"), n1);
  EXPECT_EQ(n0->generation(), n0_generation);
  EXPECT_GT(n1->generation(), n1_generation);
  EXPECT_EQ(n1->requested().milli_cpu, 1000);
  EXPECT_EQ(snap.generation(), n1->generation());

  // Nothing changed: nothing to do, and the snapshot stays equal.
  uint64_t g = snap.generation();
  cache.update_snapshot(snap);
  EXPECT_EQ(snap.generation(), g);

  // Node updates land too.
  cache.update_node(NodeBuilder("n0").label("disk", "ssd").build());
  cache.update_snapshot(snap);
  EXPECT_NE(snap.get("n0")->node()->labels.find("disk"), nullptr);
}

TEST(CacheTest, NodeListInterleavesZones) {
  Cache cache;
  Snapshot snap;
  cache.add_node(NodeBuilder("a1").zone("a").build());
  cache.add_node(NodeBuilder("a2").zone("a").build());
  cache.add_node(NodeBuilder("a3").zone("a").build());
  cache.add_node(NodeBuilder("b1").zone("b").build());
  cache.add_node(NodeBuilder("c1").zone("c").build());
  cache.add_node(NodeBuilder("b2").zone("b").build());
  cache.update_snapshot(snap);
  EXPECT_EQ(names(snap.list()), (std::vector<std::string>{"a1", "b1", "c1", "a2", "b2", "a3"}));
  // A node changing zone moves.
  cache.update_node(NodeBuilder("a3").zone("c").build());
  cache.update_snapshot(snap);
  EXPECT_EQ(names(snap.list()), (std::vector<std::string>{"a1", "b1", "c1", "a2", "b2", "a3"}));
  cache.update_node(NodeBuilder("a1").zone("c").build());
  cache.update_snapshot(snap);
  EXPECT_EQ(names(snap.list()), (std::vector<std::string>{"a2", "b1", "c1", "b2", "a3", "a1"}));
}

TEST(CacheTest, AffinityNodeLists) {
  Cache cache;
  Snapshot snap;
  cache.add_node(NodeBuilder("n1").build());
  cache.add_node(NodeBuilder("n2").build());
  cache.add_node(NodeBuilder("n3").build());
  cache.update_snapshot(snap);
  EXPECT_TRUE(snap.have_pods_with_affinity().empty());

  ASSERT_TRUE(cache
                  .add_pod(PodBuilder("anti")
                               .node("n2")
                               .required_anti_affinity("a", "b", "kubernetes.io/hostname")
                               .build())
                  .is_ok());
  ASSERT_TRUE(cache
                  .add_pod(PodBuilder("soft")
                               .node("n3")
                               .preferred_affinity(1, "a", "b", "kubernetes.io/hostname")
                               .build())
                  .is_ok());
  ASSERT_TRUE(cache.add_pod(PodBuilder("plain").node("n1").build()).is_ok());
  cache.update_snapshot(snap);
  EXPECT_EQ(names(snap.have_pods_with_affinity()), (std::vector<std::string>{"n2", "n3"}));
  EXPECT_EQ(names(snap.have_pods_with_required_anti_affinity()), std::vector<std::string>{"n2"});

  ASSERT_TRUE(cache.remove_pod("uid-default-anti").is_ok());
  cache.update_snapshot(snap);
  EXPECT_EQ(names(snap.have_pods_with_affinity()), std::vector<std::string>{"n3"});
  EXPECT_TRUE(snap.have_pods_with_required_anti_affinity().empty());
}

TEST(CacheTest, NamespacesReachTheSnapshot) {
  Cache cache;
  Snapshot snap;
  cache.set_namespace("team-a", Labels::from_json({{"team", "a"}}));
  cache.update_snapshot(snap);
  ASSERT_NE(snap.namespace_labels(HString("team-a")), nullptr);
  EXPECT_EQ(snap.namespace_labels(HString("team-a"))->find("team")->str(), "a");
  cache.remove_namespace("team-a");
  cache.update_snapshot(snap);
  EXPECT_EQ(snap.namespace_labels(HString("team-a")), nullptr);
}

}  // namespace
}  // namespace skiff::scheduler
