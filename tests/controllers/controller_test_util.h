// Wiring shared by controller tests: an in-memory API (client::FakeApiClient or a subclass), the
// informer factory over it, a FakeClock and the ControllerContext controllers are built from.
// A fixture owns one of each; it is used from the test thread, while the objects it owns are
// thread-safe as documented in their own headers.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <set>
#include <string>
#include <utility>

#include "base/time.h"
#include "client/event_recorder.h"
#include "client/fake_api_client.h"
#include "client/informer.h"
#include "client/workqueue.h"
#include "controllers/controller.h"
#include "support/eventually.h"

namespace skiff::controllers::testing {

using skiff::testing::eventually;
using skiff::testing::stays;

// Base of controller test fixtures. Derived fixtures declare their controllers as members, so
// those are destroyed before the API, informers and clock they were built on.
template <typename Api = client::FakeApiClient>
class ControllerTest : public ::testing::Test {
 protected:
  // `resync` makes the informers hand every cached object to the handlers again that often
  // (so controllers notice FakeClock advances); `start` is where the FakeClock begins.
  explicit ControllerTest(
      ControllerOptions options = {},
      std::chrono::milliseconds resync = std::chrono::milliseconds(0),
      std::chrono::system_clock::time_point start = std::chrono::system_clock::now())
      : clock_(start),
        informers_(api_, resync),
        // Events are named by their recorder's clock in nanoseconds: with the FakeClock, two
        // Events of one object at one fake instant would collide, so recorders keep the real
        // clock.
        ctx_{api_, informers_, clock_, std::move(options), [this](const std::string& component) {
               return std::make_unique<client::EventRecorder>(api_, component);
             }} {}

  FakeClock clock_;
  Api api_;
  client::InformerFactory informers_;
  ControllerContext ctx_;
};

// The keys queued in `queue` now (not the delayed ones), taken off it.
inline std::set<std::string> drain(client::WorkQueue& queue) {
  std::set<std::string> keys;
  while (queue.size() > 0) {
    auto key = queue.get();
    if (!key) break;
    keys.insert(*key);
    queue.done(*key);
  }
  return keys;
}

}  // namespace skiff::controllers::testing
