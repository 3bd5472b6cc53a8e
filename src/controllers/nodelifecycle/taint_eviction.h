#pragma once

// Taint-based eviction (upstream's taint eviction controller, once the node lifecycle
// controller's taint manager): a pod bound to a node with NoExecute taints it does not tolerate
// is deleted at once; a pod that tolerates them all for a limited time (tolerationSeconds; the
// API server gives pods 300 s for not-ready and unreachable by default) is deleted when the
// shortest of those times, counted from when the taints were first seen, runs out, unless the
// taints go first. Before deleting, the pod gets the condition DisruptionTarget=True
// (DeletionByTaintManager) and the event TaintManagerEviction "Marking for deletion Pod ns/name";
// a cancelled deletion records "Cancelling deletion of Pod ns/name". Timing follows ctx.clock.
//
// Thread-safety: start()/stop() from one thread; the rest runs on the workqueue's workers and
// one timer thread, sharing the schedule under mu_.

#include <chrono>
#include <map>
#include <mutex>
#include <string>

#include "controllers/controller.h"

namespace skiff::controllers::nodelifecycle {

class TaintEviction {
 public:
  // `pods_by_node_index` names an index of the pods informer by spec.nodeName.
  TaintEviction(ControllerContext& ctx, std::string pods_by_node_index);
  ~TaintEviction();

  void start();
  void stop();

 private:
  using TimePoint = std::chrono::system_clock::time_point;
  struct Entry {
    std::string uid;
    TimePoint created;
    TimePoint fire_at;
    bool firing = false;      // queued for eviction
    bool done = false;        // evicted: not again for this pod
    bool event_sent = false;  // TaintManagerEviction recorded
  };

  Status sync(const std::string& key);
  void process_pod(const Json& pod, const std::vector<Json>& taints);
  // Drops a pending deletion (recording that it was cancelled).
  void cancel(const Json& pod);
  Status evict(const std::string& pod_key);
  // Queues the evictions that are due.
  void fire_due();

  ControllerContext ctx_;
  client::Informer& pods_;
  client::Informer& nodes_;
  const std::string pods_by_node_;
  std::unique_ptr<client::EventRecorder> recorder_;
  client::WorkQueue queue_;

  std::mutex mu_;
  std::map<std::string, Entry> entries_;  // pod key → scheduled eviction; guarded by mu_
  QueueWorkers workers_;
  Ticker timer_;  // fire_due()
};

}  // namespace skiff::controllers::nodelifecycle
