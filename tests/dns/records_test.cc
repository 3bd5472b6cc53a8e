#include "dns/records.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <set>
#include <thread>

namespace skiff::dns {
namespace {

constexpr uint16_t kA = 1, kNs = 2, kCname = 5, kSoa = 6, kPtr = 12, kTxt = 16, kAaaa = 28,
                   kSrv = 33, kAny = 255;

Json service(const std::string& ns, const std::string& name, const Json& spec) {
  return {{"apiVersion", "v1"},
          {"kind", "Service"},
          {"metadata", {{"namespace", ns}, {"name", name}}},
          {"spec", spec}};
}

Json cluster_ip_service(const std::string& ns, const std::string& name, const std::string& ip) {
  return service(ns, name,
                 {{"clusterIP", ip},
                  {"clusterIPs", {ip}},
                  {"ports",
                   {{{"name", "http"}, {"port", 80}, {"protocol", "TCP"}},
                    {{"name", "dns"}, {"port", 53}, {"protocol", "UDP"}}}}});
}

Json headless_service(const std::string& ns, const std::string& name) {
  return service(ns, name, {{"clusterIP", "None"}, {"ports", {{{"name", "http"}, {"port", 80}}}}});
}

Json endpoint(const std::string& ip, std::optional<bool> ready = std::nullopt,
              const std::string& hostname = "") {
  Json ep = {{"addresses", Json::array({ip})}};
  if (ready) ep["conditions"] = {{"ready", *ready}};
  if (!hostname.empty()) ep["hostname"] = hostname;
  return ep;
}

Json slice(const std::string& ns, const std::string& name, const std::string& svc,
           const std::vector<Json>& endpoints, const std::string& type = "IPv4") {
  return {{"apiVersion", "discovery.k8s.io/v1"},
          {"kind", "EndpointSlice"},
          {"metadata",
           {{"namespace", ns}, {"name", name}, {"labels", {{"kubernetes.io/service-name", svc}}}}},
          {"addressType", type},
          {"ports", {{{"name", "http"}, {"port", 8080}, {"protocol", "TCP"}}}},
          {"endpoints", Json(endpoints)}};
}

std::unique_ptr<ClusterRecords> make(RecordsOptions o = {}) {
  auto r = ClusterRecords::create(std::move(o));
  EXPECT_TRUE(r.is_ok()) << r.status().to_string();
  return std::move(r).value();
}

std::multiset<std::string> data_of(const std::vector<Record>& rs, RrType t) {
  std::multiset<std::string> out;
  for (const auto& r : rs) {
    if (r.type == t) out.insert(r.data);
  }
  return out;
}

bool is_nodata(const Answer& a) {
  return !a.forward && a.rcode == Rcode::kNoError && a.answer.empty() && a.authoritative &&
         a.authority.size() == 1 && a.authority[0].type == RrType::kSoa;
}

bool is_nxdomain(const Answer& a) {
  return !a.forward && a.rcode == Rcode::kNxDomain && a.answer.empty() && a.authoritative &&
         a.authority.size() == 1 && a.authority[0].type == RrType::kSoa;
}

TEST(ClusterRecordsTest, ClusterIpServiceA) {
  auto r = make();
  r->upsert_service(cluster_ip_service("default", "web", "10.43.0.20"));
  Answer a = r->answer("web.default.svc.cluster.local.", kA);
  EXPECT_FALSE(a.forward);
  EXPECT_TRUE(a.authoritative);
  EXPECT_EQ(a.rcode, Rcode::kNoError);
  ASSERT_EQ(a.answer.size(), 1u);
  EXPECT_EQ(a.answer[0].name, "web.default.svc.cluster.local.");
  EXPECT_EQ(a.answer[0].data, "10.43.0.20");
  EXPECT_EQ(a.answer[0].ttl, 5u);
  // Case-insensitive, trailing dot optional.
  EXPECT_EQ(r->answer("WEB.Default.SVC.cluster.LOCAL", kA).answer.size(), 1u);
  // An IPv4-only Service has no AAAA: NODATA.
  EXPECT_TRUE(is_nodata(r->answer("web.default.svc.cluster.local.", kAaaa)));
}

TEST(ClusterRecordsTest, DualStackServiceAnswersBothFamilies) {
  auto r = make();
  r->upsert_service(service("default", "ds",
                            {{"clusterIP", "10.43.0.21"},
                             {"clusterIPs", {"10.43.0.21", "fd00:43::21"}},
                             {"ports", {{{"port", 80}}}}}));
  EXPECT_EQ(data_of(r->answer("ds.default.svc.cluster.local", kA).answer, RrType::kA),
            std::multiset<std::string>{"10.43.0.21"});
  EXPECT_EQ(data_of(r->answer("ds.default.svc.cluster.local", kAaaa).answer, RrType::kAaaa),
            std::multiset<std::string>{"fd00:43::21"});
}

TEST(ClusterRecordsTest, NxdomainForUnknownAndSearchPathNames) {
  auto r = make();
  r->upsert_service(cluster_ip_service("default", "web", "10.43.0.20"));
  EXPECT_TRUE(is_nxdomain(r->answer("nope.default.svc.cluster.local.", kA)));
  EXPECT_TRUE(is_nxdomain(r->answer("web.other.svc.cluster.local.", kA)));
  // What a pod's search path makes of an already qualified name.
  EXPECT_TRUE(
      is_nxdomain(r->answer("web.default.svc.cluster.local.default.svc.cluster.local.", kA)));
  EXPECT_TRUE(is_nxdomain(r->answer("web.default.svc.cluster.local.svc.cluster.local.", kA)));
  EXPECT_TRUE(is_nxdomain(r->answer("example.com.cluster.local.", kA)));
  auto soa = r->answer("nope.default.svc.cluster.local.", kA).authority[0];
  EXPECT_EQ(soa.name, "cluster.local.");
  EXPECT_EQ(soa.data, "ns.dns.cluster.local.");
  EXPECT_EQ(soa.minimum, 5u);
}

TEST(ClusterRecordsTest, NodataForEmptyNonTerminalsAndOtherTypes) {
  auto r = make();
  r->upsert_service(cluster_ip_service("default", "web", "10.43.0.20"));
  EXPECT_TRUE(is_nodata(r->answer("default.svc.cluster.local.", kA)));
  EXPECT_TRUE(is_nodata(r->answer("svc.cluster.local.", kA)));
  EXPECT_TRUE(is_nodata(r->answer("pod.cluster.local.", kA)));
  EXPECT_TRUE(is_nodata(r->answer("web.default.svc.cluster.local.", kTxt)));
  EXPECT_TRUE(is_nodata(r->answer("_tcp.web.default.svc.cluster.local.", kA)));
  // A namespace without Services does not exist.
  EXPECT_TRUE(is_nxdomain(r->answer("other.svc.cluster.local.", kA)));
  // Once its last Service goes, neither does this one.
  r->delete_service(cluster_ip_service("default", "web", "10.43.0.20"));
  EXPECT_TRUE(is_nxdomain(r->answer("default.svc.cluster.local.", kA)));
  EXPECT_TRUE(is_nxdomain(r->answer("web.default.svc.cluster.local.", kA)));
  EXPECT_EQ(r->name_count(), 0u);
}

TEST(ClusterRecordsTest, ZoneApexAndOwnNames) {
  RecordsOptions o;
  o.dns_ip = "10.43.0.10";
  auto r = make(o);
  Answer soa = r->answer("cluster.local.", kSoa);
  ASSERT_EQ(soa.answer.size(), 1u);
  EXPECT_EQ(soa.answer[0].type, RrType::kSoa);
  EXPECT_TRUE(soa.authoritative);
  Answer ns = r->answer("cluster.local.", kNs);
  ASSERT_EQ(ns.answer.size(), 1u);
  EXPECT_EQ(ns.answer[0].data, "ns.dns.cluster.local.");
  ASSERT_EQ(ns.additional.size(), 1u);
  EXPECT_EQ(ns.additional[0].data, "10.43.0.10");
  EXPECT_TRUE(is_nodata(r->answer("cluster.local.", kA)));
  EXPECT_EQ(data_of(r->answer("ns.dns.cluster.local.", kA).answer, RrType::kA),
            std::multiset<std::string>{"10.43.0.10"});
  Answer txt = r->answer("dns-version.cluster.local.", kTxt);
  ASSERT_EQ(txt.answer.size(), 1u);
  EXPECT_EQ(txt.answer[0].data, "1.1.0");
}

TEST(ClusterRecordsTest, OutsideTheZoneIsForwarded) {
  auto r = make();
  EXPECT_TRUE(r->answer("example.com.", kA).forward);
  EXPECT_TRUE(r->answer("notcluster.local.", kA).forward);
  EXPECT_TRUE(r->answer("local.", kA).forward);
}

TEST(ClusterRecordsTest, CustomZone) {
  RecordsOptions o;
  o.zone = "Corp.Example.";
  auto r = make(o);
  r->upsert_service(cluster_ip_service("a", "b", "10.43.1.1"));
  EXPECT_EQ(r->answer("b.a.svc.corp.example.", kA).answer.size(), 1u);
  EXPECT_TRUE(r->answer("b.a.svc.cluster.local.", kA).forward);
}

TEST(ClusterRecordsTest, RejectsBadOptions) {
  RecordsOptions o;
  o.service_cidrs = {"10.43.0.0"};
  EXPECT_FALSE(ClusterRecords::create(o).is_ok());
  o.service_cidrs = {"10.43.0.0/33"};
  EXPECT_FALSE(ClusterRecords::create(o).is_ok());
  o.service_cidrs = {};
  o.zone = ".";
  EXPECT_FALSE(ClusterRecords::create(o).is_ok());
}

TEST(ClusterRecordsTest, HeadlessServiceListsReadyEndpoints) {
  auto r = make();
  r->upsert_service(headless_service("db", "pg"));
  // No endpoints yet: like CoreDNS, the name does not resolve.
  EXPECT_TRUE(is_nxdomain(r->answer("pg.db.svc.cluster.local.", kA)));
  r->upsert_endpoint_slice(slice("db", "pg-abc", "pg",
                                 {endpoint("10.42.0.5", true, "pg-0"),
                                  endpoint("10.42.0.6"),  // no conditions: ready
                                  endpoint("10.42.0.7", false, "pg-2")}));
  Answer a = r->answer("pg.db.svc.cluster.local.", kA);
  EXPECT_EQ(data_of(a.answer, RrType::kA), (std::multiset<std::string>{"10.42.0.5", "10.42.0.6"}));
  // Per-endpoint names: the hostname, or the address with dashes.
  EXPECT_EQ(data_of(r->answer("pg-0.pg.db.svc.cluster.local.", kA).answer, RrType::kA),
            std::multiset<std::string>{"10.42.0.5"});
  EXPECT_EQ(data_of(r->answer("10-42-0-6.pg.db.svc.cluster.local.", kA).answer, RrType::kA),
            std::multiset<std::string>{"10.42.0.6"});
  EXPECT_TRUE(is_nxdomain(r->answer("pg-2.pg.db.svc.cluster.local.", kA)));

  // pg-0 turns unready, pg-2 ready.
  r->upsert_endpoint_slice(slice("db", "pg-abc", "pg",
                                 {endpoint("10.42.0.5", false, "pg-0"), endpoint("10.42.0.6"),
                                  endpoint("10.42.0.7", true, "pg-2")}));
  EXPECT_EQ(data_of(r->answer("pg.db.svc.cluster.local.", kA).answer, RrType::kA),
            (std::multiset<std::string>{"10.42.0.6", "10.42.0.7"}));
  EXPECT_TRUE(is_nxdomain(r->answer("pg-0.pg.db.svc.cluster.local.", kA)));
  EXPECT_EQ(r->answer("pg-2.pg.db.svc.cluster.local.", kA).answer.size(), 1u);

  // Every endpoint unready: NXDOMAIN again.
  r->upsert_endpoint_slice(slice("db", "pg-abc", "pg", {endpoint("10.42.0.6", false)}));
  EXPECT_TRUE(is_nxdomain(r->answer("pg.db.svc.cluster.local.", kA)));
}

TEST(ClusterRecordsTest, HeadlessEndpointsAcrossSlicesAndFamilies) {
  auto r = make();
  r->upsert_service(headless_service("db", "pg"));
  r->upsert_endpoint_slice(slice("db", "pg-1", "pg", {endpoint("10.42.0.5")}));
  r->upsert_endpoint_slice(slice("db", "pg-2", "pg", {endpoint("10.42.1.5")}));
  r->upsert_endpoint_slice(slice("db", "pg-3", "pg", {endpoint("fd00:42::5")}, "IPv6"));
  // The same address in two slices (as during a move) answers once.
  r->upsert_endpoint_slice(slice("db", "pg-4", "pg", {endpoint("10.42.0.5")}));
  EXPECT_EQ(data_of(r->answer("pg.db.svc.cluster.local.", kA).answer, RrType::kA),
            (std::multiset<std::string>{"10.42.0.5", "10.42.1.5"}));
  EXPECT_EQ(data_of(r->answer("pg.db.svc.cluster.local.", kAaaa).answer, RrType::kAaaa),
            std::multiset<std::string>{"fd00:42::5"});
  EXPECT_EQ(r->answer("fd00-42--5.pg.db.svc.cluster.local.", kAaaa).answer.size(), 1u);
  r->delete_endpoint_slice(slice("db", "pg-2", "pg", {}));
  EXPECT_EQ(data_of(r->answer("pg.db.svc.cluster.local.", kA).answer, RrType::kA),
            std::multiset<std::string>{"10.42.0.5"});
}

TEST(ClusterRecordsTest, SliceBeforeServiceAndServiceDeletion) {
  auto r = make();
  r->upsert_endpoint_slice(slice("db", "pg-1", "pg", {endpoint("10.42.0.5", true, "pg-0")}));
  EXPECT_TRUE(is_nxdomain(r->answer("pg.db.svc.cluster.local.", kA)));
  r->upsert_service(headless_service("db", "pg"));
  EXPECT_EQ(r->answer("pg.db.svc.cluster.local.", kA).answer.size(), 1u);
  r->delete_service(headless_service("db", "pg"));
  EXPECT_TRUE(is_nxdomain(r->answer("pg.db.svc.cluster.local.", kA)));
  EXPECT_TRUE(is_nxdomain(r->answer("pg-0.pg.db.svc.cluster.local.", kA)));
  EXPECT_TRUE(r->answer("5.0.42.10.in-addr.arpa.", kPtr).forward);
  // The slice is still known: the Service coming back brings its records back.
  r->upsert_service(headless_service("db", "pg"));
  EXPECT_EQ(r->answer("pg-0.pg.db.svc.cluster.local.", kA).answer.size(), 1u);
  r->delete_endpoint_slice(slice("db", "pg-1", "pg", {}));
  r->delete_service(headless_service("db", "pg"));
  EXPECT_EQ(r->name_count(), 0u);
}

TEST(ClusterRecordsTest, ClusterIpServiceEndpointNames) {
  auto r = make();
  r->upsert_service(cluster_ip_service("default", "web", "10.43.0.20"));
  r->upsert_endpoint_slice(slice("default", "web-1", "web", {endpoint("10.42.0.9")}));
  // The Service name stays the cluster IP; its endpoints have names of their own.
  EXPECT_EQ(data_of(r->answer("web.default.svc.cluster.local.", kA).answer, RrType::kA),
            std::multiset<std::string>{"10.43.0.20"});
  EXPECT_EQ(data_of(r->answer("10-42-0-9.web.default.svc.cluster.local.", kA).answer, RrType::kA),
            std::multiset<std::string>{"10.42.0.9"});
}

TEST(ClusterRecordsTest, ExternalNameIsCname) {
  auto r = make();
  r->upsert_service(
      service("default", "ext", {{"type", "ExternalName"}, {"externalName", "Example.COM"}}));
  for (uint16_t t : {kA, kAaaa, kCname}) {
    Answer a = r->answer("ext.default.svc.cluster.local.", t);
    ASSERT_EQ(a.answer.size(), 1u);
    EXPECT_EQ(a.answer[0].type, RrType::kCname);
    EXPECT_EQ(a.answer[0].data, "example.com.");
  }
  // A target in the zone is followed.
  r->upsert_service(cluster_ip_service("default", "web", "10.43.0.20"));
  r->upsert_service(
      service("default", "alias",
              {{"type", "ExternalName"}, {"externalName", "web.default.svc.cluster.local"}}));
  Answer a = r->answer("alias.default.svc.cluster.local.", kA);
  ASSERT_EQ(a.answer.size(), 2u);
  EXPECT_EQ(a.answer[0].type, RrType::kCname);
  EXPECT_EQ(a.answer[1].data, "10.43.0.20");
}

TEST(ClusterRecordsTest, SrvForClusterIpService) {
  auto r = make();
  r->upsert_service(cluster_ip_service("default", "web", "10.43.0.20"));
  Answer a = r->answer("_http._tcp.web.default.svc.cluster.local.", kSrv);
  ASSERT_EQ(a.answer.size(), 1u);
  EXPECT_EQ(a.answer[0].type, RrType::kSrv);
  EXPECT_EQ(a.answer[0].port, 80);
  EXPECT_EQ(a.answer[0].data, "web.default.svc.cluster.local.");
  EXPECT_EQ(a.answer[0].weight, 100);
  // The target's address comes along.
  ASSERT_EQ(a.additional.size(), 1u);
  EXPECT_EQ(a.additional[0].data, "10.43.0.20");
  Answer udp = r->answer("_dns._udp.web.default.svc.cluster.local.", kSrv);
  ASSERT_EQ(udp.answer.size(), 1u);
  EXPECT_EQ(udp.answer[0].port, 53);
  EXPECT_TRUE(is_nxdomain(r->answer("_dns._tcp.web.default.svc.cluster.local.", kSrv)));
  EXPECT_TRUE(is_nodata(r->answer("_http._tcp.web.default.svc.cluster.local.", kA)));
  // The Service's own name lists every port.
  Answer all = r->answer("web.default.svc.cluster.local.", kSrv);
  EXPECT_EQ(all.answer.size(), 2u);
  EXPECT_EQ(all.answer[0].weight, 50);
}

TEST(ClusterRecordsTest, SrvForHeadlessServicePerEndpoint) {
  auto r = make();
  r->upsert_service(headless_service("db", "pg"));
  r->upsert_endpoint_slice(slice(
      "db", "pg-1", "pg",
      {endpoint("10.42.0.5", true, "pg-0"), endpoint("10.42.0.6"), endpoint("10.42.0.7", false)}));
  Answer a = r->answer("_http._tcp.pg.db.svc.cluster.local.", kSrv);
  EXPECT_EQ(data_of(a.answer, RrType::kSrv),
            (std::multiset<std::string>{"pg-0.pg.db.svc.cluster.local.",
                                        "10-42-0-6.pg.db.svc.cluster.local."}));
  for (const auto& rec : a.answer) EXPECT_EQ(rec.port, 8080);
  EXPECT_EQ(data_of(a.additional, RrType::kA),
            (std::multiset<std::string>{"10.42.0.5", "10.42.0.6"}));
}

TEST(ClusterRecordsTest, PodNames) {
  auto r = make();
  Answer a = r->answer("10-42-0-5.default.pod.cluster.local.", kA);
  ASSERT_EQ(a.answer.size(), 1u);
  EXPECT_EQ(a.answer[0].data, "10.42.0.5");
  EXPECT_EQ(a.answer[0].name, "10-42-0-5.default.pod.cluster.local.");
  Answer v6 = r->answer("fd00-42--5.ns.pod.cluster.local.", kAaaa);
  ASSERT_EQ(v6.answer.size(), 1u);
  EXPECT_EQ(v6.answer[0].data, "fd00:42::5");
  EXPECT_TRUE(is_nodata(r->answer("10-42-0-5.default.pod.cluster.local.", kAaaa)));
  EXPECT_TRUE(is_nxdomain(r->answer("10-42-0-256.default.pod.cluster.local.", kA)));
  EXPECT_TRUE(is_nxdomain(r->answer("web.default.pod.cluster.local.", kA)));
  EXPECT_TRUE(is_nxdomain(r->answer("x.10-42-0-5.default.pod.cluster.local.", kA)));
  EXPECT_TRUE(is_nodata(r->answer("default.pod.cluster.local.", kA)));
}

TEST(ClusterRecordsTest, ReverseLookups) {
  RecordsOptions o;
  o.service_cidrs = {"10.43.0.0/16"};
  o.pod_cidrs = {"10.42.0.0/16", "fd00:42::/64"};
  auto r = make(o);
  r->upsert_service(cluster_ip_service("default", "web", "10.43.0.20"));
  r->upsert_service(headless_service("db", "pg"));
  r->upsert_endpoint_slice(
      slice("db", "pg-1", "pg", {endpoint("10.42.0.5", true, "pg-0"), endpoint("fd00:42::5")}));
  Answer a = r->answer("20.0.43.10.in-addr.arpa.", kPtr);
  ASSERT_EQ(a.answer.size(), 1u);
  EXPECT_TRUE(a.authoritative);
  EXPECT_EQ(a.answer[0].type, RrType::kPtr);
  EXPECT_EQ(a.answer[0].data, "web.default.svc.cluster.local.");
  Answer ep = r->answer("5.0.42.10.in-addr.arpa.", kPtr);
  ASSERT_EQ(ep.answer.size(), 1u);
  EXPECT_EQ(ep.answer[0].data, "pg-0.pg.db.svc.cluster.local.");
  Answer ep6 = r->answer(reverse_name("fd00:42::5"), kPtr);
  ASSERT_EQ(ep6.answer.size(), 1u);
  EXPECT_EQ(ep6.answer[0].data, "fd00-42--5.pg.db.svc.cluster.local.");
  // Unknown addresses in the cluster's ranges: NXDOMAIN from the range's reverse zone.
  Answer nx = r->answer("99.0.43.10.in-addr.arpa.", kPtr);
  EXPECT_TRUE(is_nxdomain(nx));
  EXPECT_EQ(nx.authority[0].name, "43.10.in-addr.arpa.");
  EXPECT_TRUE(is_nxdomain(r->answer(reverse_name("fd00:42::99"), kPtr)));
  EXPECT_TRUE(is_nodata(r->answer("20.0.43.10.in-addr.arpa.", kA)));
  // Outside them, and partial names: someone else's.
  EXPECT_TRUE(r->answer("8.8.8.8.in-addr.arpa.", kPtr).forward);
  EXPECT_TRUE(r->answer("43.10.in-addr.arpa.", kSoa).forward);
  // The cluster IP of a ClusterIP Service's endpoints has no PTR of its own here.
  r->upsert_endpoint_slice(slice("default", "web-1", "web", {endpoint("10.42.0.9")}));
  EXPECT_TRUE(is_nxdomain(r->answer("9.0.42.10.in-addr.arpa.", kPtr)));
}

TEST(ClusterRecordsTest, ReverseWithoutCidrsForwardsUnknown) {
  auto r = make();
  r->upsert_service(cluster_ip_service("default", "web", "10.43.0.20"));
  EXPECT_EQ(r->answer("20.0.43.10.in-addr.arpa.", kPtr).answer.size(), 1u);
  EXPECT_TRUE(r->answer("21.0.43.10.in-addr.arpa.", kPtr).forward);
  r->delete_service(cluster_ip_service("default", "web", "10.43.0.20"));
  EXPECT_TRUE(r->answer("20.0.43.10.in-addr.arpa.", kPtr).forward);
}

TEST(ClusterRecordsTest, ServiceUpdateReplacesRecords) {
  auto r = make();
  r->upsert_service(cluster_ip_service("default", "web", "10.43.0.20"));
  r->upsert_service(headless_service("default", "web"));
  EXPECT_TRUE(is_nxdomain(r->answer("web.default.svc.cluster.local.", kA)));
  EXPECT_TRUE(r->answer("20.0.43.10.in-addr.arpa.", kPtr).forward);
  r->upsert_service(cluster_ip_service("default", "web", "10.43.0.30"));
  EXPECT_EQ(data_of(r->answer("web.default.svc.cluster.local.", kA).answer, RrType::kA),
            std::multiset<std::string>{"10.43.0.30"});
}

TEST(ClusterRecordsTest, SharedPtrNames) {
  // Two headless Services with the same pod: both names answer the PTR.
  auto r = make();
  r->upsert_service(headless_service("db", "a"));
  r->upsert_service(headless_service("db", "b"));
  r->upsert_endpoint_slice(slice("db", "a-1", "a", {endpoint("10.42.0.5")}));
  r->upsert_endpoint_slice(slice("db", "b-1", "b", {endpoint("10.42.0.5")}));
  EXPECT_EQ(r->answer("5.0.42.10.in-addr.arpa.", kPtr).answer.size(), 2u);
  r->delete_service(headless_service("db", "a"));
  Answer a = r->answer("5.0.42.10.in-addr.arpa.", kPtr);
  ASSERT_EQ(a.answer.size(), 1u);
  EXPECT_EQ(a.answer[0].data, "10-42-0-5.b.db.svc.cluster.local.");
}

TEST(ClusterRecordsTest, AnyReturnsEveryType) {
  auto r = make();
  r->upsert_service(service("default", "ds",
                            {{"clusterIP", "10.43.0.21"},
                             {"clusterIPs", {"10.43.0.21", "fd00:43::21"}},
                             {"ports", {{{"port", 80}}}}}));
  Answer a = r->answer("ds.default.svc.cluster.local.", kAny);
  EXPECT_EQ(a.answer.size(), 3u);  // A, AAAA, SRV
}

TEST(ClusterRecordsTest, ReadsWhileUpdating) {
  auto r = make();
  r->upsert_service(cluster_ip_service("default", "stable", "10.43.0.2"));
  std::atomic<bool> done{false};
  std::atomic<int> bad{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < 3; ++t) {
    readers.emplace_back([&] {
      while (!done) {
        Answer a = r->answer("stable.default.svc.cluster.local.", kA);
        if (a.answer.size() != 1 || a.answer[0].data != "10.43.0.2") ++bad;
        Answer f = r->answer("flip.default.svc.cluster.local.", kA);
        if (f.rcode == Rcode::kNoError && f.answer.size() != 1) ++bad;
      }
    });
  }
  for (int i = 0; i < 2000; ++i) {
    r->upsert_service(cluster_ip_service("default", "flip", "10.43.1." + std::to_string(i % 250)));
    if (i % 2 == 0) r->delete_service(cluster_ip_service("default", "flip", ""));
  }
  done = true;
  for (auto& t : readers) t.join();
  EXPECT_EQ(bad.load(), 0);
}

TEST(ClusterRecordsTest, ReverseNameHelper) {
  EXPECT_EQ(reverse_name("10.43.0.1"), "1.0.43.10.in-addr.arpa.");
  EXPECT_EQ(reverse_name("::1"),
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa.");
  EXPECT_EQ(reverse_name("nope"), "");
}

}  // namespace
}  // namespace skiff::dns
