#pragma once

// The DaemonSet controller (kube-controller-manager's "daemonset"), with upstream's semantics:
// - one daemon pod per eligible node: the node matches the template's nodeSelector and required
//   node affinity, and the pod (with the tolerations every daemon pod gets, daemonset_util.h)
//   tolerates the node's NoSchedule and NoExecute taints. A pod on a node it no longer fits
//   stays while it tolerates the node's NoExecute taints;
// - pods are created from the template with generateName "<ds>-", the label
//   controller-revision-hash of the current revision, and a required node affinity
//   matchFields metadata.name In [node], so the default scheduler binds each to its node;
// - surplus pods (several on one node, pods on nodes that should not run one, unscheduled pods
//   for nodes that are gone) are deleted; failed daemon pods are deleted (event FailedDaemonPod)
//   and created again, with a per-node back-off of 1 s doubling to 15 min;
// - revisions in ControllerRevisions (controller_history.h), trimmed beyond
//   revisionHistoryLimit when no pod uses them; RollingUpdate replaces old pods within
//   maxUnavailable (default 1), or with maxSurge > 0 starts the new pod first; OnDelete leaves
//   replacement to whoever deletes pods;
// - status desiredNumberScheduled, currentNumberScheduled, numberMisscheduled, numberReady,
//   updatedNumberScheduled, numberAvailable, numberUnavailable, observedGeneration,
//   collisionCount, as `kubectl rollout status daemonset` reads them;
// - events SuccessfulCreate "Created pod: P", SuccessfulDelete "Deleted pod: P", FailedCreate,
//   FailedDelete, FailedDaemonPod, SelectingAll.
// Pods bound to a node that no longer exists are left to pod garbage collection, as upstream.
//
// Thread-safety: start()/stop() from one thread; informer handlers only enqueue keys and observe
// expectations; reconcile() runs on worker threads, never for one key on two threads at once
// (tests may call it directly while no workers run).

#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "api/selector.h"
#include "controllers/controller.h"
#include "controllers/owned_pod_events.h"
#include "controllers/statefulset/pod_expectations.h"

namespace skiff::controllers {

// At most this many pods are created or deleted in one sync (upstream's burstReplicas).
inline constexpr int kDaemonSetBurstReplicas = 250;

class DaemonSetController : public Controller {
 public:
  explicit DaemonSetController(ControllerContext& ctx);
  ~DaemonSetController() override;

  std::string_view name() const override { return "daemonset"; }
  void start() override;
  void stop() override;

  // Syncs one DaemonSet ("namespace/name"); a non-OK result asks for a retry with back-off.
  Status reconcile(const std::string& key);

 private:
  // Daemon pods by the node they are for.
  using NodePods = std::map<std::string, std::vector<ObjectPtr>>;
  struct History {
    Json current;
    std::vector<ObjectPtr> old;
    std::string hash;
    int64_t collision_count = 0;
  };
  struct BackoffEntry {
    std::chrono::milliseconds backoff{0};
    std::chrono::system_clock::time_point last_update;
  };

  void enqueue(const Json& ds);
  void on_node_add(const ObjectPtr& node);
  void on_node_update(const ObjectPtr& old_node, const ObjectPtr& cur_node);

  Result<History> construct_history(const Json& ds, const api::LabelSelector& selector);
  Result<Json> dedup_current(const Json& ds, std::vector<ObjectPtr> current);
  Result<NodePods> nodes_to_daemon_pods(const Json& ds, const api::LabelSelector& selector);
  Status manage(const Json& ds, const std::vector<ObjectPtr>& nodes, const std::string& hash,
                const std::string& key, const api::LabelSelector& selector);
  void pods_should_be_on_node(const Json& node, const NodePods& node_pods, const Json& ds,
                              const std::string& hash, std::vector<std::string>& create_on,
                              std::vector<std::string>& to_delete);
  Status rolling_update(const Json& ds, const std::vector<ObjectPtr>& nodes,
                        const std::string& hash, const std::string& key,
                        const api::LabelSelector& selector);
  // Deletes the named pods and creates one pod on each of `create_on`, at most
  // kDaemonSetBurstReplicas of each, creations in slow-start batches.
  Status sync_nodes(const Json& ds, const std::vector<std::string>& to_delete,
                    const std::vector<std::string>& create_on, const std::string& hash,
                    const std::string& key);
  Status cleanup_history(const Json& ds, const std::vector<ObjectPtr>& old,
                         const api::LabelSelector& selector);
  Status update_status(const Json& cached, const Json& ds, const std::vector<ObjectPtr>& nodes,
                       const History& history, bool update_observed_generation,
                       const api::LabelSelector& selector);
  void record(const Json& ds, std::string_view type, std::string_view reason, std::string message);

  // Back-off for deleting failed pods, per DaemonSet and node (upstream's failedPodsBackoff).
  bool in_backoff(const std::string& key, std::chrono::system_clock::time_point now,
                  std::chrono::milliseconds* remaining);
  void backoff_next(const std::string& key, std::chrono::system_clock::time_point now);

  ControllerContext& ctx_;
  client::Informer& daemonsets_;
  client::Informer& pods_;
  client::Informer& nodes_;
  client::Informer& revisions_;
  PodExpectations expectations_;
  std::unique_ptr<client::EventRecorder> recorder_;
  client::WorkQueue queue_;
  QueueWorkers workers_;
  OwnedPodEvents pod_events_;  // events of daemonsets, their pods and revisions → keys

  std::mutex backoff_mu_;
  std::unordered_map<std::string, BackoffEntry> backoff_;  // guarded by backoff_mu_
};

std::unique_ptr<Controller> new_daemonset_controller(ControllerContext& ctx);

}  // namespace skiff::controllers
