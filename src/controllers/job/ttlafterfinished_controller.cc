#include "controllers/job/ttlafterfinished_controller.h"

#include "controllers/controller_utils.h"
#include "controllers/job/job_util.h"

namespace skiff::controllers {
namespace {

using client::resources::kJobs;

std::optional<int64_t> ttl_of(const Json& job) {
  auto spec = job.find("spec");
  if (spec == job.end() || !spec->is_object()) return std::nullopt;
  auto ttl = spec->find("ttlSecondsAfterFinished");
  if (ttl == spec->end() || !ttl->is_number_integer()) return std::nullopt;
  return ttl->get<int64_t>();
}

bool needs_cleanup(const Json& job) {
  return ttl_of(job).has_value() && job::is_job_finished(job) && !is_being_deleted(job);
}

class TtlAfterFinishedController final : public Controller {
 public:
  explicit TtlAfterFinishedController(ControllerContext& ctx)
      : api_(ctx.api),
        clock_(ctx.clock),
        workers_count_(ctx.options.workers),
        jobs_(ctx.informers.informer(kJobs)),
        workers_(
            "ttl-after-finished", queue_, [this](const std::string& key) { return reconcile(key); },
            [this] { return jobs_.has_synced(); }) {
    jobs_.add_handlers({
        [this](const ObjectPtr& job) { enqueue(*job); },
        [this](const ObjectPtr&, const ObjectPtr& job) { enqueue(*job); },
        nullptr,
    });
  }

  ~TtlAfterFinishedController() override { stop(); }

  std::string_view name() const override { return "ttl-after-finished-controller"; }
  void start() override { workers_.start(workers_count_); }
  void stop() override { workers_.stop(); }

 private:
  void enqueue(const Json& job) {
    if (needs_cleanup(job)) queue_.add(client::key_of(job));
  }

  // Seconds until the Job expires (<= 0: expired), or an error when it has no finish time.
  Result<int64_t> time_left(const Json& job) const {
    int64_t finished = job::job_finish_time(job);
    if (finished < 0) {
      return error(StatusCode::kInvalidArgument,
                   "unable to find the time when the Job " + client::key_of(job) + " finished");
    }
    return finished + *ttl_of(job) - clock_.now_seconds();
  }

  Status reconcile(const std::string& key) {
    ObjectPtr cached = jobs_.get(key);
    if (!cached || !needs_cleanup(*cached)) return Status::ok();
    SKIFF_ASSIGN_OR_RETURN(int64_t left, time_left(*cached));
    if (left > 0) {
      queue_.add_after(key, std::chrono::seconds(left));
      return Status::ok();
    }
    // The cache may be stale (the TTL changed, the Job was re-run): decide on a fresh read.
    auto [ns, name] = client::split_key(key);
    auto fresh = api_.get(kJobs, ns, name);
    if (!fresh.is_ok()) {
      return fresh.status().code() == StatusCode::kNotFound ? Status::ok() : fresh.status();
    }
    if (!needs_cleanup(fresh.value())) return Status::ok();
    SKIFF_ASSIGN_OR_RETURN(left, time_left(fresh.value()));
    if (left > 0) {
      queue_.add_after(key, std::chrono::seconds(left));
      return Status::ok();
    }
    client::DeleteOptions options;
    options.propagation_policy = "Background";
    options.precondition_uid = client::uid_of(fresh.value());
    auto r = api_.remove(kJobs, ns, name, options);
    if (!r.is_ok() && r.status().code() != StatusCode::kNotFound) return r.status();
    return Status::ok();
  }

  client::ApiClient& api_;
  const Clock& clock_;
  const int workers_count_;
  client::Informer& jobs_;
  client::WorkQueue queue_;
  QueueWorkers workers_;
};

}  // namespace

std::unique_ptr<Controller> new_ttlafterfinished_controller(ControllerContext& ctx) {
  return std::make_unique<TtlAfterFinishedController>(ctx);
}

}  // namespace skiff::controllers
