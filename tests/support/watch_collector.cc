#include "support/watch_collector.h"

namespace skiff::testing {

Result<std::unique_ptr<WatchCollector>> WatchCollector::start(storage::Store& store,
                                                              storage::WatchOptions options) {
  std::unique_ptr<WatchCollector> c(new WatchCollector());
  WatchCollector* self = c.get();
  options.notify = [self] {
    {
      std::lock_guard lock(self->mu_);
      self->signalled_ = true;
    }
    self->cv_.notify_all();
  };
  auto watch = store.watch(std::move(options));
  if (!watch.is_ok()) return watch.status();
  c->watch_ = std::move(watch).value();
  return c;
}

WatchCollector::~WatchCollector() {
  watch_.reset();
}

void WatchCollector::drain_locked() {
  if (ended_) return;
  signalled_ = false;
  Status s = watch_->poll(&events_);
  if (!s.is_ok()) {
    ended_ = true;
    end_ = s;
  }
}

std::vector<storage::Event> WatchCollector::wait_for(size_t n, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  std::unique_lock lock(mu_);
  while (true) {
    drain_locked();
    if (events_.size() >= n || ended_) break;
    if (!cv_.wait_until(lock, deadline, [this] { return signalled_; })) {
      drain_locked();
      break;
    }
  }
  return events_;
}

Status WatchCollector::wait_end(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  std::unique_lock lock(mu_);
  while (true) {
    drain_locked();
    if (ended_) return end_;
    if (!cv_.wait_until(lock, deadline, [this] { return signalled_; })) {
      drain_locked();
      return ended_ ? end_ : Status::ok();
    }
  }
}

std::vector<storage::Event> WatchCollector::events() {
  std::lock_guard lock(mu_);
  drain_locked();
  return events_;
}

}  // namespace skiff::testing
