#include <gtest/gtest.h>

#include <thread>

#include "client/fake_api_client.h"
#include "controller_test_util.h"
#include "controllers/servicelb/servicelb_controller.h"

namespace skiff::controllers {
namespace {

using client::FakeApiClient;
using testing::ControllerTest;
using testing::eventually;
using namespace client::resources;
using namespace std::chrono_literals;

Json make_node(const std::string& name, const std::string& internal_ip, bool ready,
               const std::string& external_ip = "") {
  Json addresses = {{{"type", "InternalIP"}, {"address", internal_ip}},
                    {{"type", "Hostname"}, {"address", name}}};
  if (!external_ip.empty()) addresses.push_back({{"type", "ExternalIP"}, {"address", external_ip}});
  return {{"metadata", {{"name", name}}},
          {"status",
           {{"addresses", addresses},
            {"conditions", {{{"type", "Ready"}, {"status", ready ? "True" : "False"}}}}}}};
}

Json lb_service(const std::string& name, const std::string& type = "LoadBalancer") {
  return {{"metadata", {{"namespace", "default"}, {"name", name}}},
          {"spec",
           {{"type", type},
            {"selector", {{"app", name}}},
            {"clusterIP", "10.43.0.20"},
            {"ipFamilies", {"IPv4"}},
            {"ports", {{{"port", 80}, {"nodePort", 30080}, {"protocol", "TCP"}}}}}}};
}

class ServiceLbTest : public ControllerTest<> {
 protected:
  ServiceLbTest() : ControllerTest(options()) {}

  ~ServiceLbTest() override {
    if (controller_) controller_->stop();
    informers_.stop();
  }

  static ControllerOptions options() {
    ControllerOptions o;
    o.workers = 2;
    return o;
  }

  void start() {
    controller_ = new_servicelb_controller(ctx_);
    informers_.start();
    controller_->start();
  }

  std::vector<std::string> ingress(const std::string& name) {
    std::vector<std::string> out;
    auto svc = api_.get(kServices, "default", name);
    if (!svc.is_ok()) return out;
    const Json& status = svc.value().value("status", Json::object());
    for (const auto& i :
         status.value("loadBalancer", Json::object()).value("ingress", Json::array())) {
      out.push_back(i.value("ip", ""));
    }
    return out;
  }

  std::unique_ptr<Controller> controller_;
};

using Ips = std::vector<std::string>;

TEST_F(ServiceLbTest, IngressFollowsReadyNodes) {
  api_.seed(kNodes, make_node("n1", "192.168.1.11", true));
  api_.seed(kNodes, make_node("n2", "192.168.1.10", true));
  api_.seed(kNodes, make_node("n3", "192.168.1.12", false));
  api_.seed(kServices, lb_service("web"));
  api_.seed(kServices, lb_service("plain", "ClusterIP"));
  start();
  ASSERT_TRUE(eventually([&] { return ingress("web") == Ips{"192.168.1.10", "192.168.1.11"}; }));

  // n3 becomes ready, n1 goes away.
  api_.seed(kNodes, make_node("n3", "192.168.1.12", true));
  ASSERT_TRUE(eventually([&] {
    return ingress("web") == Ips{"192.168.1.10", "192.168.1.11", "192.168.1.12"};
  }));
  ASSERT_TRUE(api_.remove(kNodes, "", "n1").is_ok());
  ASSERT_TRUE(eventually([&] { return ingress("web") == Ips{"192.168.1.10", "192.168.1.12"}; }));

  // A heartbeat alone writes nothing.
  api_.clear_actions();
  Json n2 = api_.get(kNodes, "", "n2").value();
  n2["status"]["conditions"][0]["lastHeartbeatTime"] = "2026-01-01T00:00:00Z";
  api_.seed(kNodes, n2);
  // The type changes away from LoadBalancer: the ingress is cleared.
  Json web = api_.get(kServices, "default", "web").value();
  web["spec"]["type"] = "NodePort";
  api_.seed(kServices, web);
  ASSERT_TRUE(eventually([&] { return ingress("web").empty(); }));
  EXPECT_EQ(api_.actions("update", "services").size(), 1u);
  EXPECT_TRUE(ingress("plain").empty());
  for (const auto& a : api_.actions()) EXPECT_NE(a.name, "plain");
}

TEST_F(ServiceLbTest, ExternalAddressesAndEnableLbLabelAsK3s) {
  api_.seed(kNodes, make_node("n1", "192.168.1.11", true, "203.0.113.1"));
  api_.seed(kNodes, make_node("n2", "192.168.1.10", true));
  api_.seed(kServices, lb_service("web"));
  start();
  ASSERT_TRUE(eventually([&] { return ingress("web") == Ips{"203.0.113.1"}; }));

  // Once a node is labelled for load balancers, only labelled nodes serve.
  Json n2 = api_.get(kNodes, "", "n2").value();
  n2["metadata"]["labels"] = {{"svccontroller.k3s.cattle.io/enablelb", "true"}};
  api_.seed(kNodes, n2);
  ASSERT_TRUE(eventually([&] { return ingress("web") == Ips{"192.168.1.10"}; }));
}

TEST_F(ServiceLbTest, LeavesOtherLoadBalancerClassesAloneAndRetriesConflicts) {
  api_.seed(kNodes, make_node("n1", "192.168.1.11", true));
  Json other = lb_service("other");
  other["spec"]["loadBalancerClass"] = "example.com/metal";
  other["status"] = {{"loadBalancer", {{"ingress", {{{"ip", "198.51.100.7"}}}}}}};
  api_.seed(kServices, other);
  api_.fail("update", "services", error(StatusCode::kAborted, "the object has been modified"), 1);
  api_.seed(kServices, lb_service("web"));
  start();
  ASSERT_TRUE(eventually([&] { return ingress("web") == Ips{"192.168.1.11"}; }));
  EXPECT_EQ(ingress("other"), Ips{"198.51.100.7"});
}

TEST_F(ServiceLbTest, KeepsIngressWhenOnlyTheIpModeDiffers) {
  api_.seed(kNodes, make_node("n1", "192.168.1.11", true));
  Json web = lb_service("web");
  // As the API server defaults it.
  web["status"] = {{"loadBalancer", {{"ingress", {{{"ip", "192.168.1.11"}, {"ipMode", "VIP"}}}}}}};
  api_.seed(kServices, web);
  api_.seed(kServices, lb_service("barrier"));
  start();
  ASSERT_TRUE(eventually([&] { return ingress("barrier") == Ips{"192.168.1.11"}; }));
  for (const auto& a : api_.actions()) EXPECT_NE(a.name, "web");
}

TEST(ServiceLbAddresses, FamiliesAndNotReadyNodes) {
  auto node = [](Json n) { return std::make_shared<const Json>(std::move(n)); };
  std::vector<ObjectPtr> nodes = {node(make_node("a", "10.0.0.2", true)),
                                  node(make_node("b", "fd00::2", true)),
                                  node(make_node("c", "10.0.0.3", false))};
  Json v4 = lb_service("x");
  EXPECT_EQ(servicelb::ingress_addresses(v4, nodes), Ips{"10.0.0.2"});
  Json v6 = lb_service("x");
  v6["spec"]["ipFamilies"] = {"IPv6"};
  EXPECT_EQ(servicelb::ingress_addresses(v6, nodes), Ips{"fd00::2"});
  Json dual = lb_service("x");
  dual["spec"]["ipFamilies"] = {"IPv4", "IPv6"};
  EXPECT_EQ(servicelb::ingress_addresses(dual, nodes), (Ips{"10.0.0.2", "fd00::2"}));
}

}  // namespace
}  // namespace skiff::controllers
