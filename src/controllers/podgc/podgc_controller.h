#pragma once

// The pod garbage collector (upstream's PodGC): every pod_gc_period it
//   - deletes the oldest terminated pods (Succeeded or Failed) beyond
//     terminated_pod_gc_threshold (0 disables this);
//   - deletes pods bound to a node that no longer exists, once the node has stayed absent for
//     the quarantine time and a fresh read from the API server confirms it: a pod not yet
//     terminal is first marked Failed with a DisruptionTarget condition (reason
//     DeletionByPodGC), as upstream does;
//   - deletes terminating pods that were never scheduled (nothing else would finish them).
// Deletions are forced (grace period 0) with a uid precondition, so a new pod of the same name
// is never deleted by mistake.
//
// Thread-safety: as every Controller (controller.h).

#include <memory>

#include "controllers/controller.h"

namespace skiff::controllers {

std::unique_ptr<Controller> new_podgc_controller(ControllerContext& ctx);

}  // namespace skiff::controllers
