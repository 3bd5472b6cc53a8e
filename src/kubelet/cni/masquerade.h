#pragma once

// Masquerading of pod traffic that leaves the node's pod network, as the bridge plugin's ipMasq
// does, but with one nftables table for the node instead of an iptables chain per pod (ipMasq
// runs iptables several times on every pod's ADD and DEL, under the xtables lock, which made it
// a tenth of the CPU a burst of pod starts costs).
//
// Table `inet skiff-pod-masquerade`, chain postrouting (nat hook, srcnat priority): a packet from
// a pod CIDR to an address outside that CIDR and outside multicast is masqueraded, exactly the
// bridge plugin's rule. The table is replaced whole in one transaction, so a change of CIDRs
// never leaves a moment without masquerading. It stays when the agent stops, like the pods that
// need it.
//
// Thread-safety: free functions without shared state (each call runs the nft program).

#include <string>
#include <vector>

#include "base/status.h"

namespace skiff::kubelet::cni {

inline constexpr const char* kMasqueradeTable = "skiff-pod-masquerade";

// The nft script that (re)creates the table for `pod_cidrs` (IPv4 and IPv6 CIDRs as validated by
// cidr_family()). kInvalidArgument for no or bad CIDRs.
Result<std::string> render_masquerade_rules(const std::vector<std::string>& pod_cidrs);

// Runs render_masquerade_rules() through the nft program.
Status apply_masquerade_rules(const std::vector<std::string>& pod_cidrs);

// Removes the table (nothing when it does not exist).
Status remove_masquerade_rules();

}  // namespace skiff::kubelet::cni
