#include "apiserver/service_allocator.h"

#include <arpa/inet.h>

#include <random>

namespace skiff::apiserver {
namespace {

using nlohmann::json;

constexpr char kIpPrefix[] = "/registry/ranges/serviceips/";
constexpr char kPortPrefix[] = "/registry/ranges/servicenodeports/";

std::string owner_of(const json& svc) {
  const json& meta = svc["metadata"];
  return meta.value("namespace", "") + "/" + meta.value("name", "");
}

bool uses_node_ports(const json& svc) {
  std::string type = svc["spec"].value("type", "ClusterIP");
  return type == "NodePort" || type == "LoadBalancer";
}

std::optional<uint32_t> parse_ipv4(const std::string& s) {
  in_addr a{};
  if (inet_pton(AF_INET, s.c_str(), &a) != 1) return std::nullopt;
  return ntohl(a.s_addr);
}

std::string format_ipv4(uint32_t host_order) {
  in_addr a{};
  a.s_addr = htonl(host_order);
  char buf[INET_ADDRSTRLEN];
  inet_ntop(AF_INET, &a, buf, sizeof(buf));
  return buf;
}

std::mt19937& rng() {
  thread_local std::mt19937 gen(std::random_device{}());
  return gen;
}

api::ApiError invalid_service(const json& svc, const std::string& field, const std::string& value,
                              const std::string& detail) {
  api::FieldErrors errors;
  errors.invalid(field, value, detail);
  return api::ApiError::invalid("Service", "", svc["metadata"].value("name", ""), errors.take());
}

}  // namespace

Result<std::unique_ptr<ServiceAllocator>> ServiceAllocator::create(storage::Store& store,
                                                                   const std::string& cidr,
                                                                   int node_port_min,
                                                                   int node_port_max) {
  size_t slash = cidr.find('/');
  auto base = parse_ipv4(cidr.substr(0, slash));
  int bits = slash == std::string::npos ? -1 : std::atoi(cidr.c_str() + slash + 1);
  if (!base || bits < 8 || bits > 29) {
    return Status(StatusCode::kInvalidArgument,
                  "invalid service CIDR \"" + cidr + "\" (want an IPv4 range from /8 to /29)");
  }
  uint32_t size = 1u << (32 - bits);
  uint32_t network = *base & ~(size - 1);
  return std::unique_ptr<ServiceAllocator>(
      new ServiceAllocator(store, network, size, node_port_min, node_port_max));
}

bool ServiceAllocator::ip_in_range(const std::string& ip) const {
  auto v = parse_ipv4(ip);
  // The network and broadcast addresses are never handed out.
  return v && *v > base_ && *v < base_ + size_ - 1;
}

std::set<std::string> ServiceAllocator::held_keys(const json& svc) const {
  std::set<std::string> keys;
  const json& spec = svc.contains("spec") ? svc["spec"] : json::object();
  std::string ip = spec.value("clusterIP", "");
  if (!ip.empty() && ip != "None" && ip_in_range(ip)) keys.insert(kIpPrefix + ip);
  if (spec.contains("ports") && spec["ports"].is_array()) {
    for (const json& p : spec["ports"]) {
      if (p.contains("nodePort") && p["nodePort"].is_number_integer()) {
        keys.insert(kPortPrefix + std::to_string(p["nodePort"].get<int>()));
      }
    }
  }
  return keys;
}

Result<bool> ServiceAllocator::claim(const std::string& key, const std::string& owner) {
  storage::Txn txn;
  txn.compare.push_back(storage::Compare::absent(key));
  txn.success.push_back(storage::Op::put(key, owner));
  txn.failure.push_back(storage::Op::get(storage::KeyRange::single(key)));
  auto result = store_.txn(txn);
  if (!result.is_ok()) return result.status();
  if (result->succeeded) return true;
  // Already ours (an update re-reserving what it holds) counts as claimed.
  const auto& kvs = result->results.front().kvs;
  return !kvs.empty() && kvs.front()->value == owner;
}

void ServiceAllocator::release(const std::set<std::string>& keys) {
  for (const std::string& key : keys) (void)store_.del(storage::KeyRange::single(key));
}

std::optional<api::ApiError> ServiceAllocator::allocate_ip(const std::string& owner,
                                                           std::string* ip,
                                                           std::set<std::string>* claimed) {
  // Random probes first; the range is large and sparse in practice.
  std::uniform_int_distribution<uint32_t> pick(1, size_ - 2);
  // .10 is kept for the cluster DNS service, which asks for it by address.
  const uint32_t dns_offset = 10;
  for (int i = 0; i < 64; ++i) {
    uint32_t off = pick(rng());
    if (off == dns_offset) continue;
    std::string candidate = format_ipv4(base_ + off);
    auto ok = claim(kIpPrefix + candidate, owner);
    if (!ok.is_ok()) return api::ApiError::from_storage(ok.status());
    if (*ok) {
      claimed->insert(kIpPrefix + candidate);
      *ip = candidate;
      return std::nullopt;
    }
  }
  // Then a scan for whatever is left.
  auto used = store_.range(storage::KeyRange::prefix(kIpPrefix), {0, 0, false, true});
  if (!used.is_ok()) return api::ApiError::from_storage(used.status());
  std::set<std::string> taken;
  for (const auto& kv : used->kvs) taken.insert(kv->key);
  for (uint32_t off = 1; off + 1 < size_; ++off) {
    if (off == dns_offset) continue;
    std::string candidate = format_ipv4(base_ + off);
    if (taken.count(kIpPrefix + candidate)) continue;
    auto ok = claim(kIpPrefix + candidate, owner);
    if (!ok.is_ok()) return api::ApiError::from_storage(ok.status());
    if (*ok) {
      claimed->insert(kIpPrefix + candidate);
      *ip = candidate;
      return std::nullopt;
    }
  }
  api::ApiError e = api::ApiError::internal("failed to allocate a serviceIP: range is full");
  return e;
}

std::optional<api::ApiError> ServiceAllocator::allocate_port(const std::string& owner, int* port,
                                                             std::set<std::string>* claimed) {
  std::uniform_int_distribution<int> pick(node_port_min_, node_port_max_);
  for (int i = 0; i < 64; ++i) {
    int candidate = pick(rng());
    std::string key = kPortPrefix + std::to_string(candidate);
    // claim() succeeds for keys this service holds already: never hand out one of those twice.
    if (claimed->count(key)) continue;
    auto ok = claim(key, owner);
    if (!ok.is_ok()) return api::ApiError::from_storage(ok.status());
    if (*ok) {
      claimed->insert(key);
      *port = candidate;
      return std::nullopt;
    }
  }
  for (int candidate = node_port_min_; candidate <= node_port_max_; ++candidate) {
    std::string key = kPortPrefix + std::to_string(candidate);
    if (claimed->count(key)) continue;
    auto ok = claim(key, owner);
    if (!ok.is_ok()) return api::ApiError::from_storage(ok.status());
    if (*ok) {
      claimed->insert(key);
      *port = candidate;
      return std::nullopt;
    }
  }
  return api::ApiError::internal("failed to allocate a nodePort: range is full");
}

std::optional<api::ApiError> ServiceAllocator::reserve(json& svc, const json* old) {
  std::string owner = owner_of(svc);
  json& spec = svc["spec"];
  std::string type = spec.value("type", "ClusterIP");
  std::set<std::string> had = old ? held_keys(*old) : std::set<std::string>();
  std::set<std::string> claimed;  // newly claimed by this call, released on error
  auto fail = [&](api::ApiError e) {
    release(claimed);
    return std::optional<api::ApiError>(std::move(e));
  };

  if (type == "ExternalName") {
    spec.erase("clusterIP");
    spec.erase("clusterIPs");
  } else {
    std::string ip = spec.value("clusterIP", "");
    if (ip.empty() && old) ip = (*old)["spec"].value("clusterIP", "");
    if (ip != "None") {
      if (ip.empty()) {
        if (auto e = allocate_ip(owner, &ip, &claimed)) return fail(*e);
      } else if (!had.count(kIpPrefix + ip)) {
        if (!ip_in_range(ip)) {
          return fail(invalid_service(svc, "spec.clusterIPs", "[\"" + ip + "\"]",
                                      "failed to allocate IP " + ip + ": the provided IP (" + ip +
                                          ") is not in the valid range"));
        }
        auto ok = claim(kIpPrefix + ip, owner);
        if (!ok.is_ok()) return fail(api::ApiError::from_storage(ok.status()));
        if (!*ok) {
          return fail(invalid_service(
              svc, "spec.clusterIPs", "[\"" + ip + "\"]",
              "failed to allocate IP " + ip + ": provided IP is already allocated"));
        }
        claimed.insert(kIpPrefix + ip);
      }
      spec["ipFamilies"] = json::array({"IPv4"});
      if (!spec.contains("ipFamilyPolicy")) spec["ipFamilyPolicy"] = "SingleStack";
    }
    spec["clusterIP"] = ip;
    spec["clusterIPs"] = json::array({ip});
  }

  if (uses_node_ports(svc) && spec.contains("ports") && spec["ports"].is_array()) {
    // Requested ports first, so a port allocated at random never takes one the service asks
    // for itself.
    for (size_t i = 0; i < spec["ports"].size(); ++i) {
      json& p = spec["ports"][i];
      if (p.contains("nodePort") && p["nodePort"].is_number_integer()) {
        int port = p["nodePort"].get<int>();
        std::string key = kPortPrefix + std::to_string(port);
        if (had.count(key) || claimed.count(key)) continue;
        auto ok = claim(key, owner);
        if (!ok.is_ok()) return fail(api::ApiError::from_storage(ok.status()));
        if (!*ok) {
          return fail(invalid_service(svc, "spec.ports[" + std::to_string(i) + "].nodePort",
                                      std::to_string(port), "provided port is already allocated"));
        }
        claimed.insert(key);
      }
    }
    for (json& p : spec["ports"]) {
      if (p.contains("nodePort") && p["nodePort"].is_number_integer()) continue;
      int port = 0;
      if (auto e = allocate_port(owner, &port, &claimed)) return fail(*e);
      p["nodePort"] = port;
    }
  }
  return std::nullopt;
}

void ServiceAllocator::settle(const json* svc, const json* old, bool committed) {
  std::set<std::string> now = svc ? held_keys(*svc) : std::set<std::string>();
  std::set<std::string> before = old ? held_keys(*old) : std::set<std::string>();
  std::set<std::string> drop;
  const auto& from = committed ? before : now;
  const auto& keep = committed ? now : before;
  for (const std::string& k : from) {
    if (!keep.count(k)) drop.insert(k);
  }
  release(drop);
}

}  // namespace skiff::apiserver
