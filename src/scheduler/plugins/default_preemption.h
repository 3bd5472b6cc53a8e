#pragma once

// DefaultPreemption (upstream's PostFilter plugin of that name): when a pod fits no node, find
// the node where evicting pods of lower priority makes room for it, evicting as few and as
// unimportant pods as possible, have them evicted, and nominate that node for the pod.
//
// As upstream:
// - a pod with preemptionPolicy Never preempts nothing, nor does a pod whose nominated node
//   still has a lower-priority pod terminating (its earlier victims are on their way out);
// - only nodes a filter rejected as Unschedulable are candidates (not UnschedulableAndUnresolvable
//   ones: a taint, a selector or a missing port are not cured by evicting pods);
// - on a candidate, every lower-priority pod is removed and the pod is filtered against what
//   remains; then the removed pods are given back, most important first (higher priority, then
//   earlier start), as long as the pod still fits; those that cannot be given back are the
//   victims;
// - among the candidates, the node is chosen whose most important victim has the lowest
//   priority, then the lowest sum of victim priorities, then the fewest victims, then the latest
//   start of its most important victims, then the first found; candidates are looked for among
//   all nodes until max(100, 10% of the nodes) are found.
// Pods nominated to a node count there when filtering (see nominator.h); evicting on a node
// takes the nomination from pods of lower priority nominated to it (the scheduler component
// does that, in its evict callback).
// Not done here: PodDisruptionBudgets (no such resource yet), and re-running PreFilter for the
// inter-pod affinity and topology spread plugins with the victims removed or nominated pods
// added (their counts still include the victims, so such pods find fewer candidates than
// upstream).
//
// Thread-safety: post_filter runs on the scheduling thread; the evict callback is called there.

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "scheduler/framework.h"

namespace skiff::scheduler::plugins {

// Evicts `victims` from `node` for `preemptor` (through the API: upstream deletes them after
// marking them with a DisruptionTarget condition). An error fails the cycle.
using EvictFn = std::function<Status(const PodInfo& preemptor, const std::string& node,
                                     const std::vector<PodRef>& victims)>;

class DefaultPreemption final : public PostFilterPlugin {
 public:
  static constexpr std::string_view kName = "DefaultPreemption";

  explicit DefaultPreemption(EvictFn evict) : evict_(std::move(evict)) {}

  std::string_view name() const override { return kName; }
  PluginStatus post_filter(CycleState& state, const PodInfo& pod, const NodeToStatus& failed_nodes,
                           const PostFilterContext& ctx,
                           std::string& nominated_node) const override;

 private:
  EvictFn evict_;
};

}  // namespace skiff::scheduler::plugins
