#pragma once

// The ReplicaSet and ReplicationController controllers (kube-controller-manager's "replicaset"
// and "replicationcontroller"): one implementation keeps as many active pods as spec.replicas
// asks for (default 1). It adopts matching orphans and releases pods whose labels no longer
// match, creates missing pods in slow-start batches (1, 2, 4, ... stopping after a batch with an
// error), deletes surplus pods in upstream's order (unscheduled, pending, not ready, ... first),
// at most kBurstReplicas per sync, and guards against stale caches with expectations keyed by the
// owner's key. It reports replicas, fullyLabeledReplicas, readyReplicas, availableReplicas
// (honouring minReadySeconds), observedGeneration and a ReplicaFailure condition in the owner's
// status, and emits SuccessfulCreate / SuccessfulDelete / FailedCreate / FailedDelete events.
// ReplicationControllers differ only in their resource, kind, apiVersion and a selector that
// is a plain label map.
//
// Thread-safety: start()/stop() are called from one thread. Informer handlers run on informer
// threads and only enqueue keys and observe expectations. reconcile() runs on the worker threads
// (never for one key on two threads at once); tests may call it directly while no workers run.
// The handlers stay registered with the shared informers (they cannot be removed), so the
// informers must be stopped before the controller is destroyed.

#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "controllers/controller.h"
#include "controllers/controller_utils.h"
#include "controllers/owned_pod_events.h"

namespace skiff::controllers {

// What the two kinds the controller serves differ in.
struct ReplicaSetKind {
  client::Resource resource;
  std::string kind;         // "ReplicaSet" / "ReplicationController"
  std::string api_version;  // "apps/v1" / "v1"
  std::string name;         // the controller's name: "replicaset" / "replicationcontroller"
  std::string component;    // events' source: "replicaset-controller" / "replication-controller"
};
const ReplicaSetKind& replica_set_kind();
const ReplicaSetKind& replication_controller_kind();

// At most this many pods are created or deleted in one sync (upstream's burstReplicas).
inline constexpr int kBurstReplicas = 500;
inline constexpr int kSlowStartInitialBatchSize = 1;

// Calls `fn` `count` times in batches of initial_batch_size, then twice as many, ...; the calls
// of one batch run in parallel. After a batch in which any call failed, no further batch starts.
// Returns how many calls succeeded and the first error.
struct SlowStartResult {
  int successes = 0;
  Status error;
};
SlowStartResult slow_start_batch(int count, int initial_batch_size,
                                 const std::function<Status()>& fn);

// The `count` pods of `pods` to delete first, in upstream's order: unscheduled before scheduled;
// Pending before Unknown before Running; not ready before ready; lower
// controller.kubernetes.io/pod-deletion-cost first; pods sharing a node with more `related`
// pods first; the more recently ready first; the higher restart count first; the newer first.
std::vector<ObjectPtr> pods_to_delete(std::vector<ObjectPtr> pods,
                                      const std::vector<ObjectPtr>& related, int count);

class ReplicaSetController : public Controller {
 public:
  ReplicaSetController(ControllerContext& ctx, ReplicaSetKind kind);
  ~ReplicaSetController() override;

  std::string_view name() const override { return kind_.name; }
  void start() override;
  void stop() override;

  // Syncs one owner ("namespace/name"); a non-OK result asks for a retry with back-off.
  Status reconcile(const std::string& key);

 private:
  // Deletions are tracked per pod key so that a pod seen first with a deletionTimestamp and then
  // deleted counts once (upstream's UID-tracking expectations).
  void expect_deletions(const std::string& key, const std::vector<std::string>& pod_keys);
  void deletion_observed(const std::string& key, const std::string& pod_key);
  void forget(const std::string& key);

  Status manage_replicas(const std::vector<ObjectPtr>& pods, const Json& owner,
                         const std::string& key);
  Status create_pod(const Json& owner);
  std::vector<ObjectPtr> related_pods(const Json& owner) const;
  Json calculate_status(const Json& owner, const std::vector<ObjectPtr>& pods,
                        const Status& manage_error) const;
  Result<Json> update_status(const Json& owner, Json status);
  void record(const Json& owner, std::string_view type, std::string_view reason,
              std::string message);

  ControllerContext& ctx_;
  const ReplicaSetKind kind_;
  client::Informer& owners_;
  client::Informer& pods_;
  Expectations expectations_;
  std::unique_ptr<client::EventRecorder> recorder_;
  client::WorkQueue queue_;
  QueueWorkers workers_;
  OwnedPodEvents pod_events_;  // events of owners and their pods → keys

  std::mutex deletions_mu_;
  // owner key → pod keys whose deletion is expected; guarded by deletions_mu_
  std::unordered_map<std::string, std::set<std::string>> pending_deletions_;
};

std::unique_ptr<Controller> new_replicaset_controller(ControllerContext& ctx);
std::unique_ptr<Controller> new_replicationcontroller_controller(ControllerContext& ctx);

}  // namespace skiff::controllers
