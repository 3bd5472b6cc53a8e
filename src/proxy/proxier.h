#pragma once

// The proxy's control loop: informers on Services and EndpointSlices mark the Services they
// touch as changed; one sync thread turns the changed Services into ServicePorts and hands them
// to the backend (one transaction per sync), then flushes the UDP conntrack entries that would
// keep sending packets to endpoints that went away.
//
// Thread-safety: start()/stop() from one thread; informer handlers and the sync thread share the
// changed set under mu_; stats() from any thread.

#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "client/informer.h"
#include "proxy/backend.h"

namespace skiff::proxy {

struct ProxierOptions {
  std::string node_name;  // endpoints on this node count as local
  // Pause after a change before syncing, so a burst of changes makes one transaction.
  std::chrono::milliseconds min_sync_period{20};
  // How often every Service is checked again even without changes (a cheap diff when nothing
  // changed; it also repairs rules after a failed sync).
  std::chrono::milliseconds sync_period{30000};
  std::chrono::milliseconds retry_period{1000};
};

struct SyncStats {
  uint64_t syncs = 0;
  uint64_t failures = 0;
  std::chrono::microseconds last_duration{0};
  size_t last_changed = 0;
  std::string last_error;
};

// Runs `conntrack` with these arguments (deleting entries); replaced in tests.
using ConntrackRunner = std::function<void(const std::vector<std::string>& args)>;
ConntrackRunner make_conntrack_runner();

class Proxier {
 public:
  Proxier(client::ApiClient& api, std::unique_ptr<Backend> backend, ProxierOptions options,
          ConntrackRunner conntrack);
  ~Proxier();
  Proxier(const Proxier&) = delete;
  Proxier& operator=(const Proxier&) = delete;

  void start();
  void stop();
  bool wait_for_sync(std::chrono::milliseconds timeout);
  SyncStats stats() const;

 private:
  void mark(const std::string& key);
  void run();
  void sync_once(std::set<std::string> changed, bool full);
  void flush_stale_udp(const std::vector<ServicePort>& before,
                       const std::vector<ServicePort>& after);

  const ProxierOptions options_;
  std::unique_ptr<Backend> backend_;
  ConntrackRunner conntrack_;
  client::Informer services_;
  client::Informer slices_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::set<std::string> changed_;  // guarded by mu_
  bool stopping_ = false;          // guarded by mu_
  bool first_synced_ = false;      // guarded by mu_
  SyncStats stats_;                // guarded by mu_
  std::condition_variable synced_cv_;

  ProxyState state_;  // only the sync thread
  bool need_full_ = true;
  std::thread thread_;
};

}  // namespace skiff::proxy
