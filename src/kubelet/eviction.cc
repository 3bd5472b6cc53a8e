#include "kubelet/eviction.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>

#include "api/quantity.h"
#include "base/check.h"
#include "base/log.h"
#include "kubelet/json_fields.h"

namespace skiff::kubelet {
namespace {

// Upstream's SystemCriticalPriority: pods at or above it are never evicted.
constexpr int64_t kSystemCriticalPriority = 2000000000;
constexpr int64_t kDefaultTerminationGracePeriodSeconds = 30;

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

int64_t pod_priority(const Json& pod) {
  const Json& v = member(member(pod, "spec"), "priority");
  return v.is_number_integer() ? v.get<int64_t>() : 0;
}

std::string mebibytes(int64_t bytes) {
  return std::to_string((bytes + (1 << 20) - 1) >> 20) + "Mi";
}

bool supported_signal(const std::string& signal) {
  for (const char* s : {kSignalMemoryAvailable, kSignalNodeFsAvailable, kSignalNodeFsInodesFree,
                        kSignalImageFsAvailable, kSignalImageFsInodesFree, kSignalPidAvailable}) {
    if (signal == s) return true;
  }
  return false;
}

bool counts_bytes(const std::string& signal) {
  return signal == kSignalMemoryAvailable || signal == kSignalNodeFsAvailable ||
         signal == kSignalImageFsAvailable;
}

// The resource an evicted pod's message names, as upstream names it.
std::string resource_of(const std::string& signal) {
  if (signal == kSignalMemoryAvailable) return "memory";
  if (signal == kSignalPidAvailable) return "pids";
  if (signal == kSignalNodeFsInodesFree || signal == kSignalImageFsInodesFree) return "inodes";
  return "ephemeral-storage";
}

std::string amount_text(const std::string& signal, int64_t value) {
  return counts_bytes(signal) ? mebibytes(value) : std::to_string(value);
}

// The comma-separated entries of a flag's text, empty ones skipped.
std::vector<std::string> entries(const std::string& text) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= text.size()) {
    size_t comma = text.find(',', start);
    std::string entry =
        text.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    start = comma == std::string::npos ? text.size() + 1 : comma + 1;
    while (!entry.empty() && entry.front() == ' ') entry.erase(entry.begin());
    while (!entry.empty() && entry.back() == ' ') entry.pop_back();
    if (!entry.empty()) out.push_back(entry);
  }
  return out;
}

Status bad_entry(const std::string& flag, const std::string& entry, const std::string& why) {
  return error(StatusCode::kInvalidArgument, flag + " \"" + entry + "\": " + why);
}

// "10%" or a quantity ("100Mi", "1k", "500"); `positive`: zero is refused too.
Status parse_amount(const std::string& flag, const std::string& entry, const std::string& value,
                    bool positive, SignalAmount* out) {
  if (value.empty()) return bad_entry(flag, entry, "no quantity");
  if (value.back() == '%') {
    const char* begin = value.c_str();
    char* end = nullptr;
    double pct = std::strtod(begin, &end);
    if (end == begin || end == nullptr || *end != '%' || end + 1 != begin + value.size() ||
        !std::isfinite(pct)) {
      return bad_entry(flag, entry, "bad percentage \"" + value + "\"");
    }
    if (pct < 0 || pct > 100) {
      return bad_entry(flag, entry, "percentage " + value + " is not within 0% and 100%");
    }
    out->percentage = pct / 100.0;
    out->quantity = -1;
    return Status::ok();
  }
  auto q = api::Quantity::parse(value);
  if (!q.is_ok()) return bad_entry(flag, entry, "bad quantity \"" + value + "\"");
  if (q->milli_value() < 0 || (positive && q->milli_value() == 0)) {
    return bad_entry(
        flag, entry,
        std::string("quantity ") + value + (positive ? " is not positive" : " is negative"));
  }
  out->quantity = q->value();
  out->percentage = -1;
  return Status::ok();
}

// "signal=value" entries of --eviction-soft-grace-period and --eviction-minimum-reclaim, by
// signal; each signal at most once.
Result<std::map<std::string, std::pair<std::string, std::string>>> parse_assignments(
    const std::string& flag, const std::string& text) {
  std::map<std::string, std::pair<std::string, std::string>> out;  // signal → (entry, value)
  for (const std::string& entry : entries(text)) {
    size_t eq = entry.find('=');
    if (eq == std::string::npos) return bad_entry(flag, entry, "want signal=value");
    std::string signal = entry.substr(0, eq);
    if (!supported_signal(signal)) {
      return bad_entry(flag, entry, "unsupported signal \"" + signal + "\"");
    }
    if (!out.emplace(signal, std::make_pair(entry, entry.substr(eq + 1))).second) {
      return bad_entry(flag, entry, "signal " + signal + " given twice");
    }
  }
  return out;
}

struct SignalValue {
  int64_t available = 0;
  std::optional<int64_t> capacity;
};

std::optional<SignalValue> signal_value(const stats::Summary& summary, const std::string& signal) {
  auto as_int = [](uint64_t v) { return static_cast<int64_t>(std::min<uint64_t>(v, INT64_MAX)); };
  SignalValue v;
  if (signal == kSignalMemoryAvailable) {
    const auto& m = summary.node.memory;
    if (!m || !m->available_bytes) return std::nullopt;
    v.available = as_int(*m->available_bytes);
    if (m->working_set_bytes) v.capacity = as_int(*m->available_bytes + *m->working_set_bytes);
    return v;
  }
  const std::optional<stats::FsStats>* fs = nullptr;
  if (signal == kSignalNodeFsAvailable || signal == kSignalNodeFsInodesFree) {
    fs = &summary.node.fs;
  } else if (signal == kSignalImageFsAvailable || signal == kSignalImageFsInodesFree) {
    if (!summary.node.runtime) return std::nullopt;
    fs = &summary.node.runtime->image_fs;
  }
  if (fs != nullptr) {
    if (!*fs) return std::nullopt;
    bool inodes = signal == kSignalNodeFsInodesFree || signal == kSignalImageFsInodesFree;
    const std::optional<uint64_t>& available = inodes ? (*fs)->inodes_free : (*fs)->available_bytes;
    const std::optional<uint64_t>& capacity = inodes ? (*fs)->inodes : (*fs)->capacity_bytes;
    if (!available) return std::nullopt;
    v.available = as_int(*available);
    if (capacity) v.capacity = as_int(*capacity);
    return v;
  }
  if (signal == kSignalPidAvailable) {
    const auto& r = summary.node.rlimit;
    if (!r || !r->max_pid || !r->num_of_running_processes) return std::nullopt;
    v.available = std::max<int64_t>(0, *r->max_pid - *r->num_of_running_processes);
    v.capacity = *r->max_pid;
    return v;
  }
  return std::nullopt;
}

// The amount in units of the signal; nullopt when it is a share and the capacity is unknown.
std::optional<int64_t> resolve(const SignalAmount& amount, const SignalValue& value) {
  if (amount.percentage >= 0) {
    if (!value.capacity) return std::nullopt;
    return static_cast<int64_t>(
        std::llround(amount.percentage * static_cast<double>(*value.capacity)));
  }
  return std::max<int64_t>(0, amount.quantity);
}

}  // namespace

std::vector<Threshold> default_thresholds() {
  auto parsed = parse_thresholds(kDefaultEvictionHard);
  SKIFF_CHECK(parsed.is_ok(), "the default eviction thresholds parse");
  return *parsed;
}

Result<std::vector<Threshold>> parse_thresholds(const std::string& text, bool soft,
                                                const std::string& flag) {
  std::vector<Threshold> out;
  std::set<std::string> seen;
  for (const std::string& entry : entries(text)) {
    size_t lt = entry.find('<');
    if (lt == std::string::npos) return bad_entry(flag, entry, "want signal<quantity");
    Threshold t;
    t.signal = entry.substr(0, lt);
    t.soft = soft;
    std::string value = entry.substr(lt + 1);
    if (!supported_signal(t.signal)) {
      return bad_entry(flag, entry, "unsupported signal \"" + t.signal + "\"");
    }
    if (!seen.insert(t.signal).second) {
      return bad_entry(flag, entry, "signal " + t.signal + " given twice");
    }
    if (value == "0%" || value == "100%") continue;  // disabled
    SignalAmount amount;
    SKIFF_RETURN_IF_ERROR(parse_amount(flag, entry, value, /*positive=*/true, &amount));
    t.quantity = amount.quantity;
    t.percentage = amount.percentage;
    out.push_back(t);
  }
  return out;
}

Result<std::vector<Threshold>> parse_eviction_flags(const EvictionFlags& flags) {
  SKIFF_ASSIGN_OR_RETURN(std::vector<Threshold> hard,
                         parse_thresholds(flags.hard, false, "--eviction-hard"));
  SKIFF_ASSIGN_OR_RETURN(std::vector<Threshold> soft,
                         parse_thresholds(flags.soft, true, "--eviction-soft"));
  SKIFF_ASSIGN_OR_RETURN(auto grace_periods, parse_assignments("--eviction-soft-grace-period",
                                                               flags.soft_grace_period));
  std::map<std::string, std::chrono::milliseconds> grace;
  for (const auto& [signal, entry_value] : grace_periods) {
    const auto& [entry, value] = entry_value;
    auto d = parse_duration(value);
    if (!d.is_ok()) {
      return bad_entry("--eviction-soft-grace-period", entry, "bad duration \"" + value + "\"");
    }
    grace[signal] = *d;
  }
  SKIFF_ASSIGN_OR_RETURN(auto reclaims,
                         parse_assignments("--eviction-minimum-reclaim", flags.minimum_reclaim));
  std::map<std::string, SignalAmount> reclaim;
  for (const auto& [signal, entry_value] : reclaims) {
    const auto& [entry, value] = entry_value;
    SignalAmount amount;
    SKIFF_RETURN_IF_ERROR(
        parse_amount("--eviction-minimum-reclaim", entry, value, /*positive=*/false, &amount));
    reclaim[signal] = amount;
  }
  for (Threshold& t : soft) {
    auto it = grace.find(t.signal);
    if (it == grace.end()) {
      return error(StatusCode::kInvalidArgument,
                   "--eviction-soft \"" + t.signal +
                       "\": a soft eviction threshold needs a grace period "
                       "(--eviction-soft-grace-period " +
                       t.signal + "=1m30s)");
    }
    t.grace_period = it->second;
  }
  std::vector<Threshold> out = std::move(hard);
  out.insert(out.end(), soft.begin(), soft.end());
  for (Threshold& t : out) {
    if (auto it = reclaim.find(t.signal); it != reclaim.end()) t.minimum_reclaim = it->second;
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

namespace {

// Whether one of the pod's tolerations matches the NoSchedule taint `key` (with no value).
bool tolerates_no_schedule(const Json& pod, const std::string& key) {
  for (const Json& t : member(member(pod, "spec"), "tolerations")) {
    std::string effect = str(t, "effect");
    if (!effect.empty() && effect != "NoSchedule") continue;
    std::string op = str(t, "operator");
    std::string tkey = str(t, "key");
    if (op == "Exists" && (tkey.empty() || tkey == key)) return true;
    if ((op.empty() || op == "Equal") && tkey == key && str(t, "value").empty()) {
      return true;
    }
  }
  return false;
}

}  // namespace

bool is_critical_pod(const Json& pod, bool is_static) {
  const Json& priority = member(member(pod, "spec"), "priority");
  return is_static || (priority.is_number_integer() && priority.get<int64_t>() >= 2000000000);
}

std::string pressure_admission(const Json& pod, bool is_static,
                               const std::vector<std::string>& conditions) {
  if (conditions.empty() || is_critical_pod(pod, is_static)) return "";
  if (conditions.size() == 1 && conditions[0] == "MemoryPressure" &&
      (qos_class(pod) != "BestEffort" ||
       tolerates_no_schedule(pod, "node.kubernetes.io/memory-pressure"))) {
    return "";
  }
  std::string list;
  for (const std::string& c : conditions) list += (list.empty() ? "" : " ") + c;
  return "The node had condition: [" + list + "]. ";
}

std::string pressure_condition(const std::string& signal) {
  if (signal == kSignalMemoryAvailable) return "MemoryPressure";
  if (signal == kSignalPidAvailable) return "PIDPressure";
  return "DiskPressure";
}

std::vector<PodUsage> rank_for_eviction(std::vector<PodUsage> pods, const std::string& signal) {
  if (signal == kSignalPidAvailable) {
    std::stable_sort(pods.begin(), pods.end(), [](const PodUsage& a, const PodUsage& b) {
      if (pod_priority(a.pod) != pod_priority(b.pod)) {
        return pod_priority(a.pod) < pod_priority(b.pod);
      }
      return a.process_count > b.process_count;
    });
    return pods;
  }
  bool memory = signal == kSignalMemoryAvailable;
  bool inodes = signal == kSignalNodeFsInodesFree || signal == kSignalImageFsInodesFree;
  auto usage = [&](const PodUsage& p) {
    return memory ? p.memory_working_set : inodes ? p.ephemeral_inodes : p.ephemeral_usage;
  };
  auto request = [&](const PodUsage& p) -> int64_t {
    if (inodes) return 0;  // inodes cannot be requested
    return pod_request(p.pod, memory ? "memory" : "ephemeral-storage");
  };
  std::stable_sort(pods.begin(), pods.end(), [&](const PodUsage& a, const PodUsage& b) {
    bool a_exceeds = usage(a) > request(a);
    bool b_exceeds = usage(b) > request(b);
    if (a_exceeds != b_exceeds) return a_exceeds;
    if (pod_priority(a.pod) != pod_priority(b.pod)) {
      return pod_priority(a.pod) < pod_priority(b.pod);
    }
    return usage(a) - request(a) > usage(b) - request(b);
  });
  return pods;
}

std::vector<Observation> observe(const stats::Summary& summary,
                                 const std::vector<Threshold>& thresholds,
                                 const std::set<size_t>& previously_met) {
  std::vector<Observation> out;
  for (size_t i = 0; i < thresholds.size(); ++i) {
    const Threshold& t = thresholds[i];
    std::optional<SignalValue> value = signal_value(summary, t.signal);
    if (!value) continue;
    std::optional<int64_t> limit = resolve(SignalAmount{t.quantity, t.percentage}, *value);
    if (!limit) continue;
    int64_t bar = *limit;
    if (previously_met.count(i)) {
      // Met before: resolved only once the signal is back above the threshold plus the
      // minimum reclaim.
      if (std::optional<int64_t> reclaim = resolve(t.minimum_reclaim, *value)) bar += *reclaim;
    }
    if (value->available >= bar) continue;
    out.push_back({i, t.signal,
                   "The node was low on resource: " + resource_of(t.signal) +
                       ". Threshold quantity: " + amount_text(t.signal, *limit) +
                       ", available: " + amount_text(t.signal, value->available) + ". "});
  }
  return out;
}

EvictionManager::EvictionManager(EvictionOptions options, Hooks hooks)
    : options_(std::move(options)), hooks_(std::move(hooks)) {}

EvictionManager::~EvictionManager() {
  stop();
}

void EvictionManager::start() {
  thread_ = std::thread([this] {
    while (true) {
      synchronize();
      std::unique_lock lock(mu_);
      if (cv_.wait_for(lock, options_.monitoring_interval, [&] { return stopping_; })) return;
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
  const auto now = options_.clock->now();
  const std::vector<Threshold>& thresholds = options_.thresholds;
  std::vector<Observation> met = observe(*summary, thresholds, met_);

  // When each threshold was first met in its current unbroken run, and when each condition was
  // last driven by one.
  std::set<size_t> met_now;
  std::map<size_t, std::chrono::system_clock::time_point> first_met;
  for (const Observation& o : met) {
    met_now.insert(o.index);
    auto it = first_met_.find(o.index);
    first_met[o.index] = it == first_met_.end() ? now : it->second;
    condition_last_met_[pressure_condition(o.signal)] = now;
  }
  met_ = std::move(met_now);
  first_met_ = std::move(first_met);

  auto under = [&](const char* condition) {
    auto it = condition_last_met_.find(condition);
    return it != condition_last_met_.end() &&
           now - it->second < options_.pressure_transition_period;
  };
  bool memory = under("MemoryPressure");
  bool disk = under("DiskPressure");
  bool pid = under("PIDPressure");
  // A condition met this very round holds even with a zero transition period.
  for (const Observation& o : met) {
    std::string c = pressure_condition(o.signal);
    (c == "MemoryPressure" ? memory : c == "DiskPressure" ? disk : pid) = true;
  }
  bool changed = memory_pressure_.exchange(memory) != memory;
  changed |= disk_pressure_.exchange(disk) != disk;
  changed |= pid_pressure_.exchange(pid) != pid;
  if (changed && hooks_.pressure_changed) hooks_.pressure_changed();

  // The thresholds that act: hard ones at once, soft ones after their grace period. Memory
  // goes before the others, as upstream orders them.
  const Observation* acting = nullptr;
  for (const Observation& o : met) {
    const Threshold& t = thresholds[o.index];
    if (t.soft && now - first_met_[o.index] < t.grace_period) continue;
    if (acting == nullptr ||
        (o.signal == kSignalMemoryAvailable && acting->signal != kSignalMemoryAvailable)) {
      acting = &o;
    }
  }
  if (acting == nullptr) return;
  const Threshold& threshold = thresholds[acting->index];

  std::vector<PodUsage> pods;
  for (const Json& pod : hooks_.active_pods()) {
    PodUsage u;
    u.pod = pod;
    std::string uid = str(member(pod, "metadata"), "uid");
    for (const stats::PodStats& ps : summary->pods) {
      if (ps.pod_ref.uid != uid) continue;
      if (ps.memory && ps.memory->working_set_bytes) {
        u.memory_working_set = static_cast<int64_t>(*ps.memory->working_set_bytes);
      }
      if (ps.ephemeral_storage && ps.ephemeral_storage->used_bytes) {
        u.ephemeral_usage = static_cast<int64_t>(*ps.ephemeral_storage->used_bytes);
      }
      if (ps.ephemeral_storage && ps.ephemeral_storage->inodes_used) {
        u.ephemeral_inodes = static_cast<int64_t>(*ps.ephemeral_storage->inodes_used);
      }
      if (ps.process_count) u.process_count = static_cast<int64_t>(*ps.process_count);
    }
    pods.push_back(std::move(u));
  }
  for (const PodUsage& candidate : rank_for_eviction(std::move(pods), acting->signal)) {
    const Json& victim = candidate.pod;
    if (pod_priority(victim) >= kSystemCriticalPriority) continue;
    int64_t grace = 0;
    if (threshold.soft) {
      const Json& own = member(member(victim, "spec"), "terminationGracePeriodSeconds");
      grace = own.is_number_integer() ? std::max<int64_t>(0, own.get<int64_t>())
                                      : kDefaultTerminationGracePeriodSeconds;
      if (options_.max_pod_grace_period_seconds >= 0) {
        grace = std::min(grace, options_.max_pod_grace_period_seconds);
      }
    }
    const Json& meta = member(victim, "metadata");
    SKIFF_LOG_WARN("kubelet: evicting pod {}/{} ({} threshold {}, grace {}s): {}",
                   str(meta, "namespace"), str(meta, "name"), threshold.soft ? "soft" : "hard",
                   threshold.signal, grace, acting->message);
    hooks_.evict(str(meta, "uid"), acting->message, grace);
    return;  // one pod per round
  }
}

}  // namespace skiff::kubelet
