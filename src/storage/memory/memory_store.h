#pragma once

// The in-memory MVCC store: every revision of every key within the retained history, an event
// log for watchers, leases and compaction. It is the memory backend on its own, and the engine
// of the embedded backend, which adds durability through a CommitLog.

#include <chrono>
#include <memory>
#include <vector>

#include "base/status.h"
#include "storage/limits.h"
#include "storage/store.h"

namespace skiff::storage {

// One key written at one revision: a put (kv set) or a delete (tombstone: kv->value empty and
// version 0). `sub` orders the writes within a revision.
struct Mutation {
  int64_t revision = 0;
  int64_t sub = 0;
  bool tombstone = false;
  KeyValuePtr kv;
};

// What the engine needs from a durability layer. Called from the engine's commit thread only.
class CommitLog {
 public:
  virtual ~CommitLog() = default;
  // Makes a batch of revisions durable, in order; returns only once they would survive a crash.
  // A failure here is fatal to the store (the engine cannot un-apply acknowledged state).
  virtual Status append(const std::vector<Mutation>& mutations) = 0;
  virtual Status record_compaction(int64_t revision) = 0;
  virtual Status record_lease_grant(int64_t id, int64_t ttl_seconds) = 0;
  virtual Status record_lease_revoke(int64_t id) = 0;
};

// State recovered from a CommitLog at start.
struct RecoveredState {
  int64_t compact_revision = 0;
  int64_t current_revision = 0;
  // Every mutation after compaction, plus the latest of each key at or before it, in order.
  std::vector<Mutation> mutations;
  std::vector<std::pair<int64_t, int64_t>> leases;  // id, ttl seconds
};

struct MemoryStoreOptions {
  StoreLimits limits;
  // Automatic compaction of history older than this; zero disables it.
  std::chrono::milliseconds compaction_window{0};
  // Lease expiry is checked this often.
  std::chrono::milliseconds lease_check_interval{250};
};

std::unique_ptr<Store> new_memory_store(MemoryStoreOptions options);

// The engine over a durability layer, starting from recovered state.
std::unique_ptr<Store> new_memory_store(MemoryStoreOptions options, std::unique_ptr<CommitLog> log,
                                        RecoveredState recovered);

}  // namespace skiff::storage
