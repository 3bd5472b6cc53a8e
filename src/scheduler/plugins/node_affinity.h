#pragma once

// NodeAffinity: Filter requires the pod's nodeSelector and required node affinity to match the
// node ("node(s) didn't match Pod's node affinity/selector"); PreFilter narrows the candidate
// nodes when every required term names nodes through a metadata.name field selector (DaemonSet
// pods), and skips the Filter when the pod has neither. Score sums the weights of the preferred
// terms the node matches (normalized to 0..100). Args (NodeAffinityArgs JSON): addedAffinity,
// a v1.NodeAffinity applied to every pod of the profile.
//
// Thread-safety: immutable after construction; safe to call concurrently.

#include <optional>
#include <string_view>
#include <vector>

#include "scheduler/framework.h"

namespace skiff::scheduler::plugins {

class NodeAffinity final : public PreFilterPlugin,
                           public FilterPlugin,
                           public PreScorePlugin,
                           public ScorePlugin,
                           public EnqueueExtensions {
 public:
  static constexpr std::string_view kName = "NodeAffinity";
  static constexpr std::string_view kReasonPod =
      "node(s) didn't match Pod's node affinity/selector";
  static constexpr std::string_view kReasonEnforced =
      "node(s) didn't match scheduler-enforced node affinity";
  static constexpr std::string_view kReasonConflict = "pod affinity terms conflict";

  static Result<std::unique_ptr<Plugin>> create(const nlohmann::json& args);

  std::string_view name() const override { return kName; }
  PluginStatus pre_filter(CycleState& state, const PodInfo& pod, const NodeLister& nodes,
                          PreFilterResult& result) const override;
  PluginStatus filter(const CycleState& state, const PodInfo& pod,
                      const NodeInfo& node) const override;
  PluginStatus pre_score(CycleState& state, const PodInfo& pod,
                         std::span<const NodeInfo* const> feasible,
                         const NodeLister& nodes) const override;
  PluginStatus score(const CycleState& state, const PodInfo& pod, const NodeInfo& node,
                     int64_t& score) const override;
  bool has_normalize() const override { return true; }
  PluginStatus normalize(const CycleState& state, const PodInfo& pod,
                         std::span<NodeScore> scores) const override;
  std::vector<ClusterEventWithHint> events_to_register() const override;

 private:
  std::optional<NodeSelector> added_required_;
  std::vector<PreferredSchedulingTerm> added_preferred_;
};

}  // namespace skiff::scheduler::plugins
