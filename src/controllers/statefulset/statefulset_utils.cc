#include "controllers/statefulset/statefulset_utils.h"

#include <climits>
#include <set>

#include "controllers/controller_utils.h"
#include "controllers/json_fields.h"

namespace skiff::controllers::statefulset {
void apply_statefulset_defaults(Json& set) {
  if (!set["spec"].is_object()) set["spec"] = Json::object();
  Json& spec = set["spec"];
  set_default(spec, "replicas", 1);
  set_default(spec, "podManagementPolicy", "OrderedReady");
  set_default(spec, "revisionHistoryLimit", 10);
  set_default(spec, "minReadySeconds", 0);
  if (!spec["updateStrategy"].is_object()) spec["updateStrategy"] = Json::object();
  Json& strategy = spec["updateStrategy"];
  set_default(strategy, "type", "RollingUpdate");
  if (strategy["type"] == "RollingUpdate") {
    if (!strategy["rollingUpdate"].is_object()) strategy["rollingUpdate"] = Json::object();
    set_default(strategy["rollingUpdate"], "partition", 0);
  }
}

ParentAndOrdinal parent_and_ordinal(const std::string& pod_name) {
  ParentAndOrdinal out;
  size_t end = pod_name.size();
  size_t digits = end;
  while (digits > 0 && pod_name[digits - 1] >= '0' && pod_name[digits - 1] <= '9') --digits;
  // At least one digit, preceded by a dash.
  if (digits == end || digits == 0 || pod_name[digits - 1] != '-') return out;
  out.parent = pod_name.substr(0, digits - 1);
  std::string number = pod_name.substr(digits);
  if (number.size() > 10) return out;  // beyond 32 bits: no ordinal, as a failed parse upstream
  long long v = std::stoll(number);
  if (v > INT32_MAX) return out;
  out.ordinal = static_cast<int>(v);
  return out;
}

int ordinal_of(const Json& pod) {
  return parent_and_ordinal(client::name_of(pod)).ordinal;
}

bool is_member_of(const Json& set, const Json& pod) {
  return parent_and_ordinal(client::name_of(pod)).parent == client::name_of(set);
}

int replicas_of(const Json& set) {
  return static_cast<int>(int_field(field(set, "spec"), "replicas", 1));
}

int start_ordinal(const Json& set) {
  return static_cast<int>(int_field(field(field(set, "spec"), "ordinals"), "start", 0));
}

int end_ordinal(const Json& set) {
  return start_ordinal(set) + replicas_of(set) - 1;
}

bool in_ordinal_range(const Json& set, const Json& pod) {
  int ordinal = ordinal_of(pod);
  return ordinal >= start_ordinal(set) && ordinal <= end_ordinal(set);
}

std::string pod_name(const Json& set, int ordinal) {
  return client::name_of(set) + "-" + std::to_string(ordinal);
}

std::string claim_name(const Json& claim_template, const Json& set, int ordinal) {
  return field(claim_template, "metadata").value("name", "") + "-" + client::name_of(set) + "-" +
         std::to_string(ordinal);
}

std::string pod_revision(const Json& pod) {
  const Json& labels = field(field(pod, "metadata"), "labels");
  auto it = labels.find(kRevisionLabel);
  return it != labels.end() && it->is_string() ? it->get<std::string>() : "";
}

std::vector<Json> claims_for(const Json& set, int ordinal) {
  std::vector<Json> claims;
  const Json& templates = field(field(set, "spec"), "volumeClaimTemplates");
  if (!templates.is_array()) return claims;
  const Json& match_labels = field(field(field(set, "spec"), "selector"), "matchLabels");
  for (const auto& t : templates) {
    if (!t.is_object()) continue;
    Json claim = {{"apiVersion", "v1"}, {"kind", "PersistentVolumeClaim"}};
    const Json& tmeta = field(t, "metadata");
    Json meta = Json::object();
    for (const char* f : {"labels", "annotations"}) {
      if (tmeta.contains(f) && tmeta[f].is_object()) meta[f] = tmeta[f];
    }
    meta["name"] = claim_name(t, set, ordinal);
    meta["namespace"] = client::namespace_of(set);
    if (match_labels.is_object()) {
      for (auto it = match_labels.begin(); it != match_labels.end(); ++it) {
        meta["labels"][it.key()] = it.value();
      }
    }
    claim["metadata"] = std::move(meta);
    claim["spec"] = field(t, "spec");
    claims.push_back(std::move(claim));
  }
  return claims;
}

bool identity_matches(const Json& set, const Json& pod) {
  auto [parent, ordinal] = parent_and_ordinal(client::name_of(pod));
  if (ordinal < 0 || parent != client::name_of(set)) return false;
  if (client::name_of(pod) != pod_name(set, ordinal)) return false;
  if (client::namespace_of(pod) != client::namespace_of(set)) return false;
  const Json& labels = field(field(pod, "metadata"), "labels");
  auto it = labels.find(kPodNameLabel);
  return it != labels.end() && *it == client::name_of(pod);
}

bool storage_matches(const Json& set, const Json& pod) {
  int ordinal = ordinal_of(pod);
  if (ordinal < 0) return false;
  const Json& volumes = field(field(pod, "spec"), "volumes");
  const Json& templates = field(field(set, "spec"), "volumeClaimTemplates");
  if (!templates.is_array()) return true;
  for (const auto& t : templates) {
    const std::string name = field(t, "metadata").value("name", "");
    bool found = false;
    if (volumes.is_array()) {
      for (const auto& v : volumes) {
        if (!v.is_object() || v.value("name", "") != name) continue;
        const Json& pvc = field(v, "persistentVolumeClaim");
        found = pvc.is_object() && pvc.value("claimName", "") == claim_name(t, set, ordinal);
        break;
      }
    }
    if (!found) return false;
  }
  return true;
}

void update_identity(const Json& set, Json& pod) {
  int ordinal = ordinal_of(pod);
  Json& meta = pod["metadata"];
  meta["name"] = pod_name(set, ordinal);
  meta["namespace"] = client::namespace_of(set);
  if (!meta["labels"].is_object()) meta["labels"] = Json::object();
  meta["labels"][kPodNameLabel] = meta["name"];
  meta["labels"][kPodIndexLabel] = std::to_string(ordinal);
}

void update_storage(const Json& set, Json& pod) {
  const int ordinal = ordinal_of(pod);
  const Json& templates = field(field(set, "spec"), "volumeClaimTemplates");
  if (!templates.is_array() || templates.empty()) return;
  Json volumes = Json::array();
  std::set<std::string> claimed;
  for (const auto& t : templates) {
    const std::string name = field(t, "metadata").value("name", "");
    if (!claimed.insert(name).second) continue;
    volumes.push_back(
        {{"name", name}, {"persistentVolumeClaim", {{"claimName", claim_name(t, set, ordinal)}}}});
  }
  const Json& current = field(field(pod, "spec"), "volumes");
  if (current.is_array()) {
    for (const auto& v : current) {
      if (v.is_object() && claimed.count(v.value("name", ""))) continue;
      volumes.push_back(v);
    }
  }
  pod["spec"]["volumes"] = std::move(volumes);
}

Json new_stateful_pod(const Json& set, const Json& pod_template, int ordinal,
                      const std::string& revision) {
  Json pod = pod_from_template(pod_template, set, "StatefulSet", "apps/v1", client::name_of(set));
  pod["metadata"]["name"] = pod_name(set, ordinal);
  update_identity(set, pod);
  // Set only at creation: a pod's hostname and subdomain cannot change.
  if (!pod["spec"].is_object()) pod["spec"] = Json::object();
  pod["spec"]["hostname"] = client::name_of(pod);
  std::string service = field(set, "spec").value("serviceName", "");
  if (!service.empty()) pod["spec"]["subdomain"] = service;
  update_storage(set, pod);
  pod["metadata"]["labels"][kRevisionLabel] = revision;
  return pod;
}

bool is_running_and_ready(const Json& pod) {
  return pod_phase(pod) == "Running" && is_pod_ready(pod);
}

bool is_healthy(const Json& pod) {
  return is_running_and_ready(pod) && !is_pod_terminating(pod);
}

bool is_running_and_available(const Json& pod, int64_t min_ready_seconds, int64_t now_seconds) {
  return is_pod_available(pod, min_ready_seconds, now_seconds);
}

}  // namespace skiff::controllers::statefulset
