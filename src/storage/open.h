#pragma once

// Opens the configured store backend.

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "base/status.h"
#include "storage/limits.h"
#include "storage/store.h"

namespace skiff::storage {

struct StoreConfig {
  std::string backend = "embedded";  // embedded | etcd | memory
  std::string data_dir;              // embedded
  std::vector<std::string> etcd_endpoints;
  StoreLimits limits;
  std::chrono::milliseconds compaction_window = kDefaultCompactionWindow;
};

Result<std::unique_ptr<Store>> open_store(const StoreConfig& config);

}  // namespace skiff::storage
