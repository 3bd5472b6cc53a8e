#pragma once

// The cluster state store: a revisioned key-value store with transactions, watches, leases and
// compaction, with the semantics Kubernetes needs from etcd v3.
//
// Thread-safety: every Store method may be called concurrently from any thread. A Watch handle
// is owned by one consumer: poll() and request_progress() may be called from any thread, but
// not concurrently with the handle's destruction.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"

namespace skiff::storage {

// Limits shared by every backend (etcd's defaults: --max-request-bytes 1.5 MiB, --max-txn-ops 128).
inline constexpr size_t kDefaultMaxValueBytes = 1536 * 1024;
inline constexpr size_t kDefaultMaxTxnOps = 128;
// Events a watcher may have waiting before it is cut off as too slow.
inline constexpr size_t kDefaultWatchBufferEvents = 64 * 1024;
inline constexpr std::chrono::seconds kDefaultCompactionWindow{300};

struct KeyValue {
  std::string key;
  std::string value;
  int64_t create_revision = 0;
  int64_t mod_revision = 0;
  // Number of writes since creation; 0 means the key does not exist.
  int64_t version = 0;
  int64_t lease = 0;
};
// Stored values are immutable once written and shared between readers, history and watchers.
using KeyValuePtr = std::shared_ptr<const KeyValue>;

// The key range [key, range_end), as in etcd: an empty range_end selects the single key `key`;
// range_end "\0" selects every key >= key.
struct KeyRange {
  std::string key;
  std::string range_end;

  static KeyRange single(std::string key) { return {std::move(key), {}}; }
  // Every key that starts with `prefix`.
  static KeyRange prefix(std::string prefix);
  // Every key >= from.
  static KeyRange from(std::string key) { return {std::move(key), std::string(1, '\0')}; }

  bool is_single() const { return range_end.empty(); }
  bool contains(std::string_view k) const;
};

// The smallest key greater than every key starting with `prefix` ("\0" when there is none).
std::string prefix_end(std::string_view prefix);

struct RangeOptions {
  // 0 reads at the current revision.
  int64_t revision = 0;
  // 0 means no limit.
  int64_t limit = 0;
  bool count_only = false;
  bool keys_only = false;
};

struct RangeResult {
  std::vector<KeyValuePtr> kvs;
  // Number of keys in the range at that revision, ignoring limit.
  int64_t count = 0;
  // True when limit cut the result short.
  bool more = false;
  // The store's current revision when the read was served.
  int64_t revision = 0;
};

enum class CompareTarget : uint8_t { kVersion, kCreateRevision, kModRevision, kValue };
enum class CompareOp : uint8_t { kEqual, kNotEqual, kGreater, kLess };

// A condition on one key. A missing key has version, create and mod revision 0 and no value
// (a value comparison against a missing key is false).
struct Compare {
  std::string key;
  CompareTarget target = CompareTarget::kModRevision;
  CompareOp op = CompareOp::kEqual;
  int64_t number = 0;
  std::string value;

  static Compare mod_revision(std::string key, CompareOp op, int64_t rev) {
    return {std::move(key), CompareTarget::kModRevision, op, rev, {}};
  }
  static Compare create_revision(std::string key, CompareOp op, int64_t rev) {
    return {std::move(key), CompareTarget::kCreateRevision, op, rev, {}};
  }
  static Compare version(std::string key, CompareOp op, int64_t version) {
    return {std::move(key), CompareTarget::kVersion, op, version, {}};
  }
  static Compare value_is(std::string key, CompareOp op, std::string value) {
    return {std::move(key), CompareTarget::kValue, op, 0, std::move(value)};
  }
  // The key does not exist.
  static Compare absent(std::string key) { return version(std::move(key), CompareOp::kEqual, 0); }
};

struct Op {
  enum class Type : uint8_t { kPut, kDelete, kRange };
  Type type = Type::kRange;
  // kPut uses range.key only; kDelete and kRange use the whole range.
  KeyRange range;
  std::string value;
  int64_t lease = 0;
  // kPut / kDelete: return the previous value(s).
  bool prev_kv = false;
  // kRange only (revision must be 0 inside a transaction).
  RangeOptions range_options;

  static Op put(std::string key, std::string value, int64_t lease = 0, bool prev_kv = false) {
    Op op;
    op.type = Type::kPut;
    op.range = KeyRange::single(std::move(key));
    op.value = std::move(value);
    op.lease = lease;
    op.prev_kv = prev_kv;
    return op;
  }
  static Op del(KeyRange range, bool prev_kv = false) {
    Op op;
    op.type = Type::kDelete;
    op.range = std::move(range);
    op.prev_kv = prev_kv;
    return op;
  }
  static Op get(KeyRange range, RangeOptions options = {}) {
    Op op;
    op.type = Type::kRange;
    op.range = std::move(range);
    op.range_options = options;
    return op;
  }
};

struct OpResult {
  Op::Type type = Op::Type::kRange;
  // kPut with prev_kv: the value before the put (null if the key was absent).
  KeyValuePtr prev_kv;
  // kRange: the values read; kDelete with prev_kv: the deleted values.
  std::vector<KeyValuePtr> kvs;
  // kDelete: how many keys were deleted. kRange: the count of keys in range.
  int64_t count = 0;
  bool more = false;
};

// If every compare holds, `success` runs, else `failure`; atomically, as one revision.
struct Txn {
  std::vector<Compare> compare;
  std::vector<Op> success;
  std::vector<Op> failure;
};

struct TxnResult {
  bool succeeded = false;
  // The revision after the transaction (its own if it wrote, else the current one).
  int64_t revision = 0;
  std::vector<OpResult> results;
};

enum class EventType : uint8_t { kPut, kDelete, kProgress };

struct Event {
  EventType type = EventType::kPut;
  // kPut: the new value. kDelete: key and mod_revision (the deletion's revision), no value.
  // kProgress: null.
  KeyValuePtr kv;
  // The value before this event, when the watch asked for prev_kv and one existed.
  KeyValuePtr prev_kv;
  // The revision of the event; for kProgress, every event up to it has been delivered.
  int64_t revision = 0;
};

struct WatchOptions {
  KeyRange range;
  // First revision to deliver; 0 means changes after the current revision.
  int64_t start_revision = 0;
  bool prev_kv = false;
  // Called, from a store thread, when events or the end of the watch become available to poll().
  // Must be cheap and must not block or call back into the store (post to your own executor).
  std::function<void()> notify;
  // Events that may wait unpolled before the watch is cut off; 0 picks the store's default.
  size_t max_buffered_events = 0;
};

class Watch {
 public:
  virtual ~Watch() = default;  // Destroying the handle cancels the watch.

  // Appends the events delivered since the last call to *out, in revision order with none
  // skipped. Returns OK while the watch is live. Once it has ended, returns why (events appended
  // by that same call are valid and precede the end):
  //  - kCompacted: start_revision (or the resume point) was compacted; re-list and watch again.
  //    compact_revision() tells the revision compacted up to.
  //  - kResourceExhausted: the watcher fell too far behind and was cut off; re-list.
  //  - kUnavailable: the backend lost the watch and could not resume it.
  //  - kCancelled: cancel() was called.
  virtual Status poll(std::vector<Event>* out) = 0;

  // Asks for a kProgress event carrying the revision up to which everything was delivered.
  virtual void request_progress() = 0;

  virtual void cancel() = 0;

  virtual int64_t compact_revision() const = 0;
};

class Store {
 public:
  virtual ~Store() = default;

  virtual Result<RangeResult> range(const KeyRange& range, const RangeOptions& options = {}) = 0;
  virtual Result<TxnResult> txn(const Txn& txn) = 0;
  virtual Result<std::unique_ptr<Watch>> watch(WatchOptions options) = 0;

  // Grants a lease of ttl_seconds (>= 1); returns its id.
  virtual Result<int64_t> lease_grant(int64_t ttl_seconds) = 0;
  // Revokes a lease and deletes every key attached to it (one revision).
  virtual Status lease_revoke(int64_t lease_id) = 0;
  // Renews a lease; returns its TTL. kNotFound when it has expired or never existed.
  virtual Result<int64_t> lease_keep_alive(int64_t lease_id) = 0;

  // Drops history older than `revision`: reads and watches below it answer kCompacted.
  virtual Status compact(int64_t revision) = 0;

  virtual Result<int64_t> current_revision() = 0;

  // Conveniences built on the calls above.
  Result<KeyValuePtr> get(const std::string& key);  // null when absent
  // Unconditional put; returns the new revision.
  Result<int64_t> put(std::string key, std::string value, int64_t lease = 0);
  // Deletes a range; returns how many keys were deleted.
  Result<int64_t> del(KeyRange range);
};

}  // namespace skiff::storage
