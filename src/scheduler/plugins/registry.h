#pragma once

// The in-tree plugins, registered in one place, and the default profile with upstream's default
// plugin order and Score weights (TaintToleration 3, NodeAffinity 2, PodTopologySpread 2,
// InterPodAffinity 2, NodeResourcesFit 1, NodeResourcesBalancedAllocation 1).
//
// Binding needs the API server, so no bind plugin is registered here: whoever runs the scheduler
// against the API registers its binder (upstream's "DefaultBinder") and appends it to the profile.
//
// Thread-safety: the functions are pure; see each plugin for its own contract.

#include <functional>
#include <optional>

#include "scheduler/framework.h"
#include "scheduler/plugins/pod_topology_spread.h"

namespace skiff::scheduler::plugins {

struct RegistryOptions {
  // PodTopologySpread's default spreading selector (see pod_topology_spread.h).
  PodTopologySpread::DefaultSelectorFn default_spread_selector;
};

Registry default_registry(const RegistryOptions& options = {});

// The default profile: every in-tree plugin, in upstream's order, with upstream's weights.
Profile default_profile();

}  // namespace skiff::scheduler::plugins
