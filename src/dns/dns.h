#pragma once

// Cluster DNS as a component: `skiff dns`, and the DNS server inside `skiff server`. run_dns()
// builds an API client from the kubeconfig, watches Services and EndpointSlices in every
// namespace, serves DNS for the cluster domain on UDP and TCP (forwarding other names to the
// upstream resolvers of a resolv.conf), and keeps the Service kube-system/kube-dns (cluster IP
// `service_ip`, ports dns 53/UDP and dns-tcp 53/TCP targeting the port DNS listens on, no
// selector) with its Endpoints and an EndpointSlice pointing at `advertise_address`, so pods
// reach the server through the Service's cluster IP as with kube-dns/CoreDNS upstream.
//
// Thread-safety: run_dns() blocks the calling thread until `stop` is requested.

#include <chrono>
#include <functional>
#include <nlohmann/json.hpp>
#include <stop_token>
#include <string>
#include <vector>

#include "base/status.h"
#include "client/api_client.h"
#include "client/informer.h"
#include "dns/records.h"

namespace skiff::dns {

struct DnsOptions {
  std::string kubeconfig;
  std::string bind_address = "0.0.0.0";
  int port = 53;  // 0 = any free port
  std::string cluster_domain = "cluster.local";
  // Upstream resolvers ("ip", "ip:port", "[ipv6]:port"); empty: the nameservers of resolv_conf.
  std::vector<std::string> upstreams;
  std::string resolv_conf = "/etc/resolv.conf";
  std::chrono::milliseconds upstream_timeout{2000};
  // The kube-dns Service's cluster IP (what kubelets write into pods' resolv.conf).
  std::string service_ip = "10.43.0.10";
  // The address the kube-dns endpoints point at (the node IP). Default: bind_address, or the
  // host's first non-loopback IPv4 address when bind_address is 0.0.0.0 or ::.
  std::string advertise_address;
  // Reverse names of addresses in these ranges are answered here (NXDOMAIN when unknown).
  std::vector<std::string> service_cidrs = {"10.43.0.0/16"};
  std::vector<std::string> pod_cidrs = {"10.42.0.0/16"};
  // Keep kube-system/kube-dns, its Endpoints and EndpointSlice in place.
  bool manage_service = true;
  // How often the kube-dns objects are checked even without a change announcing it.
  std::chrono::milliseconds resync_period{30000};
  int threads = 0;  // DNS worker threads; 0 = one per core, at least 2
};

// The managed-by value of the kube-dns EndpointSlice (the EndpointSlice controller leaves
// slices of Services without a selector alone).
inline constexpr const char* kDnsEndpointSliceManager = "skiff-dns";
inline constexpr const char* kDnsServiceNamespace = "kube-system";
inline constexpr const char* kDnsServiceName = "kube-dns";

// The tenth address of an IPv4 Service range (10.43.0.10 for 10.43.0.0/16), where installers
// put the cluster DNS Service, as upstream's do. kInvalidArgument for anything that is not an
// IPv4 CIDR with room for it.
Result<std::string> cluster_dns_ip(const std::string& service_cidr);

Status run_dns(const DnsOptions& options, std::stop_token stop);

// run_dns() against a given API client; `on_serving` is called with the bound port once DNS
// answers.
Status run_dns(client::ApiClient& api, const DnsOptions& options, std::stop_token stop,
               const std::function<void(int port)>& on_serving = {});

// Feeds `records` from the informers' events; call before the informers start.
void connect_informers(ClusterRecords& records, client::Informer& services,
                       client::Informer& slices);

}  // namespace skiff::dns
