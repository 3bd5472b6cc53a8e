#include "controllers/resourcequota/resourcequota_controller.h"

#include <algorithm>
#include <unordered_map>

#include "api/quota.h"
#include "controllers/json_fields.h"

namespace skiff::controllers {
namespace {

namespace quota = api::quota;
using namespace client::resources;
using quota::Evaluator;
using quota::EvaluatorKind;
using quota::ResourceList;

client::Resource resource_of(const Evaluator& e) {
  return client::Resource{e.group, e.version, e.resource, e.kind, true};
}

// Whether an update of an object can change what it uses (creations and deletions always do).
bool usage_may_change(EvaluatorKind kind, const Json& old_obj, const Json& new_obj) {
  switch (kind) {
    case EvaluatorKind::kPods:
      return member(old_obj, "spec") != member(new_obj, "spec") ||
             member(member(old_obj, "status"), "phase") !=
                 member(member(new_obj, "status"), "phase") ||
             member(member(old_obj, "metadata"), "deletionTimestamp") !=
                 member(member(new_obj, "metadata"), "deletionTimestamp");
    case EvaluatorKind::kServices:
      return member(old_obj, "spec") != member(new_obj, "spec");
    case EvaluatorKind::kPersistentVolumeClaims:
      return member(old_obj, "spec") != member(new_obj, "spec") ||
             member(member(old_obj, "status"), "allocatedResources") !=
                 member(member(new_obj, "status"), "allocatedResources") ||
             member(member(old_obj, "metadata"), "annotations") !=
                 member(member(new_obj, "metadata"), "annotations");
    case EvaluatorKind::kObjectCount:
      return false;
  }
  return false;
}

class ResourceQuotaController : public Controller {
 public:
  explicit ResourceQuotaController(ControllerContext& ctx)
      : ctx_(ctx),
        quotas_(ctx.informers.informer(kResourceQuotas)),
        workers_(
            "resourcequota", queue_, [this](const std::string& key) { return sync(key); },
            [this] { return synced(); }),
        // A full recalculation of every quota each period: usage that no watched event
        // announces (unwatched resources, pods outliving their grace period) is caught up.
        resync_(ctx.options.resource_quota_sync_period, [this] {
          for (const auto& q : quotas_.list()) queue_.add(client::key_of(*q));
        }) {
    for (const auto& r : quota_monitored_resources()) {
      const Evaluator* e = quota::evaluator_for(r.group, r.resource);
      if (!e) continue;  // not served
      client::Informer& informer = ctx.informers.informer(r);
      monitored_[r.display_name()] = &informer;
      informer.add_handlers(
          {[this, e](const ObjectPtr& obj) { replenish(*e, client::namespace_of(*obj)); },
           [this, e](const ObjectPtr& old_obj, const ObjectPtr& obj) {
             if (usage_may_change(e->evaluates, *old_obj, *obj)) {
               replenish(*e, client::namespace_of(*obj));
             }
           },
           [this, e](const ObjectPtr& obj) { replenish(*e, client::namespace_of(*obj)); }});
    }
    // A quota's own changes: a new quota, or new limits, need a calculation.
    quotas_.add_handlers({[this](const ObjectPtr& q) { queue_.add(client::key_of(*q)); },
                          [this](const ObjectPtr& old_q, const ObjectPtr& q) {
                            const Json& old_spec = member(*old_q, "spec");
                            const Json& spec = member(*q, "spec");
                            if (!quota::equal(quota::parse_list(member(old_spec, "hard")),
                                              quota::parse_list(member(spec, "hard"))) ||
                                member(old_spec, "scopes") != member(spec, "scopes") ||
                                member(old_spec, "scopeSelector") !=
                                    member(spec, "scopeSelector")) {
                              queue_.add(client::key_of(*q));
                            }
                          },
                          nullptr});
  }

  ~ResourceQuotaController() override { stop(); }

  std::string_view name() const override { return "resourcequota"; }

  void start() override {
    workers_.start(std::max(1, ctx_.options.workers));
    resync_.start();
  }

  void stop() override {
    resync_.stop();
    workers_.stop();
  }

 private:
  bool synced() const {
    if (!quotas_.has_synced()) return false;
    return std::all_of(monitored_.begin(), monitored_.end(),
                       [](const auto& m) { return m.second->has_synced(); });
  }

  // Something `e` counts changed in `ns`: recalculate the quotas there that track it.
  void replenish(const Evaluator& e, const std::string& ns) {
    for (const auto& q : quotas_.list(ns)) {
      const Json& hard = member(member(*q, "spec"), "hard");
      if (!hard.is_object()) continue;
      for (const auto& [name, value] : hard.items()) {
        if (e.matches(name)) {
          queue_.add(client::key_of(*q));
          break;
        }
      }
    }
  }

  // The objects of `r` in `ns`: from the informer when watched, else listed live.
  Result<std::vector<ObjectPtr>> objects(const client::Resource& r, const std::string& ns) {
    if (auto it = monitored_.find(r.display_name()); it != monitored_.end()) {
      return it->second->list(ns);
    }
    SKIFF_ASSIGN_OR_RETURN(Json listed, ctx_.api.list(r, ns));
    std::vector<ObjectPtr> out;
    if (auto items = listed.find("items"); items != listed.end() && items->is_array()) {
      for (auto& item : *items) out.push_back(std::make_shared<const Json>(std::move(item)));
    }
    return out;
  }

  Status sync(const std::string& key) {
    ObjectPtr cached = quotas_.get(key);
    if (!cached) return Status::ok();
    const Json& q = *cached;
    const std::string ns = client::namespace_of(q);
    const Json& status = member(q, "status");

    ResourceList hard = quota::parse_list(member(member(q, "spec"), "hard"));
    ResourceList old_hard = quota::parse_list(member(status, "hard"));
    ResourceList old_used = quota::parse_list(member(status, "used"));
    bool dirty = !member(status, "hard").is_object() || !member(status, "used").is_object() ||
                 !quota::equal(hard, old_hard);

    // Usage the evaluators cannot compute keeps its last value; the rest is recomputed.
    ResourceList used = old_used;
    std::vector<quota::ScopeRequirement> scopes = quota::scopes_of(q);
    int64_t now = ctx_.clock.now_seconds();
    std::vector<std::string> errors;
    for (const Evaluator& e : quota::evaluators()) {
      ResourceList stats;
      for (const auto& [name, limit] : hard) {
        if (e.matches(name)) stats[name] = api::Quantity();
      }
      if (stats.empty()) continue;
      auto items = objects(resource_of(e), ns);
      if (!items.is_ok()) {
        errors.push_back(e.qualified_resource() + ": " + items.status().message());
        continue;
      }
      for (const auto& item : items.value()) {
        if (!quota::matches_scopes(e, *item, scopes)) continue;
        for (const auto& [name, amount] : quota::usage_of(e, *item, now)) {
          if (auto it = stats.find(name); it != stats.end()) it->second += amount;
        }
      }
      for (auto& [name, amount] : stats) used[name] = std::move(amount);
    }
    // Only what the quota limits is reported.
    for (auto it = used.begin(); it != used.end();) {
      it = hard.count(it->first) ? std::next(it) : used.erase(it);
    }
    dirty = dirty || !quota::equal(used, old_used);

    if (dirty) {
      Json next = q;
      next["status"] = {{"hard", quota::to_json(hard)}, {"used", quota::to_json(used)}};
      auto written = ctx_.api.update(kResourceQuotas, ns, next, {}, "status");
      if (!written.is_ok() && written.status().code() != StatusCode::kNotFound) {
        return written.status();
      }
    }
    if (!errors.empty()) {
      std::string msg = "failed to compute usage of";
      for (const auto& e : errors) msg += " " + e + ";";
      return error(StatusCode::kUnavailable, msg);
    }
    return Status::ok();
  }

  ControllerContext& ctx_;
  client::Informer& quotas_;
  // display name → informer; fixed after construction.
  std::unordered_map<std::string, client::Informer*> monitored_;
  client::WorkQueue queue_;
  QueueWorkers workers_;
  Ticker resync_;
};

}  // namespace

std::vector<client::Resource> quota_monitored_resources() {
  return {kPods,           kServices,       kPersistentVolumeClaims,
          kConfigMaps,     kSecrets,        kReplicationControllers,
          kResourceQuotas, kDeployments,    kReplicaSets,
          kStatefulSets,   kDaemonSets,     kJobs,
          kCronJobs,       kServiceAccounts};
}

std::unique_ptr<Controller> new_resourcequota_controller(ControllerContext& ctx) {
  return std::make_unique<ResourceQuotaController>(ctx);
}

}  // namespace skiff::controllers
