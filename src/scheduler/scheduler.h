#pragma once

// The scheduling algorithm (kube-scheduler's schedulePod and scheduleOne, minus the API):
// refresh the cache snapshot, run PreFilter, filter nodes starting from a rotating offset until
// enough feasible nodes are found (percentageOfNodesToScore: adaptive 50 - nodes/125 percent, at
// least 5%, at least 100 nodes), score the feasible nodes (PreScore, Score, NormalizeScore,
// weights), and pick the highest total (ties broken at random). When no node fits, the result is
// a FitError whose message has upstream's shape:
//   "0/5 nodes are available: 2 Insufficient memory, 3 node(s) had untolerated taint {a: b}."
//
// schedule_one() then assumes the pod on the chosen node in the cache and runs Reserve and
// Permit; bind() is the binding cycle (PreBind, Bind, PostBind; on failure Unreserve and forget
// the assumed pod). Typical use by the API-facing loop:
//
//   auto qp = queue.pop();
//   CycleOutcome r = scheduler.schedule_one(qp->pod);
//   if (!r.outcome.ok()) {
//     qp->unschedulable_plugins = r.outcome.failure().unschedulable_plugins;
//     queue.add_unschedulable_if_not_present(*qp);   // + PodScheduled=False, event
//   } else {
//     queue.done(qp->pod->uid);
//     scheduler.framework().wait_on_permit(uid, [](PluginStatus permit) {
//       // on a binding thread: if permit failed, scheduler.abandon(...) and requeue; else
//       PluginStatus s = scheduler.bind(qp->pod, r.outcome.result().node, *r.state);
//       // on failure: requeue the pod (error → backoff) and
//       // queue.move_all_to_active_or_backoff(assigned_pod_delete_event(qp->pod.get()))
//     });
//   }
//
// PostFilter plugins (DefaultPreemption, which the scheduler component registers) run when no
// node fits; a node they nominate is tried first in the pod's next cycle.
//
// Thread-safety: schedule_pod() and schedule_one() must be called from one scheduling thread
// (they own the snapshot). bind() may run concurrently on other threads. The Cache is shared.

#include <cstdint>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <variant>
#include <vector>

#include "scheduler/cache.h"
#include "scheduler/framework.h"
#include "scheduler/nominator.h"
#include "scheduler/types.h"

namespace skiff::scheduler {

inline constexpr int kMinFeasibleNodesToFind = 100;
inline constexpr int kMinFeasibleNodesPercentageToFind = 5;

// How many feasible nodes to look for among `num_all_nodes` (upstream's numFeasibleNodesToFind).
// `percentage` 0 means adaptive.
int num_feasible_nodes_to_find(int percentage, int num_all_nodes);

struct SchedulerOptions {
  // 0: adaptive; otherwise 1..100.
  int percentage_of_nodes_to_score = 0;
  // Seed for tie-breaking between equally scored nodes; 0 picks a random seed.
  uint64_t seed = 0;
};

struct Diagnosis {
  NodeToStatus node_statuses;  // every node a Filter rejected, with its status
  // The status of nodes PreFilter excluded (or of all nodes when PreFilter rejected the pod).
  std::optional<PluginStatus> absent_nodes_status;
  std::set<std::string> unschedulable_plugins;
  std::string pre_filter_msg;
  std::string post_filter_msg;
};

class FitError {
 public:
  int num_all_nodes = 0;
  Diagnosis diagnosis;

  // "0/N nodes are available: <PreFilter message>." or "0/N nodes are available: <count>
  // <reason>, ...." with the counted reasons sorted as strings, then the PostFilter message.
  std::string message() const;
};

struct ScheduleResult {
  std::string node;
  int evaluated_nodes = 0;
  int feasible_nodes = 0;
};

struct ScheduleFailure {
  // kUnschedulable / kUnschedulableAndUnresolvable, or kError for internal errors.
  Code code = Code::kUnschedulable;
  std::string message;
  // The plugins that rejected the pod (what the queue needs to park it).
  std::set<std::string> unschedulable_plugins;
  std::optional<FitError> fit_error;  // when no node fit
  // The node the pod is nominated to after this cycle: its earlier one, or what a PostFilter
  // plugin set or cleared.
  std::string nominated_node;
  bool is_error() const { return code == Code::kError; }
};

class ScheduleOutcome {
 public:
  ScheduleOutcome(ScheduleResult r) : v_(std::move(r)) {}   // NOLINT: implicit by design
  ScheduleOutcome(ScheduleFailure f) : v_(std::move(f)) {}  // NOLINT: implicit by design

  bool ok() const { return v_.index() == 0; }
  const ScheduleResult& result() const { return std::get<ScheduleResult>(v_); }
  const ScheduleFailure& failure() const { return std::get<ScheduleFailure>(v_); }

 private:
  std::variant<ScheduleResult, ScheduleFailure> v_;
};

struct CycleOutcome {
  ScheduleOutcome outcome;
  // On success: the cycle's state, for bind().
  std::shared_ptr<CycleState> state;
  // On success: a Permit plugin holds the pod (see Framework::wait_on_permit).
  bool waiting_on_permit = false;
};

class Scheduler {
 public:
  // `cache` must outlive the Scheduler.
  Scheduler(Cache& cache, std::unique_ptr<Framework> framework, SchedulerOptions options = {});
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  Framework& framework() { return *framework_; }
  const Snapshot& snapshot() const { return snapshot_; }
  // Pods waiting on the node a preemption nominated them to; kept by the API-facing loop.
  Nominator& nominator() { return nominator_; }

  // The algorithm alone: no change to the cache.
  ScheduleOutcome schedule_pod(CycleState& state, const PodInfo& pod);

  // A scheduling cycle: schedule_pod; on a FitError, PostFilter; on success assume the pod on
  // the node in the cache, then Reserve and Permit (undone on failure).
  CycleOutcome schedule_one(const PodRef& pod);

  // The binding cycle for a pod schedule_one() assumed on `node`.
  PluginStatus bind(const PodRef& pod, const std::string& node, CycleState& state);
  // Gives up on a pod schedule_one() assumed (a Permit plugin rejected it while it waited):
  // Unreserve, and forget the assumed pod.
  void abandon(const PodRef& pod, const std::string& node, CycleState& state);

 private:
  std::string select_host(std::span<const NodeInfo* const> nodes,
                          const std::vector<int64_t>& scores);
  // The filters on `node`, first with the pods nominated there of at least the pod's priority
  // placed on it, then (if that passes and there were any) as it is (upstream's
  // RunFilterPluginsWithNominatedPods).
  PluginStatus filter(const CycleState& state, const PodInfo& pod, const NodeInfo& node) const;

  Cache& cache_;
  std::unique_ptr<Framework> framework_;
  const SchedulerOptions options_;
  Snapshot snapshot_;
  Nominator nominator_;
  FilterFn filter_fn_;
  size_t next_start_node_index_ = 0;
  std::mt19937_64 rng_;
  // Scratch reused across cycles.
  std::vector<const NodeInfo*> candidates_;
  std::vector<const NodeInfo*> feasible_;
  std::vector<int64_t> scores_;
  // Nodes that failed a filter this cycle; names are only copied out for a FitError.
  std::vector<std::pair<const NodeInfo*, PluginStatus>> failed_;
};

}  // namespace skiff::scheduler
