#pragma once

// Per-resource behaviour: upstream's defaulting, validation and update rules for each kind,
// installed into the generic registry.

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "api/errors.h"
#include "apiserver/registry.h"

namespace skiff::apiserver {

struct StrategyConfig {
  std::string service_cidr = "10.43.0.0/16";
  int node_port_min = 30000;
  int node_port_max = 32767;
  int64_t event_ttl_seconds = 3600;
  int64_t not_ready_toleration_seconds = 300;
  int64_t unreachable_toleration_seconds = 300;
};

Status install_strategies(Registry& registry, const StrategyConfig& config);

// The PriorityClasses the API server creates and keeps (upstream's SystemPriorityClasses); other
// names with the prefix are refused, as are user classes above kHighestUserDefinablePriority.
constexpr char kSystemPriorityClassPrefix[] = "system-";
constexpr int64_t kHighestUserDefinablePriority = 1000000000;
struct SystemPriorityClass {
  std::string name;
  int64_t value;
  std::string description;
};
const std::vector<SystemPriorityClass>& system_priority_classes();

// Upstream's defaults for a PodSpec (also used inside pod templates).
void default_pod_spec(nlohmann::json& spec);
// Validates a PodSpec at `path` ("spec" or "spec.template.spec").
void validate_pod_spec(const nlohmann::json& spec, const std::string& path,
                       api::FieldErrors& errors);

}  // namespace skiff::apiserver
