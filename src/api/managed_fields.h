#pragma once

// Server-side apply and field ownership (metadata.managedFields), following the semantics of
// sigs.k8s.io/structured-merge-diff and k8s.io/apiserver's fieldmanager:
//
//  - A FieldSet is a set of field paths. Path elements are kept in their FieldsV1 spelling:
//    "f:<field>" (struct field or map key), "k:<json of the list-map keys>" (an element of an
//    associative list), "v:<json value>" (an element of a set list), "i:<index>".
//  - The schema decides how a value is walked: structs and granular maps per field/key, lists
//    by listType (map: keyed by listMapKeys, or by the patch merge key when listType is absent;
//    set: keyed by value; atomic or absent: owned whole), atomic maps/structs owned whole.
//  - Apply merges the applied configuration into the live object, drops what the same manager
//    applied before and no longer applies (unless someone else owns it), reports conflicts
//    with other managers' fields, and records the manager's Apply entry.
//  - Other writes (create, update, patch) record Update entries from the diff old -> new.
//
// Thread-safety: stateless functions; FieldSet is a plain value type.

#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "api/errors.h"
#include "api/schema.h"
#include "base/status.h"

namespace skiff::api {

// Encoded path elements, outermost first: {"f:spec", "f:containers", "k:{\"name\":\"x\"}"}.
using FieldPath = std::vector<std::string>;

// ".spec.containers[name=\"x\"].image", as upstream prints paths in conflict messages.
std::string field_path_string(const FieldPath& path);

class FieldSet {
 public:
  void insert(const FieldPath& path);
  bool has(const FieldPath& path) const;
  bool empty() const { return !member_ && children_.empty(); }

  FieldSet union_with(const FieldSet& other) const;
  // Exact-path difference: removes the members of `other`, not their descendants.
  FieldSet difference(const FieldSet& other) const;
  FieldSet intersection(const FieldSet& other) const;
  // Removes the members of `other` and everything below them.
  FieldSet recursive_difference(const FieldSet& other) const;
  // Only the subtree under the first-level element `element` ("f:status").
  FieldSet only(std::string_view element) const;

  // Every member path, in sorted order.
  std::vector<FieldPath> paths() const;

  // FieldsV1 JSON: {"f:metadata":{"f:labels":{".":{},"f:app":{}}}}.
  nlohmann::json to_fields_v1() const;
  static Result<FieldSet> from_fields_v1(const nlohmann::json& fields);

  bool operator==(const FieldSet&) const = default;

  // The tree: whether this node's path is a member, and the children by path element.
  bool member() const { return member_; }
  const std::map<std::string, FieldSet>& children() const { return children_; }
  std::map<std::string, FieldSet>& mutable_children() { return children_; }
  void set_member(bool m) { member_ = m; }

 private:
  void collect(FieldPath& prefix, std::vector<FieldPath>* out) const;

  bool member_ = false;
  std::map<std::string, FieldSet> children_;
};

// The fields an object sets, as upstream's ToFieldSet (leaves, list elements, empty or null
// values, atomic values as a whole).
FieldSet field_set_of(const nlohmann::json& obj, const TypeInfo& type, const Schema& schema);

struct Comparison {
  FieldSet added;
  FieldSet modified;
  FieldSet removed;
  bool empty() const { return added.empty() && modified.empty() && removed.empty(); }
};
// What changes from `lhs` to `rhs` (metadata.managedFields is ignored).
Comparison compare_objects(const nlohmann::json& lhs, const nlohmann::json& rhs,
                           const TypeInfo& type, const Schema& schema);

// The live object with the applied configuration merged in, per the schema's list and map
// types. Null values in the configuration are dropped from the result.
nlohmann::json merge_applied(const nlohmann::json& live, const nlohmann::json& applied,
                             const TypeInfo& type, const Schema& schema);

// Who writes, for recording ownership.
struct WriterInfo {
  std::string manager;      // the fieldManager
  std::string subresource;  // "", "status", "scale"
  std::string api_version;  // of the resource, e.g. "apps/v1"
  std::string time;         // now, RFC 3339 with seconds
  // The resource has a status subresource: writes to the main resource do not own status, and
  // writes to /status own only status (upstream's reset fields).
  bool has_status = false;
};

struct FieldConflict {
  std::string
      manager;  // as upstream prints it: "\"kubectl\" with subresource \"scale\" using apps/v1"
  std::string path;  // ".spec.replicas"
};

struct ApplyResult {
  // The object to store (with metadata.managedFields); unset when there are conflicts.
  nlohmann::json object;
  std::vector<FieldConflict> conflicts;
};

// Server-side apply of `applied` (already decoded; see decode_apply_body) over `live_or_null`
// (null when the object does not exist yet). With conflicts and !force, returns them and no
// object. Errors (kInvalidArgument) for malformed managedFields in the configuration.
Result<ApplyResult> server_side_apply(const nlohmann::json& live_or_null,
                                      const nlohmann::json& applied, const WriterInfo& writer,
                                      bool force, const TypeInfo& type, const Schema& schema);

// The 409 upstream answers for apply conflicts: "Apply failed with 1 conflict: conflict with
// \"m\" using apps/v1: .spec.replicas", one FieldManagerConflict cause per field.
ApiError apply_conflict_error(const std::vector<FieldConflict>& conflicts);

// Records an Update by `writer` from `old_or_null` (null on create) to `new_obj` into
// new_obj.metadata.managedFields and returns the object. Managed fields sent in `new_obj` that
// differ from the old ones replace them (`[{}]` clears them, as upstream).
nlohmann::json update_managed_fields(const nlohmann::json& old_or_null, nlohmann::json new_obj,
                                     const WriterInfo& writer, const TypeInfo& type,
                                     const Schema& schema);

// Decodes an apply-patch body: JSON, or YAML converted to JSON with scalars typed by the
// schema (a plain `80` stays a string where the schema says string; quoted scalars are always
// strings). kInvalidArgument with a message on malformed input.
Result<nlohmann::json> decode_apply_body(std::string_view body, const TypeInfo& type,
                                         const Schema& schema);

// The default field manager for a request without ?fieldManager: the User-Agent's product
// name ("kubectl/v1.32.0 (linux/amd64) ..." -> "kubectl"), truncated to 128 bytes.
std::string manager_from_user_agent(std::string_view user_agent);

}  // namespace skiff::api
