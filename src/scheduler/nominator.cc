#include "scheduler/nominator.h"

#include <algorithm>

namespace skiff::scheduler {

void Nominator::set(const PodRef& pod, const std::string& node) {
  std::lock_guard lock(mu_);
  remove_locked(pod->uid);
  if (node.empty()) return;
  by_node_[node].push_back(pod);
  node_of_[pod->uid] = node;
  count_.store(node_of_.size(), std::memory_order_relaxed);
}

void Nominator::remove(std::string_view uid) {
  if (empty()) return;
  std::lock_guard lock(mu_);
  remove_locked(uid);
}

void Nominator::remove_locked(std::string_view uid) {
  auto it = node_of_.find(std::string(uid));
  if (it == node_of_.end()) return;
  auto pods = by_node_.find(it->second);
  if (pods != by_node_.end()) {
    std::erase_if(pods->second, [&](const PodRef& p) { return p->uid == uid; });
    if (pods->second.empty()) by_node_.erase(pods);
  }
  node_of_.erase(it);
  count_.store(node_of_.size(), std::memory_order_relaxed);
}

std::vector<PodRef> Nominator::on_node(const std::string& node, std::string_view except_uid) const {
  std::vector<PodRef> out;
  if (empty()) return out;
  std::lock_guard lock(mu_);
  auto it = by_node_.find(node);
  if (it == by_node_.end()) return out;
  for (const PodRef& p : it->second) {
    if (p->uid != except_uid) out.push_back(p);
  }
  return out;
}

}  // namespace skiff::scheduler
