#pragma once

// The embedded backend (the default): the in-memory MVCC engine made durable in a SQLite
// database under the data directory, with group commit (concurrent writers share one fsync).

#include <chrono>
#include <memory>
#include <string>

#include "base/status.h"
#include "storage/limits.h"
#include "storage/store.h"

namespace skiff::storage {

struct EmbeddedStoreOptions {
  std::string data_dir;
  StoreLimits limits;
  std::chrono::milliseconds compaction_window = kDefaultCompactionWindow;
};

// Opens (creating if needed) the store under data_dir. Fails with a clear message when the
// directory cannot be created, is locked by another process, or holds a corrupt database.
Result<std::unique_ptr<Store>> open_embedded_store(EmbeddedStoreOptions options);

}  // namespace skiff::storage
