#include "client/api_client.h"

namespace skiff::client {

std::string Resource::collection_path(std::string_view ns) const {
  std::string path = group.empty() ? "/api/" + version : "/apis/" + group + "/" + version;
  if (namespaced && !ns.empty()) {
    path += "/namespaces/";
    path += ns;
  }
  path += "/";
  path += resource;
  return path;
}

std::string Resource::object_path(std::string_view ns, std::string_view name,
                                  std::string_view subresource) const {
  std::string path = collection_path(namespaced ? ns : std::string_view());
  path += "/";
  path += name;
  if (!subresource.empty()) {
    path += "/";
    path += subresource;
  }
  return path;
}

std::string Resource::display_name() const {
  return group.empty() ? resource : resource + "." + group;
}

namespace resources {
const Resource kPods{"", "v1", "pods", "Pod", true};
const Resource kNodes{"", "v1", "nodes", "Node", false};
const Resource kNamespaces{"", "v1", "namespaces", "Namespace", false};
const Resource kServices{"", "v1", "services", "Service", true};
const Resource kEndpoints{"", "v1", "endpoints", "Endpoints", true};
const Resource kEvents{"", "v1", "events", "Event", true};
const Resource kConfigMaps{"", "v1", "configmaps", "ConfigMap", true};
const Resource kSecrets{"", "v1", "secrets", "Secret", true};
const Resource kServiceAccounts{"", "v1", "serviceaccounts", "ServiceAccount", true};
const Resource kResourceQuotas{"", "v1", "resourcequotas", "ResourceQuota", true};
const Resource kLimitRanges{"", "v1", "limitranges", "LimitRange", true};
const Resource kReplicationControllers{"", "v1", "replicationcontrollers", "ReplicationController",
                                       true};
const Resource kPersistentVolumeClaims{"", "v1", "persistentvolumeclaims", "PersistentVolumeClaim",
                                       true};
const Resource kDeployments{"apps", "v1", "deployments", "Deployment", true};
const Resource kReplicaSets{"apps", "v1", "replicasets", "ReplicaSet", true};
const Resource kStatefulSets{"apps", "v1", "statefulsets", "StatefulSet", true};
const Resource kDaemonSets{"apps", "v1", "daemonsets", "DaemonSet", true};
const Resource kControllerRevisions{"apps", "v1", "controllerrevisions", "ControllerRevision",
                                    true};
const Resource kJobs{"batch", "v1", "jobs", "Job", true};
const Resource kCronJobs{"batch", "v1", "cronjobs", "CronJob", true};
const Resource kLeases{"coordination.k8s.io", "v1", "leases", "Lease", true};
const Resource kEndpointSlices{"discovery.k8s.io", "v1", "endpointslices", "EndpointSlice", true};
const Resource kPriorityClasses{"scheduling.k8s.io", "v1", "priorityclasses", "PriorityClass",
                                false};
}  // namespace resources

namespace {

const std::string& meta_string(const Json& obj, const char* field) {
  static const std::string kEmpty;
  auto m = obj.find("metadata");
  if (m == obj.end() || !m->is_object()) return kEmpty;
  auto f = m->find(field);
  if (f == m->end() || !f->is_string()) return kEmpty;
  return f->get_ref<const std::string&>();
}

}  // namespace

std::string namespace_of(const Json& obj) {
  return meta_string(obj, "namespace");
}

std::string name_of(const Json& obj) {
  return meta_string(obj, "name");
}

std::string uid_of(const Json& obj) {
  return meta_string(obj, "uid");
}

std::string resource_version_of(const Json& obj) {
  return meta_string(obj, "resourceVersion");
}

std::string key_of(std::string_view ns, std::string_view name) {
  if (ns.empty()) return std::string(name);
  std::string key;
  key.reserve(ns.size() + name.size() + 1);
  key.append(ns).append("/").append(name);
  return key;
}

std::string key_of(const Json& obj) {
  return key_of(meta_string(obj, "namespace"), meta_string(obj, "name"));
}

std::pair<std::string, std::string> split_key(std::string_view key) {
  size_t slash = key.find('/');
  if (slash == std::string_view::npos) return {"", std::string(key)};
  return {std::string(key.substr(0, slash)), std::string(key.substr(slash + 1))};
}

const Json* controller_of(const Json& obj) {
  auto m = obj.find("metadata");
  if (m == obj.end() || !m->is_object()) return nullptr;
  auto refs = m->find("ownerReferences");
  if (refs == m->end() || !refs->is_array()) return nullptr;
  for (const auto& ref : *refs) {
    auto c = ref.find("controller");
    if (c != ref.end() && c->is_boolean() && c->get<bool>()) return &ref;
  }
  return nullptr;
}

}  // namespace skiff::client
