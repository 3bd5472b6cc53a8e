#include "scheduler/node_info.h"

#include <algorithm>

namespace skiff::scheduler {
namespace {

bool erase_pod(std::vector<PodRef>& pods, std::string_view uid) {
  for (size_t i = 0; i < pods.size(); ++i) {
    if (pods[i]->uid == uid) {
      // Order does not matter to any consumer; swap-and-pop keeps removal O(1) after the find.
      pods[i] = std::move(pods.back());
      pods.pop_back();
      return true;
    }
  }
  return false;
}

}  // namespace

const Resources& NodeInfo::allocatable() const {
  static const Resources kNone;
  return node_ ? node_->allocatable : kNone;
}

bool NodeInfo::port_in_use(const HostPort& port) const {
  if (port.port <= 0) return false;
  for (const HostPort& used : used_ports_) {
    if (used.port != port.port || used.protocol != port.protocol) continue;
    if (port.ip == "0.0.0.0" || used.ip == "0.0.0.0" || used.ip == port.ip) return true;
  }
  return false;
}

void NodeInfo::add_pod(PodRef pod) {
  requested_.add(pod->requests);
  non_zero_milli_cpu_ += pod->non_zero_milli_cpu;
  non_zero_memory_ += pod->non_zero_memory;
  for (const HostPort& p : pod->host_ports) used_ports_.push_back(p);
  if (pod->has_pod_affinity) pods_with_affinity_.push_back(pod);
  if (pod->has_required_anti_affinity()) pods_with_required_anti_affinity_.push_back(pod);
  pods_.push_back(std::move(pod));
}

bool NodeInfo::remove_pod(std::string_view uid) {
  PodRef pod;
  for (const PodRef& p : pods_) {
    if (p->uid == uid) {
      pod = p;
      break;
    }
  }
  if (!pod) return false;
  erase_pod(pods_, uid);
  if (pod->has_pod_affinity) erase_pod(pods_with_affinity_, uid);
  if (pod->has_required_anti_affinity()) erase_pod(pods_with_required_anti_affinity_, uid);
  requested_.subtract(pod->requests);
  non_zero_milli_cpu_ -= pod->non_zero_milli_cpu;
  non_zero_memory_ -= pod->non_zero_memory;
  for (const HostPort& p : pod->host_ports) {
    auto it = std::find(used_ports_.begin(), used_ports_.end(), p);
    if (it != used_ports_.end()) used_ports_.erase(it);
  }
  return true;
}

const PodRef* NodeInfo::find_pod(std::string_view uid) const {
  for (const PodRef& p : pods_) {
    if (p->uid == uid) return &p;
  }
  return nullptr;
}

}  // namespace skiff::scheduler
