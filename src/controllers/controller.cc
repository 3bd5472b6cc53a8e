#include "controllers/controller.h"

#include "base/log.h"

namespace skiff::controllers {

QueueWorkers::QueueWorkers(std::string name, client::WorkQueue& queue, Reconcile reconcile,
                           std::function<bool()> synced)
    : name_(std::move(name)),
      queue_(queue),
      reconcile_(std::move(reconcile)),
      synced_(std::move(synced)) {}

QueueWorkers::~QueueWorkers() {
  stop();
}

void QueueWorkers::start(int workers) {
  for (int i = 0; i < workers; ++i) threads_.emplace_back([this] { loop(); });
}

void QueueWorkers::stop() {
  queue_.shut_down();
  for (auto& t : threads_) {
    if (t.joinable()) t.join();
  }
  threads_.clear();
}

void QueueWorkers::loop() {
  // Hold work back until the caches are filled: acting on a partial cache would, for example,
  // create pods that already exist.
  while (synced_ && !synced_()) {
    if (queue_.shutting_down()) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  while (auto key = queue_.get()) {
    Status s = reconcile_(*key);
    if (s.is_ok()) {
      queue_.forget(*key);
    } else {
      if (s.code() != StatusCode::kAborted) {
        SKIFF_LOG_WARN("{}: reconcile {}: {}", name_, *key, s.to_string());
      }
      queue_.add_rate_limited(*key);
    }
    queue_.done(*key);
  }
}

Ticker::Ticker(std::chrono::milliseconds period, std::function<void()> tick)
    : period_(period), tick_(std::move(tick)) {}

Ticker::~Ticker() {
  stop();
}

void Ticker::start() {
  {
    std::lock_guard lock(mu_);
    stopping_ = false;
  }
  thread_ = std::thread([this] { run(); });
}

void Ticker::stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Ticker::run() {
  std::unique_lock lock(mu_);
  while (!cv_.wait_for(lock, period_, [this] { return stopping_; })) {
    lock.unlock();
    tick_();
    lock.lock();
  }
}

bool wait_for_caches(client::WorkQueue& queue, const std::vector<client::Informer*>& informers) {
  for (auto* informer : informers) {
    while (!informer->wait_for_sync(std::chrono::milliseconds(50))) {
      if (queue.shutting_down()) return false;
    }
  }
  return true;
}

}  // namespace skiff::controllers
