#include "controllers/statefulset/pod_expectations.h"

#include <algorithm>

namespace skiff::controllers {
namespace {

constexpr auto kExpectationsTtl = std::chrono::minutes(5);

}  // namespace

void PodExpectations::expect(const std::string& owner, int creations,
                             const std::vector<std::string>& deletion_keys) {
  std::lock_guard lock(mu_);
  Record& r = records_[owner];
  r.creations = std::max(0, r.creations) + creations;
  r.deletions.insert(deletion_keys.begin(), deletion_keys.end());
  r.at = clock_.now();
}

void PodExpectations::creation_observed(const std::string& owner, int count) {
  std::lock_guard lock(mu_);
  auto it = records_.find(owner);
  if (it == records_.end()) return;
  it->second.creations = std::max(0, it->second.creations - count);
}

void PodExpectations::deletion_observed(const std::string& owner, const std::string& pod_key) {
  std::lock_guard lock(mu_);
  auto it = records_.find(owner);
  if (it == records_.end()) return;
  it->second.deletions.erase(pod_key);
}

bool PodExpectations::satisfied(const std::string& owner) const {
  std::lock_guard lock(mu_);
  auto it = records_.find(owner);
  if (it == records_.end()) return true;
  const Record& r = it->second;
  if (r.creations <= 0 && r.deletions.empty()) return true;
  return clock_.now() - r.at > kExpectationsTtl;
}

void PodExpectations::forget(const std::string& owner) {
  std::lock_guard lock(mu_);
  records_.erase(owner);
}

OwnedPodEvents::Options owned_pod_events_options(std::string kind, std::string group,
                                                 PodExpectations& expectations) {
  PodExpectations* e = &expectations;
  return {.kind = std::move(kind),
          .group = std::move(group),
          .creation_observed = [e](const std::string& owner) { e->creation_observed(owner); },
          .deletion_observed =
              [e](const std::string& owner, const std::string& pod_key) {
                e->deletion_observed(owner, pod_key);
              },
          .forget = [e](const std::string& owner) { e->forget(owner); }};
}

}  // namespace skiff::controllers
