#pragma once

// Pieces of the Job controller that are plain functions of objects and time, kept apart so they
// can be tested on their own: the well-known names of batch/v1, sets of completion indexes as
// status.completedIndexes writes them ("1,3-5"), a Job's finished state, a pod's completion
// index and finish time, the pod-failure back-off, and the order in which active pods are
// deleted first.
//
// Thread-safety: the free functions are pure; BackoffStore and FinalizerExpectations are safe
// from any thread.

#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "client/api_client.h"

namespace skiff::controllers::job {

using client::Json;

inline constexpr std::string_view kTrackingFinalizer = "batch.kubernetes.io/job-tracking";
inline constexpr std::string_view kCompletionIndexKey = "batch.kubernetes.io/job-completion-index";
inline constexpr std::string_view kJobNameLabel = "batch.kubernetes.io/job-name";
inline constexpr std::string_view kControllerUidLabel = "batch.kubernetes.io/controller-uid";
inline constexpr std::string_view kLegacyJobNameLabel = "job-name";
inline constexpr std::string_view kLegacyControllerUidLabel = "controller-uid";
inline constexpr std::string_view kJobControllerName = "kubernetes.io/job-controller";

// Pod-failure back-off before pods are created again: 10 s doubling, at most 6 minutes.
inline constexpr std::chrono::seconds kPodFailureBackoff{10};
inline constexpr std::chrono::seconds kMaxPodFailureBackoff{360};

// Completion indexes as ordered, disjoint, non-adjacent closed intervals.
class IndexSet {
 public:
  // Parses "1,3-5"; entries that are malformed or not below `completions` are skipped, as
  // upstream does when reading status it did not write itself.
  static IndexSet parse(std::string_view text, int completions);
  void add(int index);
  bool has(int index) const;
  int total() const;
  std::string to_string() const;
  bool operator==(const IndexSet& other) const { return intervals_ == other.intervals_; }

 private:
  std::vector<std::pair<int, int>> intervals_;
};

// Whether the Job has a Complete or Failed condition with status True, and which.
std::optional<std::string> finished_condition(const Json& job);
bool is_job_finished(const Json& job);
bool is_job_succeeded(const Json& job);
// The lastTransitionTime of the Complete/Failed condition, or -1.
int64_t job_finish_time(const Json& job);

// The pod's batch.kubernetes.io/job-completion-index annotation, or -1 when absent/invalid.
int completion_index(const Json& pod);
bool has_tracking_finalizer(const Json& pod);

// When a pod finished: the last container's finishedAt when every container terminated, else
// the Ready=False condition's lastTransitionTime, else deletionTimestamp minus the grace
// period, else creationTimestamp (upstream's order). Unix seconds.
int64_t pod_finish_time(const Json& pod);

// Back-off still to wait after `failures` consecutive pod failures, the last at
// `last_failure`: 10 s · 2^(failures-1), capped at 6 minutes, minus the time since.
std::chrono::seconds backoff_remaining(int failures, int64_t last_failure, int64_t now);

// The order in which active pods are deleted: true when `a` should go before `b` (not yet
// scheduled before scheduled, Pending before Running, not ready before ready, ready for less
// time first, more restarts first, newer first).
bool delete_before(const Json& a, const Json& b);

// Per Job: failures since the last success and when the last one happened, kept in memory as
// upstream does (a restarted controller starts without back-off).
class BackoffStore {
 public:
  struct Record {
    int failures_after_last_success = 0;
    std::optional<int64_t> last_failure_time;
  };
  // The record after counting newly finished pods (not stored until update()).
  Record next(const std::string& key, const std::vector<const Json*>& new_succeeded,
              const std::vector<const Json*>& new_failed) const;
  void update(const std::string& key, const Record& record);
  void remove(const std::string& key);

 private:
  mutable std::mutex mu_;
  std::unordered_map<std::string, Record> records_;  // guarded by mu_
};

// Per Job: the pod UIDs whose tracking finalizer the controller removed and has not yet seen
// removed in its cache (so a pod is not counted twice).
class FinalizerExpectations {
 public:
  void expect(const std::string& key, const std::vector<std::string>& uids);
  void observed(const std::string& key, const std::string& uid);
  std::set<std::string> expected(const std::string& key) const;
  void forget(const std::string& key);

 private:
  mutable std::mutex mu_;
  std::unordered_map<std::string, std::set<std::string>> uids_;  // guarded by mu_
};

}  // namespace skiff::controllers::job
