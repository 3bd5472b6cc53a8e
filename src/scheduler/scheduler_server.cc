#include "scheduler/scheduler_server.h"

#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

#include "base/log.h"
#include "base/time.h"
#include "client/event_recorder.h"
#include "client/http_client.h"
#include "client/informer.h"
#include "client/leader_election.h"
#include "scheduler/cache.h"
#include "scheduler/events.h"
#include "scheduler/plugins/default_preemption.h"
#include "scheduler/plugins/registry.h"
#include "scheduler/queue.h"
#include "scheduler/scheduler.h"

namespace skiff::scheduler {
namespace {

using client::Json;
using client::ObjectPtr;
namespace res = client::resources;

// Binds through the API: POST pods/NAME/binding (upstream's DefaultBinder).
class DefaultBinder final : public BindPlugin {
 public:
  explicit DefaultBinder(client::ApiClient& api) : api_(api) {}
  std::string_view name() const override { return "DefaultBinder"; }
  PluginStatus bind(CycleState&, const PodInfo& pod, const std::string& node) override {
    std::string ns(pod.namespace_name.str());
    Json binding = {{"apiVersion", "v1"},
                    {"kind", "Binding"},
                    {"metadata", {{"name", pod.name}, {"namespace", ns}, {"uid", pod.uid}}},
                    {"target", {{"apiVersion", "v1"}, {"kind", "Node"}, {"name", node}}}};
    auto r = api_.create(res::kPods, ns, binding, {}, pod.name, "binding");
    if (!r.is_ok()) return PluginStatus::error(r.status().message());
    return {};
  }

 private:
  client::ApiClient& api_;
};

bool is_terminal(const Json& pod) {
  auto s = pod.find("status");
  if (s == pod.end() || !s->is_object()) return false;
  std::string phase = s->value("phase", "");
  return phase == "Succeeded" || phase == "Failed";
}

std::string node_name_of(const Json& pod) {
  auto spec = pod.find("spec");
  return spec == pod.end() ? "" : spec->value("nodeName", "");
}

class SchedulerRunner {
 public:
  SchedulerRunner(client::ApiClient& api, const SchedulerServerOptions& options)
      : api_(api),
        options_(options),
        informers_(api),
        pods_(informers_.informer(res::kPods)),
        nodes_(informers_.informer(res::kNodes)),
        namespaces_(informers_.informer(res::kNamespaces)),
        recorder_(api, "default-scheduler", "", 4) {}

  Status init() {
    auto registry = plugins::default_registry();
    Status added = registry.add("DefaultBinder", [this](const Json&, Handle&) {
      return Result<std::unique_ptr<Plugin>>(std::make_unique<DefaultBinder>(api_));
    });
    SKIFF_RETURN_IF_ERROR(added);
    added = registry.add(std::string(plugins::DefaultPreemption::kName), [this](const Json&,
                                                                                Handle&) {
      return Result<std::unique_ptr<Plugin>>(std::make_unique<plugins::DefaultPreemption>(
          [this](const PodInfo& preemptor, const std::string& node,
                 const std::vector<PodRef>& victims) { return evict(preemptor, node, victims); }));
    });
    SKIFF_RETURN_IF_ERROR(added);
    Profile profile = plugins::default_profile();
    profile.plugins.push_back({std::string(plugins::DefaultPreemption::kName), 0, nullptr});
    for (const auto& [name, factory] : options_.extra_plugins) {
      SKIFF_RETURN_IF_ERROR(registry.add(name, factory));
      profile.plugins.push_back({name, 0, nullptr});
    }
    profile.plugins.push_back({"DefaultBinder", 0, nullptr});
    SKIFF_ASSIGN_OR_RETURN(auto framework, Framework::create(registry, profile));
    scheduler_name_ = framework->scheduler_name();
    SchedulerOptions so;
    so.percentage_of_nodes_to_score = options_.percentage_of_nodes_to_score;
    scheduler_ = std::make_unique<Scheduler>(cache_, std::move(framework), so);
    queue_ = std::make_unique<SchedulingQueue>(scheduler_->framework(), QueueOptions{});

    pods_.add_handlers({[this](const ObjectPtr& p) { on_pod_add(p); },
                        [this](const ObjectPtr& o, const ObjectPtr& p) { on_pod_update(o, p); },
                        [this](const ObjectPtr& p) { on_pod_delete(p); }});
    nodes_.add_handlers({[this](const ObjectPtr& n) {
                           auto node = Node::from_json(n);
                           cache_.add_node(node);
                           queue_->node_added(*node);
                         },
                         [this](const ObjectPtr& o, const ObjectPtr& n) {
                           if (o == n) return;
                           auto before = Node::from_json(o);
                           auto after = Node::from_json(n);
                           cache_.update_node(after);
                           queue_->node_updated(*before, *after);
                         },
                         [this](const ObjectPtr& n) {
                           cache_.remove_node(client::name_of(*n));
                           queue_->node_deleted(*Node::from_json(n));
                         }});
    namespaces_.add_handlers(
        {[this](const ObjectPtr& n) { set_namespace(*n); },
         [this](const ObjectPtr&, const ObjectPtr& n) { set_namespace(*n); },
         [this](const ObjectPtr& n) { cache_.remove_namespace(client::name_of(*n)); }});
    return Status::ok();
  }

  void run(std::stop_token stop) {
    informers_.start();
    while (!informers_.wait_for_sync(std::chrono::milliseconds(100))) {
      if (stop.stop_requested()) {
        informers_.stop();
        return;
      }
    }
    SKIFF_LOG_INFO("scheduler: caches synced ({} nodes, {} pods)", nodes_.size(), pods_.size());
    for (int i = 0; i < std::max(1, options_.bind_workers); ++i) {
      binders_.emplace_back([this] { bind_loop(); });
    }
    std::thread loop([this] { schedule_loop(); });
    std::stop_callback on_stop(stop, [this] { queue_->close(); });
    loop.join();
    // Pods held at Permit are dropped; their callbacks refer to the binding queue.
    scheduler_->framework().close_waiting();
    {
      std::lock_guard lock(bind_mu_);
      binding_closed_ = true;
    }
    bind_cv_.notify_all();
    for (auto& t : binders_) t.join();
    informers_.stop();
    recorder_.flush();
  }

 private:
  struct BindJob {
    PodRef pod;
    std::string node;
    std::shared_ptr<CycleState> state;
    QueuedPodInfo info;
    PluginStatus permit;  // how the wait at Permit ended (success when there was none)
  };

  bool responsible_for(const Json& pod) const {
    auto spec = pod.find("spec");
    std::string name = spec == pod.end() ? "" : spec->value("schedulerName", "default-scheduler");
    return name.empty() ? scheduler_name_ == "default-scheduler" : name == scheduler_name_;
  }

  void set_namespace(const Json& ns) {
    Labels labels;
    if (auto m = ns.find("metadata"); m != ns.end()) {
      if (auto l = m->find("labels"); l != m->end() && l->is_object()) {
        for (auto it = l->begin(); it != l->end(); ++it) {
          if (it.value().is_string()) labels.set(it.key(), it.value().get<std::string>());
        }
      }
    }
    cache_.set_namespace(client::name_of(ns), std::move(labels));
  }

  void on_pod_add(const ObjectPtr& obj) {
    if (!node_name_of(*obj).empty()) {
      if (is_terminal(*obj)) return;
      auto pod = PodInfo::from_json(obj);
      (void)cache_.add_pod(pod);
      queue_->assigned_pod_added(*pod);
      return;
    }
    if (is_terminal(*obj) || !responsible_for(*obj)) return;
    if ((*obj)["metadata"].contains("deletionTimestamp")) return;
    auto pod = PodInfo::from_json(obj);
    if (!pod->nominated_node_name.empty()) nominator().set(pod, pod->nominated_node_name);
    queue_->add(std::move(pod));
  }

  void on_pod_update(const ObjectPtr& old_obj, const ObjectPtr& obj) {
    if (old_obj == obj) return;  // resync
    bool was_assigned = !node_name_of(*old_obj).empty();
    bool assigned = !node_name_of(*obj).empty();
    if (assigned) {
      auto pod = PodInfo::from_json(obj);
      if (!was_assigned) {
        queue_->remove(pod->uid);  // bound (by us or someone else)
        nominator().remove(pod->uid);
        if (!is_terminal(*obj)) {
          (void)cache_.add_pod(pod);
          queue_->assigned_pod_added(*pod);
        }
        return;
      }
      if (is_terminal(*obj)) {
        // A finished pod frees its resources (upstream removes it from the cache).
        if (!is_terminal(*old_obj)) {
          (void)cache_.remove_pod(pod->uid);
          queue_->assigned_pod_deleted(*pod);
        }
        return;
      }
      (void)cache_.update_pod(pod);
      queue_->assigned_pod_updated(*PodInfo::from_json(old_obj), *pod);
      return;
    }
    if (!responsible_for(*obj)) return;
    if (is_terminal(*obj) || (*obj)["metadata"].contains("deletionTimestamp")) {
      queue_->remove(client::uid_of(*obj));
      nominator().remove(client::uid_of(*obj));
      return;
    }
    auto pod = PodInfo::from_json(obj);
    nominator().set(pod, pod->nominated_node_name);
    queue_->update(std::move(pod));
  }

  void on_pod_delete(const ObjectPtr& obj) {
    std::string uid = client::uid_of(*obj);
    if (node_name_of(*obj).empty()) {
      scheduler_->framework().reject_waiting_pod(uid, "", "removed");
      queue_->remove(uid);
      nominator().remove(uid);
      // An assumed pod deleted before its binding was seen.
      if (cache_.is_assumed(uid)) (void)cache_.forget_pod(uid);
      return;
    }
    auto pod = PodInfo::from_json(obj);
    (void)cache_.remove_pod(uid);
    queue_->assigned_pod_deleted(*pod);
  }

  // Is the pod still pending in the cache as this version? A pod deleted or bound while it
  // waited in the queue is skipped.
  bool still_pending(const PodInfo& pod) {
    ObjectPtr current = pods_.get(std::string(pod.namespace_name.str()), pod.name);
    return current && client::uid_of(*current) == pod.uid && node_name_of(*current).empty() &&
           !(*current)["metadata"].contains("deletionTimestamp");
  }

  void schedule_loop() {
    while (auto qp = queue_->pop()) {
      const PodRef& pod = qp->pod;
      if (!still_pending(*pod)) {
        queue_->done(pod->uid);
        continue;
      }
      CycleOutcome r = scheduler_->schedule_one(pod);
      if (r.outcome.ok()) {
        queue_->done(pod->uid);
        // The binding cycle starts once Permit lets the pod through (at once, unless a Permit
        // plugin holds it).
        const std::string uid = pod->uid;
        auto job = std::make_shared<BindJob>(
            BindJob{pod, r.outcome.result().node, r.state, std::move(*qp), {}});
        scheduler_->framework().wait_on_permit(uid, [this, job](PluginStatus permit) {
          job->permit = std::move(permit);
          {
            std::lock_guard lock(bind_mu_);
            bind_jobs_.push_back(std::move(*job));
          }
          bind_cv_.notify_one();
        });
        continue;
      }
      const ScheduleFailure& f = r.outcome.failure();
      const std::string uid = pod->uid;
      qp->unschedulable_plugins = f.unschedulable_plugins;
      // The nomination holds from now, not from when the pod's status comes back.
      nominator().set(pod, f.nominated_node);
      record_failure(*pod, f.message, f.is_error(), f.nominated_node);
      (void)queue_->add_unschedulable_if_not_present(std::move(*qp));
      queue_->done(uid);
    }
  }

  void bind_loop() {
    std::unique_lock lock(bind_mu_);
    while (true) {
      bind_cv_.wait(lock, [&] { return !bind_jobs_.empty() || binding_closed_; });
      if (bind_jobs_.empty()) return;
      BindJob job = std::move(bind_jobs_.front());
      bind_jobs_.pop_front();
      lock.unlock();
      PluginStatus s = job.permit;
      if (s.is_success()) {
        s = scheduler_->bind(job.pod, job.node, *job.state);
      } else {
        scheduler_->abandon(job.pod, job.node, *job.state);
      }
      if (s.is_success()) {
        recorder_.event(*job.pod->object, "Normal", "Scheduled",
                        "Successfully assigned " + job.pod->key() + " to " + job.node, "Pod", "v1");
      } else {
        // Upstream's handleBindingCycleError: a rejection at Permit parks the pod on the
        // rejecting plugin's events; an error backs it off.
        const bool rejected = s.is_rejected();
        std::string message = rejected ? s.message() : "Binding rejected: " + s.message();
        SKIFF_LOG_DEBUG("scheduler: bind {} to {}: {}", job.pod->key(), job.node, s.message());
        if (still_pending(*job.pod)) {
          record_failure(*job.pod, message, !rejected, job.pod->nominated_node_name);
          job.info.unschedulable_plugins.clear();
          if (rejected && !s.plugin().empty()) {
            job.info.unschedulable_plugins.insert(std::string(s.plugin()));
          }
          (void)queue_->add_unschedulable_if_not_present(std::move(job.info));
        }
        queue_->move_all_to_active_or_backoff(assigned_pod_delete_event(job.pod.get()));
      }
      lock.lock();
    }
  }

  // PodScheduled=False with the reason, status.nominatedNodeName (set by a preemption, cleared
  // when none was made), and a FailedScheduling event (upstream's handleSchedulingFailure).
  void record_failure(const PodInfo& pod, const std::string& message, bool error,
                      const std::string& nominated_node) {
    recorder_.event(*pod.object, "Warning", "FailedScheduling", message, "Pod", "v1");
    std::string reason = error ? "SchedulerError" : "Unschedulable";
    const Json& status = pod.object->contains("status") ? (*pod.object)["status"] : Json();
    if (status.is_object() && pod.nominated_node_name == nominated_node) {
      for (const auto& c : status.value("conditions", Json::array())) {
        if (c.value("type", "") == "PodScheduled" && c.value("status", "") == "False" &&
            c.value("reason", "") == reason && c.value("message", "") == message) {
          return;  // already says so
        }
      }
    }
    Json condition = {{"type", "PodScheduled"},   {"status", "False"},
                      {"reason", reason},         {"message", message},
                      {"lastProbeTime", nullptr}, {"lastTransitionTime", rfc3339_now()}};
    Json conditions = Json::array();
    if (status.is_object()) {
      for (const auto& c : status.value("conditions", Json::array())) {
        if (c.value("type", "") != "PodScheduled") conditions.push_back(c);
      }
    }
    conditions.push_back(condition);
    Json patch = {{"status", {{"conditions", conditions}}}};
    if (pod.nominated_node_name != nominated_node) {
      patch["status"]["nominatedNodeName"] = nominated_node.empty() ? Json() : Json(nominated_node);
    }
    auto r = api_.patch(res::kPods, std::string(pod.namespace_name.str()), pod.name,
                        client::PatchType::kMerge, patch.dump(), {}, "status");
    if (!r.is_ok() && r.status().code() != StatusCode::kNotFound) {
      SKIFF_LOG_DEBUG("scheduler: status of {}: {}", pod.key(), r.status().to_string());
    }
  }

  // Upstream's prepareCandidate: each victim is marked with a DisruptionTarget condition, then
  // deleted (with its grace period) and told why in a Preempted event.
  Status evict(const PodInfo& preemptor, const std::string& node,
               const std::vector<PodRef>& victims) {
    // Pods of lower priority nominated to the node lose their claim to it (upstream's
    // getLowerPriorityNominatedPods); they are scheduled afresh.
    for (const PodRef& p : nominator().on_node(node, preemptor.uid)) {
      if (p->priority >= preemptor.priority) continue;
      nominator().remove(p->uid);
      Json patch = {{"status", {{"nominatedNodeName", nullptr}}}};
      auto r = api_.patch(res::kPods, std::string(p->namespace_name.str()), p->name,
                          client::PatchType::kMerge, patch.dump(), {}, "status");
      if (!r.is_ok() && r.status().code() != StatusCode::kNotFound) return r.status();
    }
    for (const PodRef& v : victims) {
      const std::string ns(v->namespace_name.str());
      Json conditions = Json::array();
      if (const auto st = v->object->find("status"); st != v->object->end() && st->is_object()) {
        for (const auto& c : st->value("conditions", Json::array())) {
          if (c.value("type", "") != "DisruptionTarget") conditions.push_back(c);
        }
      }
      conditions.push_back(
          {{"type", "DisruptionTarget"},
           {"status", "True"},
           {"reason", "PreemptionByScheduler"},
           {"message", scheduler_name_ + ": preempting to accommodate a higher priority pod"},
           {"lastTransitionTime", rfc3339_now()}});
      Json patch = {{"status", {{"conditions", conditions}}}};
      auto marked = api_.patch(res::kPods, ns, v->name, client::PatchType::kMerge, patch.dump(), {},
                               "status");
      if (!marked.is_ok() && marked.status().code() != StatusCode::kNotFound) {
        return marked.status();
      }
      client::DeleteOptions options;
      options.precondition_uid = v->uid;
      auto removed = api_.remove(res::kPods, ns, v->name, options);
      if (!removed.is_ok() && removed.status().code() != StatusCode::kNotFound &&
          removed.status().code() != StatusCode::kAborted) {
        return removed.status();
      }
      recorder_.event(*v->object, "Normal", "Preempted",
                      "Preempted by pod " + preemptor.uid + " on node " + node, "Pod", "v1");
    }
    return Status::ok();
  }

  client::ApiClient& api_;
  const SchedulerServerOptions options_;
  client::InformerFactory informers_;
  client::Informer& pods_;
  client::Informer& nodes_;
  client::Informer& namespaces_;
  client::EventRecorder recorder_;
  Cache cache_;
  std::string scheduler_name_;
  std::unique_ptr<Scheduler> scheduler_;
  std::unique_ptr<SchedulingQueue> queue_;  // uses scheduler_'s framework
  Nominator& nominator() { return scheduler_->nominator(); }

  std::mutex bind_mu_;
  std::condition_variable bind_cv_;
  std::deque<BindJob> bind_jobs_;  // guarded by bind_mu_
  bool binding_closed_ = false;    // guarded by bind_mu_
  std::vector<std::thread> binders_;
};

}  // namespace

Status run_scheduler_with(client::ApiClient& api, const SchedulerServerOptions& options,
                          std::stop_token stop) {
  SchedulerRunner runner(api, options);
  SKIFF_RETURN_IF_ERROR(runner.init());
  runner.run(stop);
  return Status::ok();
}

Status run_scheduler(const SchedulerServerOptions& options, std::stop_token stop) {
  client::HttpClientOptions http;
  http.user_agent = "skiff-scheduler";
  http.field_manager = "skiff-scheduler";
  http.max_idle_connections = std::max(16, options.bind_workers + 4);
  SKIFF_ASSIGN_OR_RETURN(auto api,
                         client::HttpApiClient::from_kubeconfig_file(options.kubeconfig, http));
  if (!options.leader_elect) return run_scheduler_with(*api, options, stop);

  client::LeaderElectionConfig le;
  le.lease_namespace = options.leader_elect_namespace;
  le.lease_name = options.leader_elect_name;
  le.identity = client::unique_identity();
  le.lease_duration = options.lease_duration;
  le.renew_deadline = options.renew_deadline;
  le.retry_period = options.retry_period;
  client::run_leader_elected(
      *api, le,
      [&](std::stop_token term) {
        Status s = run_scheduler_with(*api, options, term);
        if (!s.is_ok()) SKIFF_LOG_ERROR("scheduler: {}", s.to_string());
      },
      stop);
  return Status::ok();
}

}  // namespace skiff::scheduler
