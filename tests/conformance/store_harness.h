#pragma once

// Backend harnesses for the store conformance suite: each opens stores of one backend with given
// limits and compaction window. The etcd harnesses share one real cluster between the tests of
// an instance (tests keep apart by key prefix) and stop it when the instance is done.
//
// Thread-safety: used from the test thread only.

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "base/status.h"
#include "storage/limits.h"
#include "storage/store.h"

namespace skiff::conformance {

struct OpenOptions {
  storage::StoreLimits limits;
  // Zero disables automatic compaction.
  std::chrono::milliseconds compaction_window{0};
};

class Backend {
 public:
  virtual ~Backend() = default;

  // Non-empty when the backend cannot run on this machine; its tests are skipped with it.
  virtual std::string skip_reason() { return {}; }
  // Brings up what the backend's tests share (an etcd cluster); called before every test.
  virtual Status prepare() { return Status::ok(); }
  // A new store; every call may return a store with an empty key space (memory, embedded) or a
  // new client of the shared one (etcd).
  virtual Result<std::unique_ptr<storage::Store>> open(const OpenOptions& options) = 0;
  // After every test, once the test's stores are closed.
  virtual void after_test() {}
  // After the last test of the instance.
  virtual void shut_down() {}
};

// "memory", "embedded", "etcd1", "etcd3". The backends live until the process exits.
Backend& backend_named(const std::string& name);
// Calls shut_down() on every backend created so far.
void shut_down_backends();

}  // namespace skiff::conformance
