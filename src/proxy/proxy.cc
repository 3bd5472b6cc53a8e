#include "proxy/proxy.h"

#include <fstream>
#include <thread>

#include "base/log.h"
#include "base/process.h"
#include "client/http_client.h"
#include "proxy/iptables.h"
#include "proxy/nftables.h"
#include "proxy/proxier.h"

namespace skiff::proxy {
namespace {

// Writes a sysctl when it differs; a warning, not an error, when it cannot (the rules still
// serve what does not depend on it).
void ensure_sysctl(const std::string& path, const std::string& value, const char* why) {
  std::ifstream in(path);
  std::string current;
  if (in && std::getline(in, current) && current == value) return;
  std::ofstream out(path);
  out << value << "\n";
  out.close();
  if (!out) SKIFF_LOG_WARN("proxy: cannot set {} to {} ({})", path, value, why);
}

Result<std::unique_ptr<Backend>> make_backend(const std::string& mode, const ProxyConfig& config) {
  if (mode == "nftables") {
    return std::unique_ptr<Backend>(std::make_unique<NftablesBackend>(config, make_nftnl_runner()));
  }
  if (mode == "iptables") {
    return std::unique_ptr<Backend>(
        std::make_unique<IptablesBackend>(config, make_iptables_runner()));
  }
  return error(StatusCode::kInvalidArgument,
               "unknown proxy mode \"" + mode + "\" (want nftables or iptables)");
}

}  // namespace

Status run_proxy(const ProxyOptions& o, std::stop_token stop) {
  ProxyConfig config;
  config.cluster_cidr = o.cluster_cidr;
  SKIFF_ASSIGN_OR_RETURN(std::unique_ptr<Backend> backend, make_backend(o.mode, config));
  SKIFF_ASSIGN_OR_RETURN(auto api,
                         client::HttpApiClient::connect(
                             {o.kubeconfig, o.server, o.token, o.ca_file, o.data_dir}, "proxy"));
  ensure_sysctl("/proc/sys/net/ipv4/ip_forward", "1", "Services are forwarded");
  // Pods on one bridge talk at layer 2; their replies must pass the IP hooks to be un-NATed.
  ensure_sysctl("/proc/sys/net/bridge/bridge-nf-call-iptables", "1",
                "pod-to-Service traffic on one bridge needs br_netfilter");

  ProxierOptions po;
  po.node_name = o.hostname_override.empty() ? host_name() : o.hostname_override;
  po.min_sync_period = o.min_sync_period;
  po.sync_period = o.sync_period;
  const char* backend_name = backend->name();
  Proxier proxier(*api, std::move(backend), po, make_conntrack_runner());
  proxier.start();
  SKIFF_LOG_INFO("proxy: {} rules for node {}", backend_name, po.node_name);
  while (!stop.stop_requested()) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  proxier.stop();
  return Status::ok();
}

Status cleanup_proxy_rules(const std::string& mode) {
  if (mode != "nftables" && mode != "iptables" && mode != "all") {
    return error(StatusCode::kInvalidArgument,
                 "unknown proxy mode \"" + mode + "\" (want nftables, iptables or all)");
  }
  if (mode == "nftables" || mode == "all") {
    SKIFF_ASSIGN_OR_RETURN(std::unique_ptr<Backend> b, make_backend("nftables", ProxyConfig{}));
    SKIFF_RETURN_IF_ERROR(b->cleanup());
  }
  if (mode == "iptables" || mode == "all") {
    SKIFF_ASSIGN_OR_RETURN(std::unique_ptr<Backend> b, make_backend("iptables", ProxyConfig{}));
    Status s = b->cleanup();
    // A host without iptables has no iptables rules of ours either.
    if (!s.is_ok() && !(mode == "all" && s.code() == StatusCode::kNotFound)) return s;
  }
  return Status::ok();
}

}  // namespace skiff::proxy
