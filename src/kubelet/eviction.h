#pragma once

// Node-pressure eviction (upstream's eviction manager, hard thresholds): every monitoring
// interval the node's memory.available, nodefs.available and imagefs.available are compared with
// their thresholds (upstream's defaults: memory.available<100Mi, nodefs.available<10%,
// imagefs.available<15%). A signal under its threshold puts the node under MemoryPressure or
// DiskPressure (reported in the Node's conditions; the node lifecycle controller taints the node
// from them) and evicts one pod per interval, ranked as upstream ranks them: pods using more than
// they requested first, then lower priority, then larger usage above the request. An evicted
// pod's containers are killed and it ends Failed with reason Evicted.
//
// Thread-safety: start()/stop() from one thread; the pressure getters from any thread.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "base/status.h"
#include "kubelet/stats/summary.h"

namespace skiff::kubelet {

using Json = nlohmann::json;

struct Threshold {
  std::string signal;           // memory.available, nodefs.available, imagefs.available
  int64_t quantity_bytes = -1;  // an absolute threshold, or
  double percentage = -1;       // a share of capacity (0.10 for 10%)
};

// Parses --eviction-hard ("memory.available<100Mi,nodefs.available<10%"). kInvalidArgument names
// the entry at fault.
Result<std::vector<Threshold>> parse_thresholds(const std::string& text);
std::vector<Threshold> default_thresholds();

// What a pod's QoS class is (Guaranteed, Burstable, BestEffort), from its spec as upstream
// computes it.
std::string qos_class(const Json& pod);

struct PodUsage {
  Json pod;
  int64_t memory_working_set = 0;
  int64_t ephemeral_usage = 0;
};

// The order in which pods are evicted for `signal` (first = next to go).
std::vector<PodUsage> rank_for_eviction(std::vector<PodUsage> pods, const std::string& signal);

// The signals under their thresholds for this node summary, each with the message an evicted
// pod's status carries ("The node was low on resource: memory. ...").
struct Observation {
  std::string signal;
  std::string message;
};
std::vector<Observation> observe(const stats::Summary& summary,
                                 const std::vector<Threshold>& thresholds);

class EvictionManager {
 public:
  struct Hooks {
    std::function<Result<stats::Summary>()> summary;
    std::function<std::vector<Json>()> active_pods;  // running, not terminating
    std::function<void(const std::string& uid, const std::string& message)> evict;
    std::function<void()> pressure_changed;
  };
  EvictionManager(std::vector<Threshold> thresholds, Hooks hooks,
                  std::chrono::milliseconds interval = std::chrono::seconds(10));
  ~EvictionManager();

  void start();
  void stop();
  // One monitoring round (tests).
  void synchronize();

  bool memory_pressure() const { return memory_pressure_.load(); }
  bool disk_pressure() const { return disk_pressure_.load(); }

 private:
  const std::vector<Threshold> thresholds_;
  const Hooks hooks_;
  const std::chrono::milliseconds interval_;
  std::atomic<bool> memory_pressure_{false};
  std::atomic<bool> disk_pressure_{false};
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;  // guarded by mu_
  std::thread thread_;
};

}  // namespace skiff::kubelet
