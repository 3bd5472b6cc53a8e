#pragma once

// The nominator (upstream's nominator in the scheduling queue): pending pods a preemption
// nominated to a node, waiting for the room their victims leave there. While they wait, other
// pods of lower or equal priority are filtered on that node as if the nominated pods of equal or
// higher priority were already placed, so the freed room is not taken from under them.
//
// Thread-safety: every method may be called concurrently (informer threads add and remove, the
// scheduling thread reads).

#include <atomic>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "scheduler/types.h"

namespace skiff::scheduler {

class Nominator {
 public:
  // Nominates `pod` to `node`, replacing an earlier nomination of the pod; an empty node
  // removes it.
  void set(const PodRef& pod, const std::string& node);
  void remove(std::string_view uid);
  // The pods nominated to `node`, other than the one with `except_uid`.
  std::vector<PodRef> on_node(const std::string& node, std::string_view except_uid = {}) const;
  // Cheap check for the common case of no nominations at all.
  bool empty() const { return count_.load(std::memory_order_relaxed) == 0; }

 private:
  void remove_locked(std::string_view uid);

  mutable std::mutex mu_;
  std::unordered_map<std::string, std::vector<PodRef>> by_node_;  // guarded by mu_
  std::unordered_map<std::string, std::string> node_of_;          // uid → node; guarded by mu_
  std::atomic<size_t> count_{0};
};

}  // namespace skiff::scheduler
