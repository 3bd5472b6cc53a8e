#pragma once

// The proxy as a component: `skiff proxy`, and the proxy inside `skiff agent` and `skiff server`.
// run_proxy() connects to the API server, picks the backend, makes sure the node forwards
// packets (and that bridged pod traffic passes the IP hooks), and keeps the node's Service rules
// in step until stopped. Stopping leaves the rules in place (live connections keep working, and
// a restarted proxy takes them over); cleanup_proxy_rules() removes them.
//
// Thread-safety: run_proxy() blocks the calling thread until `stop` is requested.

#include <chrono>
#include <stop_token>
#include <string>

#include "base/status.h"

namespace skiff::proxy {

struct ProxyOptions {
  // The API server: a kubeconfig, or a server URL with a bearer token (as the kubelet).
  std::string kubeconfig;
  std::string server;
  std::string token;
  std::string ca_file;
  std::string data_dir = "/var/lib/skiff";

  std::string hostname_override;  // the node name (default: the host name)
  std::string mode = "nftables";  // or "iptables"
  std::string cluster_cidr = "10.42.0.0/16";
  std::chrono::milliseconds min_sync_period{20};
  std::chrono::milliseconds sync_period{30000};
};

Status run_proxy(const ProxyOptions& options, std::stop_token stop);

// Removes every rule the proxy wrote in `mode` ("nftables", "iptables" or "all").
Status cleanup_proxy_rules(const std::string& mode);

}  // namespace skiff::proxy
