#pragma once

// The controller manager: runs the enabled controllers against one API server, sharing one set
// of informers, behind a leader election Lease (kube-system/kube-controller-manager) so that of
// several replicas only one acts; a replica that loses the lease stops its controllers and
// campaigns again.
//
// Thread-safety: run() blocks on the calling thread until `stop` is requested.

#include <chrono>
#include <stop_token>
#include <string>
#include <vector>

#include "base/status.h"
#include "controllers/controller.h"
#include "controllers/nodeipam/nodeipam_controller.h"

namespace skiff::controllers {

struct ControllerManagerOptions {
  std::string kubeconfig;
  // Names of the controllers to run; "*" = every controller on by default, "-name" disables
  // one, "name" enables one (as kube-controller-manager's --controllers).
  std::vector<std::string> controllers = {"*"};
  bool leader_elect = true;
  std::string leader_elect_namespace = "kube-system";
  std::string leader_elect_name = "kube-controller-manager";
  std::chrono::milliseconds lease_duration{15000};
  std::chrono::milliseconds renew_deadline{10000};
  std::chrono::milliseconds retry_period{2000};
  ControllerOptions controller;
  bool allocate_node_cidrs = true;
  NodeIpamOptions node_ipam;
  // The cluster CA (PEM file) published as kube-root-ca.crt in every namespace; "" = none.
  std::string root_ca_file;
};

// Every controller name, in start order.
std::vector<std::string> known_controllers();
// The controllers `options` enables; kInvalidArgument for an unknown name.
Result<std::vector<std::string>> enabled_controllers(const ControllerManagerOptions& options);

// Runs until `stop` is requested. Errors: a bad kubeconfig or option.
Status run_controller_manager(const ControllerManagerOptions& options, std::stop_token stop);

}  // namespace skiff::controllers
