#include "dns/dns.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "client/fake_api_client.h"
#include "dns_test_util.h"
#include "support/eventually.h"

namespace skiff::dns {
namespace {

using namespace skiff::dns::testing;
using client::resources::kEndpoints;
using client::resources::kEndpointSlices;
using client::resources::kServices;
using skiff::testing::eventually;

Json service(const std::string& ns, const std::string& name, const Json& spec) {
  return {{"apiVersion", "v1"},
          {"kind", "Service"},
          {"metadata", {{"namespace", ns}, {"name", name}}},
          {"spec", spec}};
}

Json slice(const std::string& ns, const std::string& name, const std::string& svc,
           const std::string& ip, bool ready) {
  return {{"apiVersion", "discovery.k8s.io/v1"},
          {"kind", "EndpointSlice"},
          {"metadata",
           {{"namespace", ns}, {"name", name}, {"labels", {{"kubernetes.io/service-name", svc}}}}},
          {"addressType", "IPv4"},
          {"ports", Json::array({{{"name", "pg"}, {"port", 5432}, {"protocol", "TCP"}}})},
          {"endpoints", Json::array({{{"addresses", Json::array({ip})},
                                      {"hostname", "pg-0"},
                                      {"conditions", {{"ready", ready}}}}})}};
}

class RunDnsTest : public ::testing::Test {
 protected:
  void start(DnsOptions o = {}) {
    o.bind_address = "127.0.0.1";
    o.port = 0;
    o.advertise_address = "127.0.0.1";
    if (o.upstreams.empty()) o.upstreams = {"127.0.0.1:" + std::to_string(upstream_.port())};
    o.resync_period = std::chrono::milliseconds(200);
    o.threads = 2;
    thread_ = std::jthread([this, o](std::stop_token stop) {
      status_ = run_dns(api_, o, stop, [this](int p) { port_ = p; });
    });
    ASSERT_TRUE(eventually([&] { return port_.load() != 0; }));
  }

  void TearDown() override {
    if (thread_.joinable()) {
      thread_.request_stop();
      thread_.join();
      EXPECT_TRUE(status_.is_ok()) << status_.to_string();
    }
  }

  std::vector<std::string> resolve(const std::string& name, ldns_rr_type type,
                                   ldns_pkt_rcode* rcode = nullptr) {
    Pkt r = parse(udp_exchange(port_, make_query(name, type)));
    if (!r) return {"<no answer>"};
    if (rcode != nullptr) *rcode = ldns_pkt_get_rcode(r.get());
    return answers(r.get(), type);
  }

  client::FakeApiClient api_;
  FakeUpstream upstream_{"192.0.2.44"};
  std::atomic<int> port_{0};
  Status status_;
  std::jthread thread_;
};

TEST_F(RunDnsTest, AnswersFromTheApiAndFollowsChanges) {
  api_.seed(kServices, service("default", "web", {{"clusterIP", "10.43.0.20"}}));
  start();
  using V = std::vector<std::string>;
  EXPECT_EQ(resolve("web.default.svc.cluster.local.", LDNS_RR_TYPE_A), V{"10.43.0.20"});

  // A new headless Service with a ready endpoint.
  ASSERT_TRUE(api_.create(kServices, "db", service("db", "pg", {{"clusterIP", "None"}})).is_ok());
  ASSERT_TRUE(
      api_.create(kEndpointSlices, "db", slice("db", "pg-abc", "pg", "10.42.0.5", true)).is_ok());
  EXPECT_TRUE(eventually(
      [&] { return resolve("pg.db.svc.cluster.local.", LDNS_RR_TYPE_A) == V{"10.42.0.5"}; }));
  EXPECT_EQ(resolve("pg-0.pg.db.svc.cluster.local.", LDNS_RR_TYPE_A), V{"10.42.0.5"});
  EXPECT_EQ(resolve("_pg._tcp.pg.db.svc.cluster.local.", LDNS_RR_TYPE_SRV),
            V{"0 100 5432 pg-0.pg.db.svc.cluster.local."});

  // The endpoint turns unready: the name goes.
  auto current = api_.get(kEndpointSlices, "db", "pg-abc");
  ASSERT_TRUE(current.is_ok());
  Json unready = current.value();
  unready["endpoints"][0]["conditions"]["ready"] = false;
  ASSERT_TRUE(api_.update(kEndpointSlices, "db", unready).is_ok());
  ldns_pkt_rcode rcode = LDNS_RCODE_NOERROR;
  EXPECT_TRUE(eventually([&] {
    return resolve("pg.db.svc.cluster.local.", LDNS_RR_TYPE_A, &rcode).empty() &&
           rcode == LDNS_RCODE_NXDOMAIN;
  }));

  // Deleting a Service removes its name.
  ASSERT_TRUE(api_.remove(kServices, "default", "web").is_ok());
  EXPECT_TRUE(eventually([&] {
    return resolve("web.default.svc.cluster.local.", LDNS_RR_TYPE_A, &rcode).empty() &&
           rcode == LDNS_RCODE_NXDOMAIN;
  }));

  // Other names go upstream.
  EXPECT_EQ(resolve("example.org.", LDNS_RR_TYPE_A), V{"192.0.2.44"});
}

TEST_F(RunDnsTest, CreatesTheKubeDnsServiceAndEndpoints) {
  start();
  int port = port_;
  ASSERT_TRUE(eventually([&] {
    return api_.get(kServices, "kube-system", "kube-dns").is_ok() &&
           api_.get(kEndpoints, "kube-system", "kube-dns").is_ok() &&
           api_.get(kEndpointSlices, "kube-system", "kube-dns-skiff").is_ok();
  }));
  Json svc = api_.get(kServices, "kube-system", "kube-dns").value();
  EXPECT_EQ(svc["spec"]["clusterIP"], "10.43.0.10");
  EXPECT_FALSE(svc["spec"].contains("selector"));
  EXPECT_EQ(svc["metadata"]["labels"]["k8s-app"], "kube-dns");
  ASSERT_EQ(svc["spec"]["ports"].size(), 2u);
  EXPECT_EQ(svc["spec"]["ports"][0]["name"], "dns");
  EXPECT_EQ(svc["spec"]["ports"][0]["protocol"], "UDP");
  EXPECT_EQ(svc["spec"]["ports"][0]["port"], 53);
  EXPECT_EQ(svc["spec"]["ports"][0]["targetPort"], port);
  EXPECT_EQ(svc["spec"]["ports"][1]["name"], "dns-tcp");
  EXPECT_EQ(svc["spec"]["ports"][1]["protocol"], "TCP");

  Json ep = api_.get(kEndpoints, "kube-system", "kube-dns").value();
  EXPECT_EQ(ep["subsets"][0]["addresses"][0]["ip"], "127.0.0.1");
  EXPECT_EQ(ep["subsets"][0]["ports"][0]["port"], port);

  Json es = api_.get(kEndpointSlices, "kube-system", "kube-dns-skiff").value();
  EXPECT_EQ(es["metadata"]["labels"]["kubernetes.io/service-name"], "kube-dns");
  EXPECT_EQ(es["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"], "skiff-dns");
  EXPECT_EQ(es["addressType"], "IPv4");
  EXPECT_EQ(es["endpoints"][0]["addresses"][0], "127.0.0.1");
  EXPECT_EQ(es["ports"][1]["port"], port);

  // DNS answers for its own Service, from the objects it wrote.
  EXPECT_TRUE(eventually([&] {
    return resolve("kube-dns.kube-system.svc.cluster.local.", LDNS_RR_TYPE_A) ==
           std::vector<std::string>{"10.43.0.10"};
  }));

  // Nothing more is written once they are right.
  ASSERT_TRUE(eventually([&] { return api_.actions().size() == 3; }));
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  EXPECT_EQ(api_.actions().size(), 3u);

  // Deleted: put back.
  ASSERT_TRUE(api_.remove(kServices, "kube-system", "kube-dns").is_ok());
  ASSERT_TRUE(api_.remove(kEndpointSlices, "kube-system", "kube-dns-skiff").is_ok());
  EXPECT_TRUE(eventually([&] {
    return api_.get(kServices, "kube-system", "kube-dns").is_ok() &&
           api_.get(kEndpointSlices, "kube-system", "kube-dns-skiff").is_ok();
  }));
}

TEST_F(RunDnsTest, RepairsAnExistingKubeDnsService) {
  api_.seed(
      kServices,
      service("kube-system", "kube-dns",
              {{"clusterIP", "10.43.0.10"},
               {"selector", {{"k8s-app", "kube-dns"}}},
               {"ports",
                Json::array(
                    {{{"name", "dns"}, {"port", 53}, {"protocol", "UDP"}, {"targetPort", 53}}})}}));
  api_.seed(kEndpoints, {{"apiVersion", "v1"},
                         {"kind", "Endpoints"},
                         {"metadata", {{"namespace", "kube-system"}, {"name", "kube-dns"}}},
                         {"subsets", Json::array()}});
  start();
  int port = port_;
  EXPECT_TRUE(eventually([&] {
    auto svc = api_.get(kServices, "kube-system", "kube-dns");
    auto ep = api_.get(kEndpoints, "kube-system", "kube-dns");
    return svc.is_ok() && !svc.value()["spec"].contains("selector") &&
           svc.value()["spec"]["ports"].size() == 2 &&
           svc.value()["spec"]["ports"][0]["targetPort"] == port && ep.is_ok() &&
           ep.value()["subsets"].size() == 1;
  }));
}

TEST_F(RunDnsTest, RetriesWhenTheApiFails) {
  api_.fail("create", "services", Status(StatusCode::kUnavailable, "down"), 2);
  start();
  EXPECT_TRUE(eventually([&] { return api_.get(kServices, "kube-system", "kube-dns").is_ok(); }));
}

TEST(RunDnsOptionsTest, BadOptionsFail) {
  client::FakeApiClient api;
  DnsOptions o;
  o.cluster_domain = "..";
  std::stop_source stop;
  EXPECT_EQ(run_dns(api, o, stop.get_token()).code(), StatusCode::kInvalidArgument);
  o = DnsOptions();
  o.service_cidrs = {"nope"};
  EXPECT_EQ(run_dns(api, o, stop.get_token()).code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace skiff::dns

namespace skiff::dns {
namespace {

TEST(ClusterDnsIp, TenthAddressOfTheServiceRange) {
  EXPECT_EQ(cluster_dns_ip("10.43.0.0/16").value(), "10.43.0.10");
  EXPECT_EQ(cluster_dns_ip("10.96.0.0/12").value(), "10.96.0.10");
  // The host part of the given address does not matter.
  EXPECT_EQ(cluster_dns_ip("192.168.7.33/24").value(), "192.168.7.10");
  EXPECT_EQ(cluster_dns_ip("172.20.0.0/28").value(), "172.20.0.10");
  for (const char* bad : {"10.43.0.0", "10.43.0.0/29", "10.43.0.0/", "10.43.0.0/x", "fd00::/108",
                          "nonsense/16", "10.43.0.0/123"}) {
    auto r = cluster_dns_ip(bad);
    EXPECT_FALSE(r.is_ok()) << bad;
    if (!r.is_ok()) EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << bad;
  }
}

}  // namespace
}  // namespace skiff::dns
