#include "controllers/deployment/deployment_controller.h"

#include <algorithm>
#include <map>

#include "base/log.h"
#include "controllers/controller_utils.h"
#include "controllers/deployment/deployment_util.h"
#include "controllers/json_fields.h"

namespace skiff::controllers {

using namespace deployment;
using client::resources::kDeployments;
using client::resources::kPods;
using client::resources::kReplicaSets;

namespace {

constexpr char kKind[] = "Deployment";
constexpr char kApiVersion[] = "apps/v1";

bool same_uid(const ObjectPtr& a, const ObjectPtr& b) {
  return a && b && client::uid_of(*a) == client::uid_of(*b);
}

std::string quoted(const std::string& s) {
  return "\"" + s + "\"";
}

// Sets or (for zero) leaves out a count, as upstream's omitempty fields are written.
void set_count(Json& status, const char* name, int64_t v) {
  if (v == 0) {
    status.erase(name);
  } else {
    status[name] = v;
  }
}

}  // namespace

struct DeploymentController::Sync {
  std::string key;
  Json d;  // a working copy with defaults applied; metadata.resourceVersion kept current
  api::LabelSelector selector;
  RsList rs_list;  // the ReplicaSets the Deployment controls
  ObjectPtr new_rs;
  RsList old_rss;
  std::map<std::string, std::vector<ObjectPtr>> pod_map;  // ReplicaSet uid → its pods

  RsList all() const {
    RsList out = old_rss;
    if (new_rs) out.push_back(new_rs);
    return out;
  }
  std::string ns() const { return client::namespace_of(d); }
  std::string name() const { return client::name_of(d); }
  // Puts a freshly written ReplicaSet in place of its stale copies.
  void replace(const ObjectPtr& updated) {
    for (auto* list : {&rs_list, &old_rss}) {
      for (auto& rs : *list) {
        if (same_uid(rs, updated)) rs = updated;
      }
    }
    if (same_uid(new_rs, updated)) new_rs = updated;
  }
};

DeploymentController::DeploymentController(ControllerContext& ctx)
    : ctx_(ctx),
      deployments_(ctx.informers.informer(kDeployments)),
      replica_sets_(ctx.informers.informer(kReplicaSets)),
      pods_(ctx.informers.informer(kPods)),
      recorder_(ctx.recorder ? ctx.recorder("deployment-controller") : nullptr),
      workers_(
          "deployment", queue_, [this](const std::string& key) { return reconcile(key); },
          [this] {
            return deployments_.has_synced() && replica_sets_.has_synced() && pods_.has_synced();
          }) {
  client::EventHandlers deployment_handlers;
  deployment_handlers.on_add = [this](const ObjectPtr& d) { enqueue(*d); };
  deployment_handlers.on_update = [this](const ObjectPtr&, const ObjectPtr& d) { enqueue(*d); };
  deployment_handlers.on_delete = [this](const ObjectPtr& d) { enqueue(*d); };
  deployments_.add_handlers(std::move(deployment_handlers));

  client::EventHandlers rs_handlers;
  rs_handlers.on_add = [this](const ObjectPtr& rs) { on_rs_add(rs); };
  rs_handlers.on_update = [this](const ObjectPtr& old_rs, const ObjectPtr& cur_rs) {
    on_rs_update(old_rs, cur_rs);
  };
  rs_handlers.on_delete = [this](const ObjectPtr& rs) { on_rs_delete(rs); };
  replica_sets_.add_handlers(std::move(rs_handlers));

  client::EventHandlers pod_handlers;
  pod_handlers.on_delete = [this](const ObjectPtr& pod) { on_pod_delete(pod); };
  pods_.add_handlers(std::move(pod_handlers));
}

DeploymentController::~DeploymentController() {
  stop();
}

void DeploymentController::start() {
  workers_.start(ctx_.options.workers);
}

void DeploymentController::stop() {
  workers_.stop();
}

void DeploymentController::enqueue(const Json& d) {
  queue_.add(client::key_of(d));
}

std::string DeploymentController::now() const {
  return rfc3339(ctx_.clock.now_seconds());
}

void DeploymentController::record(const Json& d, std::string_view type, std::string_view reason,
                                  std::string message) {
  if (recorder_) recorder_->event(d, type, reason, std::move(message), kKind, kApiVersion);
}

ObjectPtr DeploymentController::resolve_deployment(const Json& rs) const {
  return resolve_controller_ref(deployments_, rs, kKind, kDeployments.group);
}

std::vector<ObjectPtr> DeploymentController::deployments_matching(const Json& rs) const {
  std::vector<ObjectPtr> out;
  if (labels_of(rs).empty()) return out;
  for (const auto& d : deployments_.list(client::namespace_of(rs))) {
    auto selector = api::LabelSelector::from_json(field(field(*d, "spec"), "selector"));
    if (!selector.is_ok() || selector->empty()) continue;
    if (selector->matches(labels_of(rs))) out.push_back(d);
  }
  return out;
}

void DeploymentController::on_rs_add(const ObjectPtr& rs) {
  if (is_being_deleted(*rs)) {
    on_rs_delete(rs);
    return;
  }
  if (client::controller_of(*rs)) {
    if (ObjectPtr d = resolve_deployment(*rs)) enqueue(*d);
    return;
  }
  // An orphan: every Deployment that could adopt it takes a look.
  for (const auto& d : deployments_matching(*rs)) enqueue(*d);
}

void DeploymentController::on_rs_update(const ObjectPtr& old_rs, const ObjectPtr& cur_rs) {
  if (client::resource_version_of(*old_rs) == client::resource_version_of(*cur_rs)) return;
  const bool ref_changed = controller_ref_changed(*old_rs, *cur_rs);
  if (ref_changed && client::controller_of(*old_rs)) {
    if (ObjectPtr d = resolve_deployment(*old_rs)) enqueue(*d);
  }
  if (client::controller_of(*cur_rs)) {
    if (ObjectPtr d = resolve_deployment(*cur_rs)) enqueue(*d);
    return;
  }
  if (ref_changed || labels_of(*old_rs) != labels_of(*cur_rs)) {
    for (const auto& d : deployments_matching(*cur_rs)) enqueue(*d);
  }
}

void DeploymentController::on_rs_delete(const ObjectPtr& rs) {
  if (ObjectPtr d = resolve_deployment(*rs)) enqueue(*d);
}

void DeploymentController::on_pod_delete(const ObjectPtr& pod) {
  // Only Recreate waits for pods to go away.
  const Json* ref = client::controller_of(*pod);
  if (!ref || ref->value("kind", "") != "ReplicaSet") return;
  ObjectPtr rs = replica_sets_.get(client::namespace_of(*pod), ref->value("name", ""));
  if (!rs || client::uid_of(*rs) != ref->value("uid", "")) return;
  ObjectPtr d = resolve_deployment(*rs);
  if (d && !is_rolling_update(*d)) enqueue(*d);
}

Status DeploymentController::reconcile(const std::string& key) {
  ObjectPtr cached = deployments_.get(key);
  if (!cached) return Status::ok();  // deleted; its ReplicaSets go with the garbage collector
  Sync s;
  s.key = key;
  s.d = *cached;
  apply_deployment_defaults(s.d);
  if (!s.d["status"].is_object()) s.d["status"] = Json::object();

  const Json& raw_selector = field(s.d["spec"], "selector");
  auto selector = api::LabelSelector::from_json(raw_selector);
  if (!selector.is_ok()) {
    SKIFF_LOG_WARN("deployment: {} has an invalid selector: {}", key, selector.status().message());
    return Status::ok();
  }
  if (selector->empty()) {
    record(s.d, "Warning", "SelectingAll",
           "This deployment is selecting all pods. A non-empty selector is required.");
    int64_t generation = numeric_int_field(s.d["metadata"], "generation");
    if (numeric_int_field(s.d["status"], "observedGeneration") < generation) {
      s.d["status"]["observedGeneration"] = generation;
      return write_status(s);
    }
    return Status::ok();
  }
  s.selector = std::move(selector.value());

  SKIFF_ASSIGN_OR_RETURN(s.rs_list, claim_replica_sets(s));

  if (is_being_deleted(s.d)) return sync_status_only(s);
  SKIFF_RETURN_IF_ERROR(check_paused_conditions(s));
  if (s.d["spec"].value("paused", false)) return sync(s);
  SKIFF_ASSIGN_OR_RETURN(bool scaling, is_scaling_event(s));
  if (scaling) return sync(s);

  const std::string strategy = s.d["spec"]["strategy"].value("type", "");
  if (strategy == "Recreate") return rollout_recreate(s);
  if (strategy == "RollingUpdate") return rollout_rolling(s);
  return error(StatusCode::kInvalidArgument, "unexpected deployment strategy type: " + strategy);
}

Result<DeploymentController::RsList> DeploymentController::claim_replica_sets(Sync& s) {
  const std::string ns = s.ns();
  const std::string name = s.name();
  const std::string uid = client::uid_of(s.d);
  // Adopt only for a Deployment that still exists and is not being deleted (checked against
  // the API, not the cache).
  auto can_adopt = [&]() -> Status {
    auto fresh = ctx_.api.get(kDeployments, ns, name);
    if (!fresh.is_ok()) return fresh.status();
    if (client::uid_of(fresh.value()) != uid) {
      return error(StatusCode::kAborted, "original Deployment " + ns + "/" + name +
                                             " is gone: got uid " + client::uid_of(fresh.value()) +
                                             ", wanted " + uid);
    }
    if (is_being_deleted(fresh.value())) {
      return error(StatusCode::kAborted,
                   ns + "/" + name + " has just been deleted at " +
                       fresh.value()["metadata"].value("deletionTimestamp", ""));
    }
    return Status::ok();
  };
  return claim_objects(
      ctx_.api, kReplicaSets, s.d, kKind, kApiVersion,
      [&s](const Json& rs) { return s.selector.matches(field(field(rs, "metadata"), "labels")); },
      replica_sets_.list(ns), can_adopt);
}

Status DeploymentController::sync_status_only(Sync& s) {
  SKIFF_RETURN_IF_ERROR(get_all_replica_sets_and_sync_revision(s, false));
  return sync_deployment_status(s);
}

Status DeploymentController::sync(Sync& s) {
  SKIFF_RETURN_IF_ERROR(get_all_replica_sets_and_sync_revision(s, false));
  SKIFF_RETURN_IF_ERROR(scale(s));
  if (s.d["spec"].value("paused", false)) SKIFF_RETURN_IF_ERROR(cleanup_deployment(s));
  return sync_deployment_status(s);
}

Status DeploymentController::check_paused_conditions(Sync& s) {
  if (!has_progress_deadline(s.d)) return Status::ok();
  const Json* cond = deployment_condition(s.d["status"], "Progressing");
  // A reported lack of progress stays, paused or not.
  if (cond && cond->value("reason", "") == kTimedOutReason) return Status::ok();
  const bool paused_cond = cond && cond->value("reason", "") == kPausedReason;
  const bool paused = s.d["spec"].value("paused", false);
  if (paused && !paused_cond) {
    set_deployment_condition(s.d["status"], new_condition("Progressing", "Unknown", kPausedReason,
                                                          "Deployment is paused", now()));
  } else if (!paused && paused_cond) {
    set_deployment_condition(s.d["status"], new_condition("Progressing", "Unknown", kResumedReason,
                                                          "Deployment is resumed", now()));
  } else {
    return Status::ok();
  }
  return write_status(s);
}

Result<bool> DeploymentController::is_scaling_event(Sync& s) {
  SKIFF_RETURN_IF_ERROR(get_all_replica_sets_and_sync_revision(s, false));
  const int replicas = spec_replicas(s.d);
  for (const auto& rs : active_replica_sets(s.all())) {
    auto desired = desired_replicas_annotation(*rs);
    if (desired && *desired != replicas) return true;
  }
  return false;
}

Status DeploymentController::get_all_replica_sets_and_sync_revision(Sync& s, bool create) {
  ObjectPtr current = find_new_replica_set(s.d, s.rs_list);
  s.old_rss.clear();
  for (const auto& rs : s.rs_list) {
    if (!same_uid(rs, current)) s.old_rss.push_back(rs);
  }
  return get_new_replica_set(s, create);
}

Status DeploymentController::get_new_replica_set(Sync& s, bool create) {
  ObjectPtr existing = find_new_replica_set(s.d, s.rs_list);
  const std::string new_revision = std::to_string(max_revision(s.old_rss) + 1);
  const std::string ns = s.ns();
  const Json& spec = s.d["spec"];
  const int64_t min_ready = numeric_int_field(spec, "minReadySeconds");

  if (existing) {
    // Bring the existing ReplicaSet's annotations (revision, copied annotations) and
    // minReadySeconds up to date first; the Deployment's revision follows on the next sync.
    Json copy = *existing;
    bool annotations_updated = set_new_replica_set_annotations(s.d, copy, new_revision, true);
    if (annotations_updated ||
        numeric_int_field(field(copy, "spec"), "minReadySeconds") != min_ready) {
      copy["spec"]["minReadySeconds"] = min_ready;
      auto updated = ctx_.api.update(kReplicaSets, ns, copy);
      if (!updated.is_ok()) return updated.status();
      s.new_rs = std::make_shared<const Json>(std::move(updated.value()));
      s.replace(s.new_rs);
      return Status::ok();
    }
    s.new_rs = existing;
    SKIFF_RETURN_IF_ERROR(
        set_deployment_revision(s, annotation(*existing, kRevisionAnnotation)).status());
    // A Deployment that never had a Progressing condition starts its clock now.
    if (has_progress_deadline(s.d) && !deployment_condition(s.d["status"], "Progressing")) {
      set_deployment_condition(
          s.d["status"],
          new_condition("Progressing", "True", kFoundNewReplicaSetReason,
                        "Found new replica set " + quoted(client::name_of(*existing)), now()));
      SKIFF_RETURN_IF_ERROR(write_status(s));
    }
    return Status::ok();
  }
  if (!create) {
    s.new_rs = nullptr;
    return Status::ok();
  }

  // A new ReplicaSet for the current template.
  Json tmpl = field(spec, "template");
  std::optional<int64_t> collision_count;
  if (s.d["status"].contains("collisionCount") &&
      s.d["status"]["collisionCount"].is_number_integer()) {
    collision_count = s.d["status"]["collisionCount"].get<int64_t>();
  }
  const std::string hash = pod_template_hash(tmpl, collision_count);
  if (!tmpl["metadata"].is_object()) tmpl["metadata"] = Json::object();
  if (!tmpl["metadata"]["labels"].is_object()) tmpl["metadata"]["labels"] = Json::object();
  tmpl["metadata"]["labels"][kPodTemplateHashLabel] = hash;
  Json selector = field(spec, "selector");
  if (!selector["matchLabels"].is_object()) selector["matchLabels"] = Json::object();
  selector["matchLabels"][kPodTemplateHashLabel] = hash;
  const std::string rs_name = s.name() + "-" + hash;
  Json rs = {{"apiVersion", "apps/v1"},
             {"kind", "ReplicaSet"},
             {"metadata",
              {{"name", rs_name},
               {"namespace", ns},
               {"ownerReferences", Json::array({controller_ref(s.d, kKind, kApiVersion)})},
               {"labels", tmpl["metadata"]["labels"]}}},
             {"spec",
              {{"replicas", 0},
               {"minReadySeconds", min_ready},
               {"selector", selector},
               {"template", tmpl}}}};
  RsList all = s.old_rss;
  all.push_back(std::make_shared<const Json>(rs));
  SKIFF_ASSIGN_OR_RETURN(int new_replicas, new_rs_new_replicas(s.d, all, rs));
  rs["spec"]["replicas"] = new_replicas;
  set_new_replica_set_annotations(s.d, rs, new_revision, false);

  ObjectPtr created_rs;
  bool already_exists = false;
  auto created = ctx_.api.create(kReplicaSets, ns, rs);
  if (created.is_ok()) {
    created_rs = std::make_shared<const Json>(std::move(created.value()));
  } else if (created.status().code() == StatusCode::kAlreadyExists) {
    // A slow cache, or a hash collision with someone else's ReplicaSet.
    already_exists = true;
    ObjectPtr found = replica_sets_.get(ns, rs_name);
    if (!found) {
      auto fetched = ctx_.api.get(kReplicaSets, ns, rs_name);
      if (!fetched.is_ok()) return fetched.status();
      found = std::make_shared<const Json>(std::move(fetched.value()));
    }
    const Json* ref = client::controller_of(*found);
    if (ref && ref->value("uid", "") == client::uid_of(s.d) &&
        equal_ignore_hash(field(spec, "template"), field(field(*found, "spec"), "template"))) {
      created_rs = found;
    } else {
      // A collision: the next name comes from a bumped collisionCount.
      s.d["status"]["collisionCount"] = collision_count.value_or(0) + 1;
      Status written = write_status(s);
      if (!written.is_ok()) {
        SKIFF_LOG_WARN("deployment: {}: recording a hash collision: {}", s.key,
                       written.to_string());
      }
      return created.status();
    }
  } else {
    std::string msg =
        "Failed to create new replica set " + quoted(rs_name) + ": " + created.status().message();
    if (has_progress_deadline(s.d)) {
      set_deployment_condition(
          s.d["status"],
          new_condition("Progressing", "False", kFailedReplicaSetCreateReason, msg, now()));
      // The creation error is the one to report; a failed status write changes nothing.
      (void)write_status(s);
    }
    record(s.d, "Warning", kFailedReplicaSetCreateReason, msg);
    return created.status();
  }

  if (!already_exists && new_replicas > 0) {
    record(s.d, "Normal", "ScalingReplicaSet",
           "Scaled up replica set " + client::name_of(*created_rs) + " from 0 to " +
               std::to_string(new_replicas));
  }
  s.new_rs = created_rs;
  bool listed = false;
  for (const auto& existing_rs : s.rs_list) listed = listed || same_uid(existing_rs, created_rs);
  if (!listed) s.rs_list.push_back(created_rs);
  SKIFF_RETURN_IF_ERROR(set_deployment_revision(s, new_revision).status());
  if (!already_exists && has_progress_deadline(s.d)) {
    set_deployment_condition(
        s.d["status"],
        new_condition("Progressing", "True", kNewReplicaSetReason,
                      "Created new replica set " + quoted(client::name_of(*created_rs)), now()));
    SKIFF_RETURN_IF_ERROR(write_status(s));
  }
  return Status::ok();
}

Status DeploymentController::rollout_rolling(Sync& s) {
  SKIFF_RETURN_IF_ERROR(get_all_replica_sets_and_sync_revision(s, true));
  SKIFF_ASSIGN_OR_RETURN(bool scaled_up, reconcile_new_replica_set(s));
  if (scaled_up) return sync_rollout_status(s);
  SKIFF_ASSIGN_OR_RETURN(bool scaled_down, reconcile_old_replica_sets(s));
  if (scaled_down) return sync_rollout_status(s);
  if (deployment_complete(s.d, s.d["status"])) SKIFF_RETURN_IF_ERROR(cleanup_deployment(s));
  return sync_rollout_status(s);
}

Result<bool> DeploymentController::reconcile_new_replica_set(Sync& s) {
  if (!s.new_rs) return false;
  const int replicas = spec_replicas(s.d);
  const int current = spec_replicas(*s.new_rs);
  if (current == replicas) return false;
  ObjectPtr rs = s.new_rs;
  if (current > replicas) return scale_replica_set_and_record_event(s, rs, replicas);
  SKIFF_ASSIGN_OR_RETURN(int target, new_rs_new_replicas(s.d, s.all(), *s.new_rs));
  return scale_replica_set_and_record_event(s, rs, target);
}

Result<bool> DeploymentController::reconcile_old_replica_sets(Sync& s) {
  RsList old_active = active_replica_sets(s.old_rss);
  if (sum_spec_replicas(old_active) == 0) return false;  // nothing left to scale down
  const int all_pods = sum_spec_replicas(s.all());
  const int min_available = spec_replicas(s.d) - max_unavailable(s.d);
  const int new_unavailable =
      s.new_rs ? spec_replicas(*s.new_rs) - status_count(*s.new_rs, "availableReplicas") : 0;
  // Room to scale down without dropping below minAvailable, counting the new ReplicaSet's
  // unavailable pods as already missing.
  const int max_scaled_down = all_pods - min_available - new_unavailable;
  if (max_scaled_down <= 0) return false;
  // Unhealthy old replicas go first: they are not available anyway.
  SKIFF_ASSIGN_OR_RETURN(int cleaned, cleanup_unhealthy_replicas(s, old_active, max_scaled_down));
  SKIFF_ASSIGN_OR_RETURN(int scaled, scale_down_old_replica_sets_for_rolling_update(s, old_active));
  return cleaned + scaled > 0;
}

Result<int> DeploymentController::cleanup_unhealthy_replicas(Sync& s, RsList& old_rss,
                                                             int max_cleanup) {
  sort_by_creation(old_rss);
  int total = 0;
  for (auto& target : old_rss) {
    if (total >= max_cleanup) break;
    const int size = spec_replicas(*target);
    const int available = status_count(*target, "availableReplicas");
    if (size == 0 || size == available) continue;
    const int down = std::min(max_cleanup - total, size - available);
    const int next = size - down;
    if (next > size) {
      return error(StatusCode::kInternal,
                   "when cleaning up unhealthy replicas, got invalid request to scale down " +
                       client::key_of(*target) + " " + std::to_string(size) + " -> " +
                       std::to_string(next));
    }
    SKIFF_RETURN_IF_ERROR(scale_replica_set_and_record_event(s, target, next).status());
    total += down;
  }
  return total;
}

Result<int> DeploymentController::scale_down_old_replica_sets_for_rolling_update(Sync& s,
                                                                                 RsList& old_rss) {
  const int min_available = spec_replicas(s.d) - max_unavailable(s.d);
  RsList all = old_rss;
  if (s.new_rs) all.push_back(s.new_rs);
  const int available = sum_status(all, "availableReplicas");
  if (available <= min_available) return 0;
  const int to_scale_down = available - min_available;
  sort_by_creation(old_rss);
  int total = 0;
  for (auto& target : old_rss) {
    if (total >= to_scale_down) break;
    const int size = spec_replicas(*target);
    if (size == 0) continue;
    const int down = std::min(size, to_scale_down - total);
    SKIFF_RETURN_IF_ERROR(scale_replica_set_and_record_event(s, target, size - down).status());
    total += down;
  }
  return total;
}

Status DeploymentController::rollout_recreate(Sync& s) {
  // No new ReplicaSet yet: never scale up before the old pods are gone.
  SKIFF_RETURN_IF_ERROR(get_all_replica_sets_and_sync_revision(s, false));
  SKIFF_ASSIGN_OR_RETURN(bool scaled_down, scale_down_old_replica_sets_for_recreate(s));
  if (scaled_down) return sync_rollout_status(s);

  s.pod_map.clear();
  std::set<std::string> uids;
  for (const auto& rs : s.rs_list) uids.insert(client::uid_of(*rs));
  for (const auto& pod : pods_.list(s.ns())) {
    if (!s.selector.matches(labels_of(*pod))) continue;
    const Json* ref = client::controller_of(*pod);
    if (ref && uids.count(ref->value("uid", ""))) s.pod_map[ref->value("uid", "")].push_back(pod);
  }
  if (old_pods_running(s)) return sync_rollout_status(s);

  if (!s.new_rs) SKIFF_RETURN_IF_ERROR(get_all_replica_sets_and_sync_revision(s, true));
  ObjectPtr rs = s.new_rs;
  SKIFF_RETURN_IF_ERROR(scale_replica_set_and_record_event(s, rs, spec_replicas(s.d)).status());
  if (deployment_complete(s.d, s.d["status"])) SKIFF_RETURN_IF_ERROR(cleanup_deployment(s));
  return sync_rollout_status(s);
}

Result<bool> DeploymentController::scale_down_old_replica_sets_for_recreate(Sync& s) {
  bool scaled = false;
  RsList old_active = active_replica_sets(s.old_rss);
  for (auto& rs : old_active) {
    SKIFF_ASSIGN_OR_RETURN(bool changed, scale_replica_set_and_record_event(s, rs, 0));
    scaled = scaled || changed;
  }
  return scaled;
}

bool DeploymentController::old_pods_running(const Sync& s) const {
  if (sum_status(s.old_rss, "replicas") > 0) return true;
  const std::string new_uid = s.new_rs ? client::uid_of(*s.new_rs) : "";
  for (const auto& [uid, pods] : s.pod_map) {
    if (uid == new_uid) continue;
    for (const auto& pod : pods) {
      std::string phase = pod_phase(*pod);
      // Terminal pods run nothing; anything else (Unknown included) may still be running.
      if (phase != "Failed" && phase != "Succeeded") return true;
    }
  }
  return false;
}

Status DeploymentController::scale(Sync& s) {
  const int replicas = spec_replicas(s.d);
  // One active ReplicaSet (or none: then the newest) takes the whole size.
  if (ObjectPtr target = find_active_or_latest(s.new_rs, s.old_rss)) {
    if (spec_replicas(*target) == replicas) return Status::ok();
    return scale_replica_set_and_record_event(s, target, replicas).status();
  }
  // A saturated new ReplicaSet leaves nothing to the old ones (e.g. after adopting them).
  if (is_saturated(s.d, s.new_rs)) {
    for (auto& old : active_replica_sets(s.old_rss)) {
      SKIFF_RETURN_IF_ERROR(scale_replica_set_and_record_event(s, old, 0).status());
    }
    return Status::ok();
  }
  if (!is_rolling_update(s.d)) return Status::ok();

  // Mid-rollout: spread the change over the active ReplicaSets in proportion to their sizes.
  RsList all = active_replica_sets(s.all());
  const int allowed = replicas > 0 ? replicas + max_surge(s.d) : 0;
  const int to_add = allowed - sum_spec_replicas(all);
  std::string operation;
  if (to_add != 0) {
    // Larger first; among equals, newer first when growing and older first when shrinking.
    const bool up = to_add > 0;
    std::stable_sort(all.begin(), all.end(), [up](const ObjectPtr& a, const ObjectPtr& b) {
      int sa = spec_replicas(*a), sb = spec_replicas(*b);
      if (sa != sb) return sa > sb;
      return up ? created_before(*b, *a) : created_before(*a, *b);
    });
    operation = up ? "up" : "down";
  }
  std::vector<int> sizes(all.size());
  int added = 0;
  for (size_t i = 0; i < all.size(); ++i) {
    int proportion = to_add != 0 ? get_proportion(*all[i], s.d, to_add, added) : 0;
    sizes[i] = spec_replicas(*all[i]) + proportion;
    added += proportion;
  }
  for (size_t i = 0; i < all.size(); ++i) {
    // Rounding leftovers go to the largest ReplicaSet.
    if (i == 0 && to_add != 0) sizes[0] = std::max(0, sizes[0] + to_add - added);
    ObjectPtr rs = all[i];
    SKIFF_RETURN_IF_ERROR(scale_replica_set(s, rs, sizes[i], operation).status());
  }
  return Status::ok();
}

Result<bool> DeploymentController::scale_replica_set_and_record_event(Sync& s, ObjectPtr& rs,
                                                                      int new_scale) {
  const int current = spec_replicas(*rs);
  if (current == new_scale) return false;
  return scale_replica_set(s, rs, new_scale, current < new_scale ? "up" : "down");
}

Result<bool> DeploymentController::scale_replica_set(Sync& s, ObjectPtr& rs, int new_scale,
                                                     const std::string& operation) {
  const int old_scale = spec_replicas(*rs);
  const bool size_changes = old_scale != new_scale;
  const int desired = spec_replicas(s.d);
  const int max_replicas = desired + max_surge(s.d);
  if (!size_changes && !replicas_annotations_need_update(*rs, desired, max_replicas)) {
    return false;
  }
  Json copy = *rs;
  copy["spec"]["replicas"] = new_scale;
  set_replicas_annotations(copy, desired, max_replicas);
  auto updated = ctx_.api.update(kReplicaSets, client::namespace_of(copy), copy);
  if (!updated.is_ok()) return updated.status();
  rs = std::make_shared<const Json>(std::move(updated.value()));
  s.replace(rs);
  if (size_changes) {
    record(s.d, "Normal", "ScalingReplicaSet",
           "Scaled " + operation + " replica set " + client::name_of(*rs) + " from " +
               std::to_string(old_scale) + " to " + std::to_string(new_scale));
  }
  return size_changes;
}

Status DeploymentController::cleanup_deployment(Sync& s) {
  if (!has_revision_history_limit(s.d)) return Status::ok();
  RsList cleanable;
  for (const auto& rs : s.old_rss) {
    if (!is_being_deleted(*rs)) cleanable.push_back(rs);
  }
  const int64_t limit = s.d["spec"]["revisionHistoryLimit"].get<int64_t>();
  const int64_t diff = static_cast<int64_t>(cleanable.size()) - limit;
  if (diff <= 0) return Status::ok();
  sort_by_revision(cleanable);
  for (int64_t i = 0; i < diff; ++i) {
    const Json& rs = *cleanable[i];
    // Only ReplicaSets that are scaled down, quiet and fully observed go.
    if (status_count(rs, "replicas") != 0 || spec_replicas(rs) != 0 ||
        numeric_int_field(field(rs, "metadata"), "generation") >
            status_count(rs, "observedGeneration") ||
        is_being_deleted(rs)) {
      continue;
    }
    auto removed = ctx_.api.remove(kReplicaSets, client::namespace_of(rs), client::name_of(rs));
    if (!removed.is_ok() && removed.status().code() != StatusCode::kNotFound) {
      return removed.status();
    }
  }
  return Status::ok();
}

Json DeploymentController::calculate_status(const Sync& s) const {
  const RsList all = s.all();
  const int available = sum_status(all, "availableReplicas");
  const int total = sum_spec_replicas(all);
  const Json& old = s.d["status"];
  Json status = Json::object();
  set_count(status, "observedGeneration", numeric_int_field(s.d["metadata"], "generation"));
  set_count(status, "replicas", sum_status(all, "replicas"));
  set_count(status, "updatedReplicas", s.new_rs ? status_count(*s.new_rs, "replicas") : 0);
  set_count(status, "readyReplicas", sum_status(all, "readyReplicas"));
  set_count(status, "availableReplicas", available);
  set_count(status, "unavailableReplicas", std::max(0, total - available));
  if (old.contains("collisionCount")) status["collisionCount"] = old["collisionCount"];
  if (old.contains("conditions") && old["conditions"].is_array() && !old["conditions"].empty()) {
    status["conditions"] = old["conditions"];
  }
  if (available >= spec_replicas(s.d) - max_unavailable(s.d)) {
    set_deployment_condition(status, new_condition("Available", "True", kMinimumReplicasAvailable,
                                                   "Deployment has minimum availability.", now()));
  } else {
    set_deployment_condition(
        status, new_condition("Available", "False", kMinimumReplicasUnavailable,
                              "Deployment does not have minimum availability.", now()));
  }
  return status;
}

Status DeploymentController::sync_deployment_status(Sync& s) {
  Json status = calculate_status(s);
  if (status == s.d["status"]) return Status::ok();
  s.d["status"] = std::move(status);
  return write_status(s);
}

Status DeploymentController::sync_rollout_status(Sync& s) {
  Json status = calculate_status(s);
  if (!has_progress_deadline(s.d)) remove_deployment_condition(status, "Progressing");
  const Json* current = deployment_condition(s.d["status"], "Progressing");
  const bool complete_already =
      numeric_int_field(status, "replicas") == numeric_int_field(status, "updatedReplicas") &&
      current && current->value("reason", "") == kNewReplicaSetAvailableReason;
  if (has_progress_deadline(s.d) && !complete_already) {
    const std::string subject = s.new_rs ? "ReplicaSet " + quoted(client::name_of(*s.new_rs))
                                         : "Deployment " + quoted(s.name());
    if (deployment_complete(s.d, status)) {
      set_deployment_condition(status,
                               new_condition("Progressing", "True", kNewReplicaSetAvailableReason,
                                             subject + " has successfully progressed.", now()));
    } else if (deployment_progressing(s.d, status)) {
      // Progress moves lastUpdateTime even when the reason stays the same.
      Json cond = new_condition("Progressing", "True", kReplicaSetUpdatedReason,
                                subject + " is progressing.", now());
      if (current) {
        if (current->value("status", "") == "True" && current->contains("lastTransitionTime")) {
          cond["lastTransitionTime"] = (*current)["lastTransitionTime"];
        }
        remove_deployment_condition(status, "Progressing");
      }
      set_deployment_condition(status, std::move(cond));
    } else if (deployment_timed_out(s.d, status, ctx_.clock.now_seconds())) {
      set_deployment_condition(status,
                               new_condition("Progressing", "False", kTimedOutReason,
                                             subject + " has timed out progressing.", now()));
    }
  }
  // A ReplicaSet's failure to create or delete pods shows on the Deployment, the new
  // ReplicaSet's first.
  std::optional<Json> failure;
  RsList candidates;
  if (s.new_rs) candidates.push_back(s.new_rs);
  for (const auto& rs : s.all()) candidates.push_back(rs);
  for (const auto& rs : candidates) {
    if (failure) break;
    for (const auto& c : field(field(*rs, "status"), "conditions")) {
      if (c.value("type", "") != "ReplicaFailure") continue;
      failure = Json{{"type", "ReplicaFailure"},
                     {"status", c.value("status", "")},
                     {"lastUpdateTime", c.value("lastTransitionTime", "")},
                     {"lastTransitionTime", c.value("lastTransitionTime", "")},
                     {"reason", c.value("reason", "")},
                     {"message", c.value("message", "")}};
      break;
    }
  }
  if (failure) {
    set_deployment_condition(status, std::move(*failure));
  } else {
    remove_deployment_condition(status, "ReplicaFailure");
  }
  if (status == s.d["status"]) {
    requeue_stuck_deployment(s, status);
    return Status::ok();
  }
  s.d["status"] = std::move(status);
  return write_status(s);
}

void DeploymentController::requeue_stuck_deployment(const Sync& s, const Json& new_status) {
  const Json* current = deployment_condition(s.d["status"], "Progressing");
  if (!has_progress_deadline(s.d) || !current) return;
  if (deployment_complete(s.d, new_status) || current->value("reason", "") == kTimedOutReason) {
    return;
  }
  // No progress now: look again when the deadline would pass.
  int64_t last_update = parse_rfc3339(current->value("lastUpdateTime", ""));
  if (last_update < 0) return;
  int64_t after = last_update + s.d["spec"]["progressDeadlineSeconds"].get<int64_t>() -
                  ctx_.clock.now_seconds();
  if (after < 1) {
    queue_.add_rate_limited(s.key);
  } else {
    queue_.add_after(s.key, std::chrono::seconds(after));
  }
}

Status DeploymentController::write_status(Sync& s) {
  auto written = ctx_.api.update(kDeployments, s.ns(), s.d, {}, "status");
  if (!written.is_ok()) return written.status();
  s.d["metadata"]["resourceVersion"] = written.value()["metadata"]["resourceVersion"];
  s.d["status"] = written.value().value("status", Json::object());
  return Status::ok();
}

Result<bool> DeploymentController::set_deployment_revision(Sync& s, const std::string& revision) {
  if (revision.empty() || annotation(s.d, kRevisionAnnotation) == revision) return false;
  Json patch = {{"metadata", {{"annotations", {{kRevisionAnnotation, revision}}}}}};
  auto patched =
      ctx_.api.patch(kDeployments, s.ns(), s.name(), client::PatchType::kMerge, patch.dump());
  if (!patched.is_ok()) return patched.status();
  s.d["metadata"]["annotations"][kRevisionAnnotation] = revision;
  s.d["metadata"]["resourceVersion"] = patched.value()["metadata"]["resourceVersion"];
  return true;
}

std::unique_ptr<Controller> new_deployment_controller(ControllerContext& ctx) {
  return std::make_unique<DeploymentController>(ctx);
}

}  // namespace skiff::controllers
