#pragma once

// The scheduler cache: every node and every pod placed on a node, including "assumed" pods that
// the scheduler placed but the informer has not yet reported as bound. The scheduling cycle works
// on a Snapshot that update_snapshot() refreshes incrementally: each NodeInfo carries a
// generation, the cache keeps its NodeInfos in most-recently-changed order, and an update copies
// only the NodeInfos changed since the snapshot's generation (one or two per cycle in steady
// state), never the whole cluster.
//
// Assumed pod lifecycle (as upstream):
//   assume_pod()      — the scheduler chose a node; the pod counts against it at once.
//   finish_binding()  — the bind call was made; the assumption may expire after the TTL.
//   forget_pod()      — binding failed; the pod is removed again.
//   add_pod()         — the informer reports the pod bound: the assumption is confirmed.
//
// Thread-safety: Cache is safe to call from any thread (one mutex; informer handlers and the
// scheduling thread share it). A Snapshot belongs to one scheduling thread; update_snapshot()
// must not run while a cycle reads that snapshot.

#include <chrono>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "base/status.h"
#include "scheduler/framework.h"
#include "scheduler/node_info.h"
#include "scheduler/types.h"

namespace skiff::scheduler {

class Cache;

class Snapshot final : public NodeLister {
 public:
  Snapshot() = default;
  Snapshot(const Snapshot&) = delete;
  Snapshot& operator=(const Snapshot&) = delete;

  const std::vector<const NodeInfo*>& list() const override { return nodes_; }
  const std::vector<const NodeInfo*>& have_pods_with_affinity() const override {
    return with_affinity_;
  }
  const std::vector<const NodeInfo*>& have_pods_with_required_anti_affinity() const override {
    return with_required_anti_affinity_;
  }
  const NodeInfo* get(std::string_view name) const override;
  const Labels* namespace_labels(const HString& ns) const override;

  uint64_t epoch() const override { return epoch_; }
  uint64_t generation() const override { return generation_; }
  bool changed_since(uint64_t generation, std::vector<const NodeInfo*>& out) const override;
  size_t index_of(const NodeInfo& node) const override;

  size_t num_nodes() const { return nodes_.size(); }

 private:
  // How many changes the log keeps; older aggregates are rebuilt.
  static constexpr size_t kChangeLogLimit = 8192;

  friend class Cache;
  struct StringHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  std::unordered_map<std::string, std::unique_ptr<NodeInfo>, StringHash, std::equal_to<>> map_;
  std::vector<const NodeInfo*> nodes_;
  std::vector<const NodeInfo*> with_affinity_;
  std::vector<const NodeInfo*> with_required_anti_affinity_;
  std::unordered_map<HString, Labels, HStringHash> namespaces_;
  std::unordered_map<const NodeInfo*, uint32_t> index_;
  uint64_t generation_ = 0;
  uint64_t namespaces_generation_ = 0;
  uint64_t tree_generation_ = 0;
  uint64_t epoch_ = 0;
  // NodeInfos copied in, by ascending generation, within the epoch.
  std::vector<std::pair<uint64_t, const NodeInfo*>> change_log_;
  uint64_t change_log_floor_ = 0;  // changes after this generation are all in the log
};

class Cache {
 public:
  using TimePoint = std::chrono::steady_clock::time_point;
  using NowFn = std::function<TimePoint()>;

  // `assumed_ttl` of zero: an assumed pod whose binding finished never expires (it waits for the
  // informer), which is upstream's default. `now` is injectable for tests.
  explicit Cache(std::chrono::milliseconds assumed_ttl = std::chrono::milliseconds(0),
                 NowFn now = nullptr);
  Cache(const Cache&) = delete;
  Cache& operator=(const Cache&) = delete;

  // ---- Nodes (from the node informer) ----
  void add_node(NodeRef node);  // also an update when the node is known
  void update_node(NodeRef node) { add_node(std::move(node)); }
  // The node leaves the snapshot; its pods stay accounted until they are removed.
  void remove_node(std::string_view name);

  // ---- Pods bound to nodes (from the pod informer) ----
  // Confirms an assumed pod, or adds a pod the scheduler did not place. kInvalidArgument for a
  // pod without spec.nodeName.
  Status add_pod(PodRef pod);
  // kNotFound if the pod is unknown (and not assumed).
  Status update_pod(PodRef pod);
  Status remove_pod(std::string_view uid);

  // ---- The scheduler's own placements ----
  // kAlreadyExists if the pod is already in the cache.
  Status assume_pod(PodRef pod, const std::string& node_name);
  Status finish_binding(std::string_view uid);
  // kNotFound if the pod is not assumed.
  Status forget_pod(std::string_view uid);
  bool is_assumed(std::string_view uid) const;
  // Removes assumed pods whose binding finished more than the TTL ago. Returns how many.
  size_t cleanup_expired_assumed_pods();

  // ---- Namespaces (for namespaceSelector in pod affinity terms) ----
  void set_namespace(const std::string& name, Labels labels);
  void remove_namespace(const std::string& name);

  // Brings `snapshot` up to date, copying only NodeInfos that changed since its last update.
  void update_snapshot(Snapshot& snapshot);

  // ---- Introspection ----
  size_t node_count() const;  // nodes known as Node objects
  size_t pod_count() const;   // pods on nodes, assumed ones included
  // The node a pod is on (assumed or confirmed), if known.
  std::optional<std::string> pod_node(std::string_view uid) const;
  // A copy of a node's NodeInfo, for tests and debugging.
  std::optional<NodeInfo> node_info(std::string_view name) const;

 private:
  struct PodState {
    PodRef pod;
    std::string node;
    bool assumed = false;
    bool binding_finished = false;
    TimePoint deadline{};
  };
  using ItemList = std::list<NodeInfo>;

  NodeInfo& node_item_locked(const std::string& name);
  void touch_locked(ItemList::iterator it);
  void add_pod_locked(const PodRef& pod, const std::string& node);
  void remove_pod_locked(const std::string& uid, const std::string& node);
  void tree_add_locked(const Node& node);
  void tree_remove_locked(const std::string& name, const std::string& zone);
  std::vector<std::string> tree_list_locked() const;

  const std::chrono::milliseconds ttl_;
  const NowFn now_;

  mutable std::mutex mu_;
  // NodeInfos, most recently changed first.
  ItemList items_;                                                  // guarded by mu_
  std::unordered_map<std::string, ItemList::iterator> item_index_;  // guarded by mu_
  std::unordered_map<std::string, PodState> pods_;                  // guarded by mu_
  size_t assumed_count_ = 0;                                        // guarded by mu_
  uint64_t generation_ = 0;                                         // guarded by mu_
  // Node names by zone, zones in first-seen order (upstream's node tree).
  std::vector<std::pair<std::string, std::vector<std::string>>> zones_;  // guarded by mu_
  std::unordered_map<std::string, std::string> node_zone_;               // guarded by mu_
  uint64_t tree_generation_ = 0;                                         // guarded by mu_
  std::unordered_map<HString, Labels, HStringHash> namespaces_;          // guarded by mu_
  uint64_t namespaces_generation_ = 0;                                   // guarded by mu_
};

}  // namespace skiff::scheduler
