#pragma once

// Admission: plugins that see every create and update the registry serves, as upstream's
// admission chain does. A plugin may change the object (the mutating phase, after decoding and
// before the strategy prepares and validates it) and refuse it (the validating phase, after
// the strategy's validation, right before the write). A validating plugin may also name writes
// that must happen together with the object's (a quota's usage): the registry puts them in the
// same store transaction, guarded by the plugin's compares, and runs the validating phase again
// when one of those compares no longer holds.
//
// The built-in plugins, in the order they run:
// - LimitRanger: LimitRange defaults for containers (annotated on the pod) and LimitRange
//   min/max/ratio checks for pods and claims (and upstream's defaults of LimitRanges);
// - Priority: resolves a new pod's priority and preemption policy from its PriorityClass (or
//   the global default class) and allows one global default class;
// - ResourceQuota: refuses objects whose usage would exceed a ResourceQuota of the namespace
//   and charges the usage of those it admits to the quotas' status.used.
//
// Thread-safety: plugins are called concurrently from request threads; each is thread-safe.

#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "api/errors.h"
#include "api/schema.h"
#include "storage/store.h"

namespace skiff::apiserver {

class Registry;

enum class AdmissionOperation : uint8_t { kCreate, kUpdate };

struct AdmissionRequest {
  AdmissionOperation operation = AdmissionOperation::kCreate;
  const api::ResourceInfo* resource = nullptr;
  std::string subresource;  // "" for the object itself
  std::string ns;           // "" for cluster-scoped resources
  // The object's store key; known in the validating phase only.
  std::string key;
  // The stored object, on update.
  const nlohmann::json* old = nullptr;
  bool dry_run = false;
};

// What the object's write must carry along (validating phase; ignored for dry runs).
struct AdmissionWrites {
  // The write happens only if each of these holds; else the validating phase runs again.
  std::vector<storage::Compare> compares;
  std::vector<storage::Op> ops;
  // Kept until the write is done (e.g. a lock that orders competing writers).
  std::vector<std::shared_ptr<void>> holds;
  // Returned when the compares keep failing.
  std::optional<api::ApiError> contention_error;
};

class AdmissionPlugin {
 public:
  virtual ~AdmissionPlugin() = default;

  virtual std::string_view name() const = 0;
  // May change `obj`; metadata.name may still be empty (generateName).
  virtual std::optional<api::ApiError> admit(const AdmissionRequest& request, nlohmann::json& obj) {
    return std::nullopt;
  }
  virtual std::optional<api::ApiError> validate(const AdmissionRequest& request,
                                                const nlohmann::json& obj,
                                                AdmissionWrites& writes) {
    return std::nullopt;
  }
};

// upstream's admission.NewForbidden: 403 `<resource> "<name>" is forbidden: <why>`, naming the
// object by its name, else its generateName.
api::ApiError admission_forbidden(const api::ResourceInfo& resource, const nlohmann::json& obj,
                                  const std::string& why);

// The objects under a key prefix as the API server's watch cache holds them (possibly a few
// milliseconds behind the store, as upstream's admission listers are), or from the store when
// the cache is not ready.
using CachedLister =
    std::function<Result<std::vector<storage::KeyValuePtr>>(const std::string& key_prefix)>;

// LimitRanger reads LimitRanges through `list`. ResourceQuota looks for quotas through `list`
// (most namespaces have none) and reads the ones it charges from `store` itself.
std::unique_ptr<AdmissionPlugin> new_limit_ranger(CachedLister list);
std::unique_ptr<AdmissionPlugin> new_resource_quota_admission(storage::Store& store,
                                                              CachedLister list);
// Priority reads PriorityClasses through `list`, and from `store` a named one `list` lacks.
std::unique_ptr<AdmissionPlugin> new_priority_admission(storage::Store& store, CachedLister list);

// Upstream's defaults of a LimitRange (Container items: default from max, defaultRequest from
// default, then from min).
void default_limit_range(nlohmann::json& limit_range);

// Installs the built-in plugins into `registry`, in order.
void install_admission(Registry& registry);

}  // namespace skiff::apiserver
