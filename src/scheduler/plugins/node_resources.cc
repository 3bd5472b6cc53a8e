#include "scheduler/plugins/node_resources.h"

#include <cmath>

namespace skiff::scheduler::plugins {
namespace {

Result<std::vector<ResourceSpec>> parse_resources(const nlohmann::json& list) {
  std::vector<ResourceSpec> out;
  if (!list.is_array()) return Status(StatusCode::kInvalidArgument, "resources must be a list");
  for (const nlohmann::json& r : list) {
    if (!r.is_object() || !r.contains("name") || !r["name"].is_string()) {
      return Status(StatusCode::kInvalidArgument, "resources[].name must be a string");
    }
    ResourceSpec spec{r["name"].get<std::string>(), 1};
    if (r.contains("weight")) {
      if (!r["weight"].is_number_integer() || r["weight"].get<int64_t>() < 1 ||
          r["weight"].get<int64_t>() > 100) {
        return Status(StatusCode::kInvalidArgument,
                      "resources[].weight must be an integer in the range [1, 100]");
      }
      spec.weight = r["weight"].get<int64_t>();
    }
    out.push_back(std::move(spec));
  }
  return out;
}

int64_t pod_request(const PodInfo& pod, const std::string& resource, bool use_requested) {
  if (resource == "cpu") return use_requested ? pod.requests.milli_cpu : pod.non_zero_milli_cpu;
  if (resource == "memory") return use_requested ? pod.requests.memory : pod.non_zero_memory;
  if (resource == "ephemeral-storage") return pod.requests.ephemeral_storage;
  return pod.requests.scalar_value(resource);
}

int64_t least_requested_score(int64_t requested, int64_t capacity) {
  if (capacity == 0 || requested > capacity) return 0;
  return (capacity - requested) * kMaxNodeScore / capacity;
}

int64_t most_requested_score(int64_t requested, int64_t capacity) {
  if (capacity == 0) return 0;
  if (requested > capacity) requested = capacity;
  return requested * kMaxNodeScore / capacity;
}

int64_t broken_linear(const std::vector<NodeResourcesFit::ShapePoint>& shape, int64_t p) {
  for (size_t i = 0; i < shape.size(); ++i) {
    if (p <= shape[i].utilization) {
      if (i == 0) return shape[0].score;
      return shape[i - 1].score + (shape[i].score - shape[i - 1].score) *
                                      (p - shape[i - 1].utilization) /
                                      (shape[i].utilization - shape[i - 1].utilization);
    }
  }
  return shape.back().score;
}

}  // namespace

bool resource_allocatable_and_requested(const NodeInfo& node, const PodInfo& pod,
                                        const std::string& resource, bool use_requested,
                                        int64_t& allocatable, int64_t& requested) {
  const int64_t want = pod_request(pod, resource, use_requested);
  const Resources& alloc = node.allocatable();
  if (resource == "cpu") {
    allocatable = alloc.milli_cpu;
    requested = (use_requested ? node.requested().milli_cpu : node.non_zero_milli_cpu()) + want;
  } else if (resource == "memory") {
    allocatable = alloc.memory;
    requested = (use_requested ? node.requested().memory : node.non_zero_memory()) + want;
  } else if (resource == "ephemeral-storage") {
    allocatable = alloc.ephemeral_storage;
    // Upstream tracks no non-zero variant for ephemeral storage.
    requested = (use_requested ? node.requested().ephemeral_storage : 0) + want;
  } else {
    if (want == 0 && is_scalar_resource_name(resource)) return false;
    allocatable = alloc.scalar_value(resource);
    requested = node.requested().scalar_value(resource) + want;
  }
  return allocatable != 0;
}

// ---- NodeResourcesFit ----

Result<std::unique_ptr<Plugin>> NodeResourcesFit::create(const nlohmann::json& args) {
  auto p = std::make_unique<NodeResourcesFit>();
  if (args.is_null()) return std::unique_ptr<Plugin>(std::move(p));
  if (!args.is_object()) return Status(StatusCode::kInvalidArgument, "args must be an object");
  for (const char* key : {"ignoredResources", "ignoredResourceGroups"}) {
    auto it = args.find(key);
    if (it == args.end() || it->is_null()) continue;
    if (!it->is_array())
      return Status(StatusCode::kInvalidArgument, std::string(key) + " must be a list");
    for (const nlohmann::json& v : *it) {
      if (!v.is_string())
        return Status(StatusCode::kInvalidArgument, std::string(key) + " must be strings");
      (std::string_view(key) == "ignoredResources" ? p->ignored_resources_ : p->ignored_groups_)
          .insert(v.get<std::string>());
    }
  }
  auto strategy = args.find("scoringStrategy");
  if (strategy != args.end() && strategy->is_object()) {
    std::string type = strategy->value("type", std::string("LeastAllocated"));
    if (type == "LeastAllocated") {
      p->strategy_ = Strategy::kLeastAllocated;
    } else if (type == "MostAllocated") {
      p->strategy_ = Strategy::kMostAllocated;
    } else if (type == "RequestedToCapacityRatio") {
      p->strategy_ = Strategy::kRequestedToCapacityRatio;
      const nlohmann::json* shape = nullptr;
      auto ratio = strategy->find("requestedToCapacityRatio");
      if (ratio != strategy->end() && ratio->is_object() && ratio->contains("shape")) {
        shape = &(*ratio)["shape"];
      }
      if (shape == nullptr || !shape->is_array() || shape->empty()) {
        return Status(StatusCode::kInvalidArgument,
                      "scoringStrategy.requestedToCapacityRatio.shape: Required value");
      }
      for (const nlohmann::json& pt : *shape) {
        ShapePoint point{pt.value("utilization", int64_t{0}), pt.value("score", int64_t{0})};
        if (point.utilization < 0 || point.utilization > 100 || point.score < 0 ||
            point.score > 10) {
          return Status(StatusCode::kInvalidArgument,
                        "shape utilization must be in [0, 100] and score in [0, 10]");
        }
        if (!p->shape_.empty() && point.utilization <= p->shape_.back().utilization) {
          return Status(StatusCode::kInvalidArgument,
                        "shape utilization values must be sorted in increasing order");
        }
        point.score *= kMaxNodeScore / 10;
        p->shape_.push_back(point);
      }
    } else {
      return Status(StatusCode::kInvalidArgument,
                    "scoringStrategy.type: Unsupported value: \"" + type + "\"");
    }
    auto resources = strategy->find("resources");
    if (resources != strategy->end() && !resources->is_null()) {
      SKIFF_ASSIGN_OR_RETURN(p->resources_, parse_resources(*resources));
    }
  }
  return std::unique_ptr<Plugin>(std::move(p));
}

PluginStatus NodeResourcesFit::filter(const CycleState&, const PodInfo& pod,
                                      const NodeInfo& node) const {
  // The common shortages as constants; anything else is built.
  static const std::vector<std::string> kPods{"Too many pods"};
  static const std::vector<std::string> kCpu{"Insufficient cpu"};
  static const std::vector<std::string> kMemory{"Insufficient memory"};
  static const std::vector<std::string> kCpuMemory{"Insufficient cpu", "Insufficient memory"};
  enum : unsigned { kTooManyPods = 1, kNoCpu = 2, kNoMemory = 4, kNoStorage = 8 };
  unsigned missing = 0;
  std::vector<std::string> scalar_reasons;
  bool unresolvable = false;
  const Resources& alloc = node.allocatable();
  const Resources& used = node.requested();
  if (static_cast<int64_t>(node.pods().size()) + 1 > alloc.allowed_pods) missing |= kTooManyPods;
  const Resources& want = pod.requests;
  if (want.milli_cpu > 0 && want.milli_cpu > alloc.milli_cpu - used.milli_cpu) {
    missing |= kNoCpu;
    unresolvable |= want.milli_cpu > alloc.milli_cpu;
  }
  if (want.memory > 0 && want.memory > alloc.memory - used.memory) {
    missing |= kNoMemory;
    unresolvable |= want.memory > alloc.memory;
  }
  if (want.ephemeral_storage > 0 &&
      want.ephemeral_storage > alloc.ephemeral_storage - used.ephemeral_storage) {
    missing |= kNoStorage;
    unresolvable |= want.ephemeral_storage > alloc.ephemeral_storage;
  }
  for (const auto& [name, quantity] : want.scalar) {
    if (quantity == 0) continue;
    if (is_extended_resource_name(name)) {
      if (ignored_resources_.count(name) != 0) continue;
      if (!ignored_groups_.empty()) {
        std::string group = name.substr(0, name.find('/'));
        if (ignored_groups_.count(group) != 0) continue;
      }
    }
    int64_t capacity = alloc.scalar_value(name);
    if (quantity > capacity - used.scalar_value(name)) {
      scalar_reasons.push_back("Insufficient " + name);
      unresolvable |= quantity > capacity;
    }
  }
  if (missing == 0 && scalar_reasons.empty()) return {};
  const Code code = unresolvable ? Code::kUnschedulableAndUnresolvable : Code::kUnschedulable;
  if (scalar_reasons.empty()) {
    switch (missing) {
      case kTooManyPods:
        return PluginStatus::fixed(code, kPods);
      case kNoCpu:
        return PluginStatus::fixed(code, kCpu);
      case kNoMemory:
        return PluginStatus::fixed(code, kMemory);
      case kNoCpu | kNoMemory:
        return PluginStatus::fixed(code, kCpuMemory);
      default:
        break;
    }
  }
  std::vector<std::string> reasons;
  if (missing & kTooManyPods) reasons.emplace_back("Too many pods");
  if (missing & kNoCpu) reasons.emplace_back("Insufficient cpu");
  if (missing & kNoMemory) reasons.emplace_back("Insufficient memory");
  if (missing & kNoStorage) reasons.emplace_back("Insufficient ephemeral-storage");
  for (std::string& r : scalar_reasons) reasons.push_back(std::move(r));
  return {code, std::move(reasons)};
}

PluginStatus NodeResourcesFit::score(const CycleState&, const PodInfo& pod, const NodeInfo& node,
                                     int64_t& score) const {
  int64_t node_score = 0;
  int64_t weight_sum = 0;
  for (const ResourceSpec& r : resources_) {
    int64_t alloc = 0;
    int64_t req = 0;
    if (!resource_allocatable_and_requested(node, pod, r.name, false, alloc, req)) continue;
    int64_t s = 0;
    switch (strategy_) {
      case Strategy::kLeastAllocated:
        s = least_requested_score(req, alloc);
        break;
      case Strategy::kMostAllocated:
        s = most_requested_score(req, alloc);
        break;
      case Strategy::kRequestedToCapacityRatio:
        s = req > alloc ? broken_linear(shape_, 100) : broken_linear(shape_, req * 100 / alloc);
        if (s <= 0) continue;  // as upstream: zero-scoring resources do not dilute the mean
        break;
    }
    node_score += s * r.weight;
    weight_sum += r.weight;
  }
  if (weight_sum == 0) {
    score = 0;
  } else if (strategy_ == Strategy::kRequestedToCapacityRatio) {
    score = static_cast<int64_t>(
        std::llround(static_cast<double>(node_score) / static_cast<double>(weight_sum)));
  } else {
    score = node_score / weight_sum;
  }
  return {};
}

std::vector<ClusterEventWithHint> NodeResourcesFit::events_to_register() const {
  // A node event helps only if the node could hold the pod when empty.
  auto node_hint = [](const PodInfo& pod, const ClusterEvent& e) {
    if (e.node == nullptr) return true;
    const Resources& a = e.node->allocatable;
    const Resources& w = pod.requests;
    if (w.milli_cpu > a.milli_cpu || w.memory > a.memory ||
        w.ephemeral_storage > a.ephemeral_storage || a.allowed_pods < 1) {
      return false;
    }
    for (const auto& [name, q] : w.scalar) {
      if (q > a.scalar_value(name)) return false;
    }
    return true;
  };
  return {
      on_event(EventResource::kAssignedPod, action::kDelete | action::kUpdatePodScaleDown, nullptr),
      on_event(EventResource::kNode, action::kAdd | action::kUpdateNodeAllocatable, node_hint)};
}

// ---- NodeResourcesBalancedAllocation ----

Result<std::unique_ptr<Plugin>> NodeResourcesBalancedAllocation::create(
    const nlohmann::json& args) {
  auto p = std::make_unique<NodeResourcesBalancedAllocation>();
  if (args.is_object() && args.contains("resources") && !args["resources"].is_null()) {
    SKIFF_ASSIGN_OR_RETURN(p->resources_, parse_resources(args["resources"]));
  }
  return std::unique_ptr<Plugin>(std::move(p));
}

PluginStatus NodeResourcesBalancedAllocation::pre_score(CycleState&, const PodInfo& pod,
                                                        std::span<const NodeInfo* const>,
                                                        const NodeLister&) const {
  bool best_effort = true;
  for (const ResourceSpec& r : resources_) {
    if (pod_request(pod, r.name, true) != 0) best_effort = false;
  }
  if (best_effort) return PluginStatus::skip();
  return {};
}

PluginStatus NodeResourcesBalancedAllocation::score(const CycleState&, const PodInfo& pod,
                                                    const NodeInfo& node, int64_t& score) const {
  double fractions[16];
  size_t n = 0;
  double total = 0;
  for (const ResourceSpec& r : resources_) {
    int64_t alloc = 0;
    int64_t req = 0;
    if (!resource_allocatable_and_requested(node, pod, r.name, true, alloc, req)) continue;
    double f = static_cast<double>(req) / static_cast<double>(alloc);
    if (f > 1) f = 1;
    if (n < 16) {
      fractions[n++] = f;
      total += f;
    }
  }
  double std_dev = 0;
  if (n == 2) {
    std_dev = std::abs((fractions[0] - fractions[1]) / 2);
  } else if (n > 2) {
    double mean = total / static_cast<double>(n);
    double sum = 0;
    for (size_t i = 0; i < n; ++i) sum += (fractions[i] - mean) * (fractions[i] - mean);
    std_dev = std::sqrt(sum / static_cast<double>(n));
  }
  score = static_cast<int64_t>((1 - std_dev) * static_cast<double>(kMaxNodeScore));
  return {};
}

}  // namespace skiff::scheduler::plugins
