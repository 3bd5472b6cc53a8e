#pragma once

// A work queue of keys as controllers use it (client-go's rate-limited workqueue):
// - a key added many times before a worker takes it is processed once (de-duplication);
// - a key is never handed to two workers at once: re-added while in process, it is queued again
//   when the worker calls done();
// - add_after() delays a key; add_rate_limited() delays it by its own exponential back-off
//   (5 ms doubling to 1000 s by default), which forget() resets.
//
// Thread-safety: every method is safe from any thread.

#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>

namespace skiff::client {

class WorkQueue {
 public:
  using Duration = std::chrono::steady_clock::duration;

  explicit WorkQueue(Duration base_delay = std::chrono::milliseconds(5),
                     Duration max_delay = std::chrono::seconds(1000));
  ~WorkQueue();
  WorkQueue(const WorkQueue&) = delete;
  WorkQueue& operator=(const WorkQueue&) = delete;

  void add(const std::string& key);
  void add_after(const std::string& key, Duration delay);
  void add_rate_limited(const std::string& key);
  // Resets the key's back-off (call after a successful reconcile).
  void forget(const std::string& key);
  int retries(const std::string& key) const;

  // Blocks for the next key; nullopt once shut down (after which nothing more is handed out).
  std::optional<std::string> get();
  // Marks the key processed; if it was added again meanwhile it is queued now.
  void done(const std::string& key);

  void shut_down();
  bool shutting_down() const;
  // Keys waiting (not counting delayed keys or keys in process).
  size_t size() const;

 private:
  void add_locked(const std::string& key);
  void delay_loop();

  const Duration base_delay_;
  const Duration max_delay_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::condition_variable delay_cv_;
  std::deque<std::string> queue_;               // guarded by mu_
  std::unordered_set<std::string> dirty_;       // guarded by mu_: queued or to re-queue
  std::unordered_set<std::string> processing_;  // guarded by mu_
  std::multimap<std::chrono::steady_clock::time_point, std::string> delayed_;  // guarded by mu_
  std::unordered_map<std::string, std::chrono::steady_clock::time_point> delayed_at_;
  std::unordered_map<std::string, int> failures_;  // guarded by mu_
  bool shutting_down_ = false;                     // guarded by mu_
  std::thread delay_thread_;
};

}  // namespace skiff::client
