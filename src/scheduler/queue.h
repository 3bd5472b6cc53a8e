#pragma once

// The scheduling queue (upstream's PriorityQueue):
// - activeQ: pods ready to be tried, in the profile's QueueSort order (PrioritySort: highest
//   priority first, then earliest enqueue time);
// - backoffQ: pods that failed and wait out a per-pod exponential back-off (1 s doubling up to
//   10 s by default, by attempt count) before returning to activeQ;
// - unschedulable pods: parked after a cycle found no node, until a cluster event that one of
//   the plugins that rejected them registered for (a node added, an assigned pod deleted, ...)
//   moves them, or until they have been parked for 5 minutes (then they are flushed back).
// PreEnqueue plugins run whenever a pod is about to enter activeQ; a pod one of them refuses (the
// SchedulingGates plugin: a pod with scheduling gates) is parked, gated, until an update of the
// pod or an event its gating plugin registered for lets them pass it. An event that arrives
// while a pod is being scheduled is remembered, so a failure at the end of that cycle sends the
// pod to backoffQ instead of parking it (no lost wake-up).
//
// pop() blocks on a condition variable until a pod is ready, waking only when a pod is added or
// moved, when the earliest back-off expires, or for the periodic leftover flush; it never polls.
//
// Queueing hints, the QueueSort order and PreEnqueue run under the queue's lock and must not
// call back into the queue; they may refer to their plugins, so the Framework must outlive the
// queue.
//
// Thread-safety: every method is safe from any thread.

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "base/status.h"
#include "scheduler/events.h"
#include "scheduler/framework.h"
#include "scheduler/types.h"

namespace skiff::scheduler {

struct QueueOptions {
  std::chrono::milliseconds initial_backoff = std::chrono::seconds(1);
  std::chrono::milliseconds max_backoff = std::chrono::seconds(10);
  std::chrono::milliseconds max_in_unschedulable = std::chrono::minutes(5);
  // How often pop() checks for pods parked longer than max_in_unschedulable.
  std::chrono::milliseconds unschedulable_flush_interval = std::chrono::seconds(30);
  std::function<std::chrono::steady_clock::time_point()> now;  // injectable clock
  // activeQ's order; empty: PrioritySort's.
  std::function<bool(const QueuedPodInfo&, const QueuedPodInfo&)> less;
  // The PreEnqueue plugins; empty: no pod is gated.
  std::function<PluginStatus(const PodInfo&)> pre_enqueue;
};

class SchedulingQueue {
 public:
  using TimePoint = std::chrono::steady_clock::time_point;
  using PluginEvents = std::map<std::string, std::vector<ClusterEventWithHint>>;

  // `plugin_events` is Framework::events_to_register().
  explicit SchedulingQueue(PluginEvents plugin_events, QueueOptions options = {});
  // With `framework`'s events, QueueSort and PreEnqueue plugins (options.less and
  // options.pre_enqueue are replaced). `framework` must outlive the queue.
  SchedulingQueue(const Framework& framework, QueueOptions options);
  ~SchedulingQueue();
  SchedulingQueue(const SchedulingQueue&) = delete;
  SchedulingQueue& operator=(const SchedulingQueue&) = delete;

  // A new pending pod (or one seen again): into activeQ, or parked when a PreEnqueue plugin
  // gates it.
  void add(PodRef pod);
  // The pending pod changed. A parked pod whose spec or labels changed is tried again (after any
  // back-off still due); a gated pod is offered to the PreEnqueue plugins again.
  void update(PodRef pod);
  // The pod was deleted or bound elsewhere.
  void remove(std::string_view uid);

  // Blocks until a pod is ready or the queue is closed (nullopt). Increments the pod's attempts.
  std::optional<QueuedPodInfo> pop();
  // Like pop() without blocking.
  std::optional<QueuedPodInfo> try_pop();
  // The cycle number of the latest pop().
  int64_t scheduling_cycle() const;
  // The pod popped earlier has finished its cycle (success or failure requeued).
  void done(std::string_view uid);

  // After a failed cycle: parks the pod, or puts it in backoffQ when a cluster event arrived
  // since info.cycle, when the pod was updated meanwhile, or when the failure was an error (no
  // unschedulable plugins). A pod deleted meanwhile is dropped. kAlreadyExists if the pod is
  // already queued.
  Status add_unschedulable_if_not_present(QueuedPodInfo info);

  // Moves parked pods that `event` may help to activeQ (or backoffQ while backing off).
  void move_all_to_active_or_backoff(const ClusterEvent& event);
  // Convenience for assigned pod events (upstream's AssignedPodAdded / AssignedPodUpdated).
  void assigned_pod_added(const PodInfo& pod);
  void assigned_pod_updated(const PodInfo& before, const PodInfo& after);
  void assigned_pod_deleted(const PodInfo& pod);
  void node_added(const Node& node);
  void node_updated(const Node& before, const Node& after);
  void node_deleted(const Node& node);

  // Moves pods whose back-off has expired to activeQ; parked pods older than
  // max_in_unschedulable back to the queues. pop() does both itself.
  void flush_backoff_completed();
  void flush_unschedulable_left_over();

  // Wakes pop() callers; later pops return nullopt.
  void close();

  // Introspection.
  size_t active_size() const;
  size_t backoff_size() const;
  size_t unschedulable_size() const;
  bool contains(std::string_view uid) const;
  // The back-off a pod with `attempts` attempts waits.
  std::chrono::milliseconds backoff_duration(int attempts) const;

 private:
  enum class Where : uint8_t { kActive, kBackoff, kUnschedulable, kInFlight };
  struct Entry {
    QueuedPodInfo info;
    Where where = Where::kActive;
    bool updated_in_flight = false;
    bool deleted_in_flight = false;
    uint64_t active_seq = 0;  // its ActiveKey's seq while in activeQ
  };
  // An activeQ position. `info` is not changed while the key is in activeQ.
  struct ActiveKey {
    const QueuedPodInfo* info;
    const std::string* uid;
    uint64_t seq;
  };
  struct ActiveOrder {
    const QueueOptions* options;
    bool operator()(const ActiveKey& a, const ActiveKey& b) const;
  };
  struct BackoffKey {
    TimePoint expiry;
    uint64_t seq;
    bool operator<(const BackoffKey& o) const {
      if (expiry != o.expiry) return expiry < o.expiry;
      return seq < o.seq;
    }
  };

  TimePoint now() const { return options_.now(); }
  TimePoint backoff_expiry_locked(const QueuedPodInfo& info) const;
  bool is_backing_off_locked(const QueuedPodInfo& info, TimePoint now) const;
  // Into activeQ if the PreEnqueue plugins let it, else parked as gated.
  void push_active_locked(const std::string& uid, Entry& e);
  bool gated_locked(Entry& e) const;
  void push_backoff_locked(const std::string& uid, Entry& e);
  void push_unschedulable_locked(const std::string& uid, Entry& e);
  void unlink_locked(const std::string& uid, Entry& e);
  void move_to_active_or_backoff_locked(const std::string& uid, Entry& e, TimePoint now);
  bool event_helps_locked(const QueuedPodInfo& info, const ClusterEvent& event) const;
  void move_matching_locked(const ClusterEvent& event);
  void flush_backoff_locked(TimePoint now);
  void flush_unschedulable_locked(TimePoint now);
  std::optional<QueuedPodInfo> pop_locked();
  void add_locked(PodRef pod, TimePoint t);

  const std::map<std::string, std::vector<ClusterEventWithHint>> plugin_events_;
  QueueOptions options_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  // Every pod the queue knows, including pods popped and not yet done().
  std::unordered_map<std::string, Entry> entries_;            // guarded by mu_
  std::set<ActiveKey, ActiveOrder> active_;                   // guarded by mu_
  std::map<BackoffKey, std::string> backoff_;                 // guarded by mu_
  std::unordered_map<std::string, BackoffKey> backoff_keys_;  // guarded by mu_
  std::set<std::string> unschedulable_;                       // guarded by mu_
  uint64_t seq_ = 0;                                          // guarded by mu_
  int64_t scheduling_cycle_ = 0;                              // guarded by mu_
  int64_t move_request_cycle_ = -1;                           // guarded by mu_
  TimePoint last_unschedulable_flush_{};                      // guarded by mu_
  bool closed_ = false;                                       // guarded by mu_
};

}  // namespace skiff::scheduler
