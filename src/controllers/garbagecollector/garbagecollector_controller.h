#pragma once

// The garbage collector (kube-controller-manager's "garbage-collector"): deletes objects whose
// owners are gone, and carries out foreground and orphan deletion, as upstream does.
//
// It keeps a graph of ownerReferences over the objects of the watched resources, fed by the
// shared informers (each node keeps only identity, owner references and deletion state). An
// owner known only from a dependent's reference is a "virtual" node until an informer shows it.
// - A dependent whose owners are all absent is deleted (propagationPolicy Background, or the
//   policy its own orphan/foregroundDeletion finalizer asks for). "Absent" is decided by a live
//   GET of the owner, never by the cache: not found, or found with another uid. A namespaced
//   owner is looked up in the dependent's namespace, so a reference across namespaces counts as
//   absent (and an OwnerRefInvalidNamespace event is recorded on the dependent when the owner is
//   seen in another namespace). A cluster-scoped dependent may only have cluster-scoped owners;
//   a reference to a namespaced kind is reported the same way and never collected.
// - An owner being deleted with the "foregroundDeletion" finalizer has its dependents deleted;
//   its finalizer is removed once no dependent with blockOwnerDeletion=true remains.
// - An owner being deleted with the "orphan" finalizer has its ownerReference removed from every
//   dependent, then the finalizer removed.
// - A dependent with a live owner drops its references to absent owners and to owners waiting
//   for their dependents' deletion.
//
// Thread-safety: as Controller (controller.h).

#include <memory>
#include <vector>

#include "client/api_client.h"
#include "controllers/controller.h"

namespace skiff::controllers {

// The resources whose objects take part in garbage collection: the workloads and what they
// own, plus nodes (owners of mirror pods and node leases). Events are never owners or
// dependents worth tracking.
std::vector<client::Resource> default_garbage_collected_resources();

struct GarbageCollectorOptions {
  std::vector<client::Resource> resources = default_garbage_collected_resources();
  // Owners verified absent, remembered so their other dependents need no second lookup.
  size_t absent_owner_cache_size = 500;
};

std::unique_ptr<Controller> new_garbagecollector_controller(ControllerContext& ctx);
std::unique_ptr<Controller> new_garbagecollector_controller(ControllerContext& ctx,
                                                            GarbageCollectorOptions options);

}  // namespace skiff::controllers
