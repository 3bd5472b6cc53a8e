#include "conformance/store_harness.h"

#include <unistd.h>

#include <map>

#include "storage/embedded/embedded_store.h"
#include "storage/memory/memory_store.h"
#include "support/temp_dir.h"
#if SKIFF_CONFORMANCE_HAVE_ETCD
#include "storage/etcd/etcd_store.h"
#include "support/etcd_cluster.h"
#endif

namespace skiff::conformance {
namespace {

using storage::Store;

class MemoryBackend final : public Backend {
 public:
  Result<std::unique_ptr<Store>> open(const OpenOptions& options) override {
    storage::MemoryStoreOptions m;
    m.limits = options.limits;
    m.compaction_window = options.compaction_window;
    return storage::new_memory_store(std::move(m));
  }
};

class EmbeddedBackend final : public Backend {
 public:
  Result<std::unique_ptr<Store>> open(const OpenOptions& options) override {
    dirs_.push_back(std::make_unique<testing::TempDir>("skiff-conformance"));
    storage::EmbeddedStoreOptions e;
    // A directory that does not exist yet: opening creates it.
    e.data_dir = dirs_.back()->sub("data");
    e.limits = options.limits;
    e.compaction_window = options.compaction_window;
    return storage::open_embedded_store(std::move(e));
  }
  void after_test() override { dirs_.clear(); }
  void shut_down() override { dirs_.clear(); }

 private:
  std::vector<std::unique_ptr<testing::TempDir>> dirs_;
};

constexpr char kEtcdBinary[] = "/usr/bin/etcd";

class EtcdBackend final : public Backend {
 public:
  explicit EtcdBackend(int members) : members_(members) {}

  std::string skip_reason() override {
    if (access(kEtcdBinary, X_OK) != 0) {
      return std::string(kEtcdBinary) + " is not installed; skipping the etcd backend";
    }
    return {};
  }

#if SKIFF_CONFORMANCE_HAVE_ETCD
  Status prepare() override {
    if (cluster_) return Status::ok();
    // A cluster that failed to start once fails every test fast instead of retrying each time.
    if (!start_error_.is_ok()) return start_error_;
    dir_ = std::make_unique<testing::TempDir>("skiff-conformance-etcd");
    auto cluster = testing::EtcdCluster::start(members_, dir_->path());
    if (!cluster.is_ok()) {
      start_error_ = Status(cluster.status().code(),
                            "starting a " + std::to_string(members_) +
                                "-member etcd cluster: " + cluster.status().message());
      dir_.reset();
      return start_error_;
    }
    cluster_ = std::move(cluster).value();
    return Status::ok();
  }

  Result<std::unique_ptr<Store>> open(const OpenOptions& options) override {
    if (!cluster_) return Status(StatusCode::kFailedPrecondition, "etcd cluster not started");
    storage::EtcdStoreOptions e;
    e.endpoints = cluster_->client_endpoints();
    e.limits = options.limits;
    e.compaction_window = options.compaction_window;
    return storage::open_etcd_store(std::move(e));
  }

  void shut_down() override {
    cluster_.reset();
    dir_.reset();
    start_error_ = Status::ok();
  }

 private:
  std::unique_ptr<testing::TempDir> dir_;
  std::unique_ptr<testing::EtcdCluster> cluster_;
  Status start_error_;
#else
  Status prepare() override {
    return Status(StatusCode::kUnimplemented,
                  "this build has no etcd backend (no skiff_storage_etcd target); the etcd "
                  "conformance instances cannot run");
  }
  Result<std::unique_ptr<Store>> open(const OpenOptions&) override {
    return prepare();
  }
#endif

 private:
  const int members_;
};

std::map<std::string, std::unique_ptr<Backend>>& backends() {
  static std::map<std::string, std::unique_ptr<Backend>> backends;
  return backends;
}

}  // namespace

Backend& backend_named(const std::string& name) {
  auto& all = backends();
  auto it = all.find(name);
  if (it != all.end()) return *it->second;
  std::unique_ptr<Backend> backend;
  if (name == "memory") {
    backend = std::make_unique<MemoryBackend>();
  } else if (name == "embedded") {
    backend = std::make_unique<EmbeddedBackend>();
  } else if (name == "etcd1") {
    backend = std::make_unique<EtcdBackend>(1);
  } else if (name == "etcd3") {
    backend = std::make_unique<EtcdBackend>(3);
  } else {
    SKIFF_CHECK(false, "unknown conformance backend " + name);
  }
  return *all.emplace(name, std::move(backend)).first->second;
}

void shut_down_backends() {
  for (auto& [name, backend] : backends()) backend->shut_down();
}

}  // namespace skiff::conformance
