#pragma once

// The Kubernetes API server: HTTPS, authentication, discovery, and every resource's REST API
// over the store.
//
// Thread-safety: start() and stop() from one thread; serving happens on the server's threads.

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "base/status.h"
#include "storage/open.h"

namespace skiff::apiserver {

struct ApiServerOptions {
  std::string data_dir = "/var/lib/skiff";
  std::string bind_address = "0.0.0.0";
  // The address the `kubernetes` Service's endpoints name; "" means the bind address, or the
  // host's first non-loopback IPv4 address when binding to all of them.
  std::string advertise_address;
  int https_port = 6443;  // 0 picks a free port
  std::vector<std::string> tls_sans;
  std::string token_auth_file;
  std::string service_cidr = "10.43.0.0/16";
  // The store; an empty data_dir here means <data_dir>/db for the embedded backend.
  storage::StoreConfig store;
  // PEM file of the CA kubelets' serving certificates are verified against when the API server
  // calls them (pods/log); "" skips the verification (upstream's
  // --kubelet-certificate-authority, unset by default).
  std::string kubelet_certificate_authority;
  int worker_threads = 32;
  int64_t event_ttl_seconds = 3600;
  // How long new pods tolerate a not-ready / unreachable node (upstream's DefaultTolerationSeconds
  // admission); after that the node lifecycle controller evicts them.
  int64_t default_not_ready_toleration_seconds = 300;
  int64_t default_unreachable_toleration_seconds = 300;
};

class ApiServer {
 public:
  // Opens the store, prepares certificates and the admin kubeconfig, creates the bootstrap
  // objects and starts serving.
  static Result<std::unique_ptr<ApiServer>> start(ApiServerOptions options);
  ~ApiServer();

  int port() const;
  // Where the `kubernetes` Service's endpoints point (--advertise-address, defaulted).
  std::string advertise_address() const;
  // <data_dir>/admin.kubeconfig
  const std::string& admin_kubeconfig() const;
  void stop();

  struct Impl;

 private:
  explicit ApiServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace skiff::apiserver
