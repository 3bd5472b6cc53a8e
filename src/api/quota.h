#pragma once

// How much of each quota resource objects use, as upstream's quota evaluators compute it. The
// resource quota controller sums it over a namespace; the API server's ResourceQuota admission
// charges it for each object created or updated.
// - pods: "pods" (pods not in a terminal phase, and not stuck terminating past their grace
//   period), "count/pods" (every pod), cpu/memory/ephemeral-storage (= requests.*),
//   requests.*, limits.cpu/memory/ephemeral-storage, hugepages-* and requests.<extended>, from
//   the pod's effective requests and limits (containers summed, init containers by maximum,
//   restartable init containers added, pod overhead added);
// - services: "services", "count/services", "services.nodeports", "services.loadbalancers";
// - persistentvolumeclaims: "persistentvolumeclaims", "requests.storage" and their
//   <class>.storageclass.storage.k8s.io/ variants;
// - any other resource: "count/<resource>[.<group>]" (and the legacy names "configmaps",
//   "secrets", "replicationcontrollers", "resourcequotas") count every object.
// Quota scopes (Terminating, NotTerminating, BestEffort, NotBestEffort, PriorityClass,
// CrossNamespacePodAffinity, and scopeSelector expressions) select pods; other resources match
// no scope, so a scoped quota counts none of them.
//
// Thread-safety: pure functions and immutable data.

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "api/quantity.h"

namespace skiff::api::quota {

// Sorted by resource name, as upstream prints lists in messages.
using ResourceList = std::map<std::string, Quantity>;

enum class EvaluatorKind : uint8_t { kPods, kServices, kPersistentVolumeClaims, kObjectCount };

// Computes usage for one resource.
struct Evaluator {
  std::string group;     // "" for the core group
  std::string version;   // the served version ("v1")
  std::string resource;  // plural: "pods"
  std::string kind;      // "Pod"
  EvaluatorKind evaluates = EvaluatorKind::kObjectCount;

  // True when a quota resource name is tracked by this evaluator.
  bool matches(const std::string& name) const;
  // "pods" or "deployments.apps".
  std::string qualified_resource() const;
  // Whether an update (not only a create) can change what an object uses and so must be
  // charged, as upstream's evaluators decide: services (a type change) and claims (a resize).
  bool charges_updates() const;
};

// One evaluator per namespaced resource the API serves (events excepted, as upstream).
const std::vector<Evaluator>& evaluators();
const Evaluator* evaluator_for(std::string_view group, std::string_view resource);

// A quota's spec.scopes and spec.scopeSelector as requirements.
struct ScopeRequirement {
  std::string scope;
  std::string op;  // In, NotIn, Exists, DoesNotExist
  std::vector<std::string> values;
};
std::vector<ScopeRequirement> scopes_of(const nlohmann::json& quota);

// Does `obj` (of the evaluator's resource) match every requirement?
bool matches_scopes(const Evaluator& e, const nlohmann::json& obj,
                    const std::vector<ScopeRequirement>& scopes);

// The usage of one object. `now_seconds` decides whether a terminating pod still counts.
ResourceList usage_of(const Evaluator& e, const nlohmann::json& obj, int64_t now_seconds);

// What an object must state for a quota that constrains `required` (names the evaluator
// matches): a pod quota'd on cpu or memory needs each container to state that request or
// limit. Returns upstream's message ("must specify requests.cpu for: a,b; ...") or "".
std::string unmet_constraints(const Evaluator& e, const std::vector<std::string>& required,
                              const nlohmann::json& obj);

// A pod's effective requests and limits (as the scheduler and quota see them): containers
// summed, init containers by maximum, restartable init containers added; pod overhead added
// unless `with_overhead` is false (LimitRange's Pod limits leave it out).
ResourceList pod_requests(const nlohmann::json& pod, bool with_overhead = true);
ResourceList pod_limits(const nlohmann::json& pod, bool with_overhead = true);

// A quantities object ({"cpu": "1", ...}) parsed; unparsable entries are skipped.
ResourceList parse_list(const nlohmann::json& obj);
nlohmann::json to_json(const ResourceList& list);
// Same names, and every quantity equal by value.
bool equal(const ResourceList& a, const ResourceList& b);
void add(ResourceList& into, const ResourceList& other);
// "cpu=1,pods=2": upstream's rendering of a list in quota messages.
std::string to_string(const ResourceList& list);

}  // namespace skiff::api::quota
