#pragma once

// The simple node filters:
// - NodeUnschedulable: rejects nodes with spec.unschedulable unless the pod tolerates the
//   node.kubernetes.io/unschedulable:NoSchedule taint;
// - NodeName: rejects every node but the one in the pod's spec.nodeName, when set;
// - NodeReadiness: rejects nodes whose Ready condition is False or Unknown unless the pod
//   tolerates the taint the node lifecycle controller puts on such nodes
//   (node.kubernetes.io/not-ready or /unreachable, NoSchedule). Upstream relies on that taint
//   alone; this check also covers the window before the controller has tainted the node.
//   A node without a Ready condition passes.
// - NodePorts: rejects nodes where a host port the pod asks for is already in use.
//
// Thread-safety: stateless; safe to call concurrently.

#include <string_view>

#include "scheduler/framework.h"

namespace skiff::scheduler::plugins {

class NodeUnschedulable final : public FilterPlugin, public EnqueueExtensions {
 public:
  static constexpr std::string_view kName = "NodeUnschedulable";
  static constexpr std::string_view kReason = "node(s) were unschedulable";

  std::string_view name() const override { return kName; }
  PluginStatus filter(const CycleState& state, const PodInfo& pod,
                      const NodeInfo& node) const override;
  std::vector<ClusterEventWithHint> events_to_register() const override;
};

class NodeName final : public FilterPlugin, public EnqueueExtensions {
 public:
  static constexpr std::string_view kName = "NodeName";
  static constexpr std::string_view kReason = "node(s) didn't match the requested node name";

  std::string_view name() const override { return kName; }
  PluginStatus filter(const CycleState& state, const PodInfo& pod,
                      const NodeInfo& node) const override;
  std::vector<ClusterEventWithHint> events_to_register() const override;
};

class NodeReadiness final : public FilterPlugin, public EnqueueExtensions {
 public:
  static constexpr std::string_view kName = "NodeReadiness";
  static constexpr std::string_view kReason = "node(s) were not ready";

  std::string_view name() const override { return kName; }
  PluginStatus filter(const CycleState& state, const PodInfo& pod,
                      const NodeInfo& node) const override;
  std::vector<ClusterEventWithHint> events_to_register() const override;
};

class NodePorts final : public PreFilterPlugin, public FilterPlugin, public EnqueueExtensions {
 public:
  static constexpr std::string_view kName = "NodePorts";
  static constexpr std::string_view kReason =
      "node(s) didn't have free ports for the requested pod ports";

  std::string_view name() const override { return kName; }
  PluginStatus pre_filter(CycleState& state, const PodInfo& pod, const NodeLister& nodes,
                          PreFilterResult& result) const override;
  PluginStatus filter(const CycleState& state, const PodInfo& pod,
                      const NodeInfo& node) const override;
  std::vector<ClusterEventWithHint> events_to_register() const override;
};

}  // namespace skiff::scheduler::plugins
