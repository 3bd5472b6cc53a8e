#include "scheduler/plugins/counts_memo.h"

#include <gtest/gtest.h>

#include <map>
#include <random>

#include "test_util.h"

namespace skiff::scheduler::plugins {
namespace {

using testing::Cluster;
using testing::NodeBuilder;
using testing::PodBuilder;

const LabelKey kZone("topology.kubernetes.io/zone");
const LabelKey kApp("app");

// Per zone: pods labelled app=web; nodes without a zone contribute nothing; every zoned node
// makes its zone present.
void contribute(const NodeInfo& node, TopologyCountsMemo::Emitter& emit) {
  const HString* zone = node.node()->labels.find(kZone);
  if (zone == nullptr) return;
  int64_t n = 0;
  for (const PodRef& p : node.pods()) {
    const HString* app = p->labels.find(kApp);
    if (app != nullptr && app->str() == "web") ++n;
  }
  emit(kZone, *zone, n);
}

std::map<std::string, int64_t> expected(const Snapshot& snap) {
  std::map<std::string, int64_t> out;
  for (const NodeInfo* node : snap.list()) {
    const HString* zone = node->node()->labels.find(kZone);
    if (zone == nullptr) continue;
    int64_t& n = out[zone->str()];
    for (const PodRef& p : node->pods()) {
      const HString* app = p->labels.find(kApp);
      if (app != nullptr && app->str() == "web") ++n;
    }
  }
  return out;
}

TEST(TopologyCountsMemoTest, IncrementalUpdatesMatchARecount) {
  Cluster c;
  std::mt19937 rng(12345);
  int next_pod = 0;
  int next_node = 0;
  std::vector<std::string> nodes;
  std::vector<std::pair<std::string, std::string>> pods;  // uid, node
  auto add_node = [&] {
    std::string name = "n" + std::to_string(next_node++);
    NodeBuilder n(name);
    if (rng() % 5 != 0) n.zone("z" + std::to_string(rng() % 4));
    c.add(n);
    nodes.push_back(name);
  };
  for (int i = 0; i < 20; ++i) add_node();
  TopologyCountsMemo memo;
  for (int round = 0; round < 400; ++round) {
    int action = static_cast<int>(rng() % 10);
    if (action < 5 || pods.empty()) {
      const std::string& node = nodes[rng() % nodes.size()];
      std::string name = "p" + std::to_string(next_pod++);
      PodRef pod = c.add(PodBuilder(name).node(node).label("app", rng() % 2 ? "web" : "db"));
      pods.emplace_back(pod->uid, node);
    } else if (action < 8) {
      size_t i = rng() % pods.size();
      ASSERT_TRUE(c.cache.remove_pod(pods[i].first).is_ok());
      pods.erase(pods.begin() + static_cast<long>(i));
    } else if (action == 8) {
      // Relabel a node into another zone (or out of every zone).
      const std::string& node = nodes[rng() % nodes.size()];
      NodeBuilder n(node);
      if (rng() % 3 != 0) n.zone("z" + std::to_string(rng() % 4));
      c.cache.update_node(n.build());
    } else {
      if (rng() % 2 == 0 || nodes.size() < 5) {
        add_node();
      } else {
        size_t i = rng() % nodes.size();
        c.cache.remove_node(nodes[i]);
        nodes.erase(nodes.begin() + static_cast<long>(i));
      }
    }
    const Snapshot& snap = c.refresh();
    memo.sync(snap, contribute);
    std::map<std::string, int64_t> want = expected(snap);
    size_t nonzero = 0;
    for (const auto& [zone, count] : want) {
      HString value(zone);
      EXPECT_EQ(memo.count(kZone, value), count) << "round " << round << " zone " << zone;
      EXPECT_TRUE(memo.present(kZone, value));
      nonzero += count != 0;
    }
    EXPECT_EQ(memo.domains(kZone), want.size()) << "round " << round;
    EXPECT_EQ(memo.nonzero_pairs(), nonzero) << "round " << round;
    int64_t min = std::numeric_limits<int32_t>::max();
    for (const auto& [zone, count] : want) min = std::min(min, count);
    EXPECT_EQ(memo.min_count(kZone), min);
  }
  // Most rounds were applied incrementally.
  EXPECT_GT(memo.node_updates(), 0u);
  EXPECT_LT(memo.rebuilds(), 150u);
}

TEST(TopologyCountsMemoTest, OnlyChangedNodesAreRevisited) {
  Cluster c;
  for (int i = 0; i < 50; ++i) c.add(NodeBuilder("n" + std::to_string(i)).zone("z"));
  TopologyCountsMemo memo;
  int visits = 0;
  auto counting = [&](const NodeInfo& node, TopologyCountsMemo::Emitter& emit) {
    ++visits;
    contribute(node, emit);
  };
  memo.sync(c.refresh(), counting);
  EXPECT_EQ(visits, 50);
  EXPECT_EQ(memo.rebuilds(), 1u);
  c.add(PodBuilder("a").node("n7").label("app", "web"));
  c.add(PodBuilder("b").node("n9").label("app", "web"));
  visits = 0;
  memo.sync(c.refresh(), counting);
  EXPECT_EQ(visits, 2);
  EXPECT_EQ(memo.count(kZone, HString("z")), 2);
  // Nothing changed: nothing revisited.
  visits = 0;
  memo.sync(c.refresh(), counting);
  EXPECT_EQ(visits, 0);
  // A new node is a new epoch: everything is recounted.
  c.add(NodeBuilder("n50").zone("z"));
  memo.sync(c.refresh(), counting);
  EXPECT_EQ(visits, 51);
  EXPECT_EQ(memo.rebuilds(), 2u);
}

TEST(CountsOverlayTest, ChangesApplyOnTopOfTheMemoWithoutChangingIt) {
  Cluster c;
  c.add(NodeBuilder("a").zone("z1"));
  c.add(NodeBuilder("b").zone("z2"));
  c.add(NodeBuilder("c").zone("z3"));
  c.add(PodBuilder("p1").node("a").label("app", "web"));
  c.add(PodBuilder("p2").node("a").label("app", "web"));
  c.add(PodBuilder("p3").node("b").label("app", "web"));
  auto memo = std::make_shared<TopologyCountsMemo>();
  memo->sync(c.refresh(), contribute);
  ASSERT_EQ(memo->min_count(kZone), 0);  // z3
  ASSERT_EQ(memo->nonzero_pairs(), 2u);

  CountsOverlay overlay(memo);
  overlay.change(kZone, HString("z3"), +1);
  EXPECT_EQ(overlay.count(kZone, HString("z3")), 1);
  EXPECT_EQ(overlay.min_count(kZone), 1);
  EXPECT_EQ(overlay.nonzero_pairs(), 3u);
  CountsOverlay copy = overlay;
  copy.change(kZone, HString("z2"), -1);
  copy.change(kZone, HString("z1"), -1);
  EXPECT_EQ(copy.count(kZone, HString("z1")), 1);
  EXPECT_EQ(copy.min_count(kZone), 0);
  EXPECT_EQ(copy.nonzero_pairs(), 2u);
  copy.change(kZone, HString("z2"), +1);
  EXPECT_EQ(copy.nonzero_pairs(), 3u);
  // The overlay it was copied from and the memo are as they were.
  EXPECT_EQ(overlay.count(kZone, HString("z2")), 1);
  EXPECT_EQ(overlay.min_count(kZone), 1);
  EXPECT_EQ(memo->count(kZone, HString("z3")), 0);
  EXPECT_EQ(memo->nonzero_pairs(), 2u);
}

TEST(MemoCacheTest, EvictsTheLeastRecentlyUsed) {
  MemoCache<TopologyCountsMemo> cache(2);
  auto a = cache.get("a");
  auto b = cache.get("b");
  EXPECT_EQ(cache.get("a"), a);
  auto c = cache.get("c");  // evicts b
  EXPECT_EQ(cache.get("a"), a);
  EXPECT_NE(cache.get("b"), b);
}

}  // namespace
}  // namespace skiff::scheduler::plugins
