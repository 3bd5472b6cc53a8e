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

// One key written at one revision: a put, or a delete (a tombstone: version 0, no value).
// `sub` orders the writes within a revision.
struct Mutation {
  int64_t sub = 0;
  KeyValuePtr kv;
  bool tombstone() const { return kv->version == 0; }
};

// Everything one commit makes durable, applied atomically by the CommitLog.
struct CommitBatch {
  std::vector<Mutation> mutations;                        // in revision order
  std::vector<std::pair<int64_t, int64_t>> lease_grants;  // id, ttl seconds
  std::vector<int64_t> lease_revokes;
  int64_t compact_revision = 0;  // > 0: history before it may be dropped
  int64_t revision = 0;          // the store's revision after the batch
};

// What the engine needs from a durability layer. Called from the engine's commit thread only.
class CommitLog {
 public:
  virtual ~CommitLog() = default;
  // Makes a batch durable; returns only once it would survive a crash. A failure is fatal to
  // the store: the engine cannot take back state that readers may already see.
  virtual Status commit(const CommitBatch& batch) = 0;
};

// State recovered from a CommitLog at start.
struct RecoveredState {
  int64_t compact_revision = 0;
  int64_t current_revision = 0;
  // Every mutation at or after compaction, plus the latest of each key before it, in order.
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
