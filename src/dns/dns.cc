#include "dns/dns.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>

#include <condition_variable>
#include <mutex>
#include <thread>

#include "base/log.h"
#include "client/http_client.h"
#include "dns/server.h"

namespace skiff::dns {
namespace {

using client::resources::kEndpoints;
using client::resources::kEndpointSlices;
using client::resources::kServices;

constexpr const char* kSliceName = "kube-dns-skiff";

std::string first_host_ipv4() {
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) return "";
  std::string found;
  for (ifaddrs* a = list; a != nullptr && found.empty(); a = a->ifa_next) {
    if (a->ifa_addr == nullptr || a->ifa_addr->sa_family != AF_INET) continue;
    if ((a->ifa_flags & IFF_LOOPBACK) != 0 || (a->ifa_flags & IFF_UP) == 0) continue;
    char buf[INET_ADDRSTRLEN] = {};
    auto* in = reinterpret_cast<sockaddr_in*>(a->ifa_addr);
    if (inet_ntop(AF_INET, &in->sin_addr, buf, sizeof(buf)) != nullptr) found = buf;
  }
  freeifaddrs(list);
  return found;
}

bool is_unspecified(const std::string& ip) {
  return ip == "0.0.0.0" || ip == "::" || ip.empty();
}

Json dns_ports(int target_port, bool service) {
  Json udp = {{"name", "dns"}, {"port", service ? 53 : target_port}, {"protocol", "UDP"}};
  Json tcp = {{"name", "dns-tcp"}, {"port", service ? 53 : target_port}, {"protocol", "TCP"}};
  if (service) {
    udp["targetPort"] = target_port;
    tcp["targetPort"] = target_port;
  }
  return Json::array({udp, tcp});
}

Json labels() {
  return {{"k8s-app", "kube-dns"},
          {"kubernetes.io/cluster-service", "true"},
          {"kubernetes.io/name", "CoreDNS"}};
}

// Keeps kube-system/kube-dns, its Endpoints and its EndpointSlice as DNS needs them.
class ServiceKeeper {
 public:
  ServiceKeeper(client::ApiClient& api, const DnsOptions& options, std::string address, int port)
      : api_(api), options_(options), address_(std::move(address)), port_(port) {}

  // One pass; the first error is returned after trying every object.
  Status sync() {
    Status s1 = sync_service();
    Status s2 = sync_endpoints();
    Status s3 = sync_slice();
    return !s1.is_ok() ? s1 : !s2.is_ok() ? s2 : s3;
  }

 private:
  client::WriteOptions write_options() const {
    client::WriteOptions w;
    w.field_manager = "skiff-dns";
    return w;
  }

  Status sync_service() {
    auto got = api_.get(kServices, kDnsServiceNamespace, kDnsServiceName);
    if (!got.is_ok() && got.status().code() != StatusCode::kNotFound) return got.status();
    if (!got.is_ok()) {
      Json svc = {
          {"apiVersion", "v1"},
          {"kind", "Service"},
          {"metadata",
           {{"name", kDnsServiceName}, {"namespace", kDnsServiceNamespace}, {"labels", labels()}}},
          {"spec",
           {{"type", "ClusterIP"},
            {"clusterIP", options_.service_ip},
            {"ports", dns_ports(port_, true)}}}};
      auto r = api_.create(kServices, kDnsServiceNamespace, svc, write_options());
      if (!r.is_ok() && r.status().code() != StatusCode::kAlreadyExists) return r.status();
      if (r.is_ok())
        SKIFF_LOG_INFO("dns: created Service {}/{}", kDnsServiceNamespace, kDnsServiceName);
      return Status::ok();
    }
    Json svc = std::move(got).value();
    Json& spec = svc["spec"];
    if (spec.value("clusterIP", "") != options_.service_ip) {
      // The cluster IP cannot change in place: the Service was made by someone else.
      SKIFF_LOG_WARN(
          "dns: Service {}/{} has cluster IP {}, not {}; pods' resolv.conf may not reach DNS",
          kDnsServiceNamespace, kDnsServiceName, spec.value("clusterIP", ""), options_.service_ip);
    }
    Json want_ports = dns_ports(port_, true);
    bool ports_ok = spec.contains("ports") && spec["ports"].is_array() &&
                    spec["ports"].size() == want_ports.size();
    if (ports_ok) {
      for (size_t i = 0; i < want_ports.size(); ++i) {
        const Json& have = spec["ports"][i];
        for (const char* f : {"name", "port", "protocol", "targetPort"}) {
          if (!have.contains(f) || have[f] != want_ports[i][f]) ports_ok = false;
        }
      }
    }
    bool selector_ok = !spec.contains("selector") || spec["selector"].is_null();
    if (ports_ok && selector_ok) return Status::ok();
    spec["ports"] = want_ports;
    // A selector would hand the Service to the endpoints controllers, which would empty it.
    spec.erase("selector");
    auto r = api_.update(kServices, kDnsServiceNamespace, svc, write_options());
    return r.is_ok() ? Status::ok() : r.status();
  }

  Status sync_endpoints() {
    Json subsets = Json::array(
        {{{"addresses", Json::array({{{"ip", address_}}})}, {"ports", dns_ports(port_, false)}}});
    auto got = api_.get(kEndpoints, kDnsServiceNamespace, kDnsServiceName);
    if (!got.is_ok() && got.status().code() != StatusCode::kNotFound) return got.status();
    if (!got.is_ok()) {
      Json ep = {
          {"apiVersion", "v1"},
          {"kind", "Endpoints"},
          {"metadata",
           {{"name", kDnsServiceName}, {"namespace", kDnsServiceNamespace}, {"labels", labels()}}},
          {"subsets", subsets}};
      auto r = api_.create(kEndpoints, kDnsServiceNamespace, ep, write_options());
      if (!r.is_ok() && r.status().code() != StatusCode::kAlreadyExists) return r.status();
      return Status::ok();
    }
    Json ep = std::move(got).value();
    if (ep.contains("subsets") && ep["subsets"] == subsets) return Status::ok();
    ep["subsets"] = subsets;
    auto r = api_.update(kEndpoints, kDnsServiceNamespace, ep, write_options());
    return r.is_ok() ? Status::ok() : r.status();
  }

  Status sync_slice() {
    Json endpoints =
        Json::array({{{"addresses", Json::array({address_})}, {"conditions", {{"ready", true}}}}});
    std::string address_type = address_.find(':') != std::string::npos ? "IPv6" : "IPv4";
    Json slice_labels = labels();
    slice_labels["kubernetes.io/service-name"] = kDnsServiceName;
    slice_labels["endpointslice.kubernetes.io/managed-by"] = kDnsEndpointSliceManager;
    auto got = api_.get(kEndpointSlices, kDnsServiceNamespace, kSliceName);
    if (!got.is_ok() && got.status().code() != StatusCode::kNotFound) return got.status();
    if (!got.is_ok()) {
      Json slice = {
          {"apiVersion", "discovery.k8s.io/v1"},
          {"kind", "EndpointSlice"},
          {"metadata",
           {{"name", kSliceName}, {"namespace", kDnsServiceNamespace}, {"labels", slice_labels}}},
          {"addressType", address_type},
          {"endpoints", endpoints},
          {"ports", dns_ports(port_, false)}};
      auto r = api_.create(kEndpointSlices, kDnsServiceNamespace, slice, write_options());
      if (!r.is_ok() && r.status().code() != StatusCode::kAlreadyExists) return r.status();
      return Status::ok();
    }
    Json slice = std::move(got).value();
    Json& meta = slice["metadata"];
    bool labels_ok = true;
    for (const auto& [k, v] : slice_labels.items()) {
      if (!meta.contains("labels") || !meta["labels"].is_object() || !meta["labels"].contains(k) ||
          meta["labels"][k] != v) {
        labels_ok = false;
      }
    }
    if (labels_ok && slice.value("addressType", "") == address_type &&
        slice.value("endpoints", Json()) == endpoints &&
        slice.value("ports", Json()) == dns_ports(port_, false)) {
      return Status::ok();
    }
    if (slice.value("addressType", "") != address_type) {
      // addressType is immutable: replace the slice.
      auto r = api_.remove(kEndpointSlices, kDnsServiceNamespace, kSliceName);
      if (!r.is_ok() && r.status().code() != StatusCode::kNotFound) return r.status();
      return sync_slice();
    }
    for (const auto& [k, v] : slice_labels.items()) meta["labels"][k] = v;
    slice["endpoints"] = endpoints;
    slice["ports"] = dns_ports(port_, false);
    auto r = api_.update(kEndpointSlices, kDnsServiceNamespace, slice, write_options());
    return r.is_ok() ? Status::ok() : r.status();
  }

  client::ApiClient& api_;
  const DnsOptions& options_;
  const std::string address_;
  const int port_;
};

}  // namespace

Result<std::string> cluster_dns_ip(const std::string& service_cidr) {
  size_t slash = service_cidr.find('/');
  in_addr addr{};
  if (slash == std::string::npos ||
      inet_pton(AF_INET, service_cidr.substr(0, slash).c_str(), &addr) != 1) {
    return error(StatusCode::kInvalidArgument, "not an IPv4 CIDR: " + service_cidr);
  }
  const std::string bits = service_cidr.substr(slash + 1);
  if (bits.empty() || bits.size() > 2 ||
      bits.find_first_not_of("0123456789") != std::string::npos || std::stoi(bits) > 28) {
    return error(StatusCode::kInvalidArgument,
                 "the Service range " + service_cidr + " has no tenth address");
  }
  int prefix = std::stoi(bits);
  uint32_t mask = prefix == 0 ? 0 : ~0u << (32 - prefix);
  addr.s_addr = htonl((ntohl(addr.s_addr) & mask) + 10);
  char buf[INET_ADDRSTRLEN] = {};
  inet_ntop(AF_INET, &addr, buf, sizeof(buf));
  return std::string(buf);
}

void connect_informers(ClusterRecords& records, client::Informer& services,
                       client::Informer& slices) {
  services.add_handlers({
      .on_add = [&records](const client::ObjectPtr& o) { records.upsert_service(*o); },
      .on_update = [&records](const client::ObjectPtr&,
                              const client::ObjectPtr& o) { records.upsert_service(*o); },
      .on_delete = [&records](const client::ObjectPtr& o) { records.delete_service(*o); },
  });
  slices.add_handlers({
      .on_add = [&records](const client::ObjectPtr& o) { records.upsert_endpoint_slice(*o); },
      .on_update = [&records](const client::ObjectPtr&,
                              const client::ObjectPtr& o) { records.upsert_endpoint_slice(*o); },
      .on_delete = [&records](const client::ObjectPtr& o) { records.delete_endpoint_slice(*o); },
  });
}

Status run_dns(client::ApiClient& api, const DnsOptions& options, std::stop_token stop,
               const std::function<void(int port)>& on_serving) {
  RecordsOptions ro;
  ro.zone = options.cluster_domain;
  ro.service_cidrs = options.service_cidrs;
  ro.pod_cidrs = options.pod_cidrs;
  ro.dns_ip = options.service_ip;
  SKIFF_ASSIGN_OR_RETURN(auto records, ClusterRecords::create(ro));

  std::vector<std::string> upstreams = options.upstreams;
  if (upstreams.empty()) {
    auto from_file = read_resolv_conf(options.resolv_conf);
    if (from_file.is_ok()) {
      upstreams = std::move(from_file).value();
    } else {
      SKIFF_LOG_WARN("dns: {}; names outside {} will get SERVFAIL", from_file.status().message(),
                     options.cluster_domain);
    }
  }
  // The cluster DNS's own Service address leads back here.
  std::erase_if(upstreams, [&](const std::string& u) {
    return u == options.service_ip || u == options.service_ip + ":53";
  });

  std::string advertise = options.advertise_address;
  if (advertise.empty()) {
    advertise = is_unspecified(options.bind_address) ? first_host_ipv4() : options.bind_address;
  }
  if (options.manage_service && advertise.empty()) {
    return error(StatusCode::kInvalidArgument,
                 "dns: no address to advertise for kube-dns (set the advertise address)");
  }

  client::InformerOptions io;
  client::Informer services(api, kServices, io);
  client::Informer slices(api, kEndpointSlices, io);
  services.set_transform(client::strip_managed_fields);
  slices.set_transform(client::strip_managed_fields);
  connect_informers(*records, services, slices);

  // kube-dns changes wake the keeper at once.
  std::mutex mu;
  std::condition_variable_any cv;
  bool dirty = true;
  auto poke = [&](const client::ObjectPtr& o) {
    if (client::namespace_of(*o) != kDnsServiceNamespace) return;
    if (client::name_of(*o) != kDnsServiceName && client::name_of(*o) != kSliceName) return;
    std::lock_guard lock(mu);
    dirty = true;
    cv.notify_all();
  };
  for (client::Informer* inf : {&services, &slices}) {
    inf->add_handlers(
        {.on_add = poke,
         .on_update = [poke](const client::ObjectPtr&, const client::ObjectPtr& o) { poke(o); },
         .on_delete = poke});
  }
  services.start();
  slices.start();
  // Serve once the caches are filled, or after a while anyway (answers fill in as they sync).
  auto sync_deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!stop.stop_requested() && std::chrono::steady_clock::now() < sync_deadline &&
         !(services.has_synced() && slices.has_synced())) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (stop.stop_requested()) return Status::ok();
  if (!services.has_synced() || !slices.has_synced()) {
    SKIFF_LOG_WARN("dns: serving before the Service and EndpointSlice caches synced");
  }

  DnsServerOptions so;
  so.address = options.bind_address;
  so.port = options.port;
  so.upstreams = upstreams;
  so.upstream_timeout = options.upstream_timeout;
  so.threads = options.threads;
  DnsServer server(*records, so);
  SKIFF_RETURN_IF_ERROR(server.start());
  SKIFF_LOG_INFO("dns: serving {} on {}:{} (UDP, TCP), forwarding to [{}]", options.cluster_domain,
                 options.bind_address, server.port(), fmt::join(server.upstreams(), ", "));
  if (on_serving) on_serving(server.port());

  ServiceKeeper keeper(api, options, advertise, server.port());
  auto backoff = std::chrono::milliseconds(500);
  while (!stop.stop_requested()) {
    std::chrono::milliseconds wait = options.resync_period;
    if (options.manage_service) {
      {
        std::lock_guard lock(mu);
        dirty = false;
      }
      Status s = keeper.sync();
      if (!s.is_ok()) {
        SKIFF_LOG_WARN("dns: keeping {}/{}: {}", kDnsServiceNamespace, kDnsServiceName,
                       s.to_string());
        wait = backoff;
        backoff = std::min(backoff * 2, options.resync_period);
      } else {
        backoff = std::chrono::milliseconds(500);
      }
    }
    std::unique_lock lock(mu);
    cv.wait_for(lock, stop, wait, [&] { return dirty && options.manage_service; });
  }
  server.stop();
  services.stop();
  slices.stop();
  return Status::ok();
}

Status run_dns(const DnsOptions& options, std::stop_token stop) {
  client::HttpClientOptions http;
  http.user_agent = "skiff-dns";
  http.field_manager = "skiff-dns";
  SKIFF_ASSIGN_OR_RETURN(auto api,
                         client::HttpApiClient::from_kubeconfig_file(options.kubeconfig, http));
  return run_dns(*api, options, stop);
}

}  // namespace skiff::dns
