#pragma once

// The API client every component uses: typed only by resource, objects as JSON.
//
// ApiClient is an interface so components can be tested against FakeApiClient (fake_api_client.h)
// and run against the real API server through HttpApiClient (http_client.h).
//
// Thread-safety: every ApiClient implementation is safe to call from any number of threads at
// once. A WatchStream is used by one thread at a time, except cancel(), which any thread may call.

#include <chrono>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "base/status.h"

namespace skiff::client {

using Json = nlohmann::json;

// Which resource a request is about: group "" is the core group.
struct Resource {
  std::string group;     // "", "apps", "batch", "coordination.k8s.io", ...
  std::string version;   // "v1"
  std::string resource;  // plural: "pods"
  std::string kind;      // "Pod"
  bool namespaced = true;

  // "v1" or "apps/v1": what objects carry as apiVersion.
  std::string api_version() const { return group.empty() ? version : group + "/" + version; }
  // The URL path of the collection: /api/v1/namespaces/NS/pods or /apis/apps/v1/deployments.
  // An empty `ns` for a namespaced resource means all namespaces.
  std::string collection_path(std::string_view ns) const;
  // The URL path of one object, plus "/subresource" when given.
  std::string object_path(std::string_view ns, std::string_view name,
                          std::string_view subresource = {}) const;
  // "pods" or "deployments.apps", as logs and error messages name resources.
  std::string display_name() const;
};

// The resources skiff's components use.
namespace resources {
extern const Resource kPods;
extern const Resource kNodes;
extern const Resource kNamespaces;
extern const Resource kServices;
extern const Resource kEndpoints;
extern const Resource kEvents;
extern const Resource kConfigMaps;
extern const Resource kSecrets;
extern const Resource kServiceAccounts;
extern const Resource kResourceQuotas;
extern const Resource kLimitRanges;
extern const Resource kReplicationControllers;
extern const Resource kPersistentVolumeClaims;
extern const Resource kDeployments;
extern const Resource kReplicaSets;
extern const Resource kStatefulSets;
extern const Resource kDaemonSets;
extern const Resource kControllerRevisions;
extern const Resource kJobs;
extern const Resource kCronJobs;
extern const Resource kLeases;
extern const Resource kEndpointSlices;
extern const Resource kPriorityClasses;
}  // namespace resources

struct ListOptions {
  std::string label_selector;
  std::string field_selector;
  std::string resource_version;  // "" = most recent; "0" = any (served from cache upstream)
  int64_t limit = 0;             // 0 = no limit
  std::string continue_token;
  // Watch only:
  bool allow_watch_bookmarks = false;
  int64_t timeout_seconds = 0;  // 0 = the server's default
};

enum class PatchType : uint8_t { kJson, kMerge, kStrategicMerge, kApply };

struct WriteOptions {
  std::string field_manager;  // "" = the client's default
  bool dry_run = false;
  bool force = false;  // server-side apply only
};

struct DeleteOptions {
  std::optional<int64_t> grace_period_seconds;
  std::string propagation_policy;  // "", "Orphan", "Background", "Foreground"
  // Preconditions: delete only when the object still has this uid / resourceVersion.
  std::string precondition_uid;
  std::string precondition_resource_version;
};

enum class WatchEventType : uint8_t { kAdded, kModified, kDeleted, kBookmark, kError };

struct WatchEvent {
  WatchEventType type = WatchEventType::kAdded;
  Json object;  // the object; for kError a Status object
};

class WatchStream {
 public:
  virtual ~WatchStream() = default;
  // Blocks until the next event, the end of the stream, an error or cancel(). The end of the
  // stream (the server closed it, e.g. after timeoutSeconds) is kUnavailable; cancel() makes it
  // return kCancelled. An ERROR event from the server is returned as an event (type kError).
  virtual Result<WatchEvent> next() = 0;
  // Makes a blocked or future next() return kCancelled. Safe from any thread.
  virtual void cancel() = 0;
};

// API errors map to status codes: 400 → kInvalidArgument, 401 → kUnauthenticated,
// 403 → kPermissionDenied, 404 → kNotFound, 409 AlreadyExists → kAlreadyExists, 409 Conflict →
// kAborted, 410 → kCompacted, 422 → kInvalidArgument, 429/503 → kUnavailable, 5xx → kInternal,
// transport failures → kUnavailable. The message is the Status object's message.
class ApiClient {
 public:
  virtual ~ApiClient() = default;

  virtual Result<Json> get(const Resource& r, std::string_view ns, std::string_view name,
                           std::string_view subresource = {}) = 0;
  // Returns the List object (items, metadata.resourceVersion, metadata.continue).
  virtual Result<Json> list(const Resource& r, std::string_view ns,
                            const ListOptions& options = {}) = 0;
  // POST to the collection, or to NAME/SUBRESOURCE when `name` is given (binding, eviction).
  virtual Result<Json> create(const Resource& r, std::string_view ns, const Json& object,
                              const WriteOptions& options = {}, std::string_view name = {},
                              std::string_view subresource = {}) = 0;
  // PUT; the object carries metadata.resourceVersion for optimistic concurrency.
  virtual Result<Json> update(const Resource& r, std::string_view ns, const Json& object,
                              const WriteOptions& options = {},
                              std::string_view subresource = {}) = 0;
  virtual Result<Json> patch(const Resource& r, std::string_view ns, std::string_view name,
                             PatchType type, std::string_view body,
                             const WriteOptions& options = {},
                             std::string_view subresource = {}) = 0;
  // Returns the object as the server answers (it may still exist, with a deletionTimestamp).
  virtual Result<Json> remove(const Resource& r, std::string_view ns, std::string_view name,
                              const DeleteOptions& options = {}) = 0;
  virtual Result<std::unique_ptr<WatchStream>> watch(const Resource& r, std::string_view ns,
                                                     const ListOptions& options = {}) = 0;
};

// Small helpers for objects as JSON.
std::string namespace_of(const Json& obj);
std::string name_of(const Json& obj);
// "ns/name", or "name" for cluster-scoped objects: the key informers and workqueues use.
std::string key_of(const Json& obj);
std::string key_of(std::string_view ns, std::string_view name);
// Splits a key into namespace ("" for cluster-scoped) and name.
std::pair<std::string, std::string> split_key(std::string_view key);
std::string uid_of(const Json& obj);
std::string resource_version_of(const Json& obj);
// The controller ownerReference (controller: true), or nullptr.
const Json* controller_of(const Json& obj);

}  // namespace skiff::client
