#pragma once

// NodeInfo: one node with the pods placed on it and the running sums the filters need (requested
// resources, the non-zero requests scoring uses, host ports in use), kept incrementally as pods
// come and go. Pods with pod (anti-)affinity are also listed apart, so the affinity plugins need
// not walk every pod of every node.
//
// Thread-safety: none. The cache mutates its NodeInfos under its own lock; a scheduling cycle
// reads a Snapshot's copies, which nothing mutates during the cycle.

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "scheduler/types.h"

namespace skiff::scheduler {

class NodeInfo {
 public:
  explicit NodeInfo(std::string name) : name_(std::move(name)) {}

  const std::string& name() const { return name_; }
  // nullptr while pods reference a node the cache does not know (or no longer knows).
  const Node* node() const { return node_.get(); }
  const NodeRef& node_ref() const { return node_; }
  const Resources& allocatable() const;

  const std::vector<PodRef>& pods() const { return pods_; }
  const std::vector<PodRef>& pods_with_affinity() const { return pods_with_affinity_; }
  const std::vector<PodRef>& pods_with_required_anti_affinity() const {
    return pods_with_required_anti_affinity_;
  }

  // Sums of the requests of the pods on the node.
  const Resources& requested() const { return requested_; }
  // Sums with 100m / 200Mi standing in for containers that request no CPU / memory.
  int64_t non_zero_milli_cpu() const { return non_zero_milli_cpu_; }
  int64_t non_zero_memory() const { return non_zero_memory_; }

  const std::vector<HostPort>& used_ports() const { return used_ports_; }
  // Whether `port` collides with a port in use: same protocol and port, and the same IP or
  // either side bound to 0.0.0.0.
  bool port_in_use(const HostPort& port) const;

  // Bumped by the cache on every change; the snapshot copies only what changed.
  uint64_t generation() const { return generation_; }
  void set_generation(uint64_t g) { generation_ = g; }

  void set_node(NodeRef node) { node_ = std::move(node); }
  void add_pod(PodRef pod);
  // False if no pod with this uid is on the node.
  bool remove_pod(std::string_view uid);
  const PodRef* find_pod(std::string_view uid) const;

 private:
  std::string name_;
  NodeRef node_;
  std::vector<PodRef> pods_;
  std::vector<PodRef> pods_with_affinity_;
  std::vector<PodRef> pods_with_required_anti_affinity_;
  Resources requested_;
  int64_t non_zero_milli_cpu_ = 0;
  int64_t non_zero_memory_ = 0;
  std::vector<HostPort> used_ports_;
  uint64_t generation_ = 0;
};

}  // namespace skiff::scheduler
