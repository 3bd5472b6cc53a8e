#pragma once

// The EndpointSlice controller (upstream's endpointslice controller): for every Service with a
// selector it keeps discovery.k8s.io/v1 EndpointSlices listing the Service's pods, one endpoint
// per pod (addresses of the Service's IP family, conditions ready/serving/terminating, nodeName,
// zone from the node's topology.kubernetes.io/zone label, targetRef, hostname for headless
// subdomains), grouped by the ports each pod resolves the Service's ports to, at most
// kMaxEndpointsPerSlice endpoints a slice. Slices are labelled kubernetes.io/service-name and
// endpointslice.kubernetes.io/managed-by=endpointslice-controller.k8s.io (plus the Service's own
// labels and service.kubernetes.io/headless), owned by the Service (the garbage collector removes
// them with it), and named "<service>-<random>". Changes are made in place with upstream's
// minimal-churn algorithm: changed endpoints are updated where they are, new ones fill slices
// being written anyway before an untouched slice or a new one is used, and a Service without
// endpoints keeps one empty placeholder slice.
//
// Thread-safety: see Controller (controller.h).

#include <memory>

#include "controllers/controller.h"

namespace skiff::controllers {

inline constexpr const char* kEndpointSliceControllerName = "endpointslice-controller.k8s.io";

// Upstream's default --max-endpoints-per-slice.
inline constexpr size_t kMaxEndpointsPerSlice = 100;

std::unique_ptr<Controller> new_endpointslice_controller(ControllerContext& ctx);

}  // namespace skiff::controllers
