#include "controllers/replicaset/replicaset_controller.h"

#include <algorithm>
#include <atomic>
#include <thread>

#include "base/log.h"
#include "controllers/json_fields.h"

namespace skiff::controllers {
namespace {

using client::resources::kPods;
using namespace std::chrono_literals;

// Calls of one slow-start batch run on at most this many threads.
constexpr int kMaxParallelCalls = 16;
// How often a status write is retried after re-reading the owner (upstream's
// statusUpdateRetries).
constexpr int kStatusUpdateRetries = 1;
constexpr char kDeletionCostAnnotation[] = "controller.kubernetes.io/pod-deletion-cost";

int replicas_of(const Json& owner) {
  return static_cast<int>(numeric_int_field(field(owner, "spec"), "replicas", 1));
}

int64_t min_ready_seconds_of(const Json& owner) {
  return numeric_int_field(field(owner, "spec"), "minReadySeconds");
}

std::string node_name(const Json& pod) {
  return field(pod, "spec").value("nodeName", "");
}

// Every label of the template is on the pod with the same value.
bool has_all_labels(const Json& template_labels, const Json& pod) {
  const Json& labels = labels_of(pod);
  for (auto it = template_labels.begin(); it != template_labels.end(); ++it) {
    auto l = labels.find(it.key());
    if (l == labels.end() || *l != it.value()) return false;
  }
  return true;
}

int phase_ordinal(const Json& pod) {
  std::string phase = pod_phase(pod);
  if (phase == "Unknown") return 1;
  if (phase == "Running") return 2;
  return 0;  // Pending, and anything else
}

// Seconds since the epoch of the Ready condition's last transition; -1 when not ready / unknown.
int64_t ready_since(const Json& pod) {
  const Json* c = find_condition(field(pod, "status"), "Ready");
  if (!c || c->value("status", "") != "True") return -1;
  return parse_rfc3339(c->value("lastTransitionTime", ""));
}

// afterOrZero: a zero time sorts first; otherwise the later time does.
bool after_or_zero(int64_t a, int64_t b) {
  if (a < 0 || b < 0) return a < 0;
  return a > b;
}

int32_t deletion_cost(const Json& pod) {
  const Json& ann = field(field(pod, "metadata"), "annotations");
  auto it = ann.find(kDeletionCostAnnotation);
  if (it == ann.end() || !it->is_string()) return 0;
  const std::string s = it->get<std::string>();
  try {
    size_t used = 0;
    long long v = std::stoll(s, &used);
    if (used != s.size() || v < INT32_MIN || v > INT32_MAX) return 0;
    return static_cast<int32_t>(v);
  } catch (...) {
    return 0;
  }
}

// The highest restart count among regular containers, and among restartable (sidecar) init
// containers.
std::pair<int64_t, int64_t> max_restarts(const Json& pod) {
  int64_t regular = 0, sidecar = 0;
  for (const auto& cs : field(field(pod, "status"), "containerStatuses")) {
    regular = std::max(regular, numeric_int_field(cs, "restartCount"));
  }
  std::set<std::string> sidecars;
  for (const auto& c : field(field(pod, "spec"), "initContainers")) {
    if (c.is_object() && c.value("restartPolicy", "") == "Always") {
      sidecars.insert(c.value("name", ""));
    }
  }
  for (const auto& cs : field(field(pod, "status"), "initContainerStatuses")) {
    if (cs.is_object() && sidecars.count(cs.value("name", ""))) {
      sidecar = std::max(sidecar, numeric_int_field(cs, "restartCount"));
    }
  }
  return {regular, sidecar};
}

// Runs fn(i) for i in [0, n) on up to kMaxParallelCalls threads.
void run_parallel(int n, const std::function<void(int)>& fn) {
  if (n <= 1) {
    if (n == 1) fn(0);
    return;
  }
  std::atomic<int> next{0};
  auto loop = [&] {
    for (int i = next++; i < n; i = next++) fn(i);
  };
  std::vector<std::thread> threads;
  int workers = std::min(n, kMaxParallelCalls);
  for (int t = 1; t < workers; ++t) threads.emplace_back(loop);
  loop();
  for (auto& t : threads) t.join();
}

}  // namespace

const ReplicaSetKind& replica_set_kind() {
  static const ReplicaSetKind kKind{client::resources::kReplicaSets, "ReplicaSet", "apps/v1",
                                    "replicaset", "replicaset-controller"};
  return kKind;
}

const ReplicaSetKind& replication_controller_kind() {
  static const ReplicaSetKind kKind{client::resources::kReplicationControllers,
                                    "ReplicationController", "v1", "replicationcontroller",
                                    "replication-controller"};
  return kKind;
}

SlowStartResult slow_start_batch(int count, int initial_batch_size,
                                 const std::function<Status()>& fn) {
  SlowStartResult result;
  int remaining = count;
  for (int batch = std::min(remaining, initial_batch_size); batch > 0;
       batch = std::min(2 * batch, remaining)) {
    std::mutex mu;
    std::vector<Status> errors;
    run_parallel(batch, [&](int) {
      Status s = fn();
      if (!s.is_ok()) {
        std::lock_guard lock(mu);
        errors.push_back(std::move(s));
      }
    });
    result.successes += batch - static_cast<int>(errors.size());
    if (!errors.empty()) {
      result.error = errors.front();
      return result;
    }
    remaining -= batch;
  }
  return result;
}

std::vector<ObjectPtr> pods_to_delete(std::vector<ObjectPtr> pods,
                                      const std::vector<ObjectPtr>& related, int count) {
  count = std::max(0, std::min(count, static_cast<int>(pods.size())));
  // Sorting is needless when every pod goes.
  if (count < static_cast<int>(pods.size())) {
    std::unordered_map<std::string, int> pods_on_node;
    for (const auto& p : related) {
      if (is_pod_active(*p)) ++pods_on_node[node_name(*p)];
    }
    struct Ranked {
      ObjectPtr pod;
      int rank;
    };
    std::vector<Ranked> ranked;
    ranked.reserve(pods.size());
    for (auto& p : pods) {
      auto it = pods_on_node.find(node_name(*p));
      ranked.push_back({std::move(p), it == pods_on_node.end() ? 0 : it->second});
    }
    auto less = [](const Ranked& a, const Ranked& b) {
      const Json& pi = *a.pod;
      const Json& pj = *b.pod;
      // 1. Unassigned < assigned.
      std::string ni = node_name(pi), nj = node_name(pj);
      if (ni != nj && (ni.empty() || nj.empty())) return ni.empty();
      // 2. Pending < Unknown < Running.
      int oi = phase_ordinal(pi), oj = phase_ordinal(pj);
      if (oi != oj) return oi < oj;
      // 3. Not ready < ready.
      bool ri = is_pod_ready(pi), rj = is_pod_ready(pj);
      if (ri != rj) return !ri;
      // 4. Lower deletion cost < higher deletion cost.
      int32_t ci = deletion_cost(pi), cj = deletion_cost(pj);
      if (ci != cj) return ci < cj;
      // 5. Doubled up < not doubled up.
      if (a.rank != b.rank) return a.rank > b.rank;
      // 6. Ready for less time < ready for more time.
      if (ri && rj) {
        int64_t ti = ready_since(pi), tj = ready_since(pj);
        if (ti != tj) return after_or_zero(ti, tj);
      }
      // 7. More restarts < fewer restarts.
      auto [regular_i, sidecar_i] = max_restarts(pi);
      auto [regular_j, sidecar_j] = max_restarts(pj);
      if (regular_i != regular_j) return regular_i > regular_j;
      if (sidecar_i != sidecar_j) return sidecar_i > sidecar_j;
      // 8. Newer < older.
      int64_t ki = created_at(pi), kj = created_at(pj);
      if (ki != kj) return after_or_zero(ki, kj);
      return false;
    };
    std::stable_sort(ranked.begin(), ranked.end(), less);
    pods.clear();
    for (auto& r : ranked) pods.push_back(std::move(r.pod));
  }
  pods.resize(count);
  return pods;
}

ReplicaSetController::ReplicaSetController(ControllerContext& ctx, ReplicaSetKind kind)
    : ctx_(ctx),
      kind_(std::move(kind)),
      owners_(ctx.informers.informer(kind_.resource)),
      pods_(ctx.informers.informer(kPods)),
      expectations_(ctx.clock),
      recorder_(ctx.recorder ? ctx.recorder(kind_.component) : nullptr),
      workers_(
          kind_.name, queue_, [this](const std::string& key) { return reconcile(key); },
          [this] { return owners_.has_synced() && pods_.has_synced(); }),
      pod_events_(owners_, queue_,
                  {.kind = kind_.kind,
                   .group = kind_.resource.group,
                   .creation_observed =
                       [this](const std::string& key) { expectations_.creation_observed(key); },
                   .deletion_observed =
                       [this](const std::string& key, const std::string& pod_key) {
                         deletion_observed(key, pod_key);
                       },
                   .forget = [this](const std::string& key) { forget(key); },
                   .min_ready_seconds = min_ready_seconds_of,
                   .terminating_update_is_delete = true}) {
  owners_.add_handlers(pod_events_.owner_handlers());
  pods_.add_handlers(pod_events_.pod_handlers());
}

ReplicaSetController::~ReplicaSetController() {
  stop();
}

void ReplicaSetController::start() {
  workers_.start(ctx_.options.workers);
}

void ReplicaSetController::stop() {
  workers_.stop();
}

void ReplicaSetController::expect_deletions(const std::string& key,
                                            const std::vector<std::string>& pod_keys) {
  {
    std::lock_guard lock(deletions_mu_);
    pending_deletions_[key] = std::set<std::string>(pod_keys.begin(), pod_keys.end());
  }
  expectations_.expect(key, 0, static_cast<int>(pod_keys.size()));
}

void ReplicaSetController::deletion_observed(const std::string& key, const std::string& pod_key) {
  {
    std::lock_guard lock(deletions_mu_);
    auto it = pending_deletions_.find(key);
    if (it == pending_deletions_.end() || it->second.erase(pod_key) == 0) return;
    if (it->second.empty()) pending_deletions_.erase(it);
  }
  expectations_.deletion_observed(key);
}

void ReplicaSetController::forget(const std::string& key) {
  expectations_.forget(key);
  std::lock_guard lock(deletions_mu_);
  pending_deletions_.erase(key);
}

void ReplicaSetController::record(const Json& owner, std::string_view type, std::string_view reason,
                                  std::string message) {
  if (recorder_)
    recorder_->event(owner, type, reason, std::move(message), kind_.kind, kind_.api_version);
}

Status ReplicaSetController::reconcile(const std::string& key) {
  ObjectPtr cached = owners_.get(key);
  if (!cached) {
    forget(key);
    return Status::ok();
  }
  const Json& owner = *cached;
  // Read before listing pods: an expectation met after this point is acted on next time.
  const bool needs_sync = expectations_.satisfied(key);
  api::LabelSelector selector = selector_of(owner);
  if (selector.matches_nothing()) {
    // Validation forbids this; nothing sensible can be done until the object is fixed.
    SKIFF_LOG_WARN("{}: {} has an invalid or empty selector", kind_.name, key);
    return Status::ok();
  }
  std::vector<ObjectPtr> active;
  for (const auto& pod : pods_.list(client::namespace_of(owner))) {
    if (is_pod_active(*pod)) active.push_back(pod);
  }
  auto claimed = claim_pods(ctx_.api, owner, kind_.kind, kind_.api_version, selector, active);
  if (!claimed.is_ok()) return claimed.status();
  const std::vector<ObjectPtr>& pods = claimed.value();

  Status manage_error;
  if (needs_sync && !is_being_deleted(owner)) manage_error = manage_replicas(pods, owner, key);

  auto updated = update_status(owner, calculate_status(owner, pods, manage_error));
  if (!updated.is_ok()) return updated.status();
  const Json& now = updated.value();
  // Pods that are ready but not yet available become available minReadySeconds later without
  // any event: look again then.
  int64_t min_ready = min_ready_seconds_of(now);
  const Json& status = field(now, "status");
  if (manage_error.is_ok() && min_ready > 0 &&
      numeric_int_field(status, "readyReplicas") == replicas_of(now) &&
      numeric_int_field(status, "availableReplicas") != replicas_of(now)) {
    queue_.add_after(key, std::chrono::seconds(min_ready));
  }
  return manage_error;
}

Status ReplicaSetController::manage_replicas(const std::vector<ObjectPtr>& pods, const Json& owner,
                                             const std::string& key) {
  int diff = static_cast<int>(pods.size()) - replicas_of(owner);
  if (diff < 0) {
    int want = std::min(-diff, kBurstReplicas);
    // Expect before creating: the informer may see a pod before create() returns.
    expectations_.expect(key, want, 0);
    SlowStartResult result =
        slow_start_batch(want, kSlowStartInitialBatchSize, [&]() { return create_pod(owner); });
    // Pods never created (failed or skipped) will never be observed.
    if (int skipped = want - result.successes; skipped > 0) expectations_.lower(key, skipped, 0);
    return result.error;
  }
  if (diff > 0) {
    int surplus = std::min(diff, kBurstReplicas);
    std::vector<ObjectPtr> victims = pods_to_delete(pods, related_pods(owner), surplus);
    std::vector<std::string> victim_keys;
    for (const auto& p : victims) victim_keys.push_back(client::key_of(*p));
    expect_deletions(key, victim_keys);
    std::mutex mu;
    Status first_error;
    run_parallel(static_cast<int>(victims.size()), [&](int i) {
      const Json& pod = *victims[i];
      auto r = ctx_.api.remove(kPods, client::namespace_of(pod), client::name_of(pod));
      if (r.is_ok()) {
        record(owner, "Normal", "SuccessfulDelete", "Deleted pod: " + client::name_of(pod));
        return;
      }
      // The informer will not see this deletion.
      deletion_observed(key, victim_keys[i]);
      if (r.status().code() == StatusCode::kNotFound) return;
      record(owner, "Warning", "FailedDelete", "Error deleting: " + r.status().message());
      std::lock_guard lock(mu);
      if (first_error.is_ok()) first_error = r.status();
    });
    return first_error;
  }
  return Status::ok();
}

Status ReplicaSetController::create_pod(const Json& owner) {
  const Json& tmpl = field(field(owner, "spec"), "template");
  const Json& tmpl_labels = field(field(tmpl, "metadata"), "labels");
  if (!tmpl_labels.is_object() || tmpl_labels.empty()) {
    Status s = error(StatusCode::kInvalidArgument, "unable to create pods, no labels");
    record(owner, "Warning", "FailedCreate", "Error creating: " + s.message());
    return s;
  }
  Json pod = pod_from_template(tmpl, owner, kind_.kind, kind_.api_version, client::name_of(owner));
  auto created = ctx_.api.create(kPods, client::namespace_of(owner), pod);
  if (!created.is_ok()) {
    record(owner, "Warning", "FailedCreate", "Error creating: " + created.status().message());
    return created.status();
  }
  record(owner, "Normal", "SuccessfulCreate", "Created pod: " + client::name_of(created.value()));
  return Status::ok();
}

std::vector<ObjectPtr> ReplicaSetController::related_pods(const Json& owner) const {
  // Pods of every owner that shares this owner's controller (the other ReplicaSets of its
  // Deployment): spreading the survivors across nodes counts them too.
  std::vector<ObjectPtr> out;
  const Json* controller = client::controller_of(owner);
  if (!controller) return out;
  const std::string controller_uid = controller->value("uid", "");
  const std::string ns = client::namespace_of(owner);
  std::vector<ObjectPtr> all_pods = pods_.list(ns);
  std::set<std::string> seen;
  for (const auto& sibling : owners_.list(ns)) {
    const Json* ref = client::controller_of(*sibling);
    if (!ref || ref->value("uid", "") != controller_uid) continue;
    api::LabelSelector selector = selector_of(*sibling);
    if (selector.matches_nothing()) continue;
    for (const auto& pod : all_pods) {
      if (labels_match(selector, *pod) && seen.insert(client::uid_of(*pod)).second) {
        out.push_back(pod);
      }
    }
  }
  return out;
}

Json ReplicaSetController::calculate_status(const Json& owner, const std::vector<ObjectPtr>& pods,
                                            const Status& manage_error) const {
  Json status = field(owner, "status");
  if (!status.is_object()) status = Json::object();
  const Json& tmpl_labels =
      field(field(field(field(owner, "spec"), "template"), "metadata"), "labels");
  const int64_t min_ready = min_ready_seconds_of(owner);
  const int64_t now = ctx_.clock.now_seconds();
  int64_t fully_labeled = 0, ready = 0, available = 0;
  for (const auto& pod : pods) {
    if (has_all_labels(tmpl_labels.is_object() ? tmpl_labels : empty_object(), *pod)) {
      ++fully_labeled;
    }
    if (is_pod_ready(*pod)) {
      ++ready;
      if (is_pod_available(*pod, min_ready, now)) ++available;
    }
  }
  const Json* failure = find_condition(status, "ReplicaFailure");
  if (!manage_error.is_ok() && !failure) {
    int diff = static_cast<int>(pods.size()) - replicas_of(owner);
    std::string reason = diff < 0 ? "FailedCreate" : diff > 0 ? "FailedDelete" : "";
    Json cond = {{"type", "ReplicaFailure"},
                 {"status", "True"},
                 {"lastTransitionTime", rfc3339(now)},
                 {"reason", reason},
                 {"message", manage_error.message()}};
    if (!status["conditions"].is_array()) status["conditions"] = Json::array();
    status["conditions"].push_back(std::move(cond));
  } else if (manage_error.is_ok() && failure) {
    Json kept = Json::array();
    for (const auto& c : status["conditions"]) {
      if (c.value("type", "") != "ReplicaFailure") kept.push_back(c);
    }
    if (kept.empty()) {
      status.erase("conditions");
    } else {
      status["conditions"] = std::move(kept);
    }
  }
  // Zero counts are left out, as upstream's omitempty fields are; replicas is always written.
  status["replicas"] = static_cast<int64_t>(pods.size());
  auto set_count = [&](const char* name, int64_t v) {
    if (v == 0) {
      status.erase(name);
    } else {
      status[name] = v;
    }
  };
  set_count("fullyLabeledReplicas", fully_labeled);
  set_count("readyReplicas", ready);
  set_count("availableReplicas", available);
  return status;
}

Result<Json> ReplicaSetController::update_status(const Json& owner, Json status) {
  const Json& old = field(owner, "status");
  const int64_t generation = numeric_int_field(field(owner, "metadata"), "generation");
  // The generation acted on, so that a retry does not claim a spec it has not seen.
  if (generation != 0) {
    status["observedGeneration"] = generation;
  } else {
    status.erase("observedGeneration");
  }
  if (old == status) return owner;
  Json obj = owner;
  obj["status"] = status;
  const std::string ns = client::namespace_of(owner);
  for (int attempt = 0;; ++attempt) {
    auto r = ctx_.api.update(kind_.resource, ns, obj, {}, "status");
    if (r.is_ok() || attempt >= kStatusUpdateRetries) return r;
    // Re-read for the latest resourceVersion; if that fails the counts cannot be trusted.
    auto fresh = ctx_.api.get(kind_.resource, ns, client::name_of(owner));
    if (!fresh.is_ok()) return fresh.status();
    obj = std::move(fresh.value());
    obj["status"] = status;
  }
}

std::unique_ptr<Controller> new_replicaset_controller(ControllerContext& ctx) {
  return std::make_unique<ReplicaSetController>(ctx, replica_set_kind());
}

std::unique_ptr<Controller> new_replicationcontroller_controller(ControllerContext& ctx) {
  return std::make_unique<ReplicaSetController>(ctx, replication_controller_kind());
}

}  // namespace skiff::controllers
