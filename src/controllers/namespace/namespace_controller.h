#pragma once

// The namespace controller (kube-controller-manager's "namespace"): empties namespaces that are
// being deleted. For a namespace with a deletionTimestamp it deletes every object of every
// namespaced resource the API serves (list, then delete each with propagationPolicy Background),
// waits for pods to finish their grace periods and for finalizers on the remaining objects,
// reports progress in the namespace's conditions (NamespaceDeletionDiscoveryFailure,
// NamespaceDeletionGroupVersionParsingFailure, NamespaceDeletionContentFailure,
// NamespaceContentRemaining, NamespaceFinalizersRemaining), and once nothing is left removes the
// "kubernetes" finalizer from spec.finalizers through the finalize subresource, after which the
// API server deletes the namespace.
//
// Thread-safety: as Controller (controller.h).

#include <memory>
#include <vector>

#include "client/api_client.h"
#include "controllers/controller.h"

namespace skiff::controllers {

// The finalizer this controller owns in a namespace's spec.finalizers.
inline constexpr std::string_view kNamespaceFinalizer = "kubernetes";

// The namespaced resources emptied from a terminating namespace: every namespaced resource of
// the API schema the API server serves (its discovery documents come from the same schema)
// that supports list and delete.
std::vector<client::Resource> namespaced_resources_to_delete();

std::unique_ptr<Controller> new_namespace_controller(ControllerContext& ctx);

}  // namespace skiff::controllers
