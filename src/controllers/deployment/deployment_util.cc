#include "controllers/deployment/deployment_util.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <set>

#include "controllers/controller_utils.h"
#include "controllers/json_fields.h"

namespace skiff::controllers::deployment {
namespace {

constexpr int64_t kMaxInt32 = INT32_MAX;

std::optional<int64_t> parse_int(const std::string& s) {
  if (s.empty()) return std::nullopt;
  try {
    size_t used = 0;
    long long v = std::stoll(s, &used);
    if (used != s.size()) return std::nullopt;
    return v;
  } catch (...) {
    return std::nullopt;
  }
}

// Annotations a Deployment never hands to its ReplicaSets.
bool skip_copy_annotation(const std::string& key) {
  static const std::set<std::string> kSkip = {"kubectl.kubernetes.io/last-applied-configuration",
                                              kRevisionAnnotation,
                                              kRevisionHistoryAnnotation,
                                              kDesiredReplicasAnnotation,
                                              kMaxReplicasAnnotation,
                                              "deprecated.deployment.rollback.to"};
  return kSkip.count(key) > 0;
}

Json without_hash_label(const Json& pod_template) {
  Json t = pod_template.is_object() ? pod_template : Json::object();
  if (t.contains("metadata") && t["metadata"].is_object() && t["metadata"].contains("labels") &&
      t["metadata"]["labels"].is_object()) {
    t["metadata"]["labels"].erase(kPodTemplateHashLabel);
  }
  return without_empty_values(t);
}

}  // namespace

void apply_deployment_defaults(Json& d) {
  if (!d.contains("spec") || !d["spec"].is_object()) d["spec"] = Json::object();
  Json& spec = d["spec"];
  set_default(spec, "replicas", 1);
  set_default(spec, "revisionHistoryLimit", 10);
  set_default(spec, "progressDeadlineSeconds", 600);
  if (!spec["strategy"].is_object()) spec["strategy"] = Json::object();
  Json& strategy = spec["strategy"];
  set_default(strategy, "type", "RollingUpdate");
  if (strategy["type"] == "RollingUpdate") {
    if (!strategy["rollingUpdate"].is_object()) strategy["rollingUpdate"] = Json::object();
    set_default(strategy["rollingUpdate"], "maxSurge", "25%");
    set_default(strategy["rollingUpdate"], "maxUnavailable", "25%");
  }
}

Result<int> scaled_value(const Json& v, int total, bool round_up) {
  if (v.is_number_integer()) return static_cast<int>(v.get<int64_t>());
  if (!v.is_string()) {
    return error(StatusCode::kInvalidArgument, "invalid value for IntOrString: " + v.dump());
  }
  std::string s = v.get<std::string>();
  if (s.empty() || s.back() != '%') {
    return error(StatusCode::kInvalidArgument,
                 "invalid value for IntOrString: invalid type: string is not a percentage");
  }
  auto percent = parse_int(s.substr(0, s.size() - 1));
  if (!percent) {
    return error(StatusCode::kInvalidArgument, "invalid value \"" + s + "\"");
  }
  double scaled = static_cast<double>(*percent) * static_cast<double>(total) / 100.0;
  return static_cast<int>(round_up ? std::ceil(scaled) : std::floor(scaled));
}

Result<Fenceposts> resolve_fenceposts(const Json& max_surge, const Json& max_unavailable,
                                      int desired) {
  Fenceposts f;
  SKIFF_ASSIGN_OR_RETURN(f.max_surge,
                         scaled_value(max_surge.is_null() ? Json(0) : max_surge, desired, true));
  SKIFF_ASSIGN_OR_RETURN(
      f.max_unavailable,
      scaled_value(max_unavailable.is_null() ? Json(0) : max_unavailable, desired, false));
  // Both zero would leave no room to move: allow one replica down.
  if (f.max_surge == 0 && f.max_unavailable == 0) f.max_unavailable = 1;
  return f;
}

bool is_rolling_update(const Json& d) {
  return field(field(d, "spec"), "strategy").value("type", "RollingUpdate") == "RollingUpdate";
}

namespace {
Result<Fenceposts> fenceposts_of(const Json& d) {
  const Json& ru = field(field(field(d, "spec"), "strategy"), "rollingUpdate");
  Json surge = ru.contains("maxSurge") ? ru["maxSurge"] : Json("25%");
  Json unavailable = ru.contains("maxUnavailable") ? ru["maxUnavailable"] : Json("25%");
  return resolve_fenceposts(surge, unavailable, spec_replicas(d));
}
}  // namespace

int max_surge(const Json& d) {
  if (!is_rolling_update(d)) return 0;
  auto f = fenceposts_of(d);
  return f.is_ok() ? f->max_surge : 0;
}

int max_unavailable(const Json& d) {
  int replicas = spec_replicas(d);
  if (!is_rolling_update(d) || replicas == 0) return 0;
  auto f = fenceposts_of(d);
  if (!f.is_ok()) return 0;
  return std::min(f->max_unavailable, replicas);
}

int spec_replicas(const Json& obj) {
  return static_cast<int>(numeric_int_field(field(obj, "spec"), "replicas", 1));
}

int status_count(const Json& obj, const char* name) {
  return static_cast<int>(numeric_int_field(field(obj, "status"), name, 0));
}

int sum_spec_replicas(const std::vector<ObjectPtr>& rss) {
  int n = 0;
  for (const auto& rs : rss) {
    if (rs) n += spec_replicas(*rs);
  }
  return n;
}

int sum_status(const std::vector<ObjectPtr>& rss, const char* name) {
  int n = 0;
  for (const auto& rs : rss) {
    if (rs) n += status_count(*rs, name);
  }
  return n;
}

Result<int> new_rs_new_replicas(const Json& d, const std::vector<ObjectPtr>& all_rss,
                                const Json& new_rs) {
  const int replicas = spec_replicas(d);
  if (!is_rolling_update(d)) return replicas;
  const Json& ru = field(field(field(d, "spec"), "strategy"), "rollingUpdate");
  SKIFF_ASSIGN_OR_RETURN(
      int surge,
      scaled_value(ru.contains("maxSurge") ? ru["maxSurge"] : Json("25%"), replicas, true));
  const int current = sum_spec_replicas(all_rss);
  const int max_total = replicas + surge;
  const int new_size = spec_replicas(new_rs);
  if (current >= max_total) return new_size;
  // Never beyond the Deployment's size, however much room the surge leaves.
  int scale_up = std::min(max_total - current, replicas - new_size);
  return new_size + scale_up;
}

std::string pod_template_hash(const Json& pod_template, std::optional<int64_t> collision_count) {
  // Keys of nlohmann's default object are sorted, so dump() is canonical.
  const std::string text = without_empty_values(pod_template).dump();
  uint32_t h = 2166136261u;
  auto feed = [&h](unsigned char byte) {
    h ^= byte;
    h *= 16777619u;
  };
  for (unsigned char c : text) feed(c);
  if (collision_count) {
    uint32_t n = static_cast<uint32_t>(*collision_count);
    // Eight little-endian bytes, the upper four zero, as upstream writes them.
    for (int i = 0; i < 8; ++i) feed(i < 4 ? static_cast<unsigned char>(n >> (8 * i)) : 0);
  }
  static const char kAlphabet[] = "bcdfghjklmnpqrstvwxz2456789";
  std::string digits = std::to_string(h);
  std::string out;
  for (unsigned char c : digits) out += kAlphabet[c % (sizeof(kAlphabet) - 1)];
  return out;
}

bool equal_ignore_hash(const Json& a, const Json& b) {
  return without_hash_label(a) == without_hash_label(b);
}

std::string annotation(const Json& obj, const std::string& key) {
  const Json& ann = field(field(obj, "metadata"), "annotations");
  auto it = ann.find(key);
  return it != ann.end() && it->is_string() ? it->get<std::string>() : "";
}

int64_t revision_of(const Json& obj) {
  return parse_int(annotation(obj, kRevisionAnnotation)).value_or(0);
}

int64_t max_revision(const std::vector<ObjectPtr>& rss) {
  int64_t max = 0;
  for (const auto& rs : rss) {
    if (rs) max = std::max(max, revision_of(*rs));
  }
  return max;
}

bool replicas_annotations_need_update(const Json& rs, int desired, int max_replicas) {
  return annotation(rs, kDesiredReplicasAnnotation) != std::to_string(desired) ||
         annotation(rs, kMaxReplicasAnnotation) != std::to_string(max_replicas);
}

bool set_replicas_annotations(Json& rs, int desired, int max_replicas) {
  if (!replicas_annotations_need_update(rs, desired, max_replicas)) return false;
  Json& ann = rs["metadata"]["annotations"];
  if (!ann.is_object()) ann = Json::object();
  ann[kDesiredReplicasAnnotation] = std::to_string(desired);
  ann[kMaxReplicasAnnotation] = std::to_string(max_replicas);
  return true;
}

bool set_new_replica_set_annotations(const Json& d, Json& rs, const std::string& new_revision,
                                     bool exists) {
  Json& ann = rs["metadata"]["annotations"];
  if (!ann.is_object()) ann = Json::object();
  bool changed = false;
  const Json& d_ann = field(field(d, "metadata"), "annotations");
  for (auto it = d_ann.begin(); it != d_ann.end(); ++it) {
    if (skip_copy_annotation(it.key())) continue;
    if (ann.contains(it.key()) && ann[it.key()] == it.value()) continue;
    ann[it.key()] = it.value();
    changed = true;
  }
  const bool had_revision = ann.contains(kRevisionAnnotation);
  const std::string old_revision = had_revision && ann[kRevisionAnnotation].is_string()
                                       ? ann[kRevisionAnnotation].get<std::string>()
                                       : "";
  int64_t old_rev = 0;
  if (!old_revision.empty()) {
    auto parsed = parse_int(old_revision);
    if (!parsed) return changed;  // leave a malformed revision alone
    old_rev = *parsed;
  }
  auto new_rev = parse_int(new_revision);
  if (!new_rev) return changed;
  if (old_rev < *new_rev) {
    ann[kRevisionAnnotation] = new_revision;
    changed = true;
    // This ReplicaSet had a revision: it is being rolled back to. Remember what it was.
    if (had_revision) {
      std::string history = annotation(rs, kRevisionHistoryAnnotation);
      if (history.empty()) {
        ann[kRevisionHistoryAnnotation] = old_revision;
      } else {
        std::vector<std::string> revisions;
        size_t start = 0;
        while (true) {
          size_t comma = history.find(',', start);
          revisions.push_back(history.substr(start, comma - start));
          if (comma == std::string::npos) break;
          start = comma + 1;
        }
        size_t total = history.size() + old_revision.size() + 1;
        size_t first = 0;
        while (total > kMaxRevisionHistoryChars && first < revisions.size()) {
          total -= revisions[first].size() + 1;
          ++first;
        }
        if (total <= kMaxRevisionHistoryChars) {
          std::string joined;
          for (size_t i = first; i < revisions.size(); ++i) joined += revisions[i] + ",";
          joined += old_revision;
          ann[kRevisionHistoryAnnotation] = joined;
        }
      }
    }
  }
  if (!exists && set_replicas_annotations(rs, spec_replicas(d), spec_replicas(d) + max_surge(d))) {
    changed = true;
  }
  return changed;
}

std::optional<int> desired_replicas_annotation(const Json& rs) {
  auto v = parse_int(annotation(rs, kDesiredReplicasAnnotation));
  if (!v) return std::nullopt;
  return static_cast<int>(*v);
}

bool created_before(const Json& a, const Json& b) {
  int64_t ta = created_at(a), tb = created_at(b);
  if (ta != tb) return ta < tb;
  return client::name_of(a) < client::name_of(b);
}

void sort_by_creation(std::vector<ObjectPtr>& rss) {
  std::stable_sort(rss.begin(), rss.end(),
                   [](const ObjectPtr& a, const ObjectPtr& b) { return created_before(*a, *b); });
}

void sort_by_revision(std::vector<ObjectPtr>& rss) {
  std::stable_sort(rss.begin(), rss.end(), [](const ObjectPtr& a, const ObjectPtr& b) {
    int64_t ra = revision_of(*a), rb = revision_of(*b);
    if (ra != rb) return ra < rb;
    return created_before(*a, *b);
  });
}

std::vector<ObjectPtr> active_replica_sets(const std::vector<ObjectPtr>& rss) {
  std::vector<ObjectPtr> out;
  for (const auto& rs : rss) {
    if (rs && spec_replicas(*rs) > 0) out.push_back(rs);
  }
  return out;
}

ObjectPtr find_new_replica_set(const Json& d, std::vector<ObjectPtr> rss) {
  sort_by_creation(rss);
  const Json& tmpl = field(field(d, "spec"), "template");
  for (const auto& rs : rss) {
    // Several can match (e.g. after an upgrade): the oldest wins, deterministically.
    if (equal_ignore_hash(field(field(*rs, "spec"), "template"), tmpl)) return rs;
  }
  return nullptr;
}

int get_proportion(const Json& rs, const Json& d, int to_add, int added) {
  if (spec_replicas(rs) == 0 || to_add == 0 || to_add == added) return 0;
  int fraction;
  const int rs_size = spec_replicas(rs);
  if (spec_replicas(d) == 0) {
    // Scaling to zero: the whole ReplicaSet goes.
    fraction = -rs_size;
  } else {
    const int deployment_replicas = spec_replicas(d) + max_surge(d);
    auto annotated = parse_int(annotation(rs, kMaxReplicasAnnotation));
    // Without the annotation, the Deployment's current size is the best guess.
    int64_t base = annotated ? *annotated : status_count(d, "replicas");
    if (base <= 0) return 0;
    double size = static_cast<double>(rs_size) * deployment_replicas / static_cast<double>(base);
    fraction = static_cast<int>(std::llround(size)) - rs_size;
  }
  const int allowed = to_add - added;
  // Never hand out more than is left to add, nor take more than is left to remove.
  return to_add > 0 ? std::min(fraction, allowed) : std::max(fraction, allowed);
}

ObjectPtr find_active_or_latest(const ObjectPtr& new_rs, std::vector<ObjectPtr> old_rss) {
  if (!new_rs && old_rss.empty()) return nullptr;
  sort_by_creation(old_rss);
  std::reverse(old_rss.begin(), old_rss.end());
  std::vector<ObjectPtr> all = old_rss;
  all.push_back(new_rs);
  std::vector<ObjectPtr> active = active_replica_sets(all);
  if (active.empty()) return new_rs ? new_rs : old_rss.front();
  if (active.size() == 1) return active.front();
  return nullptr;
}

bool is_saturated(const Json& d, const ObjectPtr& rs) {
  if (!rs) return false;
  auto desired = desired_replicas_annotation(*rs);
  if (!desired) return false;
  const int replicas = spec_replicas(d);
  return spec_replicas(*rs) == replicas && *desired == replicas &&
         status_count(*rs, "availableReplicas") == replicas;
}

bool has_progress_deadline(const Json& d) {
  const Json& spec = field(d, "spec");
  return spec.contains("progressDeadlineSeconds") &&
         spec["progressDeadlineSeconds"].is_number_integer() &&
         spec["progressDeadlineSeconds"].get<int64_t>() != kMaxInt32;
}

bool has_revision_history_limit(const Json& d) {
  const Json& spec = field(d, "spec");
  return spec.contains("revisionHistoryLimit") &&
         spec["revisionHistoryLimit"].is_number_integer() &&
         spec["revisionHistoryLimit"].get<int64_t>() != kMaxInt32;
}

Json new_condition(std::string_view type, std::string_view status, std::string_view reason,
                   std::string message, const std::string& now) {
  return {{"type", std::string(type)},     {"status", std::string(status)},
          {"lastUpdateTime", now},         {"lastTransitionTime", now},
          {"reason", std::string(reason)}, {"message", std::move(message)}};
}

const Json* deployment_condition(const Json& status, std::string_view type) {
  return find_condition(status, type);
}

void set_deployment_condition(Json& status, Json condition) {
  const std::string type = condition.value("type", "");
  const Json* current = deployment_condition(status, type);
  if (current && current->value("status", "") == condition.value("status", "") &&
      current->value("reason", "") == condition.value("reason", "")) {
    return;
  }
  if (current && current->value("status", "") == condition.value("status", "") &&
      current->contains("lastTransitionTime")) {
    condition["lastTransitionTime"] = (*current)["lastTransitionTime"];
  }
  remove_deployment_condition(status, type);
  if (!status["conditions"].is_array()) status["conditions"] = Json::array();
  status["conditions"].push_back(std::move(condition));
}

void remove_deployment_condition(Json& status, std::string_view type) {
  if (!status.is_object() || !status.contains("conditions")) return;
  Json kept = Json::array();
  for (const auto& c : status["conditions"]) {
    if (c.value("type", "") != type) kept.push_back(c);
  }
  if (kept.empty()) {
    status.erase("conditions");
  } else {
    status["conditions"] = std::move(kept);
  }
}

bool deployment_complete(const Json& d, const Json& s) {
  const int replicas = spec_replicas(d);
  return numeric_int_field(s, "updatedReplicas") == replicas &&
         numeric_int_field(s, "replicas") == replicas &&
         numeric_int_field(s, "availableReplicas") == replicas &&
         numeric_int_field(s, "observedGeneration") >=
             numeric_int_field(field(d, "metadata"), "generation");
}

bool deployment_progressing(const Json& d, const Json& s) {
  const Json& old = field(d, "status");
  const int64_t old_old_replicas =
      numeric_int_field(old, "replicas") - numeric_int_field(old, "updatedReplicas");
  const int64_t new_old_replicas =
      numeric_int_field(s, "replicas") - numeric_int_field(s, "updatedReplicas");
  return numeric_int_field(s, "updatedReplicas") > numeric_int_field(old, "updatedReplicas") ||
         new_old_replicas < old_old_replicas ||
         numeric_int_field(s, "readyReplicas") > numeric_int_field(old, "readyReplicas") ||
         numeric_int_field(s, "availableReplicas") > numeric_int_field(old, "availableReplicas");
}

bool deployment_timed_out(const Json& d, const Json& s, int64_t now_seconds) {
  if (!has_progress_deadline(d)) return false;
  const Json* c = deployment_condition(s, "Progressing");
  if (!c) return false;
  const std::string reason = c->value("reason", "");
  if (reason == kNewReplicaSetAvailableReason) return false;
  if (reason == kTimedOutReason) return true;
  int64_t from = parse_rfc3339(c->value("lastUpdateTime", ""));
  if (from < 0) return false;
  int64_t deadline = field(d, "spec")["progressDeadlineSeconds"].get<int64_t>();
  return from + deadline < now_seconds;
}

}  // namespace skiff::controllers::deployment
