// The nftables backend: what it writes for each kind of Service, and that the kernel takes it
// (in a network namespace of the test's own), incrementally and in full.

#include "proxy/nftables.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sched.h>

#include <chrono>
#include <set>

#include "base/process.h"
#include "proxy/proxy_test_util.h"

namespace skiff::proxy {
namespace {

using ::testing::Contains;
using ::testing::HasSubstr;
using ::testing::Not;
using testing::web_port;

std::string all_rules(const NftObjects& o) {
  std::string s;
  for (const auto& [chain, rules] : o.chains) {
    for (const auto& r : rules) s += chain + ": " + r + "\n";
  }
  for (const auto& [map, e] : o.elements) s += map + " <- " + e + "\n";
  for (const auto& [set, decl] : o.sets) s += "set " + set + " " + decl + "\n";
  return s;
}

std::multiset<std::string> sorted_lines(const std::string& text) {
  std::multiset<std::string> lines;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    lines.insert(text.substr(start, end - start));
    start = end + 1;
  }
  return lines;
}

TEST(NftablesRender, ClusterIpSpreadsOverReadyEndpoints) {
  ServicePort sp = web_port(3);
  sp.endpoints[1].ready = false;
  NftObjects o = render_service({sp}, ProxyConfig{});
  std::string s = all_rules(o);
  // No chain of its own: the map leads to the chain shared by two-endpoint ports, which finds
  // the endpoint under (address . protocol . port . pick).
  EXPECT_TRUE(o.chains.empty());
  EXPECT_THAT(s, HasSubstr("service-ips <- 10.43.0.20 . tcp . 80 : goto pick-2"));
  EXPECT_THAT(s, HasSubstr("endpoints <- 10.43.0.20 . tcp . 80 . 0 : 10.42.0.10 . 8080"));
  EXPECT_THAT(s, HasSubstr("endpoints <- 10.43.0.20 . tcp . 80 . 1 : 10.42.0.12 . 8080"));
  EXPECT_THAT(s, Not(HasSubstr("10.42.0.11")));
  // Off-cluster clients are masqueraded; a pod reaching itself (hairpin) too.
  EXPECT_THAT(s, HasSubstr("cluster-ips <- 10.43.0.20 . tcp . 80"));
  EXPECT_EQ(o.shared_elements,
            (std::set<std::pair<std::string, std::string>>{
                {"hairpin", "10.42.0.10 . 10.42.0.10"}, {"hairpin", "10.42.0.12 . 10.42.0.12"}}));
  ASSERT_EQ(o.shared_chains.size(), 1u);
  EXPECT_THAT(o.shared_chains.at("pick-2"),
              Contains("meta l4proto tcp dnat ip to ip daddr . meta l4proto . th dport . numgen "
                       "random mod 2 map @endpoints"));
}

TEST(NftablesRender, EachEndpointIsPickedWithEqualProbability) {
  // Mapped: numgen random mod n, and each of 0..n-1 leads to one endpoint.
  NftObjects o = render_service({web_port(4)}, ProxyConfig{});
  std::set<std::string> picks;
  for (const auto& [map, element] : o.elements) {
    if (map == "endpoints") picks.insert(element.substr(0, element.find(" : ")));
  }
  EXPECT_EQ(picks,
            (std::set<std::string>{"10.43.0.20 . tcp . 80 . 0", "10.43.0.20 . tcp . 80 . 1",
                                   "10.43.0.20 . tcp . 80 . 2", "10.43.0.20 . tcp . 80 . 3"}));
  EXPECT_THAT(all_rules(o), HasSubstr("goto pick-4"));

  // With session affinity, rule i of n fires with probability 1/(n-i): the chances multiply
  // out to 1/n each.
  ServicePort sp = web_port(4);
  sp.affinity_timeout_seconds = 60;
  o = render_service({sp}, ProxyConfig{});
  std::vector<std::string> rules;
  for (const auto& [chain, r] : o.chains) {
    if (chain.rfind("service-", 0) == 0) rules = r;
  }
  ASSERT_EQ(rules.size(), 9u);
  EXPECT_THAT(rules[5], HasSubstr("numgen random mod 4 == 0 goto endpoint-"));
  EXPECT_THAT(rules[6], HasSubstr("numgen random mod 3 == 0 goto endpoint-"));
  EXPECT_THAT(rules[7], HasSubstr("numgen random mod 2 == 0 goto endpoint-"));
  EXPECT_THAT(rules[8], HasSubstr("goto endpoint-"));
  // Past 16 endpoints one verdict-map lookup replaces the rules.
  sp = web_port(20);
  sp.affinity_timeout_seconds = 60;
  std::string big = all_rules(render_service({sp}, ProxyConfig{}));
  EXPECT_THAT(big, HasSubstr("numgen random mod 20 vmap { 0 : goto endpoint-"));
}

TEST(NftablesRender, NoReadyEndpointsRejectsButTerminatingServingOnesStillServe) {
  ServicePort sp = web_port(0);
  std::string s = all_rules(render_service({sp}, ProxyConfig{}));
  EXPECT_THAT(s, HasSubstr("no-endpoint-services <- 10.43.0.20 . tcp . 80 : goto reject-chain"));
  EXPECT_THAT(s, Not(HasSubstr("service-ips")));
  EXPECT_THAT(s, Not(HasSubstr("cluster-ips")));

  sp = web_port(1);
  sp.endpoints[0].ready = false;
  sp.endpoints[0].terminating = true;
  s = all_rules(render_service({sp}, ProxyConfig{}));
  EXPECT_THAT(s, HasSubstr("endpoints <- 10.43.0.20 . tcp . 80 . 0 : 10.42.0.10 . 8080"));
  sp.endpoints[0].serving = false;
  s = all_rules(render_service({sp}, ProxyConfig{}));
  EXPECT_THAT(s, HasSubstr("goto reject-chain"));
}

TEST(NftablesRender, SessionAffinityChecksSetsBeforeThePick) {
  ServicePort sp = web_port(2);
  sp.affinity_timeout_seconds = 60;
  NftObjects o = render_service({sp}, ProxyConfig{});
  std::string s = all_rules(o);
  ASSERT_EQ(o.sets.size(), 2u);
  EXPECT_THAT(o.sets.begin()->second, HasSubstr("timeout 60s"));
  EXPECT_THAT(s, HasSubstr("update @affinity-"));
  EXPECT_THAT(s, HasSubstr("ip saddr 10.42.0.10 jump mark-for-masquerade"));
  EXPECT_EQ(o.chains.size(), 3u);  // one service chain, two endpoint chains
  EXPECT_TRUE(o.shared_chains.empty());
  const auto& service_rules = o.chains.begin()->first.rfind("endpoint", 0) == 0
                                  ? o.chains.rbegin()->second
                                  : o.chains.begin()->second;
  ASSERT_EQ(service_rules.size(), 5u);
  EXPECT_THAT(service_rules[0], HasSubstr("ip saddr != 10.42.0.0/16 jump mark-for-masquerade"));
  EXPECT_THAT(service_rules[1], HasSubstr("ip saddr @affinity-"));
  EXPECT_THAT(service_rules[3], HasSubstr("numgen random mod 2 == 0 goto endpoint-"));
  EXPECT_THAT(service_rules[4], HasSubstr("goto endpoint-"));
}

TEST(NftablesRender, NodePortExternalIpsAndLocalPolicy) {
  ServicePort sp = web_port(2);
  sp.node_port = 30080;
  sp.external_ips = {"192.0.2.7"};
  NftObjects o = render_service({sp}, ProxyConfig{});
  std::string s = all_rules(o);
  EXPECT_THAT(s, HasSubstr("service-nodeports <- tcp . 30080 : goto pick-nodeport-2"));
  EXPECT_THAT(s, HasSubstr("nodeport-endpoints <- tcp . 30080 . 1 : 10.42.0.11 . 8080"));
  EXPECT_THAT(s, HasSubstr("service-ips <- 192.0.2.7 . tcp . 80 : goto pick-external-2"));
  EXPECT_THAT(s, HasSubstr("endpoints <- 192.0.2.7 . tcp . 80 . 0 : 10.42.0.10 . 8080"));
  // External traffic is masqueraded before the pick.
  EXPECT_EQ(o.shared_chains.at("pick-external-2"),
            (std::vector<std::string>{"jump mark-for-masquerade", "goto pick-2"}));
  EXPECT_EQ(o.shared_chains.at("pick-nodeport-2").front(), "jump mark-for-masquerade");
  EXPECT_THAT(o.shared_chains.at("pick-nodeport-2"),
              Contains("meta l4proto udp dnat ip to meta l4proto . th dport . numgen random mod "
                       "2 map @nodeport-endpoints"));

  sp.external_local = true;  // no endpoint is on this node
  s = all_rules(render_service({sp}, ProxyConfig{}));
  EXPECT_THAT(s, HasSubstr("no-endpoint-nodeports <- tcp . 30080 : drop"));
  sp.endpoints[1].local = true;
  s = all_rules(render_service({sp}, ProxyConfig{}));
  EXPECT_THAT(s, HasSubstr("service-nodeports <- tcp . 30080 : goto external-"));
  EXPECT_THAT(s, HasSubstr("fib saddr type local goto service-"));

  // No endpoints at all: every address rejects.
  sp = web_port(0);
  sp.node_port = 30080;
  sp.load_balancer_ips = {"192.0.2.9"};
  s = all_rules(render_service({sp}, ProxyConfig{}));
  EXPECT_THAT(s, HasSubstr("no-endpoint-nodeports <- tcp . 30080 : goto reject-chain"));
  EXPECT_THAT(s, HasSubstr("no-endpoint-services <- 192.0.2.9 . tcp . 80 : goto reject-chain"));
}

TEST(NftablesDiff, RewritesOnlyWhatChanged) {
  ProxyConfig config;
  // A mapped port: one more endpoint is map elements only, no chain.
  NftObjects before = render_service({web_port(2)}, config);
  NftObjects after = render_service({web_port(3)}, config);
  std::string script = diff_script(before, after);
  EXPECT_THAT(script, Not(HasSubstr("chain")));
  EXPECT_THAT(script,
              HasSubstr("delete element ip skiff-proxy service-ips { 10.43.0.20 . tcp . 80 }"));
  EXPECT_THAT(script, HasSubstr("add element ip skiff-proxy service-ips { 10.43.0.20 . tcp . 80 : "
                                "goto pick-3 }"));
  EXPECT_THAT(script, HasSubstr("add element ip skiff-proxy endpoints { 10.43.0.20 . tcp . 80 . "
                                "2 : 10.42.0.12 . 8080 }"));
  EXPECT_THAT(script, Not(HasSubstr("endpoints { 10.43.0.20 . tcp . 80 . 0")));
  EXPECT_EQ(diff_script(after, after), "");

  // A port with its own chains: the new endpoint's chain is added, the service chain rewritten,
  // the map untouched.
  ServicePort two = web_port(2);
  two.affinity_timeout_seconds = 60;
  ServicePort three = web_port(3);
  three.affinity_timeout_seconds = 60;
  before = render_service({two}, config);
  after = render_service({three}, config);
  script = diff_script(before, after);
  EXPECT_THAT(script, HasSubstr("add chain ip skiff-proxy endpoint-"));
  EXPECT_THAT(script, HasSubstr("flush chain ip skiff-proxy service-"));
  EXPECT_THAT(script, Not(HasSubstr("element")));
  EXPECT_THAT(script, Not(HasSubstr("delete")));
  // Removing the Service removes everything it had, chains after the elements pointing to them.
  script = diff_script(after, NftObjects{});
  size_t element =
      script.find("delete element ip skiff-proxy service-ips { 10.43.0.20 . tcp . 80 }");
  size_t chain = script.find("delete chain");
  ASSERT_NE(element, std::string::npos);
  ASSERT_NE(chain, std::string::npos);
  EXPECT_LT(element, chain);
}

// Records what the backend would run.
class RecordingRunner : public NftRunner {
 public:
  explicit RecordingRunner(std::vector<std::string>* scripts) : scripts_(scripts) {}
  Status run(const std::string& script) override {
    scripts_->push_back(script);
    return Status::ok();
  }

 private:
  std::vector<std::string>* scripts_;
};

TEST(NftablesBackendTest, IncrementalSyncTouchesOnlyTheChangedService) {
  std::vector<std::string> scripts;
  NftablesBackend backend(ProxyConfig{}, std::make_unique<RecordingRunner>(&scripts));
  ProxyState state;
  for (int i = 0; i < 50; ++i) {
    ServicePort sp = web_port(2);
    sp.service = "web" + std::to_string(i);
    sp.cluster_ip = "10.43.1." + std::to_string(i);
    state["default/" + sp.service] = {sp};
  }
  ASSERT_TRUE(backend.sync(state, {}, true).is_ok());
  ASSERT_EQ(scripts.size(), 1u);
  EXPECT_THAT(scripts[0], HasSubstr("delete table ip skiff-proxy"));
  state["default/web7"][0].endpoints.pop_back();
  ASSERT_TRUE(backend.sync(state, {"default/web7"}, false).is_ok());
  ASSERT_EQ(scripts.size(), 2u);
  EXPECT_THAT(scripts[1], HasSubstr("10.43.1.7 . tcp"));
  EXPECT_THAT(scripts[1], Not(HasSubstr("10.43.1.8 . tcp")));
  EXPECT_THAT(scripts[1], Not(HasSubstr("table")));
  // Two-endpoint Services remain, so their shared chain stays; the one-endpoint chain is new.
  EXPECT_THAT(scripts[1], HasSubstr("add chain ip skiff-proxy pick-1\n"));
  EXPECT_THAT(scripts[1], Not(HasSubstr("pick-2\n")));
  // Nothing changed: nothing to run.
  ASSERT_TRUE(backend.sync(state, {"default/web9"}, false).is_ok());
  EXPECT_EQ(scripts.size(), 2u);
}

// Fails every script after the first `ok` ones.
class FailingRunner : public NftRunner {
 public:
  FailingRunner(std::vector<std::string>* scripts, int ok) : scripts_(scripts), ok_(ok) {}
  Status run(const std::string& script) override {
    scripts_->push_back(script);
    if (ok_-- > 0) return Status::ok();
    return error(StatusCode::kInternal, "nftables: refused");
  }

 private:
  std::vector<std::string>* scripts_;
  int ok_;
};

ServicePort numbered_port(int i, int endpoints, int first_endpoint) {
  ServicePort sp = web_port(0);
  sp.service = "web" + std::to_string(i);
  sp.cluster_ip = "10.43.1." + std::to_string(i);
  for (int e = 0; e < endpoints; ++e) {
    sp.endpoints.push_back(web_port(first_endpoint + e + 1).endpoints.back());
  }
  return sp;
}

TEST(NftablesBackendTest, SharedChainsAndHairpinPairsLiveWhileAnyServiceNeedsThem) {
  std::vector<std::string> scripts;
  NftablesBackend backend(ProxyConfig{}, std::make_unique<RecordingRunner>(&scripts));
  // web1 and web2 both have two endpoints, and share 10.42.0.11.
  ProxyState state{{"default/web1", {numbered_port(1, 2, 0)}},
                   {"default/web2", {numbered_port(2, 2, 1)}}};
  ASSERT_TRUE(backend.sync(state, {}, true).is_ok());
  const std::string& full = scripts.back();
  size_t chain = full.find("add chain ip skiff-proxy pick-2\n");
  ASSERT_NE(chain, std::string::npos);
  EXPECT_EQ(full.find("add chain ip skiff-proxy pick-2\n", chain + 1), std::string::npos);
  EXPECT_LT(chain, full.find("goto pick-2"));
  EXPECT_EQ(full.find("hairpin { 10.42.0.11 . 10.42.0.11 }"),
            full.rfind("hairpin { 10.42.0.11 . 10.42.0.11 }"));

  // web1 goes: the chain and the shared pair stay for web2; 10.42.0.10's pair goes.
  state.erase("default/web1");
  ASSERT_TRUE(backend.sync(state, {"default/web1"}, false).is_ok());
  EXPECT_THAT(scripts.back(), Not(HasSubstr("chain")));
  EXPECT_THAT(scripts.back(), Not(HasSubstr("10.42.0.11 . 10.42.0.11")));
  EXPECT_THAT(scripts.back(),
              HasSubstr("delete element ip skiff-proxy hairpin { 10.42.0.10 . 10.42.0.10 }"));

  // web2 drops to one endpoint and a new web3 takes two: pick-2 stays (web3 needs it now),
  // pick-1 is new.
  state["default/web2"] = {numbered_port(2, 1, 1)};
  state["default/web3"] = {numbered_port(3, 2, 5)};
  ASSERT_TRUE(backend.sync(state, {"default/web2", "default/web3"}, false).is_ok());
  EXPECT_THAT(scripts.back(), HasSubstr("add chain ip skiff-proxy pick-1\n"));
  EXPECT_THAT(scripts.back(), Not(HasSubstr("pick-2\n")));

  // The last user of pick-2 goes: the chain is emptied and deleted after the elements.
  state.erase("default/web3");
  ASSERT_TRUE(backend.sync(state, {"default/web3"}, false).is_ok());
  const std::string& last = scripts.back();
  size_t deleted = last.find("delete chain ip skiff-proxy pick-2\n");
  ASSERT_NE(deleted, std::string::npos);
  EXPECT_LT(last.find("delete element ip skiff-proxy service-ips { 10.43.1.3 . tcp . 80 }"),
            deleted);
  EXPECT_THAT(last, HasSubstr("flush chain ip skiff-proxy pick-2\n"));
}

TEST(NftablesBackendTest, ARefusedSyncKeepsTheCounts) {
  std::vector<std::string> scripts;
  NftablesBackend backend(ProxyConfig{}, std::make_unique<FailingRunner>(&scripts, 1));
  ProxyState state{{"default/web1", {numbered_port(1, 2, 0)}}};
  ASSERT_TRUE(backend.sync(state, {}, true).is_ok());
  ProxyState next = state;
  next.erase("default/web1");
  next["default/web2"] = {numbered_port(2, 2, 0)};
  EXPECT_FALSE(backend.sync(next, {"default/web1", "default/web2"}, false).is_ok());
  // Retried, the change is the same: the refused one did not count.
  EXPECT_FALSE(backend.sync(next, {"default/web1", "default/web2"}, false).is_ok());
  ASSERT_EQ(scripts.size(), 3u);
  EXPECT_EQ(scripts[1], scripts[2]);
  // The move keeps the shared chain and pairs: only the Services' own elements change.
  EXPECT_THAT(scripts[1], Not(HasSubstr("chain")));
  EXPECT_THAT(scripts[1], Not(HasSubstr("hairpin")));
}

// The kernel accepts what the backend writes: full sync, incremental changes, removal and
// cleanup, in a network namespace that exists only for this test process.
class NftablesKernelTest : public testing::OwnNetns<> {
 protected:
  static std::string ruleset() {
    auto out = run_command({"nft", "list", "ruleset"}, std::chrono::seconds(10));
    return out.is_ok() ? out->out : "";
  }
};

TEST_F(NftablesKernelTest, FullIncrementalAndCleanup) {
  NftablesBackend backend(ProxyConfig{}, make_libnftables_runner());
  ProxyState state;
  ServicePort a = web_port(2);
  a.affinity_timeout_seconds = 30;
  a.node_port = 30080;
  ServicePort b = web_port(0);
  b.service = "empty";
  b.protocol = "udp";
  b.cluster_ip = "10.43.0.21";
  ServicePort c = web_port(1);
  c.service = "local";
  c.cluster_ip = "10.43.0.22";
  c.load_balancer_ips = {"192.0.2.10"};
  c.external_local = true;
  c.endpoints[0].local = true;
  ServicePort d = web_port(1);
  d.service = "sctp";
  d.protocol = "sctp";
  d.cluster_ip = "10.43.0.23";
  state["default/web"] = {a};
  state["default/empty"] = {b};
  state["default/local"] = {c};
  state["default/sctp"] = {d};
  ServicePort big = web_port(20);
  big.service = "big";
  big.cluster_ip = "10.43.0.24";
  state["default/big"] = {big};
  Status s = backend.sync(state, {}, true);
  ASSERT_TRUE(s.is_ok()) << s.message();
  std::string rules = ruleset();
  EXPECT_THAT(rules, HasSubstr("table ip skiff-proxy"));
  EXPECT_THAT(rules, HasSubstr("10.43.0.20 . tcp . 80 : goto service-"));
  EXPECT_THAT(rules, HasSubstr("10.43.0.21 . udp . 80 : goto reject-chain"));
  EXPECT_THAT(rules, HasSubstr("192.0.2.10 . tcp . 80 : goto external-"));
  EXPECT_THAT(rules, HasSubstr("dnat to 10.42.0.11:8080"));
  EXPECT_THAT(rules, HasSubstr("10.43.0.23 . sctp . 80 : goto pick-1"));
  EXPECT_THAT(rules, HasSubstr("10.43.0.23 . sctp . 80 . 0 : 10.42.0.10 . 8080"));
  EXPECT_THAT(rules, HasSubstr("10.43.0.24 . tcp . 80 : goto pick-20"));
  EXPECT_THAT(rules, HasSubstr("numgen random mod 20 map @endpoints"));
  EXPECT_THAT(rules, HasSubstr("10.42.0.29 . 10.42.0.29"));  // hairpin

  // Scale, drop affinity, give the empty Service an endpoint, delete one Service.
  std::set<std::string> changed = testing::scale_fill_and_delete(state);
  s = backend.sync(state, changed, false);
  ASSERT_TRUE(s.is_ok()) << s.message();
  rules = ruleset();
  EXPECT_THAT(rules, HasSubstr("numgen random mod 3 map"));
  EXPECT_THAT(rules, Not(HasSubstr("affinity-")));
  EXPECT_THAT(rules, Not(HasSubstr("chain endpoint-")));
  EXPECT_THAT(rules, HasSubstr("10.43.0.20 . tcp . 80 : goto pick-3"));
  EXPECT_THAT(rules, HasSubstr("tcp . 30080 : goto pick-nodeport-3"));
  EXPECT_THAT(rules, HasSubstr("10.43.0.21 . udp . 80 : goto pick-1"));
  EXPECT_THAT(rules, Not(HasSubstr("reject-chain }")));
  EXPECT_THAT(rules, Not(HasSubstr("default/local")));

  // A restart: a new backend starts with a full sync over the existing table.
  NftablesBackend restarted(ProxyConfig{}, make_libnftables_runner());
  s = restarted.sync(state, {}, true);
  ASSERT_TRUE(s.is_ok()) << s.message();
  // The same rules (chains may be listed in another order).
  EXPECT_EQ(sorted_lines(ruleset()), sorted_lines(rules));

  ASSERT_TRUE(restarted.cleanup().is_ok());
  EXPECT_THAT(ruleset(), Not(HasSubstr("skiff-proxy")));
  // Cleaning up twice is fine.
  EXPECT_TRUE(restarted.cleanup().is_ok());
}

TEST_F(NftablesKernelTest, AFailedSyncLeavesTheLastRules) {
  NftablesBackend backend(ProxyConfig{}, make_libnftables_runner());
  ProxyState state{{"default/web", {web_port(1)}}};
  ASSERT_TRUE(backend.sync(state, {}, true).is_ok());
  std::string before = ruleset();
  state["default/web"][0].endpoints[0].ip = "not-an-ip";
  Status s = backend.sync(state, {"default/web"}, false);
  EXPECT_FALSE(s.is_ok());
  EXPECT_THAT(s.message(), HasSubstr("nftables"));
  EXPECT_EQ(ruleset(), before);
  ASSERT_TRUE(backend.cleanup().is_ok());
}

}  // namespace
}  // namespace skiff::proxy
