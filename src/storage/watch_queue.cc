#include "storage/watch_queue.h"

#include <string>

namespace skiff::storage {

bool WatchQueue::push(std::vector<Event>&& events) {
  if (events.empty()) return true;
  bool was_idle;
  {
    std::lock_guard lock(mu_);
    if (ended_) return false;
    if (events_.size() + events.size() > capacity_) {
      ended_ = true;
      end_status_ = Status(StatusCode::kResourceExhausted,
                           "watcher fell behind by more than " + std::to_string(capacity_) +
                               " events and was cut off; re-list and watch again");
      // The consumer must not see a prefix that ends in a gap-free stream it could mistake for
      // a live one, so what is buffered stays and the end status follows it.
    } else if (events_.empty()) {
      events_ = std::move(events);
    } else {
      events_.reserve(events_.size() + events.size());
      for (auto& e : events) events_.push_back(std::move(e));
    }
    was_idle = polled_since_wake_;
    polled_since_wake_ = false;
  }
  wake(was_idle);
  return !ended();
}

bool WatchQueue::push(Event&& event) {
  std::vector<Event> one;
  one.push_back(std::move(event));
  return push(std::move(one));
}

void WatchQueue::end(Status status) {
  bool was_idle;
  {
    std::lock_guard lock(mu_);
    if (ended_) return;
    ended_ = true;
    end_status_ = std::move(status);
    was_idle = polled_since_wake_;
    polled_since_wake_ = false;
  }
  wake(was_idle);
}

bool WatchQueue::ended() const {
  std::lock_guard lock(mu_);
  return ended_;
}

Status WatchQueue::poll(std::vector<Event>* out) {
  std::lock_guard lock(mu_);
  polled_since_wake_ = true;
  if (!events_.empty()) {
    if (out->empty()) {
      out->swap(events_);
    } else {
      for (auto& e : events_) out->push_back(std::move(e));
    }
    events_.clear();
  }
  // Events appended above precede the end and stay valid when the end status is returned.
  if (ended_) return end_status_;
  return Status::ok();
}

void WatchQueue::close() {
  {
    std::lock_guard lock(notify_mu_);
    closed_ = true;
  }
  end(Status(StatusCode::kCancelled, "watch cancelled"));
}

void WatchQueue::wake(bool was_idle) {
  if (!was_idle || !notify_) return;
  std::lock_guard lock(notify_mu_);
  if (!closed_) notify_();
}

}  // namespace skiff::storage
