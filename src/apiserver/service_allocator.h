#pragma once

// Allocation of Service cluster IPs (from --service-cidr) and node ports (30000-32767).
// Each allocated value is a key in the store (/registry/ranges/serviceips/<ip>,
// /registry/ranges/servicenodeports/<port>) created with compare-and-swap, so concurrent creates
// never share a value, and allocations survive restarts with the services that hold them.
//
// Thread-safety: every method may be called concurrently.

#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>

#include "api/errors.h"
#include "base/status.h"
#include "storage/store.h"

namespace skiff::apiserver {

class ServiceAllocator {
 public:
  // `cidr`: an IPv4 range such as "10.43.0.0/16".
  static Result<std::unique_ptr<ServiceAllocator>> create(storage::Store& store,
                                                          const std::string& cidr,
                                                          int node_port_min = 30000,
                                                          int node_port_max = 32767);

  // Fills and reserves spec.clusterIP(s) and node ports for `svc`, keeping what `old` (the
  // stored version, or null on create) already holds. On error nothing stays reserved.
  std::optional<api::ApiError> reserve(nlohmann::json& svc, const nlohmann::json* old);
  // See Strategy::settle.
  void settle(const nlohmann::json* svc, const nlohmann::json* old, bool committed);

  bool ip_in_range(const std::string& ip) const;
  int node_port_min() const { return node_port_min_; }
  int node_port_max() const { return node_port_max_; }

 private:
  ServiceAllocator(storage::Store& store, uint32_t base, uint32_t size, int port_min, int port_max)
      : store_(store),
        base_(base),
        size_(size),
        node_port_min_(port_min),
        node_port_max_(port_max) {}

  // The reservation keys `svc` holds.
  std::set<std::string> held_keys(const nlohmann::json& svc) const;
  // Creates `key` for `owner`; false when it is taken.
  Result<bool> claim(const std::string& key, const std::string& owner);
  void release(const std::set<std::string>& keys);
  std::optional<api::ApiError> allocate_ip(const std::string& owner, std::string* ip,
                                           std::set<std::string>* claimed);
  std::optional<api::ApiError> allocate_port(const std::string& owner, int* port,
                                             std::set<std::string>* claimed);

  storage::Store& store_;
  const uint32_t base_;  // network address, host order
  const uint32_t size_;  // addresses in the range
  const int node_port_min_;
  const int node_port_max_;
};

}  // namespace skiff::apiserver
