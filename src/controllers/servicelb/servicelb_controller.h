#pragma once

// The built-in service load balancer (the role of k3s' servicelb; no cloud involved): every
// Service of type LoadBalancer without a spec.loadBalancerClass gets status.loadBalancer.ingress
// set to the addresses of the cluster's Ready nodes, as k3s reports them: the nodes' ExternalIP
// addresses when any node has one, else their InternalIP addresses, of the Service's IP
// families, sorted. When some node carries the label svccontroller.k3s.cattle.io/enablelb=true,
// only such nodes serve. The ingress follows nodes as they come, go and change readiness, and is
// cleared when the Service stops being of type LoadBalancer. Traffic itself reaches the nodes'
// node ports through the service proxy.
//
// Thread-safety: see Controller (controller.h).

#include <memory>
#include <string>
#include <vector>

#include "controllers/controller.h"

namespace skiff::controllers {

std::unique_ptr<Controller> new_servicelb_controller(ControllerContext& ctx);

namespace servicelb {

// The ingress addresses for `service` given every node (pure; the controller's core).
std::vector<std::string> ingress_addresses(const Json& service,
                                           const std::vector<ObjectPtr>& nodes);

}  // namespace servicelb
}  // namespace skiff::controllers
