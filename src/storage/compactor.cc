#include "storage/compactor.h"

#include <algorithm>

#include "base/log.h"

namespace skiff::storage {

Compactor::Compactor(Store& store, std::chrono::milliseconds window)
    : store_(store),
      window_(window),
      tick_(std::clamp(window / 5, std::chrono::milliseconds(50),
                       std::chrono::milliseconds(60000))) {}

Compactor::~Compactor() {
  stop();
}

void Compactor::start() {
  if (window_.count() <= 0 || thread_.joinable()) return;
  {
    std::lock_guard lock(mu_);
    stopping_ = false;
  }
  thread_ = std::thread([this] { run(); });
}

void Compactor::stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Compactor::run() {
  std::unique_lock lock(mu_);
  while (!stopping_) {
    lock.unlock();
    auto now = std::chrono::steady_clock::now();
    if (auto rev = store_.current_revision(); rev.is_ok()) {
      samples_.emplace_back(now, *rev);
    }
    // The newest sample at least a window old is the compaction point.
    int64_t target = 0;
    while (!samples_.empty() && now - samples_.front().first >= window_) {
      target = samples_.front().second;
      samples_.pop_front();
    }
    if (target > last_compacted_) {
      Status s = store_.compact(target);
      if (s.is_ok() || s.code() == StatusCode::kCompacted) {
        last_compacted_ = target;
      } else {
        SKIFF_LOG_WARN("compaction to revision {} failed: {}", target, s.to_string());
      }
    }
    lock.lock();
    cv_.wait_for(lock, tick_, [this] { return stopping_; });
  }
}

}  // namespace skiff::storage
