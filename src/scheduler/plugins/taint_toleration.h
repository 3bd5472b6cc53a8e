#pragma once

// TaintToleration: Filter rejects nodes with a NoSchedule or NoExecute taint the pod does not
// tolerate ("node(s) had untolerated taint {key: value}"); Score prefers nodes with fewer
// PreferNoSchedule taints the pod does not tolerate (normalized, reversed).
//
// Thread-safety: stateless; safe to call concurrently.

#include <string_view>

#include "scheduler/framework.h"

namespace skiff::scheduler::plugins {

class TaintToleration final : public FilterPlugin,
                              public PreScorePlugin,
                              public ScorePlugin,
                              public EnqueueExtensions {
 public:
  static constexpr std::string_view kName = "TaintToleration";

  std::string_view name() const override { return kName; }
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
};

}  // namespace skiff::scheduler::plugins
