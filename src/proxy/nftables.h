#pragma once

// The nftables backend: one table (`ip skiff-proxy`) in which
//   - verdict maps send a packet to its Service in one lookup, whatever the number of Services:
//     service-ips (cluster, external and load-balancer IP . protocol . port) and
//     service-nodeports (protocol . node port on any local address but 127/8);
//   - most service ports have no chain of their own: their map element leads to a chain shared
//     by every port with the same number n of endpoints (pick-n), which DNATs to the endpoint
//     found in the `endpoints` map under (address . protocol . port . numgen random mod n)
//     (`nodeport-endpoints` for node ports, keyed without the address). An endpoint change
//     rewrites map elements only: the kernel then has no chain graph to validate, so its work
//     does not grow with the number of Services;
//   - ports with session affinity or externalTrafficPolicy Local keep a chain per port that
//     picks an endpoint at random (`numgen random`: a rule per endpoint up to 16, a verdict map
//     above) after the affinity sets, a chain per endpoint that records affinity and DNATs, and
//     an external chain for NodePort, externalIPs and load-balancer traffic;
//   - no-endpoint maps reject (or, for externalTrafficPolicy Local without local endpoints,
//     drop) new connections to Services without endpoints, in the filter hooks;
//   - off-cluster clients of a cluster IP (the cluster-ips set), external traffic, and a pod
//     reaching itself through its Service (the hairpin set of endpoint . endpoint pairs) are
//     marked and masqueraded on the way out.
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
  // Objects other Services may need too, counted by the backend: in the kernel while any
  // Service needs them.
  std::map<std::string, std::vector<std::string>> shared_chains;  // chain → rules
  std::set<std::pair<std::string, std::string>> shared_elements;  // (set, key)

  bool operator==(const NftObjects&) const = default;
};

// The objects for the ports of one Service.
NftObjects render_service(const std::vector<ServicePort>& ports, const ProxyConfig& config);

// The script that turns `before` into `after` (either may be empty), in an order the kernel
// accepts in one transaction: new sets and chains, rewritten chains, map elements, then the
// chains and sets no longer used. Shared objects are left to the caller.
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
  // Adds the shared objects of `objects` to the counts; returns the script for those new.
  std::string retain_shared(const NftObjects& objects);
  // Takes them off the counts; returns the script for those no Service needs any more.
  std::string release_shared(const NftObjects& objects, std::string& chains_script);

  std::map<std::string, NftObjects> applied_;  // Service key → what the kernel has
  std::map<std::string, int> chain_refs_;      // shared chain → Services using it
  std::map<std::pair<std::string, std::string>, int> element_refs_;  // shared element → users
  // The count changes of the sync under way, undone if the kernel refuses it.
  struct CountChange {
    std::string chain;
    std::pair<std::string, std::string> element;
    int delta;
  };
  std::vector<CountChange> journal_;
  void undo_journal();
  size_t last_script_size_ = 0;
};

}  // namespace skiff::proxy
