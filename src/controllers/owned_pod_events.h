#pragma once

// Event handling shared by the controllers that own pods through controller references and
// label selectors (ReplicaSet/ReplicationController, DaemonSet, StatefulSet), after upstream's
// addPod/updatePod/deletePod:
// - a pod added (or updated) with a controller reference wakes the owner that reference resolves
//   to (resolve_controller_ref), and a new pod counts as a creation the owner expected;
// - an orphan (added, relabelled or released) wakes every owner whose selector would adopt it;
// - a pod whose controller reference changed also wakes its previous owner;
// - a pod deleted, or first seen with a deletionTimestamp, counts as a deletion its owner
//   expected;
// - a pod that turns ready wakes its owner again minReadySeconds (+1 s) later, when
//   availability changes with no event of its own.
// The owning controller supplies its expectation bookkeeping as hooks. The owners' own events,
// and those of their ControllerRevisions, are routed here too.
//
// Thread-safety: immutable after construction. The handlers run on informer threads; they read
// the owners' informer and add to the work queue (both thread-safe) and call the hooks, which
// must be thread-safe too.

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "client/informer.h"
#include "client/workqueue.h"
#include "controllers/controller.h"

namespace skiff::controllers {

// spec.minReadySeconds when it is a JSON integer, else 0.
int64_t spec_min_ready_seconds(const Json& owner);

class OwnedPodEvents {
 public:
  struct Options {
    std::string kind;   // the owners' kind, as controller references name it
    std::string group;  // the owners' API group ("" for the core group)
    // A pod the owner (by key) controls was seen created.
    std::function<void(const std::string& owner_key)> creation_observed;
    // The pod (by key) the owner controls was seen deleted, or being deleted.
    std::function<void(const std::string& owner_key, const std::string& pod_key)> deletion_observed;
    // The owner (by key) was deleted: what was expected of it is moot.
    std::function<void(const std::string& owner_key)> forget;
    // The owner's spec.minReadySeconds.
    std::function<int64_t(const Json& owner)> min_ready_seconds = spec_min_ready_seconds;
    // How an update showing the pod being deleted is handled. true (upstream's ReplicaSet): as
    // the pod's deletion, for its owner and, when its labels changed, for the owner its old
    // labels and reference name; nothing else. false (DaemonSet, StatefulSet): the deletion is
    // observed for the pod's current owner, and the update is handled as any other.
    bool terminating_update_is_delete = false;
  };

  // `owners` and `queue` must outlive this object.
  OwnedPodEvents(const client::Informer& owners, client::WorkQueue& queue, Options options);

  // Handlers for the informers (they call this object, which must outlive the informers'
  // delivery of events): of the owners (every event wakes the owner; a deletion also forgets
  // it), of the pods (on_add, on_update, on_delete), and of the owners' ControllerRevisions
  // (enqueue_owners on every add, delete and change of resourceVersion).
  client::EventHandlers owner_handlers();
  client::EventHandlers pod_handlers();
  client::EventHandlers revision_handlers();

  void on_add(const ObjectPtr& pod);
  void on_update(const ObjectPtr& old_pod, const ObjectPtr& cur_pod);
  void on_delete(const ObjectPtr& pod);

  // The owner obj's controller reference resolves to; nullptr when none.
  ObjectPtr resolve_owner(const Json& obj) const;
  // The owners whose selector selects obj.
  std::vector<ObjectPtr> owners_selecting(const Json& obj) const;
  // Wakes obj's owner when obj has a controller reference (if it resolves), else every owner
  // that would adopt obj. For other objects the owners control, such as ControllerRevisions.
  void enqueue_owners(const Json& obj);

 private:
  void enqueue(const Json& owner);

  const client::Informer& owners_;
  client::WorkQueue& queue_;
  const Options options_;
};

}  // namespace skiff::controllers
