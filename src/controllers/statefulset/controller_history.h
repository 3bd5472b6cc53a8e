#pragma once

// The revision history of workloads kept in apps/v1 ControllerRevisions, as the DaemonSet and
// StatefulSet controllers (and `kubectl rollout history/undo` for those kinds) read it
// (upstream's controller/history package).
//
// A revision is named "<owner>-<hash>", labelled with the owner's template labels plus
// controller-revision-hash=<hash>, controlled by its owner, annotated with the owner's
// annotations, and holds in `data` a strategic merge patch that restores the owner's pod
// template: {"spec":{"template":{...,"$patch":"replace"}}}. `revision` numbers increase with
// every change of template; going back to an older template bumps that revision's number.
//
// Thread-safety: pure functions, or functions that use only the ApiClient (itself thread-safe).

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "api/selector.h"
#include "controllers/controller.h"

namespace skiff::controllers::history {

inline constexpr char kControllerRevisionHashLabel[] = "controller-revision-hash";

// The patch a revision of `owner` stores: its spec.template with "$patch":"replace".
Json template_patch(const Json& owner);
// The pod template a revision restores (its data's spec.template without the directive); an
// empty object when the data holds none.
Json template_of(const Json& revision);
// The two revision data restore the same template (compared with nulls and empty values
// dropped, so a round trip through the API server does not make them differ).
bool equal_data(const Json& a, const Json& b);
bool equal_revision(const Json& a, const Json& b);

// FNV-32a of the data's canonical JSON, then of the collision count's decimal digits, written
// with the alphabet "bcdfghjklmnpqrstvwxz2456789" (what upstream's SafeEncodeString does).
std::string hash_data(const Json& data, std::optional<int64_t> collision_count);
// "<prefix>-<hash>", the prefix cut to 223 characters so the name stays a valid name.
std::string revision_name(std::string_view prefix, std::string_view hash);
int64_t revision_number(const Json& revision);
std::string revision_hash_label(const Json& revision);

// Oldest first: by revision number, then creation time, then name.
void sort_revisions(std::vector<ObjectPtr>& revisions);
// The revision numbers' maximum; 0 for none.
int64_t max_revision(const std::vector<ObjectPtr>& revisions);

// A revision of `owner` (not yet created) with `data`, `number` and the name and hash label for
// `collision_count`.
Json new_revision(const Json& owner, std::string_view kind, std::string_view api_version,
                  const Json& template_labels, const Json& data, int64_t number,
                  std::optional<int64_t> collision_count);

// Creates `revision`; when its name is taken by a revision with other data, bumps
// `collision_count` and tries the next name. A taken name whose data is equal answers that
// revision.
Result<Json> create_revision(client::ApiClient& api, const Json& owner, Json revision,
                             int64_t& collision_count);
// Sets a revision's number, re-reading it on conflicts.
Result<Json> update_revision_number(client::ApiClient& api, const Json& revision, int64_t number);

// The revisions `owner` controls that match `selector`, read from the API server rather than a
// cache: revision numbers are decided on this, so two quick template changes never reuse one.
Result<std::vector<ObjectPtr>> list_owned(client::ApiClient& api, const Json& owner,
                                          const api::LabelSelector& selector);

}  // namespace skiff::controllers::history
