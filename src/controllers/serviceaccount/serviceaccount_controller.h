#pragma once

// The service account controller (kube-controller-manager's "serviceaccount"): makes sure the
// ServiceAccount "default" exists in every active namespace, creating it again when it is
// deleted. Namespaces being deleted are left alone.
//
// Thread-safety: as Controller (controller.h).

#include <memory>

#include "controllers/controller.h"

namespace skiff::controllers {

inline constexpr std::string_view kDefaultServiceAccountName = "default";

std::unique_ptr<Controller> new_serviceaccount_controller(ControllerContext& ctx);

}  // namespace skiff::controllers
