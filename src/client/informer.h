#pragma once

// Informers: a local cache of one resource kept current by list + watch, with event handlers
// and indexes (client-go's shared informer).
//
// The informer lists, then watches from the list's resourceVersion; when the watch ends it
// resumes from the last resourceVersion seen (bookmarks keep that fresh), and when the server
// answers 410 Gone (history compacted) or the watch fails it lists again and turns the difference
// into add/update/delete events, so handlers see every change of state (level, not every edge).
//
// Cached objects are shared and immutable: callers get shared_ptr<const Json> and never modify it;
// to change an object, copy it, edit the copy and write it through the ApiClient.
//
// Thread-safety: the read methods (get, list, by_index, has_synced, ...) are safe from any thread.
// add_handlers/add_index/set_transform must be called before start(). Handlers run on the
// informer's own thread, one at a time, in the order of changes; they must not block (enqueue a
// key and return).

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "client/api_client.h"

namespace skiff::client {

using ObjectPtr = std::shared_ptr<const Json>;

struct EventHandlers {
  std::function<void(const ObjectPtr& obj)> on_add;
  std::function<void(const ObjectPtr& old_obj, const ObjectPtr& new_obj)> on_update;
  // The last state the informer knew of the object.
  std::function<void(const ObjectPtr& obj)> on_delete;
};

// The values an object has for an index (e.g. a pod's spec.nodeName); may be empty.
using IndexFunc = std::function<std::vector<std::string>(const Json& obj)>;

struct InformerOptions {
  std::string ns;  // "" = all namespaces
  std::string label_selector;
  std::string field_selector;
  // When non-zero, on_update(obj, obj) is called for every cached object this often, so
  // controllers re-check state that no event announces.
  std::chrono::milliseconds resync_period{0};
  // Delay before listing again after a failure (doubles up to max).
  std::chrono::milliseconds retry_initial{100};
  std::chrono::milliseconds retry_max{5000};
};

class Informer {
 public:
  Informer(ApiClient& client, Resource resource, InformerOptions options = {});
  ~Informer();  // stops
  Informer(const Informer&) = delete;
  Informer& operator=(const Informer&) = delete;

  void add_handlers(EventHandlers handlers);
  void add_index(const std::string& name, IndexFunc func);
  // Applied to each object before it is cached (e.g. drop managedFields to save memory).
  void set_transform(std::function<void(Json& obj)> transform);

  void start();
  void stop();

  // True once the first list is in the cache and its add events were delivered.
  bool has_synced() const;
  bool wait_for_sync(std::chrono::milliseconds timeout) const;

  ObjectPtr get(const std::string& key) const;
  ObjectPtr get(std::string_view ns, std::string_view name) const;
  std::vector<ObjectPtr> list() const;
  std::vector<ObjectPtr> list(std::string_view ns) const;
  std::vector<ObjectPtr> by_index(const std::string& index, const std::string& value) const;
  size_t size() const;
  // The resourceVersion of the newest change applied.
  std::string resource_version() const;
  const Resource& resource() const { return resource_; }

 private:
  void run();
  bool list_and_replace();  // false on failure
  void watch_loop();
  void resync_loop();
  ObjectPtr make_object(Json&& obj) const;
  void apply_upsert(ObjectPtr obj);
  void apply_delete(const ObjectPtr& obj);
  void index_insert(const std::string& key, const Json& obj);  // mu_ held
  void index_remove(const std::string& key, const Json& obj);  // mu_ held
  bool sleep_for(std::chrono::milliseconds d);                 // false when stopping

  ApiClient& client_;
  const Resource resource_;
  const InformerOptions options_;
  std::vector<EventHandlers> handlers_;
  std::vector<std::pair<std::string, IndexFunc>> index_funcs_;
  std::function<void(Json&)> transform_;

  mutable std::mutex mu_;
  mutable std::condition_variable synced_cv_;
  std::unordered_map<std::string, ObjectPtr> items_;  // guarded by mu_
  // namespace → keys; guarded by mu_
  std::unordered_map<std::string, std::set<std::string>> by_namespace_;
  // index name → value → keys; guarded by mu_
  std::unordered_map<std::string, std::unordered_map<std::string, std::set<std::string>>> indexes_;
  std::string resource_version_;  // guarded by mu_
  bool synced_ = false;           // guarded by mu_

  // Serializes handler calls between the watch thread and the resync thread. Lock order:
  // handler_mu_ is never taken while holding mu_.
  std::mutex handler_mu_;

  std::mutex stop_mu_;
  std::condition_variable stop_cv_;
  std::atomic<bool> stopping_{false};
  std::unique_ptr<WatchStream> watch_;  // guarded by stop_mu_
  std::thread thread_;
  std::thread resync_thread_;
};

// One informer per resource, shared by the controllers of one process.
// Thread-safety: informer() and start() from the setup thread; the rest from any thread.
class InformerFactory {
 public:
  explicit InformerFactory(ApiClient& client, std::chrono::milliseconds resync_period = {});
  ~InformerFactory();
  // The informer for all namespaces of `r`; created on first use. Creating one after start()
  // starts it at once.
  Informer& informer(const Resource& r);
  void start();
  bool wait_for_sync(std::chrono::milliseconds timeout);
  void stop();
  ApiClient& client() { return client_; }

 private:
  ApiClient& client_;
  std::chrono::milliseconds resync_period_;
  std::mutex mu_;
  std::map<std::string, std::unique_ptr<Informer>> informers_;  // guarded by mu_
  bool started_ = false;                                        // guarded by mu_
};

// Drops metadata.managedFields (no component reads it; it is the largest part of many objects).
void strip_managed_fields(Json& obj);

}  // namespace skiff::client
