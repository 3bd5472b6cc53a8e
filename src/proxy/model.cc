#include "proxy/model.h"

#include <algorithm>
#include <cstdio>
#include <set>

namespace skiff::proxy {
namespace {

const Json& member(const Json& obj, const char* key) {
  static const Json kNull;
  if (!obj.is_object()) return kNull;
  auto it = obj.find(key);
  return it == obj.end() ? kNull : *it;
}

std::string str(const Json& obj, const char* key) {
  const Json& v = member(obj, key);
  return v.is_string() ? v.get<std::string>() : std::string();
}

int int_of(const Json& obj, const char* key) {
  const Json& v = member(obj, key);
  return v.is_number_integer() ? v.get<int>() : 0;
}

bool is_ipv4(const std::string& ip) {
  return !ip.empty() && ip.find(':') == std::string::npos && ip != "None";
}

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// A condition absent from an EndpointSlice counts as true for ready and serving (upstream's
// reading of a nil pointer), false for terminating.
bool condition(const Json& conditions, const char* key, bool absent) {
  const Json& v = member(conditions, key);
  return v.is_boolean() ? v.get<bool>() : absent;
}

}  // namespace

std::string ServicePort::id() const {
  return ns + "/" + service + ":" + port_name + "/" + protocol;
}

std::vector<const Endpoint*> ServicePort::cluster_endpoints() const {
  std::vector<const Endpoint*> ready;
  std::vector<const Endpoint*> terminating;
  for (const Endpoint& e : endpoints) {
    if (internal_local && !e.local) continue;
    if (e.ready) {
      ready.push_back(&e);
    } else if (e.serving && e.terminating) {
      terminating.push_back(&e);
    }
  }
  return ready.empty() ? terminating : ready;
}

std::vector<const Endpoint*> ServicePort::local_endpoints() const {
  std::vector<const Endpoint*> ready;
  std::vector<const Endpoint*> terminating;
  for (const Endpoint& e : endpoints) {
    if (!e.local) continue;
    if (e.ready) {
      ready.push_back(&e);
    } else if (e.serving && e.terminating) {
      terminating.push_back(&e);
    }
  }
  return ready.empty() ? terminating : ready;
}

std::vector<ServicePort> build_service_ports(const Json& service,
                                             const std::vector<const Json*>& slices,
                                             const std::string& node_name) {
  std::vector<ServicePort> out;
  const Json& spec = member(service, "spec");
  const Json& meta = member(service, "metadata");
  if (str(spec, "type") == "ExternalName") return out;
  std::string cluster_ip;
  const Json& ips = member(spec, "clusterIPs");
  if (ips.is_array()) {
    for (const Json& ip : ips) {
      if (ip.is_string() && is_ipv4(ip.get<std::string>())) {
        cluster_ip = ip.get<std::string>();
        break;
      }
    }
  }
  if (cluster_ip.empty() && is_ipv4(str(spec, "clusterIP"))) cluster_ip = str(spec, "clusterIP");
  if (cluster_ip.empty()) return out;  // headless or IPv6-only: nothing to proxy

  std::vector<std::string> external_ips;
  const Json& ext = member(spec, "externalIPs");
  if (ext.is_array()) {
    for (const Json& ip : ext) {
      if (ip.is_string() && is_ipv4(ip.get<std::string>())) external_ips.push_back(ip);
    }
  }
  std::vector<std::string> lb_ips;
  const std::string type = str(spec, "type");
  if (type == "LoadBalancer") {
    const Json& ingress = member(member(member(service, "status"), "loadBalancer"), "ingress");
    if (ingress.is_array()) {
      for (const Json& i : ingress) {
        std::string ip = str(i, "ip");
        if (is_ipv4(ip)) lb_ips.push_back(ip);
      }
    }
  }
  int affinity = 0;
  if (str(spec, "sessionAffinity") == "ClientIP") {
    affinity = int_of(member(member(spec, "sessionAffinityConfig"), "clientIP"), "timeoutSeconds");
    if (affinity <= 0) affinity = 10800;
  }
  const bool node_port_type = type == "NodePort" || type == "LoadBalancer";

  const Json& ports = member(spec, "ports");
  if (!ports.is_array()) return out;
  for (const Json& p : ports) {
    ServicePort sp;
    sp.ns = str(meta, "namespace");
    sp.service = str(meta, "name");
    sp.port_name = str(p, "name");
    std::string proto = str(p, "protocol");
    sp.protocol = proto.empty() ? "tcp" : lower(proto);
    sp.cluster_ip = cluster_ip;
    sp.port = int_of(p, "port");
    sp.node_port = node_port_type ? int_of(p, "nodePort") : 0;
    sp.external_ips = external_ips;
    sp.load_balancer_ips = lb_ips;
    sp.affinity_timeout_seconds = affinity;
    sp.internal_local = str(spec, "internalTrafficPolicy") == "Local";
    sp.external_local = str(spec, "externalTrafficPolicy") == "Local" && sp.has_external();

    // Endpoints come from the slice ports with this port's name and protocol.
    std::set<std::pair<std::string, int>> seen;
    for (const Json* slice : slices) {
      if (str(*slice, "addressType") != "IPv4") continue;
      const Json& slice_ports = member(*slice, "ports");
      const Json& endpoints = member(*slice, "endpoints");
      if (!slice_ports.is_array() || !endpoints.is_array()) continue;
      for (const Json& sp_port : slice_ports) {
        if (str(sp_port, "name") != sp.port_name) continue;
        std::string slice_proto = str(sp_port, "protocol");
        if ((slice_proto.empty() ? "tcp" : lower(slice_proto)) != sp.protocol) continue;
        int port = int_of(sp_port, "port");
        if (port <= 0) continue;
        for (const Json& e : endpoints) {
          const Json& addresses = member(e, "addresses");
          if (!addresses.is_array() || addresses.empty() || !addresses[0].is_string()) continue;
          std::string ip = addresses[0];
          if (!seen.insert({ip, port}).second) continue;
          const Json& c = member(e, "conditions");
          Endpoint ep;
          ep.ip = ip;
          ep.port = port;
          ep.ready = condition(c, "ready", true);
          ep.serving = condition(c, "serving", ep.ready);
          ep.terminating = condition(c, "terminating", false);
          ep.local = !node_name.empty() && str(e, "nodeName") == node_name;
          sp.endpoints.push_back(std::move(ep));
        }
      }
    }
    std::sort(sp.endpoints.begin(), sp.endpoints.end(), [](const Endpoint& a, const Endpoint& b) {
      return std::tie(a.ip, a.port) < std::tie(b.ip, b.port);
    });
    out.push_back(std::move(sp));
  }
  return out;
}

std::string short_hash(const std::string& s) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return std::string(buf, 8);
}

}  // namespace skiff::proxy
