#pragma once

// What every controller shares: the context it runs in (the API client, the process's shared
// informers, a clock, an event recorder factory, tunable periods), the worker loop that drains
// its workqueue into reconcile(key), and a ticker for periodic passes.
//
// A controller's event handlers only enqueue keys; reconcile(key) reads the informer caches,
// compares desired with actual state, writes through the API, and returns an error to be retried
// with back-off (ARCHITECTURE.md §6).
//
// Thread-safety: ControllerContext members are thread-safe. A Controller's start()/stop() are
// called from one thread; reconcile() runs on several worker threads but never for the same key
// at once (the workqueue guarantees it).

#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "base/status.h"
#include "base/time.h"
#include "client/api_client.h"
#include "client/event_recorder.h"
#include "client/informer.h"
#include "client/workqueue.h"

namespace skiff::controllers {

using client::Json;
using client::ObjectPtr;

// Periods and limits, upstream's defaults; tests shorten them.
struct ControllerOptions {
  // Node lifecycle.
  std::chrono::milliseconds node_monitor_period{5000};
  std::chrono::milliseconds node_monitor_grace_period{40000};
  // Garbage collector / namespace deletion re-check period.
  std::chrono::milliseconds namespace_sync_period{300000};
  // Resource quota full recalculation.
  std::chrono::milliseconds resource_quota_sync_period{300000};
  // Pod garbage collection: how often, how many terminated pods to keep (0: no limit), and how
  // long a node must stay absent before its pods are deleted.
  std::chrono::milliseconds pod_gc_period{20000};
  int64_t terminated_pod_gc_threshold = 12500;
  std::chrono::milliseconds pod_gc_orphan_quarantine{40000};
  // Workers per controller.
  int workers = 5;
};

struct ControllerContext {
  client::ApiClient& api;
  client::InformerFactory& informers;
  const Clock& clock;
  ControllerOptions options;
  // Creates an event recorder whose source.component is the given name.
  std::function<std::unique_ptr<client::EventRecorder>(const std::string& component)> recorder;
};

class Controller {
 public:
  virtual ~Controller() = default;
  virtual std::string_view name() const = 0;
  // Starts the workers; informers are started by the caller after every controller was built
  // (so handlers are registered first), and caches may still be syncing.
  virtual void start() = 0;
  // Shuts the queue down and joins the workers.
  virtual void stop() = 0;
};

// N threads draining a workqueue into a reconcile function: success forgets the key's back-off,
// an error re-queues it rate-limited. Waits for `synced` before the first reconcile so no
// controller acts on a cache that is still filling.
class QueueWorkers {
 public:
  using Reconcile = std::function<Status(const std::string& key)>;
  QueueWorkers(std::string name, client::WorkQueue& queue, Reconcile reconcile,
               std::function<bool()> synced);
  ~QueueWorkers();
  void start(int workers);
  // Shuts the queue down and joins.
  void stop();

 private:
  void loop();

  const std::string name_;
  client::WorkQueue& queue_;
  const Reconcile reconcile_;
  const std::function<bool()> synced_;
  std::vector<std::thread> threads_;
};

// Calls `tick` every `period` (counted from the end of the previous tick; the first one period
// after start()) on a thread of its own, from start() until stop(). stop() wakes the thread and
// waits for a tick under way to finish; start() after stop() starts again.
// Thread-safety: start()/stop() from one thread; `tick` runs on the ticker's thread only.
class Ticker {
 public:
  Ticker(std::chrono::milliseconds period, std::function<void()> tick);
  ~Ticker();  // stop()
  Ticker(const Ticker&) = delete;
  Ticker& operator=(const Ticker&) = delete;

  void start();
  void stop();

 private:
  void run();

  const std::chrono::milliseconds period_;
  const std::function<void()> tick_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;  // guarded by mu_
  std::thread thread_;
};

// Waits until every informer has synced or the queue shuts down; true when synced.
bool wait_for_caches(client::WorkQueue& queue, const std::vector<client::Informer*>& informers);

}  // namespace skiff::controllers
