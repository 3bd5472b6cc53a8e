#pragma once

// The StatefulSet controller (kube-controller-manager's "statefulset"), with upstream's
// semantics:
// - pods "<set>-<ordinal>" for ordinals spec.ordinals.start .. start+replicas-1, with stable
//   identity (statefulset.kubernetes.io/pod-name and apps.kubernetes.io/pod-index labels,
//   hostname, subdomain = spec.serviceName) and, for each volumeClaimTemplate, a claim
//   "<template>-<set>-<ordinal>" created before the pod and mounted in it;
// - OrderedReady: one pod at a time in ordinal order, each Running and Ready (and available for
//   minReadySeconds) before the next; scale-down from the highest ordinal, one at a time, after
//   the previous pod has terminated; nothing proceeds past an unhealthy pod. Parallel: all at
//   once;
// - failed (or succeeded) pods are deleted and created again on a later sync;
// - revisions in ControllerRevisions (controller_history.h); RollingUpdate replaces pods from the
//   highest ordinal down to spec.updateStrategy.rollingUpdate.partition, one at a time, waiting
//   for each to be healthy; OnDelete leaves replacement to whoever deletes pods;
// - status replicas, readyReplicas, currentReplicas, updatedReplicas, availableReplicas,
//   currentRevision, updateRevision, observedGeneration, collisionCount, as `kubectl rollout
//   status statefulset` reads them;
// - events SuccessfulCreate "create Pod P in StatefulSet S successful", SuccessfulDelete
//   "delete Pod P in StatefulSet S successful", FailedCreate/FailedDelete/SuccessfulUpdate and
//   the claim events.
// When the API does not serve persistentvolumeclaims (creating one answers NotFound), the pod
// that needs them is not created: a FailedCreate event says that its claims cannot be made, and
// the set is retried with back-off.
//
// Thread-safety: start()/stop() from one thread; informer handlers only enqueue keys and observe
// expectations; reconcile() runs on worker threads, never for one key on two threads at once
// (tests may call it directly while no workers run).

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "controllers/controller.h"
#include "controllers/owned_pod_events.h"
#include "controllers/statefulset/pod_expectations.h"

namespace skiff::controllers {

class StatefulSetController : public Controller {
 public:
  explicit StatefulSetController(ControllerContext& ctx);
  ~StatefulSetController() override;

  std::string_view name() const override { return "statefulset"; }
  void start() override;
  void stop() override;

  // Syncs one StatefulSet ("namespace/name"); a non-OK result asks for a retry with back-off.
  Status reconcile(const std::string& key);

 private:
  // One slot of the ordinal range: a pod from the cache, or one still to be created.
  struct Replica {
    Json pod;
    bool created = false;
  };
  struct Counts {
    int64_t replicas = 0;
    int64_t ready = 0;
    int64_t available = 0;
    int64_t current = 0;
    int64_t updated = 0;
  };
  // What one sync works with.
  struct Sync {
    std::string key;
    Json set;          // the StatefulSet with defaults applied
    Json current_set;  // the set at its current revision's template
    Json update_set;   // the set at its update revision's template
    std::string current_revision;
    std::string update_revision;
    int64_t collision_count = 0;
    bool monotonic = true;
    int64_t min_ready_seconds = 0;
    int64_t now = 0;
    Counts counts;
  };
  struct Step {
    bool exit = false;
    Status error;
  };

  // The set's revisions (adopting orphans), sorted oldest first.
  Result<std::vector<ObjectPtr>> claim_revisions(const Json& set);
  // Finds or makes the update revision; fills in sync's revisions, their sets and the
  // collision count.
  Status resolve_revisions(Sync& sync, std::vector<ObjectPtr>& revisions);
  Status update_pods(Sync& sync, const std::vector<ObjectPtr>& pods);
  Step process_replica(Sync& sync, std::vector<Replica>& replicas, size_t i);
  Step process_condemned(Sync& sync, std::vector<Replica>& condemned, size_t i,
                         const Json* first_unavailable);
  Step run_for_all(Sync& sync, size_t n, const std::function<Step(size_t)>& fn);
  // Counts the created pods among `pods`.
  Counts count(const Sync& sync, const std::vector<const Json*>& pods) const;
  Status write_status(const Json& cached, const Sync& sync);
  Status truncate_history(const Json& set, const std::vector<ObjectPtr>& pods,
                          const std::vector<ObjectPtr>& revisions, const std::string& current,
                          const std::string& update);

  Json new_replica(const Sync& sync, int ordinal) const;
  Status create_pod(const Sync& sync, const Json& pod);
  Status delete_pod(const Sync& sync, const Json& pod);
  Status update_pod(const Sync& sync, Json pod);
  // Creates the pod's missing claims; an error says which could not be made.
  Status create_claims(const Sync& sync, const Json& pod);
  void record(const Json& set, std::string_view type, std::string_view reason, std::string message);

  ControllerContext& ctx_;
  client::Informer& sets_;
  client::Informer& pods_;
  client::Informer& revisions_;
  PodExpectations expectations_;
  std::unique_ptr<client::EventRecorder> recorder_;
  client::WorkQueue queue_;
  QueueWorkers workers_;
  OwnedPodEvents pod_events_;  // events of sets, their pods and revisions → keys
};

std::unique_ptr<Controller> new_statefulset_controller(ControllerContext& ctx);

}  // namespace skiff::controllers
