#include "scheduler/cache.h"

#include <algorithm>
#include <atomic>

namespace skiff::scheduler {

// ---- Snapshot ----

const NodeInfo* Snapshot::get(std::string_view name) const {
  auto it = map_.find(name);
  return it == map_.end() ? nullptr : it->second.get();
}

const Labels* Snapshot::namespace_labels(const HString& ns) const {
  auto it = namespaces_.find(ns);
  return it == namespaces_.end() ? nullptr : &it->second;
}

namespace {

uint64_t next_epoch() {
  static std::atomic<uint64_t> epochs{0};
  return ++epochs;
}

}  // namespace

bool Snapshot::changed_since(uint64_t generation, std::vector<const NodeInfo*>& out) const {
  out.clear();
  if (generation < change_log_floor_) return false;
  auto it = std::upper_bound(
      change_log_.begin(), change_log_.end(), generation,
      [](uint64_t g, const std::pair<uint64_t, const NodeInfo*>& e) { return g < e.first; });
  for (; it != change_log_.end(); ++it) out.push_back(it->second);
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return true;
}

size_t Snapshot::index_of(const NodeInfo& node) const {
  auto it = index_.find(&node);
  SKIFF_CHECK(it != index_.end(), "NodeInfo is not in the snapshot");
  return it->second;
}

// ---- Cache ----

Cache::Cache(std::chrono::milliseconds assumed_ttl, NowFn now)
    : ttl_(assumed_ttl),
      now_(now ? std::move(now) : [] { return std::chrono::steady_clock::now(); }) {}

NodeInfo& Cache::node_item_locked(const std::string& name) {
  auto it = item_index_.find(name);
  if (it != item_index_.end()) return *it->second;
  items_.emplace_front(name);
  item_index_.emplace(name, items_.begin());
  return items_.front();
}

void Cache::touch_locked(ItemList::iterator it) {
  it->set_generation(++generation_);
  if (it != items_.begin()) items_.splice(items_.begin(), items_, it);
}

void Cache::tree_add_locked(const Node& node) {
  const std::string& name = node.name.str();
  for (auto& [zone, names] : zones_) {
    if (zone == node.zone_id) {
      names.push_back(name);
      node_zone_[name] = zone;
      ++tree_generation_;
      return;
    }
  }
  zones_.push_back({node.zone_id, {name}});
  node_zone_[name] = node.zone_id;
  ++tree_generation_;
}

void Cache::tree_remove_locked(const std::string& name, const std::string& zone) {
  for (auto z = zones_.begin(); z != zones_.end(); ++z) {
    if (z->first != zone) continue;
    auto& names = z->second;
    names.erase(std::remove(names.begin(), names.end(), name), names.end());
    if (names.empty()) zones_.erase(z);
    break;
  }
  node_zone_.erase(name);
  ++tree_generation_;
}

std::vector<std::string> Cache::tree_list_locked() const {
  std::vector<std::string> out;
  out.reserve(node_zone_.size());
  for (size_t index = 0; out.size() < node_zone_.size(); ++index) {
    bool any = false;
    for (const auto& [zone, names] : zones_) {
      if (index < names.size()) {
        out.push_back(names[index]);
        any = true;
      }
    }
    if (!any) break;
  }
  return out;
}

void Cache::add_node(NodeRef node) {
  std::lock_guard lock(mu_);
  const std::string& name = node->name.str();
  NodeInfo& item = node_item_locked(name);
  auto zone = node_zone_.find(name);
  if (zone == node_zone_.end()) {
    tree_add_locked(*node);
  } else if (zone->second != node->zone_id) {
    tree_remove_locked(name, std::string(zone->second));
    tree_add_locked(*node);
  }
  item.set_node(std::move(node));
  touch_locked(item_index_.at(name));
}

void Cache::remove_node(std::string_view name_view) {
  std::lock_guard lock(mu_);
  std::string name(name_view);
  auto it = item_index_.find(name);
  if (it == item_index_.end()) return;
  auto zone = node_zone_.find(name);
  if (zone != node_zone_.end()) tree_remove_locked(name, std::string(zone->second));
  ItemList::iterator item = it->second;
  item->set_node(nullptr);
  if (item->pods().empty()) {
    items_.erase(item);
    item_index_.erase(it);
    ++generation_;
  } else {
    touch_locked(item);
  }
}

void Cache::add_pod_locked(const PodRef& pod, const std::string& node) {
  NodeInfo& item = node_item_locked(node);
  item.add_pod(pod);
  touch_locked(item_index_.at(node));
}

void Cache::remove_pod_locked(const std::string& uid, const std::string& node) {
  auto it = item_index_.find(node);
  if (it == item_index_.end()) return;
  ItemList::iterator item = it->second;
  item->remove_pod(uid);
  if (item->pods().empty() && item->node() == nullptr) {
    items_.erase(item);
    item_index_.erase(it);
    ++generation_;
  } else {
    touch_locked(item);
  }
}

Status Cache::add_pod(PodRef pod) {
  if (pod->node_name.empty()) {
    return Status(StatusCode::kInvalidArgument,
                  "pod " + pod->key() + " is not bound to a node (spec.nodeName is empty)");
  }
  std::lock_guard lock(mu_);
  auto it = pods_.find(pod->uid);
  if (it != pods_.end()) {
    PodState& state = it->second;
    remove_pod_locked(pod->uid, state.node);
    if (state.assumed) --assumed_count_;
    state = PodState{pod, pod->node_name};
    add_pod_locked(pod, pod->node_name);
    return Status::ok();
  }
  pods_.emplace(pod->uid, PodState{pod, pod->node_name});
  add_pod_locked(pod, pod->node_name);
  return Status::ok();
}

Status Cache::update_pod(PodRef pod) {
  return add_pod(std::move(pod));
}

Status Cache::remove_pod(std::string_view uid_view) {
  std::lock_guard lock(mu_);
  std::string uid(uid_view);
  auto it = pods_.find(uid);
  if (it == pods_.end()) {
    return Status(StatusCode::kNotFound, "pod " + uid + " is not in the scheduler cache");
  }
  remove_pod_locked(uid, it->second.node);
  if (it->second.assumed) --assumed_count_;
  pods_.erase(it);
  return Status::ok();
}

Status Cache::assume_pod(PodRef pod, const std::string& node_name) {
  std::lock_guard lock(mu_);
  if (pods_.count(pod->uid) != 0) {
    return Status(StatusCode::kAlreadyExists,
                  "pod " + pod->key() + " (" + pod->uid + ") is already in the scheduler cache");
  }
  PodState state{pod, node_name, true};
  add_pod_locked(pod, node_name);
  pods_.emplace(pod->uid, std::move(state));
  ++assumed_count_;
  return Status::ok();
}

Status Cache::finish_binding(std::string_view uid) {
  std::lock_guard lock(mu_);
  auto it = pods_.find(std::string(uid));
  if (it == pods_.end() || !it->second.assumed) {
    return Status(StatusCode::kNotFound, "pod " + std::string(uid) + " is not assumed");
  }
  it->second.binding_finished = true;
  it->second.deadline = now_() + ttl_;
  return Status::ok();
}

Status Cache::forget_pod(std::string_view uid_view) {
  std::lock_guard lock(mu_);
  std::string uid(uid_view);
  auto it = pods_.find(uid);
  if (it == pods_.end() || !it->second.assumed) {
    return Status(StatusCode::kNotFound, "pod " + uid + " is not assumed");
  }
  remove_pod_locked(uid, it->second.node);
  pods_.erase(it);
  --assumed_count_;
  return Status::ok();
}

bool Cache::is_assumed(std::string_view uid) const {
  std::lock_guard lock(mu_);
  auto it = pods_.find(std::string(uid));
  return it != pods_.end() && it->second.assumed;
}

size_t Cache::cleanup_expired_assumed_pods() {
  if (ttl_.count() == 0) return 0;
  std::lock_guard lock(mu_);
  if (assumed_count_ == 0) return 0;
  TimePoint now = now_();
  size_t removed = 0;
  for (auto it = pods_.begin(); it != pods_.end();) {
    const PodState& s = it->second;
    if (s.assumed && s.binding_finished && now > s.deadline) {
      remove_pod_locked(it->first, s.node);
      it = pods_.erase(it);
      --assumed_count_;
      ++removed;
    } else {
      ++it;
    }
  }
  return removed;
}

void Cache::set_namespace(const std::string& name, Labels labels) {
  std::lock_guard lock(mu_);
  namespaces_[HString(name)] = std::move(labels);
  ++namespaces_generation_;
}

void Cache::remove_namespace(const std::string& name) {
  std::lock_guard lock(mu_);
  namespaces_.erase(HString(name));
  ++namespaces_generation_;
}

void Cache::update_snapshot(Snapshot& snapshot) {
  std::lock_guard lock(mu_);
  bool new_epoch = snapshot.epoch_ == 0;
  if (snapshot.namespaces_generation_ != namespaces_generation_) {
    snapshot.namespaces_ = namespaces_;
    snapshot.namespaces_generation_ = namespaces_generation_;
    new_epoch = true;
  }
  bool rebuild_all = snapshot.tree_generation_ != tree_generation_;
  bool rebuild_affinity = false;
  const size_t log_start = snapshot.change_log_.size();
  for (auto it = items_.begin(); it != items_.end() && it->generation() > snapshot.generation_;
       ++it) {
    if (it->node() == nullptr) continue;
    std::unique_ptr<NodeInfo>& slot = snapshot.map_[it->name()];
    if (!slot) {
      slot = std::make_unique<NodeInfo>(*it);
      rebuild_all = true;
      continue;
    }
    bool had_affinity = !slot->pods_with_affinity().empty();
    bool had_anti_affinity = !slot->pods_with_required_anti_affinity().empty();
    *slot = *it;
    snapshot.change_log_.emplace_back(slot->generation(), slot.get());
    if (had_affinity != !slot->pods_with_affinity().empty() ||
        had_anti_affinity != !slot->pods_with_required_anti_affinity().empty()) {
      rebuild_affinity = true;
    }
  }
  // The walk went from the newest change to the oldest.
  std::reverse(snapshot.change_log_.begin() + static_cast<std::ptrdiff_t>(log_start),
               snapshot.change_log_.end());
  if (snapshot.change_log_.size() > Snapshot::kChangeLogLimit) {
    size_t drop = snapshot.change_log_.size() - Snapshot::kChangeLogLimit / 2;
    snapshot.change_log_floor_ = snapshot.change_log_[drop - 1].first;
    snapshot.change_log_.erase(snapshot.change_log_.begin(),
                               snapshot.change_log_.begin() + static_cast<std::ptrdiff_t>(drop));
  }
  snapshot.generation_ = generation_;

  if (snapshot.map_.size() > node_zone_.size()) {
    for (auto it = snapshot.map_.begin(); it != snapshot.map_.end();) {
      auto item = item_index_.find(it->first);
      if (item == item_index_.end() || item->second->node() == nullptr) {
        it = snapshot.map_.erase(it);
        rebuild_all = true;
      } else {
        ++it;
      }
    }
  }

  if (rebuild_all) {
    snapshot.nodes_.clear();
    snapshot.index_.clear();
    for (const std::string& name : tree_list_locked()) {
      auto it = snapshot.map_.find(name);
      if (it == snapshot.map_.end()) continue;
      snapshot.index_.emplace(it->second.get(), static_cast<uint32_t>(snapshot.nodes_.size()));
      snapshot.nodes_.push_back(it->second.get());
    }
    snapshot.tree_generation_ = tree_generation_;
    rebuild_affinity = true;
    new_epoch = true;
  }
  if (new_epoch) {
    snapshot.epoch_ = next_epoch();
    snapshot.change_log_.clear();
    snapshot.change_log_floor_ = snapshot.generation_;
  }
  if (rebuild_affinity) {
    snapshot.with_affinity_.clear();
    snapshot.with_required_anti_affinity_.clear();
    for (const NodeInfo* n : snapshot.nodes_) {
      if (!n->pods_with_affinity().empty()) snapshot.with_affinity_.push_back(n);
      if (!n->pods_with_required_anti_affinity().empty()) {
        snapshot.with_required_anti_affinity_.push_back(n);
      }
    }
  }
}

size_t Cache::node_count() const {
  std::lock_guard lock(mu_);
  return node_zone_.size();
}

size_t Cache::pod_count() const {
  std::lock_guard lock(mu_);
  return pods_.size();
}

std::optional<std::string> Cache::pod_node(std::string_view uid) const {
  std::lock_guard lock(mu_);
  auto it = pods_.find(std::string(uid));
  if (it == pods_.end()) return std::nullopt;
  return it->second.node;
}

std::optional<NodeInfo> Cache::node_info(std::string_view name) const {
  std::lock_guard lock(mu_);
  auto it = item_index_.find(std::string(name));
  if (it == item_index_.end()) return std::nullopt;
  return *it->second;
}

}  // namespace skiff::scheduler
