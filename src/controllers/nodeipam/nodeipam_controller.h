#pragma once

// Node IPAM: gives every Node without spec.podCIDR its own block of the cluster CIDR
// (upstream's range allocator: kube-controller-manager --allocate-node-cidrs, /24 blocks of
// 10.42.0.0/16 by default, as k3s configures it).
//
// Thread-safety: as every Controller (controller.h).

#include <memory>
#include <string>

#include "controllers/controller.h"

namespace skiff::controllers {

struct NodeIpamOptions {
  std::string cluster_cidr = "10.42.0.0/16";
  int node_mask_size = 24;
};

// IPv4 blocks of one size carved out of a CIDR. Thread-safety: none; the controller locks.
class CidrSet {
 public:
  static Result<CidrSet> create(const std::string& cidr, int block_mask);
  // The next free block ("10.42.3.0/24"), or kResourceExhausted.
  Result<std::string> allocate();
  // Marks a block used (a node that already has it); kInvalidArgument when outside the range or
  // not aligned to the block size.
  Status occupy(const std::string& block);
  void release(const std::string& block);
  size_t used() const { return used_count_; }

 private:
  Result<size_t> index_of(const std::string& block) const;
  uint32_t base_ = 0;
  int block_mask_ = 24;
  std::vector<bool> used_;
  size_t used_count_ = 0;
  size_t next_ = 0;
};

std::unique_ptr<Controller> new_nodeipam_controller(ControllerContext& ctx,
                                                    NodeIpamOptions options = {});

}  // namespace skiff::controllers
