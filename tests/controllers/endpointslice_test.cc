#include <gtest/gtest.h>

#include <set>
#include <thread>

#include "client/fake_api_client.h"
#include "controller_test_util.h"
#include "controllers/endpointslice/endpointslice_controller.h"

namespace skiff::controllers {
namespace {

using client::FakeApiClient;
using testing::ControllerTest;
using testing::eventually;
using testing::stays;
using namespace client::resources;
using namespace std::chrono_literals;

std::string ip_of(int i) {
  return "10.42." + std::to_string(i / 200) + "." + std::to_string(i % 200 + 1);
}

Json make_pod(const std::string& name, const std::string& ip, bool ready,
              Json labels = {{"app", "web"}}, const std::string& node = "node-1") {
  Json pod = {{"metadata", {{"namespace", "default"}, {"name", name}, {"labels", labels}}},
              {"spec",
               {{"nodeName", node},
                {"containers",
                 {{{"name", "c"}, {"ports", {{{"name", "http"}, {"containerPort", 8080}}}}}}}}},
              {"status",
               {{"phase", "Running"},
                {"podIP", ip},
                {"podIPs", {{{"ip", ip}}}},
                {"conditions", {{{"type", "Ready"}, {"status", ready ? "True" : "False"}}}}}}};
  return pod;
}

Json web_service() {
  return {{"metadata",
           {{"namespace", "default"},
            {"name", "web"},
            {"labels", {{"team", "shop"}}},
            {"creationTimestamp", "2026-01-01T00:00:00Z"}}},
          {"spec",
           {{"selector", {{"app", "web"}}},
            {"clusterIP", "10.43.0.10"},
            {"ipFamilies", {"IPv4"}},
            {"ports",
             {{{"name", "http"}, {"port", 80}, {"targetPort", "http"}, {"protocol", "TCP"}}}}}}};
}

class EndpointSliceControllerTest : public ControllerTest<> {
 protected:
  EndpointSliceControllerTest() : ControllerTest(options()) {
    api_.seed(
        kNodes,
        {{"metadata", {{"name", "node-1"}, {"labels", {{"topology.kubernetes.io/zone", "z1"}}}}}});
    api_.seed(kNodes, {{"metadata", {{"name", "node-2"}}}});
  }

  ~EndpointSliceControllerTest() override {
    if (controller_) controller_->stop();
    informers_.stop();
  }

  static ControllerOptions options() {
    ControllerOptions o;
    o.workers = 2;
    return o;
  }

  void start() {
    controller_ = new_endpointslice_controller(ctx_);
    informers_.start();
    controller_->start();
  }

  std::vector<Json> slices(const std::string& service = "web") {
    std::vector<Json> out;
    client::ListOptions o;
    o.label_selector = "kubernetes.io/service-name=" + service;
    auto list = api_.list(kEndpointSlices, "default", o);
    if (!list.is_ok()) return out;
    for (auto& s : list.value()["items"]) out.push_back(s);
    return out;
  }

  size_t endpoint_total(const std::string& service = "web") {
    size_t n = 0;
    for (const auto& s : slices(service)) n += s.value("endpoints", Json::array()).size();
    return n;
  }

  // The endpoint of `pod` (a copy), or null.
  static Json endpoint_for(const std::vector<Json>& slices, const std::string& pod) {
    for (const auto& s : slices) {
      for (const auto& e : s.value("endpoints", Json::array())) {
        if (e["targetRef"]["name"] == pod) return e;
      }
    }
    return Json();
  }

  std::unique_ptr<Controller> controller_;
};

TEST_F(EndpointSliceControllerTest, OneSliceWithConditionsLabelsAndOwner) {
  Json svc = api_.seed(kServices, web_service());
  api_.seed(kPods, make_pod("a", "10.42.0.5", true));
  api_.seed(kPods, make_pod("b", "10.42.0.4", false, {{"app", "web"}}, "node-2"));
  Json going = make_pod("going", "10.42.0.8", true);
  going["metadata"]["deletionTimestamp"] = "2026-01-01T00:01:00Z";
  api_.seed(kPods, going);
  Json done = make_pod("done", "10.42.0.9", true);
  done["status"]["phase"] = "Failed";
  api_.seed(kPods, done);
  start();

  ASSERT_TRUE(eventually([&] { return endpoint_total() == 3; }));
  auto all = slices();
  ASSERT_EQ(all.size(), 1u);
  const Json& s = all[0];
  EXPECT_EQ(s["addressType"], "IPv4");
  EXPECT_EQ(s["metadata"]["generateName"], "web-");
  EXPECT_EQ(s["metadata"]["labels"]["kubernetes.io/service-name"], "web");
  EXPECT_EQ(s["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"],
            "endpointslice-controller.k8s.io");
  EXPECT_EQ(s["metadata"]["labels"]["team"], "shop");
  EXPECT_FALSE(s["metadata"]["labels"].contains("service.kubernetes.io/headless"));
  const Json& owner = s["metadata"]["ownerReferences"][0];
  EXPECT_EQ(owner["kind"], "Service");
  EXPECT_EQ(owner["apiVersion"], "v1");
  EXPECT_EQ(owner["uid"], svc["metadata"]["uid"]);
  EXPECT_TRUE(owner["controller"].get<bool>());
  EXPECT_EQ(s["ports"], Json::parse(R"([{"name":"http","port":8080,"protocol":"TCP"}])"));
  EXPECT_EQ(s["metadata"]["annotations"]["endpoints.kubernetes.io/last-change-trigger-time"],
            "2026-01-01T00:00:00Z");

  Json a_ep = endpoint_for(all, "a");
  ASSERT_FALSE(a_ep.is_null());
  const Json* a = &a_ep;
  EXPECT_EQ((*a)["addresses"], Json({"10.42.0.5"}));
  EXPECT_EQ((*a)["conditions"],
            Json::parse(R"({"ready":true,"serving":true,"terminating":false})"));
  EXPECT_EQ((*a)["nodeName"], "node-1");
  EXPECT_EQ((*a)["zone"], "z1");
  EXPECT_EQ((*a)["targetRef"]["kind"], "Pod");
  Json b_ep = endpoint_for(all, "b");
  ASSERT_FALSE(b_ep.is_null());
  const Json* b = &b_ep;
  EXPECT_EQ((*b)["conditions"],
            Json::parse(R"({"ready":false,"serving":false,"terminating":false})"));
  EXPECT_FALSE(b->contains("zone"));
  Json g_ep = endpoint_for(all, "going");
  ASSERT_FALSE(g_ep.is_null());
  const Json* g = &g_ep;
  EXPECT_EQ((*g)["conditions"],
            Json::parse(R"({"ready":false,"serving":true,"terminating":true})"));
  EXPECT_TRUE(endpoint_for(all, "done").is_null());
}

TEST_F(EndpointSliceControllerTest, SplitsAtOneHundredAndUpdatesInPlace) {
  api_.seed(kServices, web_service());
  for (int i = 0; i < 250; ++i) api_.seed(kPods, make_pod("p" + std::to_string(i), ip_of(i), true));
  start();
  ASSERT_TRUE(eventually([&] { return endpoint_total() == 250; }));
  auto all = slices();
  ASSERT_EQ(all.size(), 3u);
  std::multiset<size_t> sizes;
  std::set<std::string> names;
  for (const auto& s : all) {
    sizes.insert(s["endpoints"].size());
    names.insert(s["metadata"]["name"].get<std::string>());
  }
  EXPECT_EQ(sizes, (std::multiset<size_t>{50, 100, 100}));

  // One pod turns not ready: exactly one slice is rewritten, in place.
  api_.clear_actions();
  Json p = api_.get(kPods, "default", "p7").value();
  p["status"]["conditions"][0]["status"] = "False";
  api_.seed(kPods, p);
  ASSERT_TRUE(eventually([&] {
    Json e = endpoint_for(slices(), "p7");
    return !e.is_null() && e["conditions"]["ready"] == false;
  }));
  EXPECT_EQ(api_.actions("update", "endpointslices.discovery.k8s.io").size(), 1u);
  EXPECT_TRUE(api_.actions("create", "endpointslices.discovery.k8s.io").empty());
  EXPECT_TRUE(api_.actions("delete", "endpointslices.discovery.k8s.io").empty());

  // A new pod fits the slice with room (50) without touching the full ones.
  api_.clear_actions();
  api_.seed(kPods, make_pod("new", "10.42.9.9", true));
  ASSERT_TRUE(eventually([&] { return endpoint_total() == 251; }));
  auto updates = api_.actions("update", "endpointslices.discovery.k8s.io");
  ASSERT_EQ(updates.size(), 1u);
  EXPECT_EQ(updates[0].object["endpoints"].size(), 51u);
  EXPECT_TRUE(api_.actions("create", "endpointslices.discovery.k8s.io").empty());
  std::set<std::string> names_after;
  for (const auto& s : slices()) names_after.insert(s["metadata"]["name"].get<std::string>());
  EXPECT_EQ(names, names_after);

  // Removing pods empties slices, which are deleted; the endpoints left stay where they are.
  api_.clear_actions();
  for (int i = 0; i < 250; ++i)
    ASSERT_TRUE(api_.remove(kPods, "default", "p" + std::to_string(i)).is_ok());
  ASSERT_TRUE(eventually([&] { return endpoint_total() == 1 && slices().size() == 1; }));
  EXPECT_TRUE(api_.actions("create", "endpointslices.discovery.k8s.io").empty());
}

TEST_F(EndpointSliceControllerTest, NoWritesWhenNothingChanged) {
  api_.seed(kServices, web_service());
  api_.seed(kPods, make_pod("a", "10.42.0.5", true));
  start();
  ASSERT_TRUE(eventually([&] { return endpoint_total() == 1; }));
  api_.clear_actions();
  // A Service change that touches no endpoint is synced and writes nothing.
  Json svc = api_.get(kServices, "default", "web").value();
  svc["metadata"]["annotations"] = {{"note", "x"}};
  api_.seed(kServices, svc);
  EXPECT_TRUE(stays([&] { return api_.actions().empty(); }, 300ms));
  api_.seed(kPods, make_pod("b", "10.42.0.6", true));
  ASSERT_TRUE(eventually([&] { return endpoint_total() == 2; }));
  EXPECT_EQ(api_.actions().size(), 1u);
}

TEST_F(EndpointSliceControllerTest, PlaceholderWhenNoEndpointsAndPortGroups) {
  api_.seed(kServices, web_service());
  start();
  ASSERT_TRUE(eventually([&] { return slices().size() == 1; }));
  Json placeholder = slices()[0];
  EXPECT_TRUE(placeholder["endpoints"].empty());
  EXPECT_TRUE(placeholder["ports"].empty());

  // The first pod reuses the placeholder rather than creating another slice.
  api_.seed(kPods, make_pod("a", "10.42.0.5", true));
  ASSERT_TRUE(eventually([&] { return endpoint_total() == 1; }));
  ASSERT_EQ(slices().size(), 1u);
  EXPECT_EQ(slices()[0]["metadata"]["name"], placeholder["metadata"]["name"]);
  EXPECT_EQ(slices()[0]["ports"][0]["port"], 8080);

  // A pod without the named port lands in a slice of its own (no ports).
  Json odd = make_pod("odd", "10.42.0.6", true);
  odd["spec"]["containers"][0]["ports"] = Json::array();
  api_.seed(kPods, odd);
  ASSERT_TRUE(eventually([&] { return slices().size() == 2 && endpoint_total() == 2; }));
  for (const auto& s : slices()) {
    if (s["endpoints"][0]["targetRef"]["name"] == "odd") {
      EXPECT_TRUE(s["ports"].empty());
    } else {
      EXPECT_EQ(s["ports"].size(), 1u);
    }
  }

  // Everything gone: back to one placeholder.
  ASSERT_TRUE(api_.remove(kPods, "default", "a").is_ok());
  ASSERT_TRUE(api_.remove(kPods, "default", "odd").is_ok());
  ASSERT_TRUE(eventually([&] { return slices().size() == 1 && endpoint_total() == 0; }));
}

TEST_F(EndpointSliceControllerTest, HeadlessSelectorlessAndForeignSlices) {
  Json headless = {{"metadata", {{"namespace", "default"}, {"name", "db"}}},
                   {"spec", {{"selector", {{"app", "db"}}}, {"clusterIP", "None"}}}};
  api_.seed(kServices, headless);
  Json db0 = make_pod("db-0", "10.42.0.20", true, {{"app", "db"}});
  db0["spec"]["hostname"] = "db-0";
  db0["spec"]["subdomain"] = "db";
  api_.seed(kPods, db0);
  Json manual = {{"metadata", {{"namespace", "default"}, {"name", "manual"}}},
                 {"spec", {{"clusterIP", "10.43.0.12"}, {"ports", {{{"port", 80}}}}}}};
  api_.seed(kServices, manual);
  // A slice someone else manages for the selector-less Service.
  api_.seed(kEndpointSlices, Json::parse(R"({
    "metadata": {"namespace": "default", "name": "manual-1",
                 "labels": {"kubernetes.io/service-name": "manual"}},
    "addressType": "IPv4",
    "endpoints": [{"addresses": ["192.168.0.1"]}]})"));
  start();
  ASSERT_TRUE(eventually([&] { return endpoint_total("db") == 1; }));
  auto db = slices("db");
  ASSERT_EQ(db.size(), 1u);
  EXPECT_EQ(db[0]["metadata"]["labels"]["service.kubernetes.io/headless"], "");
  EXPECT_EQ(db[0]["endpoints"][0]["hostname"], "db-0");
  EXPECT_TRUE(db[0]["ports"].empty());
  // Give the controller time to (wrongly) act on the manual Service: it must not.
  api_.seed(kPods, make_pod("x", "10.42.0.30", true, {{"app", "db"}}));
  ASSERT_TRUE(eventually([&] { return endpoint_total("db") == 2; }));
  auto manual_slices = slices("manual");
  ASSERT_EQ(manual_slices.size(), 1u);
  EXPECT_EQ(manual_slices[0]["metadata"]["name"], "manual-1");
  for (const auto& a : api_.actions()) EXPECT_NE(a.name, "manual-1") << a.verb;
}

TEST_F(EndpointSliceControllerTest, RecreatesDeletedSlicesAndRetriesFailures) {
  api_.seed(kServices, web_service());
  api_.seed(kPods, make_pod("a", "10.42.0.5", true));
  api_.fail("create", "endpointslices.discovery.k8s.io",
            error(StatusCode::kUnavailable, "try later"), 2);
  start();
  ASSERT_TRUE(eventually([&] { return endpoint_total() == 1; }));
  ASSERT_EQ(slices().size(), 1u);

  // Someone deletes our slice: it comes back.
  std::string name = slices()[0]["metadata"]["name"];
  ASSERT_TRUE(api_.remove(kEndpointSlices, "default", name).is_ok());
  ASSERT_TRUE(eventually([&] {
    auto s = slices();
    return s.size() == 1 && s[0]["metadata"]["name"] != name && s[0]["endpoints"].size() == 1;
  }));

  // A conflicting write is retried.
  api_.fail("update", "endpointslices.discovery.k8s.io",
            error(StatusCode::kAborted, "the object has been modified"), 1);
  api_.seed(kPods, make_pod("b", "10.42.0.6", true));
  ASSERT_TRUE(eventually([&] { return endpoint_total() == 2; }));
  EXPECT_EQ(slices().size(), 1u);
}

TEST_F(EndpointSliceControllerTest, PodsOnUnknownNodesAreLeftOutUntilTheNodeAppears) {
  api_.seed(kServices, web_service());
  api_.seed(kPods, make_pod("a", "10.42.0.5", true));
  api_.seed(kPods, make_pod("b", "10.42.0.6", true, {{"app", "web"}}, "node-3"));
  start();
  ASSERT_TRUE(eventually([&] { return endpoint_total() == 1; }));
  EXPECT_TRUE(endpoint_for(slices(), "b").is_null());
  api_.seed(kNodes, {{"metadata", {{"name", "node-3"}}}});
  ASSERT_TRUE(eventually([&] { return endpoint_total() == 2; }));
}

}  // namespace
}  // namespace skiff::controllers
