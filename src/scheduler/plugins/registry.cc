#include "scheduler/plugins/registry.h"

#include "scheduler/plugins/inter_pod_affinity.h"
#include "scheduler/plugins/node_affinity.h"
#include "scheduler/plugins/node_basics.h"
#include "scheduler/plugins/node_resources.h"
#include "scheduler/plugins/priority_sort.h"
#include "scheduler/plugins/scheduling_gates.h"
#include "scheduler/plugins/taint_toleration.h"

namespace skiff::scheduler::plugins {
namespace {

template <typename T>
PluginFactory no_args() {
  return [](const nlohmann::json&, Handle&) -> Result<std::unique_ptr<Plugin>> {
    return std::unique_ptr<Plugin>(std::make_unique<T>());
  };
}

// A factory from a plugin's create(args), for plugins that need nothing of the Handle.
PluginFactory args_only(Result<std::unique_ptr<Plugin>> (*create)(const nlohmann::json&)) {
  return [create](const nlohmann::json& args, Handle&) { return create(args); };
}

}  // namespace

Registry default_registry(const RegistryOptions& options) {
  Registry r;
  auto must = [](Status s) { SKIFF_CHECK(s.is_ok(), s.to_string()); };
  must(r.add(std::string(PrioritySort::kName), no_args<PrioritySort>()));
  must(r.add(std::string(SchedulingGates::kName), no_args<SchedulingGates>()));
  must(r.add(std::string(NodeUnschedulable::kName), no_args<NodeUnschedulable>()));
  must(r.add(std::string(NodeName::kName), no_args<NodeName>()));
  must(r.add(std::string(TaintToleration::kName), no_args<TaintToleration>()));
  must(r.add(std::string(NodeReadiness::kName), no_args<NodeReadiness>()));
  must(r.add(std::string(NodeAffinity::kName), args_only(NodeAffinity::create)));
  must(r.add(std::string(NodePorts::kName), no_args<NodePorts>()));
  must(r.add(std::string(NodeResourcesFit::kName), args_only(NodeResourcesFit::create)));
  auto selector = options.default_spread_selector;
  must(
      r.add(std::string(PodTopologySpread::kName), [selector](const nlohmann::json& args, Handle&) {
        return PodTopologySpread::create(args, selector);
      }));
  must(r.add(std::string(InterPodAffinity::kName), args_only(InterPodAffinity::create)));
  must(r.add(std::string(NodeResourcesBalancedAllocation::kName),
             args_only(NodeResourcesBalancedAllocation::create)));
  return r;
}

Profile default_profile() {
  Profile p;
  p.plugins = {
      {std::string(PrioritySort::kName), 0, nullptr},
      {std::string(SchedulingGates::kName), 0, nullptr},
      {std::string(NodeUnschedulable::kName), 0, nullptr},
      {std::string(NodeName::kName), 0, nullptr},
      {std::string(TaintToleration::kName), 3, nullptr},
      {std::string(NodeReadiness::kName), 0, nullptr},
      {std::string(NodeAffinity::kName), 2, nullptr},
      {std::string(NodePorts::kName), 0, nullptr},
      {std::string(NodeResourcesFit::kName), 1, nullptr},
      {std::string(PodTopologySpread::kName), 2, nullptr},
      {std::string(InterPodAffinity::kName), 2, nullptr},
      {std::string(NodeResourcesBalancedAllocation::kName), 1, nullptr},
  };
  return p;
}

}  // namespace skiff::scheduler::plugins
