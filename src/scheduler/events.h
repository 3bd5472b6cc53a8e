#pragma once

// Cluster events: what changed in the cluster (a node was added, an assigned pod deleted, a
// node's labels updated, ...). Plugins declare which events could make a pod they rejected
// schedulable; the scheduling queue moves parked pods only on such events.
//
// Thread-safety: plain values; the helpers are pure functions.

#include <cstdint>
#include <functional>
#include <string_view>
#include <vector>

#include "scheduler/types.h"

namespace skiff::scheduler {

enum class EventResource : uint8_t {
  kAssignedPod,  // a pod bound to a node (in the cache)
  kPendingPod,   // a pod waiting to be scheduled (other than the one in question)
  kNode,
  kNamespace,
  kWildcard,  // matches every registration (time-outs, forced moves)
};

namespace action {
inline constexpr uint32_t kAdd = 1u << 0;
inline constexpr uint32_t kDelete = 1u << 1;
inline constexpr uint32_t kUpdateNodeAllocatable = 1u << 2;
inline constexpr uint32_t kUpdateNodeLabel = 1u << 3;
inline constexpr uint32_t kUpdateNodeTaint = 1u << 4;  // also spec.unschedulable
inline constexpr uint32_t kUpdateNodeCondition = 1u << 5;
inline constexpr uint32_t kUpdatePodLabel = 1u << 6;
inline constexpr uint32_t kUpdatePodScaleDown = 1u << 7;  // requests went down
inline constexpr uint32_t kUpdatePodOther = 1u << 8;
inline constexpr uint32_t kUpdate = kUpdateNodeAllocatable | kUpdateNodeLabel | kUpdateNodeTaint |
                                    kUpdateNodeCondition | kUpdatePodLabel | kUpdatePodScaleDown |
                                    kUpdatePodOther;
inline constexpr uint32_t kAll = kAdd | kDelete | kUpdate;
}  // namespace action

struct ClusterEvent {
  EventResource resource = EventResource::kWildcard;
  uint32_t actions = action::kAll;
  std::string_view label;  // for logs and metrics, e.g. "NodeAdd"
  // The object the event is about, when there is one (valid only during the call).
  const PodInfo* pod = nullptr;
  const Node* node = nullptr;

  // Whether this (actual) event matches a plugin's `registered` interest.
  bool matches(const ClusterEvent& registered) const {
    if (resource == EventResource::kWildcard || registered.resource == EventResource::kWildcard) {
      return true;
    }
    return resource == registered.resource && (actions & registered.actions) != 0;
  }
};

// Refines a registration: given a pod the plugin rejected and an event, false when the event
// cannot make the pod schedulable (upstream's queueing hints, boolean).
using QueueingHint = std::function<bool(const PodInfo& pending_pod, const ClusterEvent& event)>;

struct ClusterEventWithHint {
  ClusterEvent event;
  QueueingHint hint;  // empty: every matching event may help
};

// A registration: `actions` on `resource`, refined by `hint`.
inline ClusterEventWithHint on_event(EventResource resource, uint32_t actions,
                                     QueueingHint hint = nullptr) {
  ClusterEventWithHint r;
  r.event.resource = resource;
  r.event.actions = actions;
  r.hint = std::move(hint);
  return r;
}

// Events with the labels upstream uses.
ClusterEvent node_add_event(const Node* node);
ClusterEvent node_delete_event(const Node* node);
ClusterEvent assigned_pod_add_event(const PodInfo* pod);
ClusterEvent assigned_pod_delete_event(const PodInfo* pod);
ClusterEvent unschedulable_timeout_event();
ClusterEvent force_activate_event();

// The update actions that distinguish `after` from `before` (0 when nothing the scheduler
// cares about changed).
uint32_t node_update_actions(const Node& before, const Node& after);
uint32_t pod_update_actions(const PodInfo& before, const PodInfo& after);

}  // namespace skiff::scheduler
