#include "controllers/endpoints/endpoint_util.h"

#include <charconv>

#include "base/time.h"
#include "controllers/json_fields.h"

namespace skiff::controllers::endpoint_util {
namespace {

const Json* ready_condition(const Json& pod) {
  const Json& conds = member(member(pod, "status"), "conditions");
  if (!conds.is_array()) return nullptr;
  for (const auto& c : conds) {
    if (string_field(c, "type") == "Ready") return &c;
  }
  return nullptr;
}

int64_t pod_trigger_time(const Json& pod) {
  const Json* c = ready_condition(pod);
  if (!c) return -1;
  std::string t = string_field(*c, "lastTransitionTime");
  return t.empty() ? -1 : parse_rfc3339(t);
}

int64_t min_trigger(int64_t current, int64_t value) {
  // As upstream: a zero current is replaced; otherwise the earlier wins (a zero value counts as
  // earliest).
  if (current < 0 || value < current) return value;
  return current;
}

std::optional<int64_t> find_named_port(const Json& containers, const std::string& name,
                                       const std::string& protocol, bool sidecars_only) {
  if (!containers.is_array()) return std::nullopt;
  for (const auto& c : containers) {
    if (sidecars_only && string_field(c, "restartPolicy") != "Always") continue;
    const Json& ports = member(c, "ports");
    if (!ports.is_array()) continue;
    for (const auto& p : ports) {
      if (string_field(p, "name") == name && port_protocol(p) == protocol) {
        const Json& cp = member(p, "containerPort");
        if (cp.is_number_integer()) return cp.get<int64_t>();
      }
    }
  }
  return std::nullopt;
}

}  // namespace

std::optional<api::LabelSelector> service_selector(const Json& service) {
  const Json& sel = member(member(service, "spec"), "selector");
  if (!sel.is_object()) return std::nullopt;
  if (sel.empty()) return api::LabelSelector();
  auto parsed = api::LabelSelector::from_json(Json{{"matchLabels", sel}});
  if (!parsed.is_ok()) return api::LabelSelector::nothing();
  return parsed.value();
}

bool is_service_ip_set(const Json& service) {
  std::string ip = string_field(member(service, "spec"), "clusterIP");
  return !ip.empty() && ip != "None";
}

std::string ip_family_of(std::string_view ip) {
  return ip.find(':') != std::string_view::npos ? "IPv6" : "IPv4";
}

std::string service_ip_family(const Json& service) {
  const Json& spec = member(service, "spec");
  const Json& families = member(spec, "ipFamilies");
  if (families.is_array() && !families.empty() && families[0].is_string()) {
    return families[0].get<std::string>();
  }
  if (is_service_ip_set(service)) return ip_family_of(string_field(spec, "clusterIP"));
  return "IPv4";
}

std::string pod_ip_for_family(const Json& pod, std::string_view family) {
  const Json& status = member(pod, "status");
  const Json& ips = member(status, "podIPs");
  if (ips.is_array()) {
    for (const auto& entry : ips) {
      std::string ip = string_field(entry, "ip");
      if (!ip.empty() && ip_family_of(ip) == family) return ip;
    }
  }
  std::string ip = string_field(status, "podIP");
  if (!ip.empty() && ip_family_of(ip) == family) return ip;
  return "";
}

bool should_pod_be_in_endpoints(const Json& pod, bool include_terminating) {
  const Json& status = member(pod, "status");
  std::string phase = string_field(status, "phase");
  if (phase == "Succeeded" || phase == "Failed") return false;
  const Json& ips = member(status, "podIPs");
  if (string_field(status, "podIP").empty() && (!ips.is_array() || ips.empty())) return false;
  if (!include_terminating && !member(member(pod, "metadata"), "deletionTimestamp").is_null()) {
    return false;
  }
  return true;
}

bool should_set_hostname(const Json& pod, const Json& service) {
  const Json& spec = member(pod, "spec");
  return !string_field(spec, "hostname").empty() &&
         string_field(spec, "subdomain") == client::name_of(service) &&
         client::namespace_of(pod) == client::namespace_of(service);
}

std::string port_protocol(const Json& port) {
  std::string p = string_field(port, "protocol");
  return p.empty() ? "TCP" : p;
}

std::optional<int64_t> find_port(const Json& pod, const Json& service_port) {
  const Json& target = member(service_port, "targetPort");
  if (target.is_string()) {
    std::string name = target.get<std::string>();
    std::string protocol = port_protocol(service_port);
    const Json& spec = member(pod, "spec");
    if (auto p = find_named_port(member(spec, "containers"), name, protocol, false)) return p;
    return find_named_port(member(spec, "initContainers"), name, protocol, true);
  }
  if (target.is_number_integer() && target.get<int64_t>() != 0) return target.get<int64_t>();
  // The API server defaults targetPort to port.
  const Json& port = member(service_port, "port");
  if (target.is_null() && port.is_number_integer()) return port.get<int64_t>();
  return std::nullopt;
}

std::vector<std::string> services_for_pod(const client::Informer& services, const Json& pod) {
  std::vector<std::string> keys;
  const Json& labels = member(member(pod, "metadata"), "labels");
  for (const auto& svc : services.list(client::namespace_of(pod))) {
    auto selector = service_selector(*svc);
    if (!selector) continue;
    if (selector->matches(labels)) keys.push_back(client::key_of(*svc));
  }
  return keys;
}

bool pod_endpoints_changed(const Json& old_pod, const Json& new_pod) {
  const Json& om = member(old_pod, "metadata");
  const Json& nm = member(new_pod, "metadata");
  if (member(om, "labels") != member(nm, "labels")) return true;
  if (member(om, "deletionTimestamp").is_null() != member(nm, "deletionTimestamp").is_null()) {
    return true;
  }
  if (string_field(om, "uid") != string_field(nm, "uid")) return true;
  const Json& os = member(old_pod, "status");
  const Json& ns = member(new_pod, "status");
  for (const char* f : {"podIP", "podIPs", "phase"}) {
    if (member(os, f) != member(ns, f)) return true;
  }
  const Json* orc = ready_condition(old_pod);
  const Json* nrc = ready_condition(new_pod);
  if ((orc == nullptr) != (nrc == nullptr) || (orc && *orc != *nrc)) return true;
  const Json& ospec = member(old_pod, "spec");
  const Json& nspec = member(new_pod, "spec");
  for (const char* f : {"nodeName", "hostname", "subdomain"}) {
    if (member(ospec, f) != member(nspec, f)) return true;
  }
  auto ports_of = [](const Json& spec) {
    Json out = Json::array();
    for (const char* list : {"containers", "initContainers"}) {
      const Json& cs = member(spec, list);
      if (!cs.is_array()) continue;
      for (const auto& c : cs) out.push_back(member(c, "ports"));
    }
    return out;
  };
  return ports_of(ospec) != ports_of(nspec);
}

client::EventHandlers service_handlers(client::WorkQueue& queue) {
  auto enqueue = [&queue](const ObjectPtr& s) { queue.add(client::key_of(*s)); };
  return {.on_add = enqueue,
          .on_update = [enqueue](const ObjectPtr&, const ObjectPtr& s) { enqueue(s); },
          .on_delete = enqueue};
}

client::EventHandlers pod_handlers(const client::Informer& services, client::WorkQueue& queue) {
  auto enqueue = [&services, &queue](const Json& pod) {
    for (const auto& key : services_for_pod(services, pod)) queue.add(key);
  };
  return {.on_add = [enqueue](const ObjectPtr& p) { enqueue(*p); },
          .on_update =
              [enqueue](const ObjectPtr& old_pod, const ObjectPtr& new_pod) {
                if (!pod_endpoints_changed(*old_pod, *new_pod)) return;
                enqueue(*new_pod);
                if (member(member(*old_pod, "metadata"), "labels") !=
                    member(member(*new_pod, "metadata"), "labels")) {
                  enqueue(*old_pod);
                }
              },
          .on_delete = [enqueue](const ObjectPtr& p) { enqueue(*p); }};
}

int64_t resource_version_number(const Json& obj) {
  return parse_resource_version(client::resource_version_of(obj));
}

int64_t parse_resource_version(std::string_view rv) {
  int64_t n = -1;
  auto [ptr, ec] = std::from_chars(rv.data(), rv.data() + rv.size(), n);
  if (ec != std::errc() || ptr != rv.data() + rv.size()) return -1;
  return n;
}

int64_t TriggerTimeTracker::compute(const std::string& service_key, const Json& service,
                                    const std::vector<ObjectPtr>& pods) {
  std::lock_guard lock(mu_);
  State& old = states_[service_key];
  State next;
  int64_t min_changed = -1;
  for (const auto& pod : pods) {
    std::string name = client::name_of(*pod);
    int64_t t = pod_trigger_time(*pod);
    next.pod_triggers[name] = t;
    auto it = old.pod_triggers.find(name);
    int64_t before = it == old.pod_triggers.end() ? -1 : it->second;
    if (before != t) min_changed = min_trigger(min_changed, t);
  }
  std::string created = string_field(member(service, "metadata"), "creationTimestamp");
  next.service_trigger = created.empty() ? -1 : parse_rfc3339(created);
  if (next.service_trigger != old.service_trigger) {
    min_changed = min_trigger(min_changed, next.service_trigger);
  }
  old = std::move(next);
  return min_changed;
}

void TriggerTimeTracker::forget(const std::string& service_key) {
  std::lock_guard lock(mu_);
  states_.erase(service_key);
}

}  // namespace skiff::controllers::endpoint_util
