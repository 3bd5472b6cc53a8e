#pragma once

// Records core/v1 Events about objects, as client-go's event recorder does, so `kubectl describe`
// tells what a component did. Events are written in the background (a full buffer drops new
// events rather than blocking the caller); repeats of the same event for the same object within
// the cache update the existing Event's count and lastTimestamp instead of creating another.
//
// Thread-safety: event() is safe from any thread.

#include <condition_variable>
#include <deque>
#include <list>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "base/time.h"
#include "client/api_client.h"

namespace skiff::client {

class EventRecorder {
 public:
  // `component` is source.component (e.g. "default-scheduler", "replicaset-controller");
  // `host` is source.host (kubelets set their node name).
  EventRecorder(ApiClient& client, std::string component, std::string host = "", int workers = 2,
                const Clock& clock = SystemClock::instance());
  ~EventRecorder();  // writes what is queued, then stops

  // `type` is "Normal" or "Warning". `involved` is the object (kind/apiVersion may be absent;
  // pass them via `kind`/`api_version` then).
  void event(const Json& involved, std::string_view type, std::string_view reason,
             std::string message, std::string_view kind = {}, std::string_view api_version = {});
  // The same from `host` instead of the recorder's (one process playing many nodes).
  void event_from(std::string_view host, const Json& involved, std::string_view type,
                  std::string_view reason, std::string message);

  // Blocks until every queued event has been written (tests).
  void flush();

 private:
  struct Pending {
    Json involved_ref;
    std::string type, reason, message;
    std::string host;  // empty: host_
  };
  void enqueue(const Json& involved, std::string_view type, std::string_view reason,
               std::string message, std::string_view kind, std::string_view api_version,
               std::string_view host);
  void worker();
  void write(const Pending& p);

  ApiClient& client_;
  const std::string component_;
  const std::string host_;
  const Clock& clock_;

  std::mutex mu_;
  std::condition_variable cv_;
  std::condition_variable idle_cv_;
  std::deque<Pending> queue_;  // guarded by mu_
  int busy_ = 0;               // guarded by mu_
  bool stopping_ = false;      // guarded by mu_
  // Aggregation: event key → (namespace, name, count) of the Event written for it; LRU bounded.
  struct Seen {
    std::string ns, name;
    int64_t count = 0;
    std::string first_timestamp;
    std::list<std::string>::iterator lru;
  };
  std::unordered_map<std::string, Seen> seen_;  // guarded by mu_
  std::list<std::string> lru_;                  // guarded by mu_
  std::vector<std::thread> threads_;
};

}  // namespace skiff::client
