#pragma once

// The etcd v3 backend: the Store interface over etcd's gRPC API (KV, Watch, Lease), with
// several endpoints and failover to the survivors when one goes away.
//
// Thread-safety: as Store (every method may be called concurrently). All watches of one store
// share one etcd Watch stream, served by the store's own threads.

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "base/status.h"
#include "storage/limits.h"
#include "storage/store.h"

namespace skiff::storage {

struct EtcdStoreOptions {
  // host:port or http://host:port, one per member.
  std::vector<std::string> endpoints;
  StoreLimits limits;
  // Automatic compaction of history older than this; zero disables it.
  std::chrono::milliseconds compaction_window = kDefaultCompactionWindow;
  // Deadline of one RPC attempt; failed attempts are retried on another endpoint until
  // request_timeout has passed in total.
  std::chrono::milliseconds attempt_timeout{2000};
  std::chrono::milliseconds request_timeout{15000};
};

// Connects and checks that a member answers within request_timeout.
Result<std::unique_ptr<Store>> open_etcd_store(EtcdStoreOptions options);

}  // namespace skiff::storage
