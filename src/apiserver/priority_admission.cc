// The Priority admission plugin (upstream's plugin/pkg/admission/priority):
// - new pods: spec.priority and spec.preemptionPolicy come from the PriorityClass named by
//   spec.priorityClassName, or from the global default class when none is named (priority 0
//   and PreemptLowerPriority without one); an unknown class, or a priority or policy in the
//   pod that differs from its class's, is refused with 403;
// - updated pods keep the priority and policy they were admitted with;
// - PriorityClasses: only one may be the global default.

#include <mutex>
#include <utility>
#include <vector>

#include "apiserver/admission.h"

namespace skiff::apiserver {
namespace {

using nlohmann::json;

constexpr char kPreemptLowerPriority[] = "PreemptLowerPriority";
constexpr char kClassesPrefix[] = "/registry/priorityclasses/";

bool is_pods(const AdmissionRequest& r) {
  return r.resource && r.resource->group.empty() && r.resource->resource == "pods" &&
         r.subresource.empty();
}

bool is_priority_classes(const AdmissionRequest& r) {
  return r.resource && r.resource->group == "scheduling.k8s.io" &&
         r.resource->resource == "priorityclasses";
}

struct Resolved {
  std::string class_name;
  int64_t priority = 0;
  std::string preemption_policy = kPreemptLowerPriority;
};

void take_class(const json& pc, Resolved& out) {
  out.class_name = pc["metadata"].value("name", "");
  out.priority = pc.value("value", int64_t{0});
  out.preemption_policy = pc.value("preemptionPolicy", std::string(kPreemptLowerPriority));
}

class PriorityAdmission final : public AdmissionPlugin {
 public:
  PriorityAdmission(storage::Store& store, CachedLister list)
      : store_(store), list_(std::move(list)) {}

  std::string_view name() const override { return "Priority"; }

  std::optional<api::ApiError> admit(const AdmissionRequest& request, json& obj) override {
    if (!is_pods(request) || !obj.is_object()) return std::nullopt;
    json& spec = obj["spec"];
    if (!spec.is_object()) return std::nullopt;  // validation reports it
    if (request.operation == AdmissionOperation::kUpdate) {
      // Validation keeps both immutable; an update that leaves them out keeps them.
      if (request.old != nullptr) {
        const json& old_spec = (*request.old).value("spec", json::object());
        for (const char* f : {"priority", "preemptionPolicy"}) {
          if (!spec.contains(f) && old_spec.contains(f)) spec[f] = old_spec[f];
        }
      }
      return std::nullopt;
    }
    Resolved resolved;
    std::string named = spec.value("priorityClassName", "");
    if (named.empty()) {
      auto defaults = global_default();
      if (!defaults.is_ok()) return api::ApiError::from_storage(defaults.status());
      if (defaults->is_object()) take_class(*defaults, resolved);
      if (!resolved.class_name.empty()) spec["priorityClassName"] = resolved.class_name;
    } else {
      auto pc = find_class(named);
      if (!pc.is_ok()) return api::ApiError::from_storage(pc.status());
      if (!pc->is_object()) {
        return admission_forbidden(*request.resource, obj,
                                   "no PriorityClass with name " + named + " was found");
      }
      take_class(*pc, resolved);
    }
    auto given = spec.find("priority");
    if (given != spec.end() && !given->is_null()) {
      if (!given->is_number_integer() || given->get<int64_t>() != resolved.priority) {
        return admission_forbidden(
            *request.resource, obj,
            "the integer value of priority (" + given->dump() +
                ") must not be provided in pod spec; priority admission controller computed " +
                std::to_string(resolved.priority) + " from the given PriorityClass name");
      }
    }
    spec["priority"] = resolved.priority;
    auto policy = spec.find("preemptionPolicy");
    if (policy != spec.end() && !policy->is_null()) {
      if (!policy->is_string() || policy->get<std::string>() != resolved.preemption_policy) {
        std::string shown = policy->is_string() ? policy->get<std::string>() : policy->dump();
        return admission_forbidden(
            *request.resource, obj,
            "the string value of PreemptionPolicy (" + shown +
                ") must not be provided in pod spec; priority admission controller computed " +
                resolved.preemption_policy + " from the given PriorityClass name");
      }
    }
    spec["preemptionPolicy"] = resolved.preemption_policy;
    return std::nullopt;
  }

  std::optional<api::ApiError> validate(const AdmissionRequest& request, const json& obj,
                                        AdmissionWrites&) override {
    if (!is_priority_classes(request) || !obj.is_object()) return std::nullopt;
    if (!obj.value("globalDefault", false)) return std::nullopt;
    auto classes = list_(kClassesPrefix);
    if (!classes.is_ok()) return api::ApiError::from_storage(classes.status());
    const std::string self = obj["metadata"].value("name", "");
    for (const storage::KeyValuePtr& kv : *classes) {
      json pc = json::parse(kv->value, nullptr, false);
      if (!pc.is_object() || !pc.value("globalDefault", false)) continue;
      std::string other = pc["metadata"].value("name", "");
      if (other == self) continue;
      return admission_forbidden(
          *request.resource, obj,
          "PriorityClass " + other + " is already marked as default. Only one default can exist");
    }
    return std::nullopt;
  }

 private:
  // The named class, or null. One the cache does not have (yet) is looked up in the store, so
  // a pod created right after its class finds it.
  Result<json> find_class(const std::string& name) {
    const std::string key = kClassesPrefix + name;
    SKIFF_ASSIGN_OR_RETURN(auto classes, list_(key));
    for (const storage::KeyValuePtr& kv : classes) {
      if (kv->key == key) return json::parse(kv->value, nullptr, false);
    }
    SKIFF_ASSIGN_OR_RETURN(storage::KeyValuePtr stored, store_.get(key));
    if (!stored) return json();
    return json::parse(stored->value, nullptr, false);
  }

  // As upstream's getDefaultPriority: of the classes marked globalDefault, the highest. Every
  // pod create asks, so the answer is kept until a class is added, changed or removed.
  Result<json> global_default() {
    SKIFF_ASSIGN_OR_RETURN(auto classes, list_(kClassesPrefix));
    std::vector<std::pair<std::string, int64_t>> seen;
    seen.reserve(classes.size());
    for (const storage::KeyValuePtr& kv : classes) seen.emplace_back(kv->key, kv->mod_revision);
    std::lock_guard lock(default_mu_);
    if (seen == default_seen_) return default_;
    json best;
    for (const storage::KeyValuePtr& kv : classes) {
      json pc = json::parse(kv->value, nullptr, false);
      if (!pc.is_object() || !pc.value("globalDefault", false)) continue;
      if (!best.is_object() || pc.value("value", int64_t{0}) > best.value("value", int64_t{0})) {
        best = std::move(pc);
      }
    }
    default_seen_ = std::move(seen);
    default_ = best;
    return best;
  }

  storage::Store& store_;
  CachedLister list_;
  std::mutex default_mu_;
  std::vector<std::pair<std::string, int64_t>> default_seen_;  // guarded by default_mu_
  json default_;                                               // guarded by default_mu_
};

}  // namespace

std::unique_ptr<AdmissionPlugin> new_priority_admission(storage::Store& store, CachedLister list) {
  return std::make_unique<PriorityAdmission>(store, std::move(list));
}

}  // namespace skiff::apiserver
