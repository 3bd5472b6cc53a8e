#pragma once

// The Endpoints controller (upstream's endpoint controller): for every Service with a selector it
// keeps a core/v1 Endpoints object of the same name listing the Service's pods: ready pods in
// subsets[].addresses, pods not ready (and not terminating) in notReadyAddresses (all of them in
// addresses when the Service publishes not-ready addresses), with the ports each pod resolves the
// Service's ports to, packed into subsets as upstream does (pods offering the same ports share a
// subset; addresses sorted). Headless Services get the service.kubernetes.io/headless label; more
// than 1000 addresses are truncated and annotated endpoints.kubernetes.io/over-capacity=truncated.
// Services without a selector are left alone (their Endpoints belong to the user); the Endpoints
// of a deleted Service are deleted. Writes happen only when something changed.
//
// Thread-safety: see Controller (controller.h). The pure packing helpers below are thread-safe.

#include <memory>
#include <vector>

#include "controllers/controller.h"

namespace skiff::controllers {

std::unique_ptr<Controller> new_endpoints_controller(ControllerContext& ctx);

namespace endpoints {

inline constexpr size_t kMaxCapacity = 1000;

// One pod's entry for one port (or no port: headless Services without ports), before packing.
struct SubsetEntry {
  Json address;  // EndpointAddress
  bool ready = true;
  Json port;  // EndpointPort, or null
};

// Upstream's RepackSubsets: groups addresses by the exact set of ports they offer (an address
// ready on any entry counts as ready), one subset per group, addresses sorted by IP then
// targetRef uid, ports sorted, subsets in a stable order.
Json repack_subsets(const std::vector<SubsetEntry>& entries);

// Upstream's truncateEndpoints: when the subsets hold more than kMaxCapacity addresses, keeps
// kMaxCapacity, ready ones first, spread over the subsets in proportion. Returns true when it
// truncated.
bool truncate_subsets(Json& subsets);

}  // namespace endpoints
}  // namespace skiff::controllers
