#include "scheduler/queue.h"

#include <algorithm>
#include <nlohmann/json.hpp>

namespace skiff::scheduler {
namespace {

// Upstream's isPodUpdated: a change beyond resourceVersion, generation, managed fields and status
// may make a parked pod schedulable.
bool pod_changed(const PodInfo& before, const PodInfo& after) {
  if (!before.object || !after.object) return true;
  auto strip = [](const nlohmann::json& pod) {
    nlohmann::json copy = pod;
    if (copy.is_object()) {
      copy.erase("status");
      auto meta = copy.find("metadata");
      if (meta != copy.end() && meta->is_object()) {
        meta->erase("resourceVersion");
        meta->erase("generation");
        meta->erase("managedFields");
      }
    }
    return copy;
  };
  return strip(*before.object) != strip(*after.object);
}

}  // namespace

SchedulingQueue::SchedulingQueue(
    std::map<std::string, std::vector<ClusterEventWithHint>> plugin_events, QueueOptions options)
    : plugin_events_(std::move(plugin_events)),
      options_(std::move(options)),
      active_(ActiveOrder{&options_}) {
  if (!options_.now) options_.now = [] { return std::chrono::steady_clock::now(); };
  last_unschedulable_flush_ = now();
}

namespace {
QueueOptions with_framework(const Framework& framework, QueueOptions options) {
  options.less = [&framework](const QueuedPodInfo& a, const QueuedPodInfo& b) {
    return framework.queue_less(a, b);
  };
  options.pre_enqueue = [&framework](const PodInfo& pod) { return framework.run_pre_enqueue(pod); };
  return options;
}
}  // namespace

SchedulingQueue::SchedulingQueue(const Framework& framework, QueueOptions options)
    : SchedulingQueue(framework.events_to_register(),
                      with_framework(framework, std::move(options))) {}

bool SchedulingQueue::ActiveOrder::operator()(const ActiveKey& a, const ActiveKey& b) const {
  if (options->less) {
    if (options->less(*a.info, *b.info)) return true;
    if (options->less(*b.info, *a.info)) return false;
  } else {
    if (priority_sort_less(*a.info, *b.info)) return true;
    if (priority_sort_less(*b.info, *a.info)) return false;
  }
  return a.seq < b.seq;
}

SchedulingQueue::~SchedulingQueue() {
  close();
}

std::chrono::milliseconds SchedulingQueue::backoff_duration(int attempts) const {
  std::chrono::milliseconds d = options_.initial_backoff;
  for (int i = 1; i < attempts; ++i) {
    if (d > options_.max_backoff - d) return options_.max_backoff;
    d += d;
  }
  return std::min(d, options_.max_backoff);
}

SchedulingQueue::TimePoint SchedulingQueue::backoff_expiry_locked(const QueuedPodInfo& info) const {
  return info.timestamp + backoff_duration(info.attempts);
}

bool SchedulingQueue::is_backing_off_locked(const QueuedPodInfo& info, TimePoint now) const {
  return backoff_expiry_locked(info) > now;
}

bool SchedulingQueue::gated_locked(Entry& e) const {
  e.info.gated = false;
  if (!options_.pre_enqueue) return false;
  PluginStatus s = options_.pre_enqueue(*e.info.pod);
  if (s.is_success()) return false;
  e.info.gated = true;
  e.info.unschedulable_plugins.clear();
  if (!s.plugin().empty()) e.info.unschedulable_plugins.insert(std::string(s.plugin()));
  return true;
}

void SchedulingQueue::push_active_locked(const std::string& uid, Entry& e) {
  if (gated_locked(e)) {
    push_unschedulable_locked(uid, e);
    return;
  }
  e.active_seq = ++seq_;
  active_.insert(ActiveKey{&e.info, &e.info.pod->uid, e.active_seq});
  e.where = Where::kActive;
  cv_.notify_one();
}

void SchedulingQueue::push_backoff_locked(const std::string& uid, Entry& e) {
  BackoffKey key{backoff_expiry_locked(e.info), ++seq_};
  backoff_.emplace(key, uid);
  backoff_keys_[uid] = key;
  e.where = Where::kBackoff;
  // A waiting pop() may need an earlier wake-up.
  cv_.notify_one();
}

void SchedulingQueue::push_unschedulable_locked(const std::string& uid, Entry& e) {
  unschedulable_.insert(uid);
  e.where = Where::kUnschedulable;
}

void SchedulingQueue::unlink_locked(const std::string& uid, Entry& e) {
  switch (e.where) {
    case Where::kActive:
      active_.erase(ActiveKey{&e.info, nullptr, e.active_seq});
      break;
    case Where::kBackoff: {
      auto it = backoff_keys_.find(uid);
      if (it != backoff_keys_.end()) {
        backoff_.erase(it->second);
        backoff_keys_.erase(it);
      }
      break;
    }
    case Where::kUnschedulable:
      unschedulable_.erase(uid);
      break;
    case Where::kInFlight:
      break;
  }
}

void SchedulingQueue::move_to_active_or_backoff_locked(const std::string& uid, Entry& e,
                                                       TimePoint now) {
  unlink_locked(uid, e);
  // A gated pod never backs off: it only asks its PreEnqueue plugins again.
  if (!e.info.gated && is_backing_off_locked(e.info, now)) {
    push_backoff_locked(uid, e);
  } else {
    push_active_locked(uid, e);
  }
}

void SchedulingQueue::add_locked(PodRef pod, TimePoint t) {
  std::string uid = pod->uid;
  auto it = entries_.find(uid);
  if (it != entries_.end()) {
    Entry& e = it->second;
    if (e.where == Where::kInFlight) {
      e.info.pod = std::move(pod);
      e.updated_in_flight = true;
      return;
    }
    unlink_locked(uid, e);
    e.info.pod = std::move(pod);
    push_active_locked(uid, e);
    return;
  }
  Entry e;
  e.info.pod = std::move(pod);
  e.info.timestamp = t;
  e.info.initial_attempt_timestamp = t;
  Entry& stored = entries_.emplace(uid, std::move(e)).first->second;
  push_active_locked(uid, stored);
}

void SchedulingQueue::add(PodRef pod) {
  std::lock_guard lock(mu_);
  add_locked(std::move(pod), now());
}

void SchedulingQueue::update(PodRef pod) {
  std::lock_guard lock(mu_);
  TimePoint t = now();
  auto it = entries_.find(pod->uid);
  if (it == entries_.end()) {
    add_locked(std::move(pod), t);
    return;
  }
  Entry& e = it->second;
  const std::string& uid = it->first;
  switch (e.where) {
    case Where::kInFlight:
      e.info.pod = std::move(pod);
      e.updated_in_flight = true;
      return;
    case Where::kActive:
      // Re-keyed: the priority may have changed.
      unlink_locked(uid, e);
      e.info.pod = std::move(pod);
      push_active_locked(uid, e);
      return;
    case Where::kBackoff:
      // Keep the position; the newer object is what the next cycle sees.
      e.info.pod = std::move(pod);
      return;
    case Where::kUnschedulable: {
      bool changed = pod_changed(*e.info.pod, *pod);
      e.info.pod = std::move(pod);
      if (e.info.gated) {
        unlink_locked(uid, e);
        push_active_locked(uid, e);  // PreEnqueue again
        return;
      }
      if (changed) move_to_active_or_backoff_locked(uid, e, t);
      return;
    }
  }
}

void SchedulingQueue::remove(std::string_view uid_view) {
  std::lock_guard lock(mu_);
  auto it = entries_.find(std::string(uid_view));
  if (it == entries_.end()) return;
  if (it->second.where == Where::kInFlight) {
    it->second.deleted_in_flight = true;
    return;
  }
  unlink_locked(it->first, it->second);
  entries_.erase(it);
}

std::optional<QueuedPodInfo> SchedulingQueue::pop_locked() {
  auto first = active_.begin();
  std::string uid = *first->uid;
  active_.erase(first);
  Entry& e = entries_.at(uid);
  e.where = Where::kInFlight;
  e.updated_in_flight = false;
  e.deleted_in_flight = false;
  e.info.attempts++;
  e.info.cycle = ++scheduling_cycle_;
  return e.info;
}

std::optional<QueuedPodInfo> SchedulingQueue::pop() {
  std::unique_lock lock(mu_);
  while (true) {
    if (closed_) return std::nullopt;
    TimePoint t = now();
    flush_backoff_locked(t);
    if (t - last_unschedulable_flush_ >= options_.unschedulable_flush_interval) {
      flush_unschedulable_locked(t);
      last_unschedulable_flush_ = t;
    }
    if (!active_.empty()) return pop_locked();
    TimePoint wake = last_unschedulable_flush_ + options_.unschedulable_flush_interval;
    if (!backoff_.empty()) wake = std::min(wake, backoff_.begin()->first.expiry);
    auto wait = wake - t;
    if (wait <= std::chrono::steady_clock::duration::zero()) continue;
    cv_.wait_for(lock, wait);
  }
}

std::optional<QueuedPodInfo> SchedulingQueue::try_pop() {
  std::lock_guard lock(mu_);
  if (closed_) return std::nullopt;
  TimePoint t = now();
  flush_backoff_locked(t);
  if (active_.empty()) return std::nullopt;
  return pop_locked();
}

int64_t SchedulingQueue::scheduling_cycle() const {
  std::lock_guard lock(mu_);
  return scheduling_cycle_;
}

void SchedulingQueue::done(std::string_view uid) {
  std::lock_guard lock(mu_);
  auto it = entries_.find(std::string(uid));
  if (it != entries_.end() && it->second.where == Where::kInFlight) entries_.erase(it);
}

Status SchedulingQueue::add_unschedulable_if_not_present(QueuedPodInfo info) {
  std::lock_guard lock(mu_);
  TimePoint t = now();
  const std::string uid = info.pod->uid;
  auto it = entries_.find(uid);
  bool updated = false;
  if (it != entries_.end()) {
    Entry& e = it->second;
    if (e.where != Where::kInFlight) {
      return Status(StatusCode::kAlreadyExists,
                    "pod " + info.pod->key() + " is already present in the scheduling queue");
    }
    if (e.deleted_in_flight) {
      entries_.erase(it);
      return Status::ok();
    }
    updated = e.updated_in_flight;
    if (updated) info.pod = e.info.pod;
  } else {
    it = entries_.emplace(uid, Entry{}).first;
  }
  Entry& e = it->second;
  info.timestamp = t;
  e.info = std::move(info);
  e.updated_in_flight = false;
  e.deleted_in_flight = false;
  if (gated_locked(e)) {
    push_unschedulable_locked(uid, e);
  } else if (updated || e.info.unschedulable_plugins.empty() ||
             move_request_cycle_ >= e.info.cycle) {
    push_backoff_locked(uid, e);
  } else {
    push_unschedulable_locked(uid, e);
  }
  return Status::ok();
}

bool SchedulingQueue::event_helps_locked(const QueuedPodInfo& info,
                                         const ClusterEvent& event) const {
  // A gated pod goes by the events of the PreEnqueue plugin that gates it (its unschedulable
  // plugin); moving it asks that plugin again.
  if (event.resource == EventResource::kWildcard) return true;
  if (info.unschedulable_plugins.empty()) return true;
  for (const std::string& plugin : info.unschedulable_plugins) {
    auto it = plugin_events_.find(plugin);
    // A plugin that registered nothing: any event may help.
    if (it == plugin_events_.end()) return true;
    for (const ClusterEventWithHint& reg : it->second) {
      if (!event.matches(reg.event)) continue;
      if (!reg.hint || reg.hint(*info.pod, event)) return true;
    }
  }
  return false;
}

void SchedulingQueue::move_matching_locked(const ClusterEvent& event) {
  TimePoint t = now();
  std::vector<std::string> to_move;
  for (const std::string& uid : unschedulable_) {
    const Entry& e = entries_.at(uid);
    if (event_helps_locked(e.info, event)) to_move.push_back(uid);
  }
  for (const std::string& uid : to_move) {
    Entry& e = entries_.at(uid);
    move_to_active_or_backoff_locked(uid, e, t);
  }
  // Pods in flight now fail into backoffQ rather than waiting for another event.
  move_request_cycle_ = scheduling_cycle_;
}

void SchedulingQueue::move_all_to_active_or_backoff(const ClusterEvent& event) {
  std::lock_guard lock(mu_);
  move_matching_locked(event);
}

void SchedulingQueue::assigned_pod_added(const PodInfo& pod) {
  move_all_to_active_or_backoff(assigned_pod_add_event(&pod));
}

void SchedulingQueue::assigned_pod_updated(const PodInfo& before, const PodInfo& after) {
  ClusterEvent event{EventResource::kAssignedPod, pod_update_actions(before, after),
                     "AssignedPodUpdate", &after, nullptr};
  move_all_to_active_or_backoff(event);
}

void SchedulingQueue::assigned_pod_deleted(const PodInfo& pod) {
  move_all_to_active_or_backoff(assigned_pod_delete_event(&pod));
}

void SchedulingQueue::node_added(const Node& node) {
  move_all_to_active_or_backoff(node_add_event(&node));
}

void SchedulingQueue::node_deleted(const Node& node) {
  move_all_to_active_or_backoff(node_delete_event(&node));
}

void SchedulingQueue::node_updated(const Node& before, const Node& after) {
  uint32_t actions = node_update_actions(before, after);
  if (actions == 0) return;
  move_all_to_active_or_backoff({EventResource::kNode, actions, "NodeUpdate", nullptr, &after});
}

void SchedulingQueue::flush_backoff_locked(TimePoint t) {
  while (!backoff_.empty() && backoff_.begin()->first.expiry <= t) {
    std::string uid = backoff_.begin()->second;
    backoff_.erase(backoff_.begin());
    backoff_keys_.erase(uid);
    push_active_locked(uid, entries_.at(uid));
  }
}

void SchedulingQueue::flush_unschedulable_locked(TimePoint t) {
  std::vector<std::string> to_move;
  for (const std::string& uid : unschedulable_) {
    const Entry& e = entries_.at(uid);
    if (e.info.gated) continue;
    if (t - e.info.timestamp > options_.max_in_unschedulable) to_move.push_back(uid);
  }
  for (const std::string& uid : to_move) move_to_active_or_backoff_locked(uid, entries_.at(uid), t);
}

void SchedulingQueue::flush_backoff_completed() {
  std::lock_guard lock(mu_);
  flush_backoff_locked(now());
}

void SchedulingQueue::flush_unschedulable_left_over() {
  std::lock_guard lock(mu_);
  flush_unschedulable_locked(now());
}

void SchedulingQueue::close() {
  std::lock_guard lock(mu_);
  closed_ = true;
  cv_.notify_all();
}

size_t SchedulingQueue::active_size() const {
  std::lock_guard lock(mu_);
  return active_.size();
}

size_t SchedulingQueue::backoff_size() const {
  std::lock_guard lock(mu_);
  return backoff_.size();
}

size_t SchedulingQueue::unschedulable_size() const {
  std::lock_guard lock(mu_);
  return unschedulable_.size();
}

bool SchedulingQueue::contains(std::string_view uid) const {
  std::lock_guard lock(mu_);
  auto it = entries_.find(std::string(uid));
  return it != entries_.end() && it->second.where != Where::kInFlight;
}

}  // namespace skiff::scheduler
