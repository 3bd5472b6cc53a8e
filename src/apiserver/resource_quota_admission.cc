// The ResourceQuota admission plugin (upstream's plugin/pkg/admission/resourcequota): an object
// whose usage would take a ResourceQuota of its namespace past status.hard is refused; an
// admitted object's usage is added to the quotas' status.used in the transaction that writes
// the object, so two writers can never both take the last unit.
//
// As upstream, enforcement follows the quota's status (what the resource quota controller has
// observed): a quota without status.hard constrains nothing yet, and one whose status.used
// lacks a resource it constrains refuses objects ("status unknown"). Updates are charged only
// for what they add (services, claims); a write that fails after its usage was charged cannot
// happen here, because the charge and the write commit together.

#include <array>
#include <ctime>
#include <functional>
#include <mutex>
#include <set>

#include "api/quota.h"
#include "apiserver/admission.h"

namespace skiff::apiserver {
namespace {

using nlohmann::json;
namespace quota = api::quota;

constexpr size_t kNamespaceLocks = 64;

const json& field(const json& obj, const char* name) {
  static const json kNull;
  if (!obj.is_object()) return kNull;
  auto it = obj.find(name);
  return it == obj.end() ? kNull : *it;
}

// Only the named resources of `list`.
quota::ResourceList mask(const quota::ResourceList& list, const std::set<std::string>& names) {
  quota::ResourceList out;
  for (const auto& [name, q] : list) {
    if (names.count(name)) out.emplace(name, q);
  }
  return out;
}

std::string join(const std::set<std::string>& names) {
  std::string out;
  for (const auto& n : names) {
    if (!out.empty()) out += ",";
    out += n;
  }
  return out;
}

bool is_zero(const quota::ResourceList& list) {
  for (const auto& [name, q] : list) {
    if (!(q == api::Quantity())) return false;
  }
  return true;
}

// a - b per resource of a, never below zero: an update that frees something leaves the
// release to the controller's recalculation, as upstream.
quota::ResourceList subtract_non_negative(const quota::ResourceList& a,
                                          const quota::ResourceList& b) {
  quota::ResourceList out;
  for (const auto& [name, q] : a) {
    api::Quantity d = q;
    if (auto it = b.find(name); it != b.end()) d -= it->second;
    out.emplace(name, d < api::Quantity() ? api::Quantity() : d);
  }
  return out;
}

struct QuotaState {
  storage::KeyValuePtr kv;
  json object;
  std::string name;
  quota::ResourceList hard;  // status.hard
  quota::ResourceList used;  // status.used
};

class ResourceQuotaAdmission final : public AdmissionPlugin {
 public:
  ResourceQuotaAdmission(storage::Store& store, CachedLister list)
      : store_(store), list_(std::move(list)) {}

  std::string_view name() const override { return "ResourceQuota"; }

  std::optional<api::ApiError> validate(const AdmissionRequest& request, const json& obj,
                                        AdmissionWrites& writes) override {
    // Subresources (status, scale, ...) and cluster-scoped objects are not charged.
    if (!request.subresource.empty() || !request.resource || !request.resource->namespaced ||
        request.ns.empty()) {
      return std::nullopt;
    }
    const quota::Evaluator* e =
        quota::evaluator_for(request.resource->group, request.resource->resource);
    if (!e) return std::nullopt;
    bool update = request.operation == AdmissionOperation::kUpdate;
    if (update && (!e->charges_updates() || !request.old)) return std::nullopt;

    std::string prefix = "/registry/resourcequotas/" + request.ns + "/";
    // The common case, no quota in the namespace, is answered from the cache; a quota that
    // exists is charged from the store's current version of it.
    auto cached = list_(prefix);
    if (!cached.is_ok()) return api::ApiError::from_storage(cached.status());
    if (cached->empty()) return std::nullopt;
    if (!request.dry_run) {
      // Charged writes in one namespace take turns, so they do not keep invalidating each
      // other's compares; the quotas are read once it is this writer's turn.
      auto lock = std::make_shared<std::unique_lock<std::mutex>>(lock_for(request.ns));
      writes.holds.push_back(std::move(lock));
    }
    auto listed = store_.range(storage::KeyRange::prefix(prefix));
    if (!listed.is_ok()) return api::ApiError::from_storage(listed.status());

    // The quotas this object counts against; refuse if one of them cannot be checked.
    std::vector<QuotaState> quotas;
    for (const auto& kv : listed->kvs) {
      json q = json::parse(kv->value, nullptr, false);
      if (!q.is_object()) continue;
      QuotaState s;
      s.kv = kv;
      s.object = std::move(q);
      s.name = field(field(s.object, "metadata"), "name").is_string()
                   ? s.object["metadata"]["name"].get<std::string>()
                   : "";
      const json& status = field(s.object, "status");
      s.hard = quota::parse_list(field(status, "hard"));
      s.used = quota::parse_list(field(status, "used"));
      std::set<std::string> constrained;
      for (const auto& [name, limit] : s.hard) {
        if (e->matches(name)) constrained.insert(name);
      }
      if (constrained.empty()) continue;
      if (!quota::matches_scopes(*e, obj, quota::scopes_of(s.object))) continue;
      std::string unmet = quota::unmet_constraints(
          *e, std::vector<std::string>(constrained.begin(), constrained.end()), obj);
      if (!unmet.empty()) {
        return admission_forbidden(*request.resource, obj,
                                   "failed quota: " + s.name + ": " + unmet);
      }
      for (const auto& name : constrained) {
        if (!s.used.count(name)) {
          return admission_forbidden(
              *request.resource, obj,
              "status unknown for quota: " + s.name + ", resources: " + join(constrained));
        }
      }
      quotas.push_back(std::move(s));
    }
    if (quotas.empty()) return std::nullopt;

    int64_t now = static_cast<int64_t>(std::time(nullptr));
    quota::ResourceList delta = quota::usage_of(*e, obj, now);
    std::set<std::string> negative;
    for (const auto& [name, q] : delta) {
      if (q < api::Quantity()) negative.insert(name);
    }
    if (!negative.empty()) {
      return admission_forbidden(*request.resource, obj,
                                 "quota usage is negative for resource(s): " + join(negative));
    }
    if (update) delta = subtract_non_negative(delta, quota::usage_of(*e, *request.old, now));
    if (is_zero(delta)) return std::nullopt;

    std::vector<std::pair<const QuotaState*, quota::ResourceList>> charged;
    for (const QuotaState& s : quotas) {
      std::set<std::string> hard_names;
      for (const auto& [name, limit] : s.hard) hard_names.insert(name);
      quota::ResourceList requested = mask(delta, hard_names);
      quota::ResourceList next = s.used;
      quota::add(next, requested);
      std::set<std::string> exceeded;
      for (const auto& [name, amount] : requested) {
        auto limit = s.hard.find(name);
        if (limit != s.hard.end() && limit->second < next[name]) exceeded.insert(name);
      }
      if (!exceeded.empty()) {
        return admission_forbidden(*request.resource, obj,
                                   "exceeded quota: " + s.name + ", requested: " +
                                       quota::to_string(mask(requested, exceeded)) +
                                       ", used: " + quota::to_string(mask(s.used, exceeded)) +
                                       ", limited: " + quota::to_string(mask(s.hard, exceeded)));
      }
      if (!quota::equal(next, s.used)) charged.emplace_back(&s, std::move(next));
    }
    if (request.dry_run) return std::nullopt;
    for (auto& [s, next] : charged) {
      json updated = s->object;
      updated["status"]["used"] = quota::to_json(next);
      writes.compares.push_back(storage::Compare::mod_revision(
          s->kv->key, storage::CompareOp::kEqual, s->kv->mod_revision));
      writes.ops.push_back(storage::Op::put(s->kv->key, updated.dump()));
      writes.contention_error = api::ApiError::conflict(
          "resourcequotas", s->name,
          "the object has been modified; please apply your changes to the latest version and "
          "try again");
    }
    return std::nullopt;
  }

 private:
  std::mutex& lock_for(const std::string& ns) {
    return locks_[std::hash<std::string>{}(ns) % kNamespaceLocks];
  }

  storage::Store& store_;
  const CachedLister list_;
  // Striped by namespace; held (through AdmissionWrites::holds) from the quota read to the
  // object's write. Never held while taking another of them.
  std::array<std::mutex, kNamespaceLocks> locks_;
};

}  // namespace

std::unique_ptr<AdmissionPlugin> new_resource_quota_admission(storage::Store& store,
                                                              CachedLister list) {
  return std::make_unique<ResourceQuotaAdmission>(store, std::move(list));
}

}  // namespace skiff::apiserver
