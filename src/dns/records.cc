#include "dns/records.h"

#include <arpa/inet.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <mutex>
#include <set>

namespace skiff::dns {
namespace {

constexpr const char* kServiceNameLabel = "kubernetes.io/service-name";
constexpr const char* kSchemaVersion = "1.1.0";  // of the DNS specification (dns-version TXT)

const Json& member(const Json& obj, const char* key) {
  static const Json kNull;
  if (!obj.is_object()) return kNull;
  auto it = obj.find(key);
  return it == obj.end() ? kNull : *it;
}

std::string string_member(const Json& obj, const char* key) {
  const Json& v = member(obj, key);
  return v.is_string() ? v.get<std::string>() : std::string();
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

// Lower case with the trailing dot.
std::string canonical_name(std::string_view s) {
  std::string out = lower(s);
  if (out.empty() || out.back() != '.') out.push_back('.');
  return out;
}

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

std::string dashed(std::string_view ip) {
  std::string out(ip);
  std::replace(out.begin(), out.end(), '.', '-');
  std::replace(out.begin(), out.end(), ':', '-');
  return out;
}

bool is_v6_text(std::string_view ip) {
  return ip.find(':') != std::string_view::npos;
}

std::string lower_protocol(const Json& port) {
  std::string p = lower(string_member(port, "protocol"));
  return p.empty() ? "tcp" : p;
}

bool matches_type(RrType t, uint16_t qtype) {
  return qtype == static_cast<uint16_t>(RrType::kAny) || static_cast<uint16_t>(t) == qtype;
}

// Splits "a.b.c." into {"a", "b", "c"}.
std::vector<std::string_view> labels_of(std::string_view name) {
  std::vector<std::string_view> out;
  size_t start = 0;
  while (start < name.size()) {
    size_t dot = name.find('.', start);
    if (dot == std::string_view::npos) dot = name.size();
    out.push_back(name.substr(start, dot - start));
    start = dot + 1;
  }
  return out;
}

}  // namespace

std::optional<std::array<uint8_t, 16>> parse_ip(std::string_view text, bool* is_v6) {
  std::array<uint8_t, 16> out{};
  std::string s(text);
  bool v6 = is_v6_text(text);
  if (inet_pton(v6 ? AF_INET6 : AF_INET, s.c_str(), out.data()) != 1) return std::nullopt;
  if (is_v6) *is_v6 = v6;
  return out;
}

std::string reverse_name(std::string_view ip) {
  bool v6 = false;
  auto a = parse_ip(ip, &v6);
  if (!a) return "";
  std::string out;
  if (!v6) {
    for (int i = 3; i >= 0; --i) out += std::to_string((*a)[i]) + ".";
    return out + "in-addr.arpa.";
  }
  static const char* kHex = "0123456789abcdef";
  for (int i = 15; i >= 0; --i) {
    out += kHex[(*a)[i] & 0xf];
    out += '.';
    out += kHex[(*a)[i] >> 4];
    out += '.';
  }
  return out + "ip6.arpa.";
}

Result<Cidr> Cidr::parse(std::string_view text) {
  size_t slash = text.find('/');
  if (slash == std::string_view::npos) {
    return error(StatusCode::kInvalidArgument,
                 "CIDR without a prefix length: " + std::string(text));
  }
  Cidr c;
  auto a = parse_ip(text.substr(0, slash), &c.v6);
  if (!a) return error(StatusCode::kInvalidArgument, "malformed CIDR: " + std::string(text));
  c.addr = *a;
  std::string bits(text.substr(slash + 1));
  if (bits.empty() || bits.size() > 3 ||
      !std::all_of(bits.begin(), bits.end(), [](char ch) { return ch >= '0' && ch <= '9'; })) {
    return error(StatusCode::kInvalidArgument, "malformed CIDR: " + std::string(text));
  }
  c.bits = std::stoi(bits);
  if (c.bits > (c.v6 ? 128 : 32)) {
    return error(StatusCode::kInvalidArgument, "prefix length out of range: " + std::string(text));
  }
  return c;
}

bool Cidr::contains(const std::array<uint8_t, 16>& a, bool is_v6) const {
  if (is_v6 != v6) return false;
  int full = bits / 8, rest = bits % 8;
  if (std::memcmp(a.data(), addr.data(), full) != 0) return false;
  if (rest == 0) return true;
  uint8_t mask = static_cast<uint8_t>(0xff << (8 - rest));
  return (a[full] & mask) == (addr[full] & mask);
}

Result<std::unique_ptr<ClusterRecords>> ClusterRecords::create(RecordsOptions options) {
  std::string zone = canonical_name(options.zone);
  if (zone == "." || zone.find("..") != std::string::npos || zone.front() == '.') {
    return error(StatusCode::kInvalidArgument, "malformed cluster domain: " + options.zone);
  }
  std::vector<Cidr> cidrs;
  for (const auto* list : {&options.service_cidrs, &options.pod_cidrs}) {
    for (const auto& c : *list) {
      SKIFF_ASSIGN_OR_RETURN(Cidr parsed, Cidr::parse(c));
      cidrs.push_back(parsed);
    }
  }
  if (!options.dns_ip.empty() && !parse_ip(options.dns_ip, nullptr)) {
    return error(StatusCode::kInvalidArgument, "malformed DNS service IP: " + options.dns_ip);
  }
  return std::unique_ptr<ClusterRecords>(
      new ClusterRecords(std::move(options), std::move(zone), std::move(cidrs)));
}

ClusterRecords::ClusterRecords(RecordsOptions options, std::string zone, std::vector<Cidr> cidrs)
    : options_(std::move(options)), zone_(std::move(zone)), cidrs_(std::move(cidrs)) {
  serial_ = static_cast<uint32_t>(std::chrono::duration_cast<std::chrono::seconds>(
                                      std::chrono::system_clock::now().time_since_epoch())
                                      .count());
}

size_t ClusterRecords::name_count() const {
  std::shared_lock lock(mu_);
  return names_.size();
}

void ClusterRecords::touch_locked() {
  auto now = static_cast<uint32_t>(std::chrono::duration_cast<std::chrono::seconds>(
                                       std::chrono::system_clock::now().time_since_epoch())
                                       .count());
  uint32_t cur = serial_.load();
  serial_.store(now > cur ? now : cur + 1);
}

// ---- updates ---------------------------------------------------------------------------------

void ClusterRecords::upsert_service(const Json& obj) {
  const Json& meta = member(obj, "metadata");
  std::string ns = string_member(meta, "namespace"), name = string_member(meta, "name");
  if (ns.empty() || name.empty()) return;
  const Json& spec = member(obj, "spec");
  Service svc;
  if (string_member(spec, "type") == "ExternalName") {
    svc.kind = ServiceKind::kExternalName;
    svc.external_name = string_member(spec, "externalName");
  } else if (string_member(spec, "clusterIP") == "None") {
    svc.kind = ServiceKind::kHeadless;
  } else {
    const Json& ips = member(spec, "clusterIPs");
    if (ips.is_array()) {
      for (const auto& ip : ips) {
        if (ip.is_string() && parse_ip(ip.get<std::string>(), nullptr)) {
          svc.cluster_ips.push_back(ip.get<std::string>());
        }
      }
    }
    std::string ip = string_member(spec, "clusterIP");
    if (svc.cluster_ips.empty() && parse_ip(ip, nullptr)) svc.cluster_ips.push_back(ip);
  }
  const Json& ports = member(spec, "ports");
  if (ports.is_array()) {
    for (const auto& p : ports) {
      const Json& num = member(p, "port");
      if (!num.is_number_integer()) continue;
      svc.ports.push_back({lower(string_member(p, "name")), lower_protocol(p),
                           static_cast<uint16_t>(num.get<int64_t>())});
    }
  }
  std::string key = ns + "/" + name;
  std::unique_lock lock(mu_);
  ServiceState& state = services_[key];
  if (state.id == 0) state.id = next_id_++;
  state.service = std::move(svc);
  rebuild_locked(key, state);
  touch_locked();
}

void ClusterRecords::delete_service(const Json& obj) {
  const Json& meta = member(obj, "metadata");
  std::string key = string_member(meta, "namespace") + "/" + string_member(meta, "name");
  std::unique_lock lock(mu_);
  auto it = services_.find(key);
  if (it == services_.end()) return;
  it->second.service.reset();
  rebuild_locked(key, it->second);
  if (it->second.slices.empty()) services_.erase(it);
  touch_locked();
}

void ClusterRecords::upsert_endpoint_slice(const Json& obj) {
  const Json& meta = member(obj, "metadata");
  std::string ns = string_member(meta, "namespace"), name = string_member(meta, "name");
  std::string svc = string_member(member(meta, "labels"), kServiceNameLabel);
  std::string slice_key = ns + "/" + name;
  std::string address_type = string_member(obj, "addressType");
  Slice slice;
  if (address_type == "IPv4" || address_type == "IPv6") {
    const Json& ports = member(obj, "ports");
    if (ports.is_array()) {
      for (const auto& p : ports) {
        const Json& num = member(p, "port");
        if (!num.is_number_integer()) continue;
        slice.ports.push_back({lower(string_member(p, "name")), lower_protocol(p),
                               static_cast<uint16_t>(num.get<int64_t>())});
      }
    }
    const Json& eps = member(obj, "endpoints");
    if (eps.is_array()) {
      for (const auto& ep : eps) {
        SliceEndpoint e;
        const Json& ready = member(member(ep, "conditions"), "ready");
        e.ready = !ready.is_boolean() || ready.get<bool>();
        e.hostname = lower(string_member(ep, "hostname"));
        const Json& addrs = member(ep, "addresses");
        if (addrs.is_array()) {
          for (const auto& a : addrs) {
            if (a.is_string() && parse_ip(a.get<std::string>(), nullptr)) {
              e.addresses.push_back(a.get<std::string>());
            }
          }
        }
        slice.endpoints.push_back(std::move(e));
      }
    }
  }
  std::unique_lock lock(mu_);
  // A slice that moved to another Service (or lost its label) leaves the old one.
  auto owner = slice_owner_.find(slice_key);
  std::string svc_key = svc.empty() ? std::string() : ns + "/" + svc;
  if (owner != slice_owner_.end() && owner->second != svc_key) {
    auto old = services_.find(owner->second);
    if (old != services_.end()) {
      old->second.slices.erase(name);
      rebuild_locked(old->first, old->second);
      if (!old->second.service && old->second.slices.empty()) services_.erase(old);
    }
    slice_owner_.erase(owner);
  }
  if (svc_key.empty()) {
    touch_locked();
    return;
  }
  slice_owner_[slice_key] = svc_key;
  ServiceState& state = services_[svc_key];
  if (state.id == 0) state.id = next_id_++;
  state.slices[name] = std::move(slice);
  rebuild_locked(svc_key, state);
  touch_locked();
}

void ClusterRecords::delete_endpoint_slice(const Json& obj) {
  const Json& meta = member(obj, "metadata");
  std::string ns = string_member(meta, "namespace"), name = string_member(meta, "name");
  std::unique_lock lock(mu_);
  auto owner = slice_owner_.find(ns + "/" + name);
  if (owner == slice_owner_.end()) return;
  auto it = services_.find(owner->second);
  slice_owner_.erase(owner);
  if (it == services_.end()) return;
  it->second.slices.erase(name);
  rebuild_locked(it->first, it->second);
  if (!it->second.service && it->second.slices.empty()) services_.erase(it);
  touch_locked();
}

void ClusterRecords::remove_names_locked(ServiceState& state) {
  auto release = [this](const std::string& name) {
    auto it = names_.find(name);
    if (it != names_.end() && it->second.entries.empty() && it->second.children == 0) {
      names_.erase(it);
    }
  };
  for (const auto& name : state.names) {
    auto it = names_.find(name);
    if (it == names_.end()) continue;
    auto& entries = it->second.entries;
    entries.erase(std::remove_if(entries.begin(), entries.end(),
                                 [&](const Entry& e) { return e.owner == state.id; }),
                  entries.end());
    if (ends_with(name, "." + zone_)) {
      // The names between this one and the zone lose a child.
      std::string_view rest(name);
      while (true) {
        size_t dot = rest.find('.');
        rest = rest.substr(dot + 1);
        if (rest.size() <= zone_.size()) break;
        std::string anc(rest);
        auto a = names_.find(anc);
        if (a != names_.end()) {
          if (a->second.children > 0) --a->second.children;
          release(anc);
        }
      }
    }
    release(name);
  }
  state.names.clear();
}

void ClusterRecords::rebuild_locked(const std::string& key, ServiceState& state) {
  remove_names_locked(state);
  if (!state.service) return;
  const Service& svc = *state.service;
  size_t slash = key.find('/');
  std::string ns = lower(key.substr(0, slash)), name = lower(key.substr(slash + 1));
  const std::string base = name + "." + ns + ".svc." + zone_;
  const uint32_t ttl = options_.ttl;

  std::map<std::string, std::vector<Record>> records;  // name → records, deduplicated
  std::set<std::tuple<std::string, uint16_t, std::string, uint16_t>> seen;
  auto add = [&](Record r) {
    if (!seen.emplace(r.name, static_cast<uint16_t>(r.type), r.data, r.port).second) return;
    records[r.name].push_back(std::move(r));
  };
  auto address_record = [&](const std::string& owner, const std::string& ip) {
    Record r;
    r.name = owner;
    r.type = is_v6_text(ip) ? RrType::kAaaa : RrType::kA;
    r.ttl = ttl;
    r.data = ip;
    return r;
  };
  auto srv_record = [&](const std::string& owner, const std::string& target, uint16_t port) {
    Record r;
    r.name = owner;
    r.type = RrType::kSrv;
    r.ttl = ttl;
    r.data = target;
    r.port = port;
    return r;
  };
  // The reverse name of `ip` pointing at `target`.
  auto ptr_record = [&](const std::string& ip, const std::string& target) {
    Record r;
    r.name = reverse_name(ip);
    r.type = RrType::kPtr;
    r.ttl = ttl;
    r.data = target;
    return r;
  };
  auto port_name = [&](const Port& p) { return "_" + p.name + "._" + p.protocol + "." + base; };

  if (svc.kind == ServiceKind::kExternalName) {
    if (!svc.external_name.empty()) {
      Record r;
      r.name = base;
      r.type = RrType::kCname;
      r.ttl = ttl;
      r.data = canonical_name(svc.external_name);
      add(std::move(r));
    }
  } else {
    if (svc.kind == ServiceKind::kClusterIp) {
      for (const auto& ip : svc.cluster_ips) {
        add(address_record(base, ip));
        add(ptr_record(ip, base));
      }
      for (const auto& p : svc.ports) {
        add(srv_record(base, base, p.port));
        if (!p.name.empty()) add(srv_record(port_name(p), base, p.port));
      }
    }
    // Endpoints: every Service's ready endpoints have names of their own; a headless Service's
    // name lists them and their ports are its SRV records.
    const bool headless = svc.kind == ServiceKind::kHeadless;
    for (const auto& [slice_name, slice] : state.slices) {
      for (const auto& ep : slice.endpoints) {
        if (!ep.ready) continue;
        for (const auto& ip : ep.addresses) {
          std::string host = (ep.hostname.empty() ? dashed(ip) : ep.hostname) + "." + base;
          add(address_record(host, ip));
          if (!headless) continue;
          add(address_record(base, ip));
          add(ptr_record(ip, host));
          for (const auto& p : slice.ports) {
            add(srv_record(base, host, p.port));
            if (!p.name.empty()) add(srv_record(port_name(p), host, p.port));
          }
        }
      }
    }
  }

  for (auto& [owner, recs] : records) {
    size_t srvs = std::count_if(recs.begin(), recs.end(),
                                [](const Record& r) { return r.type == RrType::kSrv; });
    if (srvs > 0) {
      // Equal shares of 100, as CoreDNS weighs records of one priority.
      auto weight = static_cast<uint16_t>(std::max<size_t>(1, 100 / srvs));
      for (auto& r : recs) {
        if (r.type == RrType::kSrv) r.weight = weight;
      }
    }
    Node& node = names_[owner];
    for (auto& r : recs) node.entries.push_back({state.id, std::move(r)});
    state.names.push_back(owner);
    if (ends_with(owner, "." + zone_)) {
      std::string_view rest(owner);
      while (true) {
        rest = rest.substr(rest.find('.') + 1);
        if (rest.size() <= zone_.size()) break;
        ++names_[std::string(rest)].children;
      }
    }
  }
}

// ---- lookups ---------------------------------------------------------------------------------

Record ClusterRecords::soa(const std::string& owner) const {
  Record r;
  r.name = owner;
  r.type = RrType::kSoa;
  r.ttl = options_.ttl;
  r.data = "ns.dns." + zone_;
  r.mailbox = "hostmaster." + zone_;
  r.serial = serial_.load();
  r.refresh = 7200;
  r.retry = 1800;
  r.expire = 86400;
  r.minimum = options_.ttl;
  return r;
}

Answer ClusterRecords::negative(Rcode rcode, const std::string& soa_owner) const {
  Answer a;
  a.rcode = rcode;
  a.authoritative = true;
  a.authority.push_back(soa(soa_owner));
  return a;
}

void ClusterRecords::add_glue_locked(Answer& a) const {
  for (const auto& r : a.answer) {
    if (r.type != RrType::kSrv && r.type != RrType::kNs) continue;
    auto it = names_.find(r.data);
    if (it == names_.end()) continue;
    for (const auto& e : it->second.entries) {
      if (e.record.type != RrType::kA && e.record.type != RrType::kAaaa) continue;
      if (std::find(a.additional.begin(), a.additional.end(), e.record) == a.additional.end()) {
        a.additional.push_back(e.record);
      }
    }
  }
}

Answer ClusterRecords::answer(std::string_view qname, uint16_t qtype) const {
  const std::string name = canonical_name(qname);
  if (ends_with(name, ".in-addr.arpa.") || ends_with(name, ".ip6.arpa.")) {
    return answer_reverse(name, qtype);
  }
  const bool apex = name == zone_;
  if (!apex && !ends_with(name, "." + zone_)) {
    Answer a;
    a.forward = true;
    return a;
  }
  const std::string_view rel =
      apex ? std::string_view() : std::string_view(name).substr(0, name.size() - zone_.size() - 1);
  Answer a;
  a.authoritative = true;
  auto nodata = [&] { return negative(Rcode::kNoError, zone_); };

  // The zone's own names.
  if (apex) {
    if (matches_type(RrType::kSoa, qtype)) a.answer.push_back(soa(zone_));
    if (matches_type(RrType::kNs, qtype)) {
      Record ns;
      ns.name = zone_;
      ns.type = RrType::kNs;
      ns.ttl = options_.ttl;
      ns.data = "ns.dns." + zone_;
      a.answer.push_back(std::move(ns));
      if (!options_.dns_ip.empty()) {
        Record glue;
        glue.name = "ns.dns." + zone_;
        glue.type = is_v6_text(options_.dns_ip) ? RrType::kAaaa : RrType::kA;
        glue.ttl = options_.ttl;
        glue.data = options_.dns_ip;
        a.additional.push_back(std::move(glue));
      }
    }
    return a.answer.empty() ? nodata() : a;
  }
  if (rel == "svc" || rel == "pod" || rel == "dns") return nodata();
  if (rel == "dns-version") {
    if (!matches_type(RrType::kTxt, qtype)) return nodata();
    Record txt;
    txt.name = name;
    txt.type = RrType::kTxt;
    txt.ttl = options_.ttl;
    txt.data = kSchemaVersion;
    a.answer.push_back(std::move(txt));
    return a;
  }
  if (rel == "ns.dns") {
    if (options_.dns_ip.empty()) return negative(Rcode::kNxDomain, zone_);
    RrType t = is_v6_text(options_.dns_ip) ? RrType::kAaaa : RrType::kA;
    if (!matches_type(t, qtype)) return nodata();
    Record r;
    r.name = name;
    r.type = t;
    r.ttl = options_.ttl;
    r.data = options_.dns_ip;
    a.answer.push_back(std::move(r));
    return a;
  }
  if (ends_with(rel, ".pod")) {
    auto labels = labels_of(rel);
    if (labels.size() == 2) return nodata();  // <ns>.pod: any namespace (pods insecure)
    if (labels.size() == 3) return answer_pod(name, labels[0], qtype);
    return negative(Rcode::kNxDomain, zone_);
  }

  std::shared_lock lock(mu_);
  auto it = names_.find(name);
  if (it == names_.end()) return negative(Rcode::kNxDomain, zone_);
  const Node& node = it->second;
  const Record* cname = nullptr;
  for (const auto& e : node.entries) {
    if (matches_type(e.record.type, qtype)) a.answer.push_back(e.record);
    if (e.record.type == RrType::kCname) cname = &e.record;
  }
  if (a.answer.empty() && cname != nullptr) {
    a.answer.push_back(*cname);
    // A target inside the zone is answered here too (one step: ExternalName targets are
    // rarely chained).
    if (ends_with(cname->data, "." + zone_)) {
      auto target = names_.find(cname->data);
      if (target != names_.end()) {
        for (const auto& e : target->second.entries) {
          if (matches_type(e.record.type, qtype)) a.answer.push_back(e.record);
        }
      }
    }
    return a;
  }
  if (a.answer.empty()) return negative(Rcode::kNoError, zone_);
  add_glue_locked(a);
  return a;
}

Answer ClusterRecords::answer_pod(const std::string& name, std::string_view label,
                                  uint16_t qtype) const {
  // "10-42-0-5" is IPv4; anything else with dashes for colons is IPv6 ("fd00-42--5").
  std::string ip(label);
  bool v4 = std::count(ip.begin(), ip.end(), '-') == 3 && ip.find("--") == std::string::npos;
  std::replace(ip.begin(), ip.end(), '-', v4 ? '.' : ':');
  bool v6 = false;
  if (!parse_ip(ip, &v6) || v6 == v4) return negative(Rcode::kNxDomain, zone_);
  RrType t = v6 ? RrType::kAaaa : RrType::kA;
  if (!matches_type(t, qtype)) return negative(Rcode::kNoError, zone_);
  Answer a;
  a.authoritative = true;
  Record r;
  r.name = name;
  r.type = t;
  r.ttl = options_.ttl;
  r.data = ip;
  a.answer.push_back(std::move(r));
  return a;
}

Answer ClusterRecords::answer_reverse(const std::string& name, uint16_t qtype) const {
  // The address the name stands for, when it names a whole address.
  std::array<uint8_t, 16> addr{};
  bool v6 = ends_with(name, ".ip6.arpa.");
  auto labels = labels_of(std::string_view(name).substr(
      0, name.size() - (v6 ? std::strlen(".ip6.arpa.") : std::strlen(".in-addr.arpa."))));
  bool whole = false;
  if (!v6 && labels.size() == 4) {
    whole = true;
    for (size_t i = 0; i < 4; ++i) {
      auto l = labels[3 - i];
      if (l.empty() || l.size() > 3 ||
          !std::all_of(l.begin(), l.end(), [](char c) { return c >= '0' && c <= '9'; }) ||
          (l.size() > 1 && l[0] == '0')) {
        whole = false;
        break;
      }
      int v = std::stoi(std::string(l));
      if (v > 255) {
        whole = false;
        break;
      }
      addr[i] = static_cast<uint8_t>(v);
    }
  } else if (v6 && labels.size() == 32) {
    whole = true;
    for (size_t i = 0; i < 32 && whole; ++i) {
      auto l = labels[31 - i];
      int nibble = -1;
      if (l.size() == 1 && l[0] >= '0' && l[0] <= '9') nibble = l[0] - '0';
      if (l.size() == 1 && l[0] >= 'a' && l[0] <= 'f') nibble = l[0] - 'a' + 10;
      if (nibble < 0)
        whole = false;
      else
        addr[i / 2] |= static_cast<uint8_t>(i % 2 == 0 ? nibble << 4 : nibble);
    }
  }
  Answer a;
  if (!whole) {
    a.forward = true;
    return a;
  }
  // The reverse zone of the CIDR the address is in (its whole octets or nibbles) owns the SOA.
  const Cidr* within = nullptr;
  for (const auto& c : cidrs_) {
    if (c.contains(addr, v6)) {
      within = &c;
      break;
    }
  }
  std::string zone = v6 ? "ip6.arpa." : "in-addr.arpa.";
  if (within != nullptr) {
    size_t keep = v6 ? within->bits / 4 : within->bits / 8;
    std::string prefix;
    for (size_t i = labels.size() - keep; i < labels.size(); ++i) {
      prefix += std::string(labels[i]) + ".";
    }
    zone = prefix + zone;
  }
  {
    std::shared_lock lock(mu_);
    auto it = names_.find(name);
    if (it != names_.end() && !it->second.entries.empty()) {
      a.authoritative = true;
      for (const auto& e : it->second.entries) {
        if (matches_type(e.record.type, qtype)) a.answer.push_back(e.record);
      }
      if (a.answer.empty()) return negative(Rcode::kNoError, zone);
      return a;
    }
  }
  if (within != nullptr) return negative(Rcode::kNxDomain, zone);
  a.forward = true;
  return a;
}

}  // namespace skiff::dns
