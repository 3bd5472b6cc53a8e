#pragma once

// Typed views of pods and nodes, parsed once from their Kubernetes JSON when the scheduler
// learns of them, so a scheduling cycle never touches JSON:
// - PodInfo: resource requests computed as upstream does (containers summed, init containers by
//   the max rule with restartable "sidecar" init containers accumulated, pod overhead added;
//   plus the non-zero variant that scoring uses: 100m CPU / 200Mi memory for a container that
//   requests none), nodeSelector, node affinity, pod (anti-)affinity terms, tolerations,
//   topology spread constraints, host ports, priority, the controller owner, labels;
// - Node: allocatable (capacity when allocatable is unset, as the API server defaults it),
//   labels, taints, unschedulable, the Ready condition.
//
// Thread-safety: both are immutable after parsing and handed around as shared_ptr<const T>.

#include <cstdint>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "scheduler/labels.h"

namespace skiff::scheduler {

// Defaults the scheduler assumes for a container that requests no CPU / memory when it scores
// (upstream's DefaultMilliCPURequest / DefaultMemoryRequest).
inline constexpr int64_t kDefaultMilliCpuRequest = 100;
inline constexpr int64_t kDefaultMemoryRequest = 200 * 1024 * 1024;

// Upstream's IsScalarResourceName: extended resources (a domain other than kubernetes.io),
// hugepages-*, attachable-volumes-* and kubernetes.io/-prefixed native resources.
bool is_scalar_resource_name(std::string_view name);
bool is_extended_resource_name(std::string_view name);

// Quantities as the scheduler compares them: CPU in millicores, everything else in units.
struct Resources {
  int64_t milli_cpu = 0;
  int64_t memory = 0;
  int64_t ephemeral_storage = 0;
  int64_t allowed_pods = 0;                             // node allocatable "pods"
  std::vector<std::pair<std::string, int64_t>> scalar;  // sorted by name

  // Adds a v1.ResourceList (JSON object of quantities); unparsable quantities are skipped.
  void add_list(const nlohmann::json& resource_list);
  void add(const Resources& other);
  void subtract(const Resources& other);
  // Per resource, the larger of this and `other`.
  void set_max(const Resources& other);
  int64_t scalar_value(std::string_view name) const;
  void add_scalar(std::string_view name, int64_t value);
  bool is_zero() const;
  bool operator==(const Resources& o) const = default;
};

enum class TaintEffect : uint8_t { kNoSchedule, kPreferNoSchedule, kNoExecute, kOther };
std::string_view taint_effect_name(TaintEffect effect);

struct Taint {
  std::string key;
  std::string value;
  TaintEffect effect = TaintEffect::kNoSchedule;
  bool operator==(const Taint& o) const = default;
};

struct Toleration {
  std::string key;
  enum class Operator : uint8_t { kEqual, kExists, kInvalid } op = Operator::kEqual;
  std::string value;
  std::optional<TaintEffect> effect;  // nullopt: every effect

  // v1.Toleration.ToleratesTaint.
  bool tolerates(const Taint& taint) const;
};

bool tolerations_tolerate(std::span<const Toleration> tolerations, const Taint& taint);

// The first taint, among those `filter` accepts, that no toleration tolerates; nullptr if none.
template <typename Filter>
const Taint* find_untolerated_taint(std::span<const Taint> taints,
                                    std::span<const Toleration> tolerations, Filter&& filter) {
  for (const Taint& t : taints) {
    if (!filter(t)) continue;
    if (!tolerations_tolerate(tolerations, t)) return &t;
  }
  return nullptr;
}

struct PodInfo;

// Looks up a namespace's labels (for namespaceSelector); nullptr when unknown.
class NamespaceLabels {
 public:
  virtual ~NamespaceLabels() = default;
  virtual const Labels* namespace_labels(const HString& ns) const = 0;
};

// A processed v1.PodAffinityTerm.
struct AffinityTerm {
  Selector selector;
  // Explicit namespaces, or the owning pod's namespace when neither namespaces nor a
  // namespaceSelector is given.
  std::vector<HString> namespaces;
  // namespaceSelector: nullopt when unset (matches no namespace); an empty selector matches all.
  std::optional<Selector> namespace_selector;
  LabelKey topology_key;

  // Whether `pod` is in one of the term's namespaces and matches its label selector.
  bool matches(const PodInfo& pod, const NamespaceLabels* namespaces) const;
  // A string equal for terms that match the same way (for cache keys).
  std::string fingerprint() const;
};

struct WeightedAffinityTerm {
  AffinityTerm term;
  int32_t weight = 0;
};

struct PreferredSchedulingTerm {
  NodeSelectorTerm term;
  int32_t weight = 0;
};

enum class UnsatisfiableAction : uint8_t { kDoNotSchedule, kScheduleAnyway };

struct TopologySpreadConstraint {
  int32_t max_skew = 1;
  LabelKey topology_key;
  UnsatisfiableAction when_unsatisfiable = UnsatisfiableAction::kDoNotSchedule;
  // labelSelector, with the pod's values for matchLabelKeys merged in.
  Selector selector;
  int32_t min_domains = 1;
  bool honor_node_affinity = true;  // nodeAffinityPolicy (default Honor)
  bool honor_node_taints = false;   // nodeTaintsPolicy (default Ignore)
};

struct HostPort {
  std::string ip = "0.0.0.0";
  std::string protocol = "TCP";
  int32_t port = 0;
  bool operator==(const HostPort& o) const = default;
};

enum class ConditionStatus : uint8_t { kMissing, kTrue, kFalse, kUnknown };

struct PodInfo {
  // Never fails: problems in optional parts (an invalid selector in an affinity term, say) are
  // recorded in parse_errors, and the plugin that needs that part reports them.
  static std::shared_ptr<const PodInfo> from_json(const nlohmann::json& pod);
  // Keeps `pod` as `object` for whoever binds the pod.
  static std::shared_ptr<const PodInfo> from_json(std::shared_ptr<const nlohmann::json> pod);

  std::string uid;
  HString namespace_name;
  std::string name;
  std::string node_name;  // spec.nodeName
  std::string scheduler_name;
  std::string nominated_node_name;
  Labels labels;
  int32_t priority = 0;
  bool preempts = true;      // spec.preemptionPolicy is not Never
  bool terminating = false;  // metadata.deletionTimestamp is set
  std::string controller_uid;
  uint64_t controller_uid_hash = 0;  // hash_string(controller_uid)
  std::string controller_kind;

  Resources requests;
  int64_t non_zero_milli_cpu = 0;
  int64_t non_zero_memory = 0;

  Labels node_selector;  // spec.nodeSelector
  std::optional<NodeSelector> required_node_affinity;
  std::vector<PreferredSchedulingTerm> preferred_node_affinity;

  std::vector<AffinityTerm> required_affinity;
  std::vector<AffinityTerm> required_anti_affinity;
  std::vector<WeightedAffinityTerm> preferred_affinity;
  std::vector<WeightedAffinityTerm> preferred_anti_affinity;
  // spec.affinity.podAffinity or .podAntiAffinity is set (upstream's "pod with affinity").
  bool has_pod_affinity = false;

  std::vector<Toleration> tolerations;
  std::vector<TopologySpreadConstraint> spread_constraints;
  std::vector<HostPort> host_ports;
  std::vector<std::string> scheduling_gates;

  std::vector<std::string> parse_errors;
  std::shared_ptr<const nlohmann::json> object;

  // Strings equal for pods with the same nodeSelector and required node affinity, and the same
  // tolerations (for cache keys).
  std::string node_constraints_fingerprint;
  std::string tolerations_fingerprint;

  // "namespace/name".
  std::string key() const;
  bool has_required_anti_affinity() const { return !required_anti_affinity.empty(); }
  bool has_required_node_constraints() const {
    return !node_selector.empty() || required_node_affinity.has_value();
  }
  // nodeSelector and required node affinity against a node (upstream's RequiredNodeAffinity).
  bool matches_node_selector_and_affinity(const Labels& node_labels,
                                          const HString& node_name) const;
};

using PodRef = std::shared_ptr<const PodInfo>;

struct Node {
  static std::shared_ptr<const Node> from_json(const nlohmann::json& node);
  static std::shared_ptr<const Node> from_json(std::shared_ptr<const nlohmann::json> node);

  HString name;
  std::string uid;
  Labels labels;
  std::vector<Taint> taints;
  bool unschedulable = false;
  Resources allocatable;
  ConditionStatus ready = ConditionStatus::kMissing;
  // "region:\0:zone" from the topology labels, for spreading the node list across zones.
  std::string zone_id;
  std::shared_ptr<const nlohmann::json> object;
};

using NodeRef = std::shared_ptr<const Node>;

// Well-known keys.
inline constexpr std::string_view kLabelHostname = "kubernetes.io/hostname";
inline constexpr std::string_view kLabelZone = "topology.kubernetes.io/zone";
inline constexpr std::string_view kLabelRegion = "topology.kubernetes.io/region";
inline constexpr std::string_view kTaintNodeUnschedulable = "node.kubernetes.io/unschedulable";
inline constexpr std::string_view kTaintNodeNotReady = "node.kubernetes.io/not-ready";
inline constexpr std::string_view kTaintNodeUnreachable = "node.kubernetes.io/unreachable";

}  // namespace skiff::scheduler
