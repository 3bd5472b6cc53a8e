#pragma once

// The scheduling framework: one small interface per extension point (QueueSort, PreEnqueue,
// PreFilter, Filter, PostFilter, PreScore, Score with an optional NormalizeScore,
// Reserve/Unreserve, Permit, PreBind, Bind, PostBind, plus EnqueueExtensions for the cluster
// events a plugin cares about), a Registry that builds plugins by name, and a Framework that runs
// a profile's plugins at each point. Plugins reach the framework through a Handle (the pods
// Permit plugins hold waiting).
// Plugins report outcomes as PluginStatus codes (Success, Unschedulable,
// UnschedulableAndUnresolvable, Error, Skip, Wait) with reasons, never by throwing. Per-cycle data
// travels in a CycleState.
//
// Thread-safety: a Framework is immutable after create(). Scheduling cycles run one at a time
// on one thread (the Scheduler's): PreFilter and PreScore of different cycles never overlap, so
// plugins may keep caches from one cycle to the next there (see plugins/counts_memo.h). Filter
// and Score (and NormalizeScore) only read the cycle's state and must be safe to call
// concurrently for different nodes of one cycle. Reserve, Permit and the bind points may be
// called from a binding thread while another cycle runs; plugins that keep state there
// synchronise it themselves. A CycleState belongs to one cycle and is not shared while written.
// QueueSort and PreEnqueue run under the scheduling queue's lock, from any thread: they must be
// pure functions of their arguments and must not call into the queue. The waiting pods (Permit's
// kWait) are thread-safe; their outcome is delivered on the thread that decides it (an allow or
// reject call, or the framework's timer thread for time-outs).

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "base/status.h"
#include "scheduler/events.h"
#include "scheduler/node_info.h"
#include "scheduler/types.h"

namespace skiff::scheduler {

inline constexpr int64_t kMaxNodeScore = 100;
inline constexpr int64_t kMinNodeScore = 0;

enum class Code : uint8_t {
  kSuccess,
  kError,
  kUnschedulable,                 // the node may fit after preemption or cluster changes
  kUnschedulableAndUnresolvable,  // preemption cannot help on this node
  kWait,                          // Permit only
  kSkip,                          // PreFilter / PreScore: skip this plugin's Filter / Score
};
std::string_view code_name(Code code);

class PluginStatus {
 public:
  PluginStatus() = default;  // success
  PluginStatus(Code code, std::string reason)
      : code_(code),
        reasons_(std::make_shared<const std::vector<std::string>>(1, std::move(reason))) {}
  PluginStatus(Code code, std::vector<std::string> reasons)
      : code_(code),
        reasons_(std::make_shared<const std::vector<std::string>>(std::move(reasons))) {}

  // A status whose reasons live for the whole program (a plugin's constants): building it
  // allocates nothing, which matters when thousands of nodes fail a filter in one cycle.
  static PluginStatus fixed(Code code, const std::vector<std::string>& static_reasons) {
    PluginStatus s;
    s.code_ = code;
    s.reasons_ = std::shared_ptr<const std::vector<std::string>>(
        std::shared_ptr<const std::vector<std::string>>(), &static_reasons);
    return s;
  }
  static PluginStatus skip() { return fixed(Code::kSkip, no_reasons()); }
  static PluginStatus error(std::string message) { return {Code::kError, std::move(message)}; }

  Code code() const { return code_; }
  bool is_success() const { return code_ == Code::kSuccess; }
  bool is_skip() const { return code_ == Code::kSkip; }
  bool is_rejected() const {
    return code_ == Code::kUnschedulable || code_ == Code::kUnschedulableAndUnresolvable;
  }
  const std::vector<std::string>& reasons() const { return reasons_ ? *reasons_ : no_reasons(); }
  // The reasons joined with ", ".
  std::string message() const;
  // The plugin that produced the status (set by the framework on failures).
  std::string_view plugin() const { return plugin_; }
  void set_plugin(std::string_view plugin) { plugin_ = plugin; }

 private:
  static const std::vector<std::string>& no_reasons() {
    static const std::vector<std::string> kNone;
    return kNone;
  }

  Code code_ = Code::kSuccess;
  // Shared and immutable: copying a status copies a pointer.
  std::shared_ptr<const std::vector<std::string>> reasons_;
  std::string_view plugin_;
};

// ---- Per-cycle state ----

class StateData {
 public:
  virtual ~StateData() = default;
};

// A CycleState slot is identified by the address of a plugin's static StateKey.
struct StateKey {
  const char* name;
};

// Data written to a CycleState is shared with the state's clones: never change data read from a
// state; write a changed copy instead (as PreFilterExtensions do).
class CycleState {
 public:
  void write(const StateKey& key, std::shared_ptr<const StateData> data);
  const StateData* read(const StateKey& key) const;
  // The caller knows the type it wrote under `key`.
  template <typename T>
  const T* get(const StateKey& key) const {
    return static_cast<const T*>(read(key));
  }
  // A copy sharing the data (cheap): preemption tries each node on a clone changed through
  // PreFilterExtensions.
  CycleState clone() const { return *this; }

  // Set by the framework from PreFilter / PreScore kSkip answers, by plugin position.
  bool skip_filter(size_t index) const { return (skip_filter_ >> index) & 1u; }
  bool skip_score(size_t index) const { return (skip_score_ >> index) & 1u; }

 private:
  friend class Framework;
  std::vector<std::pair<const StateKey*, std::shared_ptr<const StateData>>> slots_;
  uint64_t skip_filter_ = 0;
  uint64_t skip_score_ = 0;
};

// ---- What plugins see of the cluster ----

// A consistent view of all nodes for one cycle (the Snapshot implements it).
class NodeLister : public NamespaceLabels {
 public:
  // Every node, spread across zones the way upstream's node tree orders them.
  virtual const std::vector<const NodeInfo*>& list() const = 0;
  // Nodes hosting at least one pod with pod affinity or anti-affinity.
  virtual const std::vector<const NodeInfo*>& have_pods_with_affinity() const = 0;
  // Nodes hosting at least one pod with required anti-affinity.
  virtual const std::vector<const NodeInfo*>& have_pods_with_required_anti_affinity() const = 0;
  virtual const NodeInfo* get(std::string_view name) const = 0;

  // Change tracking, for plugins that keep aggregates over all nodes across cycles and update
  // them from the nodes that changed instead of recomputing them.
  // The epoch changes (to a value never used before, by any lister) whenever the set or order of
  // nodes, or the namespace labels, change: aggregates from another epoch must be rebuilt.
  virtual uint64_t epoch() const = 0;
  // The latest NodeInfo generation the lister reflects.
  virtual uint64_t generation() const = 0;
  // The nodes changed after `generation` within the current epoch, each once; false when the
  // lister no longer remembers that far back.
  virtual bool changed_since(uint64_t generation, std::vector<const NodeInfo*>& out) const = 0;
  // The node's position in list().
  virtual size_t index_of(const NodeInfo& node) const = 0;
};

struct PreFilterResult {
  bool all_nodes = true;
  std::vector<std::string> node_names;  // sorted, unique; meaningful when !all_nodes

  // Intersection with `other`.
  void merge(const PreFilterResult& other);
};

struct NodeScore {
  const NodeInfo* node = nullptr;
  int64_t score = 0;
};

// Failed nodes with the status that rejected each.
using NodeToStatus = std::vector<std::pair<std::string, PluginStatus>>;

// A pod in the scheduling queue, as QueueSort sees it.
struct QueuedPodInfo {
  PodRef pod;
  std::chrono::steady_clock::time_point timestamp;  // when it last entered a queue
  std::chrono::steady_clock::time_point initial_attempt_timestamp;
  int attempts = 0;   // scheduling attempts so far (pop() increments)
  int64_t cycle = 0;  // the scheduling cycle of the pop() that handed it out
  // Plugins that rejected the pod in its last cycle (or the PreEnqueue plugin gating it); empty
  // after an error.
  std::set<std::string> unschedulable_plugins;
  bool gated = false;  // a PreEnqueue plugin keeps it out of activeQ
};

// ---- Extension points ----

class Plugin {
 public:
  virtual ~Plugin() = default;
  virtual std::string_view name() const = 0;
};

// PrioritySort's order: higher spec.priority first, then the earlier timestamp.
inline bool priority_sort_less(const QueuedPodInfo& a, const QueuedPodInfo& b) {
  if (a.pod->priority != b.pod->priority) return a.pod->priority > b.pod->priority;
  return a.timestamp < b.timestamp;
}

class QueueSortPlugin : public virtual Plugin {
 public:
  // Whether `a` is tried before `b`. A profile enables at most one QueueSort plugin; without one
  // the queue orders as PrioritySort does.
  virtual bool less(const QueuedPodInfo& a, const QueuedPodInfo& b) const = 0;
};

class PreEnqueuePlugin : public virtual Plugin {
 public:
  // Runs whenever the pod is about to enter activeQ. Anything but success keeps it parked
  // ("gated", with this plugin as its unschedulable plugin) until an update of the pod, or a
  // cluster event this plugin registered for, lets the queue ask again.
  virtual PluginStatus pre_enqueue(const PodInfo& pod) const = 0;
};

// What a PreFilter plugin whose per-cycle data counts other pods provides so that Filter can be
// asked "and if this pod were added to / removed from that node?" (preemption removes victims;
// pods nominated to a node are added). `state` is a clone the caller owns.
class PreFilterExtensions {
 public:
  virtual ~PreFilterExtensions() = default;
  virtual PluginStatus add_pod(CycleState& state, const PodInfo& pod, const PodInfo& added,
                               const NodeInfo& node) const = 0;
  virtual PluginStatus remove_pod(CycleState& state, const PodInfo& pod, const PodInfo& removed,
                                  const NodeInfo& node) const = 0;
};

class PreFilterPlugin : public virtual Plugin {
 public:
  // Computes per-cycle data for Filter. May narrow the candidate nodes (result.all_nodes =
  // false), reject the pod outright, or return kSkip so this plugin's Filter does not run.
  virtual PluginStatus pre_filter(CycleState& state, const PodInfo& pod, const NodeLister& nodes,
                                  PreFilterResult& result) const = 0;
  // Null when the plugin's data does not depend on other pods.
  virtual const PreFilterExtensions* pre_filter_extensions() const { return nullptr; }
};

class FilterPlugin : public virtual Plugin {
 public:
  virtual PluginStatus filter(const CycleState& state, const PodInfo& pod,
                              const NodeInfo& node) const = 0;
};

// Runs the profile's filters for a pod on a node, counting the pods nominated there as the
// scheduler does (see nominator.h).
using FilterFn = std::function<PluginStatus(const CycleState&, const PodInfo&, const NodeInfo&)>;

class Framework;

// What a PostFilter plugin may use besides the failed nodes: the cycle's nodes, the filters to
// try the pod on a changed copy of a node, and the framework to bring a clone of the cycle's
// state in line with such a copy (run_pre_filter_extension_add_pod / _remove_pod).
struct PostFilterContext {
  const NodeLister& nodes;
  const FilterFn& filter;
  const Framework& framework;
};

class PostFilterPlugin : public virtual Plugin {
 public:
  // Runs when no node fits. May free room (preemption) and name a node for the pod. Success
  // means the pod may fit later on `nominated_node`; whatever the outcome, `nominated_node` is
  // the node the pod stays nominated to ("" for none).
  virtual PluginStatus post_filter(CycleState& state, const PodInfo& pod,
                                   const NodeToStatus& failed_nodes, const PostFilterContext& ctx,
                                   std::string& nominated_node) const = 0;
};

class PreScorePlugin : public virtual Plugin {
 public:
  // `feasible` are the nodes that passed filtering. kSkip: this plugin's Score does not run.
  virtual PluginStatus pre_score(CycleState& state, const PodInfo& pod,
                                 std::span<const NodeInfo* const> feasible,
                                 const NodeLister& nodes) const = 0;
};

class ScorePlugin : public virtual Plugin {
 public:
  virtual PluginStatus score(const CycleState& state, const PodInfo& pod, const NodeInfo& node,
                             int64_t& score) const = 0;
  // NormalizeScore: plugins whose raw scores are not in [0, kMaxNodeScore] rescale them here.
  virtual bool has_normalize() const { return false; }
  virtual PluginStatus normalize(const CycleState& state, const PodInfo& pod,
                                 std::span<NodeScore> scores) const {
    return {};
  }
};

class ReservePlugin : public virtual Plugin {
 public:
  virtual PluginStatus reserve(CycleState& state, const PodInfo& pod, const std::string& node) = 0;
  // Undoes reserve(); must be idempotent and may be called without a prior reserve().
  virtual void unreserve(CycleState& state, const PodInfo& pod, const std::string& node) = 0;
};

class PermitPlugin : public virtual Plugin {
 public:
  // kSuccess, a rejection, kError, or kWait with `timeout` set: the pod then waits, its binding
  // cycle held, until every plugin that asked it to wait allows it (WaitingPod::allow through the
  // Handle), a plugin rejects it, or a plugin's timeout passes (a rejection). Timeouts are capped
  // at kMaxPermitTimeout.
  virtual PluginStatus permit(CycleState& state, const PodInfo& pod, const std::string& node,
                              std::chrono::milliseconds& timeout) = 0;
};

inline constexpr std::chrono::milliseconds kMaxPermitTimeout = std::chrono::minutes(15);

// A pod that Permit plugins hold (upstream's WaitingPod).
class WaitingPod {
 public:
  WaitingPod(PodRef pod, std::string node, Framework* framework)
      : pod_(std::move(pod)), node_(std::move(node)), framework_(framework) {}

  const PodRef& pod() const { return pod_; }
  const std::string& node() const { return node_; }
  // The plugins that have not allowed the pod yet.
  std::vector<std::string> pending_plugins() const;
  // `plugin` lets the pod through; when the last pending plugin has, its binding cycle goes on.
  void allow(std::string_view plugin);
  // Any plugin may reject the pod: it is unreserved and goes back to the queue with `message`
  // (kUnschedulable, with `plugin` as the plugin that rejected it).
  void reject(std::string_view plugin, std::string message);

 private:
  friend class Framework;
  using Clock = std::chrono::steady_clock;
  struct Pending {
    Clock::time_point deadline;
    std::chrono::milliseconds timeout;
  };
  using Done = std::function<void(PluginStatus)>;
  // Records the outcome (first one wins) and hands it to the callback, if one is waiting.
  void settle(std::unique_lock<std::mutex>& lock, PluginStatus status);

  const PodRef pod_;
  const std::string node_;
  Framework* const framework_;
  mutable std::mutex mu_;
  std::map<std::string, Pending, std::less<>> pending_;  // guarded by mu_
  std::optional<PluginStatus> outcome_;                  // guarded by mu_
  Done done_;                                            // guarded by mu_
};

// What plugins may use of the framework that runs them (upstream's framework.Handle).
class Handle {
 public:
  virtual ~Handle() = default;
  // The pod Permit plugins hold, or null.
  virtual std::shared_ptr<WaitingPod> get_waiting_pod(std::string_view uid) const = 0;
  virtual void iterate_over_waiting_pods(const std::function<void(WaitingPod&)>& fn) const = 0;
  // Rejects a waiting pod (as when it is deleted); false if it was not waiting.
  virtual bool reject_waiting_pod(std::string_view uid, std::string_view plugin,
                                  std::string message) = 0;
};

class PreBindPlugin : public virtual Plugin {
 public:
  virtual PluginStatus pre_bind(CycleState& state, const PodInfo& pod, const std::string& node) = 0;
};

class BindPlugin : public virtual Plugin {
 public:
  // kSkip passes the pod to the next bind plugin.
  virtual PluginStatus bind(CycleState& state, const PodInfo& pod, const std::string& node) = 0;
};

class PostBindPlugin : public virtual Plugin {
 public:
  virtual void post_bind(CycleState& state, const PodInfo& pod, const std::string& node) = 0;
};

class EnqueueExtensions : public virtual Plugin {
 public:
  // Events that may make a pod this plugin rejected schedulable.
  virtual std::vector<ClusterEventWithHint> events_to_register() const = 0;
};

// ---- Registry and profiles ----

// Builds a plugin from its args (the pluginConfig args of a KubeSchedulerConfiguration, as
// JSON; null when none were given) and the framework's Handle (valid for the plugin's lifetime).
using PluginFactory =
    std::function<Result<std::unique_ptr<Plugin>>(const nlohmann::json& args, Handle& handle)>;

class Registry {
 public:
  Status add(std::string name, PluginFactory factory);  // kAlreadyExists for a duplicate
  const PluginFactory* find(std::string_view name) const;
  std::vector<std::string> names() const;

 private:
  std::map<std::string, PluginFactory, std::less<>> factories_;
};

struct PluginSpec {
  std::string name;
  int32_t weight = 0;  // Score weight; 0 means 1
  nlohmann::json args;
};

struct Profile {
  std::string scheduler_name = "default-scheduler";
  // Each plugin runs at every extension point it implements, in this order.
  std::vector<PluginSpec> plugins;
};

class Framework final : public Handle {
 public:
  // kInvalidArgument for an unknown plugin, a duplicate, more than 64 plugins at one point, or
  // more than one QueueSort plugin.
  static Result<std::unique_ptr<Framework>> create(const Registry& registry,
                                                   const Profile& profile);
  ~Framework() override;

  const std::string& scheduler_name() const { return scheduler_name_; }
  const Plugin* plugin(std::string_view name) const;
  bool has_filter_plugins() const { return !filter_.empty(); }
  bool has_score_plugins() const { return !score_.empty(); }

  // The QueueSort plugin's order, or PrioritySort's (higher priority first, then earlier
  // timestamp) when the profile has none.
  bool queue_less(const QueuedPodInfo& a, const QueuedPodInfo& b) const;
  // The first PreEnqueue rejection (with its plugin's name), or success.
  PluginStatus run_pre_enqueue(const PodInfo& pod) const;

  // Runs every PreFilter plugin. On success `result` holds the intersection of the plugins'
  // node restrictions and `narrowing` the plugins that restricted nodes. A rejection carries the
  // plugin's name.
  PluginStatus run_pre_filter(CycleState& state, const PodInfo& pod, const NodeLister& nodes,
                              PreFilterResult& result, std::set<std::string>& narrowing) const;
  // Every PreFilterExtensions' add_pod / remove_pod (but those of plugins whose Filter the cycle
  // skips): `state` then describes `node` with `other` added / removed. The first error stops.
  PluginStatus run_pre_filter_extension_add_pod(CycleState& state, const PodInfo& pod,
                                                const PodInfo& other, const NodeInfo& node) const;
  PluginStatus run_pre_filter_extension_remove_pod(CycleState& state, const PodInfo& pod,
                                                   const PodInfo& other,
                                                   const NodeInfo& node) const;
  // The first failing Filter's status (with its plugin name), or success.
  PluginStatus run_filter(const CycleState& state, const PodInfo& pod, const NodeInfo& node) const;
  PluginStatus run_post_filter(CycleState& state, const PodInfo& pod,
                               const NodeToStatus& failed_nodes, const NodeLister& nodes,
                               const FilterFn& filter, std::string& nominated) const;
  PluginStatus run_pre_score(CycleState& state, const PodInfo& pod,
                             std::span<const NodeInfo* const> feasible,
                             const NodeLister& nodes) const;
  // totals[i]: the weighted sum of every Score plugin's (normalized) score for nodes[i].
  PluginStatus run_score(const CycleState& state, const PodInfo& pod,
                         std::span<const NodeInfo* const> nodes,
                         std::vector<int64_t>& totals) const;
  PluginStatus run_reserve(CycleState& state, const PodInfo& pod, const std::string& node) const;
  // Unreserve runs in the reverse order of Reserve.
  void run_unreserve(CycleState& state, const PodInfo& pod, const std::string& node) const;
  // A rejection (with the plugin) or error from the first plugin that gave one; else kWait when
  // any plugin asked to wait (the pod is then a waiting pod until wait_on_permit settles it);
  // else success.
  PluginStatus run_permit(CycleState& state, const PodRef& pod, const std::string& node);
  // Calls `done` with the outcome of the pod's wait at Permit: at once (on this thread) when it
  // is not waiting or already settled, else later on the thread that settles it. The pod is no
  // longer a waiting pod when `done` runs.
  void wait_on_permit(const std::string& uid, std::function<void(PluginStatus)> done);
  // Drops every waiting pod without calling its callback and stops the time-out thread (for
  // shutdown, before whatever the callbacks refer to goes away).
  void close_waiting();

  std::shared_ptr<WaitingPod> get_waiting_pod(std::string_view uid) const override;
  void iterate_over_waiting_pods(const std::function<void(WaitingPod&)>& fn) const override;
  bool reject_waiting_pod(std::string_view uid, std::string_view plugin,
                          std::string message) override;
  PluginStatus run_pre_bind(CycleState& state, const PodInfo& pod, const std::string& node) const;
  // kError "no bind plugin" when no plugin accepted the pod.
  PluginStatus run_bind(CycleState& state, const PodInfo& pod, const std::string& node) const;
  void run_post_bind(CycleState& state, const PodInfo& pod, const std::string& node) const;

  // Plugin name → the events it registered.
  std::map<std::string, std::vector<ClusterEventWithHint>> events_to_register() const;

 private:
  Framework() = default;

  void timeout_loop(std::stop_token stop);
  // Removes a settled pod from the waiting pods.
  void forget_waiting(const std::string& uid);

  std::string scheduler_name_;
  std::vector<std::unique_ptr<Plugin>> plugins_;
  const QueueSortPlugin* queue_sort_ = nullptr;
  std::vector<PreEnqueuePlugin*> pre_enqueue_;
  std::vector<PreFilterPlugin*> pre_filter_;
  std::vector<FilterPlugin*> filter_;
  // For each PreFilter plugin, the position of the same plugin among filter_ (or -1).
  std::vector<int> pre_filter_to_filter_;
  std::vector<PostFilterPlugin*> post_filter_;
  std::vector<PreScorePlugin*> pre_score_;
  std::vector<int> pre_score_to_score_;
  std::vector<ScorePlugin*> score_;
  std::vector<int64_t> score_weights_;
  std::vector<ReservePlugin*> reserve_;
  std::vector<PermitPlugin*> permit_;
  std::vector<PreBindPlugin*> pre_bind_;
  std::vector<BindPlugin*> bind_;
  std::vector<PostBindPlugin*> post_bind_;
  std::vector<EnqueueExtensions*> enqueue_;

  friend class WaitingPod;
  // Pods held at Permit, and the thread that rejects them when a timeout passes (started with
  // the first waiting pod).
  mutable std::mutex waiting_mu_;
  std::condition_variable_any waiting_cv_;
  std::unordered_map<std::string, std::shared_ptr<WaitingPod>> waiting_;  // guarded by waiting_mu_
  uint64_t waiting_added_ = 0;   // guarded by waiting_mu_: wakes the timeout thread
  bool waiting_closed_ = false;  // guarded by waiting_mu_
  std::jthread timeout_thread_;
};

// Upstream's DefaultNormalizeScore: scales scores so the highest becomes `max_priority`
// (reversed: the highest becomes 0); all-zero scores stay 0 (reversed: all become max).
void default_normalize_score(int64_t max_priority, bool reverse, std::span<NodeScore> scores);

}  // namespace skiff::scheduler
