#pragma once

// Node-pressure eviction (upstream's eviction manager). Every monitoring interval the node's
// signals are read from the stats Summary and compared with the eviction thresholds:
//   memory.available    node.memory.availableBytes (capacity: available + working set)
//   nodefs.available    node.fs.availableBytes of node.fs.capacityBytes
//   nodefs.inodesFree   node.fs.inodesFree of node.fs.inodes
//   imagefs.available   node.runtime.imageFs.availableBytes of its capacityBytes
//   imagefs.inodesFree  node.runtime.imageFs.inodesFree of its inodes
//   pid.available       node.rlimit.maxpid - node.rlimit.curproc (of maxpid)
// A threshold is met while its signal is under it ("memory.available<100Mi",
// "nodefs.inodesFree<5%"). A hard threshold (--eviction-hard; upstream's Linux defaults:
// memory.available<100Mi, nodefs.available<10%, nodefs.inodesFree<5%, imagefs.available<15%) acts
// at once; a soft one
// (--eviction-soft) only once it has been met without a break for its grace period
// (--eviction-soft-grace-period, required for every soft threshold). With a minimum reclaim
// (--eviction-minimum-reclaim) a threshold once met stays met until its signal is back above the
// threshold plus that amount.
//
// A met threshold (soft ones before their grace period too) puts the node under its pressure
// condition: MemoryPressure for memory, DiskPressure for the filesystems, PIDPressure for PIDs. A
// condition stays on until no threshold of it has been met for the pressure transition period
// (--eviction-pressure-transition-period, default 5m), so that it does not flap.
//
// Each round a threshold that acts (memory before the others) evicts one pod. Pods are ranked as
// upstream ranks them: for memory and disk, pods using more than they requested first, then lower
// priority, then larger usage above the request (inodes count as usage over a request of zero);
// for PIDs, lower priority first, then more processes (the pod cgroup's pids.current). Pods of
// system-critical priority (2000000000 and above) are never evicted. A pod evicted for a hard
// threshold is killed at once (grace 0); for a soft one it gets its terminationGracePeriodSeconds
// (default 30) capped at --eviction-max-pod-grace-period (a negative cap leaves the pod's own).
//
// Thread-safety: start()/stop() from one thread; synchronize() from one thread at a time (the
// monitoring thread once started); the pressure getters from any thread.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "base/status.h"
#include "base/time.h"
#include "kubelet/stats/summary.h"

namespace skiff::kubelet {

using Json = nlohmann::json;

inline constexpr const char* kSignalMemoryAvailable = "memory.available";
inline constexpr const char* kSignalNodeFsAvailable = "nodefs.available";
inline constexpr const char* kSignalNodeFsInodesFree = "nodefs.inodesFree";
inline constexpr const char* kSignalImageFsAvailable = "imagefs.available";
inline constexpr const char* kSignalImageFsInodesFree = "imagefs.inodesFree";
inline constexpr const char* kSignalPidAvailable = "pid.available";

// An amount of a signal: absolute (bytes, inodes or PIDs) or a share of the signal's capacity.
struct SignalAmount {
  int64_t quantity = -1;   // an absolute amount, or
  double percentage = -1;  // a share of capacity (0.10 for 10%)
};

struct Threshold {
  std::string signal;
  int64_t quantity = -1;   // an absolute threshold (bytes, inodes or PIDs), or
  double percentage = -1;  // a share of capacity (0.10 for 10%)
  bool soft = false;
  // Soft thresholds: how long the threshold must be met without a break before it acts.
  std::chrono::milliseconds grace_period{0};
  // How far above the threshold the signal must get back before a met threshold is resolved.
  SignalAmount minimum_reclaim{0, -1};
};

// Parses threshold text as --eviction-hard and --eviction-soft take it
// ("memory.available<100Mi,nodefs.available<10%,pid.available<1k"): a supported signal, "<", and
// a positive quantity or a percentage in [0%, 100%]; "0%" and "100%" disable the entry, as
// upstream. Each signal at most once. kInvalidArgument names `flag` and the entry at fault.
Result<std::vector<Threshold>> parse_thresholds(const std::string& text, bool soft = false,
                                                const std::string& flag = "--eviction-hard");
// Upstream's Linux defaults for --eviction-hard.
std::vector<Threshold> default_thresholds();
inline constexpr const char* kDefaultEvictionHard =
    "memory.available<100Mi,nodefs.available<10%,nodefs.inodesFree<5%,imagefs.available<15%";

// The eviction flags as given on the command line.
struct EvictionFlags {
  std::string hard = kDefaultEvictionHard;
  std::string soft;
  std::string soft_grace_period;  // "memory.available=1m30s,nodefs.available=2m"
  std::string
      minimum_reclaim;  // "memory.available=0Mi,nodefs.available=500Mi,imagefs.available=2%"
};
// Every threshold of the flags: the hard ones, then the soft ones with their grace periods, each
// with its signal's minimum reclaim. kInvalidArgument (naming the flag and the entry) for a bad
// entry, a grace period for an unsupported signal, or a soft threshold without a grace period.
Result<std::vector<Threshold>> parse_eviction_flags(const EvictionFlags& flags);

// What a pod's QoS class is (Guaranteed, Burstable, BestEffort), from its spec as upstream
// computes it.
std::string qos_class(const Json& pod);

// Upstream's critical pods: static pods, and pods of priority 2000000000 or more.
bool is_critical_pod(const Json& pod, bool is_static);

// Whether a new pod may start while the node has the pressure `conditions` in effect
// ("MemoryPressure", "DiskPressure", "PIDPressure"), as upstream's eviction manager admits pods:
// any pod without pressure; a critical one (static, or priority at least 2000000000) always;
// under memory pressure alone any pod that is not BestEffort, or that tolerates the
// node.kubernetes.io/memory-pressure taint; nothing else. "" admits; otherwise the reason it
// does not, as upstream words it ("The node had condition: [DiskPressure]. ").
std::string pressure_admission(const Json& pod, bool is_static,
                               const std::vector<std::string>& conditions);

struct PodUsage {
  Json pod;
  int64_t memory_working_set = 0;
  int64_t ephemeral_usage = 0;   // bytes of the pod's ephemeral storage
  int64_t ephemeral_inodes = 0;  // inodes of the pod's ephemeral storage
  int64_t process_count = 0;     // tasks in the pod's cgroup
};

// The order in which pods are evicted for `signal` (first = next to go).
std::vector<PodUsage> rank_for_eviction(std::vector<PodUsage> pods, const std::string& signal);

// The node condition a signal drives: MemoryPressure, DiskPressure or PIDPressure.
std::string pressure_condition(const std::string& signal);

// The thresholds met in this node summary, each with the message an evicted pod's status carries
// ("The node was low on resource: memory. Threshold quantity: 100Mi, available: 50Mi. ").
// `previously_met` (indexes into `thresholds`) are those met in the round before: they stay met
// until their signal has recovered by their minimum reclaim.
struct Observation {
  size_t index = 0;  // into `thresholds`
  std::string signal;
  std::string message;
};
std::vector<Observation> observe(const stats::Summary& summary,
                                 const std::vector<Threshold>& thresholds,
                                 const std::set<size_t>& previously_met = {});

struct EvictionOptions {
  std::vector<Threshold> thresholds;
  std::chrono::milliseconds monitoring_interval{10000};
  std::chrono::milliseconds pressure_transition_period{std::chrono::minutes(5)};
  // The grace of a pod evicted for a soft threshold is at most this; negative: the pod's own.
  int64_t max_pod_grace_period_seconds = 0;
  const Clock* clock = &SystemClock::instance();
};

class EvictionManager {
 public:
  struct Hooks {
    std::function<Result<stats::Summary>()> summary;
    std::function<std::vector<Json>()> active_pods;  // running, not terminating
    // Evict the pod, giving its containers `grace_period_seconds` to stop.
    std::function<void(const std::string& uid, const std::string& message,
                       int64_t grace_period_seconds)>
        evict;
    std::function<void()> pressure_changed;
  };
  EvictionManager(EvictionOptions options, Hooks hooks);
  ~EvictionManager();

  void start();
  void stop();
  // One monitoring round.
  void synchronize();

  bool memory_pressure() const { return memory_pressure_.load(); }
  bool disk_pressure() const { return disk_pressure_.load(); }
  bool pid_pressure() const { return pid_pressure_.load(); }

 private:
  const EvictionOptions options_;
  const Hooks hooks_;
  std::atomic<bool> memory_pressure_{false};
  std::atomic<bool> disk_pressure_{false};
  std::atomic<bool> pid_pressure_{false};

  // The monitoring state, touched by synchronize() only.
  std::set<size_t> met_;                                               // thresholds met last round
  std::map<size_t, std::chrono::system_clock::time_point> first_met_;  // since when, unbroken
  std::map<std::string, std::chrono::system_clock::time_point> condition_last_met_;

  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;  // guarded by mu_
  std::thread thread_;
};

}  // namespace skiff::kubelet
