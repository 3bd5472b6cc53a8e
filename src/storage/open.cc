#include "storage/open.h"

#include "storage/embedded/embedded_store.h"
#include "storage/etcd/etcd_store.h"
#include "storage/memory/memory_store.h"

namespace skiff::storage {

Result<std::unique_ptr<Store>> open_store(const StoreConfig& config) {
  if (config.backend == "embedded") {
    if (config.data_dir.empty()) {
      return Status(StatusCode::kInvalidArgument, "the embedded store needs a data directory");
    }
    return open_embedded_store({config.data_dir, config.limits, config.compaction_window});
  }
  if (config.backend == "etcd") {
    if (config.etcd_endpoints.empty()) {
      return Status(StatusCode::kInvalidArgument, "the etcd store needs at least one endpoint");
    }
    EtcdStoreOptions options;
    options.endpoints = config.etcd_endpoints;
    options.limits = config.limits;
    options.compaction_window = config.compaction_window;
    return open_etcd_store(std::move(options));
  }
  if (config.backend == "memory") {
    return new_memory_store({config.limits, config.compaction_window});
  }
  return Status(StatusCode::kInvalidArgument,
                "unknown store backend \"" + config.backend + "\" (want embedded, etcd or memory)");
}

}  // namespace skiff::storage
