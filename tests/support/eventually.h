// Polling checks for tests that wait on background threads (informers, controller workers).
// Header-only; each call polls the predicate from the calling thread, so the predicate must be
// safe to call concurrently with whatever it observes.
#pragma once

#include <chrono>
#include <thread>

namespace skiff::testing {

// True as soon as `pred` holds; false if it still does not after `timeout`. A passing check
// returns at once, so the timeout only bounds a failing one.
template <typename Pred>
bool eventually(Pred pred, std::chrono::milliseconds timeout = std::chrono::seconds(15)) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return pred();
}

// What must not happen: true if `pred` holds throughout `period`, false as soon as it does not.
template <typename Pred>
bool stays(Pred pred, std::chrono::milliseconds period) {
  auto deadline = std::chrono::steady_clock::now() + period;
  while (std::chrono::steady_clock::now() < deadline) {
    if (!pred()) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return pred();
}

}  // namespace skiff::testing
