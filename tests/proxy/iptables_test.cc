// The iptables backend: what it writes for each kind of Service, what a sync hands to
// iptables-restore (only the chains that changed), and that the kernel takes it and forwards
// through it (in a network namespace of the test's own), with iptables-nft and iptables-legacy.

#include "proxy/iptables.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <deque>

#include "base/process.h"
#include "proxy/proxy_test_util.h"

namespace skiff::proxy {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;
using testing::web_port;

std::string all_rules(const IptablesService& o) {
  std::string s;
  for (const auto& [chain, rules] : o.chains) {
    for (const auto& r : rules) s += chain + ": " + r + "\n";
  }
  for (const auto& r : o.services) s += "SERVICES: " + r + "\n";
  for (const auto& r : o.nodeports) s += "NODEPORTS: " + r + "\n";
  for (const auto& r : o.filter_services) s += "filter SERVICES: " + r + "\n";
  for (const auto& r : o.filter_nodeports) s += "filter NODEPORTS: " + r + "\n";
  return s;
}

// The rules of the chain whose name starts with `prefix` (there must be exactly one).
const std::vector<std::string>& chain_with_prefix(const IptablesService& o,
                                                  const std::string& prefix) {
  const std::vector<std::string>* found = nullptr;
  for (const auto& [chain, rules] : o.chains) {
    if (chain.rfind(prefix, 0) == 0) {
      EXPECT_EQ(found, nullptr) << "more than one " << prefix << " chain";
      found = &rules;
    }
  }
  static const std::vector<std::string> kNone;
  EXPECT_NE(found, nullptr) << "no " << prefix << " chain";
  return found ? *found : kNone;
}

TEST(IptablesRender, ClusterIpSpreadsOverReadyEndpoints) {
  ServicePort sp = web_port(4);
  sp.endpoints[1].ready = false;
  IptablesService o = render_iptables_service({sp}, ProxyConfig{});
  std::string s = all_rules(o);
  EXPECT_EQ(o.chains.size(), 4u);  // one service chain, three endpoint chains
  EXPECT_THAT(s, HasSubstr("-j DNAT --to-destination 10.42.0.10:8080"));
  EXPECT_THAT(s, HasSubstr("-j DNAT --to-destination 10.42.0.12:8080"));
  EXPECT_THAT(s, HasSubstr("-j DNAT --to-destination 10.42.0.13:8080"));
  EXPECT_THAT(s, Not(HasSubstr("10.42.0.11")));
  // Hairpin: a pod reaching itself through the Service is masqueraded.
  EXPECT_THAT(s, HasSubstr("-s 10.42.0.10/32 -m comment --comment \"default/web:http\" "
                           "-j SKIFF-MARK-MASQ"));
  ASSERT_EQ(o.services.size(), 1u);
  EXPECT_THAT(o.services[0], AllOf(StartsWith("-d 10.43.0.20/32 -p tcp -m tcp --dport 80 "),
                                   HasSubstr("-j SKIFF-SVC-")));
  EXPECT_TRUE(o.filter_services.empty());

  const std::vector<std::string>& svc = chain_with_prefix(o, "SKIFF-SVC-");
  ASSERT_EQ(svc.size(), 4u);
  // Off-cluster clients are masqueraded.
  EXPECT_THAT(svc[0], HasSubstr("-d 10.43.0.20/32 -p tcp -m tcp --dport 80 ! -s 10.42.0.0/16"));
  EXPECT_THAT(svc[0], HasSubstr("-j SKIFF-MARK-MASQ"));
  // 1/3, then 1/2 of the rest, then the rest: each endpoint gets a third.
  EXPECT_THAT(svc[1], StartsWith("-m statistic --mode random --probability 0.3333333333 -j "
                                 "SKIFF-SEP-"));
  EXPECT_THAT(svc[2], StartsWith("-m statistic --mode random --probability 0.5000000000 -j "
                                 "SKIFF-SEP-"));
  EXPECT_THAT(svc[3], StartsWith("-j SKIFF-SEP-"));
  // Every chain a rule jumps to exists, and every name fits iptables' 28 characters.
  for (const auto& [chain, rules] : o.chains) {
    EXPECT_LE(chain.size(), 28u) << chain;
  }
  for (size_t i = 1; i < svc.size(); ++i) {
    std::string target = svc[i].substr(svc[i].find("-j ") + 3);
    EXPECT_TRUE(o.chains.count(target)) << target;
  }
  // Names are stable and differ per port and endpoint.
  EXPECT_EQ(render_iptables_service({sp}, ProxyConfig{}), o);
  ServicePort other = sp;
  other.port_name = "https";
  for (const auto& [chain, rules] : render_iptables_service({other}, ProxyConfig{}).chains) {
    EXPECT_FALSE(o.chains.count(chain)) << chain;
  }
}

TEST(IptablesRender, NoReadyEndpointsRejectsButTerminatingServingOnesStillServe) {
  ServicePort sp = web_port(0);
  IptablesService o = render_iptables_service({sp}, ProxyConfig{});
  EXPECT_TRUE(o.chains.empty());
  EXPECT_TRUE(o.services.empty());
  EXPECT_THAT(o.filter_services,
              ElementsAre(AllOf(StartsWith("-d 10.43.0.20/32 -p tcp -m tcp --dport 80 "),
                                HasSubstr("has no endpoints"), HasSubstr("-j REJECT"))));

  sp = web_port(1);
  sp.endpoints[0].ready = false;
  sp.endpoints[0].terminating = true;
  o = render_iptables_service({sp}, ProxyConfig{});
  EXPECT_THAT(all_rules(o), HasSubstr("--to-destination 10.42.0.10:8080"));
  EXPECT_TRUE(o.filter_services.empty());
  sp.endpoints[0].serving = false;
  o = render_iptables_service({sp}, ProxyConfig{});
  EXPECT_THAT(all_rules(o), HasSubstr("-j REJECT"));
  EXPECT_THAT(all_rules(o), Not(HasSubstr("DNAT")));
}

TEST(IptablesRender, SessionAffinityChecksRecentListsBeforeThePick) {
  ServicePort sp = web_port(2);
  sp.affinity_timeout_seconds = 60;
  sp.protocol = "udp";
  IptablesService o = render_iptables_service({sp}, ProxyConfig{});
  const std::vector<std::string>& svc = chain_with_prefix(o, "SKIFF-SVC-");
  ASSERT_EQ(svc.size(), 5u);
  for (int i : {1, 2}) {
    EXPECT_THAT(svc[i], HasSubstr("-m recent --name SKIFF-SEP-"));
    EXPECT_THAT(svc[i], HasSubstr("--rcheck --seconds 60 --reap -j SKIFF-SEP-"));
    // The list an endpoint is checked in is the one its chain records clients in.
    std::string list = svc[i].substr(svc[i].find("--name ") + 7, 26);
    ASSERT_TRUE(o.chains.count(list)) << list;
    EXPECT_THAT(o.chains.at(list)[1], AllOf(StartsWith("-p udp -m recent --name " + list),
                                            HasSubstr("--set"), HasSubstr("-j DNAT")));
  }
  EXPECT_THAT(svc[3], HasSubstr("-m statistic --mode random --probability 0.5000000000"));
  EXPECT_THAT(svc[0], HasSubstr("-p udp -m udp --dport 80"));
}

TEST(IptablesRender, NodePortExternalIpsAndLocalPolicy) {
  ServicePort sp = web_port(2);
  sp.node_port = 30080;
  sp.external_ips = {"192.0.2.7"};
  sp.load_balancer_ips = {"198.51.100.1"};
  IptablesService o = render_iptables_service({sp}, ProxyConfig{});
  ASSERT_EQ(o.nodeports.size(), 1u);
  EXPECT_THAT(o.nodeports[0],
              AllOf(StartsWith("-p tcp -m tcp --dport 30080 "), HasSubstr("-j SKIFF-EXT-")));
  ASSERT_EQ(o.services.size(), 3u);
  EXPECT_THAT(o.services[1], AllOf(StartsWith("-d 192.0.2.7/32 -p tcp -m tcp --dport 80 "),
                                   HasSubstr("-j SKIFF-EXT-")));
  EXPECT_THAT(o.services[2], StartsWith("-d 198.51.100.1/32 "));
  // Outside traffic is masqueraded, then balanced as cluster traffic.
  const std::vector<std::string>& ext = chain_with_prefix(o, "SKIFF-EXT-");
  ASSERT_EQ(ext.size(), 2u);
  EXPECT_EQ(ext[0], "-j SKIFF-MARK-MASQ");
  EXPECT_THAT(ext[1], StartsWith("-j SKIFF-SVC-"));

  sp.external_local = true;  // no endpoint is on this node: dropped, not rejected
  o = render_iptables_service({sp}, ProxyConfig{});
  EXPECT_TRUE(o.nodeports.empty());
  EXPECT_EQ(o.services.size(), 1u);  // the cluster IP still works
  EXPECT_THAT(o.filter_nodeports,
              ElementsAre(AllOf(StartsWith("-p tcp -m tcp --dport 30080 "), HasSubstr("-j DROP"))));
  ASSERT_EQ(o.filter_services.size(), 2u);
  EXPECT_THAT(o.filter_services[0], AllOf(StartsWith("-d 192.0.2.7/32"), HasSubstr("-j DROP")));

  sp.endpoints[1].local = true;
  o = render_iptables_service({sp}, ProxyConfig{});
  EXPECT_TRUE(o.filter_nodeports.empty());
  EXPECT_TRUE(o.filter_services.empty());
  const std::vector<std::string>& local_ext = chain_with_prefix(o, "SKIFF-EXT-");
  ASSERT_EQ(local_ext.size(), 4u);
  EXPECT_THAT(local_ext[0], AllOf(StartsWith("-s 10.42.0.0/16 "), HasSubstr("-j SKIFF-SVC-")));
  EXPECT_EQ(local_ext[1], "-m addrtype --src-type LOCAL -j SKIFF-MARK-MASQ");
  EXPECT_THAT(local_ext[2], StartsWith("-m addrtype --src-type LOCAL -j SKIFF-SVC-"));
  // Everyone else goes to the local endpoint only, unmasqueraded.
  std::string local_sep = local_ext[3].substr(3);
  ASSERT_TRUE(o.chains.count(local_sep));
  EXPECT_THAT(o.chains.at(local_sep)[1], HasSubstr("--to-destination 10.42.0.11:8080"));
}

TEST(IptablesSave, ParsesOwnChainsAndJumpsOnly) {
  IptablesTable t = parse_iptables_save(
      "# Generated by iptables-save\n"
      "*nat\n"
      ":PREROUTING ACCEPT [0:0]\n"
      ":OTHER - [0:0]\n"
      ":SKIFF-SERVICES - [0:0]\n"
      ":SKIFF-EMPTY - [0:0]\n"
      "-A PREROUTING -m comment --comment \"skiff\" -j SKIFF-SERVICES\n"
      "-A PREROUTING -j OTHER\n"
      "-A OTHER -j SKIFF-SERVICES\n"
      "-A SKIFF-SERVICES -d 10.43.0.1/32 -p tcp -m tcp --dport 443 -j SKIFF-SVC-X\n"
      "COMMIT\n");
  ASSERT_EQ(t.chains.size(), 2u);
  EXPECT_TRUE(t.chains.at("SKIFF-EMPTY").empty());
  EXPECT_THAT(t.chains.at("SKIFF-SERVICES"),
              ElementsAre("-d 10.43.0.1/32 -p tcp -m tcp --dport 443 -j SKIFF-SVC-X"));
  ASSERT_EQ(t.jumps.size(), 2u);
  EXPECT_EQ(t.jumps.at({"PREROUTING", "SKIFF-SERVICES"}),
            "PREROUTING -m comment --comment \"skiff\" -j SKIFF-SERVICES");
  EXPECT_EQ(t.jumps.at({"OTHER", "SKIFF-SERVICES"}), "OTHER -j SKIFF-SERVICES");
}

TEST(IptablesSave, SectionDeclaresChangedChainsAndDeletesLast) {
  IptablesTable before;
  before.chains["SKIFF-SERVICES"] = {"-j SKIFF-SVC-A"};
  before.chains["SKIFF-SVC-A"] = {"-j SKIFF-SEP-A"};
  before.chains["SKIFF-SEP-A"] = {"-j DNAT --to-destination 10.0.0.1:1"};
  before.chains["SKIFF-SAME"] = {"-j RETURN"};
  before.jumps[{"OUTPUT", "SKIFF-OLD"}] = "OUTPUT -j SKIFF-OLD";
  IptablesTable after;
  after.chains["SKIFF-SERVICES"] = {"-j SKIFF-SVC-B"};
  after.chains["SKIFF-SVC-B"] = {"-j RETURN"};
  after.chains["SKIFF-SAME"] = {"-j RETURN"};
  after.jumps[{"PREROUTING", "SKIFF-SERVICES"}] = "PREROUTING -j SKIFF-SERVICES";
  EXPECT_EQ(iptables_table_section("nat", before, after, false),
            "*nat\n"
            ":SKIFF-SERVICES - [0:0]\n"
            ":SKIFF-SVC-B - [0:0]\n"
            ":SKIFF-SEP-A - [0:0]\n"
            ":SKIFF-SVC-A - [0:0]\n"
            "-D OUTPUT -j SKIFF-OLD\n"
            "-I PREROUTING -j SKIFF-SERVICES\n"
            "-A SKIFF-SERVICES -j SKIFF-SVC-B\n"
            "-A SKIFF-SVC-B -j RETURN\n"
            "-X SKIFF-SEP-A\n"
            "-X SKIFF-SVC-A\n"
            "COMMIT\n");
  EXPECT_EQ(iptables_table_section("nat", after, after, false), "");
  // Rewriting everything also rewrites the chain that did not change.
  EXPECT_THAT(iptables_table_section("nat", after, after, true),
              HasSubstr(":SKIFF-SAME - [0:0]\n"));
}

// Records what the backend hands to iptables-restore; answers iptables-save with canned text,
// and fails the restore calls it is told to.
class FakeRunner : public IptablesRunner {
 public:
  struct Log {
    std::vector<std::string> inputs;
    std::vector<std::string> saves;
    std::map<std::string, std::string> save_output;  // table → output
    std::deque<Status> restore_results;              // then ok
  };
  explicit FakeRunner(Log* log) : log_(log) {}
  Status restore(const std::string& input) override {
    log_->inputs.push_back(input);
    if (log_->restore_results.empty()) return Status::ok();
    Status s = log_->restore_results.front();
    log_->restore_results.pop_front();
    return s;
  }
  Result<std::string> save(const std::string& table) override {
    log_->saves.push_back(table);
    return log_->save_output[table];
  }

 private:
  Log* log_;
};

size_t count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

ProxyState many_services(int n) {
  ProxyState state;
  for (int i = 0; i < n; ++i) {
    ServicePort sp = web_port(2);
    sp.service = "web" + std::to_string(i);
    sp.cluster_ip = "10.43.1." + std::to_string(i);
    state["default/" + sp.service] = {sp};
  }
  return state;
}

TEST(IptablesBackendTest, FullSyncRewritesEverythingAndAddsMissingJumpsOnce) {
  FakeRunner::Log log;
  log.save_output["nat"] =
      "*nat\n:PREROUTING ACCEPT [0:0]\n:SKIFF-SVC-0000000000000000 - [0:0]\n"
      "-A PREROUTING -j SKIFF-SERVICES\nCOMMIT\n";
  IptablesBackend backend(ProxyConfig{}, std::make_unique<FakeRunner>(&log));
  ASSERT_TRUE(backend.sync(many_services(3), {}, true).is_ok());
  EXPECT_THAT(log.saves, ElementsAre("filter", "nat"));
  ASSERT_EQ(log.inputs.size(), 1u);
  const std::string& input = log.inputs[0];
  // filter first (see IptablesBackend::apply), then nat.
  EXPECT_THAT(input, StartsWith("*filter\n"));
  EXPECT_LT(input.find("*filter"), input.find("*nat"));
  for (const char* builtin : {"INPUT", "FORWARD", "OUTPUT"}) {
    EXPECT_THAT(input, HasSubstr(std::string("-I ") + builtin +
                                 " -m conntrack --ctstate NEW -j SKIFF-SERVICES\n"));
  }
  EXPECT_THAT(input, HasSubstr("-I OUTPUT -j SKIFF-SERVICES\n"));
  EXPECT_THAT(input, HasSubstr("-I POSTROUTING -j SKIFF-POSTROUTING\n"));
  EXPECT_THAT(input, Not(HasSubstr("-I PREROUTING")));  // already there
  // What an earlier process left and nothing needs is deleted.
  EXPECT_THAT(input, HasSubstr(":SKIFF-SVC-0000000000000000 - [0:0]\n"));
  EXPECT_THAT(input, HasSubstr("-X SKIFF-SVC-0000000000000000\n"));
  EXPECT_THAT(input, HasSubstr("-A SKIFF-MARK-MASQ -j MARK --or-mark 0x4000\n"));
  EXPECT_THAT(input, HasSubstr("-A SKIFF-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN\n"));
  EXPECT_THAT(input, HasSubstr("-A SKIFF-POSTROUTING -j MASQUERADE --random-fully\n"));
  // The node-port jump is the last rule of SKIFF-SERVICES.
  size_t last_service = input.rfind("-A SKIFF-SERVICES -d ");
  size_t nodeports = input.find(
      "-A SKIFF-SERVICES ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j SKIFF-NODEPORTS",
      input.find("*nat"));
  ASSERT_NE(nodeports, std::string::npos);
  EXPECT_LT(last_service, nodeports);
  EXPECT_EQ(input.find("-A SKIFF-SERVICES", nodeports + 1), std::string::npos);
}

TEST(IptablesBackendTest, IncrementalSyncTouchesOnlyWhatChanged) {
  FakeRunner::Log log;
  IptablesBackend backend(ProxyConfig{}, std::make_unique<FakeRunner>(&log));
  ProxyState state = many_services(50);
  // The first sync is full even when asked for an incremental one.
  ASSERT_TRUE(backend.sync(state, {"default/web1"}, false).is_ok());
  ASSERT_EQ(log.inputs.size(), 1u);
  EXPECT_EQ(log.saves.size(), 2u);
  EXPECT_THAT(log.inputs[0], HasSubstr("default/web49:http"));

  // Scaling one Service rewrites its service chain and adds an endpoint chain: nothing shared.
  state["default/web7"][0].endpoints.push_back(web_port(3).endpoints[2]);
  ASSERT_TRUE(backend.sync(state, {"default/web7"}, false).is_ok());
  ASSERT_EQ(log.inputs.size(), 2u);
  EXPECT_EQ(log.saves.size(), 2u);  // no iptables-save for an incremental sync
  std::string input = log.inputs[1];
  EXPECT_THAT(input, StartsWith("*nat\n"));
  EXPECT_THAT(input, Not(HasSubstr("*filter")));
  EXPECT_THAT(input, Not(HasSubstr("SKIFF-SERVICES")));
  EXPECT_THAT(input, HasSubstr("--to-destination 10.42.0.12:8080"));
  EXPECT_THAT(input, Not(HasSubstr("--to-destination 10.42.0.10:8080")));  // unchanged chain
  EXPECT_THAT(input, Not(HasSubstr("default/web8:")));
  EXPECT_THAT(input, Not(HasSubstr("-X ")));
  // *nat, two declarations, four rules in the service chain, two in the new endpoint's, COMMIT.
  EXPECT_EQ(std::count(input.begin(), input.end(), '\n'), 1 + 2 + 4 + 2 + 1);
  EXPECT_EQ(backend.last_input_size(), input.size());

  // Losing every endpoint: the chains go, the rule in SKIFF-SERVICES too, and a reject rule
  // comes in the filter table.
  state["default/web9"][0].endpoints.clear();
  ASSERT_TRUE(backend.sync(state, {"default/web9"}, false).is_ok());
  ASSERT_EQ(log.inputs.size(), 3u);
  input = log.inputs[2];
  EXPECT_THAT(input, StartsWith("*filter\n:SKIFF-SERVICES - [0:0]\n"));
  EXPECT_THAT(input, HasSubstr("-d 10.43.1.9/32 -p tcp -m tcp --dport 80 -m comment --comment "
                               "\"default/web9:http has no endpoints\" -j REJECT"));
  EXPECT_THAT(input, HasSubstr("*nat\n:SKIFF-SERVICES - [0:0]\n"));
  EXPECT_THAT(input, Not(HasSubstr("SKIFF-NODEPORTS - [0:0]")));  // unchanged
  EXPECT_EQ(count(input, "\n-X SKIFF-S"), 3u);  // the service chain and two endpoint chains
  EXPECT_THAT(input, Not(HasSubstr("-I ")));

  // Deleting a Service; then a "change" that changes nothing runs nothing.
  state.erase("default/web3");
  ASSERT_TRUE(backend.sync(state, {"default/web3"}, false).is_ok());
  ASSERT_EQ(log.inputs.size(), 4u);
  EXPECT_THAT(log.inputs[3], Not(HasSubstr("*filter")));
  EXPECT_THAT(log.inputs[3], Not(HasSubstr("10.43.1.3/32")));
  ASSERT_TRUE(backend.sync(state, {"default/web4", "default/nothing"}, false).is_ok());
  EXPECT_EQ(log.inputs.size(), 4u);
}

TEST(IptablesBackendTest, ANatFailureRestoresTheFilterChains) {
  FakeRunner::Log log;
  IptablesBackend backend(ProxyConfig{}, std::make_unique<FakeRunner>(&log));
  ProxyState state = many_services(2);
  ASSERT_TRUE(backend.sync(state, {}, true).is_ok());
  // Both tables change; the nat section fails after the filter section committed.
  state["default/web0"][0].endpoints.clear();
  state["default/web1"][0].endpoints[0].ip = "not-an-ip";
  log.restore_results.push_back(error(StatusCode::kInternal, "Error occurred at line: 9"));
  Status s = backend.sync(state, {"default/web0", "default/web1"}, false);
  EXPECT_FALSE(s.is_ok());
  ASSERT_EQ(log.inputs.size(), 3u);
  EXPECT_EQ(
      std::count(log.inputs[1].begin(), log.inputs[1].begin() + log.inputs[1].find("*nat"), '\n'),
      5);
  // The rollback rewrites the filter chains without the reject rule that came in.
  EXPECT_THAT(log.inputs[1], HasSubstr("default/web0:http has no endpoints"));
  EXPECT_THAT(log.inputs[2], StartsWith("*filter\n"));
  EXPECT_THAT(log.inputs[2], Not(HasSubstr("REJECT")));
  EXPECT_THAT(log.inputs[2], Not(HasSubstr("*nat")));

  // A failure inside the filter section needs no rollback: nothing was committed.
  log.restore_results.push_back(error(StatusCode::kInternal, "Error occurred at line: 3"));
  s = backend.sync(state, {"default/web0", "default/web1"}, false);
  EXPECT_FALSE(s.is_ok());
  EXPECT_EQ(log.inputs.size(), 4u);
  // After a failure the next sync is full, whatever the caller asks.
  state["default/web1"][0].endpoints[0].ip = "10.42.0.99";
  ASSERT_TRUE(backend.sync(state, {"default/web1"}, false).is_ok());
  EXPECT_EQ(log.saves.size(), 6u);  // one full sync at the start, two after the failures
  EXPECT_THAT(log.inputs.back(), HasSubstr("default/web0:http has no endpoints"));
}

// The kernel takes what the backend writes, in a network namespace that exists only for this
// test process; once with the system's iptables, once with iptables-legacy.
class IptablesKernelTest : public testing::OwnNetns<::testing::TestWithParam<std::string>> {
 protected:
  void SetUp() override {
    OwnNetns::SetUp();
    if (IsSkipped()) return;
    auto probe = run_command({command() + "-save", "-t", "nat"}, std::chrono::seconds(10));
    if (!probe.is_ok() || !probe->status.success()) {
      GTEST_SKIP() << command() << "-save does not work here";
    }
  }
  std::string command() const { return GetParam(); }
  // Both tables, without the comment lines (they carry timestamps).
  std::string rules() const {
    std::string out;
    for (const char* table : {"filter", "nat"}) {
      auto saved = run_command({command() + "-save", "-t", table}, std::chrono::seconds(10));
      if (!saved.is_ok()) return "";
      size_t start = 0;
      const std::string& text = saved->out;
      while (start < text.size()) {
        size_t end = text.find('\n', start);
        if (end == std::string::npos) end = text.size();
        if (text[start] != '#') out += text.substr(start, end - start) + "\n";
        start = end + 1;
      }
    }
    return out;
  }
};

ProxyState kernel_state() {
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
  c.node_port = 30081;
  c.external_local = true;
  c.endpoints[0].local = true;
  return {{"default/web", {a}}, {"default/empty", {b}}, {"default/local", {c}}};
}

TEST_P(IptablesKernelTest, FullIncrementalRestartAndCleanup) {
  IptablesBackend backend(ProxyConfig{}, make_iptables_runner(command()));
  ProxyState state = kernel_state();
  Status s = backend.sync(state, {}, true);
  ASSERT_TRUE(s.is_ok()) << s.message();
  std::string r = rules();
  EXPECT_EQ(count(r, "-A PREROUTING -j SKIFF-SERVICES"), 1u) << r;
  EXPECT_EQ(count(r, "-A POSTROUTING -j SKIFF-POSTROUTING"), 1u) << r;
  EXPECT_EQ(count(r, "--ctstate NEW -j SKIFF-SERVICES"), 3u) << r;
  EXPECT_THAT(r, HasSubstr("-A SKIFF-SERVICES -d 10.43.0.20/32 -p tcp -m tcp --dport 80"));
  EXPECT_THAT(r, HasSubstr("-d 10.43.0.21/32 -p udp -m udp --dport 80 -m comment --comment "
                           "\"default/empty:http has no endpoints\" -j REJECT"));
  EXPECT_THAT(r, HasSubstr("-A SKIFF-SERVICES -d 192.0.2.10/32 -p tcp -m tcp --dport 80"));
  EXPECT_THAT(r, HasSubstr("--dport 30081"));
  EXPECT_THAT(r, HasSubstr("--to-destination 10.42.0.11:8080"));
  EXPECT_THAT(r, HasSubstr("--rcheck --seconds 30 --reap"));
  EXPECT_THAT(r, HasSubstr("-m statistic --mode random --probability 0.5"));

  // A second full sync over its own rules changes nothing and adds no jump twice.
  s = backend.sync(state, {}, true);
  ASSERT_TRUE(s.is_ok()) << s.message();
  EXPECT_EQ(rules(), r);

  // Scale, drop affinity, give the empty Service an endpoint, delete one Service.
  std::set<std::string> changed = testing::scale_fill_and_delete(state);
  s = backend.sync(state, changed, false);
  ASSERT_TRUE(s.is_ok()) << s.message();
  r = rules();
  EXPECT_THAT(r, HasSubstr("--probability 0.33333"));
  EXPECT_THAT(r, Not(HasSubstr("recent")));
  EXPECT_THAT(r, Not(HasSubstr("REJECT")));
  EXPECT_THAT(r, HasSubstr("-A SKIFF-SERVICES -d 10.43.0.21/32 -p udp -m udp --dport 80"));
  EXPECT_THAT(r, Not(HasSubstr("default/local")));
  EXPECT_THAT(r, Not(HasSubstr("192.0.2.10")));
  // No chain is left over: 4 fixed nat chains, 2 filter chains, and for web one service chain,
  // one external chain, three endpoint chains; for empty one service and one endpoint chain.
  EXPECT_EQ(count(r, "\n:SKIFF-"), 4u + 2u + 5u + 2u) << r;

  // A restart: a new backend starts with a full sync over the existing rules.
  IptablesBackend restarted(ProxyConfig{}, make_iptables_runner(command()));
  s = restarted.sync(state, {}, true);
  ASSERT_TRUE(s.is_ok()) << s.message();
  EXPECT_EQ(rules(), r);
  // It deletes what the old process had and no longer needs.
  state.erase("default/empty");
  s = IptablesBackend(ProxyConfig{}, make_iptables_runner(command())).sync(state, {}, true);
  ASSERT_TRUE(s.is_ok()) << s.message();
  EXPECT_EQ(count(rules(), "\n:SKIFF-"), 4u + 2u + 5u);

  ASSERT_TRUE(restarted.cleanup().is_ok());
  r = rules();
  EXPECT_THAT(r, Not(HasSubstr("SKIFF"))) << r;
  EXPECT_THAT(r, HasSubstr(":PREROUTING ACCEPT"));
  // Cleaning up twice is fine.
  EXPECT_TRUE(restarted.cleanup().is_ok());
}

TEST_P(IptablesKernelTest, AFailedSyncLeavesTheLastRules) {
  IptablesBackend backend(ProxyConfig{}, make_iptables_runner(command()));
  ProxyState state = kernel_state();
  ASSERT_TRUE(backend.sync(state, {}, true).is_ok());
  const std::string before = rules();
  // The filter section is good (web loses its endpoints: a reject rule); the nat one is not.
  state["default/web"][0].endpoints.clear();
  state["default/local"][0].endpoints[0].ip = "not-an-ip";
  Status s = backend.sync(state, {"default/web", "default/local"}, false);
  EXPECT_FALSE(s.is_ok());
  EXPECT_THAT(s.message(), HasSubstr("restore"));
  EXPECT_EQ(rules(), before);
  // A bad filter section: nothing at all changes.
  state = kernel_state();
  state["default/empty"][0].cluster_ip = "10.43.0.300";
  state["default/web"][0].endpoints.push_back(web_port(3).endpoints[2]);
  s = backend.sync(state, {"default/web", "default/empty"}, false);
  EXPECT_FALSE(s.is_ok());
  EXPECT_EQ(rules(), before);
  ASSERT_TRUE(backend.cleanup().is_ok());
}

// Connects to ip:port over TCP from this namespace; 0 when accepted, else the errno
// (ETIMEDOUT after `timeout_ms`).
int connect_to(const std::string& ip, int port, int timeout_ms = 3000) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return errno;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  ::inet_pton(AF_INET, ip.c_str(), &addr.sin_addr);
  int rc = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  int result = rc == 0 ? 0 : errno;
  if (result == EINPROGRESS) {
    pollfd p{fd, POLLOUT, 0};
    if (::poll(&p, 1, timeout_ms) != 1) {
      result = ETIMEDOUT;
    } else {
      socklen_t len = sizeof result;
      ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &result, &len);
    }
  }
  ::close(fd);
  return result;
}

// A listener on ip:port; -1 on failure.
int listen_on(const std::string& ip, int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  ::inet_pton(AF_INET, ip.c_str(), &addr.sin_addr);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(fd, 16) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

TEST_P(IptablesKernelTest, TrafficFollowsTheRules) {
  // This namespace's own addresses: an endpoint on lo, a node address on a veth pair, and a
  // route for the service range through it (packets to it never leave: DNAT or REJECT happens
  // first, or they are lost).
  for (const char* command :
       {"ip link set lo up", "ip addr replace 10.42.0.10/32 dev lo",
        "ip link show svc0 >/dev/null 2>&1 || ip link add svc0 type veth peer name svc1",
        "ip link set svc0 up", "ip link set svc1 up", "ip addr replace 10.99.0.1/24 dev svc0",
        "ip route replace 10.43.0.0/16 dev svc0"}) {
    auto out = run_command({"sh", "-c", command}, std::chrono::seconds(10));
    if (!out.is_ok() || !out->status.success()) {
      GTEST_SKIP() << "cannot set up the namespace: " << command << ": "
                   << (out.is_ok() ? out->err : out.status().message());
    }
  }
  int listener = listen_on("10.42.0.10", 8080);
  ASSERT_GE(listener, 0);
  IptablesBackend backend(ProxyConfig{}, make_iptables_runner(command()));
  ProxyState state;
  state["default/web"] = {web_port(1)};
  state["default/web"][0].affinity_timeout_seconds = 60;
  ServicePort empty = web_port(0);
  empty.service = "empty";
  empty.cluster_ip = "10.43.0.21";
  state["default/empty"] = {empty};
  Status s = backend.sync(state, {}, true);
  ASSERT_TRUE(s.is_ok()) << s.message();

  // The cluster IP leads to the endpoint; the Service without endpoints is refused at once.
  EXPECT_EQ(connect_to("10.43.0.20", 80), 0);
  EXPECT_EQ(connect_to("10.43.0.21", 80), ECONNREFUSED);
  // A node port on a local address but 127/8 too.
  state["default/web"][0].node_port = 30080;
  ASSERT_TRUE(backend.sync(state, {"default/web"}, false).is_ok());
  EXPECT_EQ(connect_to("10.99.0.1", 30080), 0);

  // Moved to another endpoint (nothing listens there: refused); then back.
  state["default/web"][0].endpoints[0].port = 8081;
  ASSERT_TRUE(backend.sync(state, {"default/web"}, false).is_ok());
  EXPECT_EQ(connect_to("10.43.0.20", 80), ECONNREFUSED);
  state["default/web"][0].endpoints[0].port = 8080;
  ASSERT_TRUE(backend.sync(state, {"default/web"}, false).is_ok());
  EXPECT_EQ(connect_to("10.43.0.20", 80), 0);

  ASSERT_TRUE(backend.cleanup().is_ok());
  // Without the rules the cluster IP leads nowhere.
  EXPECT_NE(connect_to("10.43.0.20", 80, 300), 0);
  ::close(listener);
}

INSTANTIATE_TEST_SUITE_P(Variants, IptablesKernelTest,
                         ::testing::Values("iptables", "iptables-legacy"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           return info.param == "iptables" ? std::string("System")
                                                           : std::string("Legacy");
                         });

}  // namespace
}  // namespace skiff::proxy
