#include "scheduler/events.h"

namespace skiff::scheduler {

ClusterEvent node_add_event(const Node* node) {
  return {EventResource::kNode, action::kAdd, "NodeAdd", nullptr, node};
}

ClusterEvent node_delete_event(const Node* node) {
  return {EventResource::kNode, action::kDelete, "NodeDelete", nullptr, node};
}

ClusterEvent assigned_pod_add_event(const PodInfo* pod) {
  return {EventResource::kAssignedPod, action::kAdd, "AssignedPodAdd", pod, nullptr};
}

ClusterEvent assigned_pod_delete_event(const PodInfo* pod) {
  return {EventResource::kAssignedPod, action::kDelete, "AssignedPodDelete", pod, nullptr};
}

ClusterEvent unschedulable_timeout_event() {
  return {EventResource::kWildcard, action::kAll, "UnschedulableTimeout", nullptr, nullptr};
}

ClusterEvent force_activate_event() {
  return {EventResource::kWildcard, action::kAll, "ForceActivate", nullptr, nullptr};
}

uint32_t node_update_actions(const Node& before, const Node& after) {
  uint32_t actions = 0;
  if (!(before.allocatable == after.allocatable)) actions |= action::kUpdateNodeAllocatable;
  if (!(before.labels == after.labels)) actions |= action::kUpdateNodeLabel;
  if (before.taints != after.taints || before.unschedulable != after.unschedulable) {
    actions |= action::kUpdateNodeTaint;
  }
  if (before.ready != after.ready) actions |= action::kUpdateNodeCondition;
  return actions;
}

uint32_t pod_update_actions(const PodInfo& before, const PodInfo& after) {
  uint32_t actions = 0;
  if (!(before.labels == after.labels)) actions |= action::kUpdatePodLabel;
  const Resources& b = before.requests;
  const Resources& a = after.requests;
  if (a.milli_cpu < b.milli_cpu || a.memory < b.memory ||
      a.ephemeral_storage < b.ephemeral_storage) {
    actions |= action::kUpdatePodScaleDown;
  } else {
    for (const auto& [name, value] : b.scalar) {
      if (a.scalar_value(name) < value) {
        actions |= action::kUpdatePodScaleDown;
        break;
      }
    }
  }
  if (actions == 0) actions = action::kUpdatePodOther;
  return actions;
}

}  // namespace skiff::scheduler
