#include "proxy/iptables.h"

#include <fmt/format.h>
#include <stdlib.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <optional>

#include "base/process.h"

namespace skiff::proxy {
namespace {

constexpr const char* kServices = "SKIFF-SERVICES";
constexpr const char* kNodePorts = "SKIFF-NODEPORTS";
constexpr const char* kMarkMasq = "SKIFF-MARK-MASQ";
constexpr const char* kPostrouting = "SKIFF-POSTROUTING";
constexpr const char* kPrefix = "SKIFF-";

// Chain names may have 28 characters: a prefix of 10 and a 64-bit hash in 16 hex digits.
std::string chain_name(const char* prefix, const std::string& key) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a
  for (unsigned char c : key) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return fmt::format("{}{:016X}", prefix, h);
}

std::string svc_chain(const ServicePort& sp) {
  return chain_name("SKIFF-SVC-", sp.id());
}
std::string ext_chain(const ServicePort& sp) {
  return chain_name("SKIFF-EXT-", sp.id());
}
std::string sep_chain(const ServicePort& sp, const Endpoint& e) {
  return chain_name("SKIFF-SEP-", fmt::format("{}|{}:{}", sp.id(), e.ip, e.port));
}

// upstream's ServicePortName ("ns/name:port", or "ns/name" for an unnamed port), plus a note.
std::string comment(const ServicePort& sp, const char* note) {
  return fmt::format("-m comment --comment \"{}/{}{}{}{}\"", sp.ns, sp.service,
                     sp.port_name.empty() ? "" : ":", sp.port_name, note);
}

std::string match_port(const ServicePort& sp, int port) {
  return fmt::format("-p {0} -m {0} --dport {1}", sp.protocol, port);
}

std::string local_destinations() {
  return "! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL";
}

// Affinity lookups, then a random pick among `endpoints`: rule i of n matches with probability
// 1/(n-i), so each endpoint gets 1/n of the new connections.
void add_dispatch(const ServicePort& sp, const std::vector<const Endpoint*>& endpoints,
                  std::vector<std::string>& rules) {
  if (sp.affinity_timeout_seconds > 0) {
    for (const Endpoint* e : endpoints) {
      const std::string sep = sep_chain(sp, *e);
      rules.push_back(fmt::format(
          "-m recent --name {0} --mask 255.255.255.255 --rsource --rcheck --seconds {1} --reap "
          "-j {0}",
          sep, sp.affinity_timeout_seconds));
    }
  }
  const size_t n = endpoints.size();
  for (size_t i = 0; i + 1 < n; ++i) {
    rules.push_back(fmt::format("-m statistic --mode random --probability {:.10f} -j {}",
                                1.0 / static_cast<double>(n - i), sep_chain(sp, *endpoints[i])));
  }
  if (n > 0) rules.push_back("-j " + sep_chain(sp, *endpoints[n - 1]));
}

void render_port(const ServicePort& sp, const ProxyConfig& config, IptablesService& out) {
  const std::string svc = svc_chain(sp);
  const std::string ext = ext_chain(sp);
  const std::vector<const Endpoint*> cluster = sp.cluster_endpoints();
  const std::vector<const Endpoint*> local =
      sp.external_local ? sp.local_endpoints() : std::vector<const Endpoint*>{};
  const std::vector<const Endpoint*>& external = sp.external_local ? local : cluster;
  const std::string service_match = match_port(sp, sp.port);

  // Endpoint chains for every endpoint some path can reach.
  std::set<const Endpoint*> used(cluster.begin(), cluster.end());
  used.insert(local.begin(), local.end());
  for (const Endpoint* e : used) {
    const std::string sep = sep_chain(sp, *e);
    std::vector<std::string>& rules = out.chains[sep];
    rules.push_back(fmt::format("-s {}/32 {} -j {}", e->ip, comment(sp, ""), kMarkMasq));
    const std::string recent =
        sp.affinity_timeout_seconds > 0
            ? fmt::format("-m recent --name {} --mask 255.255.255.255 --rsource --set ", sep)
            : std::string();
    rules.push_back(fmt::format("-p {} {}{} -j DNAT --to-destination {}:{}", sp.protocol, recent,
                                comment(sp, ""), e->ip, e->port));
  }

  // Cluster IP.
  if (!cluster.empty()) {
    std::vector<std::string>& rules = out.chains[svc];
    rules.push_back(fmt::format("-d {}/32 {} ! -s {} {} -j {}", sp.cluster_ip, service_match,
                                config.cluster_cidr, comment(sp, " cluster IP"), kMarkMasq));
    add_dispatch(sp, cluster, rules);
    out.services.push_back(fmt::format("-d {}/32 {} {} -j {}", sp.cluster_ip, service_match,
                                       comment(sp, " cluster IP"), svc));
  } else {
    out.filter_services.push_back(fmt::format("-d {}/32 {} {} -j REJECT", sp.cluster_ip,
                                              service_match, comment(sp, " has no endpoints")));
  }

  if (!sp.has_external()) return;
  // NodePort, external and load-balancer IPs.
  std::vector<std::string> external_ips = sp.external_ips;
  external_ips.insert(external_ips.end(), sp.load_balancer_ips.begin(), sp.load_balancer_ips.end());
  if (!external.empty()) {
    std::vector<std::string>& rules = out.chains[ext];
    if (sp.external_local) {
      // Pods and the node itself reach the Service as cluster traffic; only traffic from
      // outside keeps to this node's endpoints (and its client address).
      if (!cluster.empty()) {
        rules.push_back(fmt::format("-s {} -j {}", config.cluster_cidr, svc));
        rules.push_back(fmt::format("-m addrtype --src-type LOCAL -j {}", kMarkMasq));
        rules.push_back(fmt::format("-m addrtype --src-type LOCAL -j {}", svc));
      }
      add_dispatch(sp, local, rules);
    } else {
      rules.push_back(fmt::format("-j {}", kMarkMasq));
      rules.push_back(fmt::format("-j {}", svc));
    }
    for (const std::string& ip : external_ips) {
      out.services.push_back(
          fmt::format("-d {}/32 {} {} -j {}", ip, service_match, comment(sp, " external IP"), ext));
    }
    if (sp.node_port) {
      out.nodeports.push_back(
          fmt::format("{} {} -j {}", match_port(sp, sp.node_port), comment(sp, ""), ext));
    }
  } else {
    // Upstream drops rather than rejects when only local endpoints may serve and none exists.
    const char* verdict = sp.external_local ? "DROP" : "REJECT";
    const char* note = sp.external_local ? " has no local endpoints" : " has no endpoints";
    for (const std::string& ip : external_ips) {
      out.filter_services.push_back(
          fmt::format("-d {}/32 {} {} -j {}", ip, service_match, comment(sp, note), verdict));
    }
    if (sp.node_port) {
      out.filter_nodeports.push_back(
          fmt::format("{} {} -j {}", match_port(sp, sp.node_port), comment(sp, note), verdict));
    }
  }
}

// The jumps from the built-in chains, keyed as parse_iptables_save keys them.
void add_jump(IptablesTable& table, const std::string& builtin, const std::string& match,
              const std::string& target) {
  table.jumps[{builtin, target}] =
      fmt::format("{} {}-j {}", builtin, match.empty() ? "" : match + " ", target);
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(start, end - start);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    lines.push_back(std::move(line));
    start = end + 1;
  }
  return lines;
}

size_t count_lines(const std::string& text) {
  size_t n = 0;
  for (char c : text) n += c == '\n';
  return n;
}

// iptables-restore reports "Error occurred at line: N"; 0 when it does not.
size_t error_line(const std::string& message) {
  const std::string marker = "Error occurred at line: ";
  size_t at = message.find(marker);
  if (at == std::string::npos) return 0;
  return std::strtoul(message.c_str() + at + marker.size(), nullptr, 10);
}

class CommandIptablesRunner : public IptablesRunner {
 public:
  explicit CommandIptablesRunner(std::string command) : command_(std::move(command)) {}

  Status restore(const std::string& table_input) override {
    // run_command gives the child /dev/null as stdin: hand the input over as a file.
    const char* tmpdir = std::getenv("TMPDIR");
    std::string path = std::string(tmpdir && *tmpdir ? tmpdir : "/tmp") + "/skiff-iptables-XXXXXX";
    int fd = ::mkstemp(path.data());
    if (fd < 0) {
      return error(StatusCode::kInternal,
                   fmt::format("iptables-restore: temp file: {}", std::strerror(errno)));
    }
    size_t written = 0;
    while (written < table_input.size()) {
      ssize_t n = ::write(fd, table_input.data() + written, table_input.size() - written);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        int err = errno;
        ::close(fd);
        ::unlink(path.c_str());
        return error(StatusCode::kInternal,
                     fmt::format("iptables-restore: writing {}: {}", path, std::strerror(err)));
      }
      written += static_cast<size_t>(n);
    }
    ::close(fd);
    // -w 5: wait for the xtables lock (legacy) rather than failing at once.
    auto out = run_command({command_ + "-restore", "--noflush", "-w", "5", path},
                           std::chrono::seconds(60));
    ::unlink(path.c_str());
    if (!out.is_ok()) return out.status();
    if (!out->status.success()) {
      std::string message = out->err.empty() ? out->out : out->err;
      if (message.size() > 4000) message = message.substr(0, 4000) + "...";
      return error(StatusCode::kInternal,
                   fmt::format("{}-restore ({}): {}", command_, out->status.to_string(), message));
    }
    return Status::ok();
  }

  Result<std::string> save(const std::string& table) override {
    auto out = run_command({command_ + "-save", "-t", table}, std::chrono::seconds(60));
    if (!out.is_ok()) return out.status();
    if (!out->status.success()) {
      return error(StatusCode::kInternal, fmt::format("{}-save -t {} ({}): {}", command_, table,
                                                      out->status.to_string(), out->err));
    }
    return std::move(out->out);
  }

 private:
  const std::string command_;
};

}  // namespace

std::unique_ptr<IptablesRunner> make_iptables_runner(const std::string& command) {
  return std::make_unique<CommandIptablesRunner>(command);
}

IptablesService render_iptables_service(const std::vector<ServicePort>& ports,
                                        const ProxyConfig& config) {
  IptablesService out;
  for (const ServicePort& sp : ports) render_port(sp, config, out);
  return out;
}

IptablesTable parse_iptables_save(const std::string& save_output) {
  IptablesTable table;
  for (const std::string& line : lines_of(save_output)) {
    if (line.rfind(std::string(":") + kPrefix, 0) == 0) {
      table.chains[line.substr(1, line.find(' ') - 1)];
      continue;
    }
    if (line.rfind("-A ", 0) != 0) continue;
    size_t space = line.find(' ', 3);
    if (space == std::string::npos) continue;
    std::string chain = line.substr(3, space - 3);
    std::string spec = line.substr(space + 1);
    if (chain.rfind(kPrefix, 0) == 0) {
      table.chains[chain].push_back(spec);
      continue;
    }
    // A rule in another chain (a built-in one) that jumps into ours.
    const std::string padded = " " + spec;
    size_t jump = padded.find(std::string(" -j ") + kPrefix);
    if (jump == std::string::npos) continue;
    std::string target = padded.substr(jump + 4);
    target = target.substr(0, target.find(' '));
    table.jumps[{chain, target}] = line.substr(3);
  }
  return table;
}

std::string iptables_table_section(const std::string& table, const IptablesTable& before,
                                   const IptablesTable& after, bool rewrite_all) {
  std::string declare, deletes, inserts, rules, removals;
  for (const auto& [chain, chain_rules] : after.chains) {
    auto old = before.chains.find(chain);
    if (!rewrite_all && old != before.chains.end() && old->second == chain_rules) continue;
    declare += fmt::format(":{} - [0:0]\n", chain);
    for (const std::string& rule : chain_rules) rules += fmt::format("-A {} {}\n", chain, rule);
  }
  for (const auto& [chain, chain_rules] : before.chains) {
    if (after.chains.count(chain)) continue;
    // Declaring flushes it, so the rules in it that refer to other doomed chains go first.
    declare += fmt::format(":{} - [0:0]\n", chain);
    removals += fmt::format("-X {}\n", chain);
  }
  for (const auto& [key, spec] : before.jumps) {
    if (!after.jumps.count(key)) deletes += fmt::format("-D {}\n", spec);
  }
  for (const auto& [key, spec] : after.jumps) {
    if (!before.jumps.count(key)) inserts += fmt::format("-I {}\n", spec);
  }
  if (declare.empty() && deletes.empty() && inserts.empty()) return "";
  return fmt::format("*{}\n{}{}{}{}{}COMMIT\n", table, declare, deletes, inserts, rules, removals);
}

IptablesBackend::IptablesBackend(ProxyConfig config, std::unique_ptr<IptablesRunner> runner)
    : config_(std::move(config)), runner_(std::move(runner)) {}

IptablesTable IptablesBackend::shared_nat(
    const std::map<std::string, IptablesService>& services) const {
  IptablesTable t;
  std::vector<std::string>& entries = t.chains[kServices];
  std::vector<std::string>& nodeports = t.chains[kNodePorts];
  for (const auto& [key, service] : services) {
    entries.insert(entries.end(), service.services.begin(), service.services.end());
    nodeports.insert(nodeports.end(), service.nodeports.begin(), service.nodeports.end());
  }
  // Last: a node port may be any port, also one a cluster IP rule above uses.
  entries.push_back(fmt::format("{} -j {}", local_destinations(), kNodePorts));
  return t;
}

IptablesTable IptablesBackend::filter_table(
    const std::map<std::string, IptablesService>& services) const {
  IptablesTable t;
  std::vector<std::string>& entries = t.chains[kServices];
  std::vector<std::string>& nodeports = t.chains[kNodePorts];
  for (const auto& [key, service] : services) {
    entries.insert(entries.end(), service.filter_services.begin(), service.filter_services.end());
    nodeports.insert(nodeports.end(), service.filter_nodeports.begin(),
                     service.filter_nodeports.end());
  }
  entries.push_back(fmt::format("{} -j {}", local_destinations(), kNodePorts));
  for (const char* builtin : {"INPUT", "FORWARD", "OUTPUT"}) {
    add_jump(t, builtin, "-m conntrack --ctstate NEW", kServices);
  }
  return t;
}

Status IptablesBackend::sync(const ProxyState& state, const std::set<std::string>& changed,
                             bool full) {
  // Until a full sync has succeeded (and after any failure) what the kernel has is not known
  // well enough to patch it.
  Status s = full || !synced_ ? full_sync(state) : incremental_sync(state, changed);
  synced_ = s.is_ok();
  return s;
}

Status IptablesBackend::full_sync(const ProxyState& state) {
  auto filter_save = runner_->save("filter");
  if (!filter_save.is_ok()) return filter_save.status();
  auto nat_save = runner_->save("nat");
  if (!nat_save.is_ok()) return nat_save.status();
  const IptablesTable filter_before = parse_iptables_save(filter_save.value());
  const IptablesTable nat_before = parse_iptables_save(nat_save.value());

  std::map<std::string, IptablesService> next;
  for (const auto& [key, ports] : state) {
    IptablesService service = render_iptables_service(ports, config_);
    if (service != IptablesService{}) next.emplace(key, std::move(service));
  }
  IptablesTable filter_after = filter_table(next);
  IptablesTable shared = shared_nat(next);
  IptablesTable nat_after = shared;
  nat_after.chains[kMarkMasq] = {fmt::format("-j MARK --or-mark {:#x}", config_.masquerade_mark)};
  nat_after.chains[kPostrouting] = {
      fmt::format("-m mark ! --mark {0:#x}/{0:#x} -j RETURN", config_.masquerade_mark),
      // Clear the mark so a packet that is encapsulated or re-routed is not masqueraded again.
      fmt::format("-j MARK --xor-mark {:#x}", config_.masquerade_mark),
      "-j MASQUERADE --random-fully"};
  add_jump(nat_after, "PREROUTING", "", kServices);
  add_jump(nat_after, "OUTPUT", "", kServices);
  add_jump(nat_after, "POSTROUTING", "", kPostrouting);
  for (const auto& [key, service] : next) {
    for (const auto& [chain, rules] : service.chains) nat_after.chains[chain] = rules;
  }

  SKIFF_RETURN_IF_ERROR(apply(iptables_table_section("filter", filter_before, filter_after, true),
                              iptables_table_section("filter", filter_after, filter_before, true),
                              iptables_table_section("nat", nat_before, nat_after, true)));
  applied_ = std::move(next);
  applied_filter_ = std::move(filter_after);
  applied_shared_nat_ = std::move(shared);
  return Status::ok();
}

Status IptablesBackend::incremental_sync(const ProxyState& state,
                                         const std::set<std::string>& changed) {
  // Only the chains of the changed Services, and the shared chains, take part in the diff.
  IptablesTable nat_before = applied_shared_nat_;
  IptablesTable nat_after;
  std::map<std::string, std::optional<IptablesService>> previous;  // to undo on failure
  for (const std::string& key : changed) {
    auto it = state.find(key);
    IptablesService service =
        it == state.end() ? IptablesService{} : render_iptables_service(it->second, config_);
    auto old = applied_.find(key);
    if (old != applied_.end()) {
      for (const auto& [chain, rules] : old->second.chains) nat_before.chains[chain] = rules;
      previous[key] = std::move(old->second);
    } else {
      previous[key] = std::nullopt;
    }
    for (const auto& [chain, rules] : service.chains) nat_after.chains[chain] = rules;
    if (service == IptablesService{}) {
      applied_.erase(key);
    } else {
      applied_[key] = std::move(service);
    }
  }
  // Rebuilding the shared chains walks every Service: linear in their number, but only memory;
  // the kernel sees them only when their content changed.
  IptablesTable shared = shared_nat(applied_);
  for (const auto& [chain, rules] : shared.chains) nat_after.chains[chain] = rules;
  IptablesTable filter_after = filter_table(applied_);

  Status s = apply(iptables_table_section("filter", applied_filter_, filter_after, false),
                   iptables_table_section("filter", filter_after, applied_filter_, false),
                   iptables_table_section("nat", nat_before, nat_after, false));
  if (!s.is_ok()) {
    for (auto& [key, old] : previous) {
      if (old) {
        applied_[key] = std::move(*old);
      } else {
        applied_.erase(key);
      }
    }
    return s;
  }
  applied_filter_ = std::move(filter_after);
  applied_shared_nat_ = std::move(shared);
  return Status::ok();
}

// iptables-restore commits each table on its own, at its COMMIT line, for both the legacy and
// the nft variant (measured with iptables 1.8.9: a failing *filter section after a good *nat
// section leaves the nat changes in place). So one input with both sections is not atomic as a
// whole. The filter section goes first and is small (reject and drop rules only): when it fails,
// nothing is applied. When the nat section fails after the filter section committed, a second
// restore puts the filter chains back as they were; until then (a few milliseconds), Services
// whose endpoints came or went are rejected or let through by the new filter rules while nat
// still has the old DNAT rules. Should that rollback fail too, the error says so, and the next
// sync (full, as after every failure) rewrites both tables.
Status IptablesBackend::apply(const std::string& filter_input, const std::string& filter_rollback,
                              const std::string& nat_input) {
  const std::string input = filter_input + nat_input;
  last_input_size_ = input.size();
  if (input.empty()) return Status::ok();
  Status s = runner_->restore(input);
  if (s.is_ok() || filter_input.empty()) return s;
  const size_t line = error_line(s.message());
  if (line != 0 && line <= count_lines(filter_input)) return s;  // the filter section failed
  Status undo = runner_->restore(filter_rollback);
  if (undo.is_ok()) return s;
  return error(s.code(),
               s.message() + "; restoring the filter chains failed too: " + undo.message());
}

Status IptablesBackend::cleanup() {
  applied_.clear();
  applied_filter_ = {};
  applied_shared_nat_ = {};
  synced_ = false;
  std::string input;
  for (const char* table : {"filter", "nat"}) {
    auto saved = runner_->save(table);
    if (!saved.is_ok()) return saved.status();
    input += iptables_table_section(table, parse_iptables_save(saved.value()), {}, false);
  }
  last_input_size_ = input.size();
  return input.empty() ? Status::ok() : runner_->restore(input);
}

}  // namespace skiff::proxy
