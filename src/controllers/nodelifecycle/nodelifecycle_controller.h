#pragma once

// The node lifecycle controller (upstream's node-lifecycle-controller plus its taint eviction
// controller), driven by ctx.clock and ctx.options:
// - Health: every node_monitor_period it checks each node. A node whose Ready condition
//   heartbeat (lastHeartbeatTime) and whose Lease in kube-node-lease (spec.renewTime) have not
//   changed for node_monitor_grace_period, measured on the controller's clock from when it last
//   saw either change (60 s from creation for a node that never posted status), gets its Ready,
//   MemoryPressure, DiskPressure and PIDPressure conditions set to Unknown (NodeStatusUnknown,
//   "Kubelet stopped posting node status."). When the controller takes a node from Ready it
//   records NodeNotReady ("Node NAME status is now: NodeNotReady") and marks the node's pods not
//   Ready through the status subresource. New and removed nodes are recorded (RegisteredNode,
//   RemovingNode).
// - NoExecute taints: node.kubernetes.io/unreachable when Ready is Unknown, not-ready when it is
//   False, removed once Ready is True again; added per zone at most 0.1 nodes a second, and, as
//   upstream, not at all in a zone where most of at least three nodes are down (partial
//   disruption, in zones of up to 50 nodes) and nowhere while every node of the cluster is down
//   (full disruption; a single-node cluster is always in that case, so its pods stay).
// - NoSchedule taints (upstream's TaintNodesByCondition): not-ready / unreachable from Ready,
//   memory-pressure, disk-pressure, pid-pressure and network-unavailable from their conditions,
//   and node.kubernetes.io/unschedulable from spec.unschedulable.
// - Taint-based eviction: see taint_eviction.h.
//
// Thread-safety: see Controller (controller.h).

#include <memory>

#include "controllers/controller.h"

namespace skiff::controllers {

std::unique_ptr<Controller> new_nodelifecycle_controller(ControllerContext& ctx);

}  // namespace skiff::controllers
