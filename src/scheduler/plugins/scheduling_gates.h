#pragma once

// SchedulingGates (PreEnqueue): a pod whose spec.schedulingGates is not empty stays out of
// activeQ. The gates can only be removed (the API server refuses new ones after creation), and
// removing them is an update of the pod itself, which the queue offers to PreEnqueue again; so
// no cluster event can help and the plugin registers none.
//
// Thread-safety: stateless; safe to call concurrently.

#include <string_view>
#include <vector>

#include "scheduler/framework.h"

namespace skiff::scheduler::plugins {

class SchedulingGates final : public PreEnqueuePlugin, public EnqueueExtensions {
 public:
  static constexpr std::string_view kName = "SchedulingGates";

  std::string_view name() const override { return kName; }
  // UnschedulableAndUnresolvable "waiting for scheduling gates: [a b]".
  PluginStatus pre_enqueue(const PodInfo& pod) const override;
  std::vector<ClusterEventWithHint> events_to_register() const override { return {}; }
};

}  // namespace skiff::scheduler::plugins
