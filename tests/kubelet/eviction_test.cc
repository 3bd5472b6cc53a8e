#include "kubelet/eviction.h"

#include <gtest/gtest.h>

#include <map>

namespace skiff::kubelet {
namespace {

Json pod(const std::string& name, const std::string& requests_memory = "",
         const std::string& limits_memory = "", int priority = 0) {
  Json c = {{"name", "c"}, {"image", "busybox"}};
  if (!requests_memory.empty()) c["resources"]["requests"]["memory"] = requests_memory;
  if (!limits_memory.empty()) c["resources"]["limits"]["memory"] = limits_memory;
  Json p = {{"metadata", {{"name", name}, {"namespace", "default"}, {"uid", "uid-" + name}}},
            {"spec", {{"containers", Json::array({c})}}}};
  if (priority != 0) p["spec"]["priority"] = priority;
  return p;
}

stats::Summary node_with(uint64_t memory_available, uint64_t memory_working_set,
                         uint64_t fs_available, uint64_t fs_capacity) {
  stats::Summary s;
  s.node.memory = stats::MemoryStats{};
  s.node.memory->available_bytes = memory_available;
  s.node.memory->working_set_bytes = memory_working_set;
  s.node.fs = stats::FsStats{};
  s.node.fs->available_bytes = fs_available;
  s.node.fs->capacity_bytes = fs_capacity;
  return s;
}

TEST(EvictionTest, ParsesThresholdsAndRejectsBadOnes) {
  auto t = parse_thresholds("memory.available<100Mi,nodefs.available<10%");
  ASSERT_TRUE(t.is_ok()) << t.status().to_string();
  ASSERT_EQ(t->size(), 2u);
  EXPECT_EQ((*t)[0].quantity_bytes, 100 << 20);
  EXPECT_DOUBLE_EQ((*t)[1].percentage, 0.10);
  EXPECT_TRUE(parse_thresholds("")->empty());
  EXPECT_FALSE(parse_thresholds("memory.available>1Gi").is_ok());
  EXPECT_FALSE(parse_thresholds("cpu.available<1").is_ok());
  EXPECT_FALSE(parse_thresholds("nodefs.available<110%").is_ok());
  EXPECT_FALSE(parse_thresholds("memory.available<lots").is_ok());
}

TEST(EvictionTest, QosClassesAsUpstream) {
  EXPECT_EQ(qos_class(pod("a")), "BestEffort");
  EXPECT_EQ(qos_class(pod("b", "64Mi")), "Burstable");
  Json g = pod("g", "", "64Mi");
  g["spec"]["containers"][0]["resources"]["limits"]["cpu"] = "500m";
  EXPECT_EQ(qos_class(g), "Guaranteed");  // requests default to limits
  g["spec"]["containers"][0]["resources"]["requests"]["cpu"] = "250m";
  EXPECT_EQ(qos_class(g), "Burstable");
}

TEST(EvictionTest, ObservesSignalsUnderThresholds) {
  auto thresholds = default_thresholds();
  EXPECT_TRUE(
      observe(node_with(1ull << 30, 1ull << 30, 50ull << 30, 100ull << 30), thresholds).empty());
  auto low_memory =
      observe(node_with(50ull << 20, 4ull << 30, 50ull << 30, 100ull << 30), thresholds);
  ASSERT_EQ(low_memory.size(), 1u);
  EXPECT_EQ(low_memory[0].signal, "memory.available");
  EXPECT_EQ(low_memory[0].message,
            "The node was low on resource: memory. Threshold quantity: 100Mi, available: 50Mi. ");
  auto low_disk = observe(node_with(1ull << 30, 1ull << 30, 5ull << 30, 100ull << 30), thresholds);
  ASSERT_EQ(low_disk.size(), 1u);
  EXPECT_EQ(low_disk[0].signal, "nodefs.available");
}

TEST(EvictionTest, RanksPodsOverTheirRequestsThenPriorityThenUsage) {
  std::vector<PodUsage> pods = {
      {pod("within", "200Mi"), 100 << 20, 0},               // under its request
      {pod("over-small", "100Mi"), 150 << 20, 0},           // 50Mi over
      {pod("over-big", "100Mi"), 400 << 20, 0},             // 300Mi over
      {pod("besteffort-high", "", "", 1000), 10 << 20, 0},  // over (no request), high priority
  };
  auto ranked = rank_for_eviction(pods, "memory.available");
  std::vector<std::string> names;
  for (const auto& p : ranked) names.push_back(p.pod["metadata"]["name"]);
  EXPECT_EQ(names,
            (std::vector<std::string>{"over-big", "over-small", "besteffort-high", "within"}));
}

TEST(EvictionTest, ManagerReportsPressureAndEvictsOnePodPerRound) {
  stats::Summary summary = node_with(1ull << 30, 1ull << 30, 50ull << 30, 100ull << 30);
  std::vector<std::pair<std::string, std::string>> evicted;
  int changes = 0;
  std::vector<Json> active = {pod("a", "100Mi"), pod("b")};
  EvictionManager manager(
      default_thresholds(),
      EvictionManager::Hooks{
          .summary = [&]() -> Result<stats::Summary> { return summary; },
          .active_pods = [&] { return active; },
          .evict = [&](const std::string& uid,
                       const std::string& message) { evicted.emplace_back(uid, message); },
          .pressure_changed = [&] { ++changes; },
      });
  manager.synchronize();
  EXPECT_FALSE(manager.memory_pressure());
  EXPECT_TRUE(evicted.empty());
  summary = node_with(10ull << 20, 4ull << 30, 50ull << 30, 100ull << 30);
  stats::PodStats b;
  b.pod_ref.uid = "uid-b";
  b.memory = stats::MemoryStats{};
  b.memory->working_set_bytes = 500ull << 20;
  summary.pods.push_back(b);
  manager.synchronize();
  EXPECT_TRUE(manager.memory_pressure());
  EXPECT_FALSE(manager.disk_pressure());
  EXPECT_EQ(changes, 1);
  ASSERT_EQ(evicted.size(), 1u);
  EXPECT_EQ(evicted[0].first, "uid-b");  // BestEffort, using 500Mi over its request of 0
  EXPECT_NE(evicted[0].second.find("low on resource: memory"), std::string::npos);
  summary = node_with(1ull << 30, 1ull << 30, 50ull << 30, 100ull << 30);
  manager.synchronize();
  EXPECT_FALSE(manager.memory_pressure());
  EXPECT_EQ(changes, 2);
  EXPECT_EQ(evicted.size(), 1u);
}

}  // namespace
}  // namespace skiff::kubelet
