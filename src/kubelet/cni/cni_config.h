#pragma once

// The node's pod network configuration for containerd's CRI plugin: a CNI conflist that puts
// every pod on a Linux bridge (default cni0) with host-local addresses from the node's pod CIDRs,
// a default route through the bridge (the bridge is the gateway, hairpin mode lets a pod reach
// itself through a service IP), and portmap for hostPort mappings. Loopback is set up by
// containerd itself. Traffic leaving the pod network is masqueraded by the node's nftables rule
// (masquerade.h), not by the bridge plugin's per-pod iptables chains.
//
// Thread-safety: free functions without shared state. write_cni_conflist() is safe against
// concurrent readers of the file (it replaces the file atomically); two writers of the same
// file should not race.

#include <string>
#include <vector>

#include "base/status.h"

namespace skiff::kubelet::cni {

struct CniConfigOptions {
  // The network name CNI results are stored under.
  std::string network_name = "skiff";
  std::string bridge_name = "cni0";
  // One CIDR per address family ("10.42.0.0/24", "fd00:42::/64"), as in a Node's
  // spec.podCIDRs.
  std::vector<std::string> pod_cidrs;
  // 0 leaves the MTU to the bridge plugin.
  int mtu = 0;
  // host-local's allocation directory; "" keeps the plugin's default (/var/lib/cni/networks).
  std::string ipam_data_dir;
  std::string cni_version = "1.0.0";
};

// Checks a CIDR ("10.42.0.0/24"): a valid IPv4 or IPv6 address and a prefix length in range.
// Returns 4 or 6.
Result<int> cidr_family(const std::string& cidr);

// The conflist JSON (pretty-printed, newline-terminated). kInvalidArgument for no or bad CIDRs,
// two CIDRs of one family, or an empty bridge name.
Result<std::string> render_cni_conflist(const CniConfigOptions& options);

// The file name used in the conf dir; containerd loads the lexically first conflist there.
inline constexpr const char* kConflistFileName = "10-skiff.conflist";

// Writes the conflist into `conf_dir` (created if missing) as kConflistFileName, atomically
// (temp file and rename), and only when its content differs from what is there. Returns whether
// the file was written.
Result<bool> write_cni_conflist(const std::string& conf_dir, const CniConfigOptions& options);

}  // namespace skiff::kubelet::cni
