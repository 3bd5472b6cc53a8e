#include "controllers/statefulset/statefulset_controller.h"

#include <algorithm>
#include <set>

#include "base/log.h"
#include "controllers/controller_utils.h"
#include "controllers/json_fields.h"
#include "controllers/statefulset/controller_history.h"
#include "controllers/statefulset/statefulset_utils.h"

namespace skiff::controllers {
namespace {

using client::resources::kControllerRevisions;
using client::resources::kPersistentVolumeClaims;
using client::resources::kPods;
using client::resources::kStatefulSets;
using namespace statefulset;
using namespace std::chrono_literals;

constexpr char kKind[] = "StatefulSet";
constexpr char kApiVersion[] = "apps/v1";
// Largest batch of parallel pod operations (upstream's MaxBatchSize).
constexpr size_t kMaxBatchSize = 500;
// Attempts at a write that keeps meeting conflicts.
constexpr int kStatusUpdateRetries = 5;
constexpr int kPodUpdateRetries = 10;

std::string strategy_type(const Json& set) {
  return field(field(set, "spec"), "updateStrategy").value("type", "RollingUpdate");
}

// The set with its pod template replaced by the one a revision restores.
Json apply_revision(const Json& set, const Json& revision) {
  Json out = set;
  out["spec"]["template"] = history::template_of(revision);
  return out;
}

}  // namespace

StatefulSetController::StatefulSetController(ControllerContext& ctx)
    : ctx_(ctx),
      sets_(ctx.informers.informer(kStatefulSets)),
      pods_(ctx.informers.informer(kPods)),
      revisions_(ctx.informers.informer(kControllerRevisions)),
      expectations_(ctx.clock),
      recorder_(ctx.recorder ? ctx.recorder("statefulset-controller") : nullptr),
      workers_(
          "statefulset", queue_, [this](const std::string& key) { return reconcile(key); },
          [this] { return sets_.has_synced() && pods_.has_synced() && revisions_.has_synced(); }),
      pod_events_(sets_, queue_,
                  owned_pod_events_options(kKind, kStatefulSets.group, expectations_)) {
  sets_.add_handlers(pod_events_.owner_handlers());
  pods_.add_handlers(pod_events_.pod_handlers());

  revisions_.add_handlers(pod_events_.revision_handlers());
}

StatefulSetController::~StatefulSetController() {
  stop();
}

void StatefulSetController::start() {
  workers_.start(ctx_.options.workers);
}

void StatefulSetController::stop() {
  workers_.stop();
}

void StatefulSetController::record(const Json& set, std::string_view type, std::string_view reason,
                                   std::string message) {
  if (recorder_) recorder_->event(set, type, reason, std::move(message), kKind, kApiVersion);
}

Status StatefulSetController::reconcile(const std::string& key) {
  ObjectPtr cached = sets_.get(key);
  if (!cached) {
    expectations_.forget(key);
    return Status::ok();
  }
  // Pods asked for and not yet seen: the events that will come enqueue the set again.
  if (!expectations_.satisfied(key)) return Status::ok();

  Sync sync;
  sync.key = key;
  sync.set = *cached;
  apply_statefulset_defaults(sync.set);
  const Json& set = sync.set;
  const std::string ns = client::namespace_of(set);
  api::LabelSelector selector = selector_of(set);
  if (selector.matches_nothing()) {
    SKIFF_LOG_WARN("statefulset: {} has an invalid or empty selector", key);
    return Status::ok();
  }

  SKIFF_ASSIGN_OR_RETURN(std::vector<ObjectPtr> revisions, claim_revisions(set));
  auto claimed = claim_objects(
      ctx_.api, kPods, set, kKind, kApiVersion,
      [&](const Json& pod) { return labels_match(selector, pod) && is_member_of(set, pod); },
      pods_.list(ns));
  if (!claimed.is_ok()) return claimed.status();
  const std::vector<ObjectPtr>& pods = claimed.value();

  SKIFF_RETURN_IF_ERROR(resolve_revisions(sync, revisions));
  sync.monotonic = field(set, "spec").value("podManagementPolicy", "OrderedReady") != "Parallel";
  sync.min_ready_seconds = int_field(field(set, "spec"), "minReadySeconds");
  sync.now = ctx_.clock.now_seconds();

  Status pods_error = update_pods(sync, pods);
  Status status_error = write_status(*cached, sync);
  Status history_error =
      truncate_history(set, pods, revisions, sync.current_revision, sync.update_revision);
  if (pods_error.is_ok() && sync.min_ready_seconds > 0 &&
      sync.counts.available != replicas_of(set)) {
    queue_.add_after(key, std::chrono::seconds(sync.min_ready_seconds));
  }
  if (!pods_error.is_ok()) return pods_error;
  if (!status_error.is_ok()) return status_error;
  return history_error;
}

Result<std::vector<ObjectPtr>> StatefulSetController::claim_revisions(const Json& set) {
  api::LabelSelector selector = selector_of(set);
  SKIFF_ASSIGN_OR_RETURN(std::vector<ObjectPtr> owned,
                         claim_objects(
                             ctx_.api, kControllerRevisions, set, kKind, kApiVersion,
                             [&](const Json& rev) { return labels_match(selector, rev); },
                             revisions_.list(client::namespace_of(set))));
  history::sort_revisions(owned);
  return owned;
}

Status StatefulSetController::resolve_revisions(Sync& sync, std::vector<ObjectPtr>& revisions) {
  const Json& set = sync.set;
  sync.collision_count = int_field(field(set, "status"), "collisionCount");
  const Json data = history::template_patch(set);
  auto last_equal_of = [&](const std::vector<ObjectPtr>& revs) -> const ObjectPtr* {
    const ObjectPtr* found = nullptr;
    for (const auto& r : revs) {
      if (history::equal_data(field(*r, "data"), data)) found = &r;
    }
    return found;
  };
  const ObjectPtr* last_equal = last_equal_of(revisions);
  if (!last_equal || *last_equal != revisions.back()) {
    // A new template (or one from further back): revision numbers are decided on the server's
    // list, not on a cache that may not show the latest revision yet.
    SKIFF_ASSIGN_OR_RETURN(revisions, history::list_owned(ctx_.api, set, selector_of(set)));
    last_equal = last_equal_of(revisions);
  }
  const int64_t next = revisions.empty() ? 1 : history::revision_number(*revisions.back()) + 1;
  Json update;
  if (last_equal && *last_equal == revisions.back()) {
    // The newest revision is this template: nothing changed.
    update = *revisions.back();
  } else if (last_equal) {
    // Back to an older template: that revision becomes the newest.
    SKIFF_ASSIGN_OR_RETURN(update, history::update_revision_number(ctx_.api, **last_equal, next));
  } else {
    Json candidate = history::new_revision(
        set, kKind, kApiVersion,
        field(field(field(set, "spec"), "template"), "metadata").value("labels", Json::object()),
        data, next, sync.collision_count);
    SKIFF_ASSIGN_OR_RETURN(update, history::create_revision(ctx_.api, set, std::move(candidate),
                                                            sync.collision_count));
  }
  Json current;
  const std::string current_name = field(set, "status").value("currentRevision", "");
  for (const auto& r : revisions) {
    if (client::name_of(*r) == current_name) current = *r;
  }
  if (current.is_null()) current = update;
  sync.current_revision = client::name_of(current);
  sync.update_revision = client::name_of(update);
  sync.current_set = apply_revision(set, current);
  sync.update_set = apply_revision(set, update);
  return Status::ok();
}

Json StatefulSetController::new_replica(const Sync& sync, int ordinal) const {
  const Json& cur = sync.current_set;
  const Json& strategy = field(field(cur, "spec"), "updateStrategy");
  const Json& rolling = field(strategy, "rollingUpdate");
  const bool has_rolling = strategy.contains("rollingUpdate") && rolling.is_object();
  const int start = start_ordinal(cur);
  // Ordinals below the partition stay at the current revision.
  bool current = false;
  if (strategy.value("type", "RollingUpdate") == "RollingUpdate" && !has_rolling) {
    current = ordinal < start + int_field(field(cur, "status"), "currentReplicas");
  } else if (has_rolling) {
    current = ordinal < start + int_field(rolling, "partition");
  }
  const Json& source = current ? sync.current_set : sync.update_set;
  return new_stateful_pod(source, field(field(source, "spec"), "template"), ordinal,
                          current ? sync.current_revision : sync.update_revision);
}

StatefulSetController::Counts StatefulSetController::count(
    const Sync& sync, const std::vector<const Json*>& pods) const {
  Counts c;
  for (const Json* pod : pods) {
    ++c.replicas;
    if (is_running_and_ready(*pod)) {
      ++c.ready;
      if (is_running_and_available(*pod, sync.min_ready_seconds, sync.now)) ++c.available;
    }
    if (!is_pod_terminating(*pod)) {
      std::string revision = pod_revision(*pod);
      if (revision == sync.current_revision) ++c.current;
      if (revision == sync.update_revision) ++c.updated;
    }
  }
  return c;
}

StatefulSetController::Step StatefulSetController::run_for_all(
    Sync& sync, size_t n, const std::function<Step(size_t)>& fn) {
  if (sync.monotonic) {
    for (size_t i = 0; i < n; ++i) {
      Step s = fn(i);
      if (s.exit || !s.error.is_ok()) return {true, s.error};
    }
    return {};
  }
  // Parallel: everything, in slow-start batches (1, 2, 4, ...) that stop after a failing batch.
  size_t pos = 0;
  for (size_t batch = std::min<size_t>(n, 1); batch > 0;
       batch = std::min({2 * batch, n - pos, kMaxBatchSize})) {
    Status first_error;
    for (size_t i = pos; i < pos + batch; ++i) {
      Step s = fn(i);
      if (!s.error.is_ok() && first_error.is_ok()) first_error = s.error;
    }
    if (!first_error.is_ok()) return {true, first_error};
    pos += batch;
  }
  return {};
}

Status StatefulSetController::update_pods(Sync& sync, const std::vector<ObjectPtr>& pods) {
  const Json& set = sync.set;
  {
    std::vector<const Json*> all;
    for (const auto& p : pods) all.push_back(p.get());
    sync.counts = count(sync, all);
  }
  const int replica_count = std::max(0, replicas_of(set));
  const int start = start_ordinal(set);
  const int end = end_ordinal(set);
  std::vector<Replica> replicas(replica_count);
  std::vector<Replica> condemned;
  for (const auto& p : pods) {
    int ordinal = ordinal_of(*p);
    if (ordinal >= start && ordinal <= end) {
      replicas[ordinal - start] = {*p, true};
    } else if (ordinal >= 0) {
      condemned.push_back({*p, true});
    }
  }
  for (int ordinal = start; ordinal <= end; ++ordinal) {
    Replica& r = replicas[ordinal - start];
    if (!r.created) r.pod = new_replica(sync, ordinal);
  }
  std::sort(condemned.begin(), condemned.end(), [](const Replica& a, const Replica& b) {
    return ordinal_of(a.pod) > ordinal_of(b.pod);
  });

  auto unavailable = [&](const Replica& r) {
    return !r.created || !is_healthy(r.pod) ||
           !is_running_and_available(r.pod, sync.min_ready_seconds, sync.now);
  };
  const Json* first_unavailable = nullptr;
  for (const auto& r : replicas) {
    if (unavailable(r) && !first_unavailable) first_unavailable = &r.pod;
  }
  for (auto it = condemned.rbegin(); it != condemned.rend(); ++it) {
    if (unavailable(*it) && !first_unavailable) first_unavailable = &it->pod;
  }
  auto recount = [&] {
    std::vector<const Json*> all;
    for (const auto& r : replicas) {
      if (r.created) all.push_back(&r.pod);
    }
    for (const auto& r : condemned) {
      if (r.created) all.push_back(&r.pod);
    }
    sync.counts = count(sync, all);
  };

  // A set being deleted only reports its status.
  if (field(set, "metadata").contains("deletionTimestamp")) return Status::ok();

  Step step = run_for_all(sync, replicas.size(),
                          [&](size_t i) { return process_replica(sync, replicas, i); });
  if (step.exit || !step.error.is_ok()) {
    recount();
    return step.error;
  }
  // Every replica is now Running and Ready (in OrderedReady): scale down, highest ordinal first.
  step = run_for_all(sync, condemned.size(), [&](size_t i) {
    return process_condemned(sync, condemned, i, first_unavailable);
  });
  recount();
  if (step.exit || !step.error.is_ok()) return step.error;

  if (strategy_type(set) == "OnDelete") return Status::ok();
  // Rolling update: replace the highest-ordinal pod not at the update revision, one at a time,
  // down to the partition, waiting for each replaced pod to be available.
  const int partition = static_cast<int>(
      int_field(field(field(field(set, "spec"), "updateStrategy"), "rollingUpdate"), "partition"));
  for (int target = replica_count - 1; target >= partition && target >= 0; --target) {
    Replica& r = replicas[target];
    if (pod_revision(r.pod) != sync.update_revision && !is_pod_terminating(r.pod)) {
      if (!r.created) return Status::ok();
      SKIFF_LOG_INFO("statefulset: {}: deleting pod {} for update", sync.key,
                     client::name_of(r.pod));
      Status s = delete_pod(sync, r.pod);
      if (!s.is_ok()) return s;
      sync.counts.current = std::max<int64_t>(0, sync.counts.current - 1);
      return Status::ok();
    }
    if (unavailable(r)) return Status::ok();
  }
  return Status::ok();
}

StatefulSetController::Step StatefulSetController::process_replica(Sync& sync,
                                                                   std::vector<Replica>& replicas,
                                                                   size_t i) {
  Replica& r = replicas[i];
  if (!r.created) {
    Status s = create_pod(sync, r.pod);
    if (!s.is_ok()) return {true, s};
    // OrderedReady waits for this pod to be Running and Ready before the next.
    return {sync.monotonic, Status::ok()};
  }
  const Json& pod = r.pod;
  const std::string phase = pod_phase(pod);
  if (phase == "Failed" || phase == "Succeeded") {
    // Whatever ended the pod, the set wants it running: delete it, and create it again once it
    // is gone.
    if (!is_pod_terminating(pod)) {
      const std::string who = client::namespace_of(sync.set) + "/" + client::name_of(sync.set);
      if (phase == "Failed") {
        record(sync.set, "Warning", "RecreatingFailedPod",
               "StatefulSet " + who + " is recreating failed Pod " + client::name_of(pod));
      } else {
        record(sync.set, "Normal", "RecreatingTerminatedPod",
               "StatefulSet " + who + " is recreating terminated Pod " + client::name_of(pod));
      }
      Status s = delete_pod(sync, pod);
      if (!s.is_ok()) return {true, s};
    }
    return {true, Status::ok()};
  }
  if (phase == "Pending") {
    Status s = create_claims(sync, pod);
    if (!s.is_ok()) return {true, s};
  }
  if (sync.monotonic) {
    // Each pod's predecessors must be Running, Ready and available before it is touched.
    if (is_pod_terminating(pod) || !is_running_and_ready(pod) ||
        !is_running_and_available(pod, sync.min_ready_seconds, sync.now)) {
      return {true, Status::ok()};
    }
  }
  if (identity_matches(sync.set, pod) && storage_matches(sync.set, pod)) return {};
  Status s = update_pod(sync, pod);
  if (!s.is_ok()) return {true, s};
  return {};
}

StatefulSetController::Step StatefulSetController::process_condemned(
    Sync& sync, std::vector<Replica>& condemned, size_t i, const Json* first_unavailable) {
  const Json& pod = condemned[i].pod;
  if (is_pod_terminating(pod)) return {sync.monotonic, Status::ok()};
  // In OrderedReady a pod goes only while the others are healthy, unless it is the first
  // unhealthy one itself.
  if (sync.monotonic && &pod != first_unavailable &&
      (!is_running_and_ready(pod) ||
       !is_running_and_available(pod, sync.min_ready_seconds, sync.now))) {
    return {true, Status::ok()};
  }
  SKIFF_LOG_INFO("statefulset: {}: deleting pod {} for scale down", sync.key, client::name_of(pod));
  return {true, delete_pod(sync, pod)};
}

Status StatefulSetController::create_claims(const Sync& sync, const Json& pod) {
  const std::string ns = client::namespace_of(sync.set);
  const std::string set_name = client::name_of(sync.set);
  const std::string pod_name = client::name_of(pod);
  std::vector<std::string> errors;
  StatusCode code = StatusCode::kOk;
  auto fail = [&](StatusCode c, std::string message) {
    if (code == StatusCode::kOk) code = c;
    errors.push_back(std::move(message));
  };
  for (const Json& claim : claims_for(sync.set, ordinal_of(pod))) {
    const std::string name = client::name_of(claim);
    auto got = ctx_.api.get(kPersistentVolumeClaims, ns, name);
    if (got.is_ok()) {
      if (field(got.value(), "metadata").contains("deletionTimestamp")) {
        fail(StatusCode::kFailedPrecondition, "pvc " + name + " is being deleted");
      }
      continue;
    }
    if (got.status().code() != StatusCode::kNotFound) {
      std::string message = "failed to retrieve PVC " + name + ": " + got.status().message();
      record(sync.set, "Warning", "FailedCreate",
             "create Claim " + name + " for Pod " + pod_name + " in StatefulSet " + set_name +
                 " failed error: " + message);
      fail(got.status().code(), std::move(message));
      continue;
    }
    auto created = ctx_.api.create(kPersistentVolumeClaims, ns, claim);
    if (created.is_ok()) {
      record(
          sync.set, "Normal", "SuccessfulCreate",
          "create Claim " + name + " Pod " + pod_name + " in StatefulSet " + set_name + " success");
      continue;
    }
    if (created.status().code() == StatusCode::kAlreadyExists) continue;  // made meanwhile
    std::string message;
    if (created.status().code() == StatusCode::kNotFound) {
      // Only a missing resource answers NotFound to a create in an existing namespace: this
      // cluster has no persistentvolumeclaims, so the pod's claims cannot be made.
      message = "failed to create PVC " + name + ": this cluster does not serve " +
                "persistentvolumeclaims, so the volume claims Pod " + pod_name +
                " needs cannot be made (" + created.status().message() + ")";
    } else {
      message = "failed to create PVC " + name + ": " + created.status().message();
    }
    record(sync.set, "Warning", "FailedCreate",
           "create Claim " + name + " for Pod " + pod_name + " in StatefulSet " + set_name +
               " failed error: " + message);
    fail(created.status().code(), std::move(message));
    if (created.status().code() == StatusCode::kNotFound) break;  // the others fail alike
  }
  if (errors.empty()) return Status::ok();
  std::string joined;
  for (const auto& e : errors) joined += (joined.empty() ? "" : "; ") + e;
  return error(code, joined);
}

Status StatefulSetController::create_pod(const Sync& sync, const Json& pod) {
  const std::string set_name = client::name_of(sync.set);
  const std::string pod_name = client::name_of(pod);
  Status claims = create_claims(sync, pod);
  if (!claims.is_ok()) {
    record(sync.set, "Warning", "FailedCreate",
           "create Pod " + pod_name + " in StatefulSet " + set_name +
               " failed error: " + claims.message());
    return claims;
  }
  // Expect before creating: the informer may see the pod before create() returns.
  expectations_.expect(sync.key, 1);
  auto created = ctx_.api.create(kPods, client::namespace_of(sync.set), pod);
  if (!created.is_ok()) {
    expectations_.creation_observed(sync.key);
    // The name is taken (an older pod still terminating, or a stale cache): try again later.
    if (created.status().code() == StatusCode::kAlreadyExists) return created.status();
    record(sync.set, "Warning", "FailedCreate",
           "create Pod " + pod_name + " in StatefulSet " + set_name +
               " failed error: " + created.status().message());
    return created.status();
  }
  record(sync.set, "Normal", "SuccessfulCreate",
         "create Pod " + pod_name + " in StatefulSet " + set_name + " successful");
  return Status::ok();
}

Status StatefulSetController::delete_pod(const Sync& sync, const Json& pod) {
  const std::string set_name = client::name_of(sync.set);
  const std::string pod_name = client::name_of(pod);
  const std::string pod_key = client::key_of(pod);
  expectations_.expect(sync.key, 0, {pod_key});
  client::DeleteOptions options;
  options.precondition_uid = client::uid_of(pod);
  auto r = ctx_.api.remove(kPods, client::namespace_of(pod), pod_name, options);
  if (!r.is_ok()) {
    expectations_.deletion_observed(sync.key, pod_key);
    if (r.status().code() == StatusCode::kNotFound) return Status::ok();  // gone already
    record(sync.set, "Warning", "FailedDelete",
           "delete Pod " + pod_name + " in StatefulSet " + set_name +
               " failed error: " + r.status().message());
    return r.status();
  }
  record(sync.set, "Normal", "SuccessfulDelete",
         "delete Pod " + pod_name + " in StatefulSet " + set_name + " successful");
  return Status::ok();
}

Status StatefulSetController::update_pod(const Sync& sync, Json pod) {
  const std::string set_name = client::name_of(sync.set);
  const std::string ns = client::namespace_of(pod);
  auto failed = [&](const Status& s) {
    record(sync.set, "Warning", "FailedUpdate",
           "update Pod " + client::name_of(pod) + " in StatefulSet " + set_name +
               " failed error: " + s.message());
    return s;
  };
  for (int attempt = 0; attempt < kPodUpdateRetries; ++attempt) {
    bool consistent = true;
    if (!identity_matches(sync.update_set, pod)) {
      update_identity(sync.update_set, pod);
      consistent = false;
    }
    if (!storage_matches(sync.update_set, pod)) {
      update_storage(sync.update_set, pod);
      Status claims = create_claims(sync, pod);
      if (!claims.is_ok()) return failed(claims);
      consistent = false;
    }
    if (consistent) return Status::ok();
    auto updated = ctx_.api.update(kPods, ns, pod);
    if (updated.is_ok()) {
      record(sync.set, "Normal", "SuccessfulUpdate",
             "update Pod " + client::name_of(pod) + " in StatefulSet " + set_name + " successful");
      return Status::ok();
    }
    if (updated.status().code() != StatusCode::kAborted) return failed(updated.status());
    auto fresh = ctx_.api.get(kPods, ns, client::name_of(pod));
    if (!fresh.is_ok()) return failed(fresh.status());
    pod = std::move(fresh.value());
  }
  return failed(error(StatusCode::kAborted,
                      "aborting update after " + std::to_string(kPodUpdateRetries) + " attempts"));
}

Status StatefulSetController::write_status(const Json& cached, const Sync& sync) {
  const Json& set = sync.set;
  const int64_t spec_replicas = replicas_of(set);
  Counts c = sync.counts;
  std::string current_revision = sync.current_revision;
  // A finished rolling update makes the update revision current.
  if (strategy_type(set) == "RollingUpdate" && c.updated == spec_replicas &&
      c.ready == spec_replicas && c.replicas == spec_replicas) {
    c.current = c.updated;
    current_revision = sync.update_revision;
  }
  const Json& old = field(cached, "status");
  Json status = Json::object();
  // Zero counts are left out as upstream's omitempty fields are; replicas and
  // availableReplicas are always written.
  auto set_count = [&](const char* name, int64_t v) {
    if (v != 0) status[name] = v;
  };
  set_count("observedGeneration", int_field(field(set, "metadata"), "generation"));
  status["replicas"] = c.replicas;
  set_count("readyReplicas", c.ready);
  set_count("currentReplicas", c.current);
  set_count("updatedReplicas", c.updated);
  if (!current_revision.empty()) status["currentRevision"] = current_revision;
  if (!sync.update_revision.empty()) status["updateRevision"] = sync.update_revision;
  status["collisionCount"] = sync.collision_count;
  status["availableReplicas"] = c.available;
  if (old.contains("conditions")) status["conditions"] = old["conditions"];
  if (old == status) return Status::ok();

  Json obj = cached;
  obj["status"] = status;
  const std::string ns = client::namespace_of(cached);
  for (int attempt = 0;; ++attempt) {
    auto r = ctx_.api.update(kStatefulSets, ns, obj, {}, "status");
    if (r.is_ok() || r.status().code() != StatusCode::kAborted ||
        attempt + 1 >= kStatusUpdateRetries) {
      return r.status();
    }
    auto fresh = ctx_.api.get(kStatefulSets, ns, client::name_of(cached));
    if (!fresh.is_ok()) return fresh.status();
    obj = std::move(fresh.value());
    obj["status"] = status;
  }
}

Status StatefulSetController::truncate_history(const Json& set, const std::vector<ObjectPtr>& pods,
                                               const std::vector<ObjectPtr>& revisions,
                                               const std::string& current,
                                               const std::string& update) {
  std::set<std::string> live = {current, update};
  for (const auto& p : pods) live.insert(pod_revision(*p));
  std::vector<ObjectPtr> old;
  for (const auto& r : revisions) {
    if (!live.count(client::name_of(*r))) old.push_back(r);
  }
  const int64_t limit = int_field(field(set, "spec"), "revisionHistoryLimit", 10);
  if (limit < 0 || static_cast<int64_t>(old.size()) <= limit) return Status::ok();
  const size_t surplus = old.size() - static_cast<size_t>(limit);
  for (size_t i = 0; i < surplus; ++i) {
    auto r = ctx_.api.remove(kControllerRevisions, client::namespace_of(*old[i]),
                             client::name_of(*old[i]));
    if (!r.is_ok() && r.status().code() != StatusCode::kNotFound) return r.status();
  }
  return Status::ok();
}

std::unique_ptr<Controller> new_statefulset_controller(ControllerContext& ctx) {
  return std::make_unique<StatefulSetController>(ctx);
}

}  // namespace skiff::controllers
