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

void render_port(const ServicePort& sp, const ProxyConfig& config, NftObjects& out) {
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
  rule("masquerading", fmt::format("meta mark and {:#x} == 0 return", config.masquerade_mark));
  rule("masquerading", fmt::format("meta mark set meta mark xor {:#x}", config.masquerade_mark));
  rule("masquerading", "masquerade fully-random");
  return s;
}

NftablesBackend::NftablesBackend(ProxyConfig config, std::unique_ptr<NftRunner> runner)
    : config_(std::move(config)), runner_(std::move(runner)) {}

Status NftablesBackend::sync(const ProxyState& state, const std::set<std::string>& changed,
                             bool full) {
  static const NftObjects kNone;
  std::string script;
  if (full) {
    // Replace the whole table in one transaction: `add` first so the delete cannot fail.
    std::map<std::string, NftObjects> next;
    script = fmt::format("add table ip {0}\ndelete table ip {0}\n", kNftTable);
    script += base_script(config_);
    for (const auto& [key, ports] : state) {
      NftObjects objects = render_service(ports, config_);
      script += diff_script(kNone, objects);
      next.emplace(key, std::move(objects));
    }
    last_script_size_ = script.size();
    SKIFF_RETURN_IF_ERROR(runner_->run(script));
    applied_ = std::move(next);
    return Status::ok();
  }
  std::vector<std::pair<std::string, NftObjects>> updates;
  for (const std::string& key : changed) {
    auto it = state.find(key);
    NftObjects objects = it == state.end() ? NftObjects{} : render_service(it->second, config_);
    auto old = applied_.find(key);
    script += diff_script(old == applied_.end() ? kNone : old->second, objects);
    updates.emplace_back(key, std::move(objects));
  }
  last_script_size_ = script.size();
  if (!script.empty()) SKIFF_RETURN_IF_ERROR(runner_->run(script));
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
  return runner_->run(fmt::format("add table ip {0}\ndelete table ip {0}\n", kNftTable));
}

}  // namespace skiff::proxy
