#include "kubelet/admission.h"

#include "api/quota.h"

namespace skiff::kubelet {
namespace {

struct Requests {
  int64_t cpu_millis = 0;
  int64_t memory_bytes = 0;
  int64_t ephemeral_storage_bytes = 0;
};

Requests requests_of(const nlohmann::json& pod) {
  api::quota::ResourceList list = api::quota::pod_requests(pod);
  Requests r;
  if (auto it = list.find("cpu"); it != list.end()) r.cpu_millis = it->second.milli_value();
  if (auto it = list.find("memory"); it != list.end()) r.memory_bytes = it->second.value();
  if (auto it = list.find("ephemeral-storage"); it != list.end()) {
    r.ephemeral_storage_bytes = it->second.value();
  }
  return r;
}

Admission out_of(const std::string& resource, int64_t requested, int64_t used, int64_t capacity) {
  return {"OutOf" + resource, "Node didn't have enough resource: " + resource + ", requested: " +
                                  std::to_string(requested) + ", used: " + std::to_string(used) +
                                  ", capacity: " + std::to_string(capacity)};
}

}  // namespace

Admission resource_admission(const nlohmann::json& pod, const std::vector<nlohmann::json>& active,
                             const Allocatable& allocatable) {
  int64_t pods_used = static_cast<int64_t>(active.size());
  if (pods_used + 1 > allocatable.pods) return out_of("pods", 1, pods_used, allocatable.pods);
  Requests want = requests_of(pod);
  if (want.cpu_millis == 0 && want.memory_bytes == 0 && want.ephemeral_storage_bytes == 0) {
    return {};
  }
  Requests used;
  for (const nlohmann::json& other : active) {
    Requests r = requests_of(other);
    used.cpu_millis += r.cpu_millis;
    used.memory_bytes += r.memory_bytes;
    used.ephemeral_storage_bytes += r.ephemeral_storage_bytes;
  }
  if (want.cpu_millis > 0 && used.cpu_millis + want.cpu_millis > allocatable.cpu_millis) {
    return out_of("cpu", want.cpu_millis, used.cpu_millis, allocatable.cpu_millis);
  }
  if (want.memory_bytes > 0 && used.memory_bytes + want.memory_bytes > allocatable.memory_bytes) {
    return out_of("memory", want.memory_bytes, used.memory_bytes, allocatable.memory_bytes);
  }
  if (want.ephemeral_storage_bytes > 0 &&
      used.ephemeral_storage_bytes + want.ephemeral_storage_bytes >
          allocatable.ephemeral_storage_bytes) {
    return out_of("ephemeral-storage", want.ephemeral_storage_bytes, used.ephemeral_storage_bytes,
                  allocatable.ephemeral_storage_bytes);
  }
  return {};
}

}  // namespace skiff::kubelet
