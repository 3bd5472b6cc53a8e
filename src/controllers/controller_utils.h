#pragma once

// Helpers the workload controllers share: expectations, labels and owner references (resolving
// an owned object's controller, finding the owners that would adopt it), pods from templates,
// pod state predicates, and adoption/release of pods by selector (client-go's
// ControllerRefManager).
//
// Thread-safety: Expectations is safe from any thread; the free functions are pure or use only
// the ApiClient and informers (themselves thread-safe).

#include <chrono>
#include <functional>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "api/selector.h"
#include "controllers/controller.h"

namespace skiff::controllers {

// How many creations and deletions a controller has asked for and not yet seen in its cache,
// per controller key, so it does not act twice on a stale cache. Records expire after 5 minutes
// (a watch event that never arrives must not wedge the controller).
class Expectations {
 public:
  explicit Expectations(const Clock& clock = SystemClock::instance()) : clock_(clock) {}
  void expect(const std::string& key, int creations, int deletions);
  void creation_observed(const std::string& key);
  void deletion_observed(const std::string& key);
  // Lowers what is expected (a create or delete request failed, so no event will come).
  void lower(const std::string& key, int creations, int deletions);
  // True when nothing is pending (or the record expired): the cache can be trusted.
  bool satisfied(const std::string& key) const;
  void forget(const std::string& key);

 private:
  struct Record {
    int creations = 0;
    int deletions = 0;
    std::chrono::system_clock::time_point at;
  };
  const Clock& clock_;
  mutable std::mutex mu_;
  std::unordered_map<std::string, Record> records_;  // guarded by mu_
};

// metadata.labels when it is an object, else an empty object.
const Json& labels_of(const Json& obj);
// The API group of an apiVersion: "apps/v1" → "apps", "v1" → "".
std::string api_group_of(std::string_view api_version);
// metadata carries a deletionTimestamp.
bool is_being_deleted(const Json& obj);
// metadata.creationTimestamp in seconds since the epoch; -1 when absent or unparsable.
int64_t created_at(const Json& obj);

// An ownerReference to `owner` marking it as the controller (controller and
// blockOwnerDeletion true).
Json controller_ref(const Json& owner, std::string_view kind, std::string_view api_version);
// True when `obj` has a controller reference with `uid`.
bool is_controlled_by(const Json& obj, std::string_view uid);
// Whether the controller references of two versions of an object differ (one has none, or any
// of their fields differs).
bool controller_ref_changed(const Json& old_obj, const Json& cur_obj);
// The owner in `owners` that obj's controller reference names (upstream's
// resolveControllerRef): a reference of `kind` in API group `group`, to an owner of that name in
// obj's namespace with the same uid. nullptr when obj has no controller reference or the owner
// is not (or no longer) the one cached.
ObjectPtr resolve_controller_ref(const client::Informer& owners, const Json& obj,
                                 std::string_view kind, std::string_view group);
// The owners in obj's namespace whose selector (selector_of) selects obj: none when obj has no
// labels; an owner with an empty or invalid selector selects nothing.
std::vector<ObjectPtr> owners_selecting(const client::Informer& owners, const Json& obj);

// A pod for `owner` from a pod template (metadata labels/annotations/finalizers + spec), named
// "<generate_name_prefix>-<random>" by the API server.
Json pod_from_template(const Json& pod_template, const Json& owner, std::string_view kind,
                       std::string_view api_version, std::string_view generate_name_prefix);

// Phase is neither Succeeded nor Failed and the pod is not being deleted.
bool is_pod_active(const Json& pod);
bool is_pod_terminating(const Json& pod);
// The Ready condition is True.
bool is_pod_ready(const Json& pod);
// Ready for at least min_ready_seconds (by the Ready condition's lastTransitionTime).
bool is_pod_available(const Json& pod, int64_t min_ready_seconds, int64_t now_seconds);
std::string pod_phase(const Json& pod);

// The selector of a workload (spec.selector as a LabelSelector object); an absent or
// unparsable selector matches nothing.
api::LabelSelector selector_of(const Json& workload);
bool labels_match(const api::LabelSelector& selector, const Json& obj);

// Adoption and release of objects of `resource` by `owner`, as upstream's
// ControllerRefManager: of `objects`, those the owner controls that still `match` stay; those it
// controls that no longer match are released (their ownerReference removed), and orphans that
// match and are not being deleted are adopted (an ownerReference to the owner as controller
// added), both unless the owner is being deleted. Adoption first asks `can_adopt` (at most once;
// none: always allowed). Adoption and release are merge patches conditioned on the object's
// uid. Returns the objects the owner controls afterwards, or the first error (NotFound aside).
Result<std::vector<ObjectPtr>> claim_objects(client::ApiClient& api,
                                             const client::Resource& resource, const Json& owner,
                                             std::string_view kind, std::string_view api_version,
                                             const std::function<bool(const Json&)>& match,
                                             const std::vector<ObjectPtr>& objects,
                                             const std::function<Status()>& can_adopt = nullptr);
// claim_objects for pods (of the owner's namespace) that `selector` selects.
Result<std::vector<ObjectPtr>> claim_pods(client::ApiClient& api, const Json& owner,
                                          std::string_view kind, std::string_view api_version,
                                          const api::LabelSelector& selector,
                                          const std::vector<ObjectPtr>& pods_in_namespace);

// Merges `conditions` (list of {type,status,reason,message,...}) by type: replaces the entry of
// the same type, keeping lastTransitionTime when status is unchanged.
void set_condition(Json& status, Json condition, const std::string& now);
const Json* find_condition(const Json& status, std::string_view type);

}  // namespace skiff::controllers
