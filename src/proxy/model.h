#pragma once

// What the proxy programs: the Services of the cluster reduced to their IPv4 service ports, each
// with the endpoints that traffic may go to. Built from Service and EndpointSlice objects
// (build_service_ports) and handed to a backend (nftables or iptables), which turns it into
// kernel rules.
//
// Thread-safety: plain values; no shared state.

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace skiff::proxy {

using Json = nlohmann::json;

struct Endpoint {
  std::string ip;
  int port = 0;
  bool ready = true;
  bool serving = true;
  bool terminating = false;
  bool local = false;  // on this node

  bool operator==(const Endpoint&) const = default;
};

// One port of one Service: everything a backend needs to write its rules.
struct ServicePort {
  std::string ns;
  std::string service;
  std::string port_name;   // may be empty for a single-port Service
  std::string protocol;    // "tcp", "udp" or "sctp" (lower case, as nftables spells them)
  std::string cluster_ip;  // "" when the Service has no IPv4 cluster IP (headless)
  int port = 0;
  int node_port = 0;                           // 0: none
  std::vector<std::string> external_ips;       // spec.externalIPs
  std::vector<std::string> load_balancer_ips;  // status.loadBalancer.ingress[].ip
  int affinity_timeout_seconds = 0;            // sessionAffinity ClientIP; 0: no affinity
  bool internal_local = false;                 // internalTrafficPolicy: Local
  bool external_local = false;                 // externalTrafficPolicy: Local
  std::vector<Endpoint> endpoints;             // every endpoint of the port, ordered by ip:port

  // "ns/service:port_name" (upstream's ServicePortName), plus the protocol.
  std::string id() const;
  bool has_external() const {
    return node_port != 0 || !external_ips.empty() || !load_balancer_ips.empty();
  }
  // Where traffic from inside the cluster goes: ready endpoints (only the local ones with
  // internalTrafficPolicy Local); when none is ready, the serving terminating ones, as upstream.
  std::vector<const Endpoint*> cluster_endpoints() const;
  // Where traffic from outside goes under externalTrafficPolicy Local: the local subset.
  std::vector<const Endpoint*> local_endpoints() const;

  bool operator==(const ServicePort&) const = default;
};

// The service ports of one Service given its EndpointSlices (the slices labelled
// kubernetes.io/service-name with its name, in its namespace). ExternalName Services, headless
// Services and IPv6-only Services give none. `node_name` decides which endpoints are local.
std::vector<ServicePort> build_service_ports(const Json& service,
                                             const std::vector<const Json*>& slices,
                                             const std::string& node_name);

// The whole desired state: Service key ("ns/name") → its ports.
using ProxyState = std::map<std::string, std::vector<ServicePort>>;

// The node-level settings both backends share.
struct ProxyConfig {
  std::string cluster_cidr =
      "10.42.0.0/16";  // traffic from outside it to a ClusterIP is masqueraded
  uint32_t masquerade_mark = 0x4000;
};

// A short stable hash of a name, for kernel object names that must stay unique when truncated.
std::string short_hash(const std::string& s);

}  // namespace skiff::proxy
