#pragma once

// The scheduling rules of daemon pods (upstream's daemon/util package and the predicates of
// NodeShouldRunDaemonPod): the tolerations every daemon pod gets, node selector and required
// node affinity matching, taints, the node-name affinity that pins a daemon pod to its node, and
// the rolling-update arithmetic.
//
// Thread-safety: pure functions.

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "controllers/controller.h"

namespace skiff::controllers::daemonset {

inline constexpr char kTemplateGenerationLabel[] = "pod-template-generation";
inline constexpr char kTemplateGenerationAnnotation[] = "deprecated.daemonset.template.generation";
inline constexpr char kRevisionHashLabel[] = "controller-revision-hash";

// Fills in what the API server defaults upstream where the object lacks it: updateStrategy
// RollingUpdate with maxUnavailable 1 and maxSurge 0, revisionHistoryLimit 10,
// minReadySeconds 0.
void apply_daemonset_defaults(Json& ds);

// Adds (or makes exact) the tolerations the DaemonSet controller gives every daemon pod:
// not-ready and unreachable (NoExecute, no tolerationSeconds), disk-pressure, memory-pressure,
// pid-pressure and unschedulable (NoSchedule), and network-unavailable (NoSchedule) for
// hostNetwork pods.
void add_daemon_tolerations(Json& pod_spec);

// The toleration tolerates the taint (effect, key, and operator Equal/Exists as upstream).
bool tolerates(const Json& toleration, const Json& taint);
// Some taint of `taints` whose effect passes `effect_filter` is tolerated by none of
// `tolerations`.
bool has_untolerated_taint(const Json& taints, const Json& tolerations,
                           const std::function<bool(const std::string& effect)>& effect_filter);

// A NodeSelector (nodeSelectorTerms, ORed; each term's matchExpressions on labels and
// matchFields on metadata.name, ANDed) matches the node.
bool node_selector_matches(const Json& node_selector, const Json& node);
// The pod spec's nodeSelector and required node affinity both match the node.
bool pod_matches_node_affinity(const Json& pod_spec, const Json& node);

// Whether a daemon pod should be created on the node, and whether one already there may stay
// (it tolerates the node's NoExecute taints even when a NoSchedule taint keeps new pods away).
struct NodeFit {
  bool should_run = false;
  bool should_continue_running = false;
};
NodeFit node_should_run_daemon_pod(const Json& node, const Json& ds);

// The affinity with its required node affinity replaced by matchFields metadata.name In
// [node_name] (upstream's ReplaceDaemonSetPodNodeNameNodeAffinity).
Json replace_node_name_affinity(Json affinity, const std::string& node_name);
// The node a daemon pod is for: spec.nodeName, or the metadata.name In [node] term of its
// required node affinity; "" when neither says.
std::string target_node_name(const Json& pod);

// An int-or-percent scaled against `total` (percentages rounded up, as the DaemonSet controller
// does); a malformed value is an error.
Result<int> scaled_value(const Json& int_or_percent, int total);
// spec.updateStrategy.rollingUpdate's maxSurge / maxUnavailable against `desired` (0 for
// OnDelete).
Result<int> surge_count(const Json& ds, int desired);
Result<int> unavailable_count(const Json& ds, int desired);
bool allows_surge(const Json& ds);

// The template generation annotation of the DaemonSet, when present and numeric.
std::optional<int64_t> template_generation(const Json& ds);
// The pod carries the current hash (or the current template generation).
bool is_pod_updated(const Json& pod, const std::string& hash, std::optional<int64_t> generation);

// Daemon pods of one node, oldest first: scheduled before unscheduled, then by creation time,
// then by name.
void sort_by_creation(std::vector<ObjectPtr>& pods);

}  // namespace skiff::controllers::daemonset
