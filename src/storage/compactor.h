#pragma once

// Compactor keeps a store's history to a retained window: it samples the current revision
// periodically and compacts to the newest sample that is older than the window, as the
// Kubernetes API server does for etcd.
//
// Thread-safety: start/stop from one thread; the work happens on the compactor's own thread.

#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <utility>

#include "storage/store.h"

namespace skiff::storage {

class Compactor {
 public:
  // `store` must outlive the compactor. A zero window disables it.
  Compactor(Store& store, std::chrono::milliseconds window);
  ~Compactor();

  Compactor(const Compactor&) = delete;
  Compactor& operator=(const Compactor&) = delete;

  void start();
  void stop();

 private:
  void run();

  Store& store_;
  const std::chrono::milliseconds window_;
  const std::chrono::milliseconds tick_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;  // guarded by mu_
  std::thread thread_;
  std::deque<std::pair<std::chrono::steady_clock::time_point, int64_t>> samples_;  // run() only
  int64_t last_compacted_ = 0;                                                     // run() only
};

}  // namespace skiff::storage
