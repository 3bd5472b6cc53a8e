#pragma once

// Kubernetes time formats: metav1.Time (RFC 3339, seconds, UTC) and metav1.MicroTime
// (RFC 3339 with microseconds), and a clock that tests can replace.
//
// Thread-safety: the free functions are pure. SystemClock is stateless; FakeClock is safe from
// any thread.

#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>

#include "base/status.h"

namespace skiff {

// "2026-11-27T13:12:00Z"
std::string rfc3339(int64_t unix_seconds);
std::string rfc3339_now();
// "2026-11-27T13:12:00.123456Z"
std::string rfc3339_micro(std::chrono::system_clock::time_point t);
// Seconds since the epoch from RFC 3339 (fractional seconds and offsets accepted); -1 on error.
int64_t parse_rfc3339(std::string_view text);

// A Go-style duration ("300ms", "40s", "5m", "1h30m", "1.5s"); kInvalidArgument otherwise.
Result<std::chrono::milliseconds> parse_duration(std::string_view text);

// Wall-clock time, injectable so tests of time-driven logic (grace periods, back-off, cron) need
// not sleep.
class Clock {
 public:
  virtual ~Clock() = default;
  virtual std::chrono::system_clock::time_point now() const = 0;
  int64_t now_seconds() const {
    return std::chrono::duration_cast<std::chrono::seconds>(now().time_since_epoch()).count();
  }
};

class SystemClock final : public Clock {
 public:
  std::chrono::system_clock::time_point now() const override {
    return std::chrono::system_clock::now();
  }
  static SystemClock& instance();
};

class FakeClock final : public Clock {
 public:
  explicit FakeClock(std::chrono::system_clock::time_point start = std::chrono::system_clock::now())
      : now_(start) {}
  std::chrono::system_clock::time_point now() const override {
    std::lock_guard lock(mu_);
    return now_;
  }
  void advance(std::chrono::system_clock::duration d) {
    std::lock_guard lock(mu_);
    now_ += d;
  }
  void set(std::chrono::system_clock::time_point t) {
    std::lock_guard lock(mu_);
    now_ = t;
  }

 private:
  mutable std::mutex mu_;
  std::chrono::system_clock::time_point now_;  // guarded by mu_
};

}  // namespace skiff
