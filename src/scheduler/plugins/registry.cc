#include "scheduler/plugins/registry.h"

#include "scheduler/plugins/inter_pod_affinity.h"
#include "scheduler/plugins/node_affinity.h"
#include "scheduler/plugins/node_basics.h"
#include "scheduler/plugins/node_resources.h"
#include "scheduler/plugins/taint_toleration.h"

namespace skiff::scheduler::plugins {
namespace {

template <typename T>
PluginFactory no_args() {
  return [](const nlohmann::json&) -> Result<std::unique_ptr<Plugin>> {
    return std::unique_ptr<Plugin>(std::make_unique<T>());
  };
}

}  // namespace

Registry default_registry(const RegistryOptions& options) {
  Registry r;
  auto must = [](Status s) { SKIFF_CHECK(s.is_ok(), s.to_string()); };
  must(r.add(std::string(NodeUnschedulable::kName), no_args<NodeUnschedulable>()));
  must(r.add(std::string(NodeName::kName), no_args<NodeName>()));
  must(r.add(std::string(TaintToleration::kName), no_args<TaintToleration>()));
  must(r.add(std::string(NodeReadiness::kName), no_args<NodeReadiness>()));
  must(r.add(std::string(NodeAffinity::kName), NodeAffinity::create));
  must(r.add(std::string(NodePorts::kName), no_args<NodePorts>()));
  must(r.add(std::string(NodeResourcesFit::kName), NodeResourcesFit::create));
  auto selector = options.default_spread_selector;
  must(r.add(std::string(PodTopologySpread::kName), [selector](const nlohmann::json& args) {
    return PodTopologySpread::create(args, selector);
  }));
  must(r.add(std::string(InterPodAffinity::kName), InterPodAffinity::create));
  must(r.add(std::string(NodeResourcesBalancedAllocation::kName),
             NodeResourcesBalancedAllocation::create));
  return r;
}

Profile default_profile() {
  Profile p;
  p.plugins = {
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
