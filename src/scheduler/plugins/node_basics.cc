#include "scheduler/plugins/node_basics.h"

namespace skiff::scheduler::plugins {
namespace {

const std::vector<std::string> kUnschedulableReasons{std::string(NodeUnschedulable::kReason)};
const std::vector<std::string> kNodeNameReasons{std::string(NodeName::kReason)};
const std::vector<std::string> kNotReadyReasons{std::string(NodeReadiness::kReason)};
const std::vector<std::string> kPortsReasons{std::string(NodePorts::kReason)};

bool tolerates(const PodInfo& pod, std::string_view key) {
  Taint taint{std::string(key), "", TaintEffect::kNoSchedule};
  return tolerations_tolerate(pod.tolerations, taint);
}

}  // namespace

// ---- NodeUnschedulable ----

PluginStatus NodeUnschedulable::filter(const CycleState&, const PodInfo& pod,
                                       const NodeInfo& node) const {
  if (!node.node()->unschedulable) return {};
  if (tolerates(pod, kTaintNodeUnschedulable)) return {};
  return PluginStatus::fixed(Code::kUnschedulableAndUnresolvable, kUnschedulableReasons);
}

std::vector<ClusterEventWithHint> NodeUnschedulable::events_to_register() const {
  return {on_event(EventResource::kNode, action::kAdd | action::kUpdateNodeTaint, nullptr)};
}

// ---- NodeName ----

PluginStatus NodeName::filter(const CycleState&, const PodInfo& pod, const NodeInfo& node) const {
  if (pod.node_name.empty() || pod.node_name == node.name()) return {};
  return PluginStatus::fixed(Code::kUnschedulableAndUnresolvable, kNodeNameReasons);
}

std::vector<ClusterEventWithHint> NodeName::events_to_register() const {
  auto hint = [](const PodInfo& pod, const ClusterEvent& e) {
    return e.node == nullptr || pod.node_name.empty() || e.node->name.str() == pod.node_name;
  };
  return {on_event(EventResource::kNode, action::kAdd, hint)};
}

// ---- NodeReadiness ----

PluginStatus NodeReadiness::filter(const CycleState&, const PodInfo& pod,
                                   const NodeInfo& node) const {
  switch (node.node()->ready) {
    case ConditionStatus::kMissing:
    case ConditionStatus::kTrue:
      return {};
    case ConditionStatus::kFalse:
      if (tolerates(pod, kTaintNodeNotReady)) return {};
      break;
    case ConditionStatus::kUnknown:
      if (tolerates(pod, kTaintNodeUnreachable)) return {};
      break;
  }
  return PluginStatus::fixed(Code::kUnschedulableAndUnresolvable, kNotReadyReasons);
}

std::vector<ClusterEventWithHint> NodeReadiness::events_to_register() const {
  return {on_event(EventResource::kNode, action::kAdd | action::kUpdateNodeCondition, nullptr)};
}

// ---- NodePorts ----

PluginStatus NodePorts::pre_filter(CycleState&, const PodInfo& pod, const NodeLister&,
                                   PreFilterResult&) const {
  if (pod.host_ports.empty()) return PluginStatus::skip();
  return {};
}

PluginStatus NodePorts::filter(const CycleState&, const PodInfo& pod, const NodeInfo& node) const {
  for (const HostPort& p : pod.host_ports) {
    if (node.port_in_use(p)) return PluginStatus::fixed(Code::kUnschedulable, kPortsReasons);
  }
  return {};
}

std::vector<ClusterEventWithHint> NodePorts::events_to_register() const {
  // A deleted pod helps only if it held one of the ports the pending pod wants.
  auto pod_hint = [](const PodInfo& pending, const ClusterEvent& e) {
    if (e.pod == nullptr) return true;
    for (const HostPort& want : pending.host_ports) {
      for (const HostPort& had : e.pod->host_ports) {
        if (want.port == had.port && want.protocol == had.protocol) return true;
      }
    }
    return false;
  };
  return {on_event(EventResource::kAssignedPod, action::kDelete, pod_hint),
          on_event(EventResource::kNode, action::kAdd, nullptr)};
}

}  // namespace skiff::scheduler::plugins
