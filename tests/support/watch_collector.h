#pragma once

// A blocking consumer of a Store watch, for tests and benchmarks: it waits on the watch's notify
// callback and polls the events into a list.

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <vector>

#include "base/status.h"
#include "storage/store.h"

namespace skiff::testing {

class WatchCollector {
 public:
  static Result<std::unique_ptr<WatchCollector>> start(storage::Store& store,
                                                       storage::WatchOptions options);
  ~WatchCollector();

  // Waits until at least n events (kProgress included) have been collected in total, the watch
  // ended, or the timeout passed; returns everything collected so far.
  std::vector<storage::Event> wait_for(size_t n, std::chrono::milliseconds timeout);
  // Waits until the watch ends or the timeout passes; returns its end status (OK if still live).
  Status wait_end(std::chrono::milliseconds timeout);
  // Every event collected so far.
  std::vector<storage::Event> events();
  storage::Watch& watch() { return *watch_; }

 private:
  WatchCollector() = default;
  void drain_locked();

  std::mutex mu_;
  std::condition_variable cv_;
  bool signalled_ = false;  // guarded by mu_
  std::unique_ptr<storage::Watch> watch_;
  std::vector<storage::Event> events_;  // guarded by mu_
  Status end_;                          // guarded by mu_
  bool ended_ = false;                  // guarded by mu_
};

}  // namespace skiff::testing
