#include "controllers/nodelifecycle/taint_eviction.h"

#include "base/log.h"
#include "controllers/controller_utils.h"
#include "controllers/json_fields.h"
#include "controllers/nodelifecycle/taints.h"

namespace skiff::controllers::nodelifecycle {
namespace {

using client::resources::kNodes;
using client::resources::kPods;

constexpr auto kPollInterval = std::chrono::milliseconds(100);

std::string node_name_of(const Json& pod) {
  return string_field(member(pod, "spec"), "nodeName");
}

const Json& tolerations_of(const Json& pod) {
  return member(member(pod, "spec"), "tolerations");
}

}  // namespace

TaintEviction::TaintEviction(ControllerContext& ctx, std::string pods_by_node_index)
    : ctx_(ctx),
      pods_(ctx.informers.informer(kPods)),
      nodes_(ctx.informers.informer(kNodes)),
      pods_by_node_(std::move(pods_by_node_index)),
      recorder_(ctx.recorder("taint-eviction-controller")),
      workers_(
          "taint-eviction-controller", queue_, [this](const std::string& key) { return sync(key); },
          [this] { return pods_.has_synced() && nodes_.has_synced(); }),
      timer_(kPollInterval, [this] { fire_due(); }) {
  pods_.add_handlers({
      .on_add =
          [this](const ObjectPtr& p) {
            if (!node_name_of(*p).empty()) queue_.add("pod:" + client::key_of(*p));
          },
      .on_update =
          [this](const ObjectPtr& old_pod, const ObjectPtr& new_pod) {
            if (node_name_of(*old_pod) == node_name_of(*new_pod) &&
                tolerations_of(*old_pod) == tolerations_of(*new_pod) &&
                client::uid_of(*old_pod) == client::uid_of(*new_pod)) {
              return;
            }
            queue_.add("pod:" + client::key_of(*new_pod));
          },
      .on_delete = [this](const ObjectPtr& p) { queue_.add("pod:" + client::key_of(*p)); },
  });
  nodes_.add_handlers({
      .on_add = [this](const ObjectPtr& n) { queue_.add("node:" + client::name_of(*n)); },
      .on_update =
          [this](const ObjectPtr& old_node, const ObjectPtr& new_node) {
            if (no_execute_taints(*old_node) != no_execute_taints(*new_node)) {
              queue_.add("node:" + client::name_of(*new_node));
            }
          },
      .on_delete = [this](const ObjectPtr& n) { queue_.add("node:" + client::name_of(*n)); },
  });
}

TaintEviction::~TaintEviction() {
  stop();
}

void TaintEviction::start() {
  workers_.start(ctx_.options.workers);
  timer_.start();
}

void TaintEviction::stop() {
  timer_.stop();
  workers_.stop();
}

void TaintEviction::fire_due() {
  std::lock_guard lock(mu_);
  const auto now = ctx_.clock.now();
  for (auto& [key, e] : entries_) {
    if (e.done || e.firing || e.fire_at > now) continue;
    e.firing = true;
    queue_.add("evict:" + key);
  }
}

Status TaintEviction::sync(const std::string& key) {
  if (key.starts_with("node:")) {
    std::string name = key.substr(5);
    ObjectPtr node = nodes_.get(name);
    std::vector<Json> taints = node ? no_execute_taints(*node) : std::vector<Json>{};
    for (const auto& pod : pods_.by_index(pods_by_node_, name)) process_pod(*pod, taints);
    return Status::ok();
  }
  if (key.starts_with("pod:")) {
    std::string pod_key = key.substr(4);
    ObjectPtr pod = pods_.get(pod_key);
    if (!pod) {
      // Gone: nothing to delete any more.
      std::lock_guard lock(mu_);
      entries_.erase(pod_key);
      return Status::ok();
    }
    std::string node_name = node_name_of(*pod);
    if (node_name.empty()) return Status::ok();
    ObjectPtr node = nodes_.get(node_name);
    process_pod(*pod, node ? no_execute_taints(*node) : std::vector<Json>{});
    return Status::ok();
  }
  if (key.starts_with("evict:")) return evict(key.substr(6));
  return Status::ok();
}

void TaintEviction::cancel(const Json& pod) {
  const std::string key = client::key_of(pod);
  {
    std::lock_guard lock(mu_);
    auto it = entries_.find(key);
    if (it == entries_.end()) return;
    if (it->second.uid != client::uid_of(pod)) {
      entries_.erase(it);  // a former pod of the same name
      return;
    }
    if (it->second.done) return;
    entries_.erase(it);
  }
  recorder_->event(pod, "Normal", "TaintManagerEviction", "Cancelling deletion of Pod " + key,
                   "Pod", "v1");
}

void TaintEviction::process_pod(const Json& pod, const std::vector<Json>& taints) {
  const std::string key = client::key_of(pod);
  const std::string uid = client::uid_of(pod);
  if (taints.empty()) {
    cancel(pod);
    return;
  }
  const auto now = ctx_.clock.now();
  MatchedTolerations matched = matching_tolerations(taints, tolerations_of(pod));
  std::optional<int64_t> seconds;
  if (matched.all_tolerated) {
    seconds = min_toleration_seconds(matched.used);
    if (!seconds) {
      // Tolerated forever.
      cancel(pod);
      return;
    }
  }
  auto trigger = now + std::chrono::seconds(seconds.value_or(0));
  {
    std::lock_guard lock(mu_);
    auto it = entries_.find(key);
    if (it != entries_.end() && it->second.uid != uid) {
      entries_.erase(it);
      it = entries_.end();
    }
    if (it != entries_.end()) {
      Entry& e = it->second;
      if (e.done) return;  // already evicted
      // A running countdown keeps its deadline, as upstream's; a due one is under way.
      if (matched.all_tolerated || e.fire_at <= now) return;
      e.fire_at = now;  // no longer tolerated: at once
    } else {
      entries_[key] = Entry{uid, now, trigger};
    }
  }
  if (trigger <= now) {
    std::lock_guard lock(mu_);
    auto it = entries_.find(key);
    if (it != entries_.end() && !it->second.firing) {
      it->second.firing = true;
      queue_.add("evict:" + key);
    }
  }
}

Status TaintEviction::evict(const std::string& pod_key) {
  std::string uid;
  bool event_sent = false;
  {
    std::lock_guard lock(mu_);
    auto it = entries_.find(pod_key);
    if (it == entries_.end() || it->second.done) return Status::ok();
    uid = it->second.uid;
    event_sent = it->second.event_sent;
  }
  auto forget = [&] {
    std::lock_guard lock(mu_);
    entries_.erase(pod_key);
  };
  auto mark = [&](bool done) {
    std::lock_guard lock(mu_);
    auto it = entries_.find(pod_key);
    if (it == entries_.end() || it->second.uid != uid) return;
    it->second.event_sent = true;
    if (done) it->second.done = true;
  };
  ObjectPtr cached = pods_.get(pod_key);
  if (!cached || client::uid_of(*cached) != uid) {
    forget();
    return Status::ok();
  }
  if (is_pod_terminating(*cached)) {
    mark(true);  // someone deleted it already
    return Status::ok();
  }
  if (!event_sent) {
    recorder_->event(*cached, "Normal", "TaintManagerEviction",
                     "Marking for deletion Pod " + pod_key, "Pod", "v1");
    mark(false);
  }
  auto [ns, name] = client::split_key(pod_key);
  auto fresh = ctx_.api.get(kPods, ns, name);
  if (!fresh.is_ok()) {
    if (fresh.status().code() == StatusCode::kNotFound) {
      forget();
      return Status::ok();
    }
    return fresh.status();
  }
  Json pod = std::move(fresh.value());
  if (client::uid_of(pod) != uid) {
    forget();
    return Status::ok();
  }
  const Json* cond = find_condition(member(pod, "status"), "DisruptionTarget");
  if (!cond || string_field(*cond, "status") != "True") {
    if (!pod["status"].is_object()) pod["status"] = Json::object();
    set_condition(pod["status"],
                  {{"type", "DisruptionTarget"},
                   {"status", "True"},
                   {"reason", "DeletionByTaintManager"},
                   {"message", "Taint manager: deleting due to NoExecute taint"}},
                  rfc3339(ctx_.clock.now_seconds()));
    auto r = ctx_.api.update(kPods, ns, pod, {}, "status");
    if (!r.is_ok()) {
      if (r.status().code() == StatusCode::kNotFound) {
        forget();
        return Status::ok();
      }
      return r.status();
    }
  }
  client::DeleteOptions options;
  options.precondition_uid = uid;
  auto r = ctx_.api.remove(kPods, ns, name, options);
  if (!r.is_ok() && r.status().code() != StatusCode::kNotFound) return r.status();
  mark(true);
  return Status::ok();
}

}  // namespace skiff::controllers::nodelifecycle
