#pragma once

// The identity and storage rules of StatefulSet pods (upstream's stateful_set_utils): a pod is
// "<set>-<ordinal>", labelled statefulset.kubernetes.io/pod-name, apps.kubernetes.io/pod-index
// and controller-revision-hash (the revision's name), with hostname = its name and subdomain =
// spec.serviceName, and a persistentVolumeClaim volume "<template>-<set>-<ordinal>" for each of
// spec.volumeClaimTemplates.
//
// Thread-safety: pure functions.

#include <optional>
#include <string>
#include <vector>

#include "controllers/controller.h"

namespace skiff::controllers::statefulset {

inline constexpr char kPodNameLabel[] = "statefulset.kubernetes.io/pod-name";
inline constexpr char kPodIndexLabel[] = "apps.kubernetes.io/pod-index";
inline constexpr char kRevisionLabel[] = "controller-revision-hash";

// Fills in what the API server defaults upstream where the object lacks it: replicas 1,
// podManagementPolicy OrderedReady, updateStrategy RollingUpdate with partition 0,
// revisionHistoryLimit 10, minReadySeconds 0.
void apply_statefulset_defaults(Json& set);

// The parent name and ordinal in a pod name "<parent>-<digits>"; ordinal -1 when the name has
// no such form (upstream's regular expression "(.*)-([0-9]+)$", ordinals fitting 32 bits).
struct ParentAndOrdinal {
  std::string parent;
  int ordinal = -1;
};
ParentAndOrdinal parent_and_ordinal(const std::string& pod_name);
int ordinal_of(const Json& pod);
bool is_member_of(const Json& set, const Json& pod);

int replicas_of(const Json& set);
int start_ordinal(const Json& set);
// The last ordinal in range (start + replicas - 1).
int end_ordinal(const Json& set);
bool in_ordinal_range(const Json& set, const Json& pod);
std::string pod_name(const Json& set, int ordinal);
std::string claim_name(const Json& claim_template, const Json& set, int ordinal);
std::string pod_revision(const Json& pod);

// The claims a pod of `ordinal` uses: each template named for the pod, in the set's namespace,
// labelled with the template's labels plus the selector's matchLabels.
std::vector<Json> claims_for(const Json& set, int ordinal);

bool identity_matches(const Json& set, const Json& pod);
bool storage_matches(const Json& set, const Json& pod);
// Sets name, namespace and the identity labels.
void update_identity(const Json& set, Json& pod);
// Puts a claim volume for every template first (replacing volumes of the same name), then the
// pod's other volumes.
void update_storage(const Json& set, Json& pod);

// A new pod of `set` at `ordinal` from `pod_template`, at `revision` (a ControllerRevision name).
Json new_stateful_pod(const Json& set, const Json& pod_template, int ordinal,
                      const std::string& revision);

// Pod states as the controller reads them.
bool is_running_and_ready(const Json& pod);
bool is_healthy(const Json& pod);
bool is_running_and_available(const Json& pod, int64_t min_ready_seconds, int64_t now_seconds);

}  // namespace skiff::controllers::statefulset
