#include <gtest/gtest.h>

#include <thread>

#include "client/fake_api_client.h"
#include "controller_test_util.h"
#include "controllers/endpoints/endpoints_controller.h"

namespace skiff::controllers {
namespace {

using client::FakeApiClient;
using testing::ControllerTest;
using testing::eventually;
using namespace client::resources;
using namespace std::chrono_literals;

Json make_pod(const std::string& name, const std::string& ip, bool ready,
              Json labels = {{"app", "web"}},
              Json ports = Json::array({{{"name", "http"}, {"containerPort", 8080}}})) {
  Json pod = {{"metadata", {{"namespace", "default"}, {"name", name}, {"labels", labels}}},
              {"spec",
               {{"nodeName", "node-1"},
                {"containers", {{{"name", "c"}, {"image", "busybox"}, {"ports", ports}}}}}},
              {"status",
               {{"phase", "Running"},
                {"conditions",
                 {{{"type", "Ready"},
                   {"status", ready ? "True" : "False"},
                   {"lastTransitionTime", "2026-01-01T00:00:10Z"}}}}}}};
  if (!ip.empty()) {
    pod["status"]["podIP"] = ip;
    pod["status"]["podIPs"] = {{{"ip", ip}}};
  }
  return pod;
}

Json make_service(const std::string& name, Json spec) {
  return {{"metadata",
           {{"namespace", "default"},
            {"name", name},
            {"labels", {{"team", "shop"}}},
            {"creationTimestamp", "2026-01-01T00:00:00Z"}}},
          {"spec", spec}};
}

Json web_spec() {
  return {
      {"selector", {{"app", "web"}}},
      {"clusterIP", "10.43.0.10"},
      {"ipFamilies", {"IPv4"}},
      {"ports", {{{"name", "http"}, {"port", 80}, {"targetPort", "http"}, {"protocol", "TCP"}}}}};
}

std::vector<std::string> ips(const Json& addresses) {
  std::vector<std::string> out;
  if (!addresses.is_array()) return out;
  for (const auto& a : addresses) out.push_back(a.value("ip", ""));
  return out;
}

class EndpointsControllerTest : public ControllerTest<> {
 protected:
  EndpointsControllerTest() : ControllerTest(options()) {}

  ~EndpointsControllerTest() override {
    if (controller_) controller_->stop();
    informers_.stop();
  }

  static ControllerOptions options() {
    ControllerOptions o;
    o.workers = 2;
    return o;
  }

  void start() {
    controller_ = new_endpoints_controller(ctx_);
    informers_.start();
    controller_->start();
  }

  Json endpoints(const std::string& name) {
    auto r = api_.get(kEndpoints, "default", name);
    return r.is_ok() ? r.value() : Json();
  }

  bool has_event(const std::string& reason) {
    auto list = api_.list(kEvents, "");
    if (!list.is_ok()) return false;
    for (const auto& e : list.value()["items"]) {
      if (e.value("reason", "") == reason) return true;
    }
    return false;
  }

  std::unique_ptr<Controller> controller_;
};

TEST_F(EndpointsControllerTest, ReadyAndNotReadyPodsWithNamedPorts) {
  api_.seed(kServices, make_service("web", web_spec()));
  api_.seed(kPods, make_pod("a", "10.42.0.5", true));
  api_.seed(kPods, make_pod("b", "10.42.0.4", false));
  // No container port named "http": not an endpoint of this port.
  api_.seed(kPods, make_pod("c", "10.42.0.6", true, {{"app", "web"}},
                            Json::array({{{"name", "metrics"}, {"containerPort", 9090}}})));
  api_.seed(kPods, make_pod("no-ip", "", true));
  Json done = make_pod("done", "10.42.0.7", true);
  done["status"]["phase"] = "Succeeded";
  api_.seed(kPods, done);
  Json going = make_pod("going", "10.42.0.8", false);
  going["metadata"]["deletionTimestamp"] = "2026-01-01T00:01:00Z";
  api_.seed(kPods, going);
  api_.seed(kPods, make_pod("other", "10.42.0.9", true, {{"app", "db"}}));
  start();

  ASSERT_TRUE(eventually([&] { return !endpoints("web").is_null(); }));
  Json ep = endpoints("web");
  ASSERT_EQ(ep["subsets"].size(), 1u) << ep.dump(2);
  const Json& subset = ep["subsets"][0];
  EXPECT_EQ(ips(subset["addresses"]), std::vector<std::string>{"10.42.0.5"});
  EXPECT_EQ(ips(subset["notReadyAddresses"]), std::vector<std::string>{"10.42.0.4"});
  EXPECT_EQ(subset["ports"], Json::parse(R"([{"name":"http","port":8080,"protocol":"TCP"}])"));
  const Json& a = subset["addresses"][0];
  EXPECT_EQ(a["nodeName"], "node-1");
  EXPECT_EQ(a["targetRef"]["kind"], "Pod");
  EXPECT_EQ(a["targetRef"]["name"], "a");
  EXPECT_EQ(a["targetRef"]["namespace"], "default");
  EXPECT_EQ(a["targetRef"]["uid"], api_.get(kPods, "default", "a").value()["metadata"]["uid"]);
  EXPECT_FALSE(a.contains("hostname"));
  EXPECT_EQ(ep["metadata"]["labels"], Json({{"team", "shop"}}));
  // The earliest change: the Service's creation.
  EXPECT_EQ(ep["metadata"]["annotations"]["endpoints.kubernetes.io/last-change-trigger-time"],
            "2026-01-01T00:00:00Z");
}

TEST_F(EndpointsControllerTest, FollowsPodChangesAndWritesOnlyOnChange) {
  api_.seed(kServices, make_service("web", web_spec()));
  api_.seed(kPods, make_pod("a", "10.42.0.5", true));
  api_.seed(kPods, make_pod("b", "10.42.0.4", false));
  start();
  ASSERT_TRUE(eventually([&] { return !endpoints("web").is_null(); }));

  // b turns ready.
  Json b = api_.get(kPods, "default", "b").value();
  b["status"]["conditions"][0]["status"] = "True";
  b["status"]["conditions"][0]["lastTransitionTime"] = "2026-01-01T00:05:00Z";
  api_.seed(kPods, b);
  ASSERT_TRUE(eventually([&] {
    Json s = endpoints("web")["subsets"];
    return s.size() == 1 &&
           ips(s[0]["addresses"]) == std::vector<std::string>{"10.42.0.4", "10.42.0.5"};
  }));
  EXPECT_FALSE(endpoints("web")["subsets"][0].contains("notReadyAddresses"));
  EXPECT_EQ(
      endpoints(
          "web")["metadata"]["annotations"]["endpoints.kubernetes.io/last-change-trigger-time"],
      "2026-01-01T00:05:00Z");

  // a goes away.
  ASSERT_TRUE(api_.remove(kPods, "default", "a").is_ok());
  ASSERT_TRUE(eventually([&] {
    return ips(endpoints("web")["subsets"][0]["addresses"]) ==
           std::vector<std::string>{"10.42.0.4"};
  }));

  // A change no endpoint depends on writes nothing.
  size_t writes =
      api_.actions("update", "endpoints").size() + api_.actions("create", "endpoints").size();
  Json b2 = api_.get(kPods, "default", "b").value();
  b2["metadata"]["annotations"] = {{"note", "x"}};
  api_.seed(kPods, b2);
  // A relabel away from the selector is one: use it as the barrier that proves the first was seen.
  api_.seed(kPods, make_pod("z", "10.42.0.99", true, {{"app", "db"}}));
  Json z = api_.get(kPods, "default", "z").value();
  z["metadata"]["labels"]["app"] = "web";
  api_.seed(kPods, z);
  ASSERT_TRUE(
      eventually([&] { return ips(endpoints("web")["subsets"][0]["addresses"]).size() == 2; }));
  EXPECT_EQ(api_.actions("update", "endpoints").size() + api_.actions("create", "endpoints").size(),
            writes + 1);

  // The last pod leaves: the Endpoints stay, empty.
  ASSERT_TRUE(api_.remove(kPods, "default", "b").is_ok());
  ASSERT_TRUE(api_.remove(kPods, "default", "z").is_ok());
  ASSERT_TRUE(eventually([&] {
    Json e = endpoints("web");
    return !e.is_null() && !e.contains("subsets");
  }));
}

TEST_F(EndpointsControllerTest, HeadlessServiceHostnamesAndLabel) {
  Json spec = {{"selector", {{"app", "db"}}}, {"clusterIP", "None"}};
  api_.seed(kServices, make_service("db", spec));
  Json pod = make_pod("db-0", "10.42.0.20", true, {{"app", "db"}});
  pod["spec"]["hostname"] = "db-0";
  pod["spec"]["subdomain"] = "db";
  api_.seed(kPods, pod);
  Json other = make_pod("db-1", "10.42.0.21", false, {{"app", "db"}});
  other["spec"]["hostname"] = "db-1";
  other["spec"]["subdomain"] = "elsewhere";
  api_.seed(kPods, other);
  start();
  ASSERT_TRUE(eventually([&] { return !endpoints("db").is_null(); }));
  Json ep = endpoints("db");
  EXPECT_EQ(ep["metadata"]["labels"]["service.kubernetes.io/headless"], "");
  EXPECT_EQ(ep["metadata"]["labels"]["team"], "shop");
  ASSERT_EQ(ep["subsets"].size(), 1u) << ep.dump(2);
  EXPECT_FALSE(ep["subsets"][0].contains("ports"));
  EXPECT_EQ(ep["subsets"][0]["addresses"][0]["hostname"], "db-0");
  EXPECT_FALSE(ep["subsets"][0]["notReadyAddresses"][0].contains("hostname"));
}

TEST_F(EndpointsControllerTest, PublishNotReadyAddressesAndNumericPorts) {
  Json spec = web_spec();
  spec["publishNotReadyAddresses"] = true;
  spec["ports"] = {{{"name", "http"}, {"port", 80}, {"targetPort", 8081}, {"protocol", "TCP"}},
                   {{"name", "dns"}, {"port", 53}, {"protocol", "UDP"}}};
  api_.seed(kServices, make_service("web", spec));
  api_.seed(kPods, make_pod("a", "10.42.0.5", false));
  Json going = make_pod("going", "10.42.0.8", true);
  going["metadata"]["deletionTimestamp"] = "2026-01-01T00:01:00Z";
  api_.seed(kPods, going);
  start();
  ASSERT_TRUE(eventually([&] { return !endpoints("web").is_null(); }));
  Json ep = endpoints("web");
  ASSERT_EQ(ep["subsets"].size(), 1u) << ep.dump(2);
  EXPECT_EQ(ips(ep["subsets"][0]["addresses"]),
            (std::vector<std::string>{"10.42.0.5", "10.42.0.8"}));
  EXPECT_EQ(ep["subsets"][0]["ports"].size(), 2u);
  std::set<std::string> ports;
  for (const auto& p : ep["subsets"][0]["ports"]) {
    ports.insert(p["name"].get<std::string>() + ":" + std::to_string(p["port"].get<int>()) + "/" +
                 p["protocol"].get<std::string>());
  }
  EXPECT_EQ(ports, (std::set<std::string>{"http:8081/TCP", "dns:53/UDP"}));
}

TEST_F(EndpointsControllerTest, SelectorlessServicesAreLeftAloneAndDeletedServicesCleanedUp) {
  Json manual_spec = {{"clusterIP", "10.43.0.11"},
                      {"ports", {{{"port", 80}, {"protocol", "TCP"}}}}};
  api_.seed(kServices, make_service("manual", manual_spec));
  Json manual = {{"metadata", {{"namespace", "default"}, {"name", "manual"}}},
                 {"subsets", {{{"addresses", {{{"ip", "192.168.1.1"}}}}}}}};
  api_.seed(kEndpoints, manual);
  // Left over from a Service deleted while no controller ran.
  api_.seed(kEndpoints, {{"metadata", {{"namespace", "default"}, {"name", "gone"}}}});
  api_.seed(kEndpoints,
            {{"metadata",
              {{"namespace", "default"},
               {"name", "leader"},
               {"annotations", {{"control-plane.alpha.kubernetes.io/leader", "{}"}}}}}});
  api_.seed(kServices, make_service("web", web_spec()));
  api_.seed(kPods, make_pod("a", "10.42.0.5", true));
  start();
  ASSERT_TRUE(eventually([&] { return !endpoints("web").is_null(); }));
  ASSERT_TRUE(eventually([&] { return endpoints("gone").is_null(); }));
  EXPECT_FALSE(endpoints("leader").is_null());
  EXPECT_EQ(endpoints("manual")["subsets"][0]["addresses"][0]["ip"], "192.168.1.1");
  for (const auto& a : api_.actions()) {
    if (a.resource == "endpoints") {
      EXPECT_NE(a.name, "manual") << a.verb;
    }
  }

  ASSERT_TRUE(api_.remove(kServices, "default", "web").is_ok());
  ASSERT_TRUE(eventually([&] { return endpoints("web").is_null(); }));
}

TEST_F(EndpointsControllerTest, RetriesFailedWritesAndRecordsAnEvent) {
  api_.fail("create", "endpoints", error(StatusCode::kInternal, "etcd is sad"), 2);
  api_.seed(kServices, make_service("web", web_spec()));
  api_.seed(kPods, make_pod("a", "10.42.0.5", true));
  start();
  ASSERT_TRUE(eventually([&] { return !endpoints("web").is_null(); }));
  EXPECT_TRUE(eventually([&] { return has_event("FailedToCreateEndpoint"); }));

  // A conflicting update (someone else wrote meanwhile) is retried against the newer object.
  api_.fail("update", "endpoints", error(StatusCode::kAborted, "the object has been modified"), 1);
  api_.seed(kPods, make_pod("b", "10.42.0.6", true));
  ASSERT_TRUE(
      eventually([&] { return ips(endpoints("web")["subsets"][0]["addresses"]).size() == 2; }));
}

TEST_F(EndpointsControllerTest, TruncatesOverCapacity) {
  api_.seed(kServices, make_service("web", web_spec()));
  for (int i = 0; i < 1005; ++i) {
    api_.seed(
        kPods,
        make_pod("p" + std::to_string(i),
                 "10.42." + std::to_string(i / 250) + "." + std::to_string(i % 250 + 1), true));
  }
  start();
  ASSERT_TRUE(eventually([&] {
    Json e = endpoints("web");
    return !e.is_null() && e["metadata"].contains("annotations") &&
           e["metadata"]["annotations"].contains("endpoints.kubernetes.io/over-capacity") &&
           e["subsets"][0]["addresses"].size() == 1000;
  }));
  EXPECT_EQ(endpoints("web")["metadata"]["annotations"]["endpoints.kubernetes.io/over-capacity"],
            "truncated");
  // Back under capacity: the annotation goes.
  for (int i = 0; i < 10; ++i) {
    ASSERT_TRUE(api_.remove(kPods, "default", "p" + std::to_string(i)).is_ok());
  }
  ASSERT_TRUE(eventually([&] {
    Json e = endpoints("web");
    return e["subsets"][0]["addresses"].size() == 995 &&
           !e["metadata"]
                .value("annotations", Json::object())
                .contains("endpoints.kubernetes.io/over-capacity");
  }));
}

TEST(RepackSubsets, GroupsPodsByTheirPortSets) {
  auto addr = [](const std::string& ip, const std::string& uid) {
    return Json{{"ip", ip}, {"targetRef", {{"kind", "Pod"}, {"uid", uid}}}};
  };
  Json http = {{"name", "http"}, {"port", 8080}, {"protocol", "TCP"}};
  Json metrics = {{"name", "metrics"}, {"port", 9090}, {"protocol", "TCP"}};
  std::vector<endpoints::SubsetEntry> entries = {
      {addr("10.0.0.2", "b"), true, http},  {addr("10.0.0.2", "b"), true, metrics},
      {addr("10.0.0.1", "a"), true, http},  {addr("10.0.0.1", "a"), true, metrics},
      {addr("10.0.0.3", "c"), false, http}, {addr("10.0.0.3", "c"), false, metrics},
      {addr("10.0.0.4", "d"), true, http},  // offers only http
  };
  // Ports offered by the same addresses share a subset: http (a, b, c, d) and metrics (a, b, c)
  // differ, so each has its own.
  Json subsets = endpoints::repack_subsets(entries);
  ASSERT_EQ(subsets.size(), 2u) << subsets.dump(2);
  for (const auto& s : subsets) {
    ASSERT_EQ(s["ports"].size(), 1u);
    if (s["ports"][0]["name"] == "http") {
      EXPECT_EQ(ips(s["addresses"]),
                (std::vector<std::string>{"10.0.0.1", "10.0.0.2", "10.0.0.4"}));
    } else {
      EXPECT_EQ(ips(s["addresses"]), (std::vector<std::string>{"10.0.0.1", "10.0.0.2"}));
    }
    EXPECT_EQ(ips(s["notReadyAddresses"]), std::vector<std::string>{"10.0.0.3"});
  }

  // Without d, both ports have the same addresses: one subset, ports sorted.
  entries.pop_back();
  subsets = endpoints::repack_subsets(entries);
  ASSERT_EQ(subsets.size(), 1u) << subsets.dump(2);
  EXPECT_EQ(ips(subsets[0]["addresses"]), (std::vector<std::string>{"10.0.0.1", "10.0.0.2"}));
  EXPECT_EQ(ips(subsets[0]["notReadyAddresses"]), std::vector<std::string>{"10.0.0.3"});
  ASSERT_EQ(subsets[0]["ports"].size(), 2u);
  EXPECT_EQ(subsets[0]["ports"][0]["name"], "http");
  EXPECT_EQ(subsets[0]["ports"][1]["name"], "metrics");

  // An address ready for one entry counts as ready.
  entries.push_back({addr("10.0.0.3", "c"), true, http});
  entries.push_back({addr("10.0.0.3", "c"), true, metrics});
  subsets = endpoints::repack_subsets(entries);
  ASSERT_EQ(subsets.size(), 1u);
  EXPECT_EQ(ips(subsets[0]["addresses"]).size(), 3u);
  EXPECT_FALSE(subsets[0].contains("notReadyAddresses"));
}

TEST(TruncateSubsets, KeepsReadyFirstInProportion) {
  auto many = [](int n, const std::string& prefix) {
    Json out = Json::array();
    for (int i = 0; i < n; ++i) out.push_back({{"ip", prefix + std::to_string(i)}});
    return out;
  };
  Json subsets = {{{"addresses", many(600, "a")}, {"notReadyAddresses", many(200, "b")}},
                  {{"addresses", many(300, "c")}, {"notReadyAddresses", many(200, "d")}}};
  EXPECT_TRUE(endpoints::truncate_subsets(subsets));
  // 900 ready stay; the 100 places left go to not-ready addresses, half each.
  EXPECT_EQ(subsets[0]["addresses"].size(), 600u);
  EXPECT_EQ(subsets[1]["addresses"].size(), 300u);
  EXPECT_EQ(subsets[0]["notReadyAddresses"].size(), 50u);
  EXPECT_EQ(subsets[1]["notReadyAddresses"].size(), 50u);

  Json ready_only = {{{"addresses", many(1500, "a")}, {"notReadyAddresses", many(5, "b")}},
                     {{"addresses", many(500, "c")}}};
  EXPECT_TRUE(endpoints::truncate_subsets(ready_only));
  EXPECT_EQ(ready_only[0]["addresses"].size(), 750u);
  EXPECT_FALSE(ready_only[0].contains("notReadyAddresses"));
  EXPECT_EQ(ready_only[1]["addresses"].size(), 250u);

  Json small = {{{"addresses", many(10, "a")}}};
  EXPECT_FALSE(endpoints::truncate_subsets(small));
}

}  // namespace
}  // namespace skiff::controllers
