#include "api/openapi.h"

#include <openssl/evp.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <utility>

#include "api/errors.h"
#include "base/check.h"
#include "base/version.h"

namespace skiff::api {
namespace {

using Json = nlohmann::json;

enum class Dialect { kV3, kV2 };

const std::string kStatusType = "io.k8s.apimachinery.pkg.apis.meta.v1.Status";
const std::string kDeleteOptionsType = "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions";
const std::string kWatchEventType = "io.k8s.apimachinery.pkg.apis.meta.v1.WatchEvent";
const std::string kPatchType = "io.k8s.apimachinery.pkg.apis.meta.v1.Patch";

// Our own short descriptions, shown by `kubectl explain`. Keyed by type name.
const std::map<std::string_view, std::string_view>& kind_descriptions() {
  static const std::map<std::string_view, std::string_view> kDescriptions = {
      {"io.k8s.api.core.v1.Namespace",
       "A Namespace groups and isolates names of namespaced objects."},
      {"io.k8s.api.core.v1.Pod",
       "A Pod runs one or more containers together on a node, sharing network and storage."},
      {"io.k8s.api.core.v1.Node", "A Node is a machine that runs pods, registered by its kubelet."},
      {"io.k8s.api.core.v1.Service",
       "A Service gives a set of pods, chosen by a label selector, one stable virtual address."},
      {"io.k8s.api.core.v1.Endpoints", "Endpoints lists the network addresses behind a service."},
      {"io.k8s.api.core.v1.ConfigMap",
       "A ConfigMap holds non-secret configuration as key-value pairs for pods to consume."},
      {"io.k8s.api.core.v1.Secret",
       "A Secret holds sensitive data (passwords, tokens, keys) as base64-encoded values."},
      {"io.k8s.api.core.v1.ServiceAccount",
       "A ServiceAccount is an identity for processes that run in pods."},
      {"io.k8s.api.core.v1.Event", "An Event reports something that happened to an object."},
      {"io.k8s.api.core.v1.ResourceQuota",
       "A ResourceQuota limits the total resources a namespace may consume."},
      {"io.k8s.api.core.v1.LimitRange",
       "A LimitRange sets default and bounding resource values for objects in a namespace."},
      {"io.k8s.api.core.v1.ReplicationController",
       "A ReplicationController keeps a fixed number of pod replicas running (legacy; prefer "
       "Deployment)."},
      {"io.k8s.api.core.v1.PersistentVolume",
       "A PersistentVolume is a piece of cluster storage that claims can bind to."},
      {"io.k8s.api.core.v1.PersistentVolumeClaim",
       "A PersistentVolumeClaim requests storage for pods, bound to a PersistentVolume."},
      {"io.k8s.api.core.v1.PodTemplate", "A PodTemplate stores a reusable pod template."},
      {"io.k8s.api.apps.v1.Deployment",
       "A Deployment declares pods by template and replica count and rolls out changes to them "
       "through ReplicaSets."},
      {"io.k8s.api.apps.v1.ReplicaSet",
       "A ReplicaSet keeps a fixed number of identical pods running."},
      {"io.k8s.api.apps.v1.StatefulSet",
       "A StatefulSet runs pods with stable names and storage, created and updated in order."},
      {"io.k8s.api.apps.v1.DaemonSet", "A DaemonSet runs one copy of a pod on each eligible node."},
      {"io.k8s.api.apps.v1.ControllerRevision",
       "A ControllerRevision records one immutable revision of a controller's state."},
      {"io.k8s.api.batch.v1.Job", "A Job runs pods until a number of them complete successfully."},
      {"io.k8s.api.batch.v1.CronJob", "A CronJob creates Jobs on a repeating schedule."},
      {"io.k8s.api.coordination.v1.Lease",
       "A Lease is a lightweight lock, used for leader election and node heartbeats."},
      {"io.k8s.api.discovery.v1.EndpointSlice",
       "An EndpointSlice lists a subset of the network endpoints of a service."},
      {"io.k8s.api.events.v1.Event", "An Event reports something that happened to an object."},
      {"io.k8s.api.rbac.v1.Role", "A Role grants a set of permissions within one namespace."},
      {"io.k8s.api.rbac.v1.RoleBinding",
       "A RoleBinding grants the permissions of a role to users, groups or service accounts "
       "within a namespace."},
      {"io.k8s.api.rbac.v1.ClusterRole",
       "A ClusterRole grants a set of permissions cluster-wide or, through bindings, in "
       "namespaces."},
      {"io.k8s.api.rbac.v1.ClusterRoleBinding",
       "A ClusterRoleBinding grants the permissions of a cluster role cluster-wide."},
      {"io.k8s.api.scheduling.v1.PriorityClass",
       "A PriorityClass maps a name to a scheduling priority for pods."},
      // Frequently explained nested types.
      {"io.k8s.api.core.v1.PodSpec",
       "The desired state of a pod: its containers, volumes and "
       "scheduling constraints."},
      {"io.k8s.api.core.v1.PodTemplateSpec", "The metadata and spec of pods to be created."},
      {"io.k8s.api.core.v1.Container",
       "One container of a pod: the image to run, its command, ports, environment and resources."},
      {"io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
       "Metadata every persisted object has: name, namespace, labels, annotations, owners and "
       "bookkeeping fields set by the server."},
      {"io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta",
       "Metadata of a list: its resource version and continuation token."},
      {"io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector",
       "Selects objects by their labels; all given requirements must match."},
  };
  return kDescriptions;
}

// Our own short descriptions of individual fields, keyed by "type name/field".
const std::map<std::string_view, std::string_view>& field_descriptions() {
  static const std::map<std::string_view, std::string_view> kDescriptions = {
      {"io.k8s.api.core.v1.PodSpec/containers",
       "The containers of the pod. At least one is required; each has a unique name."},
      {"io.k8s.api.core.v1.PodSpec/initContainers",
       "Containers that run to completion, one after the other, before the regular containers "
       "start."},
      {"io.k8s.api.core.v1.PodSpec/volumes", "Volumes that the pod's containers can mount."},
      {"io.k8s.api.core.v1.PodSpec/nodeName",
       "The node the pod is bound to; set by the scheduler unless given."},
      {"io.k8s.api.core.v1.Container/name", "The container's name, unique within the pod."},
      {"io.k8s.api.core.v1.Container/image", "The container image to run."},
      {"io.k8s.api.core.v1.Container/command", "The entrypoint; replaces the image's ENTRYPOINT."},
      {"io.k8s.api.core.v1.Container/args",
       "Arguments to the entrypoint; replace the image's CMD."},
      {"io.k8s.api.core.v1.Container/env", "Environment variables to set in the container."},
      {"io.k8s.api.core.v1.Container/ports", "Network ports the container exposes."},
      {"io.k8s.api.core.v1.Container/resources",
       "Compute resources (cpu, memory) the container requests and is limited to."},
      {"io.k8s.api.apps.v1.DeploymentSpec/replicas", "How many pods to run. Defaults to 1."},
      {"io.k8s.api.apps.v1.DeploymentSpec/selector",
       "Selects the pods this deployment manages; must match the template's labels."},
      {"io.k8s.api.apps.v1.DeploymentSpec/template", "The pods to create."},
      {"io.k8s.api.apps.v1.DeploymentSpec/strategy", "How to replace old pods with new ones."},
      {"io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta/name",
       "The object's name, unique within its namespace (or cluster) and kind."},
      {"io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta/namespace",
       "The namespace the object lives in; empty for cluster-scoped objects."},
      {"io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta/labels",
       "Key-value pairs used to organize and select objects."},
      {"io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta/annotations",
       "Key-value pairs for arbitrary non-identifying metadata."},
  };
  return kDescriptions;
}

std::string ref_to(std::string_view type_name, Dialect d) {
  return std::string(d == Dialect::kV3 ? "#/components/schemas/" : "#/definitions/") +
         std::string(type_name);
}

std::string upper_hex_sha512(std::string_view data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  SKIFF_CHECK(EVP_Digest(data.data(), data.size(), digest, &len, EVP_sha512(), nullptr) == 1,
              "SHA-512 failed");
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(len * 2);
  for (unsigned int i = 0; i < len; ++i) {
    out.push_back(kHex[digest[i] >> 4]);
    out.push_back(kHex[digest[i] & 0xf]);
  }
  return out;
}

std::string capitalize(std::string_view s) {
  std::string out(s);
  if (!out.empty() && out[0] >= 'a' && out[0] <= 'z') out[0] = static_cast<char>(out[0] - 32);
  return out;
}

// "apps" -> "AppsV1", "" -> "CoreV1", "rbac.authorization.k8s.io" -> "RbacAuthorizationV1".
std::string operation_group(const std::string& group, const std::string& version) {
  std::string g = group.empty() ? "core" : group;
  constexpr std::string_view kSuffix = ".k8s.io";
  if (g.size() > kSuffix.size() && g.ends_with(kSuffix)) g.resize(g.size() - kSuffix.size());
  std::string out;
  size_t start = 0;
  while (start <= g.size()) {
    size_t dot = g.find('.', start);
    if (dot == std::string::npos) dot = g.size();
    out += capitalize(std::string_view(g).substr(start, dot - start));
    start = dot + 1;
  }
  return out + capitalize(version);
}

Json gvk_json(std::string_view group, std::string_view version, std::string_view kind) {
  return Json{{"group", group}, {"version", version}, {"kind", kind}};
}

class Builder {
 public:
  Builder(const Schema& schema, Dialect dialect) : schema_(schema), d_(dialect) {
    // Which types are top-level kinds, and under which group-version-kinds.
    for (const ResourceInfo& r : schema.resources()) {
      add_gvk(r.type_name, r.group, r.version, r.kind);
      add_gvk(r.list_type_name, r.group, r.version, r.list_kind);
      for (const SubresourceInfo& s : r.subresources) {
        if (s.type_name.empty()) continue;
        add_gvk(s.type_name, s.response.group, s.response.version, s.response.kind);
      }
      std::string gv = r.group_version();
      if (seen_gvs_.insert(gv).second) {
        add_gvk(kDeleteOptionsType, r.group, r.version, "DeleteOptions");
        add_gvk(kWatchEventType, r.group, r.version, "WatchEvent");
      }
    }
    add_gvk(kStatusType, "", "v1", "Status");
  }

  // components.schemas (v3) or definitions (v2) for `roots` and everything they reach.
  Json schemas(const std::vector<std::string>& roots) {
    Json out = Json::object();
    std::vector<std::string> pending(roots.begin(), roots.end());
    std::set<std::string> done;
    while (!pending.empty()) {
      std::string name = std::move(pending.back());
      pending.pop_back();
      if (!done.insert(name).second) continue;
      if (name == kPatchType) {
        out[name] = Json{{"type", "object"},
                         {"description",
                          "The body of a PATCH request, in one of the patch "
                          "formats named by its content type."}};
        continue;
      }
      const TypeInfo* type = schema_.type(name);
      if (type == nullptr) continue;
      out[name] = type_schema(*type, &pending);
    }
    return out;
  }

  // The paths of one group-version's resources.
  void add_paths(const std::string& group, const std::string& version, Json* paths,
                 std::vector<std::string>* roots) {
    std::string prefix = group.empty() ? "/api/" + version : "/apis/" + group + "/" + version;
    std::string op_group = operation_group(group, version);
    roots->push_back(kStatusType);
    roots->push_back(kDeleteOptionsType);
    roots->push_back(kWatchEventType);
    if (d_ == Dialect::kV3) roots->push_back(kPatchType);
    for (const ResourceInfo& r : schema_.resources()) {
      if (r.group != group || r.version != version) continue;
      roots->push_back(r.type_name);
      if (!r.list_type_name.empty()) roots->push_back(r.list_type_name);
      add_resource_paths(r, prefix, op_group, paths, roots);
    }
  }

 private:
  void add_gvk(const std::string& type, std::string_view group, std::string_view version,
               std::string_view kind) {
    if (type.empty()) return;
    Json& list = gvks_[type];
    Json entry = gvk_json(group, version, kind);
    for (const Json& e : list) {
      if (e == entry) return;
    }
    list.push_back(std::move(entry));
  }

  // A reference to a named type as a property value. In v3, upstream wraps references in allOf
  // so that siblings (description, default) are allowed; kubectl follows both forms.
  Json ref_schema(const std::string& type_name, bool is_object, bool wrap) const {
    if (d_ == Dialect::kV2 || !wrap) return Json{{"$ref", ref_to(type_name, d_)}};
    Json out{{"allOf", Json::array({Json{{"$ref", ref_to(type_name, d_)}}})}};
    if (is_object) out["default"] = Json::object();
    return out;
  }

  static Json primitive(FieldKind kind, Dialect d) {
    switch (kind) {
      case FieldKind::kString:
        return Json{{"type", "string"}};
      case FieldKind::kBytes:
        return Json{{"type", "string"}, {"format", "byte"}};
      case FieldKind::kInt32:
        return Json{{"type", "integer"}, {"format", "int32"}};
      case FieldKind::kInt64:
        return Json{{"type", "integer"}, {"format", "int64"}};
      case FieldKind::kDouble:
        return Json{{"type", "number"}, {"format", "double"}};
      case FieldKind::kBool:
        return Json{{"type", "boolean"}};
      case FieldKind::kIntOrString:
        if (d == Dialect::kV2) return Json{{"type", "string"}, {"format", "int-or-string"}};
        return Json{
            {"type", "string"}, {"format", "int-or-string"}, {"x-kubernetes-int-or-string", true}};
      case FieldKind::kQuantity:
        if (d == Dialect::kV2) return Json{{"type", "string"}};
        return Json{
            {"type", "string"}, {"format", "quantity"}, {"x-kubernetes-int-or-string", true}};
      case FieldKind::kTime:
      case FieldKind::kMicroTime:
        return Json{{"type", "string"}, {"format", "date-time"}};
      case FieldKind::kDuration:
        return Json{{"type", "string"}};
      case FieldKind::kObject:
        return Json{{"type", "object"}};
      case FieldKind::kRaw:
        if (d == Dialect::kV2) return Json{{"type", "object"}};
        return Json{{"x-kubernetes-preserve-unknown-fields", true}};
    }
    return Json::object();
  }

  // The schema of one value of the field (an element of a list or map, or the field itself).
  Json element_schema(const FieldInfo& f, bool wrap, std::vector<std::string>* pending) const {
    if (!f.type_name.empty()) {
      const TypeInfo* t = schema_.type(f.type_name);
      if (t != nullptr) {
        pending->push_back(f.type_name);
        return ref_schema(f.type_name, t->scalar == FieldKind::kObject, wrap);
      }
    }
    Json out = primitive(f.kind, d_);
    if (!f.enum_values.empty() && f.kind == FieldKind::kString) out["enum"] = f.enum_values;
    return out;
  }

  Json field_schema(const TypeInfo& owner, const FieldInfo& f, std::vector<std::string>* pending,
                    std::string_view description) const {
    Json out;
    if (f.is_list) {
      out = Json{{"type", "array"}, {"items", element_schema(f, true, pending)}};
    } else if (f.is_map) {
      out = Json{{"type", "object"}, {"additionalProperties", element_schema(f, true, pending)}};
    } else {
      out = element_schema(f, true, pending);
    }
    if (description.empty()) {
      auto it = field_descriptions().find(owner.name + "/" + f.json_name);
      if (it != field_descriptions().end()) description = it->second;
    }
    if (!description.empty()) out["description"] = description;
    if (!f.patch_merge_key.empty()) out["x-kubernetes-patch-merge-key"] = f.patch_merge_key;
    if (!f.patch_strategy.empty()) out["x-kubernetes-patch-strategy"] = f.patch_strategy;
    if (!f.list_type.empty()) out["x-kubernetes-list-type"] = f.list_type;
    if (!f.list_map_keys.empty()) out["x-kubernetes-list-map-keys"] = f.list_map_keys;
    if (!f.map_type.empty()) out["x-kubernetes-map-type"] = f.map_type;
    return out;
  }

  // Descriptions of the standard fields of a top-level kind.
  static std::string standard_field_description(const std::string& field, const Json& gvks) {
    std::string kind = gvks.empty() ? "object" : gvks[0]["kind"].get<std::string>();
    bool is_list = kind.ends_with("List");
    if (field == "apiVersion") {
      return "The versioned schema of this representation of an object, as group/version.";
    }
    if (field == "kind") return "The REST resource this object represents, in CamelCase.";
    if (field == "metadata") {
      return is_list ? "List metadata: resource version and continuation token."
                     : "Standard object metadata: name, namespace, labels, annotations and "
                       "server-set bookkeeping.";
    }
    if (field == "spec") return "The desired state of the " + kind + ".";
    if (field == "status") {
      return "The observed state of the " + kind + ", maintained by the system. Read-only.";
    }
    if (field == "items" && is_list) {
      return "The " + kind.substr(0, kind.size() - 4) + " objects in the list.";
    }
    return "";
  }

  Json type_schema(const TypeInfo& type, std::vector<std::string>* pending) const {
    if (type.scalar == FieldKind::kRaw) return Json{{"type", "object"}};  // RawExtension, FieldsV1
    if (type.scalar != FieldKind::kObject) return primitive(type.scalar, d_);
    auto gvk_it = gvks_.find(type.name);
    bool top_level = gvk_it != gvks_.end();
    Json out{{"type", "object"}};
    auto desc = kind_descriptions().find(type.name);
    if (desc != kind_descriptions().end()) {
      out["description"] = desc->second;
    } else if (top_level) {
      std::string kind = gvk_it->second[0]["kind"].get<std::string>();
      if (kind.ends_with("List") && kind.size() > 4) {
        out["description"] = "A list of " + kind.substr(0, kind.size() - 4) + " objects.";
      }
    }
    Json properties = Json::object();
    Json required = Json::array();
    for (const FieldInfo& f : type.fields) {
      std::string description;
      if (top_level) description = standard_field_description(f.json_name, gvk_it->second);
      properties[f.json_name] = field_schema(type, f, pending, description);
      if (f.required) required.push_back(f.json_name);
    }
    if (!properties.empty()) out["properties"] = std::move(properties);
    if (!required.empty()) out["required"] = std::move(required);
    if (type.struct_type == "atomic") out["x-kubernetes-map-type"] = "atomic";
    if (top_level) out["x-kubernetes-group-version-kind"] = gvk_it->second;
    return out;
  }

  // --- paths ---

  Json query_param(std::string_view name, std::string_view type) const {
    Json p{{"name", name}, {"in", "query"}, {"uniqueItems", true}};
    if (d_ == Dialect::kV3) {
      p["schema"] = Json{{"type", type}};
    } else {
      p["type"] = type;
    }
    return p;
  }

  Json path_param(std::string_view name) const {
    Json p{{"name", name}, {"in", "path"}, {"required", true}, {"uniqueItems", true}};
    if (d_ == Dialect::kV3) {
      p["schema"] = Json{{"type", "string"}};
    } else {
      p["type"] = "string";
    }
    return p;
  }

  void add_list_params(Json* params) const {
    for (auto [name, type] : std::initializer_list<std::pair<const char*, const char*>>{
             {"allowWatchBookmarks", "boolean"},
             {"continue", "string"},
             {"fieldSelector", "string"},
             {"labelSelector", "string"},
             {"limit", "integer"},
             {"resourceVersion", "string"},
             {"resourceVersionMatch", "string"},
             {"sendInitialEvents", "boolean"},
             {"timeoutSeconds", "integer"},
             {"watch", "boolean"}}) {
      params->push_back(query_param(name, type));
    }
  }

  void add_write_params(Json* params) const {
    params->push_back(query_param("dryRun", "string"));
    params->push_back(query_param("fieldManager", "string"));
    params->push_back(query_param("fieldValidation", "string"));
  }

  void add_delete_params(Json* params) const {
    params->push_back(query_param("dryRun", "string"));
    params->push_back(query_param("gracePeriodSeconds", "integer"));
    params->push_back(query_param("orphanDependents", "boolean"));
    params->push_back(query_param("propagationPolicy", "string"));
  }

  // A JSON response (or request) body of the given type, or a plain string when type is empty.
  Json content(const std::string& type, std::initializer_list<const char*> media_types) const {
    Json schema = type.empty() ? Json{{"type", "string"}} : Json{{"$ref", ref_to(type, d_)}};
    Json out = Json::object();
    for (const char* m : media_types) out[m] = Json{{"schema", schema}};
    return out;
  }

  Json responses(const std::string& type, std::initializer_list<int> codes) const {
    Json out = Json::object();
    for (int code : codes) {
      const char* text = code == 201 ? "Created" : code == 202 ? "Accepted" : "OK";
      Json r{{"description", text}};
      if (d_ == Dialect::kV3) {
        r["content"] = type.empty() ? content("", {"*/*"})
                                    : content(type, {"application/json", "application/yaml"});
      } else {
        r["schema"] = type.empty() ? Json{{"type", "string"}} : Json{{"$ref", ref_to(type, d_)}};
      }
      out[std::to_string(code)] = std::move(r);
    }
    out["401"] = Json{{"description", "Unauthorized"}};
    return out;
  }

  // Attaches a request body of `type` (v3 requestBody, v2 "body" parameter).
  void request_body(Json* op, const std::string& type, bool patch, bool required) const {
    if (d_ == Dialect::kV3) {
      Json body{{"content", patch ? content(kPatchType, {"application/apply-patch+yaml",
                                                         "application/json-patch+json",
                                                         "application/merge-patch+json",
                                                         "application/strategic-merge-patch+json"})
                                  : content(type, {"*/*"})}};
      if (required) body["required"] = true;
      (*op)["requestBody"] = std::move(body);
    } else {
      Json p{{"name", "body"},
             {"in", "body"},
             {"schema", patch ? Json{{"type", "object"}} : Json{{"$ref", ref_to(type, d_)}}}};
      if (required) p["required"] = true;
      (*op)["parameters"].push_back(std::move(p));
      if (patch) {
        (*op)["consumes"] = {"application/json-patch+json", "application/merge-patch+json",
                             "application/strategic-merge-patch+json",
                             "application/apply-patch+yaml"};
      }
    }
  }

  Json operation(const std::string& id, const std::string& action, const Json& gvk) const {
    Json op{{"operationId", id},
            {"parameters", Json::array()},
            {"x-kubernetes-action", action},
            {"x-kubernetes-group-version-kind", gvk}};
    if (d_ == Dialect::kV2) {
      op["produces"] = {"application/json", "application/yaml"};
      op["schemes"] = {"https"};
    }
    return op;
  }

  void add_resource_paths(const ResourceInfo& r, const std::string& prefix,
                          const std::string& op_group, Json* paths,
                          std::vector<std::string>* roots) const {
    auto has = [&](std::string_view verb) {
      for (const std::string& v : r.verbs) {
        if (v == verb) return true;
      }
      return false;
    };
    Json gvk = gvk_json(r.group, r.version, r.kind);
    std::string scope = r.namespaced ? "Namespaced" : "";
    std::string collection =
        prefix + (r.namespaced ? "/namespaces/{namespace}/" : "/") + r.resource;
    std::string item = collection + "/{name}";
    Json common = Json::array();
    if (r.namespaced) common.push_back(path_param("namespace"));
    common.push_back(query_param("pretty", "string"));

    // The collection: list, create, deletecollection.
    Json coll{{"parameters", common}};
    if (has("list")) {
      Json op = operation("list" + op_group + scope + r.kind, "list", gvk);
      add_list_params(&op["parameters"]);
      op["responses"] = responses(r.list_type_name, {200});
      coll["get"] = std::move(op);
    }
    if (has("create")) {
      Json op = operation("create" + op_group + scope + r.kind, "post", gvk);
      add_write_params(&op["parameters"]);
      request_body(&op, r.type_name, false, true);
      op["responses"] = responses(r.type_name, {200, 201, 202});
      coll["post"] = std::move(op);
    }
    if (has("deletecollection")) {
      Json op = operation("deletecollection" + op_group + scope + r.kind, "deletecollection", gvk);
      add_delete_params(&op["parameters"]);
      add_list_params(&op["parameters"]);
      request_body(&op, kDeleteOptionsType, false, false);
      op["responses"] = responses(kStatusType, {200});
      coll["delete"] = std::move(op);
    }
    if (coll.size() > 1) (*paths)[collection] = std::move(coll);

    // All namespaces.
    if (r.namespaced && has("list")) {
      Json op = operation("list" + op_group + r.kind + "ForAllNamespaces", "list", gvk);
      add_list_params(&op["parameters"]);
      op["responses"] = responses(r.list_type_name, {200});
      (*paths)[prefix + "/" + r.resource] =
          Json{{"parameters", Json::array({query_param("pretty", "string")})}, {"get", op}};
    }

    // One object: get, replace, patch, delete.
    Json item_common = Json::array({path_param("name")});
    for (const Json& p : common) item_common.push_back(p);
    Json one{{"parameters", item_common}};
    if (has("get")) {
      Json op = operation("read" + op_group + scope + r.kind, "get", gvk);
      op["responses"] = responses(r.type_name, {200});
      one["get"] = std::move(op);
    }
    if (has("update")) {
      Json op = operation("replace" + op_group + scope + r.kind, "put", gvk);
      add_write_params(&op["parameters"]);
      request_body(&op, r.type_name, false, true);
      op["responses"] = responses(r.type_name, {200, 201});
      one["put"] = std::move(op);
    }
    if (has("patch")) {
      Json op = operation("patch" + op_group + scope + r.kind, "patch", gvk);
      add_write_params(&op["parameters"]);
      op["parameters"].push_back(query_param("force", "boolean"));
      request_body(&op, "", true, true);
      op["responses"] = responses(r.type_name, {200, 201});
      one["patch"] = std::move(op);
    }
    if (has("delete")) {
      Json op = operation("delete" + op_group + scope + r.kind, "delete", gvk);
      add_delete_params(&op["parameters"]);
      request_body(&op, kDeleteOptionsType, false, false);
      op["responses"] = responses(kStatusType, {200, 202});
      one["delete"] = std::move(op);
    }
    if (one.size() > 1) (*paths)[item] = std::move(one);

    for (const SubresourceInfo& s : r.subresources) {
      add_subresource_path(r, s, item, item_common, op_group, scope, paths, roots);
    }
  }

  void add_subresource_path(const ResourceInfo& r, const SubresourceInfo& s,
                            const std::string& item, const Json& item_common,
                            const std::string& op_group, const std::string& scope, Json* paths,
                            std::vector<std::string>* roots) const {
    bool connect =
        s.name == "exec" || s.name == "attach" || s.name == "portforward" || s.name == "proxy";
    bool text = connect || s.name == "log";
    std::string type = text ? "" : s.type_name;
    if (!s.type_name.empty() && !text) roots->push_back(s.type_name);
    Json gvk = text && s.name == "log"
                   ? gvk_json(r.group, r.version, r.kind)
                   : gvk_json(s.response.group, s.response.version, s.response.kind);
    std::string id_tail = scope + r.kind + capitalize(s.name);
    Json path{{"parameters", item_common}};
    for (const std::string& verb : s.verbs) {
      if (verb == "get") {
        Json op = operation((connect ? "connectGet" : "read") + op_group + id_tail,
                            connect ? "connect" : "get", gvk);
        op["responses"] = responses(type, {200});
        path["get"] = std::move(op);
      } else if (verb == "create") {
        Json op = operation((connect ? "connectPost" : "create") + op_group + id_tail,
                            connect ? "connect" : "post", gvk);
        if (!connect) {
          add_write_params(&op["parameters"]);
          request_body(&op, type, false, true);
          op["responses"] = responses(type, {200, 201, 202});
        } else {
          op["responses"] = responses("", {200});
        }
        path["post"] = std::move(op);
      } else if (verb == "update") {
        Json op = operation((connect ? "connectPut" : "replace") + op_group + id_tail,
                            connect ? "connect" : "put", gvk);
        if (!connect) {
          add_write_params(&op["parameters"]);
          request_body(&op, type, false, true);
          op["responses"] = responses(type, {200, 201});
        } else {
          op["responses"] = responses("", {200});
        }
        path["put"] = std::move(op);
      } else if (verb == "patch") {
        Json op = operation((connect ? "connectPatch" : "patch") + op_group + id_tail,
                            connect ? "connect" : "patch", gvk);
        if (!connect) {
          add_write_params(&op["parameters"]);
          op["parameters"].push_back(query_param("force", "boolean"));
          request_body(&op, "", true, true);
          op["responses"] = responses(type, {200, 201});
        } else {
          op["responses"] = responses("", {200});
        }
        path["patch"] = std::move(op);
      } else if (verb == "delete") {
        Json op = operation((connect ? "connectDelete" : "delete") + op_group + id_tail,
                            connect ? "connect" : "delete", gvk);
        op["responses"] = responses(connect ? "" : kStatusType, {200});
        path["delete"] = std::move(op);
      }
    }
    if (path.size() > 1) (*paths)[item + "/" + s.name] = std::move(path);
  }

  const Schema& schema_;
  Dialect d_;
  std::map<std::string, Json> gvks_;  // type name -> [gvk...]
  std::set<std::string> seen_gvs_;
};

// --- gnostic's protobuf encoding of a Swagger 2.0 document (message openapi.v2.Document). ---
// Field numbers are those of gnostic's OpenAPIv2.proto. Only what our documents use is encoded.

class ProtoWriter {
 public:
  void varint(uint64_t v) {
    while (v >= 0x80) {
      out_.push_back(static_cast<char>((v & 0x7f) | 0x80));
      v >>= 7;
    }
    out_.push_back(static_cast<char>(v));
  }
  void tag(int field, int wire_type) { varint((static_cast<uint64_t>(field) << 3) | wire_type); }
  void bytes(int field, std::string_view data) {
    tag(field, 2);
    varint(data.size());
    out_.append(data);
  }
  void string(int field, std::string_view s) {
    if (!s.empty()) bytes(field, s);
  }
  void boolean(int field, bool b) {
    if (!b) return;
    tag(field, 0);
    varint(1);
  }
  void message(int field, const ProtoWriter& inner) { bytes(field, inner.out_); }
  std::string& str() { return out_; }

 private:
  std::string out_;
};

std::string json_string(const Json& obj, const char* key) {
  auto it = obj.find(key);
  return it != obj.end() && it->is_string() ? it->get<std::string>() : std::string();
}

// NamedAny entries (name = 1, value = Any{yaml = 2}) for the "x-" keys of `obj`. JSON is YAML.
void proto_vendor_extensions(const Json& obj, int field, ProtoWriter* w) {
  for (const auto& [key, value] : obj.items()) {
    if (!key.starts_with("x-")) continue;
    ProtoWriter any;
    any.string(2, value.dump());
    ProtoWriter named;
    named.string(1, key);
    named.message(2, any);
    w->message(field, named);
  }
}

ProtoWriter proto_schema(const Json& s) {
  ProtoWriter w;
  w.string(1, json_string(s, "$ref"));
  w.string(2, json_string(s, "format"));
  w.string(4, json_string(s, "description"));
  if (auto it = s.find("required"); it != s.end()) {
    for (const Json& r : *it) w.string(19, r.get<std::string>());
  }
  if (auto it = s.find("enum"); it != s.end()) {
    for (const Json& e : *it) {
      ProtoWriter any;
      any.string(2, e.dump());
      w.message(20, any);
    }
  }
  if (auto it = s.find("additionalProperties"); it != s.end() && it->is_object()) {
    ProtoWriter item;
    item.message(1, proto_schema(*it));
    w.message(21, item);
  }
  if (auto it = s.find("type"); it != s.end() && it->is_string()) {
    ProtoWriter type;
    type.string(1, it->get<std::string>());
    w.message(22, type);
  }
  if (auto it = s.find("items"); it != s.end() && it->is_object()) {
    ProtoWriter items;
    items.message(1, proto_schema(*it));
    w.message(23, items);
  }
  if (auto it = s.find("allOf"); it != s.end()) {
    for (const Json& a : *it) w.message(24, proto_schema(a));
  }
  if (auto it = s.find("properties"); it != s.end()) {
    ProtoWriter props;
    for (const auto& [name, value] : it->items()) {
      ProtoWriter named;
      named.string(1, name);
      named.message(2, proto_schema(value));
      props.message(1, named);
    }
    w.message(25, props);
  }
  proto_vendor_extensions(s, 31, &w);
  return w;
}

// A ParametersItem{parameter = 1: Parameter{body = 1 | non_body = 2}}.
ProtoWriter proto_parameter(const Json& p) {
  std::string in = json_string(p, "in");
  ProtoWriter param;
  if (in == "body") {
    ProtoWriter body;
    body.string(1, json_string(p, "description"));
    body.string(2, json_string(p, "name"));
    body.string(3, in);
    body.boolean(4, p.value("required", false));
    if (auto it = p.find("schema"); it != p.end()) body.message(5, proto_schema(*it));
    param.message(1, body);
  } else {
    // QueryParameterSubSchema (3) and PathParameterSubSchema (4) number their fields alike up
    // to "name"; "type" and "uniqueItems" differ by one (query has allow_empty_value = 5).
    bool query = in != "path";
    ProtoWriter sub;
    sub.boolean(1, p.value("required", false));
    sub.string(2, in);
    sub.string(3, json_string(p, "description"));
    sub.string(4, json_string(p, "name"));
    sub.string(query ? 6 : 5, json_string(p, "type"));
    sub.boolean(query ? 20 : 19, p.value("uniqueItems", false));
    ProtoWriter non_body;
    non_body.message(query ? 3 : 4, sub);
    param.message(2, non_body);
  }
  ProtoWriter item;
  item.message(1, param);
  return item;
}

ProtoWriter proto_operation(const Json& op) {
  ProtoWriter w;
  w.string(5, json_string(op, "operationId"));
  for (const char* key : {"produces", "consumes"}) {
    if (auto it = op.find(key); it != op.end()) {
      for (const Json& m : *it) w.string(key[0] == 'p' ? 6 : 7, m.get<std::string>());
    }
  }
  if (auto it = op.find("parameters"); it != op.end()) {
    for (const Json& p : *it) w.message(8, proto_parameter(p));
  }
  if (auto it = op.find("responses"); it != op.end()) {
    ProtoWriter responses;
    for (const auto& [code, r] : it->items()) {
      ProtoWriter response;
      response.string(1, json_string(r, "description"));
      if (auto s = r.find("schema"); s != r.end()) {
        ProtoWriter schema_item;
        schema_item.message(1, proto_schema(*s));
        response.message(2, schema_item);
      }
      ProtoWriter value;
      value.message(1, response);
      ProtoWriter named;
      named.string(1, code);
      named.message(2, value);
      responses.message(1, named);
    }
    w.message(9, responses);
  }
  if (auto it = op.find("schemes"); it != op.end()) {
    for (const Json& m : *it) w.string(10, m.get<std::string>());
  }
  proto_vendor_extensions(op, 13, &w);
  return w;
}

std::string proto_document(const Json& doc) {
  ProtoWriter w;
  w.string(1, json_string(doc, "swagger"));
  ProtoWriter info;
  info.string(1, json_string(doc["info"], "title"));
  info.string(2, json_string(doc["info"], "version"));
  w.message(2, info);
  ProtoWriter paths;
  for (const auto& [path, item] : doc["paths"].items()) {
    ProtoWriter pi;
    static constexpr std::pair<const char*, int> kMethods[] = {
        {"get", 2}, {"put", 3}, {"post", 4}, {"delete", 5}, {"patch", 8}};
    for (const auto& [method, number] : kMethods) {
      if (auto it = item.find(method); it != item.end()) pi.message(number, proto_operation(*it));
    }
    if (auto it = item.find("parameters"); it != item.end()) {
      for (const Json& p : *it) pi.message(9, proto_parameter(p));
    }
    ProtoWriter named;
    named.string(1, path);
    named.message(2, pi);
    paths.message(2, named);
  }
  w.message(8, paths);
  ProtoWriter definitions;
  for (const auto& [name, schema] : doc["definitions"].items()) {
    ProtoWriter named;
    named.string(1, name);
    named.message(2, proto_schema(schema));
    definitions.message(1, named);
  }
  w.message(9, definitions);
  return std::move(w.str());
}

std::string info_version() {
  return std::string("v") + kKubernetesMajor + "." + kKubernetesMinor + ".0";
}

// JSON is what we serve; protobuf-only clients (kubectl <= 1.28 asking for the v2 protobuf
// encoding) get a 406 so that they fall back or report it.
bool accepts_json(std::string_view accept) {
  if (accept.empty()) return true;
  size_t start = 0;
  while (start <= accept.size()) {
    size_t comma = accept.find(',', start);
    if (comma == std::string_view::npos) comma = accept.size();
    std::string_view item = accept.substr(start, comma - start);
    item = item.substr(0, item.find(';'));
    while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
    while (!item.empty() && item.back() == ' ') item.remove_suffix(1);
    if (item == "application/json" || item == "*/*" || item == "application/*") return true;
    start = comma + 1;
  }
  return false;
}

constexpr std::string_view kV2Protobuf =
    "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";

// Protobuf when the client names it before any JSON type (kubectl <= 1.28 names only it).
bool prefers_v2_protobuf(std::string_view accept) {
  size_t proto = accept.find(kV2Protobuf);
  if (proto == std::string_view::npos) return false;
  size_t json = accept.find("application/json");
  return json == std::string_view::npos || proto < json;
}

OpenApiReply error_reply(const ApiError& e) {
  OpenApiReply r;
  r.status = e.code;
  r.body = e.to_json();
  return r;
}

OpenApiReply document_reply(const std::string& body, const std::string& hash,
                            std::string_view requested_hash, std::string_view if_none_match) {
  OpenApiReply r;
  std::string etag = "\"" + hash + "\"";
  r.headers.emplace_back("ETag", etag);
  r.headers.emplace_back("Vary", "Accept");
  if (!requested_hash.empty() && requested_hash == hash) {
    r.headers.emplace_back("Cache-Control", "public, immutable");
  } else {
    r.headers.emplace_back("Cache-Control", "no-cache, private");
  }
  if (!if_none_match.empty() && (if_none_match == etag || if_none_match == hash)) {
    r.status = 304;
    return r;
  }
  r.body = body;
  return r;
}

}  // namespace

std::optional<OpenApiReply> OpenApi::serve(std::string_view method, std::string_view path,
                                           std::string_view hash, std::string_view accept,
                                           std::string_view if_none_match) const {
  constexpr std::string_view kV2 = "/openapi/v2";
  constexpr std::string_view kV3 = "/openapi/v3";
  if (!path.starts_with("/openapi/")) return std::nullopt;
  while (path.size() > kV3.size() && path.back() == '/') path.remove_suffix(1);
  bool is_v2 = path == kV2;
  bool is_v3 = path == kV3 || path.starts_with("/openapi/v3/");
  if (!is_v2 && !is_v3) return std::nullopt;
  if (method != "GET" && method != "HEAD") {
    return error_reply(ApiError::method_not_allowed(
        "the server does not allow this method on the requested resource"));
  }
  if (is_v2 && prefers_v2_protobuf(accept)) {
    OpenApiReply r = document_reply(v2_protobuf(), v2_protobuf_hash(), hash, if_none_match);
    // Not the requested media type: '@' is no token character, and Go's mime parser (which
    // client-go runs on every Content-Type) rejects it. Upstream answers octet-stream too.
    r.content_type = "application/octet-stream";
    return r;
  }
  if (!accepts_json(accept)) {
    return error_reply(ApiError::not_acceptable(
        is_v2 ? "only the following media types are accepted: application/json, " +
                    std::string(kV2Protobuf)
              : "only the following media types are accepted: application/json"));
  }
  if (is_v2) return document_reply(v2(), v2_hash(), hash, if_none_match);
  if (path == kV3) {
    OpenApiReply r;
    r.body = root_v3();
    r.headers.emplace_back("Cache-Control", "no-cache, private");
    return r;
  }
  std::string_view gv = path.substr(kV3.size() + 1);
  const std::string* body = group_version_v3(gv);
  if (body == nullptr) return error_reply(ApiError::not_found_path());
  return document_reply(*body, *group_version_v3_hash(gv), hash, if_none_match);
}

OpenApi::OpenApi(const Schema& schema) : schema_(schema) {
  for (const ResourceInfo& r : schema.resources()) {
    std::string path = r.group.empty() ? "api/" + r.version : "apis/" + r.group + "/" + r.version;
    bool seen = false;
    for (const std::string& p : gv_paths_) seen = seen || p == path;
    if (!seen) gv_paths_.push_back(std::move(path));
  }
}

OpenApi::~OpenApi() = default;

void OpenApi::build_v3() const {
  std::call_once(v3_once_, [this] {
    Builder builder(schema_, Dialect::kV3);
    for (const ResourceInfo& r : schema_.resources()) {
      std::string path = r.group.empty() ? "api/" + r.version : "apis/" + r.group + "/" + r.version;
      if (v3_.count(path)) continue;
      Json paths = Json::object();
      std::vector<std::string> roots;
      builder.add_paths(r.group, r.version, &paths, &roots);
      Json doc{{"openapi", "3.0.0"},
               {"info", {{"title", "Kubernetes"}, {"version", info_version()}}},
               {"paths", std::move(paths)},
               {"components",
                {{"schemas", builder.schemas(roots)},
                 {"securitySchemes",
                  {{"BearerToken",
                    {{"type", "apiKey"},
                     {"name", "authorization"},
                     {"in", "header"},
                     {"description", "Bearer token authentication"}}}}}}},
               {"security", Json::array({Json{{"BearerToken", Json::array()}}})}};
      Doc d;
      d.body = doc.dump();
      d.hash = upper_hex_sha512(d.body);
      v3_.emplace(std::move(path), std::move(d));
    }
  });
}

void OpenApi::build_v2() const {
  std::call_once(v2_once_, [this] {
    Builder builder(schema_, Dialect::kV2);
    Json paths = Json::object();
    std::vector<std::string> roots;
    std::set<std::string> gvs;
    for (const ResourceInfo& r : schema_.resources()) {
      if (!gvs.insert(r.group_version()).second) continue;
      builder.add_paths(r.group, r.version, &paths, &roots);
    }
    Json doc{{"swagger", "2.0"},
             {"info", {{"title", "Kubernetes"}, {"version", info_version()}}},
             {"paths", std::move(paths)},
             {"definitions", builder.schemas(roots)},
             {"securityDefinitions",
              {{"BearerToken",
                {{"type", "apiKey"},
                 {"name", "authorization"},
                 {"in", "header"},
                 {"description", "Bearer token authentication"}}}}},
             {"security", Json::array({Json{{"BearerToken", Json::array()}}})}};
    v2_.body = doc.dump();
    v2_.hash = upper_hex_sha512(v2_.body);
    v2_proto_.body = proto_document(doc);
    v2_proto_.hash = upper_hex_sha512(v2_proto_.body);
  });
}

std::string OpenApi::root_v3(std::string_view server_prefix) const {
  build_v3();
  Json paths = Json::object();
  for (const std::string& p : gv_paths_) {
    const Doc& d = v3_.find(p)->second;
    paths[p] = Json{
        {"serverRelativeURL", std::string(server_prefix) + "/openapi/v3/" + p + "?hash=" + d.hash}};
  }
  return Json{{"paths", std::move(paths)}}.dump();
}

const std::string* OpenApi::group_version_v3(std::string_view path) const {
  build_v3();
  auto it = v3_.find(path);
  return it == v3_.end() ? nullptr : &it->second.body;
}

const std::string* OpenApi::group_version_v3_hash(std::string_view path) const {
  build_v3();
  auto it = v3_.find(path);
  return it == v3_.end() ? nullptr : &it->second.hash;
}

const std::string& OpenApi::v2() const {
  build_v2();
  return v2_.body;
}

const std::string& OpenApi::v2_hash() const {
  build_v2();
  return v2_.hash;
}

const std::string& OpenApi::v2_protobuf() const {
  build_v2();
  return v2_proto_.body;
}

const std::string& OpenApi::v2_protobuf_hash() const {
  build_v2();
  return v2_proto_.hash;
}

}  // namespace skiff::api
