// The proxy's control loop against an in-memory API: what reaches the backend after Services
// and EndpointSlices change, and which conntrack entries are deleted; and the options run_proxy
// refuses.

#include "proxy/proxier.h"

#include <gtest/gtest.h>

#include <chrono>
#include <mutex>
#include <stop_token>
#include <thread>

#include "client/fake_api_client.h"
#include "proxy/proxy.h"

namespace skiff::proxy {
namespace {

using client::Json;
using namespace std::chrono_literals;

// Records each sync: the changed keys and a copy of the state.
class RecordingBackend : public Backend {
 public:
  struct Sync {
    std::set<std::string> changed;
    bool full;
    ProxyState state;
  };
  const char* name() const override { return "recording"; }
  Status sync(const ProxyState& state, const std::set<std::string>& changed, bool full) override {
    std::lock_guard lock(mu_);
    syncs_.push_back({changed, full, state});
    if (fail_next_) {
      fail_next_ = false;
      return error(StatusCode::kInternal, "injected");
    }
    return Status::ok();
  }
  Status cleanup() override { return Status::ok(); }

  std::vector<Sync> syncs() const {
    std::lock_guard lock(mu_);
    return syncs_;
  }
  void fail_next() {
    std::lock_guard lock(mu_);
    fail_next_ = true;
  }

 private:
  mutable std::mutex mu_;
  std::vector<Sync> syncs_;
  bool fail_next_ = false;
};

Json service(const std::string& name, const std::string& ip, const std::string& protocol = "TCP") {
  return {{"metadata", {{"name", name}, {"namespace", "default"}}},
          {"spec",
           {{"clusterIP", ip},
            {"clusterIPs", {ip}},
            {"type", "ClusterIP"},
            {"ports", {{{"name", "p"}, {"port", 53}, {"protocol", protocol}}}}}}};
}

Json slice(const std::string& name, const std::string& service, std::vector<std::string> ips,
           const std::string& protocol = "TCP") {
  Json endpoints = Json::array();
  for (const auto& ip : ips) {
    endpoints.push_back(
        {{"addresses", {ip}}, {"conditions", {{"ready", true}}}, {"nodeName", "node-a"}});
  }
  return {{"metadata",
           {{"name", name},
            {"namespace", "default"},
            {"labels", {{"kubernetes.io/service-name", service}}}}},
          {"addressType", "IPv4"},
          {"endpoints", endpoints},
          {"ports", {{{"name", "p"}, {"port", 5353}, {"protocol", protocol}}}}};
}

class ProxierTest : public ::testing::Test {
 protected:
  void make() {
    auto backend = std::make_unique<RecordingBackend>();
    backend_ = backend.get();
    ProxierOptions o;
    o.node_name = "node-a";
    o.min_sync_period = 5ms;
    o.sync_period = 1h;
    o.retry_period = 50ms;
    proxier_ = std::make_unique<Proxier>(api_, std::move(backend), o,
                                         [this](const std::vector<std::string>& args) {
                                           std::lock_guard lock(mu_);
                                           conntrack_.push_back(args);
                                         });
    proxier_->start();
    ASSERT_TRUE(proxier_->wait_for_sync(5s));
  }
  void TearDown() override {
    if (proxier_) proxier_->stop();
  }
  template <typename F>
  bool eventually(F f) {
    for (int i = 0; i < 500; ++i) {
      if (f()) return true;
      std::this_thread::sleep_for(10ms);
    }
    return false;
  }
  std::vector<std::vector<std::string>> conntrack() {
    std::lock_guard lock(mu_);
    return conntrack_;
  }
  bool has_conntrack(const std::vector<std::string>& args) {
    for (const auto& c : conntrack()) {
      if (c == args) return true;
    }
    return false;
  }

  client::FakeApiClient api_;
  RecordingBackend* backend_ = nullptr;
  std::unique_ptr<Proxier> proxier_;
  std::mutex mu_;
  std::vector<std::vector<std::string>> conntrack_;
};

TEST_F(ProxierTest, FirstSyncIsFullAndHoldsEveryService) {
  api_.seed(client::resources::kServices, service("a", "10.43.0.5"));
  api_.seed(client::resources::kEndpointSlices, slice("a-1", "a", {"10.42.0.7", "10.42.0.8"}));
  api_.seed(client::resources::kServices, service("b", "10.43.0.6"));
  make();
  auto syncs = backend_->syncs();
  ASSERT_FALSE(syncs.empty());
  EXPECT_TRUE(syncs[0].full);
  ASSERT_EQ(syncs[0].state.size(), 2u);
  const ServicePort& a = syncs[0].state.at("default/a")[0];
  EXPECT_EQ(a.cluster_ip, "10.43.0.5");
  ASSERT_EQ(a.endpoints.size(), 2u);
  EXPECT_EQ(a.endpoints[0].port, 5353);
  EXPECT_TRUE(a.endpoints[0].local);
  EXPECT_TRUE(syncs[0].state.at("default/b")[0].endpoints.empty());
}

TEST_F(ProxierTest, ChangesSyncOnlyTheirService) {
  api_.seed(client::resources::kServices, service("a", "10.43.0.5"));
  api_.seed(client::resources::kServices, service("b", "10.43.0.6"));
  make();
  size_t before = backend_->syncs().size();
  ASSERT_TRUE(
      api_.create(client::resources::kEndpointSlices, "default", slice("b-1", "b", {"10.42.0.9"}))
          .is_ok());
  ASSERT_TRUE(eventually([&] { return backend_->syncs().size() > before; }));
  auto last = backend_->syncs().back();
  EXPECT_FALSE(last.full);
  EXPECT_EQ(last.changed, (std::set<std::string>{"default/b"}));
  EXPECT_EQ(last.state.at("default/b")[0].endpoints.size(), 1u);

  ASSERT_TRUE(api_.remove(client::resources::kServices, "default", "a").is_ok());
  ASSERT_TRUE(eventually([&] { return !backend_->syncs().back().state.count("default/a"); }));
  EXPECT_EQ(backend_->syncs().back().changed, (std::set<std::string>{"default/a"}));
}

TEST_F(ProxierTest, AFailedSyncIsRetriedInFull) {
  api_.seed(client::resources::kServices, service("a", "10.43.0.5"));
  make();
  backend_->fail_next();
  ASSERT_TRUE(
      api_.create(client::resources::kEndpointSlices, "default", slice("a-1", "a", {"10.42.0.9"}))
          .is_ok());
  ASSERT_TRUE(eventually([&] {
    auto syncs = backend_->syncs();
    return syncs.size() >= 3 && syncs.back().full;
  }));
  EXPECT_EQ(backend_->syncs().back().state.at("default/a")[0].endpoints.size(), 1u);
  EXPECT_EQ(proxier_->stats().failures, 1u);
}

TEST_F(ProxierTest, StaleUdpEntriesAreDeleted) {
  api_.seed(client::resources::kServices, service("dns", "10.43.0.10", "UDP"));
  make();
  // From no endpoints to one: entries made while the Service rejected go.
  ASSERT_TRUE(api_.create(client::resources::kEndpointSlices, "default",
                          slice("dns-1", "dns", {"10.42.0.3", "10.42.0.4"}, "UDP"))
                  .is_ok());
  ASSERT_TRUE(eventually([&] {
    return has_conntrack({"-D", "-p", "udp", "--orig-dst", "10.43.0.10", "--dport", "53"});
  }));
  // An endpoint going away: entries translated to it go.
  Json s = slice("dns-1", "dns", {"10.42.0.4"}, "UDP");
  auto current = api_.get(client::resources::kEndpointSlices, "default", "dns-1");
  ASSERT_TRUE(current.is_ok());
  s["metadata"]["resourceVersion"] = (*current)["metadata"]["resourceVersion"];
  ASSERT_TRUE(api_.update(client::resources::kEndpointSlices, "default", s).is_ok());
  ASSERT_TRUE(eventually([&] {
    return has_conntrack({"-D", "-p", "udp", "--orig-dst", "10.43.0.10", "--dst-nat", "10.42.0.3"});
  }));
  EXPECT_FALSE(
      has_conntrack({"-D", "-p", "udp", "--orig-dst", "10.43.0.10", "--dst-nat", "10.42.0.4"}));
}

TEST_F(ProxierTest, TcpServicesNeverTouchConntrack) {
  api_.seed(client::resources::kServices, service("web", "10.43.0.11"));
  api_.seed(client::resources::kEndpointSlices, slice("web-1", "web", {"10.42.0.3"}));
  make();
  ASSERT_TRUE(api_.remove(client::resources::kEndpointSlices, "default", "web-1").is_ok());
  ASSERT_TRUE(eventually([&] {
    auto state = backend_->syncs().back().state;
    return state.count("default/web") && state.at("default/web")[0].endpoints.empty();
  }));
  EXPECT_TRUE(conntrack().empty());
}

}  // namespace
}  // namespace skiff::proxy

namespace skiff::proxy {
namespace {

TEST(RunProxy, BadOptionsAreRefusedBeforeAnythingIsWritten) {
  std::stop_source stop;
  ProxyOptions o;
  o.mode = "ipvs";
  Status s = run_proxy(o, stop.get_token());
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "unknown proxy mode \"ipvs\" (want nftables or iptables)");

  o.mode = "nftables";  // no kubeconfig, no server
  s = run_proxy(o, stop.get_token());
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "the proxy needs --kubeconfig or --server");

  s = cleanup_proxy_rules("userspace");
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "unknown proxy mode \"userspace\" (want nftables, iptables or all)");
}

}  // namespace
}  // namespace skiff::proxy
