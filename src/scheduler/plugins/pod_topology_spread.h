#pragma once

// PodTopologySpread.
// Filter (DoNotSchedule constraints): counts matching pods per topology domain over all eligible
// nodes once in PreFilter (nodes must carry every constraint's key and, by default, match the
// pod's node affinity; nodeTaintsPolicy Honor also drops nodes with untolerated taints), then
// rejects a node when placing the pod there makes the domain exceed maxSkew over the global
// minimum (taken as 0 while fewer than minDomains domains exist): Unschedulable
// "node(s) didn't match pod topology spread constraints", or UnschedulableAndUnresolvable
// "... (missing required label)" for a node without the topology key.
// Score (ScheduleAnyway constraints): fewer matching pods in the node's domains scores higher,
// each constraint weighted by log(number of domains + 2), normalized as upstream.
// Pods without constraints get the default constraints: by default the system defaults
// (kubernetes.io/hostname maxSkew 3 and topology.kubernetes.io/zone maxSkew 5, both
// ScheduleAnyway), which spread the pods of one controller. Which pods count as "of one
// controller" comes from `default_selector` (upstream: the selectors of the Services,
// ReplicaSets, StatefulSets and ReplicationControllers that select the pod) when given, else
// from the pod's controller owner reference (same namespace, same controller uid).
// Args (PodTopologySpreadArgs JSON): defaultConstraints, defaultingType ("System" | "List").
// PreFilterExtensions: Filter's domain counts and global minimum with a pod added to or removed
// from a node (preemption's victims, pods nominated to a node).
// The per-domain counts are kept across cycles in TopologyCountsMemos (counts_memo.h), so a cycle
// costs work proportional to the nodes changed since the same question was last asked, not to
// every pod in the cluster.
//
// Thread-safety: immutable after construction; safe to call concurrently if `default_selector`
// is.

#include <functional>
#include <optional>
#include <string_view>
#include <vector>

#include "scheduler/framework.h"
#include "scheduler/plugins/counts_memo.h"

namespace skiff::scheduler::plugins {

class PodTopologySpread final : public PreFilterPlugin,
                                public PreFilterExtensions,
                                public FilterPlugin,
                                public PreScorePlugin,
                                public ScorePlugin,
                                public EnqueueExtensions {
 public:
  static constexpr std::string_view kName = "PodTopologySpread";
  static constexpr std::string_view kReasonConstraintsNotMatch =
      "node(s) didn't match pod topology spread constraints";
  static constexpr std::string_view kReasonNodeLabelNotMatch =
      "node(s) didn't match pod topology spread constraints (missing required label)";

  // The selector for a pod's default spreading; nullopt or an empty selector: no spreading.
  using DefaultSelectorFn = std::function<std::optional<Selector>(const PodInfo&)>;

  static Result<std::unique_ptr<Plugin>> create(const nlohmann::json& args,
                                                DefaultSelectorFn default_selector = nullptr);

  std::string_view name() const override { return kName; }
  PluginStatus pre_filter(CycleState& state, const PodInfo& pod, const NodeLister& nodes,
                          PreFilterResult& result) const override;
  const PreFilterExtensions* pre_filter_extensions() const override { return this; }
  PluginStatus add_pod(CycleState& state, const PodInfo& pod, const PodInfo& added,
                       const NodeInfo& node) const override;
  PluginStatus remove_pod(CycleState& state, const PodInfo& pod, const PodInfo& removed,
                          const NodeInfo& node) const override;
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

  struct Constraint;

 private:
  PluginStatus update_with_pod(CycleState& state, const PodInfo& pod, const PodInfo& other,
                               const NodeInfo& node, int64_t sign) const;

  // The pod's constraints for `action`, or the default ones. A default selector is stored in
  // `storage`, which must outlive `out`.
  void constraints_for(const PodInfo& pod, UnsatisfiableAction action, std::vector<Constraint>& out,
                       std::optional<Selector>& storage) const;

  std::vector<TopologySpreadConstraint> default_constraints_;
  bool system_defaulted_ = true;
  DefaultSelectorFn default_selector_;
  mutable MemoCache<TopologyCountsMemo> memos_{32};
};

}  // namespace skiff::scheduler::plugins
