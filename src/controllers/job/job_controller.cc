#include "controllers/job/job_controller.h"

#include <algorithm>
#include <charconv>
#include <mutex>
#include <set>
#include <unordered_map>

#include "base/log.h"
#include "controllers/controller_utils.h"
#include "controllers/job/job_util.h"
#include "controllers/json_fields.h"

namespace skiff::controllers {
namespace {

using client::resources::kJobs;
using client::resources::kPods;
using namespace job;

constexpr char kOwnerIndex[] = "job-controller/owner-uid";
constexpr size_t kMaxUncountedPods = 500;
constexpr int kMaxPodCreateDeletePerSync = 500;
// Longest generateName that leaves room for the API server's random suffix in a 63-char name.
constexpr size_t kMaxGeneratedNameLength = 58;

std::optional<int64_t> optional_int(const Json& obj, std::string_view key) {
  if (!obj.is_object()) return std::nullopt;
  auto it = obj.find(key);
  if (it == obj.end() || !it->is_number_integer()) return std::nullopt;
  return it->get<int64_t>();
}

// Writes an int as upstream's omitempty fields are written: absent when zero.
void set_count(Json& status, const char* key, int64_t value) {
  if (value == 0) {
    status.erase(key);
  } else {
    status[key] = value;
  }
}

struct Spec {
  int parallelism = 1;
  std::optional<int> completions;
  int backoff_limit = 6;
  std::optional<int64_t> active_deadline;
  bool suspended = false;
  bool indexed = false;
  bool on_failure = false;           // restartPolicy OnFailure
  bool only_replace_failed = false;  // podReplacementPolicy Failed, or a podFailurePolicy
  bool manual_selector = false;
};

Spec spec_of(const Json& job) {
  const Json& spec = job.contains("spec") ? job["spec"] : Json::object();
  Spec s;
  auto parallelism = optional_int(spec, "parallelism");
  s.completions = optional_int(spec, "completions");
  // As the API server defaults them: both unset means one pod, once.
  if (!parallelism && !s.completions) s.completions = 1;
  s.parallelism = static_cast<int>(std::max<int64_t>(0, parallelism.value_or(1)));
  if (s.completions) s.completions = std::max(0, *s.completions);
  s.backoff_limit = static_cast<int>(int_field(spec, "backoffLimit", 6));
  s.active_deadline = optional_int(spec, "activeDeadlineSeconds");
  s.suspended = spec.value("suspend", false);
  s.indexed = spec.value("completionMode", "NonIndexed") == "Indexed";
  if (auto t = spec.find("template"); t != spec.end() && t->is_object()) {
    s.on_failure = t->value("spec", Json::object()).value("restartPolicy", "") == "OnFailure";
  }
  s.only_replace_failed =
      spec.value("podReplacementPolicy", "") == "Failed" ||
      (spec.contains("podFailurePolicy") && !spec["podFailurePolicy"].is_null());
  s.manual_selector = spec.value("manualSelector", false);
  return s;
}

bool managed_elsewhere(const Json& job) {
  auto spec = job.find("spec");
  if (spec == job.end() || !spec->is_object()) return false;
  auto by = spec->find("managedBy");
  return by != spec->end() && by->is_string() && *by != kJobControllerName;
}

Json new_condition(const std::string& type, const std::string& status, const std::string& reason,
                   const std::string& message, const std::string& now) {
  Json c = {
      {"type", type}, {"status", status}, {"lastProbeTime", now}, {"lastTransitionTime", now}};
  if (!reason.empty()) c["reason"] = reason;
  if (!message.empty()) c["message"] = message;
  return c;
}

// Sets a condition of `type` to `status`; as upstream, a condition that does not exist is not
// added with status False. Returns whether anything changed.
bool ensure_condition(Json& status, const std::string& type, const std::string& cstatus,
                      const std::string& reason, const std::string& message,
                      const std::string& now) {
  Json& conds = status["conditions"];
  if (!conds.is_array()) conds = Json::array();
  for (auto& c : conds) {
    if (c.value("type", "") != type) continue;
    if (c.value("status", "") != cstatus || c.value("reason", "") != reason ||
        c.value("message", "") != message) {
      c = new_condition(type, cstatus, reason, message, now);
      return true;
    }
    return false;
  }
  if (cstatus == "False") {
    if (conds.empty()) status.erase("conditions");
    return false;
  }
  conds.push_back(new_condition(type, cstatus, reason, message, now));
  return true;
}

const Json* condition_true(const Json& job, std::string_view type) {
  auto status = job.find("status");
  if (status == job.end()) return nullptr;
  const Json* c = find_condition(*status, type);
  return c && c->value("status", "") == "True" ? c : nullptr;
}

std::set<std::string> uid_set(const Json& list) {
  std::set<std::string> out;
  if (!list.is_array()) return out;
  for (const auto& v : list) {
    if (v.is_string()) out.insert(v.get<std::string>());
  }
  return out;
}

// A JSON patch removing the tracking finalizer, guarded by a test of its position so a pod
// changed meanwhile is not patched blindly; empty when the pod has no such finalizer.
std::string remove_finalizer_patch(const Json& pod) {
  const Json& f = pod["metadata"].value("finalizers", Json::array());
  for (size_t i = 0; i < f.size(); ++i) {
    if (f[i].is_string() && f[i].get_ref<const std::string&>() == kTrackingFinalizer) {
      std::string path = "/metadata/finalizers/" + std::to_string(i);
      return Json::array(
                 {{{"op", "test"}, {"path", path}, {"value", std::string(kTrackingFinalizer)}},
                  {{"op", "remove"}, {"path", path}}})
          .dump();
    }
  }
  return "";
}

struct Finished {
  std::string type;  // FailureTarget, Failed, SuccessCriteriaMet, Complete
  std::string reason;
  std::string message;
};

struct PodInfo {
  ObjectPtr pod;
  std::string uid;
  std::string phase;
  bool finalizer = false;
  bool deleting = false;
  int index = -1;
};

// One syncJob pass: the Job being edited and what was learnt about its pods.
struct SyncState {
  std::string key;
  Json job;
  Spec spec;
  std::vector<PodInfo> pods;
  std::vector<const PodInfo*> active_pods;
  std::optional<Finished> finished;
  int succeeded = 0;
  int failed = 0;
  int ready = 0;
  int terminating = 0;
  IndexSet prev_succeeded_indexes;
  IndexSet succeeded_indexes;
  BackoffStore::Record new_backoff;
  std::set<std::string> expected_rm;
  std::set<std::string> uncounted_succeeded;
  std::set<std::string> uncounted_failed;
  int64_t now = 0;
  std::string now_text;

  Json& status() { return job["status"]; }
  int completions() const { return spec.completions.value_or(0); }
};

class JobController final : public Controller {
 public:
  explicit JobController(ControllerContext& ctx)
      : api_(ctx.api),
        clock_(ctx.clock),
        workers_count_(ctx.options.workers),
        jobs_(ctx.informers.informer(kJobs)),
        pods_(ctx.informers.informer(kPods)),
        recorder_(ctx.recorder("job-controller")),
        expectations_(ctx.clock),
        workers_(
            "job", queue_, [this](const std::string& key) { return sync_job(key); },
            [this] { return jobs_.has_synced() && pods_.has_synced(); }),
        orphan_workers_(
            "job-orphan-pods", orphan_queue_,
            [this](const std::string& key) { return sync_orphan_pod(key); },
            [this] { return jobs_.has_synced() && pods_.has_synced(); }) {
    pods_.add_index(kOwnerIndex, [](const Json& pod) {
      const Json* ref = client::controller_of(pod);
      if (!ref || ref->value("kind", "") != "Job") return std::vector<std::string>{};
      return std::vector<std::string>{ref->value("uid", "")};
    });
    jobs_.add_handlers({
        [this](const ObjectPtr& job) { queue_.add(client::key_of(*job)); },
        [this](const ObjectPtr& old_job, const ObjectPtr& job) { on_job_update(*old_job, *job); },
        [this](const ObjectPtr& job) {
          queue_.add(client::key_of(*job));
          cleanup_pod_finalizers(*job);
        },
    });
    pods_.add_handlers({
        [this](const ObjectPtr& pod) { on_pod_add(*pod); },
        [this](const ObjectPtr& old_pod, const ObjectPtr& pod) { on_pod_update(*old_pod, *pod); },
        [this](const ObjectPtr& pod) { on_pod_delete(*pod); },
    });
  }

  ~JobController() override { stop(); }

  std::string_view name() const override { return "job-controller"; }

  void start() override {
    workers_.start(workers_count_);
    orphan_workers_.start(1);
  }

  void stop() override {
    workers_.stop();
    orphan_workers_.stop();
  }

 private:
  // ---- event handlers: they only record observations and enqueue keys ----

  ObjectPtr resolve_job(const std::string& ns, const Json& ref) const {
    if (ref.value("kind", "") != "Job") return nullptr;
    ObjectPtr job = jobs_.get(ns, ref.value("name", ""));
    if (!job || client::uid_of(*job) != ref.value("uid", "")) return nullptr;
    return job;
  }

  void enqueue_orphan(const Json& pod) { orphan_queue_.add(client::key_of(pod)); }

  // Pods of a finished or deleted Job keep no finalizer: the orphan worker removes it.
  void cleanup_pod_finalizers(const Json& job) {
    for (const auto& pod : pods_.by_index(kOwnerIndex, client::uid_of(job))) {
      if (has_tracking_finalizer(*pod)) enqueue_orphan(*pod);
    }
  }

  void enqueue_matching_jobs(const Json& pod) {
    for (const auto& job : jobs_.list(client::namespace_of(pod))) {
      if (labels_match(selector_of(*job), pod)) queue_.add(client::key_of(*job));
    }
  }

  void on_job_update(const Json& old_job, const Json& job) {
    std::string key = client::key_of(job);
    queue_.add(key);
    if (is_job_finished(job)) cleanup_pod_finalizers(job);
    // A changed deadline needs a sync when it expires.
    const Json& status = job.value("status", Json::object());
    int64_t start = parse_rfc3339(status.value("startTime", ""));
    auto deadline = optional_int(job.value("spec", Json::object()), "activeDeadlineSeconds");
    auto old_deadline =
        optional_int(old_job.value("spec", Json::object()), "activeDeadlineSeconds");
    if (start >= 0 && deadline && deadline != old_deadline) {
      int64_t left = start + *deadline - clock_.now_seconds();
      queue_.add_after(key, std::chrono::seconds(std::max<int64_t>(left, 0)));
    }
  }

  void on_pod_add(const Json& pod) {
    if (is_being_deleted(pod)) {
      // Seen for the first time already being deleted (e.g. after a restart).
      on_pod_deleting(pod, /*final=*/false, /*newly=*/true);
      return;
    }
    if (const Json* ref = client::controller_of(pod)) {
      ObjectPtr job = resolve_job(client::namespace_of(pod), *ref);
      if (!job) return;
      std::string key = client::key_of(*job);
      expectations_.creation_observed(key);
      queue_.add(key);
      return;
    }
    if (has_tracking_finalizer(pod)) enqueue_orphan(pod);
    enqueue_matching_jobs(pod);
  }

  void on_pod_update(const Json& old_pod, const Json& pod) {
    if (client::resource_version_of(old_pod) == client::resource_version_of(pod)) return;
    if (is_being_deleted(pod)) {
      on_pod_deleting(pod, /*final=*/false, /*newly=*/!is_being_deleted(old_pod));
      return;
    }
    bool finalizer_removed = !has_tracking_finalizer(pod);
    const Json* ref = client::controller_of(pod);
    const Json* old_ref = client::controller_of(old_pod);
    bool ref_changed = (ref == nullptr) != (old_ref == nullptr) || (ref && *ref != *old_ref);
    std::string ns = client::namespace_of(pod);
    if (ref_changed && old_ref) {
      if (ObjectPtr job = resolve_job(ns, *old_ref)) {
        std::string key = client::key_of(*job);
        if (finalizer_removed) finalizer_expectations_.observed(key, client::uid_of(pod));
        queue_.add(key);
      }
    }
    if (ref) {
      ObjectPtr job = resolve_job(ns, *ref);
      if (!job) return;
      std::string key = client::key_of(*job);
      if (finalizer_removed) finalizer_expectations_.observed(key, client::uid_of(pod));
      if (is_job_finished(*job) && has_tracking_finalizer(pod)) enqueue_orphan(pod);
      queue_.add(key);
      return;
    }
    if (has_tracking_finalizer(pod)) enqueue_orphan(pod);
    bool labels_changed = old_pod["metadata"].value("labels", Json::object()) !=
                          pod["metadata"].value("labels", Json::object());
    if (labels_changed || ref_changed) enqueue_matching_jobs(pod);
  }

  void on_pod_delete(const Json& pod) {
    on_pod_deleting(pod, /*final=*/true, /*newly=*/!is_being_deleted(pod));
  }

  // A pod that is being deleted (final: it is gone). `newly`: this is the first time the
  // deletion is seen, so it is counted against the expectations once.
  void on_pod_deleting(const Json& pod, bool final, bool newly) {
    const Json* ref = client::controller_of(pod);
    bool finalizer = has_tracking_finalizer(pod);
    if (!ref) {
      if (finalizer && !final) enqueue_orphan(pod);
      return;
    }
    ObjectPtr job = resolve_job(client::namespace_of(pod), *ref);
    if (!job || is_job_finished(*job)) {
      if (finalizer && !final) enqueue_orphan(pod);
      return;
    }
    std::string key = client::key_of(*job);
    if (newly) expectations_.deletion_observed(key);
    if (final || !finalizer) finalizer_expectations_.observed(key, client::uid_of(pod));
    queue_.add(key);
  }

  // ---- orphan pods ----

  Status sync_orphan_pod(const std::string& key) {
    ObjectPtr pod = pods_.get(key);
    if (!pod) return Status::ok();
    if (const Json* ref = client::controller_of(*pod)) {
      if (ref->value("kind", "") != "Job" || ref->value("apiVersion", "") != "batch/v1") {
        return Status::ok();
      }
      ObjectPtr job = resolve_job(client::namespace_of(*pod), *ref);
      if (job && managed_elsewhere(*job)) return Status::ok();
      if (job && !is_job_finished(*job)) return Status::ok();  // adopted, or still running
    }
    std::string patch = remove_finalizer_patch(*pod);
    if (patch.empty()) return Status::ok();
    auto r = api_.patch(kPods, client::namespace_of(*pod), client::name_of(*pod),
                        client::PatchType::kJson, patch);
    if (!r.is_ok() && r.status().code() != StatusCode::kNotFound) return r.status();
    return Status::ok();
  }

  // ---- the sync ----

  Result<std::vector<ObjectPtr>> pods_for_job(const Json& job) {
    std::string ns = client::namespace_of(job);
    std::string uid = client::uid_of(job);
    std::vector<ObjectPtr> in_namespace = pods_.list(ns);
    std::set<std::string> owned;
    for (const auto& p : in_namespace) {
      if (is_controlled_by(*p, uid)) owned.insert(client::uid_of(*p));
    }
    SKIFF_ASSIGN_OR_RETURN(
        auto claimed, claim_pods(api_, job, "Job", "batch/v1", selector_of(job), in_namespace));
    // Adopted pods are tracked like the Job's own: they get the tracking finalizer.
    for (auto& p : claimed) {
      if (owned.count(client::uid_of(*p)) || has_tracking_finalizer(*p)) continue;
      Json finalizers = (*p)["metadata"].value("finalizers", Json::array());
      finalizers.push_back(std::string(kTrackingFinalizer));
      Json patch = {
          {"metadata",
           {{"resourceVersion", client::resource_version_of(*p)}, {"finalizers", finalizers}}}};
      auto r = api_.patch(kPods, ns, client::name_of(*p), client::PatchType::kMerge, patch.dump());
      if (!r.is_ok()) return r.status();
      p = std::make_shared<const Json>(std::move(r).value());
    }
    return claimed;
  }

  bool is_pod_failed(const PodInfo& p, const Spec& spec) const {
    if (p.phase == "Failed") return true;
    if (spec.only_replace_failed) return false;
    // A pod deleted before it finished never reaches Failed: count it as failed.
    return p.deleting && p.phase != "Succeeded";
  }

  bool past_backoff_limit_on_failure(const SyncState& s) const {
    if (!s.spec.on_failure) return false;
    int64_t restarts = 0;
    for (const auto& p : s.pods) {
      if (p.phase != "Running" && p.phase != "Pending") continue;
      const Json& status = (*p.pod).value("status", Json::object());
      for (const char* list : {"initContainerStatuses", "containerStatuses"}) {
        auto it = status.find(list);
        if (it == status.end() || !it->is_array()) continue;
        for (const auto& c : *it) restarts += int_field(c, "restartCount", 0);
      }
    }
    if (s.spec.backoff_limit == 0) return restarts > 0;
    return restarts >= s.spec.backoff_limit;
  }

  Status sync_job(const std::string& key) {
    ObjectPtr cached = jobs_.get(key);
    if (!cached) {
      expectations_.forget(key);
      finalizer_expectations_.forget(key);
      backoff_.remove(key);
      forget_written(key);
      return Status::ok();
    }
    if (managed_elsewhere(*cached)) return Status::ok();
    if (cache_is_behind(key, *cached)) {
      // Counting from a status older than the one this controller wrote would count pods twice
      // or not at all; the watch event of that write enqueues the Job again.
      queue_.add_after(key, std::chrono::seconds(1));
      return Status::ok();
    }
    if (is_job_finished(*cached)) {
      backoff_.remove(key);
      cleanup_pod_finalizers(*cached);
      return Status::ok();
    }
    std::string mode =
        (*cached).value("spec", Json::object()).value("completionMode", "NonIndexed");
    if (mode != "NonIndexed" && mode != "Indexed") {
      recorder_->event(*cached, "Warning", "UnknownCompletionMode",
                       "Skipped Job sync because completion mode is unknown");
      return Status::ok();
    }

    SyncState s;
    s.key = key;
    s.job = *cached;
    s.spec = spec_of(s.job);
    if (s.spec.indexed && !s.spec.completions) {
      SKIFF_LOG_WARN("job-controller: {}: an Indexed Job needs spec.completions", key);
      return Status::ok();
    }
    s.now = clock_.now_seconds();
    s.now_text = rfc3339(s.now);
    if (!s.status().is_object()) s.status() = Json::object();
    Json& uncounted = s.status()["uncountedTerminatedPods"];
    if (!uncounted.is_object()) uncounted = Json::object();
    s.uncounted_succeeded = uid_set(uncounted.value("succeeded", Json::array()));
    s.uncounted_failed = uid_set(uncounted.value("failed", Json::array()));
    s.expected_rm = finalizer_expectations_.expected(key);

    // Expectations first: a pod created after this check is seen by a later sync.
    bool satisfied = expectations_.satisfied(key);
    SKIFF_ASSIGN_OR_RETURN(auto pods, pods_for_job(s.job));
    for (const auto& p : pods) {
      PodInfo info;
      info.pod = p;
      info.uid = client::uid_of(*p);
      info.phase = pod_phase(*p);
      info.finalizer = has_tracking_finalizer(*p);
      info.deleting = is_being_deleted(*p);
      info.index = completion_index(*p);
      s.pods.push_back(std::move(info));
    }
    for (const auto& p : s.pods) {
      if (is_pod_active(*p.pod)) {
        s.active_pods.push_back(&p);
        if (is_pod_ready(*p.pod)) ++s.ready;
      }
      if (p.deleting && p.phase != "Failed" && p.phase != "Succeeded") ++s.terminating;
    }

    // Finished pods not yet accounted for anywhere.
    std::vector<const Json*> new_succeeded, new_failed;
    for (const auto& p : s.pods) {
      if (!p.finalizer || s.expected_rm.count(p.uid)) continue;
      if (s.spec.indexed && (p.index < 0 || p.index >= s.completions())) continue;
      if (p.phase == "Succeeded" && !s.uncounted_succeeded.count(p.uid)) {
        new_succeeded.push_back(p.pod.get());
      } else if (is_pod_failed(p, s.spec) && !s.uncounted_failed.count(p.uid)) {
        new_failed.push_back(p.pod.get());
      }
    }
    s.succeeded = static_cast<int>(int_field(s.status(), "succeeded", 0) + new_succeeded.size() +
                                   s.uncounted_succeeded.size());
    s.failed = static_cast<int>(int_field(s.status(), "failed", 0) + new_failed.size() +
                                s.uncounted_failed.size());

    std::string old_start = s.status().value("startTime", "");
    if (old_start.empty() && !s.spec.suspended) s.status()["startTime"] = s.now_text;
    s.new_backoff = backoff_.next(key, new_succeeded, new_failed);

    if (const Json* c = condition_true(s.job, "SuccessCriteriaMet")) {
      s.finished = Finished{"SuccessCriteriaMet", c->value("reason", ""), c->value("message", "")};
    } else if (const Json* c = condition_true(s.job, "FailureTarget")) {
      s.finished = Finished{"Failed", c->value("reason", ""), c->value("message", "")};
    } else if (s.failed > s.spec.backoff_limit || past_backoff_limit_on_failure(s)) {
      s.finished = Finished{"FailureTarget", "BackoffLimitExceeded",
                            "Job has reached the specified backoff limit"};
    } else if (s.spec.active_deadline && !s.spec.suspended) {
      int64_t start = parse_rfc3339(s.status().value("startTime", ""));
      int64_t left = start + *s.spec.active_deadline - s.now;
      if (start >= 0 && left <= 0) {
        s.finished = Finished{"FailureTarget", "DeadlineExceeded",
                              "Job was active longer than specified deadline"};
      } else if (start >= 0) {
        queue_.add_after(key, std::chrono::seconds(left));
      }
    }

    if (s.spec.indexed) {
      s.prev_succeeded_indexes =
          IndexSet::parse(s.status().value("completedIndexes", ""), s.completions());
      s.succeeded_indexes = s.prev_succeeded_indexes;
      for (const auto& p : s.pods) {
        if (p.phase == "Succeeded" && p.finalizer && p.index >= 0 && p.index < s.completions()) {
          s.succeeded_indexes.add(p.index);
        }
      }
      s.succeeded = s.succeeded_indexes.total();
    }

    int active = static_cast<int>(s.active_pods.size());
    bool suspend_changed = false;
    Status manage_error;
    if (s.finished) {
      auto [deleted_ready, deleted, err] = delete_active_pods(s);
      if (deleted != active || !satisfied) {
        // Pods may remain, or not be in the cache yet: not finished yet.
        s.finished.reset();
      }
      active -= deleted;
      s.terminating += deleted;
      s.ready -= deleted_ready;
      manage_error = err;
    } else {
      bool managed = false;
      if (satisfied && !is_being_deleted(s.job)) {
        active = manage_job(s, manage_error);
        managed = true;
      }
      bool complete = s.spec.completions ? s.succeeded >= *s.spec.completions && active == 0
                                         : s.succeeded > 0 && active == 0;
      if (complete) {
        s.finished = Finished{"SuccessCriteriaMet", "CompletionsReached",
                              "Reached expected number of succeeded pods"};
      } else if (managed) {
        if (s.spec.suspended) {
          if (ensure_condition(s.status(), "Suspended", "True", "JobSuspended", "Job suspended",
                               s.now_text)) {
            suspend_changed = true;
            recorder_->event(s.job, "Normal", "Suspended", "Job suspended");
          }
        } else if (ensure_condition(s.status(), "Suspended", "False", "JobResumed", "Job resumed",
                                    s.now_text)) {
          suspend_changed = true;
          recorder_->event(s.job, "Normal", "Resumed", "Job resumed");
          // activeDeadlineSeconds counts continuous activity: it restarts on resume.
          s.status()["startTime"] = s.now_text;
        }
      }
    }

    bool needs_update = suspend_changed || active != int_field(s.status(), "active", 0) ||
                        s.ready != int_field(s.status(), "ready", -1) ||
                        s.terminating != int_field(s.status(), "terminating", -1) ||
                        s.status().value("startTime", "") != old_start;
    set_count(s.status(), "active", active);
    s.status()["ready"] = s.ready;
    s.status()["terminating"] = s.terminating;
    Status tracked = track_status_and_remove_finalizers(s, needs_update);
    if (!tracked.is_ok()) {
      return Status(tracked.code(), "tracking status: " + tracked.message());
    }
    return manage_error;
  }

  // Deletes the active pods of a failing Job, keeping their finalizers so they are counted.
  std::tuple<int, int, Status> delete_active_pods(SyncState& s) {
    int deleted = 0, deleted_ready = 0;
    Status first;
    for (const PodInfo* p : s.active_pods) {
      auto r = api_.remove(kPods, client::namespace_of(*p->pod), client::name_of(*p->pod));
      if (!r.is_ok() && r.status().code() != StatusCode::kNotFound) {
        recorder_->event(s.job, "Warning", "FailedDelete",
                         "Error deleting: " + r.status().message());
        if (first.is_ok()) first = r.status();
      } else {
        ++deleted;
        if (r.is_ok()) {
          recorder_->event(s.job, "Normal", "SuccessfulDelete",
                           "Deleted pod: " + client::name_of(*p->pod));
        }
      }
      if (is_pod_ready(*p->pod)) ++deleted_ready;
    }
    return {deleted_ready, deleted, first};
  }

  // Deletes pods the Job no longer wants (suspended, too many): their finalizer goes first, so
  // they are not counted as failed.
  std::tuple<int, int, Status> delete_job_pods(SyncState& s,
                                               const std::vector<const PodInfo*>& pods) {
    int removed = 0, removed_ready = 0;
    Status first;
    auto fail = [&](const Status& err) {
      expectations_.deletion_observed(s.key);
      if (err.code() == StatusCode::kNotFound) {
        ++removed;
        return;
      }
      if (first.is_ok()) first = err;
    };
    for (const PodInfo* p : pods) {
      std::string ns = client::namespace_of(*p->pod);
      std::string name = client::name_of(*p->pod);
      if (is_pod_ready(*p->pod)) ++removed_ready;
      if (std::string patch = remove_finalizer_patch(*p->pod); !patch.empty()) {
        auto r = api_.patch(kPods, ns, name, client::PatchType::kJson, patch);
        if (!r.is_ok()) {
          fail(r.status());
          continue;
        }
      }
      auto r = api_.remove(kPods, ns, name);
      if (!r.is_ok()) {
        if (r.status().code() != StatusCode::kNotFound) {
          recorder_->event(s.job, "Warning", "FailedDelete",
                           "Error deleting: " + r.status().message());
        }
        fail(r.status());
        continue;
      }
      ++removed;
      recorder_->event(s.job, "Normal", "SuccessfulDelete", "Deleted pod: " + name);
    }
    return {removed_ready, removed, first};
  }

  // Pods to delete: for Indexed Jobs every pod with a duplicate, unknown or out-of-range index
  // first; then at least `at_least` pods, the least advanced first.
  std::vector<const PodInfo*> active_pods_for_removal(const SyncState& s,
                                                      std::vector<const PodInfo*> pods,
                                                      int at_least) const {
    std::vector<const PodInfo*> rm, left;
    auto by_deletion_order = [](const PodInfo* a, const PodInfo* b) {
      return delete_before(*a->pod, *b->pod);
    };
    if (s.spec.indexed) {
      std::stable_sort(pods.begin(), pods.end(),
                       [](const PodInfo* a, const PodInfo* b) { return a->index < b->index; });
      size_t i = 0;
      while (i < pods.size()) {
        int ix = pods[i]->index;
        size_t j = i;
        while (j < pods.size() && pods[j]->index == ix) ++j;
        std::vector<const PodInfo*> same(pods.begin() + i, pods.begin() + j);
        if (ix < 0 || ix >= s.completions()) {
          rm.insert(rm.end(), same.begin(), same.end());
        } else {
          // Keep the most advanced pod of an index.
          std::sort(same.begin(), same.end(), by_deletion_order);
          rm.insert(rm.end(), same.begin(), same.end() - 1);
          left.push_back(same.back());
        }
        i = j;
      }
    } else {
      left = std::move(pods);
    }
    if (static_cast<int>(rm.size()) < at_least) {
      std::sort(left.begin(), left.end(), by_deletion_order);
      size_t more = std::min(left.size(), static_cast<size_t>(at_least) - rm.size());
      rm.insert(rm.end(), left.begin(), left.begin() + static_cast<long>(more));
    }
    return rm;
  }

  std::vector<int> first_pending_indexes(const SyncState& s, int count) const {
    std::set<int> held;
    for (const PodInfo* p : s.active_pods) {
      if (p->index >= 0) held.insert(p->index);
    }
    std::vector<int> out;
    for (int i = 0; i < s.completions() && static_cast<int>(out.size()) < count; ++i) {
      if (!s.succeeded_indexes.has(i) && !held.count(i)) out.push_back(i);
    }
    return out;
  }

  Json pod_for(const SyncState& s, const Json& pod_template, int index) const {
    const std::string job_name = client::name_of(s.job);
    std::string prefix = job_name;
    if (index >= 0) {
      std::string suffix = "-" + std::to_string(index) + "-";
      std::string full = job_name + suffix;
      if (full.size() > kMaxGeneratedNameLength) {
        full = job_name.substr(0, kMaxGeneratedNameLength - suffix.size()) + suffix;
      }
      prefix = full.substr(0, full.size() - 1);  // pod_from_template adds the last "-"
    }
    Json pod = pod_from_template(pod_template, s.job, "Job", "batch/v1", prefix);
    Json& meta = pod["metadata"];
    if (!s.spec.manual_selector) {
      Json& labels = meta["labels"];
      if (!labels.is_object()) labels = Json::object();
      std::string uid = client::uid_of(s.job);
      for (auto [k, v] :
           {std::pair{kControllerUidLabel, uid}, std::pair{kJobNameLabel, job_name},
            std::pair{kLegacyControllerUidLabel, uid}, std::pair{kLegacyJobNameLabel, job_name}}) {
        if (!labels.contains(std::string(k))) labels[std::string(k)] = v;
      }
    }
    if (index >= 0) {
      meta["annotations"][std::string(kCompletionIndexKey)] = std::to_string(index);
      meta["labels"][std::string(kCompletionIndexKey)] = std::to_string(index);
      pod["spec"]["hostname"] = job_name + "-" + std::to_string(index);
    }
    return pod;
  }

  // Creates or deletes pods so the Job runs what it should; returns the active count.
  int manage_job(SyncState& s, Status& err) {
    int active = static_cast<int>(s.active_pods.size());
    auto remove = [&](const std::vector<const PodInfo*>& to_delete) {
      expectations_.expect(s.key, 0, static_cast<int>(to_delete.size()));
      auto [removed_ready, removed, e] = delete_job_pods(s, to_delete);
      active -= removed;
      s.terminating += removed;
      s.ready -= removed_ready;
      err = e;
    };
    if (s.spec.suspended) {
      remove(active_pods_for_removal(s, s.active_pods, active));
      return active;
    }
    int want = 0;
    if (!s.spec.completions) {
      // Work queue: once one pod succeeded, let the others finish.
      want = s.succeeded > 0 ? active : s.spec.parallelism;
    } else {
      want = std::clamp(*s.spec.completions - s.succeeded, 0, s.spec.parallelism);
    }
    auto to_delete = active_pods_for_removal(s, s.active_pods, std::max(active - want, 0));
    if (to_delete.size() > kMaxPodCreateDeletePerSync) to_delete.resize(kMaxPodCreateDeletePerSync);
    if (!to_delete.empty()) {
      remove(to_delete);
      // Deleting and creating in one pass could fight; deletion goes first.
      return active;
    }
    int terminating = s.spec.only_replace_failed ? s.terminating : 0;
    int diff = want - terminating - active;
    if (diff <= 0) return active;
    if (s.new_backoff.last_failure_time) {
      auto wait = backoff_remaining(s.new_backoff.failures_after_last_success,
                                    *s.new_backoff.last_failure_time, s.now);
      if (wait.count() > 0) {
        queue_.add_after(s.key, std::max<std::chrono::seconds>(wait, std::chrono::seconds(1)));
        return active;
      }
    }
    diff = std::min(diff, kMaxPodCreateDeletePerSync);
    std::vector<int> indexes;
    if (s.spec.indexed) {
      indexes = first_pending_indexes(s, diff);
      diff = static_cast<int>(indexes.size());
      if (diff == 0) return active;
    }
    expectations_.expect(s.key, diff, 0);
    Json pod_template = s.job["spec"].value("template", Json::object());
    if (s.spec.indexed) add_completion_index_env(pod_template);
    Json& finalizers = pod_template["metadata"]["finalizers"];
    if (!finalizers.is_array()) finalizers = Json::array();
    if (std::find(finalizers.begin(), finalizers.end(), std::string(kTrackingFinalizer)) ==
        finalizers.end()) {
      finalizers.push_back(std::string(kTrackingFinalizer));
    }
    active += diff;
    // Slow start: batches of 1, 2, 4, ... so a systematic failure (quota, admission) costs one
    // request rather than `diff`.
    size_t next_index = 0;
    for (int batch = std::min(diff, 1); diff > 0; batch = std::min(2 * batch, diff)) {
      bool failed = false;
      for (int i = 0; i < batch; ++i) {
        int index = s.spec.indexed ? indexes[next_index++] : -1;
        Json pod = pod_for(s, pod_template, index);
        auto r = api_.create(kPods, client::namespace_of(s.job), pod);
        if (r.is_ok()) {
          recorder_->event(s.job, "Normal", "SuccessfulCreate",
                           "Created pod: " + client::name_of(r.value()));
          continue;
        }
        expectations_.lower(s.key, 1, 0);
        --active;
        failed = true;
        recorder_->event(s.job, "Warning", "FailedCreate",
                         "Error creating: " + r.status().message());
        if (err.is_ok()) err = r.status();
      }
      diff -= batch;
      if (failed && diff > 0) {
        // The rest are not attempted now; the next sync tries again.
        expectations_.lower(s.key, diff, 0);
        active -= diff;
        break;
      }
    }
    return active;
  }

  static void add_completion_index_env(Json& pod_template) {
    Json& spec = pod_template["spec"];
    for (const char* list : {"initContainers", "containers"}) {
      auto it = spec.find(list);
      if (it == spec.end() || !it->is_array()) continue;
      for (auto& c : *it) {
        Json& env = c["env"];
        if (!env.is_array()) env = Json::array();
        bool present = std::any_of(env.begin(), env.end(), [](const Json& e) {
          return e.value("name", "") == "JOB_COMPLETION_INDEX";
        });
        if (present) continue;
        env.push_back({{"name", "JOB_COMPLETION_INDEX"},
                       {"valueFrom",
                        {{"fieldRef",
                          {{"fieldPath", "metadata.annotations['" +
                                             std::string(kCompletionIndexKey) + "']"}}}}}});
      }
    }
  }

  Status write_status(SyncState& s) {
    auto r = api_.update(kJobs, client::namespace_of(s.job), s.job, {}, "status");
    if (!r.is_ok()) return r.status();
    s.job = std::move(r).value();
    if (int64_t rv = parse_version(client::resource_version_of(s.job)); rv >= 0) {
      std::lock_guard lock(written_mu_);
      written_[s.key] = rv;
    }
    return Status::ok();
  }

  static int64_t parse_version(const std::string& rv) {
    int64_t v = 0;
    auto [end, ec] = std::from_chars(rv.data(), rv.data() + rv.size(), v);
    return ec == std::errc() && end == rv.data() + rv.size() ? v : -1;
  }

  // True while the cached Job is older than this controller's last status write. skiff's
  // resource versions are the store's revisions, so they order writes.
  bool cache_is_behind(const std::string& key, const Json& cached) {
    std::lock_guard lock(written_mu_);
    auto it = written_.find(key);
    if (it == written_.end()) return false;
    int64_t rv = parse_version(client::resource_version_of(cached));
    if (rv < 0 || rv >= it->second) {
      written_.erase(it);
      return false;
    }
    return true;
  }

  void forget_written(const std::string& key) {
    std::lock_guard lock(written_mu_);
    written_.erase(key);
  }

  // Moves pods whose finalizer is gone from uncountedTerminatedPods into the counters.
  static bool clean_uncounted(Json& status, const std::set<std::string>& with_finalizer) {
    bool updated = false;
    Json& uncounted = status["uncountedTerminatedPods"];
    for (auto [list, counter] :
         {std::pair{"succeeded", "succeeded"}, std::pair{"failed", "failed"}}) {
      auto it = uncounted.find(list);
      if (it == uncounted.end() || !it->is_array()) continue;
      Json keep = Json::array();
      for (const auto& uid : *it) {
        if (uid.is_string() && with_finalizer.count(uid.get<std::string>())) keep.push_back(uid);
      }
      if (keep.size() == it->size()) continue;
      updated = true;
      set_count(status, counter,
                int_field(status, counter, 0) + static_cast<int64_t>(it->size() - keep.size()));
      if (keep.empty()) {
        uncounted.erase(list);
      } else {
        *it = std::move(keep);
      }
    }
    return updated;
  }

  Status track_status_and_remove_finalizers(SyncState& s, bool needs_flush) {
    std::vector<const PodInfo*> pods;
    for (const auto& p : s.pods) pods.push_back(&p);
    if (s.spec.indexed) {
      std::stable_sort(pods.begin(), pods.end(),
                       [](const PodInfo* a, const PodInfo* b) { return a->index < b->index; });
    }
    std::set<std::string> with_finalizer;
    for (const PodInfo* p : pods) {
      if (p->finalizer && !s.expected_rm.count(p->uid)) with_finalizer.insert(p->uid);
    }
    if (clean_uncounted(s.status(), with_finalizer)) needs_flush = true;

    std::vector<const PodInfo*> to_remove;
    std::vector<int> new_succeeded_indexes;
    bool reached_max = false;
    bool failing =
        s.finished && s.finished->type != "SuccessCriteriaMet" && s.finished->type != "Complete";
    for (const PodInfo* p : pods) {
      if (!p->finalizer || s.expected_rm.count(p->uid)) continue;  // counted in an earlier pass
      bool failed = is_pod_failed(*p, s.spec);
      bool can_remove = is_being_deleted(s.job) || s.finished || p->phase == "Succeeded" || failed;
      if (!can_remove) continue;
      to_remove.push_back(p);
      Json& uncounted = s.status()["uncountedTerminatedPods"];
      if (p->phase == "Succeeded" && !s.uncounted_failed.count(p->uid)) {
        if (s.spec.indexed) {
          if (p->index >= 0 && p->index < s.completions() &&
              !s.prev_succeeded_indexes.has(p->index)) {
            new_succeeded_indexes.push_back(p->index);
            needs_flush = true;
          }
        } else if (!s.uncounted_succeeded.count(p->uid)) {
          uncounted["succeeded"].push_back(p->uid);
          needs_flush = true;
        }
      } else if (failed || failing) {
        // Once the Job is failing, every pod not succeeded counts as failed.
        bool valid_index = !s.spec.indexed || (p->index >= 0 && p->index < s.completions());
        if (!s.uncounted_failed.count(p->uid) && valid_index) {
          uncounted["failed"].push_back(p->uid);
          needs_flush = true;
        }
      }
      size_t pending = new_succeeded_indexes.size() +
                       uncounted.value("succeeded", Json::array()).size() +
                       uncounted.value("failed", Json::array()).size();
      if (pending >= kMaxUncountedPods) {
        // Keep the status small; the status update requeues the Job for the rest.
        reached_max = true;
        break;
      }
    }
    if (s.spec.indexed) {
      for (int ix : new_succeeded_indexes) s.succeeded_indexes.add(ix);
      std::string text = s.succeeded_indexes.to_string();
      if (text != s.status().value("completedIndexes", "")) needs_flush = true;
      set_count(s.status(), "succeeded", s.succeeded_indexes.total());
      if (text.empty()) {
        s.status().erase("completedIndexes");
      } else {
        s.status()["completedIndexes"] = text;
      }
    }
    if (s.finished && s.finished->type == "FailureTarget") {
      // Record why the Job fails before finalizers go, so the reason survives a restart.
      s.status()["conditions"].push_back(new_condition("FailureTarget", "True", s.finished->reason,
                                                       s.finished->message, s.now_text));
      needs_flush = true;
      s.finished->type = "Failed";
    }
    if (s.finished && s.finished->type == "SuccessCriteriaMet") {
      if (!condition_true(s.job, "SuccessCriteriaMet")) {
        s.status()["conditions"].push_back(new_condition(
            "SuccessCriteriaMet", "True", s.finished->reason, s.finished->message, s.now_text));
        needs_flush = true;
      }
      s.finished->type = "Complete";
    }
    SKIFF_RETURN_IF_ERROR(flush_and_remove_finalizers(s, to_remove, with_finalizer, needs_flush));
    bool finished_now = !reached_max && enact_job_finished(s);
    if (finished_now) needs_flush = true;
    if (needs_flush) {
      Status st = write_status(s);
      if (!st.is_ok()) {
        return Status(st.code(), "removing uncounted pods from status: " + st.message());
      }
      if (finished_now) record_job_finished(s);
    }
    return Status::ok();
  }

  Status flush_and_remove_finalizers(SyncState& s, const std::vector<const PodInfo*>& to_remove,
                                     std::set<std::string>& with_finalizer, bool& needs_flush) {
    if (needs_flush) {
      Status st = write_status(s);
      if (!st.is_ok()) {
        return Status(st.code(), "adding uncounted pods to status: " + st.message());
      }
      backoff_.update(s.key, s.new_backoff);
      needs_flush = false;
    }
    Status rm_error;
    if (!to_remove.empty()) {
      std::vector<std::string> uids;
      for (const PodInfo* p : to_remove) uids.push_back(p->uid);
      finalizer_expectations_.expect(s.key, uids);
      for (const PodInfo* p : to_remove) {
        std::string patch = remove_finalizer_patch(*p->pod);
        if (!patch.empty()) {
          auto r = api_.patch(kPods, client::namespace_of(*p->pod), client::name_of(*p->pod),
                              client::PatchType::kJson, patch);
          if (!r.is_ok()) {
            // No update will announce this finalizer's removal.
            finalizer_expectations_.observed(s.key, p->uid);
            if (r.status().code() != StatusCode::kNotFound) {
              if (rm_error.is_ok()) rm_error = r.status();
              continue;
            }
          }
        }
        with_finalizer.erase(p->uid);
      }
    }
    if (clean_uncounted(s.status(), with_finalizer)) needs_flush = true;
    if (!rm_error.is_ok() && needs_flush) {
      Status st = write_status(s);
      if (!st.is_ok()) {
        return Status(st.code(), "removing uncounted pods from status: " + st.message());
      }
    }
    return rm_error;
  }

  bool enact_job_finished(SyncState& s) {
    if (!s.finished) return false;
    const Json& uncounted = s.status()["uncountedTerminatedPods"];
    if (!uncounted.value("succeeded", Json::array()).empty() ||
        !uncounted.value("failed", Json::array()).empty()) {
      return false;  // counted first, finished after
    }
    if (s.terminating > 0) return false;  // finished only once no pod still runs
    ensure_condition(s.status(), s.finished->type, "True", s.finished->reason, s.finished->message,
                     s.now_text);
    if (s.finished->type == "Complete") s.status()["completionTime"] = s.now_text;
    return true;
  }

  void record_job_finished(const SyncState& s) {
    if (s.finished->type == "Complete") {
      if (s.spec.completions &&
          int_field(s.job.value("status", Json::object()), "succeeded", 0) > *s.spec.completions) {
        recorder_->event(s.job, "Warning", "TooManySucceededPods",
                         "Too many succeeded pods running after completion count reached");
      }
      recorder_->event(s.job, "Normal", "Completed", "Job completed");
    } else {
      recorder_->event(s.job, "Warning", s.finished->reason, s.finished->message);
    }
  }

  client::ApiClient& api_;
  const Clock& clock_;
  const int workers_count_;
  client::Informer& jobs_;
  client::Informer& pods_;
  std::unique_ptr<client::EventRecorder> recorder_;
  Expectations expectations_;
  FinalizerExpectations finalizer_expectations_;
  BackoffStore backoff_;
  // Job syncs back off on errors up to a minute, as upstream's job queue does.
  client::WorkQueue queue_{std::chrono::milliseconds(10), std::chrono::minutes(1)};
  client::WorkQueue orphan_queue_{std::chrono::milliseconds(10), std::chrono::minutes(1)};
  // Resource versions of this controller's own status writes not yet seen in the Job cache.
  std::mutex written_mu_;
  std::unordered_map<std::string, int64_t> written_;  // guarded by written_mu_
  QueueWorkers workers_;
  QueueWorkers orphan_workers_;
};

}  // namespace

std::unique_ptr<Controller> new_job_controller(ControllerContext& ctx) {
  return std::make_unique<JobController>(ctx);
}

}  // namespace skiff::controllers
