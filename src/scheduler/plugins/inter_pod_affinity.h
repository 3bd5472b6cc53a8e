#pragma once

// InterPodAffinity.
// Filter, with counts per topology pair computed once in PreFilter:
//   - the pod's required affinity: every term needs a matching pod in the node's topology domain
//     (a pod whose terms match itself may go first), else UnschedulableAndUnresolvable
//     "node(s) didn't match pod affinity rules";
//   - the pod's required anti-affinity: no matching pod in the domain, else Unschedulable
//     "node(s) didn't match pod anti-affinity rules";
//   - existing pods' required anti-affinity against this pod, else Unschedulable
//     "node(s) didn't satisfy existing pods anti-affinity rules".
// Existing pods' anti-affinity is read only from nodes that host such pods; the pod's own terms
// are matched against every pod only when the pod has required terms. PreFilter skips the Filter
// when there is nothing to check.
// Score: the pod's preferred (anti-)affinity against existing pods, and existing pods' required
// affinity (hardPodAffinityWeight) and preferred (anti-)affinity against the pod, summed per
// topology domain and min-max normalized. Without preferred terms on the pod, only nodes hosting
// pods with affinity are visited.
// Args (InterPodAffinityArgs JSON): hardPodAffinityWeight (default 1),
// ignorePreferredTermsOfExistingPods (default false).
// PreFilterExtensions: Filter's counts with a pod added to or removed from a node (preemption's
// victims, pods nominated to a node), as changes on top of the memos.
// All counts are kept across cycles in TopologyCountsMemos (counts_memo.h) keyed by the terms and
// the pod's namespace and labels, so pods of one workload reuse them and a cycle only revisits
// the nodes changed since.
//
// Thread-safety: immutable after construction; safe to call concurrently.

#include <string_view>

#include "scheduler/framework.h"
#include "scheduler/plugins/counts_memo.h"

namespace skiff::scheduler::plugins {

class InterPodAffinity final : public PreFilterPlugin,
                               public PreFilterExtensions,
                               public FilterPlugin,
                               public PreScorePlugin,
                               public ScorePlugin,
                               public EnqueueExtensions {
 public:
  static constexpr std::string_view kName = "InterPodAffinity";
  static constexpr std::string_view kReasonExistingAntiAffinity =
      "node(s) didn't satisfy existing pods anti-affinity rules";
  static constexpr std::string_view kReasonAffinity = "node(s) didn't match pod affinity rules";
  static constexpr std::string_view kReasonAntiAffinity =
      "node(s) didn't match pod anti-affinity rules";

  static Result<std::unique_ptr<Plugin>> create(const nlohmann::json& args);

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

 private:
  PluginStatus update_with_pod(CycleState& state, const PodInfo& pod, const PodInfo& other,
                               const NodeInfo& node, int64_t sign) const;

  int32_t hard_pod_affinity_weight_ = 1;
  bool ignore_preferred_terms_of_existing_pods_ = false;
  mutable MemoCache<TopologyCountsMemo> memos_{32};
};

}  // namespace skiff::scheduler::plugins
