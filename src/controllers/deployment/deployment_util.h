#pragma once

// The arithmetic and bookkeeping of Deployments (upstream's deployment/util package): surge and
// unavailability limits, pod-template hashes, template comparison, revisions and the annotations
// a Deployment leaves on its ReplicaSets, proportions for proportional scaling and conditions.
//
// Thread-safety: every function is pure, or uses only the ApiClient (itself thread-safe).

#include <optional>
#include <string>
#include <vector>

#include "api/selector.h"
#include "controllers/controller.h"

namespace skiff::controllers::deployment {

inline constexpr char kRevisionAnnotation[] = "deployment.kubernetes.io/revision";
inline constexpr char kRevisionHistoryAnnotation[] = "deployment.kubernetes.io/revision-history";
inline constexpr char kDesiredReplicasAnnotation[] = "deployment.kubernetes.io/desired-replicas";
inline constexpr char kMaxReplicasAnnotation[] = "deployment.kubernetes.io/max-replicas";
inline constexpr char kChangeCauseAnnotation[] = "kubernetes.io/change-cause";
inline constexpr char kPodTemplateHashLabel[] = "pod-template-hash";
// Longest revision-history annotation kept on a ReplicaSet.
inline constexpr size_t kMaxRevisionHistoryChars = 2000;

// Condition reasons, as upstream names them.
inline constexpr char kNewReplicaSetReason[] = "NewReplicaSetCreated";
inline constexpr char kFoundNewReplicaSetReason[] = "FoundNewReplicaSet";
inline constexpr char kReplicaSetUpdatedReason[] = "ReplicaSetUpdated";
inline constexpr char kNewReplicaSetAvailableReason[] = "NewReplicaSetAvailable";
inline constexpr char kTimedOutReason[] = "ProgressDeadlineExceeded";
inline constexpr char kPausedReason[] = "DeploymentPaused";
inline constexpr char kResumedReason[] = "DeploymentResumed";
inline constexpr char kFailedReplicaSetCreateReason[] = "ReplicaSetCreateError";
inline constexpr char kMinimumReplicasAvailable[] = "MinimumReplicasAvailable";
inline constexpr char kMinimumReplicasUnavailable[] = "MinimumReplicasUnavailable";

// Fills in what the API server defaults (replicas 1, RollingUpdate with 25%/25%,
// revisionHistoryLimit 10, progressDeadlineSeconds 600) where a Deployment lacks it.
void apply_deployment_defaults(Json& deployment);

// An int-or-string ("25%") scaled against `total`: percentages round up or down; an int is
// itself. A string that is not a percentage is an error.
Result<int> scaled_value(const Json& int_or_percent, int total, bool round_up);

struct Fenceposts {
  int max_surge = 0;
  int max_unavailable = 0;
};
// maxSurge rounds up, maxUnavailable rounds down; both zero means maxUnavailable 1.
Result<Fenceposts> resolve_fenceposts(const Json& max_surge, const Json& max_unavailable,
                                      int desired);
bool is_rolling_update(const Json& deployment);
// 0 for Recreate; otherwise the resolved maxSurge (0 on a malformed value).
int max_surge(const Json& deployment);
// 0 for Recreate or zero replicas; otherwise the resolved maxUnavailable, at most replicas.
int max_unavailable(const Json& deployment);

// spec.replicas (default 1), status counts (default 0).
int spec_replicas(const Json& obj);
int status_count(const Json& obj, const char* field);
int sum_spec_replicas(const std::vector<ObjectPtr>& replica_sets);
int sum_status(const std::vector<ObjectPtr>& replica_sets, const char* field);

// The ReplicaSet size a rollout may have now: for RollingUpdate as much as maxSurge allows, for
// Recreate the full size.
Result<int> new_rs_new_replicas(const Json& deployment, const std::vector<ObjectPtr>& all_rss,
                                const Json& new_rs);

// A stable hash of a pod template (FNV-32a of its normalized JSON, then of collisionCount),
// written with the alphabet "bcdfghjklmnpqrstvwxz2456789" as upstream's pod-template-hash.
std::string pod_template_hash(const Json& pod_template, std::optional<int64_t> collision_count);
// The templates are equal once the pod-template-hash label is taken out of both.
bool equal_ignore_hash(const Json& a, const Json& b);

// The revision annotation as a number; 0 when absent or malformed.
int64_t revision_of(const Json& obj);
int64_t max_revision(const std::vector<ObjectPtr>& replica_sets);
std::string annotation(const Json& obj, const std::string& key);
// Sets the desired-replicas and max-replicas annotations; true when they changed.
bool set_replicas_annotations(Json& rs, int desired, int max_replicas);
bool replicas_annotations_need_update(const Json& rs, int desired, int max_replicas);
// Copies the Deployment's annotations (but not revision, replica-count, rollback or
// last-applied ones) to the new ReplicaSet, raises its revision to `new_revision` when lower
// (remembering the revisions it had in revision-history), and, for a ReplicaSet about to be
// created, sets the replica annotations. True when anything changed.
bool set_new_replica_set_annotations(const Json& deployment, Json& rs,
                                     const std::string& new_revision, bool exists);
// The desired-replicas annotation, when present and numeric.
std::optional<int> desired_replicas_annotation(const Json& rs);

// Ordering of ReplicaSets: older first (ties by name); by revision then age.
bool created_before(const Json& a, const Json& b);
void sort_by_creation(std::vector<ObjectPtr>& rss);
void sort_by_revision(std::vector<ObjectPtr>& rss);
std::vector<ObjectPtr> active_replica_sets(const std::vector<ObjectPtr>& rss);

// The oldest ReplicaSet whose template equals the Deployment's; nullptr when there is none.
ObjectPtr find_new_replica_set(const Json& deployment, std::vector<ObjectPtr> rss);

// Proportional scaling: how many replicas `rs` gets of `to_add` (negative: to remove), given
// `added` already handed out.
int get_proportion(const Json& rs, const Json& deployment, int to_add, int added);

// The only active ReplicaSet, or the newest when none is active; nullptr when several are.
ObjectPtr find_active_or_latest(const ObjectPtr& new_rs, std::vector<ObjectPtr> old_rss);
// The new ReplicaSet runs every replica, available, at the Deployment's size.
bool is_saturated(const Json& deployment, const ObjectPtr& rs);

bool has_progress_deadline(const Json& deployment);
bool has_revision_history_limit(const Json& deployment);

// Deployment conditions: {type, status, lastUpdateTime, lastTransitionTime, reason, message}.
Json new_condition(std::string_view type, std::string_view status, std::string_view reason,
                   std::string message, const std::string& now);
// Replaces the condition of the same type unless status and reason are unchanged; keeps
// lastTransitionTime when the status is unchanged.
void set_deployment_condition(Json& status, Json condition);
void remove_deployment_condition(Json& status, std::string_view type);
const Json* deployment_condition(const Json& status, std::string_view type);

// Every replica is updated and available, and the controller has seen the newest spec.
bool deployment_complete(const Json& deployment, const Json& new_status);
// The new status shows progress over the Deployment's current status.
bool deployment_progressing(const Json& deployment, const Json& new_status);
// The Progressing condition has not moved for progressDeadlineSeconds.
bool deployment_timed_out(const Json& deployment, const Json& new_status, int64_t now_seconds);

}  // namespace skiff::controllers::deployment
