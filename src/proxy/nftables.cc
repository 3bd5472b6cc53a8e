#include "proxy/nftables.h"

#include <fmt/format.h>

namespace skiff::proxy {
namespace {

constexpr size_t kMaxName = 200;  // well below the kernel's 256 for chain and set names
// Up to this many endpoints a Service picks one with a rule each; above, with a verdict map.
constexpr size_t kMaxEndpointsForRules = 16;

std::string object_name(const std::string& prefix, const std::string& hash,
                        const std::string& readable) {
  std::string name = prefix + "-" + hash + "-" + readable;
  if (name.size() > kMaxName) name.resize(kMaxName);
  return name;
}

// "ns/service/tcp/port-name" (or the port number for an unnamed port): readable, and made only
// of the characters nftables accepts in an unquoted name.
std::string readable_name(const ServicePort& sp) {
  return sp.ns + "/" + sp.service + "/" + sp.protocol + "/" +
         (sp.port_name.empty() ? std::to_string(sp.port) : sp.port_name);
}

struct PortNames {
  std::string service_chain;
  std::string external_chain;
};

PortNames port_names(const ServicePort& sp) {
  std::string readable = readable_name(sp);
  std::string hash = short_hash(sp.id());
  return {object_name("service", hash, readable), object_name("external", hash, readable)};
}

std::string endpoint_suffix(const Endpoint& e) {
  return e.ip + "/" + std::to_string(e.port);
}

std::string endpoint_chain(const ServicePort& sp, const Endpoint& e) {
  return object_name("endpoint", short_hash(sp.id() + "|" + endpoint_suffix(e)),
                     readable_name(sp) + "__" + endpoint_suffix(e));
}

// The timeout is part of the name, so a changed timeout makes a new set instead of altering one
// that rules still use.
std::string affinity_set(const ServicePort& sp, const Endpoint& e) {
  return object_name("affinity",
                     short_hash(sp.id() + "|" + endpoint_suffix(e) + "|" +
                                std::to_string(sp.affinity_timeout_seconds)),
                     readable_name(sp) + "__" + endpoint_suffix(e));
}

// Affinity lookups, then a random pick among `endpoints`.
void add_dispatch(const ServicePort& sp, const std::vector<const Endpoint*>& endpoints,
                  std::vector<std::string>& rules) {
  if (sp.affinity_timeout_seconds > 0) {
    for (const Endpoint* e : endpoints) {
      rules.push_back(
          fmt::format("ip saddr @{} goto {}", affinity_set(sp, *e), endpoint_chain(sp, *e)));
    }
  }
  if (endpoints.size() <= kMaxEndpointsForRules) {
    // Endpoint i of n is taken with probability 1/(n-i) once the ones before it were passed
    // over: each ends up with 1/n. No set per Service: the kernel names every anonymous set by
    // scanning the table's sets, which makes loading thousands of them quadratic.
    for (size_t i = 0; i + 1 < endpoints.size(); ++i) {
      rules.push_back(fmt::format("numgen random mod {} == 0 goto {}", endpoints.size() - i,
                                  endpoint_chain(sp, *endpoints[i])));
    }
    rules.push_back("goto " + endpoint_chain(sp, *endpoints.back()));
    return;
  }
  // Many endpoints: one lookup in a verdict map instead of a rule per endpoint.
  std::string vmap;
  for (size_t i = 0; i < endpoints.size(); ++i) {
    if (i) vmap += ", ";
    vmap += fmt::format("{} : goto {}", i, endpoint_chain(sp, *endpoints[i]));
  }
  rules.push_back(fmt::format("numgen random mod {} vmap {{ {} }}", endpoints.size(), vmap));
}

// The shared chain that DNATs to one of `n` endpoints of the Service address the packet is
// for, from the `endpoints` map (`nodeport`: of the node port, from `nodeport-endpoints`).
std::string pick_chain(size_t n, bool nodeport, NftObjects& out) {
  std::string name = fmt::format("pick-{}{}", nodeport ? "nodeport-" : "", n);
  std::vector<std::string>& rules = out.shared_chains[name];
  if (!rules.empty()) return name;
  if (nodeport) rules.push_back("jump mark-for-masquerade");
  // tcp first: nftables 1.0.6 takes the udp and sctp rules on these maps (whose data is typed
  // `tcp dport`) only after a tcp one in the same transaction.
  for (const char* proto : {"tcp", "udp", "sctp"}) {
    rules.push_back(fmt::format(
        "meta l4proto {} dnat ip to {}meta l4proto . th dport . numgen random mod {} map @{}",
        proto, nodeport ? "" : "ip daddr . ", n, nodeport ? "nodeport-endpoints" : "endpoints"));
  }
  return name;
}

// External traffic (externalIPs, load-balancer IPs) is masqueraded, then picked like cluster
// traffic.
std::string pick_external_chain(size_t n, NftObjects& out) {
  std::string pick = pick_chain(n, false, out);
  std::string name = fmt::format("pick-external-{}", n);
  out.shared_chains[name] = {"jump mark-for-masquerade", "goto " + pick};
  return name;
}

void add_endpoint_elements(const std::string& map, const std::string& key,
                           const std::vector<const Endpoint*>& endpoints, NftObjects& out) {
  for (size_t i = 0; i < endpoints.size(); ++i) {
    out.elements.insert(
        {map, fmt::format("{} . {} : {} . {}", key, i, endpoints[i]->ip, endpoints[i]->port)});
  }
}

// A port without session affinity or externalTrafficPolicy Local: no chain of its own. Its
// addresses lead to the shared chain for its number of endpoints, which finds the endpoint in a
// map, so an endpoint change rewrites map elements only.
void render_mapped_port(const ServicePort& sp, NftObjects& out) {
  const std::vector<const Endpoint*> cluster = sp.cluster_endpoints();
  const std::string key_tail = fmt::format(" . {} . {}", sp.protocol, sp.port);
  const std::string cluster_key = sp.cluster_ip + key_tail;
  std::vector<std::string> external_ips = sp.external_ips;
  external_ips.insert(external_ips.end(), sp.load_balancer_ips.begin(), sp.load_balancer_ips.end());
  if (cluster.empty()) {
    out.elements.insert({"no-endpoint-services", cluster_key + " : goto reject-chain"});
    for (const std::string& ip : external_ips) {
      out.elements.insert({"no-endpoint-services", ip + key_tail + " : goto reject-chain"});
    }
    if (sp.node_port) {
      out.elements.insert({"no-endpoint-nodeports",
                           fmt::format("{} . {} : goto reject-chain", sp.protocol, sp.node_port)});
    }
    return;
  }
  const size_t n = cluster.size();
  out.elements.insert({"service-ips", cluster_key + " : goto " + pick_chain(n, false, out)});
  out.elements.insert({"cluster-ips", cluster_key});
  add_endpoint_elements("endpoints", cluster_key, cluster, out);
  // A pod reaching itself through the Service is masqueraded (hairpin).
  for (const Endpoint* e : cluster) {
    out.shared_elements.insert({"hairpin", e->ip + " . " + e->ip});
  }
  for (const std::string& ip : external_ips) {
    out.elements.insert({"service-ips", ip + key_tail + " : goto " + pick_external_chain(n, out)});
    add_endpoint_elements("endpoints", ip + key_tail, cluster, out);
  }
  if (sp.node_port) {
    const std::string key = fmt::format("{} . {}", sp.protocol, sp.node_port);
    out.elements.insert({"service-nodeports", key + " : goto " + pick_chain(n, true, out)});
    add_endpoint_elements("nodeport-endpoints", key, cluster, out);
  }
}

// A port with session affinity or externalTrafficPolicy Local: chains of its own, a service
// chain that picks among endpoint chains (which record affinity and DNAT) and an external chain.
void render_chained_port(const ServicePort& sp, const ProxyConfig& config, NftObjects& out) {
  const PortNames names = port_names(sp);
  const std::vector<const Endpoint*> cluster = sp.cluster_endpoints();
  const std::vector<const Endpoint*> local =
      sp.external_local ? sp.local_endpoints() : std::vector<const Endpoint*>{};
  const std::vector<const Endpoint*>& external = sp.external_local ? local : cluster;
  const std::string key_tail = fmt::format(" . {} . {}", sp.protocol, sp.port);

  // Endpoint chains (and affinity sets) for every endpoint some path can reach.
  std::set<const Endpoint*> used(cluster.begin(), cluster.end());
  used.insert(local.begin(), local.end());
  for (const Endpoint* e : used) {
    std::vector<std::string>& rules = out.chains[endpoint_chain(sp, *e)];
    rules.push_back(fmt::format("ip saddr {} jump mark-for-masquerade", e->ip));
    if (sp.affinity_timeout_seconds > 0) {
      std::string set = affinity_set(sp, *e);
      out.sets[set] = fmt::format("{{ type ipv4_addr ; flags dynamic,timeout ; timeout {}s ; }}",
                                  sp.affinity_timeout_seconds);
      rules.push_back(fmt::format("update @{} {{ ip saddr }}", set));
    }
    rules.push_back(fmt::format("meta l4proto {} dnat to {}:{}", sp.protocol, e->ip, e->port));
  }

  // Cluster IP.
  if (!cluster.empty()) {
    std::vector<std::string>& rules = out.chains[names.service_chain];
    rules.push_back(fmt::format("ip daddr {} {} dport {} ip saddr != {} jump mark-for-masquerade",
                                sp.cluster_ip, sp.protocol, sp.port, config.cluster_cidr));
    add_dispatch(sp, cluster, rules);
    out.elements.insert({"service-ips", fmt::format("{}{} : goto {}", sp.cluster_ip, key_tail,
                                                    names.service_chain)});
  } else {
    out.elements.insert(
        {"no-endpoint-services", fmt::format("{}{} : goto reject-chain", sp.cluster_ip, key_tail)});
  }

  if (!sp.has_external()) return;
  // NodePort, external and load-balancer IPs.
  std::vector<std::string> external_ips = sp.external_ips;
  external_ips.insert(external_ips.end(), sp.load_balancer_ips.begin(), sp.load_balancer_ips.end());
  if (!external.empty()) {
    std::vector<std::string>& rules = out.chains[names.external_chain];
    if (sp.external_local) {
      // Pods and the node itself reach the Service as cluster traffic; only traffic from
      // outside keeps to this node's endpoints (and its client address).
      if (!cluster.empty()) {
        rules.push_back(
            fmt::format("ip saddr {} goto {}", config.cluster_cidr, names.service_chain));
        rules.push_back("fib saddr type local jump mark-for-masquerade");
        rules.push_back("fib saddr type local goto " + names.service_chain);
      }
      add_dispatch(sp, local, rules);
    } else {
      rules.push_back("jump mark-for-masquerade");
      rules.push_back("goto " + names.service_chain);
    }
    for (const std::string& ip : external_ips) {
      out.elements.insert(
          {"service-ips", fmt::format("{}{} : goto {}", ip, key_tail, names.external_chain)});
    }
    if (sp.node_port) {
      out.elements.insert({"service-nodeports", fmt::format("{} . {} : goto {}", sp.protocol,
                                                            sp.node_port, names.external_chain)});
    }
  } else {
    // Upstream drops rather than rejects when only local endpoints may serve and none exists.
    const char* verdict = sp.external_local ? "drop" : "goto reject-chain";
    for (const std::string& ip : external_ips) {
      out.elements.insert(
          {"no-endpoint-services", fmt::format("{}{} : {}", ip, key_tail, verdict)});
    }
    if (sp.node_port) {
      out.elements.insert({"no-endpoint-nodeports",
                           fmt::format("{} . {} : {}", sp.protocol, sp.node_port, verdict)});
    }
  }
}

void render_port(const ServicePort& sp, const ProxyConfig& config, NftObjects& out) {
  if (sp.affinity_timeout_seconds > 0 || sp.external_local) {
    render_chained_port(sp, config, out);
  } else {
    render_mapped_port(sp, out);
  }
}

std::string element_key(const std::string& element) {
  size_t colon = element.find(" : ");
  return colon == std::string::npos ? element : element.substr(0, colon);
}

}  // namespace

NftObjects render_service(const std::vector<ServicePort>& ports, const ProxyConfig& config) {
  NftObjects out;
  for (const ServicePort& sp : ports) render_port(sp, config, out);
  return out;
}

std::string diff_script(const NftObjects& before, const NftObjects& after) {
  std::string s;
  const std::string t = std::string("ip ") + kNftTable;
  for (const auto& [name, decl] : after.sets) {
    if (!before.sets.count(name)) s += fmt::format("add set {} {} {}\n", t, name, decl);
  }
  // Every new chain exists before any rule jumps to it.
  for (const auto& [name, rules] : after.chains) {
    if (!before.chains.count(name)) s += fmt::format("add chain {} {}\n", t, name);
  }
  for (const auto& [name, rules] : after.chains) {
    auto old = before.chains.find(name);
    if (old != before.chains.end()) {
      if (old->second == rules) continue;
      s += fmt::format("flush chain {} {}\n", t, name);
    }
    for (const std::string& rule : rules) s += fmt::format("add rule {} {} {}\n", t, name, rule);
  }
  for (const auto& [map, element] : before.elements) {
    if (!after.elements.count({map, element})) {
      s += fmt::format("delete element {} {} {{ {} }}\n", t, map, element_key(element));
    }
  }
  for (const auto& [map, element] : after.elements) {
    if (!before.elements.count({map, element})) {
      s += fmt::format("add element {} {} {{ {} }}\n", t, map, element);
    }
  }
  // Chains may refer to each other: empty every doomed chain before deleting any.
  for (const auto& [name, rules] : before.chains) {
    if (!after.chains.count(name)) s += fmt::format("flush chain {} {}\n", t, name);
  }
  for (const auto& [name, rules] : before.chains) {
    if (!after.chains.count(name)) s += fmt::format("delete chain {} {}\n", t, name);
  }
  for (const auto& [name, decl] : before.sets) {
    if (!after.sets.count(name)) s += fmt::format("delete set {} {}\n", t, name);
  }
  return s;
}

std::string base_script(const ProxyConfig& config) {
  const std::string t = std::string("ip ") + kNftTable;
  std::string s;
  s += fmt::format("add table {}\n", t);
  auto base_chain = [&](const char* name, const char* type, const char* hook, int priority) {
    s += fmt::format("add chain {} {} {{ type {} hook {} priority {} ; }}\n", t, name, type, hook,
                     priority);
  };
  // DNAT at -100 (dstnat); the endpoint checks run in filter hooks just before it.
  base_chain("nat-prerouting", "nat", "prerouting", -100);
  base_chain("nat-output", "nat", "output", -100);
  base_chain("nat-postrouting", "nat", "postrouting", 100);
  base_chain("filter-input", "filter", "input", -110);
  base_chain("filter-forward", "filter", "forward", -110);
  base_chain("filter-output", "filter", "output", -110);
  for (const char* chain : {"services", "service-endpoints-check", "nodeport-endpoints-check",
                            "reject-chain", "mark-for-masquerade", "masquerading"}) {
    s += fmt::format("add chain {} {}\n", t, chain);
  }
  s += fmt::format(
      "add map {} service-ips {{ type ipv4_addr . inet_proto . inet_service : verdict ; }}\n", t);
  s += fmt::format(
      "add map {} service-nodeports {{ type inet_proto . inet_service : verdict ; }}\n", t);
  s += fmt::format(
      "add map {} no-endpoint-services "
      "{{ type ipv4_addr . inet_proto . inet_service : verdict ; }}\n",
      t);
  s += fmt::format(
      "add map {} no-endpoint-nodeports {{ type inet_proto . inet_service : verdict ; }}\n", t);
  // The key's last field is the pick among n endpoints, 0..n-1 (the modulus in the typeof is
  // only for its type). The data is an address and a port of any protocol; `tcp dport` names
  // the port's type (nftables 1.0.6 refuses rules on a map it reads back from the kernel with
  // `th dport` there).
  s += fmt::format(
      "add map {} endpoints {{ typeof ip daddr . meta l4proto . th dport . numgen random mod 1 : "
      "ip daddr . tcp dport ; }}\n",
      t);
  s += fmt::format(
      "add map {} nodeport-endpoints {{ typeof meta l4proto . th dport . numgen random mod 1 : "
      "ip daddr . tcp dport ; }}\n",
      t);
  s +=
      fmt::format("add set {} cluster-ips {{ type ipv4_addr . inet_proto . inet_service ; }}\n", t);
  s += fmt::format("add set {} hairpin {{ type ipv4_addr . ipv4_addr ; }}\n", t);

  auto rule = [&](const char* chain, const std::string& r) {
    s += fmt::format("add rule {} {} {}\n", t, chain, r);
  };
  rule("nat-prerouting", "jump services");
  rule("nat-output", "jump services");
  rule("nat-postrouting", "jump masquerading");
  rule("filter-input", "ct state new jump nodeport-endpoints-check");
  rule("filter-input", "ct state new jump service-endpoints-check");
  rule("filter-forward", "ct state new jump service-endpoints-check");
  rule("filter-output", "ct state new jump service-endpoints-check");
  rule("services",
       fmt::format("ip saddr != {} ip daddr . meta l4proto . th dport @cluster-ips jump "
                   "mark-for-masquerade",
                   config.cluster_cidr));
  rule("services", "ip daddr . meta l4proto . th dport vmap @service-ips");
  rule("services",
       "fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap "
       "@service-nodeports");
  rule("service-endpoints-check", "ip daddr . meta l4proto . th dport vmap @no-endpoint-services");
  rule("nodeport-endpoints-check",
       "fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap "
       "@no-endpoint-nodeports");
  rule("reject-chain", "reject");
  rule("mark-for-masquerade",
       fmt::format("meta mark set meta mark or {:#x}", config.masquerade_mark));
  rule("masquerading", "ct status dnat ip saddr . ip daddr @hairpin jump mark-for-masquerade");
  rule("masquerading", fmt::format("meta mark and {:#x} == 0 return", config.masquerade_mark));
  rule("masquerading", fmt::format("meta mark set meta mark xor {:#x}", config.masquerade_mark));
  rule("masquerading", "masquerade fully-random");
  return s;
}

NftablesBackend::NftablesBackend(ProxyConfig config, std::unique_ptr<NftRunner> runner)
    : config_(std::move(config)), runner_(std::move(runner)) {}

std::string NftablesBackend::retain_shared(const NftObjects& objects) {
  const std::string t = std::string("ip ") + kNftTable;
  std::string s;
  for (const auto& [name, rules] : objects.shared_chains) {
    journal_.push_back({name, {}, 1});
    if (chain_refs_[name]++ > 0) continue;
    s += fmt::format("add chain {} {}\n", t, name);
    for (const std::string& rule : rules) s += fmt::format("add rule {} {} {}\n", t, name, rule);
  }
  for (const auto& element : objects.shared_elements) {
    journal_.push_back({{}, element, 1});
    if (element_refs_[element]++ > 0) continue;
    s += fmt::format("add element {} {} {{ {} }}\n", t, element.first, element.second);
  }
  return s;
}

std::string NftablesBackend::release_shared(const NftObjects& objects, std::string& chains_script) {
  const std::string t = std::string("ip ") + kNftTable;
  std::string s;
  for (const auto& element : objects.shared_elements) {
    journal_.push_back({{}, element, -1});
    auto it = element_refs_.find(element);
    if (--it->second > 0) continue;
    element_refs_.erase(it);
    s += fmt::format("delete element {} {} {{ {} }}\n", t, element.first, element.second);
  }
  for (const auto& [name, rules] : objects.shared_chains) {
    journal_.push_back({name, {}, -1});
    auto it = chain_refs_.find(name);
    if (--it->second > 0) continue;
    chain_refs_.erase(it);
    chains_script += fmt::format("flush chain {0} {1}\ndelete chain {0} {1}\n", t, name);
  }
  return s;
}

void NftablesBackend::undo_journal() {
  for (auto it = journal_.rbegin(); it != journal_.rend(); ++it) {
    int& count = it->chain.empty() ? element_refs_[it->element] : chain_refs_[it->chain];
    count -= it->delta;
    if (count == 0) {
      if (it->chain.empty()) {
        element_refs_.erase(it->element);
      } else {
        chain_refs_.erase(it->chain);
      }
    }
  }
  journal_.clear();
}

Status NftablesBackend::sync(const ProxyState& state, const std::set<std::string>& changed,
                             bool full) {
  static const NftObjects kNone;
  std::string script;
  journal_.clear();
  if (full) {
    // Replace the whole table in one transaction: `add` first so the delete cannot fail.
    std::map<std::string, NftObjects> next;
    auto chain_refs = std::move(chain_refs_);
    auto element_refs = std::move(element_refs_);
    chain_refs_.clear();
    element_refs_.clear();
    script = fmt::format("add table ip {0}\ndelete table ip {0}\n", kNftTable);
    script += base_script(config_);
    std::string services;
    for (const auto& [key, ports] : state) {
      NftObjects objects = render_service(ports, config_);
      // Shared chains go before the elements that lead to them.
      script += retain_shared(objects);
      services += diff_script(kNone, objects);
      next.emplace(key, std::move(objects));
    }
    script += services;
    journal_.clear();
    last_script_size_ = script.size();
    Status status = runner_->run(script);
    if (!status.is_ok()) {
      chain_refs_ = std::move(chain_refs);
      element_refs_ = std::move(element_refs);
      return status;
    }
    applied_ = std::move(next);
    return Status::ok();
  }
  std::vector<std::pair<std::string, NftObjects>> updates;
  std::string services;
  for (const std::string& key : changed) {
    auto it = state.find(key);
    NftObjects objects = it == state.end() ? NftObjects{} : render_service(it->second, config_);
    auto old = applied_.find(key);
    const NftObjects& before = old == applied_.end() ? kNone : old->second;
    if (before == objects) continue;
    // Everything the new objects need is counted before anything is released, so an object
    // moving from one Service to another in this sync stays.
    script += retain_shared(objects);
    services += diff_script(before, objects);
    updates.emplace_back(key, std::move(objects));
  }
  std::string released_chains;
  for (const auto& [key, objects] : updates) {
    auto old = applied_.find(key);
    if (old != applied_.end()) services += release_shared(old->second, released_chains);
  }
  script += services + released_chains;
  last_script_size_ = script.size();
  if (!script.empty()) {
    Status status = runner_->run(script);
    if (!status.is_ok()) {
      undo_journal();
      return status;
    }
  }
  journal_.clear();
  for (auto& [key, objects] : updates) {
    if (objects == kNone) {
      applied_.erase(key);
    } else {
      applied_[key] = std::move(objects);
    }
  }
  return Status::ok();
}

Status NftablesBackend::cleanup() {
  applied_.clear();
  chain_refs_.clear();
  element_refs_.clear();
  return runner_->run(fmt::format("add table ip {0}\ndelete table ip {0}\n", kNftTable));
}

}  // namespace skiff::proxy
