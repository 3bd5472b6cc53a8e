#include "controllers/nodeipam/nodeipam_controller.h"

#include <arpa/inet.h>

#include <mutex>

#include "base/log.h"

namespace skiff::controllers {
namespace {

Result<std::pair<uint32_t, int>> parse_cidr(const std::string& cidr) {
  size_t slash = cidr.find('/');
  if (slash == std::string::npos) {
    return error(StatusCode::kInvalidArgument, "invalid CIDR \"" + cidr + "\": no prefix length");
  }
  in_addr addr{};
  if (inet_pton(AF_INET, cidr.substr(0, slash).c_str(), &addr) != 1) {
    return error(StatusCode::kInvalidArgument,
                 "invalid CIDR \"" + cidr + "\": not an IPv4 address");
  }
  int bits = -1;
  try {
    bits = std::stoi(cidr.substr(slash + 1));
  } catch (...) {
  }
  if (bits < 0 || bits > 32) {
    return error(StatusCode::kInvalidArgument, "invalid CIDR \"" + cidr + "\": bad prefix length");
  }
  uint32_t ip = ntohl(addr.s_addr);
  uint32_t mask = bits == 0 ? 0 : ~uint32_t{0} << (32 - bits);
  return std::make_pair(ip & mask, bits);
}

std::string format_block(uint32_t ip, int bits) {
  in_addr addr{htonl(ip)};
  char buf[INET_ADDRSTRLEN];
  inet_ntop(AF_INET, &addr, buf, sizeof(buf));
  return std::string(buf) + "/" + std::to_string(bits);
}

}  // namespace

Result<CidrSet> CidrSet::create(const std::string& cidr, int block_mask) {
  SKIFF_ASSIGN_OR_RETURN(auto parsed, parse_cidr(cidr));
  auto [base, bits] = parsed;
  if (block_mask < bits || block_mask > 32 || block_mask - bits > 24) {
    return error(StatusCode::kInvalidArgument, "node mask size " + std::to_string(block_mask) +
                                                   " does not fit cluster CIDR " + cidr);
  }
  CidrSet set;
  set.base_ = base;
  set.block_mask_ = block_mask;
  set.used_.assign(size_t{1} << (block_mask - bits), false);
  return set;
}

Result<size_t> CidrSet::index_of(const std::string& block) const {
  SKIFF_ASSIGN_OR_RETURN(auto parsed, parse_cidr(block));
  auto [ip, bits] = parsed;
  if (bits != block_mask_ || ip < base_) {
    return error(StatusCode::kInvalidArgument, block + " is not a block of the cluster CIDR");
  }
  size_t index = (ip - base_) >> (32 - block_mask_);
  if (index >= used_.size()) {
    return error(StatusCode::kInvalidArgument, block + " is outside the cluster CIDR");
  }
  return index;
}

Result<std::string> CidrSet::allocate() {
  for (size_t i = 0; i < used_.size(); ++i) {
    size_t at = (next_ + i) % used_.size();
    if (used_[at]) continue;
    used_[at] = true;
    ++used_count_;
    next_ = at + 1;
    return format_block(base_ + (static_cast<uint32_t>(at) << (32 - block_mask_)), block_mask_);
  }
  return error(StatusCode::kResourceExhausted, "no remaining CIDRs in the cluster CIDR");
}

Status CidrSet::occupy(const std::string& block) {
  SKIFF_ASSIGN_OR_RETURN(size_t index, index_of(block));
  if (!used_[index]) {
    used_[index] = true;
    ++used_count_;
  }
  return Status::ok();
}

void CidrSet::release(const std::string& block) {
  auto index = index_of(block);
  if (!index.is_ok() || !used_[index.value()]) return;
  used_[index.value()] = false;
  --used_count_;
}

namespace {

class NodeIpamController : public Controller {
 public:
  NodeIpamController(ControllerContext& ctx, NodeIpamOptions options, CidrSet cidrs)
      : ctx_(ctx),
        nodes_(ctx.informers.informer(client::resources::kNodes)),
        recorder_(ctx.recorder("node-ipam-controller")),
        cidrs_(std::move(cidrs)),
        workers_(
            "nodeipam", queue_, [this](const std::string& key) { return reconcile(key); },
            [this] { return nodes_.has_synced(); }) {
    nodes_.add_handlers({[this](const ObjectPtr& n) { observe(*n, true); },
                         [this](const ObjectPtr& o, const ObjectPtr& n) {
                           observe(*n, pod_cidr(*o) != pod_cidr(*n));
                         },
                         [this](const ObjectPtr& n) { forget(*n); }});
  }

  std::string_view name() const override { return "node-ipam"; }
  void start() override { workers_.start(1); }
  void stop() override { workers_.stop(); }

 private:
  static std::string pod_cidr(const Json& node) {
    auto spec = node.find("spec");
    return spec == node.end() ? "" : spec->value("podCIDR", "");
  }

  // Blocks already on nodes are taken before anything is handed out (on the informer thread,
  // which delivers the initial list before workers run).
  void observe(const Json& node, bool cidr_is_new) {
    std::string cidr = pod_cidr(node);
    if (cidr.empty()) {
      queue_.add(client::name_of(node));
      return;
    }
    std::lock_guard lock(mu_);
    if (!cidrs_.occupy(cidr).is_ok() && cidr_is_new) {
      SKIFF_LOG_WARN("node-ipam: node {} has podCIDR {} outside the cluster CIDR",
                     client::name_of(node), cidr);
    }
  }

  void forget(const Json& node) {
    std::string cidr = pod_cidr(node);
    if (cidr.empty()) return;
    std::lock_guard lock(mu_);
    cidrs_.release(cidr);
  }

  Status reconcile(const std::string& name) {
    ObjectPtr node = nodes_.get(name);
    if (!node || !pod_cidr(*node).empty()) return Status::ok();
    // The cache may not have seen this worker's own last patch yet (an update queued the node
    // again before it arrived): ask the API server, the only truth for what was handed out.
    // One worker writes podCIDRs, so nothing else can give the node a block in between.
    auto current = ctx_.api.get(client::resources::kNodes, "", name);
    if (!current.is_ok()) {
      return current.status().code() == StatusCode::kNotFound ? Status::ok() : current.status();
    }
    if (!pod_cidr(current.value()).empty()) return Status::ok();
    std::string block;
    {
      std::lock_guard lock(mu_);
      auto allocated = cidrs_.allocate();
      if (!allocated.is_ok()) {
        recorder_->event(*node, "Normal", "CIDRNotAvailable",
                         "Node " + name + " status is now: CIDRNotAvailable", "Node", "v1");
        return allocated.status();
      }
      block = allocated.value();
    }
    Json patch = {{"spec", {{"podCIDR", block}, {"podCIDRs", Json::array({block})}}}};
    auto r = ctx_.api.patch(client::resources::kNodes, "", name, client::PatchType::kMerge,
                            patch.dump());
    if (!r.is_ok()) {
      std::lock_guard lock(mu_);
      cidrs_.release(block);
      return r.status().code() == StatusCode::kNotFound ? Status::ok() : r.status();
    }
    return Status::ok();
  }

  ControllerContext& ctx_;
  client::Informer& nodes_;
  std::unique_ptr<client::EventRecorder> recorder_;
  std::mutex mu_;
  CidrSet cidrs_;  // guarded by mu_
  client::WorkQueue queue_;
  QueueWorkers workers_;
};

}  // namespace

std::unique_ptr<Controller> new_nodeipam_controller(ControllerContext& ctx,
                                                    NodeIpamOptions options) {
  auto cidrs = CidrSet::create(options.cluster_cidr, options.node_mask_size);
  SKIFF_CHECK(cidrs.is_ok(), cidrs.status().to_string());
  return std::make_unique<NodeIpamController>(ctx, options, std::move(cidrs.value()));
}

}  // namespace skiff::controllers
