#pragma once

// An in-memory ApiClient for unit tests of components: objects with resourceVersions, optimistic
// concurrency, generateName, label and field selectors, watches, finalizers and the pods/binding
// and status subresources. It records every write so tests can assert what a component did, and
// can be told to fail requests. It validates nothing and applies no defaults; strategic merge
// patches are applied as JSON merge patches, and apply patches are not supported.
//
// Thread-safety: every method is safe from any thread.

#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "client/api_client.h"

namespace skiff::client {

class FakeApiClient : public ApiClient {
 public:
  struct Action {
    std::string verb;      // create, update, patch, delete
    std::string resource;  // Resource::display_name(), e.g. "pods", "deployments.apps"
    std::string subresource;
    std::string ns;
    std::string name;
    Json object;  // the object written (create/update/patch result); empty for delete
  };

  FakeApiClient();
  ~FakeApiClient() override;

  Result<Json> get(const Resource& r, std::string_view ns, std::string_view name,
                   std::string_view subresource = {}) override;
  Result<Json> list(const Resource& r, std::string_view ns,
                    const ListOptions& options = {}) override;
  Result<Json> create(const Resource& r, std::string_view ns, const Json& object,
                      const WriteOptions& options = {}, std::string_view name = {},
                      std::string_view subresource = {}) override;
  Result<Json> update(const Resource& r, std::string_view ns, const Json& object,
                      const WriteOptions& options = {}, std::string_view subresource = {}) override;
  Result<Json> patch(const Resource& r, std::string_view ns, std::string_view name, PatchType type,
                     std::string_view body, const WriteOptions& options = {},
                     std::string_view subresource = {}) override;
  Result<Json> remove(const Resource& r, std::string_view ns, std::string_view name,
                      const DeleteOptions& options = {}) override;
  Result<std::unique_ptr<WatchStream>> watch(const Resource& r, std::string_view ns,
                                             const ListOptions& options = {}) override;

  // Test helpers -----------------------------------------------------------------------------
  // Stores `object` as is (plus uid, resourceVersion, creationTimestamp when absent), emitting a
  // watch event, without recording an action.
  Json seed(const Resource& r, Json object);
  // Every write so far, in order; clear_actions() forgets them.
  std::vector<Action> actions() const;
  std::vector<Action> actions(const std::string& verb, const std::string& resource) const;
  void clear_actions();
  // The next requests matching verb ("get", "list", "create", "update", "patch", "delete",
  // "watch", or "*") and resource display name ("*" = any) fail with `status`, `times` times.
  void fail(const std::string& verb, const std::string& resource, Status status, int times = 1);
  // Closes every open watch with a 410 ERROR event (as a compacted history does).
  void expire_watches();
  // Deleting a pod bound to a node with a grace period (the request's, else the pod's
  // terminationGracePeriodSeconds, default 30) only marks it (deletionTimestamp and
  // deletionGracePeriodSeconds) for its kubelet to finish, as the API server does; a delete with
  // grace 0 removes it. Off by default.
  void set_graceful_pod_deletion(bool enabled);
  int64_t resource_version() const;
  size_t count(const Resource& r) const;

 private:
  class FakeWatch;
  Status injected_failure(const std::string& verb, const Resource& r);
  void record(const std::string& verb, const Resource& r, std::string_view subresource,
              std::string_view ns, std::string_view name, const Json& object);
  // Stores and notifies; mu_ held.
  Json put_locked(const Resource& r, const std::string& key, Json object, WatchEventType type);
  void delete_locked(const Resource& r, const std::string& key);
  void notify_locked(const Resource& r, WatchEventType type, const Json& object);
  Result<Json> write_locked(const Resource& r, std::string_view ns, Json object,
                            std::string_view subresource, bool check_rv);

  mutable std::mutex mu_;
  int64_t rv_ = 1;                                            // guarded by mu_
  std::map<std::string, std::map<std::string, Json>> store_;  // resource → key → object
  bool graceful_pod_deletion_ = false;                        // guarded by mu_
  std::vector<Action> actions_;                               // guarded by mu_
  struct Failure {
    std::string verb, resource;
    Status status;
    int times;
  };
  std::vector<Failure> failures_;                 // guarded by mu_
  std::set<std::shared_ptr<FakeWatch>> watches_;  // guarded by mu_
  struct HistoryEntry {
    int64_t rv;
    std::string resource;
    WatchEventType type;
    Json object;
  };
  std::vector<HistoryEntry> history_;  // guarded by mu_: every change, for watches from an RV
  int64_t compacted_rv_ = 0;           // guarded by mu_: watches from below this get kCompacted
};

}  // namespace skiff::client
