#pragma once

// NodeResourcesFit and NodeResourcesBalancedAllocation.
//
// NodeResourcesFit: Filter rejects nodes without room for the pod's requests ("Insufficient cpu",
// "Insufficient memory", "Insufficient ephemeral-storage", "Insufficient <extended resource>",
// "Too many pods"; every shortage is a reason; UnschedulableAndUnresolvable when the request
// exceeds the node's whole allocatable). Score by the configured strategy: LeastAllocated (the
// default), MostAllocated or RequestedToCapacityRatio, over cpu and memory with weight 1 unless
// args name other resources. Args are NodeResourcesFitArgs JSON: ignoredResources,
// ignoredResourceGroups, scoringStrategy {type, resources [{name, weight}],
// requestedToCapacityRatio {shape [{utilization, score}]}}.
//
// NodeResourcesBalancedAllocation: prefers nodes whose cpu and memory utilization (with the pod)
// are close to each other: (1 - standard deviation of the fractions) * 100. Pods that request
// nothing are not scored by it (every node would tie and pile best-effort pods onto one node).
// Args: {resources: [{name, weight}]}.
//
// Thread-safety: immutable after construction; safe to call concurrently.

#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "scheduler/framework.h"

namespace skiff::scheduler::plugins {

struct ResourceSpec {
  std::string name;
  int64_t weight = 1;
};

// A pod's request for `resource` and the node's allocatable / requested, as scoring sees them.
// `use_requested` false substitutes the non-zero defaults for cpu and memory. Returns false when
// the resource is not scored on this node (not allocatable, or an extended resource the pod does
// not request).
bool resource_allocatable_and_requested(const NodeInfo& node, const PodInfo& pod,
                                        const std::string& resource, bool use_requested,
                                        int64_t& allocatable, int64_t& requested);

class NodeResourcesFit final : public FilterPlugin, public ScorePlugin, public EnqueueExtensions {
 public:
  static constexpr std::string_view kName = "NodeResourcesFit";
  enum class Strategy : uint8_t { kLeastAllocated, kMostAllocated, kRequestedToCapacityRatio };
  struct ShapePoint {
    int64_t utilization = 0;
    int64_t score = 0;  // 0..10 as configured
  };

  static Result<std::unique_ptr<Plugin>> create(const nlohmann::json& args);
  NodeResourcesFit() : resources_{{"cpu", 1}, {"memory", 1}} {}

  std::string_view name() const override { return kName; }
  PluginStatus filter(const CycleState& state, const PodInfo& pod,
                      const NodeInfo& node) const override;
  PluginStatus score(const CycleState& state, const PodInfo& pod, const NodeInfo& node,
                     int64_t& score) const override;
  std::vector<ClusterEventWithHint> events_to_register() const override;

 private:
  Strategy strategy_ = Strategy::kLeastAllocated;
  std::vector<ResourceSpec> resources_;
  std::vector<ShapePoint> shape_;  // scores scaled to 0..100
  std::set<std::string, std::less<>> ignored_resources_;
  std::set<std::string, std::less<>> ignored_groups_;
};

class NodeResourcesBalancedAllocation final : public PreScorePlugin, public ScorePlugin {
 public:
  static constexpr std::string_view kName = "NodeResourcesBalancedAllocation";

  static Result<std::unique_ptr<Plugin>> create(const nlohmann::json& args);
  NodeResourcesBalancedAllocation() : resources_{{"cpu", 1}, {"memory", 1}} {}

  std::string_view name() const override { return kName; }
  PluginStatus pre_score(CycleState& state, const PodInfo& pod,
                         std::span<const NodeInfo* const> feasible,
                         const NodeLister& nodes) const override;
  PluginStatus score(const CycleState& state, const PodInfo& pod, const NodeInfo& node,
                     int64_t& score) const override;

 private:
  std::vector<ResourceSpec> resources_;
};

}  // namespace skiff::scheduler::plugins
