#pragma once

// The nftables backend: one table (`ip skiff-proxy`) in which
//   - verdict maps send a packet to its Service in one lookup, whatever the number of Services:
//     service-ips (cluster, external and load-balancer IP . protocol . port) and
//     service-nodeports (protocol . node port on any local address but 127/8);
//   - a chain per service port picks an endpoint at random (`numgen random`: a rule per endpoint
//     up to 16, a verdict map above), after the session affinity sets; a chain per endpoint
//     marks hairpin traffic for masquerade and DNATs;
//   - an external chain per service port handles NodePort, externalIPs and load-balancer
//     traffic (masquerade, or externalTrafficPolicy Local);
//   - no-endpoint maps reject (or, for externalTrafficPolicy Local without local endpoints,
//     drop) new connections to Services without endpoints, in the filter hooks;
//   - marked packets are masqueraded on the way out.
// A sync rewrites only the chains and map elements of the Services that changed, in one
// transaction; a full sync replaces the table atomically, which leaves established connections
// alone (conntrack keeps their translation).
//
// Thread-safety: not synchronized; one thread at a time (see Backend).

#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "proxy/backend.h"

namespace skiff::proxy {

inline constexpr const char* kNftTable = "skiff-proxy";

// The kernel objects of one Service, as nftables statements (without the table prefix).
struct NftObjects {
  std::map<std::string, std::vector<std::string>> chains;  // chain → rules
  std::map<std::string, std::string> sets;                 // set → its declaration
  std::set<std::pair<std::string, std::string>> elements;  // (map, "key : verdict")

  bool operator==(const NftObjects&) const = default;
};

// The objects for the ports of one Service.
NftObjects render_service(const std::vector<ServicePort>& ports, const ProxyConfig& config);

// The script that turns `before` into `after` (either may be empty), in an order the kernel
// accepts in one transaction: new sets and chains, rewritten chains, map elements, then the
// chains and sets no longer used.
std::string diff_script(const NftObjects& before, const NftObjects& after);

// The table with its base chains, maps and fixed chains.
std::string base_script(const ProxyConfig& config);

class NftablesBackend : public Backend {
 public:
  NftablesBackend(ProxyConfig config, std::unique_ptr<NftRunner> runner);
  const char* name() const override { return "nftables"; }
  Status sync(const ProxyState& state, const std::set<std::string>& changed, bool full) override;
  Status cleanup() override;

  // The length of the last script applied, for benchmarks and tests.
  size_t last_script_size() const { return last_script_size_; }

 private:
  const ProxyConfig config_;
  std::unique_ptr<NftRunner> runner_;
  std::map<std::string, NftObjects> applied_;  // Service key → what the kernel has
  size_t last_script_size_ = 0;
};

}  // namespace skiff::proxy
