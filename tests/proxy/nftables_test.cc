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
  EXPECT_THAT(s, HasSubstr("numgen random mod 2 == 0 goto endpoint-"));
  EXPECT_THAT(s, HasSubstr("dnat to 10.42.0.10:8080"));
  EXPECT_THAT(s, HasSubstr("dnat to 10.42.0.12:8080"));
  EXPECT_THAT(s, Not(HasSubstr("10.42.0.11")));
  EXPECT_THAT(s, HasSubstr("service-ips <- 10.43.0.20 . tcp . 80 : goto service-"));
  // Off-cluster clients are masqueraded; a pod reaching itself (hairpin) too.
  EXPECT_THAT(s, HasSubstr("ip saddr != 10.42.0.0/16 jump mark-for-masquerade"));
  EXPECT_THAT(s, HasSubstr("ip saddr 10.42.0.10 jump mark-for-masquerade"));
  EXPECT_EQ(o.chains.size(), 3u);  // one service chain, two endpoint chains
}

TEST(NftablesRender, EachEndpointIsPickedWithEqualProbability) {
  // Rule i of n fires with probability 1/(n-i): the chances multiply out to 1/n each.
  NftObjects o = render_service({web_port(4)}, ProxyConfig{});
  std::vector<std::string> rules;
  for (const auto& [chain, r] : o.chains) {
    if (chain.rfind("service-", 0) == 0) rules = r;
  }
  ASSERT_EQ(rules.size(), 5u);
  EXPECT_THAT(rules[1], HasSubstr("numgen random mod 4 == 0 goto endpoint-"));
  EXPECT_THAT(rules[2], HasSubstr("numgen random mod 3 == 0 goto endpoint-"));
  EXPECT_THAT(rules[3], HasSubstr("numgen random mod 2 == 0 goto endpoint-"));
  EXPECT_THAT(rules[4], HasSubstr("goto endpoint-"));
  // Past 16 endpoints one verdict-map lookup replaces the rules.
  std::string big = all_rules(render_service({web_port(20)}, ProxyConfig{}));
  EXPECT_THAT(big, HasSubstr("numgen random mod 20 vmap { 0 : goto endpoint-"));
}

TEST(NftablesRender, NoReadyEndpointsRejectsButTerminatingServingOnesStillServe) {
  ServicePort sp = web_port(0);
  std::string s = all_rules(render_service({sp}, ProxyConfig{}));
  EXPECT_THAT(s, HasSubstr("no-endpoint-services <- 10.43.0.20 . tcp . 80 : goto reject-chain"));
  EXPECT_THAT(s, Not(HasSubstr("service-ips")));

  sp = web_port(1);
  sp.endpoints[0].ready = false;
  sp.endpoints[0].terminating = true;
  s = all_rules(render_service({sp}, ProxyConfig{}));
  EXPECT_THAT(s, HasSubstr("dnat to 10.42.0.10:8080"));
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
  const auto& service_rules = o.chains.begin()->first.rfind("endpoint", 0) == 0
                                  ? o.chains.rbegin()->second
                                  : o.chains.begin()->second;
  ASSERT_EQ(service_rules.size(), 5u);
  EXPECT_THAT(service_rules[1], HasSubstr("ip saddr @affinity-"));
  EXPECT_THAT(service_rules[3], HasSubstr("numgen random mod 2 == 0 goto endpoint-"));
  EXPECT_THAT(service_rules[4], HasSubstr("goto endpoint-"));
}

TEST(NftablesRender, NodePortExternalIpsAndLocalPolicy) {
  ServicePort sp = web_port(2);
  sp.node_port = 30080;
  sp.external_ips = {"192.0.2.7"};
  std::string s = all_rules(render_service({sp}, ProxyConfig{}));
  EXPECT_THAT(s, HasSubstr("service-nodeports <- tcp . 30080 : goto external-"));
  EXPECT_THAT(s, HasSubstr("service-ips <- 192.0.2.7 . tcp . 80 : goto external-"));

  sp.external_local = true;  // no endpoint is on this node
  s = all_rules(render_service({sp}, ProxyConfig{}));
  EXPECT_THAT(s, HasSubstr("no-endpoint-nodeports <- tcp . 30080 : drop"));
  sp.endpoints[1].local = true;
  s = all_rules(render_service({sp}, ProxyConfig{}));
  EXPECT_THAT(s, HasSubstr("service-nodeports <- tcp . 30080 : goto external-"));
  EXPECT_THAT(s, HasSubstr("fib saddr type local goto service-"));
}

TEST(NftablesDiff, RewritesOnlyWhatChanged) {
  ProxyConfig config;
  NftObjects before = render_service({web_port(2)}, config);
  NftObjects after = render_service({web_port(3)}, config);
  std::string script = diff_script(before, after);
  // The new endpoint's chain is added, the service chain rewritten, the map untouched.
  EXPECT_THAT(script, HasSubstr("add chain ip skiff-proxy endpoint-"));
  EXPECT_THAT(script, HasSubstr("flush chain ip skiff-proxy service-"));
  EXPECT_THAT(script, Not(HasSubstr("element")));
  EXPECT_THAT(script, Not(HasSubstr("delete")));
  EXPECT_EQ(diff_script(after, after), "");
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
  EXPECT_THAT(scripts[1], HasSubstr("default/web7/"));
  EXPECT_THAT(scripts[1], Not(HasSubstr("default/web8/")));
  EXPECT_THAT(scripts[1], Not(HasSubstr("table")));
  // Nothing changed: nothing to run.
  ASSERT_TRUE(backend.sync(state, {"default/web9"}, false).is_ok());
  EXPECT_EQ(scripts.size(), 2u);
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
  EXPECT_THAT(rules, HasSubstr("10.43.0.23 . sctp . 80 : goto service-"));
  EXPECT_THAT(rules, HasSubstr("numgen random mod 20 vmap"));
  EXPECT_THAT(rules, HasSubstr("meta l4proto sctp dnat to 10.42.0.10:8080"));

  // Scale, drop affinity, give the empty Service an endpoint, delete one Service.
  std::set<std::string> changed = testing::scale_fill_and_delete(state);
  s = backend.sync(state, changed, false);
  ASSERT_TRUE(s.is_ok()) << s.message();
  rules = ruleset();
  EXPECT_THAT(rules, HasSubstr("numgen random mod 3 "));
  EXPECT_THAT(rules, Not(HasSubstr("affinity-")));
  EXPECT_THAT(rules, HasSubstr("10.43.0.21 . udp . 80 : goto service-"));
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
