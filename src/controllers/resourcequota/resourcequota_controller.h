#pragma once

// The resource quota controller (kube-controller-manager's "resourcequota"): keeps each
// ResourceQuota's status current. status.hard mirrors spec.hard; status.used holds, for every
// resource spec.hard names, what the namespace's objects use (api/quota.h says how each is
// counted), in canonical quantity form. Usage is recalculated when objects that count change
// (pods, services, persistent volume claims, and the objects of the common workload and
// configuration resources, watched through the shared informers; other resources are listed
// live), when a quota's spec changes, and for every quota each resource_quota_sync_period. The
// status is written only when it changed. Enforcement at admission is the API server's.
//
// Thread-safety: as Controller (controller.h).

#include <memory>
#include <vector>

#include "client/api_client.h"
#include "controllers/controller.h"

namespace skiff::controllers {

// The resources whose changes trigger recalculation (served from informer caches).
std::vector<client::Resource> quota_monitored_resources();

std::unique_ptr<Controller> new_resourcequota_controller(ControllerContext& ctx);

}  // namespace skiff::controllers
