#pragma once

// Expectations of the workload controllers that must not act twice on a stale cache: per owner
// key, how many pod creations are still to be seen, and which pods' deletions (by pod key). A
// pod seen first with a deletionTimestamp and then gone counts once, because deletions are
// tracked by key (upstream's UID-tracking expectations). Records expire after 5 minutes, so an
// event that never arrives cannot wedge an owner.
//
// Thread-safety: every method is safe from any thread.

#include <chrono>
#include <mutex>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "base/time.h"
#include "controllers/owned_pod_events.h"

namespace skiff::controllers {

class PodExpectations {
 public:
  explicit PodExpectations(const Clock& clock) : clock_(clock) {}

  // Adds to what is pending for `owner` (call before the requests are sent: the cache may see
  // their results before the calls return).
  void expect(const std::string& owner, int creations,
              const std::vector<std::string>& deletion_keys = {});
  // A creation was seen in the cache, or a create request failed (no event will come).
  void creation_observed(const std::string& owner, int count = 1);
  // The pod was seen gone or being deleted, or the delete request failed.
  void deletion_observed(const std::string& owner, const std::string& pod_key);
  // Nothing is pending, or the record is older than the time-to-live.
  bool satisfied(const std::string& owner) const;
  void forget(const std::string& owner);

 private:
  struct Record {
    int creations = 0;
    std::set<std::string> deletions;
    std::chrono::system_clock::time_point at;
  };
  const Clock& clock_;
  mutable std::mutex mu_;
  std::unordered_map<std::string, Record> records_;  // guarded by mu_
};

// OwnedPodEvents options for owners of `kind` in API group `group` whose expectations
// `expectations` keeps (it must outlive the events' handlers).
OwnedPodEvents::Options owned_pod_events_options(std::string kind, std::string group,
                                                 PodExpectations& expectations);

}  // namespace skiff::controllers
