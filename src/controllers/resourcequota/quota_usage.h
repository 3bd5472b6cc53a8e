#pragma once

// How much of each quota resource objects use, as upstream's quota evaluators compute it:
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
#include <optional>
#include <string>
#include <vector>

#include "api/quantity.h"
#include "client/api_client.h"

namespace skiff::controllers::quota {

using ResourceList = std::map<std::string, api::Quantity>;

enum class EvaluatorKind : uint8_t { kPods, kServices, kPersistentVolumeClaims, kObjectCount };

// Computes usage for one resource.
struct Evaluator {
  client::Resource resource;
  EvaluatorKind kind = EvaluatorKind::kObjectCount;
  // True when a quota resource name is tracked by this evaluator.
  bool matches(const std::string& name) const;
};

// One evaluator per namespaced resource the API serves (events excepted, as upstream).
const std::vector<Evaluator>& evaluators();
const Evaluator* evaluator_for(const client::Resource& r);

// A quota's spec.scopes and spec.scopeSelector as requirements.
struct ScopeRequirement {
  std::string scope;
  std::string op;  // In, NotIn, Exists, DoesNotExist
  std::vector<std::string> values;
};
std::vector<ScopeRequirement> scopes_of(const client::Json& quota);

// Does `obj` (of the evaluator's resource) match every requirement?
bool matches_scopes(const Evaluator& e, const client::Json& obj,
                    const std::vector<ScopeRequirement>& scopes);

// The usage of one object. `now_seconds` decides whether a terminating pod still counts.
ResourceList usage_of(const Evaluator& e, const client::Json& obj, int64_t now_seconds);

// A pod's effective requests and limits (as the scheduler and quota see them).
ResourceList pod_requests(const client::Json& pod);
ResourceList pod_limits(const client::Json& pod);

// A quantities object ({"cpu": "1", ...}) parsed; unparsable entries are skipped.
ResourceList parse_list(const client::Json& obj);
client::Json to_json(const ResourceList& list);
// Same names, and every quantity equal by value.
bool equal(const ResourceList& a, const ResourceList& b);
void add(ResourceList& into, const ResourceList& other);

}  // namespace skiff::controllers::quota
