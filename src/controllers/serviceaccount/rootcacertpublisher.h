#pragma once

// The root CA publisher (kube-controller-manager's "root-ca-cert-publisher"): keeps a ConfigMap
// "kube-root-ca.crt" in every active namespace whose data is exactly {"ca.crt": <the cluster CA
// bundle>} and that carries the kubernetes.io/description annotation, so pods can verify the
// API server. It is created when missing, recreated when deleted and restored when edited.
//
// Thread-safety: as Controller (controller.h).

#include <memory>
#include <string>

#include "controllers/controller.h"

namespace skiff::controllers {

inline constexpr std::string_view kRootCaConfigMapName = "kube-root-ca.crt";

// `ca_pem` is the CA bundle (PEM) clients use to verify the API server's certificate.
std::unique_ptr<Controller> new_rootcacertpublisher_controller(ControllerContext& ctx,
                                                               std::string ca_pem);

}  // namespace skiff::controllers
