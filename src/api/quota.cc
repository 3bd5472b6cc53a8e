#include "api/quota.h"

#include <algorithm>
#include <set>

#include "api/schema.h"
#include "base/time.h"

namespace skiff::api::quota {
namespace {

using Json = nlohmann::json;

constexpr std::string_view kStorageClassSuffix = ".storageclass.storage.k8s.io/";

const Json& field(const Json& obj, const char* name) {
  static const Json kNull;
  if (!obj.is_object()) return kNull;
  auto it = obj.find(name);
  return it == obj.end() ? kNull : *it;
}

std::string string_field(const Json& obj, const char* name) {
  const Json& f = field(obj, name);
  return f.is_string() ? f.get<std::string>() : "";
}

bool starts_with(std::string_view s, std::string_view prefix) {
  return s.substr(0, prefix.size()) == prefix;
}

Quantity units(int64_t n) {
  return Quantity::parse(std::to_string(n)).value();
}

// Extended resources (vendor-domain names such as example.com/gpu) are quota'd only as
// "requests.<name>".
bool is_extended_resource(std::string_view name) {
  return name.find('/') != std::string_view::npos &&
         name.find("kubernetes.io/") == std::string_view::npos && !starts_with(name, "requests.");
}

bool is_pod_resource(const std::string& name) {
  static const std::set<std::string> kNames = {"pods",
                                               "count/pods",
                                               "cpu",
                                               "memory",
                                               "ephemeral-storage",
                                               "requests.cpu",
                                               "requests.memory",
                                               "requests.ephemeral-storage",
                                               "limits.cpu",
                                               "limits.memory",
                                               "limits.ephemeral-storage"};
  if (kNames.count(name)) return true;
  if (starts_with(name, "hugepages-") || starts_with(name, "requests.hugepages-")) return true;
  return starts_with(name, "requests.") &&
         is_extended_resource(std::string_view(name).substr(std::string_view("requests.").size()));
}

std::string count_name(const Evaluator& e) {
  return "count/" + e.qualified_resource();
}

// Resource names quota'd under their plain name before count/* existed.
bool has_legacy_count_name(const Evaluator& e) {
  static const std::set<std::string> kLegacy = {"configmaps", "secrets", "replicationcontrollers",
                                                "resourcequotas"};
  return e.group.empty() && kLegacy.count(e.resource);
}

void max_into(ResourceList& into, const ResourceList& other) {
  for (const auto& [name, q] : other) {
    auto it = into.find(name);
    if (it == into.end() || it->second < q) into[name] = q;
  }
}

// A container's requests, with limits standing in for requests it does not state (as the API
// server defaults them).
ResourceList container_requests(const Json& container) {
  const Json& resources = field(container, "resources");
  ResourceList requests = parse_list(field(resources, "requests"));
  for (const auto& [name, q] : parse_list(field(resources, "limits"))) requests.emplace(name, q);
  return requests;
}

ResourceList container_limits(const Json& container) {
  return parse_list(field(field(container, "resources"), "limits"));
}

bool is_restartable_init_container(const Json& container) {
  return string_field(container, "restartPolicy") == "Always";
}

// Containers summed; each init container runs alone (plus the restartable init containers
// started before it), so the pod needs the maximum of those and the sum.
template <typename Of>
ResourceList aggregate(const Json& pod, Of of) {
  const Json& spec = field(pod, "spec");
  ResourceList total;
  const Json& containers = field(spec, "containers");
  if (containers.is_array()) {
    for (const auto& c : containers) add(total, of(c));
  }
  ResourceList sidecars;
  ResourceList init_max;
  const Json& init = field(spec, "initContainers");
  if (init.is_array()) {
    for (const auto& c : init) {
      ResourceList mine = of(c);
      if (is_restartable_init_container(c)) {
        add(total, mine);
        add(sidecars, mine);
        max_into(init_max, sidecars);
      } else {
        add(mine, sidecars);
        max_into(init_max, mine);
      }
    }
  }
  max_into(total, init_max);
  return total;
}

bool is_terminal(const Json& pod) {
  std::string phase = string_field(field(pod, "status"), "phase");
  return phase == "Succeeded" || phase == "Failed";
}

// Upstream's QuotaV1Pod: terminal pods, and pods stuck terminating past their grace period
// (a lost node), no longer use compute quota.
bool pod_uses_compute_quota(const Json& pod, int64_t now_seconds) {
  if (is_terminal(pod)) return false;
  const Json& meta = field(pod, "metadata");
  const Json& deleted = field(meta, "deletionTimestamp");
  const Json& grace = field(meta, "deletionGracePeriodSeconds");
  if (deleted.is_string() && grace.is_number_integer()) {
    int64_t at = parse_rfc3339(deleted.get<std::string>());
    if (at >= 0 && now_seconds > at + grace.get<int64_t>()) return false;
  }
  return true;
}

bool is_best_effort(const Json& pod) {
  const Json& spec = field(pod, "spec");
  for (const char* list : {"containers", "initContainers"}) {
    const Json& containers = field(spec, list);
    if (!containers.is_array()) continue;
    for (const auto& c : containers) {
      const Json& resources = field(c, "resources");
      for (const char* kind : {"requests", "limits"}) {
        for (const auto& [name, q] : parse_list(field(resources, kind))) {
          if ((name == "cpu" || name == "memory") && Quantity() < q) return false;
        }
      }
    }
  }
  return true;
}

bool is_cross_namespace_term(const Json& term) {
  if (!term.is_object()) return false;
  const Json& namespaces = field(term, "namespaces");
  return (namespaces.is_array() && !namespaces.empty()) ||
         (term.contains("namespaceSelector") && !term["namespaceSelector"].is_null());
}

bool uses_cross_namespace_affinity(const Json& pod) {
  const Json& affinity = field(field(pod, "spec"), "affinity");
  for (const char* kind : {"podAffinity", "podAntiAffinity"}) {
    const Json& a = field(affinity, kind);
    const Json& required = field(a, "requiredDuringSchedulingIgnoredDuringExecution");
    if (required.is_array()) {
      for (const auto& term : required) {
        if (is_cross_namespace_term(term)) return true;
      }
    }
    const Json& preferred = field(a, "preferredDuringSchedulingIgnoredDuringExecution");
    if (preferred.is_array()) {
      for (const auto& weighted : preferred) {
        if (is_cross_namespace_term(field(weighted, "podAffinityTerm"))) return true;
      }
    }
  }
  return false;
}

bool pod_matches_scope(const Json& pod, const ScopeRequirement& req) {
  const Json& spec = field(pod, "spec");
  if (req.scope == "Terminating" || req.scope == "NotTerminating") {
    const Json& deadline = field(spec, "activeDeadlineSeconds");
    bool terminating = deadline.is_number_integer() && deadline.get<int64_t>() >= 0;
    return req.scope == "Terminating" ? terminating : !terminating;
  }
  if (req.scope == "BestEffort") return is_best_effort(pod);
  if (req.scope == "NotBestEffort") return !is_best_effort(pod);
  if (req.scope == "PriorityClass") {
    std::string priority_class = string_field(spec, "priorityClassName");
    bool listed =
        std::find(req.values.begin(), req.values.end(), priority_class) != req.values.end();
    if (req.op == "Exists") return !priority_class.empty();
    if (req.op == "In") return listed;
    if (req.op == "NotIn") return !listed;
    return false;  // DoesNotExist: the scope is always set on a pod (possibly empty)
  }
  if (req.scope == "CrossNamespacePodAffinity") return uses_cross_namespace_affinity(pod);
  return false;
}

ResourceList pod_usage(const Json& pod, int64_t now_seconds) {
  ResourceList usage;
  // Every pod in storage counts as an object; only live pods use compute resources.
  usage["count/pods"] = units(1);
  if (!pod_uses_compute_quota(pod, now_seconds)) return usage;
  usage["pods"] = units(1);
  ResourceList requests = pod_requests(pod);
  ResourceList limits = pod_limits(pod);
  for (const char* r : {"cpu", "memory", "ephemeral-storage"}) {
    if (auto it = requests.find(r); it != requests.end()) {
      usage[r] = it->second;
      usage[std::string("requests.") + r] = it->second;
    }
    if (auto it = limits.find(r); it != limits.end())
      usage[std::string("limits.") + r] = it->second;
  }
  for (const auto& [name, q] : requests) {
    if (starts_with(name, "hugepages-")) {
      usage[name] = q;
      usage["requests." + name] = q;
    } else if (is_extended_resource(name)) {
      usage["requests." + name] = q;
    }
  }
  return usage;
}

ResourceList service_usage(const Json& svc) {
  ResourceList usage;
  usage["services"] = units(1);
  usage["count/services"] = units(1);
  usage["services.loadbalancers"] = Quantity();
  usage["services.nodeports"] = Quantity();
  const Json& spec = field(svc, "spec");
  const Json& ports = field(spec, "ports");
  int64_t n = ports.is_array() ? static_cast<int64_t>(ports.size()) : 0;
  std::string type = string_field(spec, "type");
  if (type == "NodePort") {
    usage["services.nodeports"] = units(n);
  } else if (type == "LoadBalancer") {
    usage["services.loadbalancers"] = units(1);
    const Json& allocate = field(spec, "allocateLoadBalancerNodePorts");
    if (allocate.is_boolean() && !allocate.get<bool>()) {
      // Without allocated node ports only ports that name one explicitly use one.
      int64_t explicit_ports = 0;
      if (ports.is_array()) {
        for (const auto& p : ports) {
          const Json& node_port = field(p, "nodePort");
          if (node_port.is_number_integer() && node_port.get<int64_t>() != 0) ++explicit_ports;
        }
      }
      usage["services.nodeports"] = units(explicit_ports);
    } else {
      usage["services.nodeports"] = units(n);
    }
  }
  return usage;
}

ResourceList pvc_usage(const Json& pvc) {
  ResourceList usage;
  usage["persistentvolumeclaims"] = units(1);
  usage["count/persistentvolumeclaims"] = units(1);
  // The beta annotation wins over spec.storageClassName, as upstream reads the class.
  std::string storage_class = string_field(field(field(pvc, "metadata"), "annotations"),
                                           "volume.beta.kubernetes.io/storage-class");
  if (storage_class.empty()) storage_class = string_field(field(pvc, "spec"), "storageClassName");
  if (!storage_class.empty()) {
    usage[storage_class + std::string(kStorageClassSuffix) + "persistentvolumeclaims"] = units(1);
  }
  // What is asked for, or what was allocated if more (an expansion in progress).
  ResourceList requested = parse_list(field(field(field(pvc, "spec"), "resources"), "requests"));
  ResourceList allocated = parse_list(field(field(pvc, "status"), "allocatedResources"));
  std::optional<Quantity> storage;
  if (auto it = requested.find("storage"); it != requested.end()) storage = it->second;
  if (auto it = allocated.find("storage"); it != allocated.end()) {
    if (!storage || *storage < it->second) storage = it->second;
  }
  if (storage) {
    usage["requests.storage"] = *storage;
    if (!storage_class.empty()) {
      usage[storage_class + std::string(kStorageClassSuffix) + "requests.storage"] = *storage;
    }
  }
  return usage;
}

}  // namespace

bool Evaluator::matches(const std::string& name) const {
  switch (evaluates) {
    case EvaluatorKind::kPods:
      return is_pod_resource(name);
    case EvaluatorKind::kServices:
      return name == "services" || name == "count/services" || name == "services.nodeports" ||
             name == "services.loadbalancers";
    case EvaluatorKind::kPersistentVolumeClaims:
      if (name == "persistentvolumeclaims" || name == "count/persistentvolumeclaims" ||
          name == "requests.storage") {
        return true;
      }
      if (size_t at = name.find(kStorageClassSuffix); at != std::string::npos && at > 0) {
        std::string_view rest = std::string_view(name).substr(at + kStorageClassSuffix.size());
        return rest == "requests.storage" || rest == "persistentvolumeclaims";
      }
      return false;
    case EvaluatorKind::kObjectCount:
      return name == count_name(*this) || (has_legacy_count_name(*this) && name == resource);
  }
  return false;
}

const std::vector<Evaluator>& evaluators() {
  static const std::vector<Evaluator> kEvaluators = [] {
    std::vector<Evaluator> out;
    for (const auto& r : Schema::builtin().resources()) {
      if (!r.namespaced || r.resource == "events") continue;
      if (std::find(r.verbs.begin(), r.verbs.end(), "list") == r.verbs.end()) continue;
      Evaluator e{r.group, r.version, r.resource, r.kind};
      if (r.group.empty() && r.resource == "pods") e.evaluates = EvaluatorKind::kPods;
      if (r.group.empty() && r.resource == "services") e.evaluates = EvaluatorKind::kServices;
      if (r.group.empty() && r.resource == "persistentvolumeclaims") {
        e.evaluates = EvaluatorKind::kPersistentVolumeClaims;
      }
      out.push_back(std::move(e));
    }
    return out;
  }();
  return kEvaluators;
}

std::string Evaluator::qualified_resource() const {
  return group.empty() ? resource : resource + "." + group;
}

bool Evaluator::charges_updates() const {
  return evaluates == EvaluatorKind::kServices ||
         evaluates == EvaluatorKind::kPersistentVolumeClaims;
}

const Evaluator* evaluator_for(std::string_view group, std::string_view resource) {
  for (const auto& e : evaluators()) {
    if (e.group == group && e.resource == resource) return &e;
  }
  return nullptr;
}

std::vector<ScopeRequirement> scopes_of(const Json& quota) {
  std::vector<ScopeRequirement> out;
  const Json& spec = field(quota, "spec");
  const Json& scopes = field(spec, "scopes");
  if (scopes.is_array()) {
    for (const auto& s : scopes) {
      if (s.is_string()) out.push_back({s.get<std::string>(), "Exists", {}});
    }
  }
  const Json& expressions = field(field(spec, "scopeSelector"), "matchExpressions");
  if (expressions.is_array()) {
    for (const auto& e : expressions) {
      ScopeRequirement req{string_field(e, "scopeName"), string_field(e, "operator"), {}};
      const Json& values = field(e, "values");
      if (values.is_array()) {
        for (const auto& v : values) {
          if (v.is_string()) req.values.push_back(v.get<std::string>());
        }
      }
      out.push_back(std::move(req));
    }
  }
  return out;
}

bool matches_scopes(const Evaluator& e, const Json& obj,
                    const std::vector<ScopeRequirement>& scopes) {
  for (const auto& s : scopes) {
    if (e.evaluates != EvaluatorKind::kPods || !pod_matches_scope(obj, s)) return false;
  }
  return true;
}

ResourceList usage_of(const Evaluator& e, const Json& obj, int64_t now_seconds) {
  switch (e.evaluates) {
    case EvaluatorKind::kPods:
      return pod_usage(obj, now_seconds);
    case EvaluatorKind::kServices:
      return service_usage(obj);
    case EvaluatorKind::kPersistentVolumeClaims:
      return pvc_usage(obj);
    case EvaluatorKind::kObjectCount: {
      ResourceList usage;
      usage[count_name(e)] = units(1);
      if (has_legacy_count_name(e)) usage[e.resource] = units(1);
      return usage;
    }
  }
  return {};
}

std::string unmet_constraints(const Evaluator& e, const std::vector<std::string>& required,
                              const Json& obj) {
  if (e.evaluates != EvaluatorKind::kPods) return "";
  // Upstream's backward-compatible rule: quota on cpu or memory makes each container state it.
  static const std::set<std::string> kValidated = {
      "cpu", "memory", "requests.cpu", "requests.memory", "limits.cpu", "limits.memory"};
  std::set<std::string> wanted;
  for (const auto& r : required) {
    if (kValidated.count(r)) wanted.insert(r);
  }
  if (wanted.empty()) return "";
  std::map<std::string, std::set<std::string>> missing;  // resource → container names
  const Json& spec = field(obj, "spec");
  for (const char* list : {"containers", "initContainers"}) {
    const Json& containers = field(spec, list);
    if (!containers.is_array()) continue;
    for (const auto& c : containers) {
      ResourceList requests = container_requests(c);
      ResourceList limits = container_limits(c);
      std::set<std::string> stated;
      for (const std::string r : {"cpu", "memory"}) {
        if (requests.count(r)) {
          stated.insert(r);
          stated.insert("requests." + r);
        }
        if (limits.count(r)) stated.insert("limits." + r);
      }
      for (const auto& w : wanted) {
        if (!stated.count(w)) missing[w].insert(string_field(c, "name"));
      }
    }
  }
  if (missing.empty()) return "";
  std::string out = "must specify ";
  bool first = true;
  for (const auto& [resource, names] : missing) {
    if (!first) out += "; ";
    first = false;
    out += resource + " for: ";
    bool first_name = true;
    for (const auto& n : names) {
      if (!first_name) out += ",";
      first_name = false;
      out += n;
    }
  }
  return out;
}

ResourceList pod_requests(const Json& pod, bool with_overhead) {
  ResourceList requests = aggregate(pod, container_requests);
  if (with_overhead) add(requests, parse_list(field(field(pod, "spec"), "overhead")));
  return requests;
}

ResourceList pod_limits(const Json& pod, bool with_overhead) {
  ResourceList limits = aggregate(pod, container_limits);
  if (!with_overhead) return limits;
  // Overhead adds to limits that are set; an unset limit stays unlimited.
  for (const auto& [name, q] : parse_list(field(field(pod, "spec"), "overhead"))) {
    if (auto it = limits.find(name); it != limits.end()) it->second += q;
  }
  return limits;
}

ResourceList parse_list(const Json& obj) {
  ResourceList out;
  if (!obj.is_object()) return out;
  for (const auto& [name, value] : obj.items()) {
    std::string text;
    if (value.is_string()) {
      text = value.get<std::string>();
    } else if (value.is_number()) {
      text = value.dump();
    } else {
      continue;
    }
    auto q = Quantity::parse(text);
    if (q.is_ok()) out[name] = q.value();
  }
  return out;
}

Json to_json(const ResourceList& list) {
  Json out = Json::object();
  for (const auto& [name, q] : list) out[name] = q.to_string();
  return out;
}

bool equal(const ResourceList& a, const ResourceList& b) {
  if (a.size() != b.size()) return false;
  for (const auto& [name, q] : a) {
    auto it = b.find(name);
    if (it == b.end() || !(it->second == q)) return false;
  }
  return true;
}

void add(ResourceList& into, const ResourceList& other) {
  for (const auto& [name, q] : other) {
    auto it = into.find(name);
    if (it == into.end()) {
      into.emplace(name, q);
    } else {
      it->second += q;
    }
  }
}

std::string to_string(const ResourceList& list) {
  std::string out;
  for (const auto& [name, q] : list) {
    if (!out.empty()) out += ",";
    out += name + "=" + q.to_string();
  }
  return out;
}

}  // namespace skiff::api::quota
