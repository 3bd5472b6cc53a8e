#include "scheduler/plugins/scheduling_gates.h"

#include <string>

namespace skiff::scheduler::plugins {

PluginStatus SchedulingGates::pre_enqueue(const PodInfo& pod) const {
  if (pod.scheduling_gates.empty()) return {};
  std::string gates;
  for (const std::string& g : pod.scheduling_gates) {
    if (!gates.empty()) gates += ' ';
    gates += g;
  }
  return {Code::kUnschedulableAndUnresolvable, "waiting for scheduling gates: [" + gates + "]"};
}

}  // namespace skiff::scheduler::plugins
