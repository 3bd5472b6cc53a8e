#pragma once

// The Kubernetes API described once, as data: every type's fields (JSON names, kinds, protobuf
// numbers, merge keys, list semantics) and every served resource (group, version, kind, scope,
// verbs, short names, categories, subresources). Validation, pruning, patching, protobuf
// decoding, discovery and OpenAPI are all derived from it by generic code.
//
// Thread-safety: a Schema is immutable after construction; share it freely.

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "base/status.h"

namespace skiff::api {

enum class FieldKind : uint8_t {
  kString,
  kBytes,  // []byte: base64 in JSON
  kInt32,
  kInt64,
  kDouble,
  kBool,
  kIntOrString,  // intstr.IntOrString
  kQuantity,     // resource.Quantity: a string in JSON
  kTime,         // metav1.Time: RFC 3339 string in JSON
  kMicroTime,    // metav1.MicroTime
  kDuration,     // metav1.Duration: a Go duration string in JSON
  kObject,       // a struct: see FieldInfo::type_name
  kRaw,          // runtime.RawExtension or free-form JSON: any JSON value, kept as is
};

// "string", "int-or-string", "object", ...: for messages.
std::string_view field_kind_name(FieldKind kind);

struct FieldInfo {
  std::string json_name;
  // The field's shape: a scalar/object, a list of `kind`, or a map from string to `kind`.
  FieldKind kind = FieldKind::kString;
  bool is_list = false;
  bool is_map = false;
  // For kObject (and lists/maps of them): the type's name, e.g. "io.k8s.api.core.v1.Container".
  // Also set for the named scalar types (Time, Quantity, IntOrString, RawExtension, ...), whose
  // TypeInfo has `scalar` set; empty for plain strings, numbers and bools.
  std::string type_name;
  int proto_number = 0;  // 0 when the field has no protobuf encoding
  // Non-zero when the field comes from an inline struct that protobuf encodes as a nested message
  // (Volume's VolumeSource, EphemeralContainer's EphemeralContainerCommon): the field number of
  // that message in this type; `proto_number` is then the number inside the nested message.
  int embedded_in = 0;
  bool omit_empty = true;
  bool required = false;
  // Strategic merge patch: "merge", "retainKeys", "merge,retainKeys", "replace" or "".
  std::string patch_strategy;
  std::string patch_merge_key;
  // +listType (atomic, set, map) and +listMapKey, for server-side apply.
  std::string list_type;
  std::vector<std::string> list_map_keys;
  // +mapType (atomic, granular) and +structType, for server-side apply.
  std::string map_type;
  // The allowed values of an enum string (upstream's +enum types), sorted; empty when open.
  std::vector<std::string> enum_values;
};

struct TypeInfo;

// An inline struct that JSON flattens into its parent but protobuf keeps as a nested message.
struct EmbeddedInfo {
  int proto_number = 0;
  std::string type_name;
  const TypeInfo* type = nullptr;
};

struct TypeInfo {
  std::string name;  // e.g. "io.k8s.api.core.v1.PodSpec"
  std::vector<FieldInfo> fields;
  // Set for types that are a whole JSON value on their own (e.g. IntOrString, Quantity, Time).
  FieldKind scalar = FieldKind::kObject;
  std::string struct_type;  // +structType (atomic or granular)
  std::vector<EmbeddedInfo> embedded;

  // Any JSON field, including those flattened from inline structs.
  const FieldInfo* field(std::string_view json_name) const;
  // Only fields of this type's own protobuf message (embedded_in == 0).
  const FieldInfo* field_by_proto(int number) const;
  const EmbeddedInfo* embedded_by_proto(int number) const;

  // Filled by Schema: lookup tables. The keys view `fields`, so a copied TypeInfo must not
  // outlive the original; use the Schema's instances by pointer.
  std::unordered_map<std::string_view, size_t> by_json_;
  std::unordered_map<int, size_t> by_proto_;
};

struct GroupVersionKind {
  std::string group;
  std::string version;
  std::string kind;
  std::string group_version() const { return group.empty() ? version : group + "/" + version; }
  bool operator==(const GroupVersionKind&) const = default;
};

struct SubresourceInfo {
  std::string name;           // "status", "scale", "exec", ...
  GroupVersionKind response;  // e.g. autoscaling/v1 Scale for scale
  std::vector<std::string> verbs;
  std::string type_name;  // the response's type, e.g. "io.k8s.api.autoscaling.v1.Scale"
  const TypeInfo* type = nullptr;
};

struct ResourceInfo {
  std::string group;      // "" for the core group
  std::string version;    // "v1"
  std::string resource;   // plural, lower case: "pods"
  std::string singular;   // "pod"
  std::string kind;       // "Pod"
  std::string list_kind;  // "PodList"
  bool namespaced = true;
  std::vector<std::string> verbs;
  std::vector<std::string> short_names;
  std::vector<std::string> categories;
  std::vector<SubresourceInfo> subresources;
  std::string type_name;  // the object type, e.g. "io.k8s.api.core.v1.Pod"
  const TypeInfo* type = nullptr;
  std::string list_type_name;  // e.g. "io.k8s.api.core.v1.PodList"
  const TypeInfo* list_type = nullptr;

  std::string group_version() const { return group.empty() ? version : group + "/" + version; }
  // "pods" or "deployments.apps": how errors name the resource.
  std::string qualified_resource() const {
    return group.empty() ? resource : resource + "." + group;
  }
  const SubresourceInfo* subresource(std::string_view name) const;
};

class Schema {
 public:
  Schema() = default;
  // The lookup tables point into the schema itself.
  Schema(const Schema&) = delete;
  Schema& operator=(const Schema&) = delete;

  // The built-in Kubernetes schema compiled into the binary.
  static const Schema& builtin();
  // Builds a schema from the JSON documents produced by scripts/gen_schema.py (format described
  // there). Fails with kInvalidArgument on malformed documents and dangling type references.
  static Result<std::unique_ptr<Schema>> load(std::string_view types_json,
                                              std::string_view resources_json);

  const TypeInfo* type(std::string_view name) const;
  const ResourceInfo* resource(std::string_view group, std::string_view version,
                               std::string_view resource) const;
  const ResourceInfo* resource_for_kind(std::string_view group, std::string_view version,
                                        std::string_view kind) const;
  const std::vector<ResourceInfo>& resources() const { return resources_; }
  const std::unordered_map<std::string, TypeInfo>& types() const { return types_; }

 private:
  friend class SchemaLoader;

  std::unordered_map<std::string, TypeInfo> types_;
  std::vector<ResourceInfo> resources_;
  // Lookup tables; keys view strings owned by types_ and resources_.
  std::unordered_map<std::string_view, const TypeInfo*> type_index_;
  // "group/version/resource" and "group/version/Kind" -> index into resources_.
  std::unordered_map<std::string, size_t> by_resource_;
  std::unordered_map<std::string, size_t> by_kind_;
};

}  // namespace skiff::api
