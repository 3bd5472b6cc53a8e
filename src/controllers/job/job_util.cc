#include "controllers/job/job_util.h"

#include <algorithm>
#include <cctype>

#include "base/time.h"
#include "controllers/controller_utils.h"
#include "controllers/json_fields.h"

namespace skiff::controllers::job {
namespace {

std::optional<int> parse_non_negative(std::string_view s) {
  if (s.empty() || s.size() > 9) return std::nullopt;
  int v = 0;
  for (char c : s) {
    if (!std::isdigit(static_cast<unsigned char>(c))) return std::nullopt;
    v = v * 10 + (c - '0');
  }
  return v;
}

std::string string_at(const Json& obj, std::string_view a, std::string_view b) {
  const Json& v = member(member(obj, a), b);
  return v.is_string() ? v.get<std::string>() : "";
}

// Pending (and anything not yet reported) < Unknown < Running.
int phase_ordinal(const std::string& phase) {
  if (phase == "Unknown") return 1;
  if (phase == "Running") return 2;
  return 0;
}

int64_t ready_since(const Json& pod) {
  const Json* c = find_condition(member(pod, "status"), "Ready");
  return c ? parse_rfc3339(c->value("lastTransitionTime", "")) : -1;
}

int max_restarts(const Json& pod) {
  int m = 0;
  const Json& statuses = member(member(pod, "status"), "containerStatuses");
  if (!statuses.is_array()) return 0;
  for (const auto& s : statuses) {
    const Json& r = member(s, "restartCount");
    if (r.is_number_integer()) m = std::max(m, r.get<int>());
  }
  return m;
}

// `a` is after `b`, a missing time counting as the latest.
bool after_or_zero(int64_t a, int64_t b) {
  if (a < 0 || b < 0) return a < 0;
  return a > b;
}

}  // namespace

IndexSet IndexSet::parse(std::string_view text, int completions) {
  IndexSet out;
  if (text.empty()) return out;
  size_t start = 0;
  while (start <= text.size()) {
    size_t end = text.find(',', start);
    if (end == std::string_view::npos) end = text.size();
    std::string_view item = text.substr(start, end - start);
    start = end + 1;
    size_t dash = item.find('-');
    std::optional<int> first = parse_non_negative(item.substr(0, dash));
    std::optional<int> last =
        dash == std::string_view::npos ? first : parse_non_negative(item.substr(dash + 1));
    if (!first || !last || *last < *first || *first >= completions) continue;
    for (int i = *first; i <= std::min(*last, completions - 1); ++i) out.add(i);
  }
  return out;
}

void IndexSet::add(int index) {
  auto it = std::lower_bound(
      intervals_.begin(), intervals_.end(), index,
      [](const std::pair<int, int>& iv, int v) { return iv.second < v; });  // first with last >= v
  if (it != intervals_.end() && it->first <= index) return;                 // already in
  bool joins_next = it != intervals_.end() && it->first == index + 1;
  bool joins_prev = it != intervals_.begin() && std::prev(it)->second == index - 1;
  if (joins_prev && joins_next) {
    std::prev(it)->second = it->second;
    intervals_.erase(it);
  } else if (joins_prev) {
    std::prev(it)->second = index;
  } else if (joins_next) {
    it->first = index;
  } else {
    intervals_.insert(it, {index, index});
  }
}

bool IndexSet::has(int index) const {
  auto it = std::lower_bound(intervals_.begin(), intervals_.end(), index,
                             [](const std::pair<int, int>& iv, int v) { return iv.second < v; });
  return it != intervals_.end() && it->first <= index;
}

int IndexSet::total() const {
  int n = 0;
  for (const auto& [a, b] : intervals_) n += b - a + 1;
  return n;
}

std::string IndexSet::to_string() const {
  std::string out;
  for (const auto& [a, b] : intervals_) {
    if (!out.empty()) out += ',';
    out += std::to_string(a);
    if (b > a) out += (b == a + 1 ? "," : "-") + std::to_string(b);
  }
  return out;
}

std::optional<std::string> finished_condition(const Json& job) {
  const Json& conds = member(member(job, "status"), "conditions");
  if (!conds.is_array()) return std::nullopt;
  for (const auto& c : conds) {
    std::string type = c.value("type", "");
    if ((type == "Complete" || type == "Failed") && c.value("status", "") == "True") return type;
  }
  return std::nullopt;
}

bool is_job_finished(const Json& job) {
  return finished_condition(job).has_value();
}

bool is_job_succeeded(const Json& job) {
  auto c = finished_condition(job);
  return c && *c == "Complete";
}

int64_t job_finish_time(const Json& job) {
  const Json& conds = member(member(job, "status"), "conditions");
  if (!conds.is_array()) return -1;
  for (const auto& c : conds) {
    std::string type = c.value("type", "");
    if ((type == "Complete" || type == "Failed") && c.value("status", "") == "True") {
      return parse_rfc3339(c.value("lastTransitionTime", ""));
    }
  }
  return -1;
}

int completion_index(const Json& pod) {
  const Json& v = member(member(member(pod, "metadata"), "annotations"), kCompletionIndexKey);
  if (!v.is_string()) return -1;
  auto parsed = parse_non_negative(v.get<std::string>());
  return parsed ? *parsed : -1;
}

bool has_tracking_finalizer(const Json& pod) {
  const Json& f = member(member(pod, "metadata"), "finalizers");
  if (!f.is_array()) return false;
  return std::any_of(f.begin(), f.end(), [](const Json& v) {
    return v.is_string() && v.get_ref<const std::string&>() == kTrackingFinalizer;
  });
}

int64_t pod_finish_time(const Json& pod) {
  const Json& status = member(pod, "status");
  const Json& statuses = member(status, "containerStatuses");
  if (statuses.is_array() && !statuses.empty()) {
    int64_t latest = -1;
    bool all = true;
    for (const auto& s : statuses) {
      const Json& terminated = member(member(s, "state"), "terminated");
      int64_t at = parse_rfc3339(terminated.is_object() ? terminated.value("finishedAt", "") : "");
      if (at < 0) {
        all = false;
        break;
      }
      latest = std::max(latest, at);
    }
    if (all) return latest;
  }
  if (const Json* ready = find_condition(status, "Ready");
      ready && ready->value("status", "") == "False") {
    int64_t at = parse_rfc3339(ready->value("lastTransitionTime", ""));
    if (at >= 0) return at;
  }
  std::string deletion = string_at(pod, "metadata", "deletionTimestamp");
  if (!deletion.empty()) {
    int64_t at = parse_rfc3339(deletion);
    const Json& grace = member(member(pod, "metadata"), "deletionGracePeriodSeconds");
    if (at >= 0) return at - (grace.is_number_integer() ? grace.get<int64_t>() : 0);
  }
  return parse_rfc3339(string_at(pod, "metadata", "creationTimestamp"));
}

std::chrono::seconds backoff_remaining(int failures, int64_t last_failure, int64_t now) {
  if (failures <= 0) return std::chrono::seconds(0);
  std::chrono::seconds backoff = kPodFailureBackoff;
  for (int i = 1; i < failures; ++i) {
    backoff *= 2;
    if (backoff >= kMaxPodFailureBackoff) {
      backoff = kMaxPodFailureBackoff;
      break;
    }
  }
  std::chrono::seconds elapsed(now - last_failure);
  if (backoff < elapsed) return std::chrono::seconds(0);
  return backoff - elapsed;
}

bool delete_before(const Json& a, const Json& b) {
  std::string node_a = string_at(a, "spec", "nodeName");
  std::string node_b = string_at(b, "spec", "nodeName");
  if (node_a != node_b && (node_a.empty() || node_b.empty())) return node_a.empty();
  int pa = phase_ordinal(pod_phase(a));
  int pb = phase_ordinal(pod_phase(b));
  if (pa != pb) return pa < pb;
  bool ra = is_pod_ready(a);
  bool rb = is_pod_ready(b);
  if (ra != rb) return !ra;
  if (ra && rb) {
    int64_t ta = ready_since(a);
    int64_t tb = ready_since(b);
    if (ta != tb) return after_or_zero(ta, tb);
  }
  int xa = max_restarts(a);
  int xb = max_restarts(b);
  if (xa != xb) return xa > xb;
  int64_t ca = parse_rfc3339(string_at(a, "metadata", "creationTimestamp"));
  int64_t cb = parse_rfc3339(string_at(b, "metadata", "creationTimestamp"));
  if (ca != cb) return after_or_zero(ca, cb);
  return false;
}

BackoffStore::Record BackoffStore::next(const std::string& key,
                                        const std::vector<const Json*>& new_succeeded,
                                        const std::vector<const Json*>& new_failed) const {
  Record record;
  {
    std::lock_guard lock(mu_);
    if (auto it = records_.find(key); it != records_.end()) record = it->second;
  }
  if (new_failed.empty() && new_succeeded.empty()) return record;
  std::vector<int64_t> failed_times;
  for (const Json* p : new_failed) failed_times.push_back(pod_finish_time(*p));
  std::sort(failed_times.begin(), failed_times.end());
  if (new_succeeded.empty()) {
    record.failures_after_last_success += static_cast<int>(failed_times.size());
    record.last_failure_time = failed_times.back();
    return record;
  }
  int64_t last_success = -1;
  for (const Json* p : new_succeeded) last_success = std::max(last_success, pod_finish_time(*p));
  record.failures_after_last_success = 0;
  record.last_failure_time.reset();
  for (auto it = failed_times.rbegin(); it != failed_times.rend(); ++it) {
    if (*it <= last_success) break;
    if (!record.last_failure_time) record.last_failure_time = *it;
    ++record.failures_after_last_success;
  }
  return record;
}

void BackoffStore::update(const std::string& key, const Record& record) {
  std::lock_guard lock(mu_);
  records_[key] = record;
}

void BackoffStore::remove(const std::string& key) {
  std::lock_guard lock(mu_);
  records_.erase(key);
}

void FinalizerExpectations::expect(const std::string& key, const std::vector<std::string>& uids) {
  std::lock_guard lock(mu_);
  uids_[key].insert(uids.begin(), uids.end());
}

void FinalizerExpectations::observed(const std::string& key, const std::string& uid) {
  std::lock_guard lock(mu_);
  auto it = uids_.find(key);
  if (it == uids_.end()) return;
  it->second.erase(uid);
  if (it->second.empty()) uids_.erase(it);
}

std::set<std::string> FinalizerExpectations::expected(const std::string& key) const {
  std::lock_guard lock(mu_);
  auto it = uids_.find(key);
  return it == uids_.end() ? std::set<std::string>{} : it->second;
}

void FinalizerExpectations::forget(const std::string& key) {
  std::lock_guard lock(mu_);
  uids_.erase(key);
}

}  // namespace skiff::controllers::job
