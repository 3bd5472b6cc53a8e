// The nftnl runner loads exactly what libnftables loads: for each kind of Service and each kind
// of change, the same incremental sync goes once through libnftables and once through the nftnl
// runner, each in a network namespace of its own (created by this test process), and the
// kernel's listings must be identical. The same for each line shape of the endpoint maps (their
// elements and the DNAT rules that look them up). Plus: a failing batch changes nothing,
// scripts of other shapes go to the fallback, and the time of one element add on 10,000
// Services.

#include <errno.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sched.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <functional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "base/process.h"
#include "proxy/nftables.h"
#include "proxy/proxy_test_util.h"

namespace skiff::proxy {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// Forwards to libnftables and counts the scripts it was given.
class CountingRunner : public NftRunner {
 public:
  explicit CountingRunner(int* calls) : calls_(calls), inner_(make_libnftables_runner()) {}
  Status run(const std::string& script) override {
    ++*calls_;
    return inner_->run(script);
  }

 private:
  int* calls_;
  std::unique_ptr<NftRunner> inner_;
};

std::string nft(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {"nft"};
  argv.insert(argv.end(), args.begin(), args.end());
  auto out = run_command(argv, std::chrono::seconds(60));
  if (!out.is_ok()) return "<" + out.status().message() + ">";
  return out->out + out->err;
}

// The ruleset as `nft list ruleset` prints it, followed by the expressions of every rule as
// the kernel dumps them (libnftnl's rendering), so a difference that the listing would hide
// (a register, a length) still shows.
std::string kernel_state() {
  std::string out = nft({"list", "ruleset"}) + "\n----\n";
  // Elements come in the kernel's hash order, which differs between tables: sort each run.
  std::istringstream debug(nft({"--debug=netlink", "list", "ruleset"}));
  std::vector<std::string> elements;
  auto flush = [&] {
    std::sort(elements.begin(), elements.end());
    for (const std::string& e : elements) out += e + "\n";
    elements.clear();
  };
  for (std::string line; std::getline(debug, line);) {
    if (line.rfind("\telement ", 0) == 0) {
      elements.push_back(line);
      continue;
    }
    flush();
    out += line + "\n";
  }
  flush();
  return out;
}

ServicePort port(const std::string& name, const std::string& cluster_ip, int endpoints,
                 const std::string& protocol = "tcp") {
  ServicePort sp;
  sp.ns = "default";
  sp.service = name;
  sp.port_name = "p";
  sp.protocol = protocol;
  sp.cluster_ip = cluster_ip;
  sp.port = 80;
  for (int i = 0; i < endpoints; ++i) {
    Endpoint e;
    e.ip = "10.42." + std::to_string(cluster_ip.back() - '0' + 1) + "." + std::to_string(10 + i);
    e.port = 8080;
    sp.endpoints.push_back(e);
  }
  return sp;
}

// One Service of each kind the backend writes differently.
ProxyState all_kinds() {
  ProxyState s;
  auto put = [&](const ServicePort& sp) { s["default/" + sp.service] = {sp}; };
  put(port("one", "10.43.0.1", 1));
  put(port("two", "10.43.0.2", 2));
  put(port("five", "10.43.0.3", 5));
  put(port("twenty", "10.43.0.4", 20));  // a verdict map for the pick
  ServicePort aff = port("affinity", "10.43.0.5", 3);
  aff.affinity_timeout_seconds = 10800;
  put(aff);
  ServicePort np = port("nodeport", "10.43.0.6", 2);
  np.node_port = 30006;
  put(np);
  ServicePort lb = port("lb", "10.43.0.7", 2);
  lb.external_ips = {"192.0.2.7"};
  lb.load_balancer_ips = {"198.51.100.7"};
  lb.node_port = 30007;
  put(lb);
  ServicePort local = port("local", "10.43.0.8", 2);
  local.external_local = true;
  local.endpoints[1].local = true;
  local.load_balancer_ips = {"198.51.100.8"};
  local.node_port = 30008;
  put(local);
  ServicePort remote = port("remote", "10.43.0.9", 2);
  remote.external_local = true;  // no endpoint on this node: external traffic is dropped
  remote.node_port = 30009;
  remote.external_ips = {"192.0.2.9"};
  put(remote);
  ServicePort udp = port("udp", "10.43.1.0", 2, "udp");
  udp.cluster_ip = "10.43.1.0";
  put(udp);
  ServicePort sctp = port("sctp", "10.43.1.1", 1, "sctp");
  put(sctp);
  ServicePort none = port("none", "10.43.1.2", 0);
  none.node_port = 30012;
  put(none);
  return s;
}

struct Outcome {
  Status full;
  Status incremental;
  std::string state;
  std::string script;
  int fallback_calls = 0;
};

// In a fresh network namespace: a full sync of `before`, then an incremental one to `after`.
Outcome apply(bool nftnl, const ProxyState& before, const ProxyState& after,
              const std::set<std::string>& changed) {
  Outcome o;
  if (::unshare(CLONE_NEWNET) != 0) {
    o.full = error(StatusCode::kInternal, std::string("unshare: ") + std::strerror(errno));
    return o;
  }
  std::unique_ptr<NftRunner> runner =
      nftnl ? make_nftnl_runner(std::make_unique<CountingRunner>(&o.fallback_calls))
            : make_libnftables_runner();
  NftablesBackend backend(ProxyConfig{}, std::move(runner));
  o.full = backend.sync(before, {}, true);
  if (!o.full.is_ok()) return o;
  o.incremental = backend.sync(after, changed, false);
  o.state = kernel_state();
  return o;
}

class NftnlRunnerTest : public testing::OwnNetns<> {};

// Both runners from the same `before`, through the same change: identical kernels.
void expect_same(const std::string& what, const ProxyState& before, const ProxyState& after,
                 const std::set<std::string>& changed) {
  SCOPED_TRACE(what);
  Outcome reference = apply(false, before, after, changed);
  Outcome ours = apply(true, before, after, changed);
  ASSERT_TRUE(reference.full.is_ok()) << reference.full.message();
  ASSERT_TRUE(reference.incremental.is_ok()) << reference.incremental.message();
  ASSERT_TRUE(ours.full.is_ok()) << ours.full.message();
  ASSERT_TRUE(ours.incremental.is_ok()) << ours.incremental.message();
  // Only the full sync went to libnftables.
  EXPECT_EQ(ours.fallback_calls, 1);
  EXPECT_THAT(ours.state, HasSubstr("table ip skiff-proxy"));
  EXPECT_EQ(ours.state, reference.state);
}

TEST_F(NftnlRunnerTest, EveryChangeOfEveryKindLoadsWhatLibnftablesLoads) {
  const ProxyState base = all_kinds();
  using Change = std::function<bool(std::vector<ServicePort>&)>;  // false: not applicable
  const std::vector<std::pair<std::string, Change>> changes = {
      {"endpoint added",
       [](std::vector<ServicePort>& ports) {
         Endpoint e;
         e.ip = "10.42.99." + std::to_string(ports[0].endpoints.size() + 1);
         e.port = 9090;
         e.local = ports[0].external_local;
         ports[0].endpoints.push_back(e);
         return true;
       }},
      {"endpoint removed",
       [](std::vector<ServicePort>& ports) {
         if (ports[0].endpoints.empty()) return false;
         ports[0].endpoints.pop_back();
         return true;
       }},
      {"endpoint unready",
       [](std::vector<ServicePort>& ports) {
         if (ports[0].endpoints.empty()) return false;
         ports[0].endpoints[0].ready = false;
         ports[0].endpoints[0].serving = false;
         return true;
       }},
      {"affinity toggled",
       [](std::vector<ServicePort>& ports) {
         ports[0].affinity_timeout_seconds = ports[0].affinity_timeout_seconds ? 0 : 60;
         return true;
       }},
  };
  int cases = 0;
  for (const auto& [key, ports] : base) {
    for (const auto& [name, change] : changes) {
      ProxyState after = base;
      if (!change(after[key])) continue;
      expect_same(key + ": " + name, base, after, {key});
      ++cases;
    }
    ProxyState without = base;
    without.erase(key);
    expect_same(key + ": Service removed", base, without, {key});
    expect_same(key + ": Service added", without, base, {key});
    cases += 2;
  }
  // Every Service changes in one sync.
  ProxyState after = base;
  std::set<std::string> keys;
  for (auto& [key, ports] : after) {
    changes[0].second(ports);
    changes[3].second(ports);
    keys.insert(key);
  }
  expect_same("all at once", base, after, keys);
  EXPECT_GT(cases, 60);
}

TEST_F(NftnlRunnerTest, ANonDefaultClusterCidrIsEncodedAsNftablesDoes) {
  // A prefix that is not a whole number of bytes takes a mask.
  for (const char* cidr : {"10.32.0.0/12", "10.42.0.0/24", "10.42.0.0/20"}) {
    SCOPED_TRACE(cidr);
    ProxyConfig config;
    config.cluster_cidr = cidr;
    ProxyState before = all_kinds();
    ProxyState after = before;
    after.erase("default/two");
    std::string states[2];
    for (int nftnl = 0; nftnl < 2; ++nftnl) {
      ASSERT_EQ(::unshare(CLONE_NEWNET), 0);
      int fallback_calls = 0;
      NftablesBackend backend(
          config, nftnl ? make_nftnl_runner(std::make_unique<CountingRunner>(&fallback_calls))
                        : make_libnftables_runner());
      ASSERT_TRUE(backend.sync(after, {}, true).is_ok());
      Status s = backend.sync(before, {"default/two"}, false);
      ASSERT_TRUE(s.is_ok()) << s.message();
      if (nftnl) {
        EXPECT_EQ(fallback_calls, 1);
      }
      states[nftnl] = kernel_state();
    }
    EXPECT_THAT(states[1], HasSubstr(std::string("ip saddr != ") + cidr));
    EXPECT_EQ(states[1], states[0]);
  }
}

TEST_F(NftnlRunnerTest, AFailedBatchAppliesNothing) {
  ASSERT_EQ(::unshare(CLONE_NEWNET), 0);
  int fallback_calls = 0;
  std::unique_ptr<NftRunner> runner =
      make_nftnl_runner(std::make_unique<CountingRunner>(&fallback_calls));
  NftablesBackend backend(ProxyConfig{}, make_libnftables_runner());
  ASSERT_TRUE(backend.sync(all_kinds(), {}, true).is_ok());
  const std::string before = kernel_state();

  // The first two lines are fine on their own; the third jumps to a chain that does not exist.
  Status s = runner->run(
      "add chain ip skiff-proxy fresh\n"
      "add element ip skiff-proxy service-ips { 10.43.9.9 . tcp . 80 : goto fresh }\n"
      "add rule ip skiff-proxy fresh goto no-such-chain\n");
  ASSERT_FALSE(s.is_ok());
  EXPECT_EQ(s.code(), StatusCode::kInternal);
  EXPECT_THAT(s.message(), HasSubstr("line 3"));
  EXPECT_THAT(s.message(), HasSubstr("no-such-chain"));
  EXPECT_THAT(s.message(), HasSubstr(std::strerror(ENOENT)));
  EXPECT_EQ(fallback_calls, 0);
  EXPECT_EQ(kernel_state(), before);

  // A map key of the wrong size: the kernel refuses it, nothing else changes either.
  s = runner->run(
      "add chain ip skiff-proxy fresh\n"
      "add element ip skiff-proxy service-nodeports { 10.43.9.9 . tcp . 80 : goto fresh }\n");
  ASSERT_FALSE(s.is_ok());
  EXPECT_THAT(s.message(), HasSubstr("line 2"));
  EXPECT_EQ(kernel_state(), before);

  // The same runner then applies a good script.
  s = runner->run(
      "add chain ip skiff-proxy fresh\n"
      "add rule ip skiff-proxy fresh goto reject-chain\n"
      "add element ip skiff-proxy service-ips { 10.43.9.9 . tcp . 80 : goto fresh }\n");
  ASSERT_TRUE(s.is_ok()) << s.message();
  EXPECT_EQ(fallback_calls, 0);
  EXPECT_THAT(kernel_state(), HasSubstr("10.43.9.9 . tcp . 80 : goto fresh"));
}

TEST_F(NftnlRunnerTest, OtherScriptsGoToTheFallback) {
  ASSERT_EQ(::unshare(CLONE_NEWNET), 0);
  int fallback_calls = 0;
  std::unique_ptr<NftRunner> runner =
      make_nftnl_runner(std::make_unique<CountingRunner>(&fallback_calls));
  ASSERT_TRUE(runner->run(base_script(ProxyConfig{})).is_ok());
  EXPECT_EQ(fallback_calls, 1);
  // A shape the encoder does not know, mixed with ones it does: the whole script falls back.
  Status s = runner->run(
      "add chain ip skiff-proxy fresh\n"
      "add rule ip skiff-proxy fresh counter goto reject-chain\n");
  ASSERT_TRUE(s.is_ok()) << s.message();
  EXPECT_EQ(fallback_calls, 2);
  EXPECT_THAT(nft({"list", "chain", "ip", "skiff-proxy", "fresh"}), HasSubstr("counter"));
  // A line the encoder cannot read is left to libnftables, which reports it.
  s = runner->run("add rule ip skiff-proxy fresh ip saddr 10.42.0.300 goto reject-chain\n");
  EXPECT_FALSE(s.is_ok());
  EXPECT_EQ(fallback_calls, 3);
  // Nothing to do is no work.
  EXPECT_TRUE(runner->run("\n").is_ok());
  EXPECT_EQ(fallback_calls, 3);
}

// The endpoint maps and sets of the map-based backend, declared as its full sync declares them
// (through libnftables), with the chains the scripts below refer to.
constexpr const char* kMapBase =
    "add table ip maps\n"
    "add chain ip maps services\n"
    "add chain ip maps pick-3\n"
    "add chain ip maps mark-for-masquerade\n"
    "add map ip maps service-ips { type ipv4_addr . inet_proto . inet_service : verdict ; }\n"
    "add map ip maps service-nodeports { type inet_proto . inet_service : verdict ; }\n"
    "add map ip maps endpoints { typeof ip daddr . meta l4proto . th dport . numgen random mod 1 "
    ": ip daddr . th dport ; }\n"
    "add map ip maps nodeport-endpoints { typeof meta l4proto . th dport . numgen random mod 1 : "
    "ip daddr . th dport ; }\n"
    "add set ip maps cluster-ips { type ipv4_addr . inet_proto . inet_service ; }\n"
    "add set ip maps hairpin { type ipv4_addr . ipv4_addr ; }\n";

struct MapCase {
  std::string name;
  std::string setup;                    // after kMapBase, through libnftables on both sides
  std::string script;                   // through libnftables, or through the nftnl runner
  std::vector<std::string> listed;      // in `nft list ruleset` afterwards
  std::vector<std::string> not_listed;  // not in it
};

struct MapOutcome {
  Status setup;
  Status script;
  std::string state;
  int fallback_calls = 0;
};

enum class Via {
  kLibnftables,          // the script in a transaction of its own
  kLibnftablesTogether,  // the script in the setup's transaction
  kNftnl,
};

// In a fresh network namespace: kMapBase and the setup, then the script.
MapOutcome apply_map_case(Via via, const MapCase& c) {
  MapOutcome o;
  if (::unshare(CLONE_NEWNET) != 0) {
    o.setup = error(StatusCode::kInternal, std::string("unshare: ") + std::strerror(errno));
    return o;
  }
  std::unique_ptr<NftRunner> libnftables = make_libnftables_runner();
  if (via == Via::kLibnftablesTogether) {
    o.setup = libnftables->run(kMapBase + c.setup + c.script);
    o.script = o.setup;
  } else {
    o.setup = libnftables->run(kMapBase + c.setup);
    if (!o.setup.is_ok()) return o;
    if (via == Via::kNftnl) {
      o.script =
          make_nftnl_runner(std::make_unique<CountingRunner>(&o.fallback_calls))->run(c.script);
    } else {
      o.script = libnftables->run(c.script);
    }
  }
  o.state = kernel_state();
  return o;
}

void expect_same_maps(const MapCase& c, Via reference_via) {
  SCOPED_TRACE(c.name);
  MapOutcome reference = apply_map_case(reference_via, c);
  MapOutcome ours = apply_map_case(Via::kNftnl, c);
  ASSERT_TRUE(reference.setup.is_ok()) << reference.setup.message();
  ASSERT_TRUE(reference.script.is_ok()) << reference.script.message();
  ASSERT_TRUE(ours.setup.is_ok()) << ours.setup.message();
  ASSERT_TRUE(ours.script.is_ok()) << ours.script.message();
  EXPECT_EQ(ours.fallback_calls, 0);
  for (const std::string& s : c.listed) EXPECT_THAT(ours.state, HasSubstr(s));
  for (const std::string& s : c.not_listed) EXPECT_THAT(ours.state, Not(HasSubstr(s)));
  EXPECT_EQ(ours.state, reference.state);
}

TEST_F(NftnlRunnerTest, EndpointMapElementsLoadWhatLibnftablesLoads) {
  const std::vector<MapCase> cases = {
      {"endpoints: add",
       "",
       "add element ip maps endpoints { 10.43.0.5 . udp . 53 . 2 : 10.42.0.9 . 5353 }\n"
       "add element ip maps endpoints { 10.43.0.5 . tcp . 65535 . 0 : 10.42.0.10 . 1 }\n"
       "add element ip maps endpoints { 192.0.2.7 . sctp . 0 . 4294967295 : 0.0.0.0 . 65535 }\n",
       {"10.43.0.5 . udp . 53 . 2 : 10.42.0.9 . 5353",
        // the key and data bytes as `nft --debug=netlink` shows them
        "element 05002b0a 00000011 00003500 00000002  : 09002a0a 0000e914",
        "192.0.2.7 . sctp . 0 . 4294967295 : 0.0.0.0 . 65535"},
       {}},
      {"endpoints: delete",
       "add element ip maps endpoints { 10.43.0.5 . udp . 53 . 0 : 10.42.0.9 . 5353 }\n"
       "add element ip maps endpoints { 10.43.0.5 . udp . 53 . 1 : 10.42.0.10 . 5353 }\n",
       "delete element ip maps endpoints { 10.43.0.5 . udp . 53 . 1 }\n",
       {"10.43.0.5 . udp . 53 . 0 : 10.42.0.9 . 5353"},
       {"10.42.0.10"}},
      {"endpoints: replace one",
       "add element ip maps endpoints { 10.43.0.5 . tcp . 80 . 0 : 10.42.0.9 . 8080 }\n",
       "delete element ip maps endpoints { 10.43.0.5 . tcp . 80 . 0 }\n"
       "add element ip maps endpoints { 10.43.0.5 . tcp . 80 . 0 : 10.42.0.11 . 8080 }\n",
       {"10.43.0.5 . tcp . 80 . 0 : 10.42.0.11 . 8080"},
       {"10.42.0.9"}},
      {"node port endpoints: add",
       "",
       "add element ip maps nodeport-endpoints { tcp . 30001 . 0 : 10.42.0.9 . 8080 }\n"
       "add element ip maps nodeport-endpoints { udp . 30002 . 7 : 10.42.0.10 . 53 }\n",
       {"tcp . 30001 . 0 : 10.42.0.9 . 8080", "udp . 30002 . 7 : 10.42.0.10 . 53"},
       {}},
      {"node port endpoints: delete",
       "add element ip maps nodeport-endpoints { tcp . 30001 . 0 : 10.42.0.9 . 8080 }\n"
       "add element ip maps nodeport-endpoints { tcp . 30001 . 1 : 10.42.0.10 . 8080 }\n",
       "delete element ip maps nodeport-endpoints { tcp . 30001 . 0 }\n",
       {"tcp . 30001 . 1 : 10.42.0.10 . 8080"},
       {"10.42.0.9"}},
      {"pairs: add and delete",
       "add element ip maps hairpin { 10.42.0.9 . 10.42.0.9 }\n",
       "add element ip maps hairpin { 10.42.0.10 . 10.42.0.10 }\n"
       "delete element ip maps hairpin { 10.42.0.9 . 10.42.0.9 }\n",
       {"10.42.0.10 . 10.42.0.10"},
       {"10.42.0.9"}},
      {"cluster IPs: add and delete",
       "add element ip maps cluster-ips { 10.43.0.6 . tcp . 80 }\n",
       "add element ip maps cluster-ips { 10.43.0.5 . udp . 53 }\n"
       "add element ip maps cluster-ips { 10.43.0.7 . sctp . 9 }\n"
       "delete element ip maps cluster-ips { 10.43.0.6 . tcp . 80 }\n",
       {"10.43.0.5 . udp . 53", "10.43.0.7 . sctp . 9"},
       {"10.43.0.6"}},
      {"verdict maps as before",
       "add element ip maps service-ips { 10.43.0.8 . tcp . 80 : goto pick-3 }\n",
       "add element ip maps service-ips { 10.43.0.5 . tcp . 80 : goto pick-3 }\n"
       "add element ip maps service-ips { 10.43.0.6 . udp . 53 : jump mark-for-masquerade }\n"
       "add element ip maps service-nodeports { sctp . 30003 : drop }\n"
       "delete element ip maps service-ips { 10.43.0.8 . tcp . 80 }\n",
       {"10.43.0.5 . tcp . 80 : goto pick-3", "10.43.0.6 . udp . 53 : jump mark-for-masquerade",
        "sctp . 30003 : drop"},
       {"10.43.0.8"}},
      {"an endpoint change as one script",
       "add element ip maps endpoints { 10.43.0.5 . tcp . 80 . 0 : 10.42.0.9 . 8080 }\n"
       "add element ip maps hairpin { 10.42.0.9 . 10.42.0.9 }\n",
       "add element ip maps endpoints { 10.43.0.5 . tcp . 80 . 1 : 10.42.0.10 . 8080 }\n"
       "add element ip maps hairpin { 10.42.0.10 . 10.42.0.10 }\n"
       "add element ip maps nodeport-endpoints { tcp . 30001 . 1 : 10.42.0.10 . 8080 }\n"
       "add element ip maps service-ips { 10.43.0.5 . tcp . 80 : goto pick-3 }\n"
       "add element ip maps cluster-ips { 10.43.0.5 . tcp . 80 }\n",
       {"10.43.0.5 . tcp . 80 . 1 : 10.42.0.10 . 8080"},
       {}},
  };
  for (const MapCase& c : cases) expect_same_maps(c, Via::kLibnftables);
}

TEST_F(NftnlRunnerTest, DnatFromEndpointMapsIsEncodedAsNftablesEncodesIt) {
  // nftables 1.0.6 refuses these DNAT rules when the map comes from the kernel rather than from
  // the same transaction: it reads the map's data type (`ip daddr . th dport` in kMapBase) back
  // and finds it in conflict with the rule's protocol. So the reference loads them with the maps
  // in one transaction; the kernel gives objects the same handles either way.
  const std::vector<MapCase> cases = {
      {"dnat to address and port from the endpoints map",
       "",
       "add rule ip maps services meta l4proto udp dnat ip to ip daddr . meta l4proto . th dport "
       ". numgen random mod 3 map @endpoints\n",
       {"numgen random mod 3 map @endpoints", "[ meta load l4proto => reg 9 ]",
        "[ payload load 2b @ transport header + 2 => reg 10 ]", "[ numgen reg 11 = random mod 3 ]",
        "[ lookup reg 1 set endpoints dreg 1 0x0 ]",
        "[ nat dnat ip addr_min reg 1 addr_max reg 1 proto_min reg 9 proto_max reg 9 flags 0x3 ]"},
       {}},
      {"dnat from the node port endpoints map",
       "",
       "add rule ip maps services meta l4proto tcp dnat ip to meta l4proto . th dport . numgen "
       "random mod 2 map @nodeport-endpoints\n",
       {"numgen random mod 2 map @nodeport-endpoints",
        "[ payload load 2b @ transport header + 2 => reg 9 ]", "[ numgen reg 10 = random mod 2 ]",
        "[ lookup reg 1 set nodeport-endpoints dreg 1 0x0 ]"},
       {}},
      {"a new pick chain, as the backend writes it",
       "",
       "add chain ip maps pick-7\n"
       "add rule ip maps pick-7 jump mark-for-masquerade\n"
       "add rule ip maps pick-7 meta l4proto tcp dnat ip to ip daddr . meta l4proto . th dport . "
       "numgen random mod 7 map @endpoints\n"
       "add rule ip maps pick-7 meta l4proto udp dnat ip to ip daddr . meta l4proto . th dport . "
       "numgen random mod 7 map @endpoints\n"
       "add rule ip maps pick-7 meta l4proto sctp dnat ip to ip daddr . meta l4proto . th dport . "
       "numgen random mod 7 map @endpoints\n"
       "add rule ip maps pick-7 meta l4proto sctp dnat ip to meta l4proto . th dport . "
       "numgen random mod 4294967295 map @nodeport-endpoints\n",
       {"chain pick-7", "jump mark-for-masquerade", "[ cmp eq reg 1 0x00000084 ]",
        "[ numgen reg 10 = random mod 4294967295 ]"},
       {}},
      {"after other matches, and into an existing chain",
       "add rule ip maps services jump mark-for-masquerade\n",
       "add rule ip maps pick-3 ip saddr 10.42.0.0/16 meta l4proto tcp dnat ip to ip daddr . meta "
       "l4proto . th dport . numgen random mod 1 map @endpoints\n",
       {"ip saddr 10.42.0.0/16", "numgen random mod 1 map @endpoints"},
       {}},
  };
  for (const MapCase& c : cases) expect_same_maps(c, Via::kLibnftablesTogether);

  // Jumps and gotos alone still load as libnftables loads them, in a transaction of their own.
  expect_same_maps({"a jump and a goto",
                    "",
                    "add rule ip maps services jump mark-for-masquerade\n"
                    "add rule ip maps services goto pick-3\n",
                    {"jump mark-for-masquerade", "goto pick-3"},
                    {}},
                   Via::kLibnftables);
}

TEST_F(NftnlRunnerTest, OtherMapShapesGoToTheFallback) {
  ASSERT_EQ(::unshare(CLONE_NEWNET), 0);
  ASSERT_TRUE(make_libnftables_runner()->run(kMapBase).is_ok());
  int fallback_calls = 0;
  std::unique_ptr<NftRunner> runner =
      make_nftnl_runner(std::make_unique<CountingRunner>(&fallback_calls));
  const std::string dnat = "add rule ip maps services meta l4proto tcp dnat ip to ";
  const std::vector<std::string> lines = {
      // keys
      "add element ip maps endpoints { 10.43.0.5 . udp . 53 . x : 10.42.0.9 . 5353 }",
      "add element ip maps endpoints { 10.43.0.5 . udp . 53 . -1 : 10.42.0.9 . 5353 }",
      "add element ip maps endpoints { 10.43.0.5 . udp . 53 . 4294967296 : 10.42.0.9 . 5353 }",
      "add element ip maps endpoints { 10.43.0.5 . udp . 65536 . 0 : 10.42.0.9 . 5353 }",
      "add element ip maps endpoints { 10.43.0.5 . icmp . 53 . 0 : 10.42.0.9 . 5353 }",
      "add element ip maps endpoints { 10.43.0.5 . udp . 53 . 0 . 1 : 10.42.0.9 . 5353 }",
      "add element ip maps endpoints { 10.43.0.5 udp . 53 . 0 : 10.42.0.9 . 5353 }",
      "add element ip maps endpoints { 10.43.0.5 . udp . 53 . : 10.42.0.9 . 5353 }",
      "delete element ip maps endpoints { 10.43.0.5 . udp . 53 . two }",
      "add element ip maps nodeport-endpoints { tcp . 30001 . 0x1 : 10.42.0.9 . 8080 }",
      "add element ip maps nodeport-endpoints { gre . 30001 . 0 : 10.42.0.9 . 8080 }",
      "add element ip maps hairpin { 10.42.0.9 . 10.42.0.300 }",
      "add element ip maps hairpin { 10.42.0.9 . 80 }",
      "add element ip maps cluster-ips { 10.43.0.5 . tcp . 80000 }",
      "add element ip maps cluster-ips { 10.43.0.5 . tcp }",
      "add element ip maps cluster-ips { 10.43.0.5 }",
      // data
      "add element ip maps endpoints { 10.43.0.5 . udp . 53 . 0 : 10.42.0.9 . 65536 }",
      "add element ip maps endpoints { 10.43.0.5 . udp . 53 . 0 : 10.42.0.9 }",
      "add element ip maps endpoints { 10.43.0.5 . udp . 53 . 0 : 10.42.0.9 . udp . 53 }",
      "add element ip maps endpoints { 10.43.0.5 . udp . 53 . 0 : 10.42.0.9 : 53 }",
      "add element ip maps endpoints { 10.43.0.5 . udp . 53 . 0 : }",
      "delete element ip maps endpoints { 10.43.0.5 . udp . 53 . 0 : 10.42.0.9 . 53 }",
      // DNAT rules
      dnat + "ip daddr . meta l4proto . th dport . numgen random mod 0 map @endpoints",
      dnat + "ip daddr . meta l4proto . th dport . numgen random mod three map @endpoints",
      dnat + "ip daddr . meta l4proto . th dport . numgen random mod 4294967296 map @endpoints",
      dnat + "ip daddr . meta l4proto . th dport . numgen random mod 3 map endpoints",
      dnat + "ip daddr . meta l4proto . th dport . numgen random mod 3 map @",
      dnat + "ip daddr . meta l4proto . th dport . numgen random mod 3 map @endpoints accept",
      dnat + "ip daddr . meta l4proto . th dport . numgen inc mod 3 map @endpoints",
      dnat + "ip saddr . meta l4proto . th dport . numgen random mod 3 map @endpoints",
      dnat + "ip daddr . th dport . numgen random mod 3 map @endpoints",
      dnat + "ip daddr . meta l4proto . th sport . numgen random mod 3 map @endpoints",
      dnat + "ip daddr . meta l4proto . th dport map @endpoints",
      dnat + "meta l4proto . th dport . numgen random mod 3 vmap @nodeport-endpoints",
      // a transport protocol that is not matched by meta l4proto, or not at all
      "add rule ip maps services tcp dport 80 dnat ip to meta l4proto . th dport . numgen random "
      "mod 3 map @nodeport-endpoints",
      "add rule ip maps services dnat ip to meta l4proto . th dport . numgen random mod 3 map "
      "@nodeport-endpoints",
      "add rule ip maps services meta l4proto tcp dnat to meta l4proto . th dport . numgen random "
      "mod 3 map @nodeport-endpoints",
  };
  for (const std::string& line : lines) {
    SCOPED_TRACE(line);
    const int calls = fallback_calls;
    // libnftables refuses most of these; whatever it says, the nftnl runner left them to it.
    (void)runner->run(line + "\n");
    EXPECT_EQ(fallback_calls, calls + 1);
  }
  // The shapes it does encode, for contrast, go straight to the kernel.
  const std::string before = kernel_state();
  const int calls = fallback_calls;
  Status s = runner->run(
      "add element ip maps endpoints { 10.43.0.5 . udp . 53 . 0 : 10.42.0.9 . 5353 }\n" + dnat +
      "ip daddr . meta l4proto . th dport . numgen random mod 3 map @endpoints\n");
  ASSERT_TRUE(s.is_ok()) << s.message();
  EXPECT_EQ(fallback_calls, calls);
  EXPECT_NE(kernel_state(), before);
}

TEST_F(NftnlRunnerTest, OneElementAddOnTenThousandServices) {
  ASSERT_EQ(::unshare(CLONE_NEWNET), 0);
  ProxyState state;
  for (int i = 0; i < 10000; ++i) {
    ServicePort sp = port("svc" + std::to_string(i), "10.43.0.1", 2);
    sp.cluster_ip = "10.43." + std::to_string(i / 250) + "." + std::to_string(i % 250 + 1);
    state["default/" + sp.service] = {sp};
  }
  NftablesBackend backend(ProxyConfig{}, make_libnftables_runner());
  Status s = backend.sync(state, {}, true);
  ASSERT_TRUE(s.is_ok()) << s.message();

  const std::string add =
      "add element ip skiff-proxy no-endpoint-services { 10.99.0.1 . tcp . 80 : goto "
      "reject-chain }\n";
  const std::string del =
      "delete element ip skiff-proxy no-endpoint-services { 10.99.0.1 . tcp . 80 }\n";
  auto time_adds = [&](NftRunner& runner, const std::string& add) {
    std::vector<double> ms;
    for (int i = 0; i < 5; ++i) {
      auto start = std::chrono::steady_clock::now();
      Status st = runner.run(add);
      auto end = std::chrono::steady_clock::now();
      EXPECT_TRUE(st.is_ok()) << st.message();
      ms.push_back(std::chrono::duration<double, std::milli>(end - start).count());
      st = runner.run(del);
      EXPECT_TRUE(st.is_ok()) << st.message();
    }
    std::sort(ms.begin(), ms.end());
    return ms[ms.size() / 2];
  };
  std::unique_ptr<NftRunner> libnftables = make_libnftables_runner();
  int fallback_calls = 0;
  std::unique_ptr<NftRunner> nftnl =
      make_nftnl_runner(std::make_unique<CountingRunner>(&fallback_calls));
  const std::string add_drop =
      "add element ip skiff-proxy no-endpoint-services { 10.99.0.1 . tcp . 80 : drop }\n";
  // A goto makes the kernel check the whole table for loops when it commits; a drop does not.
  for (const auto& [what, script] : {std::pair{"goto", add}, std::pair{"drop", add_drop}}) {
    double slow = time_adds(*libnftables, script);
    double fast = time_adds(*nftnl, script);
    std::printf(
        "one element add (%s), 10,000 Services (median of 5): libnftables %.2f ms, "
        "nftnl %.3f ms\n",
        what, slow, fast);
  }
  EXPECT_EQ(fallback_calls, 0);
  EXPECT_THAT(nft({"list", "map", "ip", "skiff-proxy", "no-endpoint-services"}),
              Not(HasSubstr("10.99.0.1")));
}

}  // namespace
}  // namespace skiff::proxy
