#pragma once

// The cluster's DNS data: the answers skiff's DNS server gives for the cluster domain, computed
// from Services and EndpointSlices as the informers hand them (the records of the Kubernetes
// DNS-based service discovery specification, with CoreDNS's `kubernetes` plugin as the model):
//
//   <svc>.<ns>.svc.<zone>                A/AAAA: the cluster IPs; headless: every ready endpoint
//                                         address; ExternalName: a CNAME
//   <host>.<svc>.<ns>.svc.<zone>          A/AAAA of a ready endpoint, <host> being the endpoint's
//                                         hostname or its address with dashes ("10-42-0-5")
//   _<port>._<proto>.<svc>.<ns>.svc.<zone> SRV per named port (headless: per endpoint); SRV at
//                                         <svc>.<ns>.svc.<zone> lists every port
//   <a-b-c-d>.<ns>.pod.<zone>             A/AAAA of any well-formed address ("pods insecure")
//   reverse names                         PTR for cluster IPs and ready endpoint addresses
//   dns-version.<zone>                    TXT "1.1.0"
//   <zone> SOA and NS, ns.dns.<zone> A    the zone's own records
//
// A name that exists with other types, or has names below it (`<ns>.svc.<zone>` while the
// namespace has Services, `svc.<zone>`), answers NODATA (NOERROR, SOA in the authority section);
// other names in the zone answer NXDOMAIN. Names outside the zone, and reverse names of addresses
// that are neither known nor inside the configured service/pod CIDRs, are not ours: answer()
// says to forward them.
//
// Names are kept in a hash map from name to records, updated per Service on every informer event,
// so a lookup is one hash probe whatever the number of Services.
//
// Thread-safety: every method is safe from any thread; lookups share a reader lock and run in
// parallel, updates take it exclusively.

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "base/status.h"

namespace skiff::dns {

using Json = nlohmann::json;

// Resource record types, numbered as on the wire.
enum class RrType : uint16_t {
  kA = 1,
  kNs = 2,
  kCname = 5,
  kSoa = 6,
  kPtr = 12,
  kTxt = 16,
  kAaaa = 28,
  kSrv = 33,
  kAny = 255,
};

// Response codes, numbered as on the wire.
enum class Rcode : uint8_t {
  kNoError = 0,
  kFormErr = 1,
  kServFail = 2,
  kNxDomain = 3,
  kNotImp = 4,
  kRefused = 5,
};

// One resource record. Names are lower case and fully qualified with the trailing dot.
struct Record {
  std::string name;
  RrType type = RrType::kA;
  uint32_t ttl = 0;
  // A/AAAA: the address ("10.43.0.1", "fd00::1"); CNAME/PTR/NS/SRV: the target name;
  // TXT: the text; SOA: the primary server's name.
  std::string data;
  uint16_t priority = 0, weight = 0, port = 0;  // SRV
  // SOA
  std::string mailbox;
  uint32_t serial = 0, refresh = 0, retry = 0, expire = 0, minimum = 0;

  bool operator==(const Record&) const = default;
};

struct Answer {
  // Not in the cluster's zones: the server forwards the question upstream.
  bool forward = false;
  Rcode rcode = Rcode::kNoError;
  bool authoritative = false;
  std::vector<Record> answer;
  std::vector<Record> authority;
  std::vector<Record> additional;
};

struct RecordsOptions {
  std::string zone = "cluster.local";
  uint32_t ttl = 5;  // CoreDNS's default
  // Reverse names of addresses inside these CIDRs are answered here (NXDOMAIN when the address
  // is unknown) rather than forwarded. "10.43.0.0/16", "fd00:43::/112".
  std::vector<std::string> service_cidrs;
  std::vector<std::string> pod_cidrs;
  // The address of the DNS service itself: ns.dns.<zone>, the zone's NS. Empty: none.
  std::string dns_ip;
};

// An IPv4 or IPv6 network.
struct Cidr {
  std::array<uint8_t, 16> addr{};
  int bits = 0;
  bool v6 = false;
  static Result<Cidr> parse(std::string_view text);
  bool contains(const std::array<uint8_t, 16>& a, bool is_v6) const;
};

class ClusterRecords {
 public:
  // kInvalidArgument for a malformed zone or CIDR.
  static Result<std::unique_ptr<ClusterRecords>> create(RecordsOptions options);

  // Informer events. Objects of other namespaces' Services are independent; a slice may arrive
  // before its Service and is kept until it is deleted.
  void upsert_service(const Json& service);
  void delete_service(const Json& service);
  void upsert_endpoint_slice(const Json& slice);
  void delete_endpoint_slice(const Json& slice);

  // The answer to (qname, qtype), class IN. `qname` may be in any case, with or without the
  // trailing dot.
  Answer answer(std::string_view qname, uint16_t qtype) const;

  // The zone with the trailing dot ("cluster.local.").
  const std::string& zone() const { return zone_; }
  // Names currently indexed (for tests and metrics).
  size_t name_count() const;

 private:
  struct Port {
    std::string name;
    std::string protocol;  // lower case: tcp, udp, sctp
    uint16_t port = 0;
  };
  struct SliceEndpoint {
    std::vector<std::string> addresses;
    std::string hostname;
    bool ready = true;
  };
  struct Slice {
    std::vector<Port> ports;
    std::vector<SliceEndpoint> endpoints;
  };
  enum class ServiceKind : uint8_t { kClusterIp, kHeadless, kExternalName };
  struct Service {
    ServiceKind kind = ServiceKind::kClusterIp;
    std::vector<std::string> cluster_ips;
    std::string external_name;
    std::vector<Port> ports;
  };
  struct ServiceState {
    uint64_t id = 0;
    std::optional<Service> service;
    std::map<std::string, Slice> slices;  // slice name → slice
    std::vector<std::string> names;       // names this Service's records are under
  };
  struct Entry {
    uint64_t owner;
    Record record;
  };
  struct Node {
    std::vector<Entry> entries;
    uint32_t children = 0;  // names below this one (it exists even without records)
  };

  explicit ClusterRecords(RecordsOptions options, std::string zone, std::vector<Cidr> cidrs);

  // Recomputes the records of one Service; mu_ held exclusively.
  void rebuild_locked(const std::string& key, ServiceState& state);
  void remove_names_locked(ServiceState& state);
  void add_record_locked(ServiceState& state, Record record);
  void touch_locked();

  Answer answer_reverse(const std::string& name, uint16_t qtype) const;
  Answer answer_pod(const std::string& name, std::string_view label, uint16_t qtype) const;
  void add_glue_locked(Answer& a) const;
  Record soa(const std::string& owner) const;
  Answer negative(Rcode rcode, const std::string& soa_owner) const;

  const RecordsOptions options_;
  const std::string zone_;  // "cluster.local."
  const std::vector<Cidr> cidrs_;

  mutable std::shared_mutex mu_;
  std::unordered_map<std::string, Node> names_;             // guarded by mu_
  std::unordered_map<std::string, ServiceState> services_;  // "ns/name" → state; guarded by mu_
  uint64_t next_id_ = 1;                                    // guarded by mu_
  // slice "ns/name" → the key of the Service it belongs to; guarded by mu_
  std::unordered_map<std::string, std::string> slice_owner_;
  std::atomic<uint32_t> serial_{0};  // the SOA serial: the time of the last change
};

// Parses "1.2.3.4" or "fd00::1" into 16 bytes (IPv4 in the first 4); nullopt when malformed.
std::optional<std::array<uint8_t, 16>> parse_ip(std::string_view text, bool* is_v6);
// The reverse name of an address ("4.3.2.1.in-addr.arpa."), "" when malformed.
std::string reverse_name(std::string_view ip);

}  // namespace skiff::dns
