#include "scheduler/types.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "api/quantity.h"

namespace skiff::scheduler {
namespace {

using nlohmann::json;

const json& field(const json& j, const char* key) {
  static const json kNull;
  if (!j.is_object()) return kNull;
  auto it = j.find(key);
  return it == j.end() ? kNull : *it;
}

std::string str_field(const json& j, const char* key) {
  const json& v = field(j, key);
  return v.is_string() ? v.get<std::string>() : std::string();
}

int64_t int_field(const json& j, const char* key, int64_t fallback) {
  const json& v = field(j, key);
  if (v.is_number_integer()) return v.get<int64_t>();
  if (v.is_number_unsigned()) return static_cast<int64_t>(v.get<uint64_t>());
  return fallback;
}

bool bool_field(const json& j, const char* key) {
  const json& v = field(j, key);
  return v.is_boolean() && v.get<bool>();
}

bool starts_with(std::string_view s, std::string_view p) {
  return s.substr(0, p.size()) == p;
}

// The quantity in the scheduler's unit for `name`: millicores for CPU, units otherwise.
bool quantity_value(const json& q, bool milli, int64_t& out) {
  std::string text;
  if (q.is_string()) {
    text = q.get<std::string>();
  } else if (q.is_number()) {
    text = q.dump();
  } else {
    return false;
  }
  Result<api::Quantity> parsed = api::Quantity::parse(text);
  if (!parsed.is_ok()) return false;
  out = milli ? parsed->milli_value() : parsed->value();
  return true;
}

TaintEffect parse_effect(std::string_view s) {
  if (s == "NoSchedule") return TaintEffect::kNoSchedule;
  if (s == "PreferNoSchedule") return TaintEffect::kPreferNoSchedule;
  if (s == "NoExecute") return TaintEffect::kNoExecute;
  return TaintEffect::kOther;
}

// A container's requests, with limits standing in for requests it leaves unset (what API
// defaulting stores).
Resources container_requests(const json& container) {
  const json& resources = field(container, "resources");
  const json& requests = field(resources, "requests");
  const json& limits = field(resources, "limits");
  Resources r;
  if (requests.is_object()) r.add_list(requests);
  if (limits.is_object()) {
    json missing = json::object();
    for (auto it = limits.begin(); it != limits.end(); ++it) {
      if (!requests.is_object() || !requests.contains(it.key())) missing[it.key()] = it.value();
    }
    if (!missing.empty()) r.add_list(missing);
  }
  return r;
}

bool has_resource(const json& container, const char* name) {
  const json& resources = field(container, "resources");
  const json& requests = field(resources, "requests");
  const json& limits = field(resources, "limits");
  return (requests.is_object() && requests.contains(name)) ||
         (limits.is_object() && limits.contains(name));
}

// Requests with the defaults scoring uses for containers that name no CPU / memory.
Resources non_zero_requests(const json& container) {
  Resources r = container_requests(container);
  Resources out;
  out.milli_cpu = has_resource(container, "cpu") ? r.milli_cpu : kDefaultMilliCpuRequest;
  out.memory = has_resource(container, "memory") ? r.memory : kDefaultMemoryRequest;
  return out;
}

bool is_restartable(const json& init_container) {
  return str_field(init_container, "restartPolicy") == "Always";
}

// Upstream's PodRequests: regular containers summed; restartable init containers add to that
// sum and accumulate; each other init container needs its own requests plus the restartable
// ones started before it; the pod needs the max of both; overhead on top.
template <typename PerContainer>
Resources pod_requests(const json& spec, PerContainer&& per_container) {
  Resources reqs;
  const json& containers = field(spec, "containers");
  if (containers.is_array()) {
    for (const json& c : containers) reqs.add(per_container(c));
  }
  Resources restartable;
  Resources init_max;
  const json& init = field(spec, "initContainers");
  if (init.is_array()) {
    for (const json& c : init) {
      Resources cr = per_container(c);
      if (is_restartable(c)) {
        reqs.add(cr);
        restartable.add(cr);
        init_max.set_max(restartable);
      } else {
        Resources tmp = cr;
        tmp.add(restartable);
        init_max.set_max(tmp);
      }
    }
  }
  reqs.set_max(init_max);
  const json& overhead = field(spec, "overhead");
  if (overhead.is_object()) {
    Resources o;
    o.add_list(overhead);
    reqs.add(o);
  }
  return reqs;
}

void add_host_ports(const json& containers, bool sidecars_only, std::vector<HostPort>& out) {
  if (!containers.is_array()) return;
  for (const json& c : containers) {
    if (sidecars_only && !is_restartable(c)) continue;
    const json& ports = field(c, "ports");
    if (!ports.is_array()) continue;
    for (const json& p : ports) {
      int64_t host_port = int_field(p, "hostPort", 0);
      if (host_port <= 0) continue;
      HostPort hp;
      hp.port = static_cast<int32_t>(host_port);
      std::string ip = str_field(p, "hostIP");
      if (!ip.empty()) hp.ip = ip;
      std::string protocol = str_field(p, "protocol");
      if (!protocol.empty()) hp.protocol = protocol;
      out.push_back(std::move(hp));
    }
  }
}

Result<AffinityTerm> parse_affinity_term(const json& term, const HString& pod_namespace) {
  AffinityTerm out;
  Result<Selector> selector = Selector::from_json(field(term, "labelSelector"));
  if (!selector.is_ok()) return selector.status();
  out.selector = std::move(selector).value();
  const json& namespaces = field(term, "namespaces");
  if (namespaces.is_array()) {
    for (const json& n : namespaces) {
      if (n.is_string()) out.namespaces.emplace_back(n.get<std::string>());
    }
  }
  const json& ns_selector = field(term, "namespaceSelector");
  if (!ns_selector.is_null()) {
    Result<Selector> parsed = Selector::from_json(ns_selector);
    if (!parsed.is_ok()) return parsed.status();
    out.namespace_selector = std::move(parsed).value();
  }
  if (out.namespaces.empty() && !out.namespace_selector) out.namespaces.push_back(pod_namespace);
  out.topology_key = LabelKey(str_field(term, "topologyKey"));
  return out;
}

void parse_affinity_terms(const json& terms, const HString& ns, const char* what,
                          std::vector<AffinityTerm>& out, std::vector<std::string>& errors) {
  if (!terms.is_array()) return;
  for (const json& t : terms) {
    Result<AffinityTerm> parsed = parse_affinity_term(t, ns);
    if (!parsed.is_ok()) {
      errors.push_back(std::string(what) + ": " + parsed.status().message());
      continue;
    }
    out.push_back(std::move(parsed).value());
  }
}

void parse_weighted_terms(const json& terms, const HString& ns, const char* what,
                          std::vector<WeightedAffinityTerm>& out,
                          std::vector<std::string>& errors) {
  if (!terms.is_array()) return;
  for (const json& t : terms) {
    Result<AffinityTerm> parsed = parse_affinity_term(field(t, "podAffinityTerm"), ns);
    if (!parsed.is_ok()) {
      errors.push_back(std::string(what) + ": " + parsed.status().message());
      continue;
    }
    out.push_back({std::move(parsed).value(), static_cast<int32_t>(int_field(t, "weight", 0))});
  }
}

Result<TopologySpreadConstraint> parse_spread_constraint(const json& c, const Labels& pod_labels) {
  TopologySpreadConstraint out;
  out.max_skew = static_cast<int32_t>(int_field(c, "maxSkew", 1));
  out.topology_key = LabelKey(str_field(c, "topologyKey"));
  std::string when = str_field(c, "whenUnsatisfiable");
  out.when_unsatisfiable = when == "ScheduleAnyway" ? UnsatisfiableAction::kScheduleAnyway
                                                    : UnsatisfiableAction::kDoNotSchedule;
  Result<Selector> selector = Selector::from_json(field(c, "labelSelector"));
  if (!selector.is_ok()) return selector.status();
  out.selector = std::move(selector).value();
  const json& keys = field(c, "matchLabelKeys");
  if (keys.is_array()) {
    Labels match;
    for (const json& k : keys) {
      if (!k.is_string()) continue;
      if (const HString* v = pod_labels.find(k.get_ref<const std::string&>())) {
        match.set(k.get_ref<const std::string&>(), v->str());
      }
    }
    if (!match.empty()) {
      // As upstream: the pod's values first, then the selector's own requirements (none when
      // the selector is null).
      Selector merged = Selector::from_labels(match);
      if (!out.selector.matches_nothing()) {
        for (const LabelRequirement& r : out.selector.requirements()) merged.add(r);
      }
      out.selector = std::move(merged);
    }
  }
  out.min_domains = static_cast<int32_t>(int_field(c, "minDomains", 1));
  out.honor_node_affinity = str_field(c, "nodeAffinityPolicy") != "Ignore";
  out.honor_node_taints = str_field(c, "nodeTaintsPolicy") == "Honor";
  return out;
}

}  // namespace

bool is_extended_resource_name(std::string_view name) {
  if (name.find('/') == std::string_view::npos) return false;               // native
  if (name.find("kubernetes.io/") != std::string_view::npos) return false;  // prefixed native
  if (starts_with(name, "requests.")) return false;
  return true;
}

bool is_scalar_resource_name(std::string_view name) {
  return is_extended_resource_name(name) || starts_with(name, "hugepages-") ||
         name.find("kubernetes.io/") != std::string_view::npos ||
         starts_with(name, "attachable-volumes-");
}

// ---- Resources ----

void Resources::add_list(const nlohmann::json& list) {
  if (!list.is_object()) return;
  for (auto it = list.begin(); it != list.end(); ++it) {
    const std::string& name = it.key();
    int64_t v;
    if (name == "cpu") {
      if (quantity_value(*it, true, v)) milli_cpu += v;
    } else if (name == "memory") {
      if (quantity_value(*it, false, v)) memory += v;
    } else if (name == "ephemeral-storage") {
      if (quantity_value(*it, false, v)) ephemeral_storage += v;
    } else if (name == "pods") {
      if (quantity_value(*it, false, v)) allowed_pods += v;
    } else if (is_scalar_resource_name(name)) {
      if (quantity_value(*it, false, v)) add_scalar(name, v);
    }
  }
}

void Resources::add_scalar(std::string_view name, int64_t value) {
  auto it = std::lower_bound(scalar.begin(), scalar.end(), name,
                             [](const auto& a, std::string_view n) { return a.first < n; });
  if (it != scalar.end() && it->first == name) {
    it->second += value;
  } else {
    scalar.insert(it, {std::string(name), value});
  }
}

int64_t Resources::scalar_value(std::string_view name) const {
  for (const auto& [n, v] : scalar) {
    if (n == name) return v;
  }
  return 0;
}

void Resources::add(const Resources& o) {
  milli_cpu += o.milli_cpu;
  memory += o.memory;
  ephemeral_storage += o.ephemeral_storage;
  allowed_pods += o.allowed_pods;
  for (const auto& [n, v] : o.scalar) add_scalar(n, v);
}

void Resources::subtract(const Resources& o) {
  milli_cpu -= o.milli_cpu;
  memory -= o.memory;
  ephemeral_storage -= o.ephemeral_storage;
  allowed_pods -= o.allowed_pods;
  for (const auto& [n, v] : o.scalar) add_scalar(n, -v);
}

void Resources::set_max(const Resources& o) {
  milli_cpu = std::max(milli_cpu, o.milli_cpu);
  memory = std::max(memory, o.memory);
  ephemeral_storage = std::max(ephemeral_storage, o.ephemeral_storage);
  allowed_pods = std::max(allowed_pods, o.allowed_pods);
  for (const auto& [n, v] : o.scalar) {
    int64_t have = scalar_value(n);
    if (v > have) add_scalar(n, v - have);
  }
}

bool Resources::is_zero() const {
  if (milli_cpu != 0 || memory != 0 || ephemeral_storage != 0) return false;
  for (const auto& [n, v] : scalar) {
    if (v != 0) return false;
  }
  return true;
}

// ---- Taints and tolerations ----

std::string_view taint_effect_name(TaintEffect effect) {
  switch (effect) {
    case TaintEffect::kNoSchedule:
      return "NoSchedule";
    case TaintEffect::kPreferNoSchedule:
      return "PreferNoSchedule";
    case TaintEffect::kNoExecute:
      return "NoExecute";
    case TaintEffect::kOther:
      break;
  }
  return "";
}

bool Toleration::tolerates(const Taint& taint) const {
  if (effect && *effect != taint.effect) return false;
  if (!key.empty() && key != taint.key) return false;
  switch (op) {
    case Operator::kEqual:
      return value == taint.value;
    case Operator::kExists:
      return true;
    case Operator::kInvalid:
      return false;
  }
  return false;
}

bool tolerations_tolerate(std::span<const Toleration> tolerations, const Taint& taint) {
  for (const Toleration& t : tolerations) {
    if (t.tolerates(taint)) return true;
  }
  return false;
}

// ---- AffinityTerm ----

bool AffinityTerm::matches(const PodInfo& pod, const NamespaceLabels* ns_lookup) const {
  bool in_namespace = false;
  for (const HString& ns : namespaces) {
    if (ns == pod.namespace_name) {
      in_namespace = true;
      break;
    }
  }
  if (!in_namespace && namespace_selector && !namespace_selector->matches_nothing()) {
    if (namespace_selector->empty()) {
      in_namespace = true;
    } else {
      static const Labels kNoLabels;
      const Labels* labels = ns_lookup ? ns_lookup->namespace_labels(pod.namespace_name) : nullptr;
      in_namespace = namespace_selector->matches(labels ? *labels : kNoLabels);
    }
  }
  return in_namespace && selector.matches(pod.labels);
}

std::string AffinityTerm::fingerprint() const {
  std::string out = selector.fingerprint();
  out += "|ns:";
  for (const HString& n : namespaces) {
    out += n.str();
    out += ',';
  }
  out += "|nss:";
  out += namespace_selector ? namespace_selector->fingerprint() : "<unset>";
  out += "|tk:";
  out += topology_key.str();
  return out;
}

// ---- PodInfo ----

std::string PodInfo::key() const {
  return namespace_name.str() + "/" + name;
}

bool PodInfo::matches_node_selector_and_affinity(const Labels& node_labels,
                                                 const HString& node_name) const {
  for (size_t i = 0; i < node_selector.size(); ++i) {
    const HString* v = node_labels.find(node_selector.key(i));
    if (v == nullptr || *v != node_selector.value(i)) return false;
  }
  if (required_node_affinity && !required_node_affinity->matches(node_labels, node_name)) {
    return false;
  }
  return true;
}

std::shared_ptr<const PodInfo> PodInfo::from_json(std::shared_ptr<const nlohmann::json> pod) {
  SKIFF_CHECK(pod != nullptr, "PodInfo::from_json(nullptr)");
  auto parsed = from_json(*pod);
  auto mutable_info = std::const_pointer_cast<PodInfo>(parsed);
  mutable_info->object = std::move(pod);
  return parsed;
}

std::shared_ptr<const PodInfo> PodInfo::from_json(const nlohmann::json& pod) {
  auto info = std::make_shared<PodInfo>();
  const json& meta = field(pod, "metadata");
  const json& spec = field(pod, "spec");
  const json& status = field(pod, "status");

  info->uid = str_field(meta, "uid");
  info->namespace_name = HString(str_field(meta, "namespace"));
  info->name = str_field(meta, "name");
  info->labels = Labels::from_json(field(meta, "labels"));
  info->terminating = !field(meta, "deletionTimestamp").is_null();
  const json& owners = field(meta, "ownerReferences");
  if (owners.is_array()) {
    for (const json& o : owners) {
      if (bool_field(o, "controller")) {
        info->controller_uid = str_field(o, "uid");
        info->controller_kind = str_field(o, "kind");
        info->controller_uid_hash = hash_string(info->controller_uid);
        break;
      }
    }
  }

  info->node_name = str_field(spec, "nodeName");
  info->scheduler_name = str_field(spec, "schedulerName");
  if (info->scheduler_name.empty()) info->scheduler_name = "default-scheduler";
  info->priority = static_cast<int32_t>(int_field(spec, "priority", 0));
  info->nominated_node_name = str_field(status, "nominatedNodeName");
  info->preempts = str_field(spec, "preemptionPolicy") != "Never";

  info->requests = pod_requests(spec, container_requests);
  Resources non_zero = pod_requests(spec, non_zero_requests);
  info->non_zero_milli_cpu = non_zero.milli_cpu;
  info->non_zero_memory = non_zero.memory;

  // A pod's own "pods" request is meaningless; keep it out of the sums.
  info->requests.allowed_pods = 0;

  const json& node_selector = field(spec, "nodeSelector");
  info->node_selector = Labels::from_json(node_selector);

  const json& affinity = field(spec, "affinity");
  const json& node_affinity = field(affinity, "nodeAffinity");
  const json& required = field(node_affinity, "requiredDuringSchedulingIgnoredDuringExecution");
  if (!required.is_null()) {
    info->required_node_affinity = NodeSelector::from_json(required);
    for (const NodeSelectorTerm& t : info->required_node_affinity->terms()) {
      if (!t.valid()) info->parse_errors.push_back("nodeAffinity: " + t.error());
    }
  }
  const json& preferred = field(node_affinity, "preferredDuringSchedulingIgnoredDuringExecution");
  if (preferred.is_array()) {
    for (const json& p : preferred) {
      PreferredSchedulingTerm term;
      term.weight = static_cast<int32_t>(int_field(p, "weight", 0));
      term.term = NodeSelectorTerm::from_json(field(p, "preference"));
      info->preferred_node_affinity.push_back(std::move(term));
    }
  }

  info->node_constraints_fingerprint = node_selector.dump() + required.dump();

  const json& pod_affinity = field(affinity, "podAffinity");
  const json& pod_anti_affinity = field(affinity, "podAntiAffinity");
  info->has_pod_affinity = !pod_affinity.is_null() || !pod_anti_affinity.is_null();
  const HString& ns = info->namespace_name;
  parse_affinity_terms(field(pod_affinity, "requiredDuringSchedulingIgnoredDuringExecution"), ns,
                       "podAffinity", info->required_affinity, info->parse_errors);
  parse_affinity_terms(field(pod_anti_affinity, "requiredDuringSchedulingIgnoredDuringExecution"),
                       ns, "podAntiAffinity", info->required_anti_affinity, info->parse_errors);
  parse_weighted_terms(field(pod_affinity, "preferredDuringSchedulingIgnoredDuringExecution"), ns,
                       "podAffinity", info->preferred_affinity, info->parse_errors);
  parse_weighted_terms(field(pod_anti_affinity, "preferredDuringSchedulingIgnoredDuringExecution"),
                       ns, "podAntiAffinity", info->preferred_anti_affinity, info->parse_errors);

  const json& tolerations = field(spec, "tolerations");
  info->tolerations_fingerprint = tolerations.dump();
  if (tolerations.is_array()) {
    for (const json& t : tolerations) {
      Toleration tol;
      tol.key = str_field(t, "key");
      std::string op = str_field(t, "operator");
      tol.op = op.empty() || op == "Equal" ? Toleration::Operator::kEqual
               : op == "Exists"            ? Toleration::Operator::kExists
                                           : Toleration::Operator::kInvalid;
      tol.value = str_field(t, "value");
      std::string effect = str_field(t, "effect");
      if (!effect.empty()) tol.effect = parse_effect(effect);
      info->tolerations.push_back(std::move(tol));
    }
  }

  const json& spread = field(spec, "topologySpreadConstraints");
  if (spread.is_array()) {
    for (const json& c : spread) {
      Result<TopologySpreadConstraint> parsed = parse_spread_constraint(c, info->labels);
      if (!parsed.is_ok()) {
        info->parse_errors.push_back("topologySpreadConstraints: " + parsed.status().message());
        continue;
      }
      info->spread_constraints.push_back(std::move(parsed).value());
    }
  }

  add_host_ports(field(spec, "containers"), false, info->host_ports);
  add_host_ports(field(spec, "initContainers"), true, info->host_ports);

  const json& gates = field(spec, "schedulingGates");
  if (gates.is_array()) {
    for (const json& g : gates) info->scheduling_gates.push_back(str_field(g, "name"));
  }
  return info;
}

// ---- Node ----

std::shared_ptr<const Node> Node::from_json(std::shared_ptr<const nlohmann::json> node) {
  SKIFF_CHECK(node != nullptr, "Node::from_json(nullptr)");
  auto parsed = from_json(*node);
  std::const_pointer_cast<Node>(parsed)->object = std::move(node);
  return parsed;
}

std::shared_ptr<const Node> Node::from_json(const nlohmann::json& node) {
  auto info = std::make_shared<Node>();
  const json& meta = field(node, "metadata");
  const json& spec = field(node, "spec");
  const json& status = field(node, "status");
  info->name = HString(str_field(meta, "name"));
  info->uid = str_field(meta, "uid");
  info->labels = Labels::from_json(field(meta, "labels"));
  info->unschedulable = bool_field(spec, "unschedulable");
  const json& taints = field(spec, "taints");
  if (taints.is_array()) {
    for (const json& t : taints) {
      info->taints.push_back(
          {str_field(t, "key"), str_field(t, "value"), parse_effect(str_field(t, "effect"))});
    }
  }
  const json& allocatable = field(status, "allocatable");
  if (allocatable.is_object() && !allocatable.empty()) {
    info->allocatable.add_list(allocatable);
  } else {
    info->allocatable.add_list(field(status, "capacity"));
  }
  const json& conditions = field(status, "conditions");
  if (conditions.is_array()) {
    for (const json& c : conditions) {
      if (str_field(c, "type") != "Ready") continue;
      std::string s = str_field(c, "status");
      info->ready = s == "True"    ? ConditionStatus::kTrue
                    : s == "False" ? ConditionStatus::kFalse
                                   : ConditionStatus::kUnknown;
    }
  }
  auto label = [&](std::string_view a, std::string_view b) -> std::string {
    if (const HString* v = info->labels.find(a)) return v->str();
    if (const HString* v = info->labels.find(b)) return v->str();
    return "";
  };
  std::string region = label(kLabelRegion, "failure-domain.beta.kubernetes.io/region");
  std::string zone = label(kLabelZone, "failure-domain.beta.kubernetes.io/zone");
  if (!region.empty() || !zone.empty()) {
    info->zone_id = region;
    info->zone_id += ":";
    info->zone_id.push_back('\0');
    info->zone_id += ":";
    info->zone_id += zone;
  }
  return info;
}

}  // namespace skiff::scheduler
