#pragma once

// The iptables backend, for kernels without nf_tables (or hosts that keep to iptables). The same
// behaviour as the nftables backend, in chains after upstream kube-proxy's iptables mode:
//
//   nat PREROUTING, OUTPUT ─▶ SKIFF-SERVICES: one rule per cluster, external and load-balancer
//       IP . protocol . port, then (last) local addresses but 127/8 ─▶ SKIFF-NODEPORTS
//     SKIFF-SVC-<hash>   a service port: masquerade mark for sources outside the cluster CIDR,
//                        session affinity (`recent` lists), a random pick (`statistic`)
//     SKIFF-SEP-<hash>   an endpoint: hairpin masquerade mark, affinity `--set`, DNAT
//     SKIFF-EXT-<hash>   NodePort / external / load-balancer traffic: masquerade and on to the
//                        SVC chain, or with externalTrafficPolicy Local: pods and the node itself
//                        to the SVC chain, everyone else to this node's endpoints only
//     SKIFF-MARK-MASQ    sets the masquerade mark
//   nat POSTROUTING ─▶ SKIFF-POSTROUTING: masquerades marked packets
//   filter INPUT, FORWARD, OUTPUT (new connections) ─▶ SKIFF-SERVICES: REJECT (DROP for
//       externalTrafficPolicy Local without local endpoints) for Services without endpoints,
//       then local addresses but 127/8 ─▶ SKIFF-NODEPORTS (the same for node ports)
//
// iptables has no verdict maps, so SKIFF-SERVICES is a list walked rule by rule. A sync rewrites
// (with `iptables-restore --noflush`) only the chains whose rules changed: the chains of the
// changed Services, and the shared chains (SKIFF-SERVICES, SKIFF-NODEPORTS, the filter chains)
// whole when their content changed. A full sync reads the current rules (`iptables-save`),
// rewrites every chain and deletes SKIFF- chains nothing needs any more, so it also picks up
// after a restart. The jump rules from the built-in chains are inserted only when missing.
//
// Thread-safety: not synchronized; one thread at a time (see Backend). The runner is safe to
// use from any thread.

#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "proxy/backend.h"

namespace skiff::proxy {

// Runs iptables-restore and iptables-save. An interface so tests can record the input instead
// of touching the kernel.
class IptablesRunner {
 public:
  virtual ~IptablesRunner() = default;
  // Applies `table_input` (iptables-save format, any number of *table ... COMMIT sections)
  // with `iptables-restore --noflush`: each table commits atomically, one after the other.
  virtual Status restore(const std::string& table_input) = 0;
  // `iptables-save -t <table>`.
  virtual Result<std::string> save(const std::string& table) = 0;
};

// The real runner: `<command>-restore` and `<command>-save` from PATH, where `command` is
// "iptables" (the system's choice), "iptables-nft" or "iptables-legacy".
std::unique_ptr<IptablesRunner> make_iptables_runner(const std::string& command = "iptables");

// The rules of one table that skiff owns: its SKIFF- chains, and the jumps into them from the
// built-in chains.
struct IptablesTable {
  // chain → its rules, each as written after `-A <chain> `.
  std::map<std::string, std::vector<std::string>> chains;
  // (built-in chain, SKIFF- target) → the rule as written after `-A ` ("PREROUTING -j ...").
  std::map<std::pair<std::string, std::string>, std::string> jumps;

  bool operator==(const IptablesTable&) const = default;
};

// What one Service adds: its own nat chains, and its rules in the shared chains.
struct IptablesService {
  std::map<std::string, std::vector<std::string>> chains;  // SKIFF-SVC/SEP/EXT-* (nat)
  std::vector<std::string> services;                       // in nat SKIFF-SERVICES
  std::vector<std::string> nodeports;                      // in nat SKIFF-NODEPORTS
  std::vector<std::string> filter_services;                // in filter SKIFF-SERVICES
  std::vector<std::string> filter_nodeports;               // in filter SKIFF-NODEPORTS

  bool operator==(const IptablesService&) const = default;
};

// The rules for the ports of one Service.
IptablesService render_iptables_service(const std::vector<ServicePort>& ports,
                                        const ProxyConfig& config);

// The SKIFF- chains and jumps in `iptables-save` output of one table.
IptablesTable parse_iptables_save(const std::string& save_output);

// The `*table ... COMMIT` section that turns `before` into `after`: chains declared (created, or
// flushed when they exist) and refilled when new, changed or `rewrite_all`; jumps deleted and
// inserted; chains no longer wanted flushed first and deleted last, after every rule that
// referred to them is gone. "" when there is nothing to do.
std::string iptables_table_section(const std::string& table, const IptablesTable& before,
                                   const IptablesTable& after, bool rewrite_all);

class IptablesBackend : public Backend {
 public:
  IptablesBackend(ProxyConfig config, std::unique_ptr<IptablesRunner> runner);
  const char* name() const override { return "iptables"; }
  Status sync(const ProxyState& state, const std::set<std::string>& changed, bool full) override;
  // Deletes the jump rules, then flushes and deletes every SKIFF- chain in nat and filter (as
  // iptables-save shows them, so also what an earlier process left).
  Status cleanup() override;

  // The length of the last input applied, for benchmarks and tests.
  size_t last_input_size() const { return last_input_size_; }

 private:
  Status full_sync(const ProxyState& state);
  Status incremental_sync(const ProxyState& state, const std::set<std::string>& changed);
  // Applies the filter section, then the nat section; see the .cc for what happens when nat fails.
  Status apply(const std::string& filter_input, const std::string& filter_rollback,
               const std::string& nat_input);
  // The shared chains of both tables for `services`.
  IptablesTable shared_nat(const std::map<std::string, IptablesService>& services) const;
  IptablesTable filter_table(const std::map<std::string, IptablesService>& services) const;

  const ProxyConfig config_;
  std::unique_ptr<IptablesRunner> runner_;
  std::map<std::string, IptablesService> applied_;  // Service key → what the kernel has
  IptablesTable applied_filter_;                    // the filter table as last applied
  IptablesTable applied_shared_nat_;  // nat SKIFF-SERVICES and SKIFF-NODEPORTS as last applied
  bool synced_ = false;               // false until a full sync succeeds, and after a failure
  size_t last_input_size_ = 0;
};

}  // namespace skiff::proxy
