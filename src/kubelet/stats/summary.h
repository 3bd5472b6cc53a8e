#pragma once

// The kubelet's stats Summary (what /stats/summary serves and /metrics/resource is rendered
// from), as plain values with the shape of the Kubernetes kubelet stats API
// (stats/v1alpha1: Summary, NodeStats, PodStats, ContainerStats, CPUStats, MemoryStats,
// NetworkStats, FsStats, VolumeStats, RuntimeStats, RlimitStats). An unset optional is a field
// the JSON leaves out, as upstream's omitempty pointers do. Times are instants; the JSON shows
// them as RFC 3339 seconds (metav1.Time).
//
// Thread-safety: plain values; to_json is a pure function.

#include <chrono>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace skiff::kubelet::stats {

using TimePoint = std::chrono::system_clock::time_point;

struct CpuStats {
  TimePoint time;
  // Core-nanoseconds per second, averaged since the previous sample.
  std::optional<uint64_t> usage_nano_cores;
  std::optional<uint64_t> usage_core_nano_seconds;
};

struct MemoryStats {
  TimePoint time;
  std::optional<uint64_t> available_bytes;  // limit - working set; unset without a limit
  std::optional<uint64_t> usage_bytes;
  std::optional<uint64_t> working_set_bytes;  // usage - inactive file pages
  std::optional<uint64_t> rss_bytes;
  std::optional<uint64_t> page_faults;
  std::optional<uint64_t> major_page_faults;
};

struct InterfaceStats {
  std::string name;
  std::optional<uint64_t> rx_bytes;
  std::optional<uint64_t> rx_errors;
  std::optional<uint64_t> tx_bytes;
  std::optional<uint64_t> tx_errors;
};

struct NetworkStats {
  TimePoint time;
  // The default interface (its name is "" when there is none), then every interface.
  InterfaceStats default_interface;
  std::vector<InterfaceStats> interfaces;
};

struct FsStats {
  TimePoint time;
  std::optional<uint64_t> available_bytes;
  std::optional<uint64_t> capacity_bytes;
  std::optional<uint64_t> used_bytes;
  std::optional<uint64_t> inodes_free;
  std::optional<uint64_t> inodes;
  std::optional<uint64_t> inodes_used;
};

struct VolumeStats {
  FsStats fs;
  std::string name;
};

struct RuntimeStats {
  std::optional<FsStats> image_fs;
  std::optional<FsStats> container_fs;
};

struct RlimitStats {
  TimePoint time;
  std::optional<int64_t> max_pid;
  std::optional<int64_t> num_of_running_processes;
};

struct ContainerStats {
  std::string name;
  TimePoint start_time;
  std::optional<CpuStats> cpu;
  std::optional<MemoryStats> memory;
  std::optional<FsStats> rootfs;
  std::optional<FsStats> logs;
};

struct PodReference {
  std::string name;
  std::string namespace_name;
  std::string uid;
};

struct PodStats {
  PodReference pod_ref;
  TimePoint start_time;
  std::vector<ContainerStats> containers;
  std::optional<CpuStats> cpu;
  std::optional<MemoryStats> memory;
  std::optional<NetworkStats> network;
  std::vector<VolumeStats> volumes;
  std::optional<FsStats> ephemeral_storage;
  std::optional<uint64_t> process_count;
};

struct NodeStats {
  std::string node_name;
  TimePoint start_time;
  std::optional<CpuStats> cpu;
  std::optional<MemoryStats> memory;
  std::optional<NetworkStats> network;
  std::optional<FsStats> fs;
  std::optional<RuntimeStats> runtime;
  std::optional<RlimitStats> rlimit;
};

struct Summary {
  NodeStats node;
  std::vector<PodStats> pods;
};

// The Summary as upstream's kubelet encodes it (field names and order of stats/v1alpha1).
nlohmann::ordered_json to_json(const Summary& summary);

}  // namespace skiff::kubelet::stats
