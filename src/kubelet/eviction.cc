#include "kubelet/eviction.h"

#include <algorithm>
#include <cmath>

#include "api/quantity.h"
#include "base/log.h"
#include "kubelet/json_fields.h"

namespace skiff::kubelet {
namespace {

int64_t quantity(const Json& list, const char* name, bool milli) {
  const Json& q = member(list, name);
  if (!q.is_string() && !q.is_number()) return -1;
  auto parsed = api::Quantity::parse(q.is_string() ? q.get<std::string>() : q.dump());
  if (!parsed.is_ok()) return -1;
  return milli ? parsed->milli_value() : parsed->value();
}

// The sum of the containers' requests for `resource` (memory in bytes).
int64_t pod_request(const Json& pod, const char* resource) {
  int64_t total = 0;
  for (const Json& c : member(member(pod, "spec"), "containers")) {
    const Json& res = member(c, "resources");
    int64_t r = quantity(member(res, "requests"), resource, false);
    if (r < 0) r = quantity(member(res, "limits"), resource, false);  // requests default to limits
    if (r > 0) total += r;
  }
  return total;
}

std::string mebibytes(int64_t bytes) {
  return std::to_string((bytes + (1 << 20) - 1) >> 20) + "Mi";
}

}  // namespace

std::vector<Threshold> default_thresholds() {
  return {{"memory.available", 100ll << 20, -1},
          {"nodefs.available", -1, 0.10},
          {"imagefs.available", -1, 0.15}};
}

Result<std::vector<Threshold>> parse_thresholds(const std::string& text) {
  std::vector<Threshold> out;
  size_t start = 0;
  while (start <= text.size()) {
    size_t comma = text.find(',', start);
    std::string entry =
        text.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    start = comma == std::string::npos ? text.size() + 1 : comma + 1;
    if (entry.empty()) continue;
    size_t lt = entry.find('<');
    if (lt == std::string::npos) {
      return error(StatusCode::kInvalidArgument,
                   "eviction threshold \"" + entry + "\": want signal<quantity");
    }
    Threshold t;
    t.signal = entry.substr(0, lt);
    std::string value = entry.substr(lt + 1);
    if (t.signal != "memory.available" && t.signal != "nodefs.available" &&
        t.signal != "imagefs.available") {
      return error(StatusCode::kInvalidArgument,
                   "eviction threshold \"" + entry + "\": unsupported signal " + t.signal);
    }
    if (!value.empty() && value.back() == '%') {
      char* end = nullptr;
      double pct = std::strtod(value.c_str(), &end);
      if (end == nullptr || *end != '%' || pct < 0 || pct > 100) {
        return error(StatusCode::kInvalidArgument,
                     "eviction threshold \"" + entry + "\": bad percentage");
      }
      t.percentage = pct / 100.0;
    } else {
      auto q = api::Quantity::parse(value);
      if (!q.is_ok() || q->value() < 0) {
        return error(StatusCode::kInvalidArgument,
                     "eviction threshold \"" + entry + "\": bad quantity");
      }
      t.quantity_bytes = q->value();
    }
    out.push_back(t);
  }
  return out;
}

std::string qos_class(const Json& pod) {
  bool any = false;
  bool guaranteed = true;
  for (const char* list : {"initContainers", "containers"}) {
    for (const Json& c : member(member(pod, "spec"), list)) {
      const Json& res = member(c, "resources");
      for (const char* r : {"cpu", "memory"}) {
        int64_t req = quantity(member(res, "requests"), r, true);
        int64_t lim = quantity(member(res, "limits"), r, true);
        if (req > 0 || lim > 0) any = true;
        if (lim <= 0 || (req >= 0 && req != lim)) guaranteed = false;
      }
    }
  }
  if (!any) return "BestEffort";
  return guaranteed ? "Guaranteed" : "Burstable";
}

std::vector<PodUsage> rank_for_eviction(std::vector<PodUsage> pods, const std::string& signal) {
  bool memory = signal == "memory.available";
  auto usage = [&](const PodUsage& p) { return memory ? p.memory_working_set : p.ephemeral_usage; };
  auto request = [&](const PodUsage& p) {
    return pod_request(p.pod, memory ? "memory" : "ephemeral-storage");
  };
  auto priority = [](const PodUsage& p) {
    const Json& v = member(member(p.pod, "spec"), "priority");
    return v.is_number_integer() ? v.get<int64_t>() : 0;
  };
  std::stable_sort(pods.begin(), pods.end(), [&](const PodUsage& a, const PodUsage& b) {
    bool a_exceeds = usage(a) > request(a);
    bool b_exceeds = usage(b) > request(b);
    if (a_exceeds != b_exceeds) return a_exceeds;
    if (priority(a) != priority(b)) return priority(a) < priority(b);
    return usage(a) - request(a) > usage(b) - request(b);
  });
  return pods;
}

std::vector<Observation> observe(const stats::Summary& summary,
                                 const std::vector<Threshold>& thresholds) {
  std::vector<Observation> out;
  for (const Threshold& t : thresholds) {
    std::optional<uint64_t> available;
    std::optional<uint64_t> capacity;
    std::string resource;
    if (t.signal == "memory.available" && summary.node.memory) {
      available = summary.node.memory->available_bytes;
      if (summary.node.memory->available_bytes && summary.node.memory->working_set_bytes) {
        capacity = *summary.node.memory->available_bytes + *summary.node.memory->working_set_bytes;
      }
      resource = "memory";
    } else if (t.signal == "nodefs.available" && summary.node.fs) {
      available = summary.node.fs->available_bytes;
      capacity = summary.node.fs->capacity_bytes;
      resource = "ephemeral-storage";
    } else if (t.signal == "imagefs.available" && summary.node.runtime &&
               summary.node.runtime->image_fs) {
      available = summary.node.runtime->image_fs->available_bytes;
      capacity = summary.node.runtime->image_fs->capacity_bytes;
      resource = "ephemeral-storage";
    }
    if (!available) continue;
    int64_t limit = t.quantity_bytes;
    if (t.percentage >= 0) {
      if (!capacity) continue;
      limit = static_cast<int64_t>(std::llround(t.percentage * static_cast<double>(*capacity)));
    }
    if (static_cast<int64_t>(*available) >= limit) continue;
    out.push_back({t.signal, "The node was low on resource: " + resource +
                                 ". Threshold quantity: " + mebibytes(limit) + ", available: " +
                                 mebibytes(static_cast<int64_t>(*available)) + ". "});
  }
  return out;
}

EvictionManager::EvictionManager(std::vector<Threshold> thresholds, Hooks hooks,
                                 std::chrono::milliseconds interval)
    : thresholds_(std::move(thresholds)), hooks_(std::move(hooks)), interval_(interval) {}

EvictionManager::~EvictionManager() {
  stop();
}

void EvictionManager::start() {
  thread_ = std::thread([this] {
    while (true) {
      synchronize();
      std::unique_lock lock(mu_);
      if (cv_.wait_for(lock, interval_, [&] { return stopping_; })) return;
    }
  });
}

void EvictionManager::stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void EvictionManager::synchronize() {
  auto summary = hooks_.summary();
  if (!summary.is_ok()) {
    SKIFF_LOG_DEBUG("kubelet: eviction: no stats: {}", summary.status().to_string());
    return;
  }
  std::vector<Observation> under = observe(*summary, thresholds_);
  bool memory = false;
  bool disk = false;
  for (const Observation& o : under) (o.signal == "memory.available" ? memory : disk) = true;
  bool changed = memory_pressure_.exchange(memory) != memory;
  changed |= disk_pressure_.exchange(disk) != disk;
  if (changed && hooks_.pressure_changed) hooks_.pressure_changed();
  if (under.empty()) return;

  // One pod per round, for the first signal under pressure (memory before disk).
  const Observation& signal = under.front();
  std::vector<PodUsage> pods;
  for (const Json& pod : hooks_.active_pods()) {
    PodUsage u;
    u.pod = pod;
    std::string uid = member(pod, "metadata").value("uid", "");
    for (const stats::PodStats& ps : summary->pods) {
      if (ps.pod_ref.uid != uid) continue;
      if (ps.memory && ps.memory->working_set_bytes)
        u.memory_working_set = *ps.memory->working_set_bytes;
      if (ps.ephemeral_storage && ps.ephemeral_storage->used_bytes) {
        u.ephemeral_usage = *ps.ephemeral_storage->used_bytes;
      }
    }
    pods.push_back(std::move(u));
  }
  if (pods.empty()) return;
  std::vector<PodUsage> ranked = rank_for_eviction(std::move(pods), signal.signal);
  const Json& victim = ranked.front().pod;
  std::string uid = member(victim, "metadata").value("uid", "");
  SKIFF_LOG_WARN("kubelet: evicting pod {}/{}: {}",
                 member(victim, "metadata").value("namespace", ""),
                 member(victim, "metadata").value("name", ""), signal.message);
  hooks_.evict(uid, signal.message);
}

}  // namespace skiff::kubelet
