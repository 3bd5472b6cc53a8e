#include "controllers/controller_utils.h"

#include <algorithm>
#include <optional>

#include "controllers/json_fields.h"

namespace skiff::controllers {
namespace {

constexpr auto kExpectationsTtl = std::chrono::minutes(5);

}  // namespace

void Expectations::expect(const std::string& key, int creations, int deletions) {
  std::lock_guard lock(mu_);
  records_[key] = {creations, deletions, clock_.now()};
}

void Expectations::creation_observed(const std::string& key) {
  lower(key, 1, 0);
}

void Expectations::deletion_observed(const std::string& key) {
  lower(key, 0, 1);
}

void Expectations::lower(const std::string& key, int creations, int deletions) {
  std::lock_guard lock(mu_);
  auto it = records_.find(key);
  if (it == records_.end()) return;
  it->second.creations -= creations;
  it->second.deletions -= deletions;
}

bool Expectations::satisfied(const std::string& key) const {
  std::lock_guard lock(mu_);
  auto it = records_.find(key);
  if (it == records_.end()) return true;
  const Record& r = it->second;
  if (r.creations <= 0 && r.deletions <= 0) return true;
  return clock_.now() - r.at > kExpectationsTtl;
}

void Expectations::forget(const std::string& key) {
  std::lock_guard lock(mu_);
  records_.erase(key);
}

const Json& labels_of(const Json& obj) {
  const Json& l = field(field(obj, "metadata"), "labels");
  return l.is_object() ? l : empty_object();
}

std::string api_group_of(std::string_view api_version) {
  size_t slash = api_version.find('/');
  return slash == std::string_view::npos ? "" : std::string(api_version.substr(0, slash));
}

bool is_being_deleted(const Json& obj) {
  return field(obj, "metadata").contains("deletionTimestamp");
}

int64_t created_at(const Json& obj) {
  return parse_rfc3339(field(obj, "metadata").value("creationTimestamp", ""));
}

Json controller_ref(const Json& owner, std::string_view kind, std::string_view api_version) {
  return {{"apiVersion", std::string(api_version)},
          {"kind", std::string(kind)},
          {"name", client::name_of(owner)},
          {"uid", client::uid_of(owner)},
          {"controller", true},
          {"blockOwnerDeletion", true}};
}

bool is_controlled_by(const Json& obj, std::string_view uid) {
  const Json* ref = client::controller_of(obj);
  return ref && ref->value("uid", "") == uid;
}

bool controller_ref_changed(const Json& old_obj, const Json& cur_obj) {
  const Json* old_ref = client::controller_of(old_obj);
  const Json* cur_ref = client::controller_of(cur_obj);
  return (cur_ref == nullptr) != (old_ref == nullptr) || (cur_ref && *cur_ref != *old_ref);
}

ObjectPtr resolve_controller_ref(const client::Informer& owners, const Json& obj,
                                 std::string_view kind, std::string_view group) {
  const Json* ref = client::controller_of(obj);
  if (!ref || ref->value("kind", "") != kind ||
      api_group_of(ref->value("apiVersion", "")) != group) {
    return nullptr;
  }
  ObjectPtr owner = owners.get(client::namespace_of(obj), ref->value("name", ""));
  if (!owner || client::uid_of(*owner) != ref->value("uid", "")) return nullptr;
  return owner;
}

std::vector<ObjectPtr> owners_selecting(const client::Informer& owners, const Json& obj) {
  std::vector<ObjectPtr> out;
  if (labels_of(obj).empty()) return out;
  for (const auto& owner : owners.list(client::namespace_of(obj))) {
    api::LabelSelector selector = selector_of(*owner);
    if (selector.empty() || selector.matches_nothing()) continue;
    if (labels_match(selector, obj)) out.push_back(owner);
  }
  return out;
}

Json pod_from_template(const Json& pod_template, const Json& owner, std::string_view kind,
                       std::string_view api_version, std::string_view generate_name_prefix) {
  Json pod = {{"apiVersion", "v1"}, {"kind", "Pod"}, {"metadata", Json::object()}};
  Json& meta = pod["metadata"];
  if (auto tm = pod_template.find("metadata"); tm != pod_template.end() && tm->is_object()) {
    for (const char* f : {"labels", "annotations", "finalizers"}) {
      if (tm->contains(f)) meta[f] = (*tm)[f];
    }
  }
  meta["generateName"] = std::string(generate_name_prefix) + "-";
  meta["namespace"] = client::namespace_of(owner);
  meta["ownerReferences"] = Json::array({controller_ref(owner, kind, api_version)});
  pod["spec"] = pod_template.value("spec", Json::object());
  return pod;
}

std::string pod_phase(const Json& pod) {
  auto s = pod.find("status");
  if (s == pod.end() || !s->is_object()) return "";
  return s->value("phase", "");
}

bool is_pod_terminating(const Json& pod) {
  return is_being_deleted(pod);
}

bool is_pod_active(const Json& pod) {
  std::string phase = pod_phase(pod);
  return phase != "Succeeded" && phase != "Failed" && !is_pod_terminating(pod);
}

const Json* find_condition(const Json& status, std::string_view type) {
  if (!status.is_object()) return nullptr;
  auto conds = status.find("conditions");
  if (conds == status.end() || !conds->is_array()) return nullptr;
  for (const auto& c : *conds) {
    if (c.value("type", "") == type) return &c;
  }
  return nullptr;
}

bool is_pod_ready(const Json& pod) {
  auto s = pod.find("status");
  if (s == pod.end()) return false;
  const Json* c = find_condition(*s, "Ready");
  return c && c->value("status", "") == "True";
}

bool is_pod_available(const Json& pod, int64_t min_ready_seconds, int64_t now_seconds) {
  if (!is_pod_ready(pod)) return false;
  if (min_ready_seconds <= 0) return true;
  const Json* c = find_condition(pod["status"], "Ready");
  int64_t since = parse_rfc3339(c->value("lastTransitionTime", ""));
  return since >= 0 && since + min_ready_seconds <= now_seconds;
}

api::LabelSelector selector_of(const Json& workload) {
  auto spec = workload.find("spec");
  if (spec == workload.end() || !spec->contains("selector")) return api::LabelSelector::nothing();
  const Json& sel = (*spec)["selector"];
  // ReplicationControllers carry a plain map; everything else a LabelSelector object.
  if (sel.is_object() && !sel.contains("matchLabels") && !sel.contains("matchExpressions")) {
    if (sel.empty()) return api::LabelSelector::nothing();
    auto parsed = api::LabelSelector::from_json(Json{{"matchLabels", sel}});
    return parsed.is_ok() ? parsed.value() : api::LabelSelector::nothing();
  }
  auto parsed = api::LabelSelector::from_json(sel);
  if (!parsed.is_ok() || parsed.value().empty()) return api::LabelSelector::nothing();
  return parsed.value();
}

bool labels_match(const api::LabelSelector& selector, const Json& obj) {
  return selector.matches(labels_of(obj));
}

Result<std::vector<ObjectPtr>> claim_objects(client::ApiClient& api,
                                             const client::Resource& resource, const Json& owner,
                                             std::string_view kind, std::string_view api_version,
                                             const std::function<bool(const Json&)>& match,
                                             const std::vector<ObjectPtr>& objects,
                                             const std::function<Status()>& can_adopt) {
  const std::string owner_uid = client::uid_of(owner);
  const bool owner_deleting = is_being_deleted(owner);
  std::optional<Status> adoptable;  // can_adopt's answer, asked once
  std::vector<ObjectPtr> claimed;
  Status first_error;
  auto note = [&first_error](const Status& s) {
    if (!s.is_ok() && s.code() != StatusCode::kNotFound && first_error.is_ok()) first_error = s;
  };
  for (const auto& obj : objects) {
    const Json* ref = client::controller_of(*obj);
    const bool matches = match(*obj);
    if (ref) {
      if (ref->value("uid", "") != owner_uid) continue;  // someone else's
      if (matches) {
        claimed.push_back(obj);
        continue;
      }
      if (owner_deleting) continue;
      // Release: drop our reference, only from the object we saw (uid precondition).
      Json refs = Json::array();
      for (const auto& r : (*obj)["metadata"]["ownerReferences"]) {
        if (r.value("uid", "") != owner_uid) refs.push_back(r);
      }
      Json patch = {{"metadata", {{"uid", client::uid_of(*obj)}, {"ownerReferences", refs}}}};
      note(api.patch(resource, client::namespace_of(*obj), client::name_of(*obj),
                     client::PatchType::kMerge, patch.dump())
               .status());
      continue;
    }
    if (!matches || owner_deleting || is_being_deleted(*obj)) continue;
    if (!adoptable) adoptable = can_adopt ? can_adopt() : Status::ok();
    if (!adoptable->is_ok()) {
      note(*adoptable);
      continue;
    }
    // Adopt the orphan.
    Json refs = field(*obj, "metadata").value("ownerReferences", Json::array());
    refs.push_back(controller_ref(owner, kind, api_version));
    Json patch = {{"metadata", {{"uid", client::uid_of(*obj)}, {"ownerReferences", refs}}}};
    auto r = api.patch(resource, client::namespace_of(*obj), client::name_of(*obj),
                       client::PatchType::kMerge, patch.dump());
    if (r.is_ok()) {
      claimed.push_back(std::make_shared<const Json>(std::move(r.value())));
    } else {
      note(r.status());
    }
  }
  if (!first_error.is_ok()) return first_error;
  return claimed;
}

Result<std::vector<ObjectPtr>> claim_pods(client::ApiClient& api, const Json& owner,
                                          std::string_view kind, std::string_view api_version,
                                          const api::LabelSelector& selector,
                                          const std::vector<ObjectPtr>& pods_in_namespace) {
  return claim_objects(
      api, client::resources::kPods, owner, kind, api_version,
      [&selector](const Json& pod) { return labels_match(selector, pod); }, pods_in_namespace);
}

void set_condition(Json& status, Json condition, const std::string& now) {
  Json& conds = status["conditions"];
  if (!conds.is_array()) conds = Json::array();
  for (auto& c : conds) {
    if (c.value("type", "") != condition.value("type", "")) continue;
    if (c.value("status", "") == condition.value("status", "") &&
        c.contains("lastTransitionTime")) {
      condition["lastTransitionTime"] = c["lastTransitionTime"];
    } else if (!condition.contains("lastTransitionTime")) {
      condition["lastTransitionTime"] = now;
    }
    c = std::move(condition);
    return;
  }
  if (!condition.contains("lastTransitionTime")) condition["lastTransitionTime"] = now;
  conds.push_back(std::move(condition));
}

}  // namespace skiff::controllers
