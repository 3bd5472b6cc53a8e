#include "apiserver/strategies.h"

#include <arpa/inet.h>
#include <strings.h>

#include <set>

#include "api/cron_schedule.h"
#include "api/selector.h"
#include "api/validation.h"
#include "apiserver/object.h"
#include "apiserver/service_allocator.h"
#include "base/kubeconfig.h"
#include "base/time.h"

namespace skiff::apiserver {
namespace {

using nlohmann::json;

void set_default(json& obj, const char* field, json value) {
  if (!obj.contains(field) || obj[field].is_null()) obj[field] = std::move(value);
}

// The image's tag: "latest" when absent (digests count as pinned).
bool image_is_latest(const std::string& image) {
  if (image.find('@') != std::string::npos) return false;
  size_t slash = image.rfind('/');
  size_t colon = image.rfind(':');
  if (colon == std::string::npos || (slash != std::string::npos && colon < slash)) return true;
  return image.substr(colon + 1) == "latest";
}

void default_container(json& c) {
  set_default(c, "terminationMessagePath", "/dev/termination-log");
  set_default(c, "terminationMessagePolicy", "File");
  std::string image = c.value("image", "");
  set_default(c, "imagePullPolicy", image_is_latest(image) ? "Always" : "IfNotPresent");
  set_default(c, "resources", json::object());
  if (c.contains("ports") && c["ports"].is_array()) {
    for (json& p : c["ports"]) set_default(p, "protocol", "TCP");
  }
  for (const char* probe : {"livenessProbe", "readinessProbe", "startupProbe"}) {
    if (!c.contains(probe) || !c[probe].is_object()) continue;
    json& p = c[probe];
    set_default(p, "timeoutSeconds", 1);
    set_default(p, "periodSeconds", 10);
    set_default(p, "successThreshold", 1);
    set_default(p, "failureThreshold", 3);
    if (p.contains("httpGet") && p["httpGet"].is_object())
      set_default(p["httpGet"], "scheme", "HTTP");
  }
}

std::string qos_class(const json& spec) {
  bool any = false;
  bool guaranteed = true;
  for (const char* list : {"containers", "initContainers"}) {
    if (!spec.contains(list)) continue;
    for (const json& c : spec[list]) {
      json res = c.value("resources", json::object());
      json req = res.value("requests", json::object());
      json lim = res.value("limits", json::object());
      if (!req.empty() || !lim.empty()) any = true;
      for (const char* r : {"cpu", "memory"}) {
        if (!lim.contains(r)) {
          guaranteed = false;
        } else if (req.contains(r) && req[r] != lim[r]) {
          guaranteed = false;
        }
      }
    }
  }
  if (!any) return "BestEffort";
  return guaranteed ? "Guaranteed" : "Burstable";
}

void validate_containers(const json& list, const std::string& path, bool required,
                         std::set<std::string>& names, api::FieldErrors& errors) {
  if (!list.is_array() || list.empty()) {
    if (required) errors.required(path);
    return;
  }
  for (size_t i = 0; i < list.size(); ++i) {
    const json& c = list[i];
    std::string at = path + "[" + std::to_string(i) + "]";
    std::string name = c.value("name", "");
    if (name.empty()) {
      errors.required(at + ".name");
    } else if (std::string msg = api::check_dns1123_label(name); !msg.empty()) {
      errors.invalid(at + ".name", name, msg);
    } else if (!names.insert(name).second) {
      errors.duplicate(at + ".name", name);
    }
    if (c.value("image", "").empty()) errors.required(at + ".image");
    if (c.contains("ports") && c["ports"].is_array()) {
      for (size_t j = 0; j < c["ports"].size(); ++j) {
        const json& p = c["ports"][j];
        std::string pat = at + ".ports[" + std::to_string(j) + "]";
        if (!p.contains("containerPort")) {
          errors.required(pat + ".containerPort");
        } else if (p["containerPort"].is_number_integer()) {
          int64_t port = p["containerPort"].get<int64_t>();
          if (port < 1 || port > 65535) {
            errors.invalid(pat + ".containerPort", std::to_string(port),
                           "must be between 1 and 65535, inclusive");
          }
        }
        std::string proto = p.value("protocol", "TCP");
        if (proto != "TCP" && proto != "UDP" && proto != "SCTP") {
          errors.not_supported(pat + ".protocol", proto, {"SCTP", "TCP", "UDP"});
        }
      }
    }
    std::string policy = c.value("imagePullPolicy", "IfNotPresent");
    if (policy != "Always" && policy != "IfNotPresent" && policy != "Never") {
      errors.not_supported(at + ".imagePullPolicy", policy, {"Always", "IfNotPresent", "Never"});
    }
  }
}

void default_pod_template(json& obj, const char* path_to_template) {
  if (!obj.contains("spec") || !obj["spec"].is_object()) return;
  json& spec = obj["spec"];
  if (!spec.contains(path_to_template) || !spec[path_to_template].is_object()) return;
  json& tmpl = spec[path_to_template];
  if (tmpl.contains("spec") && tmpl["spec"].is_object()) default_pod_spec(tmpl["spec"]);
}

// replicas >= 0, a selector that is present and matches the template's labels.
void validate_workload(const json& obj, bool map_selector, api::FieldErrors& errors) {
  const json& spec = obj.contains("spec") && obj["spec"].is_object() ? obj["spec"] : json::object();
  if (spec.contains("replicas") && spec["replicas"].is_number_integer() &&
      spec["replicas"].get<int64_t>() < 0) {
    errors.invalid_value("spec.replicas", spec["replicas"], "must be greater than or equal to 0");
  }
  json labels = json::object();
  if (spec.contains("template") && spec["template"].is_object() &&
      spec["template"].contains("metadata") && spec["template"]["metadata"].is_object()) {
    labels = spec["template"]["metadata"].value("labels", json::object());
  }
  if (map_selector) {
    // ReplicationControllers: a plain map, defaulted from the template's labels.
    const json sel = spec.value("selector", json::object());
    for (auto it = sel.begin(); it != sel.end(); ++it) {
      if (!labels.contains(it.key()) || labels[it.key()] != it.value()) {
        errors.invalid_value("spec.template.metadata.labels", labels,
                             "`selector` does not match template `labels`");
        return;
      }
    }
    return;
  }
  if (!spec.contains("selector") || !spec["selector"].is_object()) {
    errors.required("spec.selector");
    return;
  }
  auto selector = api::LabelSelector::from_json(spec["selector"]);
  if (!selector.is_ok()) {
    errors.invalid("spec.selector", spec["selector"].dump(), selector.status().message());
    return;
  }
  if (selector->empty()) {
    errors.invalid("spec.selector", spec["selector"].dump(),
                   "empty selector is invalid for deployment");
    return;
  }
  if (!selector->matches(labels)) {
    errors.invalid_value("spec.template.metadata.labels", labels,
                         "`selector` does not match template `labels`");
  }
}

// A CronJob's jobTemplate: pod defaults for its pod template.
void default_job_template(json& obj) {
  if (!obj.contains("spec") || !obj["spec"].is_object()) return;
  json& spec = obj["spec"];
  if (!spec.contains("jobTemplate") || !spec["jobTemplate"].is_object()) return;
  json& job = spec["jobTemplate"];
  if (!job.contains("spec") || !job["spec"].is_object()) return;
  json& tmpl = job["spec"];
  if (tmpl.contains("template") && tmpl["template"].is_object() &&
      tmpl["template"].contains("spec") && tmpl["template"]["spec"].is_object()) {
    default_pod_spec(tmpl["template"]["spec"]);
  }
}

// Upstream's validateCronJobSpec, but for the rules about TZ in the schedule, which depend on
// the stored object (validate_schedule_zone).
void validate_cronjob(const json& obj, api::FieldErrors& errors) {
  const json spec = obj.value("spec", json::object());
  const json zone_name = spec.value("timeZone", json());
  std::shared_ptr<const api::TimeZone> zone = api::TimeZone::utc();
  if (zone_name.is_string()) {
    const std::string name = zone_name.get<std::string>();
    if (name.empty()) {
      errors.invalid("spec.timeZone", name, "timeZone must be nil or non-empty string");
    } else if (strcasecmp(name.c_str(), "Local") == 0) {
      errors.invalid("spec.timeZone", name,
                     "timeZone must be an explicit time zone as defined in "
                     "https://www.iana.org/time-zones");
    } else if (auto loaded = api::TimeZone::load(name); !loaded.is_ok()) {
      errors.invalid("spec.timeZone", name, "unknown time zone " + name);
    } else {
      zone = *loaded;
    }
  }
  const std::string schedule = spec.value("schedule", "");
  if (schedule.empty()) {
    errors.required("spec.schedule");
  } else if (auto parsed = api::CronSchedule::parse(schedule, zone); !parsed.is_ok()) {
    errors.invalid("spec.schedule", schedule, parsed.status().message());
  }
  if (spec.contains("concurrencyPolicy")) {
    std::string policy = spec.value("concurrencyPolicy", "");
    if (policy.empty()) {
      errors.required("spec.concurrencyPolicy");
    } else if (policy != "Allow" && policy != "Forbid" && policy != "Replace") {
      errors.not_supported("spec.concurrencyPolicy", policy, {"Allow", "Forbid", "Replace"});
    }
  }
  for (const char* f :
       {"startingDeadlineSeconds", "successfulJobsHistoryLimit", "failedJobsHistoryLimit"}) {
    auto it = spec.find(f);
    if (it != spec.end() && it->is_number_integer() && it->get<int64_t>() < 0) {
      errors.invalid_value(std::string("spec.") + f, *it, "must be greater than or equal to 0");
    }
  }
  const json job = spec.value("jobTemplate", json::object()).value("spec", json::object());
  const json tmpl = job.value("template", json::object());
  if (!tmpl.contains("spec") || !tmpl["spec"].is_object()) {
    errors.required("spec.jobTemplate.spec.template.spec");
    return;
  }
  const std::string at = "spec.jobTemplate.spec.template.spec";
  validate_pod_spec(tmpl["spec"], at, errors);
  std::string restart = tmpl["spec"].value("restartPolicy", "");
  if (restart != "OnFailure" && restart != "Never") {
    errors.not_supported(at + ".restartPolicy", restart, {"OnFailure", "Never"});
  }
}

// TZ= and CRON_TZ= in a schedule: refused in new CronJobs (timeZone says it), kept in those that
// already had one, and never together with timeZone.
void validate_schedule_zone(const json& obj, const json* old, api::FieldErrors& errors) {
  const json spec = obj.value("spec", json::object());
  const std::string schedule = spec.value("schedule", "");
  if (schedule.find("TZ") == std::string::npos) return;
  const bool allowed = old && old->value("spec", json::object()).value("schedule", "").find("TZ") !=
                                  std::string::npos;
  if (!allowed) {
    errors.invalid("spec.schedule", schedule,
                   "cannot use TZ or CRON_TZ in schedule, use timeZone field instead");
  } else if (spec.contains("timeZone") && !spec["timeZone"].is_null()) {
    errors.invalid("spec.schedule", schedule,
                   "cannot use both timeZone field and TZ or CRON_TZ in schedule");
  }
}

void validate_template(const json& obj, api::FieldErrors& errors) {
  const json* tmpl = nullptr;
  if (obj.contains("spec") && obj["spec"].is_object() && obj["spec"].contains("template")) {
    tmpl = &obj["spec"]["template"];
  }
  if (!tmpl || !tmpl->is_object()) {
    errors.required("spec.template");
    return;
  }
  if (!tmpl->contains("spec") || !(*tmpl)["spec"].is_object()) {
    errors.required("spec.template.spec");
    return;
  }
  validate_pod_spec((*tmpl)["spec"], "spec.template.spec", errors);
}

// Upstream's validateOnlyAddedTolerations: every existing toleration stays, changed at most in
// its tolerationSeconds; new ones may be added.
void validate_only_added_tolerations(const json& now, const json& before,
                                     api::FieldErrors& errors) {
  if (!before.is_array()) return;
  for (const json& old : before) {
    bool found = false;
    for (const json& t : now.is_array() ? now : json::array()) {
      if (!t.is_object() || !old.is_object()) {
        found |= t == old;
        continue;
      }
      json clone = old;
      clone.erase("tolerationSeconds");
      if (t.contains("tolerationSeconds")) clone["tolerationSeconds"] = t["tolerationSeconds"];
      if (clone == t) {
        found = true;
        break;
      }
    }
    if (!found) {
      errors.forbidden("spec.tolerations",
                       "existing toleration can not be modified except its tolerationSeconds");
      return;
    }
  }
}

// Upstream's validateOnlyDeletedSchedulingGates: gates may be removed, never added.
void validate_only_deleted_scheduling_gates(const json& now, const json& before,
                                            api::FieldErrors& errors) {
  if (!now.is_array()) return;
  std::set<std::string> old_names;
  if (before.is_array()) {
    for (const json& g : before) {
      if (g.is_object()) old_names.insert(g.value("name", ""));
    }
  }
  for (size_t i = 0; i < now.size(); ++i) {
    std::string name = now[i].is_object() ? now[i].value("name", "") : "";
    if (old_names.count(name) == 0) {
      errors.forbidden("spec.schedulingGates[" + std::to_string(i) + "].name",
                       "only deletion is allowed, but found new scheduling gate '" + name + "'");
    }
  }
}

// Pods may change only a few spec fields once created.
void validate_pod_update(const json& obj, const json& old, api::FieldErrors& errors) {
  json a = obj.value("spec", json::object());
  json b = old.value("spec", json::object());
  for (json* s : {&a, &b}) {
    for (const char* list : {"containers", "initContainers"}) {
      if (s->contains(list) && (*s)[list].is_array()) {
        for (json& c : (*s)[list]) c.erase("image");
      }
    }
    s->erase("activeDeadlineSeconds");
    s->erase("tolerations");
    s->erase("terminationGracePeriodSeconds");
    s->erase("schedulingGates");
  }
  if (a != b) {
    errors.forbidden("spec",
                     "pod updates may not change fields other than `spec.containers[*].image`,"
                     "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,"
                     "`spec.tolerations` (only additions to existing tolerations),"
                     "`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was "
                     "previously negative)");
  }
  const json none = json();
  auto spec_field = [&none](const json& pod, const char* field) -> const json& {
    auto spec = pod.find("spec");
    if (spec == pod.end() || !spec->is_object()) return none;
    auto f = spec->find(field);
    return f == spec->end() ? none : *f;
  };
  validate_only_added_tolerations(spec_field(obj, "tolerations"), spec_field(old, "tolerations"),
                                  errors);
  validate_only_deleted_scheduling_gates(spec_field(obj, "schedulingGates"),
                                         spec_field(old, "schedulingGates"), errors);
}

void default_service(json& obj) {
  if (!obj.contains("spec") || !obj["spec"].is_object()) obj["spec"] = json::object();
  json& spec = obj["spec"];
  set_default(spec, "type", "ClusterIP");
  set_default(spec, "sessionAffinity", "None");
  std::string type = spec["type"].is_string() ? spec["type"].get<std::string>() : "";
  if (type != "ExternalName") set_default(spec, "internalTrafficPolicy", "Cluster");
  if (type == "NodePort" || type == "LoadBalancer") {
    set_default(spec, "externalTrafficPolicy", "Cluster");
  }
  if (type == "LoadBalancer") set_default(spec, "allocateLoadBalancerNodePorts", true);
  if (spec.value("sessionAffinity", "") == "ClientIP") {
    json& cfg = spec["sessionAffinityConfig"];
    if (!cfg.is_object()) cfg = json::object();
    if (!cfg.contains("clientIP") || !cfg["clientIP"].is_object()) cfg["clientIP"] = json::object();
    set_default(cfg["clientIP"], "timeoutSeconds", 10800);
  }
  if (spec.contains("ports") && spec["ports"].is_array()) {
    for (json& p : spec["ports"]) {
      if (!p.is_object()) continue;
      set_default(p, "protocol", "TCP");
      if (p.contains("port")) set_default(p, "targetPort", p["port"]);
    }
  }
}

// An update that leaves out the cluster IP or node ports keeps the allocated ones, as upstream.
void keep_allocations(json& obj, const json& old) {
  json& spec = obj["spec"];
  const json& old_spec = old.contains("spec") ? old["spec"] : json::object();
  if (field_value(obj, "spec.type") != "ExternalName" && !spec.contains("clusterIP") &&
      old_spec.contains("clusterIP")) {
    spec["clusterIP"] = old_spec["clusterIP"];
    if (old_spec.contains("clusterIPs")) spec["clusterIPs"] = old_spec["clusterIPs"];
  }
  if (!spec.contains("ports") || !old_spec.contains("ports")) return;
  for (json& p : spec["ports"]) {
    if (!p.is_object() || p.contains("nodePort")) continue;
    for (const json& o : old_spec["ports"]) {
      if (o.value("port", -1) == p.value("port", -2) &&
          o.value("protocol", "TCP") == p.value("protocol", "TCP") && o.contains("nodePort")) {
        p["nodePort"] = o["nodePort"];
      }
    }
  }
}

void validate_service(const json& obj, const ServiceAllocator& allocator,
                      api::FieldErrors& errors) {
  const json& spec = obj.contains("spec") ? obj["spec"] : json::object();
  std::string type = spec.value("type", "ClusterIP");
  if (type != "ClusterIP" && type != "NodePort" && type != "LoadBalancer" &&
      type != "ExternalName") {
    errors.not_supported("spec.type", type,
                         {"ClusterIP", "ExternalName", "LoadBalancer", "NodePort"});
    return;
  }
  std::string ip = spec.value("clusterIP", "");
  if (type == "ExternalName") {
    std::string name = spec.value("externalName", "");
    if (name.empty()) {
      errors.required("spec.externalName");
    } else if (std::string msg = api::check_dns1123_subdomain(name); !msg.empty()) {
      errors.invalid("spec.externalName", name, msg);
    }
  } else if (!ip.empty() && ip != "None" && !allocator.ip_in_range(ip)) {
    in_addr probe{};
    if (inet_pton(AF_INET, ip.c_str(), &probe) != 1) {
      errors.invalid("spec.clusterIPs[0]", ip,
                     "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)");
    }
  }
  bool headless = ip == "None";
  const json ports = spec.value("ports", json::array());
  if (!ports.is_array() || (ports.empty() && type != "ExternalName" && !headless)) {
    errors.required("spec.ports");
    return;
  }
  std::set<std::string> names;
  std::set<std::string> port_protocols;
  for (size_t i = 0; i < ports.size(); ++i) {
    const json& p = ports[i];
    std::string at = "spec.ports[" + std::to_string(i) + "]";
    std::string name = p.value("name", "");
    if (ports.size() > 1 && name.empty()) errors.required(at + ".name");
    if (!name.empty()) {
      if (std::string msg = api::check_dns1123_label(name); !msg.empty()) {
        errors.invalid(at + ".name", name, msg);
      } else if (!names.insert(name).second) {
        errors.duplicate(at + ".name", name);
      }
    }
    int port = p.contains("port") && p["port"].is_number_integer() ? p["port"].get<int>() : 0;
    if (!p.contains("port")) {
      errors.required(at + ".port");
    } else if (port < 1 || port > 65535) {
      errors.invalid(at + ".port", std::to_string(port), "must be between 1 and 65535, inclusive");
    }
    std::string proto = p.value("protocol", "TCP");
    if (proto != "TCP" && proto != "UDP" && proto != "SCTP") {
      errors.not_supported(at + ".protocol", proto, {"SCTP", "TCP", "UDP"});
    } else if (!port_protocols.insert(std::to_string(port) + "/" + proto).second) {
      errors.duplicate(at, "{" + std::to_string(port) + " " + proto + "}");
    }
    if (p.contains("targetPort")) {
      const json& t = p["targetPort"];
      if (t.is_number_integer() && (t.get<int>() < 1 || t.get<int>() > 65535)) {
        errors.invalid(at + ".targetPort", std::to_string(t.get<int>()),
                       "must be between 1 and 65535, inclusive");
      }
    }
    if (p.contains("nodePort") && p["nodePort"].is_number_integer()) {
      int np = p["nodePort"].get<int>();
      if (type == "ClusterIP" || type == "ExternalName") {
        errors.forbidden(at + ".nodePort", "may not be used when `type` is '" + type + "'");
      } else if (np < allocator.node_port_min() || np > allocator.node_port_max()) {
        errors.invalid(at + ".nodePort", std::to_string(np),
                       "provided port is not in the valid range. The range of valid ports is " +
                           std::to_string(allocator.node_port_min()) + "-" +
                           std::to_string(allocator.node_port_max()));
      }
    }
  }
  std::string affinity = spec.value("sessionAffinity", "None");
  if (affinity != "None" && affinity != "ClientIP") {
    errors.not_supported("spec.sessionAffinity", affinity, {"ClientIP", "None"});
  }
}

// events.k8s.io/v1 Events are stored as core/v1 Events; these convert between the two.
const std::pair<const char*, const char*> kEventFieldMap[] = {
    {"involvedObject", "regarding"},
    {"message", "note"},
    {"source", "deprecatedSource"},
    {"firstTimestamp", "deprecatedFirstTimestamp"},
    {"lastTimestamp", "deprecatedLastTimestamp"},
    {"count", "deprecatedCount"},
    {"reportingComponent", "reportingController"},
};

void rename_fields(json& obj, bool core_to_new) {
  for (const auto& [core, next] : kEventFieldMap) {
    const char* from = core_to_new ? core : next;
    const char* to = core_to_new ? next : core;
    if (obj.contains(from)) {
      obj[to] = std::move(obj[from]);
      obj.erase(from);
    }
  }
}

void event_from_core(json& obj) {
  rename_fields(obj, true);
  obj["apiVersion"] = "events.k8s.io/v1";
  obj["kind"] = "Event";
}

void event_to_core(json& obj) {
  rename_fields(obj, false);
  obj["apiVersion"] = "v1";
  obj["kind"] = "Event";
}

// What upstream's admission plugins add to a new pod: the default service account, tolerations
// for not-ready and unreachable nodes (--default-*-toleration-seconds, 300 s), and priority 0
// with the default policy when the Priority plugin is not installed.
// Upstream's DefaultTolerationSeconds admission, which runs on pod creates and updates: a pod
// tolerates not-ready and unreachable nodes for the configured time unless it says otherwise.
void add_default_tolerations(json& spec, const StrategyConfig& config) {
  json& tolerations = spec["tolerations"];
  if (!tolerations.is_array()) tolerations = json::array();
  for (const auto& [key, seconds] :
       {std::pair{"node.kubernetes.io/not-ready", config.not_ready_toleration_seconds},
        std::pair{"node.kubernetes.io/unreachable", config.unreachable_toleration_seconds}}) {
    bool present = false;
    for (const json& t : tolerations) {
      if (t.is_object() && t.value("key", "") == key &&
          (t.value("effect", "") == "NoExecute" || t.value("effect", "") == "")) {
        present = true;
      }
    }
    if (!present) {
      tolerations.push_back({{"key", key},
                             {"operator", "Exists"},
                             {"effect", "NoExecute"},
                             {"tolerationSeconds", seconds}});
    }
  }
}

void admit_pod(json& spec, const StrategyConfig& config) {
  if (!spec.contains("serviceAccountName") || spec["serviceAccountName"] == "") {
    spec["serviceAccountName"] = "default";
  }
  spec["serviceAccount"] = spec["serviceAccountName"];
  add_default_tolerations(spec, config);
  set_default(spec, "priority", 0);
  set_default(spec, "preemptionPolicy", "PreemptLowerPriority");
}

}  // namespace

const std::vector<SystemPriorityClass>& system_priority_classes() {
  static const std::vector<SystemPriorityClass> kClasses = {
      {"system-node-critical", 2000001000,
       "Used for system critical pods that must not be moved from their current node."},
      {"system-cluster-critical", 2000000000,
       "Used for system critical pods that must run in the cluster, but can be moved to "
       "another node if necessary."}};
  return kClasses;
}

void default_pod_spec(json& spec) {
  set_default(spec, "restartPolicy", "Always");
  set_default(spec, "terminationGracePeriodSeconds", 30);
  set_default(spec, "dnsPolicy", "ClusterFirst");
  set_default(spec, "securityContext", json::object());
  set_default(spec, "schedulerName", "default-scheduler");
  set_default(spec, "enableServiceLinks", true);
  if (spec.contains("serviceAccountName") && !spec.contains("serviceAccount")) {
    spec["serviceAccount"] = spec["serviceAccountName"];
  }
  for (const char* list : {"containers", "initContainers"}) {
    if (spec.contains(list) && spec[list].is_array()) {
      for (json& c : spec[list]) default_container(c);
    }
  }
}

void validate_pod_spec(const json& spec, const std::string& path, api::FieldErrors& errors) {
  std::set<std::string> names;
  validate_containers(spec.value("containers", json::array()), path + ".containers", true, names,
                      errors);
  validate_containers(spec.value("initContainers", json()), path + ".initContainers", false, names,
                      errors);
  std::string restart = spec.value("restartPolicy", "Always");
  if (restart != "Always" && restart != "OnFailure" && restart != "Never") {
    errors.not_supported(path + ".restartPolicy", restart, {"Always", "Never", "OnFailure"});
  }
  std::string dns = spec.value("dnsPolicy", "ClusterFirst");
  if (dns != "ClusterFirst" && dns != "ClusterFirstWithHostNet" && dns != "Default" &&
      dns != "None") {
    errors.not_supported(path + ".dnsPolicy", dns,
                         {"ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"});
  }
  // Upstream's validateSchedulingGates.
  if (auto gates = spec.find("schedulingGates"); gates != spec.end() && gates->is_array()) {
    std::set<std::string> seen;
    for (size_t i = 0; i < gates->size(); ++i) {
      const json& g = (*gates)[i];
      std::string field = path + ".schedulingGates[" + std::to_string(i) + "].name";
      std::string name = g.is_object() ? g.value("name", "") : "";
      for (const std::string& e : api::qualified_name_errors(name)) {
        errors.invalid(field, name, e);
      }
      if (!seen.insert(name).second) errors.duplicate(field, name);
    }
  }
}

Status install_strategies(Registry& registry, const StrategyConfig& config) {
  Strategy namespaces;
  namespaces.name_rule = static_cast<int>(api::NameRule::kDns1123Label);
  namespaces.selectable_fields = {"status.phase"};
  namespaces.prepare_for_create = [](json& obj) {
    std::string name = obj["metadata"].value("name", "");
    obj["metadata"]["labels"]["kubernetes.io/metadata.name"] = name;
    obj["spec"]["finalizers"] = json::array({"kubernetes"});
    obj["status"] = json{{"phase", "Active"}};
  };
  namespaces.prepare_for_update = [](json& obj, const json& old) {
    obj["metadata"]["labels"]["kubernetes.io/metadata.name"] = old["metadata"]["name"];
    if (old.contains("spec")) obj["spec"] = old["spec"];
  };
  namespaces.before_delete = [](json& obj) -> std::optional<api::ApiError> {
    std::string name = obj["metadata"].value("name", "");
    if (name == "default" || name == "kube-system" || name == "kube-public") {
      return api::ApiError::forbidden("namespaces \"" + name +
                                      "\" is forbidden: this namespace may not be deleted");
    }
    obj["status"]["phase"] = "Terminating";
    return std::nullopt;
  };
  // The namespace controller empties the namespace, then removes "kubernetes" from
  // spec.finalizers through the finalize subresource; the namespace goes after that.
  namespaces.pending_finalizers = [](const json& obj) {
    auto spec = obj.find("spec");
    if (spec == obj.end() || !spec->is_object()) return false;
    auto f = spec->find("finalizers");
    return f != spec->end() && f->is_array() && !f->empty();
  };
  registry.set_strategy("", "namespaces", std::move(namespaces));

  Strategy pods;
  pods.graceful_delete = true;
  pods.selectable_fields = {
      "spec.nodeName",    "spec.restartPolicy", "spec.schedulerName", "spec.serviceAccountName",
      "spec.hostNetwork", "status.phase",       "status.podIP",       "status.nominatedNodeName"};
  pods.prepare_for_create = [config](json& obj) {
    if (!obj.contains("spec") || !obj["spec"].is_object()) obj["spec"] = json::object();
    default_pod_spec(obj["spec"]);
    admit_pod(obj["spec"], config);
    obj["status"] = json{{"phase", "Pending"}, {"qosClass", qos_class(obj["spec"])}};
    // Upstream's applySchedulingGatedCondition.
    const json& gates = obj["spec"].value("schedulingGates", json::array());
    if (gates.is_array() && !gates.empty()) {
      obj["status"]["conditions"] =
          json::array({{{"type", "PodScheduled"},
                        {"status", "False"},
                        {"reason", "SchedulingGated"},
                        {"message", "Scheduling is blocked due to non-empty scheduling gates"},
                        {"lastProbeTime", nullptr},
                        {"lastTransitionTime", rfc3339_now()}}});
    }
  };
  pods.prepare_for_update = [config](json& obj, const json&) {
    if (obj.contains("spec") && obj["spec"].is_object()) {
      add_default_tolerations(obj["spec"], config);
    }
  };
  pods.validate_create = [](const json& obj, api::FieldErrors& errors) {
    const json spec = obj.value("spec", json::object());
    const json gates = spec.value("schedulingGates", json::array());
    const json node = spec.value("nodeName", json());
    if (gates.is_array() && !gates.empty() && node.is_string() && !node.empty()) {
      errors.forbidden("spec.nodeName",
                       "cannot be set until all schedulingGates have been cleared");
    }
  };
  pods.validate = [](const json& obj, api::FieldErrors& errors) {
    validate_pod_spec(obj.value("spec", json::object()), "spec", errors);
  };
  pods.validate_update = validate_pod_update;
  registry.set_strategy("", "pods", std::move(pods));

  Strategy with_template;
  with_template.tracks_generation = true;
  with_template.prepare_for_create = [](json& obj) { default_pod_template(obj, "template"); };
  with_template.prepare_for_update = [](json& obj, const json&) {
    default_pod_template(obj, "template");
  };
  with_template.validate = validate_template;
  auto validate_apps = [](const json& obj, api::FieldErrors& errors) {
    validate_template(obj, errors);
    validate_workload(obj, false, errors);
  };
  auto selector_immutable = [](const json& obj, const json& old, api::FieldErrors& errors) {
    json now = obj.contains("spec") ? obj["spec"].value("selector", json()) : json();
    json was = old.contains("spec") ? old["spec"].value("selector", json()) : json();
    if (now != was) errors.invalid_value("spec.selector", now, "field is immutable");
  };

  Strategy deployments = with_template;
  deployments.validate = validate_apps;
  deployments.validate_update = selector_immutable;
  auto default_deployment = [](json& obj) {
    json& spec = obj["spec"];
    set_default(spec, "replicas", 1);
    set_default(spec, "revisionHistoryLimit", 10);
    set_default(spec, "progressDeadlineSeconds", 600);
    if (!spec["strategy"].is_object() || !spec["strategy"].contains("type")) {
      json strategy = spec["strategy"].is_object() ? spec["strategy"] : json::object();
      strategy["type"] = "RollingUpdate";
      spec["strategy"] = std::move(strategy);
    }
    if (spec["strategy"].value("type", "") == "RollingUpdate") {
      json& ru = spec["strategy"]["rollingUpdate"];
      if (!ru.is_object()) ru = json::object();
      set_default(ru, "maxSurge", "25%");
      set_default(ru, "maxUnavailable", "25%");
    }
    default_pod_template(obj, "template");
  };
  deployments.prepare_for_create = default_deployment;
  deployments.prepare_for_update = [default_deployment](json& obj, const json&) {
    default_deployment(obj);
  };
  registry.set_strategy("apps", "deployments", std::move(deployments));

  for (const char* r : {"replicasets", "statefulsets", "daemonsets"}) {
    Strategy s = with_template;
    s.selectable_fields = {"status.replicas"};
    s.validate = validate_apps;
    s.validate_update = selector_immutable;
    std::string kind = r;
    // Upstream's defaults: what `kubectl rollout status` and the controllers read.
    auto defaults = [kind](json& obj) {
      json& spec = obj["spec"];
      if (kind != "daemonsets") set_default(spec, "replicas", 1);
      if (kind != "replicasets") {
        set_default(spec, "revisionHistoryLimit", 10);
        json& strategy = spec["updateStrategy"];
        if (!strategy.is_object()) strategy = json::object();
        set_default(strategy, "type", "RollingUpdate");
        if (strategy.value("type", "") == "RollingUpdate") {
          json& ru = strategy["rollingUpdate"];
          if (!ru.is_object()) ru = json::object();
          if (kind == "statefulsets") {
            set_default(ru, "partition", 0);
          } else {
            set_default(ru, "maxUnavailable", 1);
            set_default(ru, "maxSurge", 0);
          }
        }
      }
      if (kind == "statefulsets") {
        set_default(spec, "podManagementPolicy", "OrderedReady");
        json& retention = spec["persistentVolumeClaimRetentionPolicy"];
        if (!retention.is_object()) retention = json::object();
        set_default(retention, "whenDeleted", "Retain");
        set_default(retention, "whenScaled", "Retain");
      }
      default_pod_template(obj, "template");
    };
    s.prepare_for_create = [defaults, kind](json& obj) {
      defaults(obj);
      if (kind == "daemonsets") {
        obj["metadata"]["annotations"]["deprecated.daemonset.template.generation"] = "1";
      }
    };
    s.prepare_for_update = [defaults, kind](json& obj, const json& old) {
      defaults(obj);
      if (kind == "daemonsets") {
        // Counts template changes, as upstream.
        auto generation = std::stoll(old["metadata"]
                                         .value("annotations", json::object())
                                         .value("deprecated.daemonset.template.generation", "1"));
        if (obj["spec"].value("template", json()) != old["spec"].value("template", json())) {
          ++generation;
        }
        obj["metadata"]["annotations"]["deprecated.daemonset.template.generation"] =
            std::to_string(generation);
      }
    };
    registry.set_strategy("apps", r, std::move(s));
  }
  Strategy rcs = with_template;
  rcs.selectable_fields = {"status.replicas"};
  rcs.prepare_for_create = [](json& obj) {
    json& spec = obj["spec"];
    set_default(spec, "replicas", 1);
    // An empty selector is the template's labels, as upstream defaults it.
    if ((!spec.contains("selector") || !spec["selector"].is_object() || spec["selector"].empty()) &&
        spec.contains("template") && spec["template"].is_object() &&
        spec["template"].contains("metadata") && spec["template"]["metadata"].is_object()) {
      spec["selector"] = spec["template"]["metadata"].value("labels", json::object());
    }
    default_pod_template(obj, "template");
  };
  rcs.validate = [](const json& obj, api::FieldErrors& errors) {
    validate_template(obj, errors);
    validate_workload(obj, true, errors);
  };
  registry.set_strategy("", "replicationcontrollers", std::move(rcs));

  Strategy jobs = with_template;
  jobs.selectable_fields = {"status.successful"};
  jobs.prepare_for_create = [](json& obj) {
    json& spec = obj["spec"];
    // As upstream: completions defaults to 1 only when parallelism is unset too; a Job with
    // parallelism and no completions is a work queue.
    bool no_completions = !spec.contains("completions") || spec["completions"].is_null();
    bool no_parallelism = !spec.contains("parallelism") || spec["parallelism"].is_null();
    if (no_completions && no_parallelism) spec["completions"] = 1;
    set_default(spec, "parallelism", 1);
    set_default(spec, "backoffLimit", 6);
    set_default(spec, "completionMode", "NonIndexed");
    set_default(spec, "suspend", false);
    set_default(spec, "podReplacementPolicy", "TerminatingOrFailed");
    std::string uid = obj["metadata"].value("uid", "");
    if (!spec.value("manualSelector", false)) {
      // As upstream: the job's pods are selected by its uid.
      json labels{{"batch.kubernetes.io/controller-uid", uid},
                  {"batch.kubernetes.io/job-name", obj["metadata"].value("name", "")},
                  {"controller-uid", uid},
                  {"job-name", obj["metadata"].value("name", "")}};
      spec["selector"] = json{{"matchLabels", {{"batch.kubernetes.io/controller-uid", uid}}}};
      for (auto it = labels.begin(); it != labels.end(); ++it) {
        spec["template"]["metadata"]["labels"][it.key()] = it.value();
      }
    }
    default_pod_template(obj, "template");
    json& pod = spec["template"]["spec"];
    if (pod.value("restartPolicy", "Always") == "Always") pod["restartPolicy"] = "Never";
  };
  jobs.validate_update = [](const json& obj, const json& old, api::FieldErrors& errors) {
    const json now = obj.value("spec", json::object());
    const json was = old.value("spec", json::object());
    for (const char* field : {"selector", "completions", "completionMode"}) {
      json a = now.value(field, json());
      json b = was.value(field, json());
      if (a != b) errors.invalid_value(std::string("spec.") + field, a, "field is immutable");
    }
    // The pod template may change only while the job is suspended, as upstream allows for
    // scheduling directives.
    if (!was.value("suspend", false) &&
        now.value("template", json()) != was.value("template", json())) {
      errors.invalid_value("spec.template", now.value("template", json()), "field is immutable");
    }
  };
  registry.set_strategy("batch", "jobs", std::move(jobs));

  Strategy cronjobs;
  cronjobs.tracks_generation = true;
  cronjobs.prepare_for_create = [](json& obj) {
    json& spec = obj["spec"];
    set_default(spec, "concurrencyPolicy", "Allow");
    set_default(spec, "suspend", false);
    set_default(spec, "successfulJobsHistoryLimit", 3);
    set_default(spec, "failedJobsHistoryLimit", 1);
    default_job_template(obj);
  };
  cronjobs.prepare_for_update = [](json& obj, const json&) { default_job_template(obj); };
  cronjobs.validate = validate_cronjob;
  cronjobs.validate_create = [](const json& obj, api::FieldErrors& errors) {
    validate_schedule_zone(obj, nullptr, errors);
  };
  cronjobs.validate_update = [](const json& obj, const json& old, api::FieldErrors& errors) {
    validate_schedule_zone(obj, &old, errors);
  };
  registry.set_strategy("batch", "cronjobs", std::move(cronjobs));

  auto created = ServiceAllocator::create(registry.store(), config.service_cidr,
                                          config.node_port_min, config.node_port_max);
  if (!created.is_ok()) return created.status();
  std::shared_ptr<ServiceAllocator> allocator = std::move(created).value();
  Strategy services;
  services.prepare_for_create = [](json& obj) { default_service(obj); };
  services.prepare_for_update = [](json& obj, const json& old) {
    default_service(obj);
    keep_allocations(obj, old);
  };
  services.validate = [allocator](const json& obj, api::FieldErrors& errors) {
    validate_service(obj, *allocator, errors);
  };
  services.validate_update = [](const json& obj, const json& old, api::FieldErrors& errors) {
    std::string ip = field_value(obj, "spec.clusterIP");
    std::string was = field_value(old, "spec.clusterIP");
    bool external = field_value(obj, "spec.type") == "ExternalName" ||
                    field_value(old, "spec.type") == "ExternalName";
    if (!external && !was.empty() && ip != was) {
      errors.invalid("spec.clusterIPs[0]", ip, "field is immutable");
    }
  };
  services.reserve = [allocator](json& obj, const json* old) {
    return allocator->reserve(obj, old);
  };
  services.settle = [allocator](const json* obj, const json* old, bool committed) {
    allocator->settle(obj, old, committed);
  };
  registry.set_strategy("", "services", std::move(services));

  Strategy endpoints;
  endpoints.allow_create_on_update = true;
  registry.set_strategy("", "endpoints", std::move(endpoints));

  Strategy events;
  events.selectable_fields = {"involvedObject.kind",
                              "involvedObject.namespace",
                              "involvedObject.name",
                              "involvedObject.uid",
                              "involvedObject.apiVersion",
                              "involvedObject.resourceVersion",
                              "involvedObject.fieldPath",
                              "reason",
                              "reportingComponent",
                              "source",
                              "type"};
  events.ttl_seconds = config.event_ttl_seconds;
  registry.set_strategy("", "events", std::move(events));
  Strategy new_events;
  new_events.ttl_seconds = config.event_ttl_seconds;
  new_events.from_storage = event_from_core;
  new_events.to_storage = event_to_core;
  new_events.selectable_fields = {"regarding.kind",
                                  "regarding.namespace",
                                  "regarding.name",
                                  "regarding.uid",
                                  "reason",
                                  "reportingController",
                                  "type"};
  registry.set_strategy("events.k8s.io", "events", std::move(new_events));

  Strategy secrets;
  secrets.selectable_fields = {"type"};
  auto fold_string_data = [](json& obj) {
    // stringData is write-only: its entries are merged into data, base64-encoded.
    if (!obj.contains("stringData")) return;
    if (obj["stringData"].is_object()) {
      if (!obj.contains("data") || !obj["data"].is_object()) obj["data"] = json::object();
      for (auto it = obj["stringData"].begin(); it != obj["stringData"].end(); ++it) {
        if (it.value().is_string()) {
          obj["data"][it.key()] = base64_encode(it.value().get<std::string>());
        }
      }
    }
    obj.erase("stringData");
  };
  secrets.prepare_for_create = [fold_string_data](json& obj) {
    set_default(obj, "type", "Opaque");
    fold_string_data(obj);
  };
  secrets.prepare_for_update = [fold_string_data](json& obj, const json& old) {
    set_default(obj, "type", old.value("type", "Opaque"));
    fold_string_data(obj);
  };
  registry.set_strategy("", "secrets", std::move(secrets));

  Strategy nodes;
  nodes.selectable_fields = {"spec.unschedulable"};
  nodes.status_on_create = true;  // as upstream: a kubelet registers its node with status
  registry.set_strategy("", "nodes", std::move(nodes));

  Strategy leases;
  leases.allow_create_on_update = false;
  registry.set_strategy("coordination.k8s.io", "leases", std::move(leases));

  // As upstream's PriorityClass strategy and REST storage: system classes are reserved and
  // cannot be deleted, user classes stay at or below 1,000,000,000, value and policy are fixed.
  Strategy priority_classes;
  priority_classes.prepare_for_create = [](json& obj) {
    set_default(obj, "preemptionPolicy", "PreemptLowerPriority");
  };
  priority_classes.prepare_for_update = [](json& obj, const json& old) {
    set_default(obj, "preemptionPolicy", old.value("preemptionPolicy", "PreemptLowerPriority"));
  };
  priority_classes.validate = [](const json& obj, api::FieldErrors& errors) {
    const std::string name = obj["metadata"].value("name", "");
    const json& value = obj.contains("value") ? obj["value"] : json();
    if (!value.is_number_integer()) {
      errors.required("value");
      return;
    }
    if (name.rfind(kSystemPriorityClassPrefix, 0) == 0) {
      std::string why;
      const SystemPriorityClass* known = nullptr;
      for (const SystemPriorityClass& c : system_priority_classes()) {
        if (c.name == name) known = &c;
      }
      if (!known) {
        why = name + " is not a known system priority class";
      } else if (value.get<int64_t>() != known->value) {
        why = "value of " + name + " PriorityClass must be " + std::to_string(known->value);
      } else if (obj.value("globalDefault", false)) {
        why = "globalDefault of " + name + " PriorityClass must be false";
      }
      if (!why.empty()) {
        errors.forbidden("metadata.name",
                         "priority class names with 'system-' prefix are reserved for system use "
                         "only. error: " +
                             why);
      }
    } else if (value.get<int64_t>() > kHighestUserDefinablePriority) {
      errors.forbidden("value", "maximum allowed value of a user defined priority is " +
                                    std::to_string(kHighestUserDefinablePriority));
    }
    std::string policy = obj.value("preemptionPolicy", "PreemptLowerPriority");
    if (policy != "PreemptLowerPriority" && policy != "Never") {
      errors.not_supported("preemptionPolicy", policy, {"Never", "PreemptLowerPriority"});
    }
  };
  priority_classes.validate_update = [](const json& obj, const json& old,
                                        api::FieldErrors& errors) {
    if (obj.value("value", json()) != old.value("value", json())) {
      errors.forbidden("value", "may not be changed in an update.");
    }
    if (obj.value("preemptionPolicy", json()) != old.value("preemptionPolicy", json())) {
      errors.invalid_value("preemptionPolicy", obj.value("preemptionPolicy", json()),
                           "field is immutable");
    }
  };
  priority_classes.before_delete = [](json& obj) -> std::optional<api::ApiError> {
    const std::string name = obj["metadata"].value("name", "");
    for (const SystemPriorityClass& c : system_priority_classes()) {
      if (c.name != name) continue;
      api::ApiError e = api::ApiError::forbidden(
          "priorityclasses.scheduling.k8s.io \"" + name +
          "\" is forbidden: this is a system priority class and cannot be deleted");
      e.name = name;
      e.group = "scheduling.k8s.io";
      e.kind = "priorityclasses";
      return e;
    }
    return std::nullopt;
  };
  registry.set_strategy("scheduling.k8s.io", "priorityclasses", std::move(priority_classes));
  return Status::ok();
}

}  // namespace skiff::apiserver
