#pragma once

// A proxy backend turns the desired Service state into kernel rules. Two exist: nftables (the
// default; verdict maps, so the cost per packet does not grow with the number of Services) and
// iptables (for kernels without nf_tables).
//
// Thread-safety: a backend is used by one thread at a time (the proxy's sync loop).

#include <memory>
#include <set>
#include <string>

#include "base/status.h"
#include "proxy/model.h"

namespace skiff::proxy {

class Backend {
 public:
  virtual ~Backend() = default;
  virtual const char* name() const = 0;
  // Brings the rules in line with `state`. `changed` holds the Service keys ("ns/name") that
  // changed since the last successful sync; only their rules are rewritten, in one atomic
  // transaction. `full` rewrites everything (first sync, or after a failed one). On error the
  // kernel keeps the rules of the last successful sync, and the next sync must be full.
  virtual Status sync(const ProxyState& state, const std::set<std::string>& changed, bool full) = 0;
  // Removes every table, chain, map and set the backend owns.
  virtual Status cleanup() = 0;
};

// Applies an nftables script as one transaction (`nft -f`). An interface so tests can record
// the scripts instead of touching the kernel.
class NftRunner {
 public:
  virtual ~NftRunner() = default;
  virtual Status run(const std::string& script) = 0;
};

// The real runner: libnftables in this process.
std::unique_ptr<NftRunner> make_libnftables_runner();
// Incremental-sync scripts as one libnftnl netlink batch (no ruleset dump); any other script goes
// to `fallback` (a libnftables runner when null).
std::unique_ptr<NftRunner> make_nftnl_runner(std::unique_ptr<NftRunner> fallback = nullptr);

}  // namespace skiff::proxy
