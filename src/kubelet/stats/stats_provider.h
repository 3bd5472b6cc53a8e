#pragma once

// The kubelet's resource stats: a Summary (summary.h) of the node and of every pod and running
// container, read from where they are kept:
// - CPU and memory: cgroups. The node is the root cgroup (falling back to /proc/stat and
//   /proc/meminfo where the root has no figures, as on cgroup v2); a pod is
//   <cgroup_root>/pod<uid> and a container <cgroup_root>/pod<uid>/<container id> (runc with the
//   cgroupfs driver names it after the id). usageNanoCores is the rate between the latest CPU
//   sample and the one before it (at least cpu_sample_min_interval older); the housekeeping
//   thread (start()) samples every housekeeping_interval so the rate is there at the first
//   scrape. A container without a cgroup falls back to the runtime's ListContainerStats.
// - Network: the node's namespace (<proc>/net/dev), a pod's through one of its processes
//   (<proc>/<pid>/net/dev); lo*, veth*, docker* and nerdctl* are left out; the default is eth0
//   (for the node: else the interface of the default route).
// - Filesystems: statvfs of the kubelet's data dir (node fs) and of the runtime's root
//   (image fs; used bytes from the runtime's ImageFsInfo); a container's rootfs uses the
//   runtime's writable-layer figures, its logs the size of
//   <pod_log_root>/<namespace>_<name>_<uid>/<container>; each pod volume is a directory
//   <pods_dir>/<uid>/volumes/<plugin>/<name>; ephemeral-storage adds the pod's rootfs layers,
//   log directory and volumes.
// - rlimit (what pid.available is made of): maxpid is the smallest of <proc>/sys/kernel/pid_max,
//   <proc>/sys/kernel/threads-max and the root pids cgroup's pids.max (only a cgroup namespace's
//   root has one); curproc is the task total of <proc>/loadavg (every thread on the machine), or
//   the root cgroup's pids.current when its pids.max is the limit that binds.
//
// Thread-safety: summary() and sample_cpu() may be called from any number of threads at once
// (the CPU samples are under a leaf mutex; files are read outside it). start()/stop() from one
// thread. The pods callback and the runtime are called from those threads and from the
// housekeeping thread.

#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "base/status.h"
#include "base/time.h"
#include "kubelet/cri/runtime_service.h"
#include "kubelet/stats/readers.h"
#include "kubelet/stats/summary.h"

namespace skiff::kubelet::stats {

// What the kubelet knows about a pod, from its pod manager.
struct ContainerInfo {
  std::string id;  // the runtime's container id
  std::string name;
  TimePoint start_time;
};

struct PodInfo {
  std::string uid;
  std::string namespace_name;
  std::string name;
  TimePoint start_time;
  std::vector<ContainerInfo> containers;  // the running ones
};

// The pods of a v1 PodList (the kubelet's /pods), but for finished ones (phase Succeeded or
// Failed), with their running containers (init and regular): ids from
// status.(init)containerStatuses[].containerID ("containerd://<id>"), start times from
// state.running.startedAt and the pod's status.startTime (else its creationTimestamp). A static
// pod's mirror stands for the static pod: its UID is the one in the kubernetes.io/config.mirror
// annotation.
std::vector<PodInfo> pods_from_pod_list(const nlohmann::json& pod_list);

class StatsProvider {
 public:
  virtual ~StatsProvider() = default;
  // only_cpu_and_memory: the node's and each pod's and container's CPU and memory, nothing else
  // (upstream's GetCPUAndMemoryStats, what /metrics/resource is made from). kUnavailable when
  // the node's own CPU or memory cannot be read; a pod or container whose figures cannot be read
  // (it just went away) is reported without them.
  virtual Result<Summary> summary(bool only_cpu_and_memory) = 0;
};

struct StatsProviderOptions {
  std::string node_name;
  // Every pod's cgroup is <cgroup_root>/pod<uid> (NodeSettings::cgroup_root). Empty: pods have
  // no cgroup of their own; containers are then measured through the runtime only.
  std::string cgroup_root = "/skiff";
  // Where cgroups are mounted and the proc filesystem (fake trees in tests).
  std::string cgroup_mount = "/sys/fs/cgroup";
  std::string proc_root = "/proc";
  // Pod volumes are <pods_dir>/<uid>/volumes/<plugin>/<name> (PodManagerOptions::pods_dir).
  std::string pods_dir;
  // Pod logs are <pod_log_root>/<namespace>_<name>_<uid>/<container>/ (NodeSettings::log_root).
  std::string pod_log_root = "/var/log/pods";
  // The node fs: the kubelet's data directory. The image fs: the runtime's root (containerd's
  // root directory); empty: no runtime stats.
  std::string node_fs_path;
  std::string image_fs_path;

  // The pods to report (required).
  std::function<std::vector<PodInfo>()> pods;
  // Optional: containers' writable layers (and their CPU and memory when they have no cgroup)
  // through ListContainerStats; the image fs' used bytes through ImageFsInfo. Not owned; must
  // outlive the provider.
  cri::RuntimeService* runtime = nullptr;
  cri::ImageService* images = nullptr;

  const Clock* clock = &SystemClock::instance();
  std::chrono::milliseconds housekeeping_interval{10000};
  std::chrono::milliseconds cpu_sample_min_interval{1000};
};

class CgroupStatsProvider final : public StatsProvider {
 public:
  explicit CgroupStatsProvider(StatsProviderOptions options);
  ~CgroupStatsProvider() override;
  CgroupStatsProvider(const CgroupStatsProvider&) = delete;
  CgroupStatsProvider& operator=(const CgroupStatsProvider&) = delete;

  Result<Summary> summary(bool only_cpu_and_memory) override;

  // Starts the housekeeping thread (CPU samples every housekeeping_interval). Optional.
  void start();
  // Stops and joins it. Idempotent; the destructor calls it.
  void stop();
  // One CPU sampling pass over the node, the pods and their containers (what housekeeping does).
  void sample_cpu();

  const CgroupReader& cgroups() const { return cgroups_; }

 private:
  struct CpuEntry {
    uint64_t usage = 0;
    TimePoint sampled;
    std::optional<uint64_t> nano_cores;
    TimePoint seen;
  };
  struct RuntimeFigures;

  // Records a cumulative CPU reading for `key`; returns the current rate, if known.
  std::optional<uint64_t> observe_cpu(const std::string& key, uint64_t usage, TimePoint at);
  void prune_cpu(TimePoint now);
  std::optional<CpuStats> cgroup_cpu(const std::string& path);
  std::optional<MemoryStats> cgroup_memory(const std::string& path);
  Result<CpuStats> node_cpu();
  Result<MemoryStats> node_memory();
  std::optional<NetworkStats> node_network();
  std::optional<RlimitStats> node_rlimit();
  PodStats pod_stats(const PodInfo& pod, bool only_cpu_and_memory, RuntimeFigures& runtime);
  std::string pod_cgroup(const PodInfo& pod) const;
  void housekeeping_loop();

  const StatsProviderOptions options_;
  const CgroupReader cgroups_;
  const HostReader host_;

  std::mutex mu_;                        // leaf lock
  std::map<std::string, CpuEntry> cpu_;  // by cgroup path (or source key); guarded by mu_
  std::condition_variable cv_;
  bool stopping_ = false;  // guarded by mu_
  std::thread housekeeping_;
};

// The Summary as /stats/summary serves it (JSON text).
Result<std::string> summary_json(StatsProvider& provider, bool only_cpu_and_memory);

}  // namespace skiff::kubelet::stats
