#pragma once

// The generic registry: CRUD, list and watch for every resource over the store, configured per
// resource with a Strategy (defaulting, validation, status rules), as upstream's
// genericregistry.Store is. No resource hand-writes its CRUD. Creates and updates run through
// the admission chain (admission.h): its mutating phase before the strategy prepares the
// object, its validating phase after the strategy validated it; what a validating plugin writes
// along (a quota's usage) commits in the object's own store transaction.
//
// With watch caches started (start_watch_caches), lists and watches are served from one
// WatchCache per resource prefix where upstream's cacher serves them, and from the store
// otherwise:
// - list, resourceVersion="0": the cache as it is (even with limit: pages carry continue
//   tokens at the cache's revision).
// - list, resourceVersion="" (consistent): the cache once it has caught up with the store's
//   current revision, which it is asked for; the store if that takes longer than the cache's
//   fresh_timeout.
// - list, resourceVersion=N (NotOlderThan): the cache once it is at N or later; else the store.
// - the store: resourceVersionMatch=Exact, limit with resourceVersion other than "0", and
//   continue tokens, except those at exactly the cache's current revision.
// - watch from N: the cache's event window, or 410 (ERROR event) when N is older than it;
//   initial events from the cache's objects ("" waits for the store's current revision first).
// A cache that is not ready, or cannot get fresh in time, hands the request to the store.
//
// Thread-safety: every method may be called concurrently.

#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "api/errors.h"
#include "api/schema.h"
#include "apiserver/admission.h"
#include "apiserver/request_info.h"
#include "apiserver/watch_cache.h"
#include "storage/store.h"

namespace skiff::apiserver {

// Per-resource behaviour. Every hook is optional.
struct Strategy {
  // Defaults and normalizes a new object (after generic metadata is set).
  std::function<void(nlohmann::json& obj)> prepare_for_create;
  // Carries over what an update may not change, given the stored object.
  std::function<void(nlohmann::json& obj, const nlohmann::json& old)> prepare_for_update;
  std::function<void(const nlohmann::json& obj, api::FieldErrors& errors)> validate;
  // Rules for new objects only (after validate).
  std::function<void(const nlohmann::json& obj, api::FieldErrors& errors)> validate_create;
  std::function<void(const nlohmann::json& obj, const nlohmann::json& old,
                     api::FieldErrors& errors)>
      validate_update;
  // Fields usable in field selectors besides metadata.name and metadata.namespace.
  std::vector<std::string> selectable_fields;
  // Reserves what the object holds beyond its own key (service IPs, node ports) right before it
  // is written, filling them into `obj`; `old` is null on create. An error aborts the write.
  std::function<std::optional<api::ApiError>(nlohmann::json& obj, const nlohmann::json* old)>
      reserve;
  // After a write attempt. Committed: releases what `old` held that `obj` (null when deleted)
  // does not. Not committed: releases what reserve() took for `obj` beyond `old`.
  std::function<void(const nlohmann::json* obj, const nlohmann::json* old, bool committed)> settle;
  // Whether PUT may create a missing object.
  bool allow_create_on_update = false;
  // Pods: deletion with a grace period marks the object and leaves removal to the kubelet.
  bool graceful_delete = false;
  // Namespaces, nodes, ...: the name rule (default: DNS-1123 subdomain).
  int name_rule = 0;
  // Conversion between the stored form and this resource's (when another resource's storage is
  // shared, e.g. events.k8s.io/v1 Events stored as core/v1 Events).
  std::function<void(nlohmann::json& obj)> from_storage;
  std::function<void(nlohmann::json& obj)> to_storage;
  // metadata.generation counts spec changes (workload controllers read it).
  bool tracks_generation = false;
  // Deletion of objects that wait for more than metadata.finalizers (namespaces wait for
  // spec.finalizers): before_delete may refuse a delete or mark the object (status.phase);
  // pending_finalizers keeps an object being deleted until it returns false.
  std::function<std::optional<api::ApiError>(nlohmann::json& obj)> before_delete;
  std::function<bool(const nlohmann::json& obj)> pending_finalizers;
  // Create keeps the status the client sent (nodes) instead of dropping it.
  bool status_on_create = false;
  // Objects expire this long after their last write (Events, --event-ttl), through store leases.
  int64_t ttl_seconds = 0;
};

// One table column: name, type, format, priority and how to compute a cell.
struct TableColumn {
  std::string name;
  std::string type;  // "string", "integer", "date", ...
  std::string format;
  int priority = 0;
  std::function<nlohmann::json(const nlohmann::json& obj)> cell;
};

class Registry {
 public:
  Registry(storage::Store& store, const api::Schema& schema);
  ~Registry();

  void set_strategy(const std::string& group, const std::string& resource, Strategy strategy);
  void set_table(const std::string& group, const std::string& resource,
                 std::vector<TableColumn> columns);
  // Appends an admission plugin (admission.h) to the chain every create and update runs
  // through, in the order added. Before serving.
  void add_admission(std::unique_ptr<AdmissionPlugin> plugin);

  // Serves one resource request; info.is_resource_request must be true.
  void handle(const RequestInfo& info, Request& request, Responder& responder);

  // For internal readers (subresources served outside the registry, such as pods/log): the
  // stored object as a GET returns it, nullopt when there is none.
  Result<std::optional<nlohmann::json>> read(const api::ResourceInfo& resource,
                                             const std::string& ns, const std::string& name);

  // For bootstrap and internal writers: creates the object (JSON) unless it exists.
  Status ensure(const api::ResourceInfo& resource, nlohmann::json object);

  // Starts one watch cache per resource prefix of the schema (after the strategies are set,
  // before serving); waits up to `wait` for them to load.
  void start_watch_caches(WatchCacheOptions options = {},
                          std::chrono::milliseconds wait = std::chrono::seconds(10));
  // The cache for /registry/<resource>/, or nullptr.
  WatchCache* watch_cache(const std::string& resource) const;
  // The objects under `key_prefix` (within one resource's prefix) as its watch cache holds them,
  // without waiting for the cache to catch up with the store; from the store when there is no
  // ready cache. For admission's lookups, which upstream serves from informers too.
  Result<std::vector<storage::KeyValuePtr>> cached_list(const std::string& key_prefix) const;

  // Stops watch sessions and watch caches (server shutdown).
  void shutdown();

  storage::Store& store() { return store_; }

 private:
  class WatchSession;
  class EventLineCache;
  struct Ctx;
  // Opaque pointer to the parsed DeleteOptions (defined in registry.cc).
  struct DeleteOptionsRef {
    const void* options;
  };

  static nlohmann::json to_scale(const api::ResourceInfo& res, const nlohmann::json& obj);
  // Namespace lifecycle admission: the namespace exists and is not terminating.
  std::optional<api::ApiError> admit_namespace(const api::ResourceInfo& res, const std::string& ns);
  // The admission chain's phases; the first refusal ends them.
  std::optional<api::ApiError> admit(const AdmissionRequest& request, nlohmann::json& obj);
  std::optional<api::ApiError> validate_admission(const AdmissionRequest& request,
                                                  const nlohmann::json& obj,
                                                  AdmissionWrites& writes);
  // Sets generated metadata, defaults, admits, validates and stores; `obj` becomes the stored
  // object.
  std::optional<api::ApiError> create_object(const api::ResourceInfo& res, const Strategy& st,
                                             nlohmann::json& obj, bool dry_run);
  // Writes `next` over `old` (an update of subresource `sub`); *conflict when `old` is stale.
  std::optional<api::ApiError> write_update(const api::ResourceInfo& res, const Strategy& st,
                                            const std::string& sub, const storage::KeyValue& old,
                                            nlohmann::json next, bool dry_run, nlohmann::json* out,
                                            bool* conflict);
  std::optional<api::ApiError> delete_object(const api::ResourceInfo& res, const Strategy& st,
                                             const std::string& key, const DeleteOptionsRef& opts,
                                             nlohmann::json* out);

  Response get(Ctx& c);
  Response list(Ctx& c);
  void watch(Ctx& c, Responder& responder);
  WatchCache* cache_for(const api::ResourceInfo& r) const;
  Response create(Ctx& c);
  Response update(Ctx& c);
  Response patch(Ctx& c);
  Response remove(Ctx& c);
  Response remove_collection(Ctx& c);
  Response bind_pod(Ctx& c);
  Response evict_pod(Ctx& c);

  const Strategy& strategy(const api::ResourceInfo& r) const;
  const std::vector<TableColumn>& table(const api::ResourceInfo& r) const;
  void ticker_loop();

  // A store lease for objects with a TTL. Leases are shared by writes within a minute of each
  // other, as upstream's lease manager does, so events do not cost a lease each.
  Result<int64_t> lease_for(int64_t ttl_seconds);

  storage::Store& store_;
  const api::Schema& schema_;
  std::mutex lease_mu_;
  int64_t lease_id_ = 0;                                  // guarded by lease_mu_
  std::chrono::steady_clock::time_point lease_expiry_;    // guarded by lease_mu_
  std::unordered_map<std::string, Strategy> strategies_;  // "group/resource"; set before serving
  std::unordered_map<std::string, std::vector<TableColumn>> tables_;
  std::vector<std::unique_ptr<AdmissionPlugin>> admission_;  // set before serving
  Strategy default_strategy_;
  std::vector<TableColumn> default_table_;

  // By prefix ("/registry/pods/"); set before serving.
  std::unordered_map<std::string, std::unique_ptr<WatchCache>> caches_;
  std::unique_ptr<EventLineCache> line_cache_;
  std::mutex sessions_mu_;
  std::unordered_set<std::shared_ptr<WatchSession>> sessions_;  // guarded by sessions_mu_
  bool stopping_ = false;                                       // guarded by sessions_mu_
  std::condition_variable ticker_cv_;
  std::thread ticker_;
};

}  // namespace skiff::apiserver
