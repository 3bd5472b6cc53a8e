#pragma once

// Taints and tolerations as the scheduler and the node lifecycle controllers read them
// (upstream's taint utilities and v1helper.GetMatchingTolerations), and the node controller's
// taint keys.
//
// Thread-safety: pure functions.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "client/api_client.h"

namespace skiff::controllers::nodelifecycle {

using client::Json;

inline constexpr const char* kTaintNotReady = "node.kubernetes.io/not-ready";
inline constexpr const char* kTaintUnreachable = "node.kubernetes.io/unreachable";
inline constexpr const char* kTaintUnschedulable = "node.kubernetes.io/unschedulable";
inline constexpr const char* kTaintMemoryPressure = "node.kubernetes.io/memory-pressure";
inline constexpr const char* kTaintDiskPressure = "node.kubernetes.io/disk-pressure";
inline constexpr const char* kTaintPidPressure = "node.kubernetes.io/pid-pressure";
inline constexpr const char* kTaintNetworkUnavailable = "node.kubernetes.io/network-unavailable";

// A taint identified by key and effect (what upstream's MatchTaint compares).
struct TaintRef {
  std::string key;
  std::string effect;
  bool operator==(const TaintRef&) const = default;
};

bool taint_matches(const Json& taint, const TaintRef& ref);
bool taint_exists(const Json& taints, const TaintRef& ref);

// The toleration tolerates the taint: effects match (an empty effect matches all), keys match
// (an empty key matches every key), and with operator Equal (the default) the values are equal.
bool tolerates(const Json& toleration, const Json& taint);

// Whether every taint is tolerated, and for each taint the first toleration that tolerates it.
struct MatchedTolerations {
  bool all_tolerated = true;
  std::vector<Json> used;
};
MatchedTolerations matching_tolerations(const std::vector<Json>& taints, const Json& tolerations);

// The shortest tolerationSeconds among `tolerations` (values ≤ 0 count as 0); nullopt when none
// has one (tolerated forever).
std::optional<int64_t> min_toleration_seconds(const std::vector<Json>& tolerations);

// The node's taints with effect NoExecute.
std::vector<Json> no_execute_taints(const Json& node);

}  // namespace skiff::controllers::nodelifecycle
