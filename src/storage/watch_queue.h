#pragma once

// WatchQueue is the buffer between a backend that produces watch events and the consumer that
// polls them: producers never block, and a consumer that lets more than `capacity` events pile
// up is cut off with kResourceExhausted. Backends embed one in their Watch implementation.
//
// Thread-safety: all methods are safe to call concurrently. The notify callback runs on the
// producer's thread, outside the buffer's lock; calls to it are serialized.

#include <deque>
#include <functional>
#include <mutex>
#include <vector>

#include "storage/store.h"

namespace skiff::storage {

class WatchQueue {
 public:
  WatchQueue(size_t capacity, std::function<void()> notify)
      : capacity_(capacity == 0 ? kDefaultWatchBufferEvents : capacity),
        notify_(std::move(notify)) {}

  // Appends events. Returns false (and ends the queue with kResourceExhausted) when the buffer
  // would exceed its capacity, or when the queue has already ended.
  bool push(std::vector<Event>&& events);
  bool push(Event&& event);
  // Ends the queue: poll() returns `status` once the buffered events are taken. The first call
  // wins.
  void end(Status status);
  bool ended() const;
  // Ends the queue like end(kCancelled) and stops notifications for good: once close() returns,
  // notify is not running and never runs again. For a Watch's destructor; must not be called
  // from inside notify.
  void close();

  // Moves the buffered events to *out; returns OK while live, else the end status.
  Status poll(std::vector<Event>* out);

 private:
  void wake(bool was_idle);

  const size_t capacity_;
  const std::function<void()> notify_;
  std::mutex notify_mu_;  // held while notify_ runs
  bool closed_ = false;   // guarded by notify_mu_
  mutable std::mutex mu_;
  std::vector<Event> events_;      // guarded by mu_
  bool ended_ = false;             // guarded by mu_
  Status end_status_;              // guarded by mu_
  bool polled_since_wake_ = true;  // guarded by mu_; edge-triggers notify
};

}  // namespace skiff::storage
