#pragma once

// Request limits every backend enforces the same way, before anything is written.

#include "base/status.h"
#include "storage/store.h"

namespace skiff::storage {

struct StoreLimits {
  size_t max_value_bytes = kDefaultMaxValueBytes;
  size_t max_txn_ops = kDefaultMaxTxnOps;
  size_t watch_buffer_events = kDefaultWatchBufferEvents;
};

// kTooLarge when a value or the op count exceeds the limits; kInvalidArgument for malformed
// requests (empty keys, ranges inside a transaction at an explicit revision, ...).
Status validate_txn(const Txn& txn, const StoreLimits& limits);
Status validate_range(const KeyRange& range, const RangeOptions& options);

}  // namespace skiff::storage
