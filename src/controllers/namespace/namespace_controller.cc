#include "controllers/namespace/namespace_controller.h"

#include <algorithm>
#include <map>
#include <set>

#include "api/schema.h"
#include "base/log.h"
#include "controllers/json_fields.h"

namespace skiff::controllers {
namespace {

using client::resources::kNamespaces;
using client::resources::kPods;

// How long to assume objects with finalizers take to go, as upstream does.
constexpr int64_t kFinalizerEstimateSeconds = 15;
// Conflicting writes of the namespace are retried this often before the key is re-queued.
constexpr int kConflictRetries = 5;

bool has_string(const Json& list, std::string_view value) {
  if (!list.is_array()) return false;
  return std::any_of(list.begin(), list.end(),
                     [&](const Json& v) { return v.is_string() && v.get<std::string>() == value; });
}

bool being_deleted(const Json& obj) {
  return member(member(obj, "metadata"), "deletionTimestamp").is_string();
}

// The conditions upstream's namespace deleter maintains, in its order, with the reason and
// message of the "nothing wrong" (status False) variant.
struct ConditionKind {
  const char* type;
  const char* ok_reason;
  const char* ok_message;
};
constexpr ConditionKind kConditionKinds[] = {
    {"NamespaceDeletionDiscoveryFailure", "ResourcesDiscovered",
     "All resources successfully discovered"},
    {"NamespaceDeletionGroupVersionParsingFailure", "ParsedGroupVersions",
     "All legacy kube types successfully parsed"},
    {"NamespaceDeletionContentFailure", "ContentDeleted",
     "All content successfully deleted, may be waiting on finalization"},
    {"NamespaceContentRemaining", "ContentRemoved", "All content successfully removed"},
    {"NamespaceFinalizersRemaining", "ContentRemoved", "All content successfully removed"},
};

struct Condition {
  std::string type, status, reason, message;
};

// What deleting one resource's objects left behind.
struct ResourceOutcome {
  int64_t estimate = 0;  // seconds until what remains is expected to be gone
  size_t remaining = 0;
  std::map<std::string, size_t> finalizers;  // finalizer → objects still carrying it
  Status error;
};

// "pods." or "deployments.apps", as upstream names resources in the NamespaceContentRemaining
// message (resource, dot, group — also for the core group).
std::string gvr_name(const client::Resource& r) {
  return r.resource + "." + r.group;
}

class NamespaceController : public Controller {
 public:
  explicit NamespaceController(ControllerContext& ctx)
      : ctx_(ctx),
        namespaces_(ctx.informers.informer(kNamespaces)),
        resources_(namespaced_resources_to_delete()),
        workers_(
            "namespace", queue_, [this](const std::string& key) { return sync(key); },
            [this] { return namespaces_.has_synced(); }),
        // Re-checks every terminating namespace each period, so a namespace whose content went
        // away without an event about the namespace still finishes.
        resync_(ctx.options.namespace_sync_period, [this] {
          for (const auto& ns : namespaces_.list()) {
            if (being_deleted(*ns)) queue_.add(client::name_of(*ns));
          }
        }) {
    auto enqueue = [this](const ObjectPtr& ns) {
      if (being_deleted(*ns)) queue_.add(client::name_of(*ns));
    };
    namespaces_.add_handlers(
        {enqueue, [enqueue](const ObjectPtr&, const ObjectPtr& ns) { enqueue(ns); }, nullptr});
  }

  ~NamespaceController() override { stop(); }

  std::string_view name() const override { return "namespace"; }

  void start() override {
    workers_.start(std::max(1, ctx_.options.workers));
    resync_.start();
  }

  void stop() override {
    resync_.stop();
    workers_.stop();
  }

 private:
  Status sync(const std::string& name) {
    // Several parties edit a terminating namespace: start from the latest state, not the cache.
    auto got = ctx_.api.get(kNamespaces, "", name);
    if (!got.is_ok()) {
      return got.status().code() == StatusCode::kNotFound ? Status::ok() : got.status();
    }
    Json ns = std::move(got).value();
    if (!being_deleted(ns)) return Status::ok();

    auto marked = retry_on_conflict(std::move(ns), [this](const Json& latest) -> Result<Json> {
      if (member(member(latest, "status"), "phase") == "Terminating") return latest;
      Json next = latest;
      next["status"]["phase"] = "Terminating";
      return ctx_.api.update(kNamespaces, "", next, {}, "status");
    });
    if (!marked.is_ok()) {
      return marked.status().code() == StatusCode::kNotFound ? Status::ok() : marked.status();
    }
    ns = std::move(marked).value();
    if (!being_deleted(ns)) return Status::ok();
    if (!has_string(member(member(ns, "spec"), "finalizers"), kNamespaceFinalizer)) {
      return Status::ok();
    }

    SKIFF_ASSIGN_OR_RETURN(int64_t estimate, delete_all_content(ns));
    if (estimate > 0) {
      // Content is going away on its own (graceful pod termination, finalizers): look again
      // in half the estimate, as upstream does, but at least once a sync period.
      auto delay = std::min<std::chrono::milliseconds>(std::chrono::seconds(estimate / 2 + 1),
                                                       ctx_.options.namespace_sync_period);
      SKIFF_LOG_DEBUG("namespace {}: content remains, estimate {}s", name, estimate);
      queue_.add_after(name, delay);
      return Status::ok();
    }

    auto finalized = retry_on_conflict(std::move(ns), [this](const Json& latest) -> Result<Json> {
      Json next = latest;
      std::set<std::string> kept;
      for (const auto& f : member(member(latest, "spec"), "finalizers")) {
        if (f.is_string() && f.get<std::string>() != kNamespaceFinalizer) {
          kept.insert(f.get<std::string>());
        }
      }
      next["spec"]["finalizers"] = Json(std::vector<std::string>(kept.begin(), kept.end()));
      return ctx_.api.update(kNamespaces, "", next, {}, "finalize");
    });
    if (!finalized.is_ok() && finalized.status().code() != StatusCode::kNotFound) {
      return finalized.status();
    }
    return Status::ok();
  }

  // Applies `write` to the namespace, re-reading it after each conflict; fails if the namespace
  // was replaced (another uid) meanwhile.
  template <typename Write>
  Result<Json> retry_on_conflict(Json ns, Write write) {
    for (int attempt = 0;; ++attempt) {
      auto written = write(ns);
      if (written.is_ok() || written.status().code() != StatusCode::kAborted ||
          attempt + 1 >= kConflictRetries) {
        return written;
      }
      auto latest = ctx_.api.get(kNamespaces, "", client::name_of(ns));
      if (!latest.is_ok()) return latest.status();
      if (client::uid_of(latest.value()) != client::uid_of(ns)) {
        return error(StatusCode::kAborted, "namespace uid has changed across retries");
      }
      ns = std::move(latest).value();
    }
  }

  // Deletes what is in the namespace and records how it went in the namespace's conditions.
  // Returns the estimated seconds until the remaining content is gone (0: nothing remains),
  // or the errors met.
  Result<int64_t> delete_all_content(Json& ns) {
    const std::string ns_name = client::name_of(ns);
    int64_t deleted_at = parse_rfc3339(
        member(member(ns, "metadata"), "deletionTimestamp").get_ref<const std::string&>());
    int64_t estimate = 0;
    std::vector<std::string> errors;
    std::vector<std::string> remaining_resources;
    std::map<std::string, size_t> finalizers;
    for (const auto& r : resources_) {
      ResourceOutcome out = delete_resource(r, ns_name, deleted_at);
      if (!out.error.is_ok()) errors.push_back(out.error.message());
      estimate = std::max(estimate, out.estimate);
      if (out.remaining > 0) {
        remaining_resources.push_back(gvr_name(r) + " has " + std::to_string(out.remaining) +
                                      " resource instances");
        for (const auto& [f, n] : out.finalizers) finalizers[f] += n;
      }
    }

    std::vector<Condition> failing;
    if (!remaining_resources.empty()) {
      std::sort(remaining_resources.begin(), remaining_resources.end());
      failing.push_back({"NamespaceContentRemaining", "True", "SomeResourcesRemain",
                         "Some resources are remaining: " + join(remaining_resources)});
    }
    if (!finalizers.empty()) {
      std::vector<std::string> parts;
      for (const auto& [f, n] : finalizers) {
        parts.push_back(f + " in " + std::to_string(n) + " resource instances");
      }
      std::sort(parts.begin(), parts.end());
      failing.push_back({"NamespaceFinalizersRemaining", "True", "SomeFinalizerRemain",
                         "Some finalizers are remaining: " + join(parts)});
    }
    if (!errors.empty()) {
      std::sort(errors.begin(), errors.end());
      failing.push_back({"NamespaceDeletionContentFailure", "True", "ContentDeletionFailed",
                         "Failed to delete all resource types, " + std::to_string(errors.size()) +
                             " remaining: " + join(errors)});
    }
    if (update_conditions(ns, failing)) {
      auto written = ctx_.api.update(kNamespaces, "", ns, {}, "status");
      if (written.is_ok()) {
        ns = std::move(written).value();
      } else {
        SKIFF_LOG_WARN("namespace {}: couldn't update status conditions: {}", ns_name,
                       written.status().to_string());
      }
    }
    if (!errors.empty()) return error(StatusCode::kUnavailable, join(errors));
    return estimate;
  }

  ResourceOutcome delete_resource(const client::Resource& r, const std::string& ns,
                                  int64_t deleted_at) {
    ResourceOutcome out;
    auto listed = ctx_.api.list(r, ns);
    if (!listed.is_ok()) {
      // A resource the server does not serve (an older server) has nothing to delete.
      if (listed.status().code() != StatusCode::kNotFound) out.error = listed.status();
      return out;
    }
    const Json& items = member(listed.value(), "items");
    if (r.display_name() == kPods.display_name()) {
      out.estimate = pod_termination_estimate(items, deleted_at);
    }
    client::DeleteOptions background;
    background.propagation_policy = "Background";
    for (const auto& item : items) {
      // Objects already on their way out are left to finish (a second delete changes nothing).
      if (being_deleted(item)) continue;
      auto removed = ctx_.api.remove(r, ns, client::name_of(item), background);
      if (!removed.is_ok() && removed.status().code() != StatusCode::kNotFound) {
        out.error = removed.status();
        return out;
      }
    }
    auto after = ctx_.api.list(r, ns);
    if (!after.is_ok()) {
      out.error = after.status();
      return out;
    }
    const Json& left = member(after.value(), "items");
    out.remaining = left.is_array() ? left.size() : 0;
    for (const auto& item : left) {
      for (const auto& f : member(member(item, "metadata"), "finalizers")) {
        if (f.is_string()) ++out.finalizers[f.get<std::string>()];
      }
    }
    // Nothing left: no need to wait out grace periods (upstream waits regardless).
    if (out.remaining == 0) {
      out.estimate = 0;
      return out;
    }
    // Pods within their grace period are expected to remain.
    if (out.estimate > 0) return out;
    if (!out.finalizers.empty()) {
      out.estimate = kFinalizerEstimateSeconds;
      return out;
    }
    out.error = error(StatusCode::kUnavailable,
                      "unexpected items still remain in namespace: " + ns +
                          " for gvr: " + r.api_version() + ", Resource=" + r.resource);
    return out;
  }

  // The longest grace period of the namespace's running pods, or 0 once that long has passed
  // since the namespace's deletion began.
  int64_t pod_termination_estimate(const Json& pods, int64_t deleted_at) const {
    int64_t estimate = 0;
    for (const auto& pod : pods) {
      const Json& phase_field = member(member(pod, "status"), "phase");
      std::string phase = phase_field.is_string() ? phase_field.get<std::string>() : "";
      if (phase == "Succeeded" || phase == "Failed") continue;
      const Json& grace = member(member(pod, "spec"), "terminationGracePeriodSeconds");
      if (grace.is_number_integer()) estimate = std::max(estimate, grace.get<int64_t>());
    }
    if (deleted_at >= 0 && ctx_.clock.now_seconds() - deleted_at >= estimate) return 0;
    return estimate;
  }

  // Sets every condition kind: the failing ones as given, the others to their status False
  // variant. True when something changed.
  bool update_conditions(Json& ns, const std::vector<Condition>& failing) const {
    Json& status = ns["status"];
    if (!status.contains("conditions") || !status["conditions"].is_array()) {
      status["conditions"] = Json::array();
    }
    Json& conditions = status["conditions"];
    const std::string now = rfc3339(ctx_.clock.now_seconds());
    bool changed = false;
    for (const auto& kind : kConditionKinds) {
      Condition want{kind.type, "False", kind.ok_reason, kind.ok_message};
      for (const auto& f : failing) {
        if (f.type == kind.type) want = f;
      }
      Json* old = nullptr;
      for (auto& c : conditions) {
        if (c.value("type", "") == want.type) old = &c;
      }
      if (!old) {
        conditions.push_back({{"type", want.type},
                              {"status", want.status},
                              {"lastTransitionTime", now},
                              {"reason", want.reason},
                              {"message", want.message}});
        changed = true;
        continue;
      }
      if (old->value("status", "") == want.status && old->value("reason", "") == want.reason &&
          old->value("message", "") == want.message) {
        continue;
      }
      if (old->value("status", "") != want.status) (*old)["lastTransitionTime"] = now;
      (*old)["status"] = want.status;
      (*old)["reason"] = want.reason;
      (*old)["message"] = want.message;
      changed = true;
    }
    return changed;
  }

  static std::string join(const std::vector<std::string>& parts) {
    std::string out;
    for (const auto& p : parts) {
      if (!out.empty()) out += ", ";
      out += p;
    }
    return out;
  }

  ControllerContext& ctx_;
  client::Informer& namespaces_;
  const std::vector<client::Resource> resources_;
  client::WorkQueue queue_;
  QueueWorkers workers_;
  Ticker resync_;
};

}  // namespace

std::vector<client::Resource> namespaced_resources_to_delete() {
  std::vector<client::Resource> out;
  for (const auto& r : api::Schema::builtin().resources()) {
    if (!r.namespaced) continue;
    auto has = [&](std::string_view verb) {
      return std::find(r.verbs.begin(), r.verbs.end(), verb) != r.verbs.end();
    };
    if (!has("list") || !has("delete")) continue;
    out.push_back({r.group, r.version, r.resource, r.kind, true});
  }
  return out;
}

std::unique_ptr<Controller> new_namespace_controller(ControllerContext& ctx) {
  return std::make_unique<NamespaceController>(ctx);
}

}  // namespace skiff::controllers
