#pragma once

// IPv4 addressing for hollow nodes: CIDR ranges, the i-th block of a range (a node's pod CIDR,
// a node's InternalIP) and a pool of pod addresses inside one node's pod CIDR.
//
// Thread-safety: Ipv4Cidr is an immutable value. PodAddressPool is not synchronized; its owner
// serializes access.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"

namespace skiff::hollow {

// "10.1.2.3" → 0x0a010203; nullopt for anything else (IPv6 included).
std::optional<uint32_t> parse_ipv4(std::string_view text);
std::string format_ipv4(uint32_t addr);

struct Ipv4Cidr {
  uint32_t base = 0;  // the network address (host bits zero)
  int prefix = 32;

  // "10.128.0.0/9". Host bits set in the address are cleared, as Go's net.ParseCIDR does.
  // kInvalidArgument for anything else.
  static Result<Ipv4Cidr> parse(std::string_view text);

  uint64_t size() const { return uint64_t{1} << (32 - prefix); }
  bool contains(uint32_t addr) const { return addr - base < size(); }
  std::string to_string() const;
  // The `index`-th block of length `sub_prefix` inside this range (index 0 starts at `base`).
  // kOutOfRange when the range has fewer blocks; kInvalidArgument when sub_prefix < prefix.
  Result<Ipv4Cidr> block(int sub_prefix, uint64_t index) const;
  bool operator==(const Ipv4Cidr&) const = default;
};

// The addresses of one node's pod CIDR that pods get. The block's first two addresses (network
// and gateway, .0 and .1 of a /24) and its last (broadcast) are never handed out. Allocation
// takes the lowest free address, so freed addresses are reused first.
class PodAddressPool {
 public:
  PodAddressPool() = default;
  explicit PodAddressPool(Ipv4Cidr cidr);

  const Ipv4Cidr& cidr() const { return cidr_; }
  // The lowest free address, now taken; nullopt when the block is full.
  std::optional<uint32_t> allocate();
  // Takes a given address (a pod that already has it); false when it is outside the block, one
  // never handed out, or taken.
  bool reserve(uint32_t addr);
  // Frees an address; addresses not taken are ignored.
  void release(uint32_t addr);
  bool in_use(uint32_t addr) const;
  size_t used() const { return used_count_; }
  // How many addresses the pool can hand out in all.
  size_t capacity() const;

 private:
  bool assignable(uint32_t offset) const;

  Ipv4Cidr cidr_;
  std::vector<uint64_t> used_;  // one bit per address of the block
  size_t used_count_ = 0;
};

}  // namespace skiff::hollow
