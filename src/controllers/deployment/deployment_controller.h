#pragma once

// The Deployment controller (kube-controller-manager's "deployment"): rolls a Deployment's pod
// template out through ReplicaSets. The ReplicaSet for the current template is named
// "<deployment>-<pod-template-hash>" and carries the pod-template-hash label in its selector,
// labels and template; it gets revision max(old revisions) + 1 (so a rollback to an old
// template reuses and re-numbers that template's ReplicaSet). RollingUpdate scales the new
// ReplicaSet up within maxSurge and the old ones down within maxUnavailable as pods become
// available; Recreate scales the old ones to zero, waits for their pods to go, then scales the
// new one up. A change of spec.replicas mid-rollout scales every active ReplicaSet
// proportionally. Paused Deployments scale but do not roll out. Status carries
// observedGeneration, replicas, updatedReplicas, readyReplicas, availableReplicas,
// unavailableReplicas, collisionCount and the Available / Progressing (/ ReplicaFailure)
// conditions, with progressDeadlineSeconds turning Progressing False
// (ProgressDeadlineExceeded). Old ReplicaSets scaled to zero beyond revisionHistoryLimit are
// deleted. ReplicaSets are adopted and released by selector with ownerReferences.
//
// Thread-safety: start()/stop() are called from one thread. Informer handlers only enqueue
// keys. reconcile() runs on the worker threads (never for one key on two threads at once);
// tests may call it directly while no workers run.
// The handlers stay registered with the shared informers (they cannot be removed), so the
// informers must be stopped before the controller is destroyed.

#include <memory>
#include <string>
#include <vector>

#include "controllers/controller.h"

namespace skiff::controllers {

class DeploymentController : public Controller {
 public:
  explicit DeploymentController(ControllerContext& ctx);
  ~DeploymentController() override;

  std::string_view name() const override { return "deployment"; }
  void start() override;
  void stop() override;

  // Syncs one Deployment ("namespace/name"); a non-OK result asks for a retry with back-off.
  Status reconcile(const std::string& key);

 private:
  struct Sync;  // the state of one reconcile
  using RsList = std::vector<ObjectPtr>;

  void enqueue(const Json& deployment);
  ObjectPtr resolve_deployment(const Json& rs) const;
  std::vector<ObjectPtr> deployments_matching(const Json& rs) const;
  void on_rs_add(const ObjectPtr& rs);
  void on_rs_update(const ObjectPtr& old_rs, const ObjectPtr& cur_rs);
  void on_rs_delete(const ObjectPtr& rs);
  void on_pod_delete(const ObjectPtr& pod);

  Result<RsList> claim_replica_sets(Sync& s);
  Status sync_status_only(Sync& s);
  Status sync(Sync& s);
  Status check_paused_conditions(Sync& s);
  Result<bool> is_scaling_event(Sync& s);
  Status rollout_rolling(Sync& s);
  Status rollout_recreate(Sync& s);

  // Finds (optionally creates) the new ReplicaSet and splits the rest into old ones, syncing
  // revisions. Sets s.new_rs and s.old_rss.
  Status get_all_replica_sets_and_sync_revision(Sync& s, bool create);
  Status get_new_replica_set(Sync& s, bool create);
  Result<bool> reconcile_new_replica_set(Sync& s);
  Result<bool> reconcile_old_replica_sets(Sync& s);
  Result<int> cleanup_unhealthy_replicas(Sync& s, RsList& old_rss, int max_cleanup);
  Result<int> scale_down_old_replica_sets_for_rolling_update(Sync& s, RsList& old_rss);
  Result<bool> scale_down_old_replica_sets_for_recreate(Sync& s);
  bool old_pods_running(const Sync& s) const;
  Status scale(Sync& s);
  // Scales `rs` (and refreshes its replica annotations); records ScalingReplicaSet when the
  // size changed. Replaces `rs` with the written object. Returns whether the size changed.
  Result<bool> scale_replica_set_and_record_event(Sync& s, ObjectPtr& rs, int new_scale);
  Result<bool> scale_replica_set(Sync& s, ObjectPtr& rs, int new_scale,
                                 const std::string& operation);
  Status cleanup_deployment(Sync& s);

  Json calculate_status(const Sync& s) const;
  Status sync_rollout_status(Sync& s);
  Status sync_deployment_status(Sync& s);
  void requeue_stuck_deployment(const Sync& s, const Json& new_status);
  // Writes s.d's status; keeps s.d's resourceVersion current.
  Status write_status(Sync& s);
  // Sets the Deployment's revision annotation (a metadata patch: the status subresource does
  // not carry metadata); true when it changed.
  Result<bool> set_deployment_revision(Sync& s, const std::string& revision);
  void record(const Json& deployment, std::string_view type, std::string_view reason,
              std::string message);
  std::string now() const;

  ControllerContext& ctx_;
  client::Informer& deployments_;
  client::Informer& replica_sets_;
  client::Informer& pods_;
  std::unique_ptr<client::EventRecorder> recorder_;
  client::WorkQueue queue_;
  QueueWorkers workers_;
};

std::unique_ptr<Controller> new_deployment_controller(ControllerContext& ctx);

}  // namespace skiff::controllers
