#pragma once

// The kubelet's resource-fit admission of a new pod, as upstream's (GeneralPredicates run by the
// kubelet before it starts a pod): the scheduler normally keeps a node from being overcommitted,
// but pods with a preset nodeName or a static manifest bypass it. The pressure side of
// admission is pressure_admission() in eviction.h.
//
// Thread-safety: pure functions.

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace skiff::kubelet {

// What the node offers to pods: its allocatable resources as the kubelet reports them.
struct Allocatable {
  int64_t cpu_millis = 0;
  int64_t memory_bytes = 0;
  int64_t ephemeral_storage_bytes = 0;
  int64_t pods = 0;
};

struct Admission {
  std::string reason;  // "" when admitted
  std::string message;
  bool admitted() const { return reason.empty(); }
};

// Whether `pod`'s effective requests (containers summed, init containers by maximum, overhead
// added) fit beside those of `active` (the pods admitted before it and not finished) in
// `allocatable`. Checked in upstream's order, pods, cpu, memory, ephemeral-storage; the first
// shortfall rejects with reason "OutOf<resource>" and upstream's message ("Node didn't have
// enough resource: cpu, requested: 600, used: 1500, capacity: 2000"; cpu in millicores, the
// others in bytes or pods).
Admission resource_admission(const nlohmann::json& pod, const std::vector<nlohmann::json>& active,
                             const Allocatable& allocatable);

}  // namespace skiff::kubelet
