// ResourceQuota and LimitRanger admission, through the registry over a memory store.

#include "apiserver/admission.h"

#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "api/schema.h"
#include "apiserver/registry.h"
#include "apiserver/request_info.h"
#include "apiserver/strategies.h"
#include "storage/memory/memory_store.h"

namespace skiff::apiserver {
namespace {

using nlohmann::json;

constexpr char kNs[] = "shop";

class NoStreamResponder final : public Responder {
 public:
  void respond(Response response) override { response_ = std::move(response); }
  std::shared_ptr<ResponseStream> stream(int status, std::string,
                                         std::vector<HttpHeader>) override {
    ADD_FAILURE() << "unexpected stream";
    response_.status = status;
    return nullptr;
  }
  Response response_;
};

struct Reply {
  int status = 0;
  json body;
};

json container(const std::string& name, json requests = json(), json limits = json()) {
  json c = {{"name", name}, {"image", "busybox"}};
  if (!requests.is_null()) c["resources"]["requests"] = std::move(requests);
  if (!limits.is_null()) c["resources"]["limits"] = std::move(limits);
  return c;
}

json pod(const std::string& name, json containers = json::array({container("c")})) {
  return {{"apiVersion", "v1"},
          {"kind", "Pod"},
          {"metadata", {{"name", name}}},
          {"spec", {{"containers", std::move(containers)}}}};
}

class AdmissionTest : public ::testing::Test {
 protected:
  AdmissionTest()
      : store_(storage::new_memory_store({})),
        schema_(api::Schema::builtin()),
        registry_(make_registry()) {
    EXPECT_TRUE(
        registry_
            ->ensure(*schema_.resource("", "v1", "namespaces"), json{{"metadata", {{"name", kNs}}}})
            .is_ok());
  }
  ~AdmissionTest() override { registry_->shutdown(); }

  // Another API server over the same store (its own admission plugins and their locks).
  std::unique_ptr<Registry> make_registry() {
    auto r = std::make_unique<Registry>(*store_, schema_);
    EXPECT_TRUE(install_strategies(*r, StrategyConfig{}).is_ok());
    install_admission(*r);
    return r;
  }

  static Reply serve(Registry& registry, const std::string& method, const std::string& target,
                     const json& body = nullptr,
                     const std::string& content_type = "application/json") {
    Request req;
    req.method = method;
    size_t q = target.find('?');
    req.path = target.substr(0, q);
    if (q != std::string::npos) {
      req.raw_query = target.substr(q + 1);
      req.query = parse_query(req.raw_query);
    }
    req.headers.push_back({"Accept", "application/json"});
    req.headers.push_back({"Content-Type", content_type});
    if (!body.is_null()) req.body = body.dump();
    req.authenticated = true;
    RequestInfo info = parse_request_info(req);
    NoStreamResponder responder;
    registry.handle(info, req, responder);
    Reply reply;
    reply.status = responder.response_.status;
    reply.body = json::parse(responder.response_.body, nullptr, false);
    return reply;
  }
  Reply serve(const std::string& method, const std::string& target, const json& body = nullptr,
              const std::string& content_type = "application/json") {
    return serve(*registry_, method, target, body, content_type);
  }

  static std::string path(const std::string& resource, const std::string& name = "") {
    std::string p = std::string("/api/v1/namespaces/") + kNs + "/" + resource;
    return name.empty() ? p : p + "/" + name;
  }

  Reply create(const std::string& resource, const json& obj, const std::string& query = "") {
    return serve("POST", path(resource) + query, obj);
  }

  // A quota as the controller would have left it: status.hard = spec.hard, status.used given
  // (zero for what is not named).
  void make_quota(const std::string& name, json hard, json used = json::object(),
                  json extra_spec = json::object()) {
    json spec = {{"hard", hard}};
    spec.update(extra_spec);
    Reply r = create("resourcequotas", {{"apiVersion", "v1"},
                                        {"kind", "ResourceQuota"},
                                        {"metadata", {{"name", name}}},
                                        {"spec", spec}});
    ASSERT_EQ(r.status, 201) << r.body.dump();
    json status_used = json::object();
    for (const auto& [resource, value] : hard.items()) {
      status_used[resource] = used.contains(resource) ? used[resource] : json("0");
    }
    set_quota_status(name, hard, status_used);
  }

  void set_quota_status(const std::string& name, json hard, json used) {
    Reply got = serve("GET", path("resourcequotas", name));
    ASSERT_EQ(got.status, 200);
    json q = got.body;
    q["status"] = json::object();
    if (!hard.is_null()) q["status"]["hard"] = hard;
    if (!used.is_null()) q["status"]["used"] = used;
    Reply r = serve("PUT", path("resourcequotas", name) + "/status", q);
    ASSERT_EQ(r.status, 200) << r.body.dump();
  }

  json used(const std::string& quota) {
    Reply r = serve("GET", path("resourcequotas", quota));
    EXPECT_EQ(r.status, 200);
    return r.body["status"].value("used", json());
  }

  void make_limit_range(const std::string& name, json limits) {
    Reply r = create("limitranges", {{"apiVersion", "v1"},
                                     {"kind", "LimitRange"},
                                     {"metadata", {{"name", name}}},
                                     {"spec", {{"limits", limits}}}});
    ASSERT_EQ(r.status, 201) << r.body.dump();
  }

  static void expect_forbidden(const Reply& r, const std::string& message, const std::string& name,
                               const std::string& kind = "pods") {
    EXPECT_EQ(r.status, 403) << r.body.dump();
    EXPECT_EQ(r.body.value("reason", ""), "Forbidden");
    EXPECT_EQ(r.body.value("message", ""), message);
    EXPECT_EQ(r.body["details"].value("name", ""), name);
    EXPECT_EQ(r.body["details"].value("kind", ""), kind);
  }

  bool exists(const std::string& resource, const std::string& name) {
    return serve("GET", path(resource, name)).status == 200;
  }

  std::unique_ptr<storage::Store> store_;
  const api::Schema& schema_;
  std::unique_ptr<Registry> registry_;
};

// ---------------------------------------------------------------------------------------------
// ResourceQuota

TEST_F(AdmissionTest, SecondPodExceedsPodCountWithUpstreamsMessage) {
  make_quota("q", {{"pods", "1"}});
  ASSERT_EQ(create("pods", pod("one")).status, 201);
  EXPECT_EQ(used("q"), json({{"pods", "1"}}));

  Reply r = create("pods", pod("two"));
  expect_forbidden(
      r,
      "pods \"two\" is forbidden: exceeded quota: q, requested: pods=1, used: pods=1, limited: "
      "pods=1",
      "two");
  EXPECT_FALSE(exists("pods", "two"));
  EXPECT_EQ(used("q"), json({{"pods", "1"}}));
}

TEST_F(AdmissionTest, ObjectCountsAndServicesAreCharged) {
  make_quota("objects", {{"count/configmaps", "2"},
                         {"configmaps", "5"},
                         {"services", "2"},
                         {"services.nodeports", "1"}});
  auto configmap = [](const std::string& name) {
    return json{{"apiVersion", "v1"}, {"kind", "ConfigMap"}, {"metadata", {{"name", name}}}};
  };
  ASSERT_EQ(create("configmaps", configmap("a")).status, 201);
  ASSERT_EQ(create("configmaps", configmap("b")).status, 201);
  expect_forbidden(create("configmaps", configmap("c")),
                   "configmaps \"c\" is forbidden: exceeded quota: objects, requested: "
                   "count/configmaps=1, used: count/configmaps=2, limited: count/configmaps=2",
                   "c", "configmaps");
  // Updating a config map changes no usage.
  json a = serve("GET", path("configmaps", "a")).body;
  a["data"] = {{"k", "v"}};
  EXPECT_EQ(serve("PUT", path("configmaps", "a"), a).status, 200);

  auto service = [](const std::string& name, const std::string& type, int ports) {
    json svc = {{"apiVersion", "v1"},
                {"kind", "Service"},
                {"metadata", {{"name", name}}},
                {"spec", {{"type", type}, {"ports", json::array()}}}};
    for (int i = 0; i < ports; ++i) {
      svc["spec"]["ports"].push_back({{"name", "p" + std::to_string(i)}, {"port", 80 + i}});
    }
    return svc;
  };
  expect_forbidden(create("services", service("wide", "NodePort", 2)),
                   "services \"wide\" is forbidden: exceeded quota: objects, requested: "
                   "services.nodeports=2, used: services.nodeports=0, limited: "
                   "services.nodeports=1",
                   "wide", "services");
  ASSERT_EQ(create("services", service("web", "ClusterIP", 1)).status, 201);
  EXPECT_EQ(used("objects")["services"], "1");

  // An update that turns the service into a NodePort one is charged what it adds.
  json web = serve("GET", path("services", "web")).body;
  web["spec"]["type"] = "NodePort";
  web["spec"]["ports"].push_back({{"name", "https"}, {"port", 443}});
  Reply r = serve("PUT", path("services", "web"), web);
  expect_forbidden(r,
                   "services \"web\" is forbidden: exceeded quota: objects, requested: "
                   "services.nodeports=2, used: services.nodeports=0, limited: "
                   "services.nodeports=1",
                   "web", "services");
  web["spec"]["ports"].erase(1);
  r = serve("PUT", path("services", "web"), web);
  ASSERT_EQ(r.status, 200) << r.body.dump();
  EXPECT_EQ(used("objects")["services.nodeports"], "1");
  EXPECT_EQ(used("objects")["services"], "1");  // not charged again
  // A merge patch is an update too.
  r = serve("PATCH", path("services", "web"),
            {{"spec", {{"ports", {{{"name", "a"}, {"port", 80}}, {{"name", "b"}, {"port", 81}}}}}}},
            "application/merge-patch+json");
  EXPECT_EQ(r.status, 403) << r.body.dump();
  EXPECT_EQ(used("objects"), json({{"count/configmaps", "2"},
                                   {"configmaps", "2"},
                                   {"services", "1"},
                                   {"services.nodeports", "1"}}));
}

TEST_F(AdmissionTest, ComputeRequestsAndLimits) {
  make_quota("compute", {{"requests.cpu", "1"}, {"requests.memory", "1Gi"}, {"limits.cpu", "2"}});
  // Quota on cpu and memory makes every container state them.
  expect_forbidden(create("pods", pod("bare", {container("app"), container("side")})),
                   "pods \"bare\" is forbidden: failed quota: compute: must specify limits.cpu "
                   "for: app,side; requests.cpu for: app,side; requests.memory for: app,side",
                   "bare");
  auto sized = [](const std::string& name, const std::string& cpu, const std::string& memory) {
    return pod(name, {container("app", {{"cpu", cpu}, {"memory", memory}}, {{"cpu", "1"}})});
  };
  ASSERT_EQ(create("pods", sized("a", "600m", "256Mi")).status, 201);
  EXPECT_EQ(used("compute"),
            json({{"requests.cpu", "600m"}, {"requests.memory", "256Mi"}, {"limits.cpu", "1"}}));
  expect_forbidden(create("pods", sized("b", "500m", "256Mi")),
                   "pods \"b\" is forbidden: exceeded quota: compute, requested: "
                   "requests.cpu=500m, used: requests.cpu=600m, limited: requests.cpu=1",
                   "b");
  // Every exceeded resource is listed, sorted.
  expect_forbidden(create("pods", sized("c", "2", "2Gi")),
                   "pods \"c\" is forbidden: exceeded quota: compute, requested: "
                   "requests.cpu=2,requests.memory=2Gi, used: "
                   "requests.cpu=600m,requests.memory=256Mi, limited: "
                   "requests.cpu=1,requests.memory=1Gi",
                   "c");
  ASSERT_EQ(create("pods", sized("d", "400m", "768Mi")).status, 201);
  EXPECT_EQ(used("compute"),
            json({{"requests.cpu", "1"}, {"requests.memory", "1Gi"}, {"limits.cpu", "2"}}));
  // A generated name is chosen before the quota is checked: the message names it.
  json generated = sized("", "1m", "1Mi");
  generated["metadata"] = {{"generateName", "gen-"}};
  Reply r = create("pods", generated);
  std::string name = r.body["details"].value("name", "");
  EXPECT_EQ(name.rfind("gen-", 0), 0u) << name;
  expect_forbidden(r,
                   "pods \"" + name +
                       "\" is forbidden: exceeded quota: compute, requested: "
                       "limits.cpu=1,requests.cpu=1m,requests.memory=1Mi, used: "
                       "limits.cpu=2,requests.cpu=1,requests.memory=1Gi, limited: "
                       "limits.cpu=2,requests.cpu=1,requests.memory=1Gi",
                   name);
}

TEST_F(AdmissionTest, ScopedQuotasCountOnlyMatchingPods) {
  make_quota("best-effort", {{"pods", "1"}}, json::object(), {{"scopes", {"BestEffort"}}});
  make_quota("high", {{"pods", "1"}}, json::object(),
             {{"scopeSelector",
               {{"matchExpressions",
                 {{{"scopeName", "PriorityClass"}, {"operator", "In"}, {"values", {"high"}}}}}}}});
  make_quota("scoped-configmaps", {{"count/configmaps", "0"}}, json::object(),
             {{"scopes", {"NotTerminating"}}});
  ASSERT_EQ(create("pods", pod("free")).status, 201);
  expect_forbidden(create("pods", pod("free-2")),
                   "pods \"free-2\" is forbidden: exceeded quota: best-effort, requested: pods=1, "
                   "used: pods=1, limited: pods=1",
                   "free-2");
  // Not best-effort, and no priority class: neither quota applies.
  ASSERT_EQ(create("pods", pod("sized", {container("c", {{"cpu", "100m"}})})).status, 201);
  ASSERT_EQ(serve("POST", "/apis/scheduling.k8s.io/v1/priorityclasses",
                  {{"metadata", {{"name", "high"}}}, {"value", 1000}})
                .status,
            201);
  json important = pod("important", {container("c", {{"cpu", "100m"}})});
  important["spec"]["priorityClassName"] = "high";
  ASSERT_EQ(create("pods", important).status, 201);
  important["metadata"]["name"] = "important-2";
  expect_forbidden(create("pods", important),
                   "pods \"important-2\" is forbidden: exceeded quota: high, requested: pods=1, "
                   "used: pods=1, limited: pods=1",
                   "important-2");
  EXPECT_EQ(used("best-effort"), json({{"pods", "1"}}));
  EXPECT_EQ(used("high"), json({{"pods", "1"}}));
  // Scopes select pods only: a scoped quota counts no config maps.
  EXPECT_EQ(create("configmaps",
                   {{"apiVersion", "v1"}, {"kind", "ConfigMap"}, {"metadata", {{"name", "cm"}}}})
                .status,
            201);
  EXPECT_EQ(used("scoped-configmaps"), json({{"count/configmaps", "0"}}));
}

TEST_F(AdmissionTest, ConcurrentCreatesTakeTheLastSlotOnce) {
  make_quota("q", {{"pods", "3"}}, {{"pods", "2"}});
  // Two API servers over one store: each orders its own writers, the store orders the two.
  std::unique_ptr<Registry> other = make_registry();
  constexpr int kWriters = 16;
  std::atomic<int> created{0};
  std::atomic<int> refused{0};
  std::atomic<int> other_status{0};
  std::vector<std::thread> writers;
  for (int i = 0; i < kWriters; ++i) {
    writers.emplace_back([&, i] {
      Registry& r = i % 2 ? *other : *registry_;
      Reply reply = serve(r, "POST", path("pods"), pod("p" + std::to_string(i)));
      if (reply.status == 201) {
        ++created;
      } else if (reply.status == 403) {
        ++refused;
      } else {
        other_status = reply.status;
      }
    });
  }
  for (auto& t : writers) t.join();
  other->shutdown();
  EXPECT_EQ(created.load(), 1);
  EXPECT_EQ(refused.load(), kWriters - 1);
  EXPECT_EQ(other_status.load(), 0);
  EXPECT_EQ(used("q"), json({{"pods", "3"}}));
  Reply list = serve("GET", path("pods"));
  EXPECT_EQ(list.body["items"].size(), 1u);
}

TEST_F(AdmissionTest, ChargesRetryWhenTheQuotaChangesUnderneath) {
  make_quota("q", {{"pods", "10"}}, {{"pods", "0"}});
  // Another API server's charges land between this one's read and its write: the compare on
  // the quota fails and the charge is recomputed, so none is lost.
  std::unique_ptr<Registry> other = make_registry();
  constexpr int kEach = 5;
  std::thread a([&] {
    for (int i = 0; i < kEach; ++i) {
      EXPECT_EQ(serve(*registry_, "POST", path("pods"), pod("a" + std::to_string(i))).status, 201);
    }
  });
  std::thread b([&] {
    for (int i = 0; i < kEach; ++i) {
      EXPECT_EQ(serve(*other, "POST", path("pods"), pod("b" + std::to_string(i))).status, 201);
    }
  });
  a.join();
  b.join();
  other->shutdown();
  EXPECT_EQ(used("q"), json({{"pods", std::to_string(2 * kEach)}}));
}

TEST_F(AdmissionTest, DryRunChecksButChargesNothing) {
  make_quota("q", {{"pods", "1"}});
  Reply r = create("pods", pod("dry"), "?dryRun=All");
  EXPECT_EQ(r.status, 201) << r.body.dump();
  EXPECT_EQ(used("q"), json({{"pods", "0"}}));
  EXPECT_FALSE(exists("pods", "dry"));
  ASSERT_EQ(create("pods", pod("real")).status, 201);
  expect_forbidden(create("pods", pod("dry-2"), "?dryRun=All"),
                   "pods \"dry-2\" is forbidden: exceeded quota: q, requested: pods=1, used: "
                   "pods=1, limited: pods=1",
                   "dry-2");
  EXPECT_EQ(used("q"), json({{"pods", "1"}}));
}

TEST_F(AdmissionTest, QuotaWithoutUsageForWhatItLimitsRefuses) {
  // status.hard names resources status.used does not account for yet.
  Reply r = create("resourcequotas", {{"apiVersion", "v1"},
                                      {"kind", "ResourceQuota"},
                                      {"metadata", {{"name", "fresh"}}},
                                      {"spec", {{"hard", {{"pods", "5"}, {"count/pods", "5"}}}}}});
  ASSERT_EQ(r.status, 201);
  // Before the controller has looked at it, a quota limits nothing (as upstream, which
  // enforces status.hard).
  ASSERT_EQ(create("pods", pod("early")).status, 201);
  set_quota_status("fresh", {{"pods", "5"}, {"count/pods", "5"}}, {{"pods", "1"}});
  expect_forbidden(create("pods", pod("late")),
                   "pods \"late\" is forbidden: status unknown for quota: fresh, resources: "
                   "count/pods,pods",
                   "late");
  set_quota_status("fresh", {{"pods", "5"}, {"count/pods", "5"}},
                   {{"pods", "1"}, {"count/pods", "1"}});
  ASSERT_EQ(create("pods", pod("late")).status, 201);
  EXPECT_EQ(used("fresh"), json({{"pods", "2"}, {"count/pods", "2"}}));
}

TEST_F(AdmissionTest, ClaimResizeIsCharged) {
  make_quota("storage", {{"requests.storage", "3Gi"}, {"persistentvolumeclaims", "2"}});
  json claim = {
      {"apiVersion", "v1"},
      {"kind", "PersistentVolumeClaim"},
      {"metadata", {{"name", "data"}}},
      {"spec",
       {{"accessModes", {"ReadWriteOnce"}}, {"resources", {{"requests", {{"storage", "1Gi"}}}}}}}};
  ASSERT_EQ(create("persistentvolumeclaims", claim).status, 201);
  Reply r = serve("PATCH", path("persistentvolumeclaims", "data"),
                  {{"spec", {{"resources", {{"requests", {{"storage", "5Gi"}}}}}}}},
                  "application/merge-patch+json");
  expect_forbidden(r,
                   "persistentvolumeclaims \"data\" is forbidden: exceeded quota: storage, "
                   "requested: requests.storage=4Gi, used: requests.storage=1Gi, limited: "
                   "requests.storage=3Gi",
                   "data", "persistentvolumeclaims");
  r = serve("PATCH", path("persistentvolumeclaims", "data"),
            {{"spec", {{"resources", {{"requests", {{"storage", "2Gi"}}}}}}}},
            "application/merge-patch+json");
  ASSERT_EQ(r.status, 200) << r.body.dump();
  EXPECT_EQ(used("storage"), json({{"persistentvolumeclaims", "1"}, {"requests.storage", "2Gi"}}));
}

// ---------------------------------------------------------------------------------------------
// LimitRanger

TEST_F(AdmissionTest, LimitRangeDefaultsContainersAndAnnotatesThePod) {
  make_limit_range("defaults", {{{"type", "Container"},
                                 {"default", {{"cpu", "500m"}, {"memory", "256Mi"}}},
                                 {"defaultRequest", {{"cpu", "100m"}}}}});
  // The LimitRange itself got upstream's defaults: the memory request defaults to the limit.
  Reply lr = serve("GET", path("limitranges", "defaults"));
  EXPECT_EQ(lr.body["spec"]["limits"][0]["defaultRequest"],
            json({{"cpu", "100m"}, {"memory", "256Mi"}}));

  json p = pod("p", {container("bare"), container("half", {{"cpu", "200m"}}),
                     container("limited", json(), {{"cpu", "2"}})});
  p["spec"]["initContainers"] = {container("init")};
  Reply r = create("pods", p);
  ASSERT_EQ(r.status, 201) << r.body.dump();
  const json& spec = r.body["spec"];
  EXPECT_EQ(spec["containers"][0]["resources"],
            json({{"requests", {{"cpu", "100m"}, {"memory", "256Mi"}}},
                  {"limits", {{"cpu", "500m"}, {"memory", "256Mi"}}}}));
  EXPECT_EQ(spec["containers"][1]["resources"]["requests"],
            json({{"cpu", "200m"}, {"memory", "256Mi"}}));
  // Requests default to the container's own limits first, as upstream's pod defaulting does.
  EXPECT_EQ(spec["containers"][2]["resources"],
            json({{"requests", {{"cpu", "2"}, {"memory", "256Mi"}}},
                  {"limits", {{"cpu", "2"}, {"memory", "256Mi"}}}}));
  EXPECT_EQ(spec["initContainers"][0]["resources"]["limits"],
            json({{"cpu", "500m"}, {"memory", "256Mi"}}));
  EXPECT_EQ(r.body["metadata"]["annotations"]["kubernetes.io/limit-ranger"],
            "LimitRanger plugin set: cpu, memory request for container bare; cpu, memory limit "
            "for container bare; memory request for container half; cpu, memory limit for "
            "container half; memory request for container limited; memory limit for container "
            "limited; cpu, memory request for init container init; cpu, memory limit for init "
            "container init");
  // The status reflects the defaulted resources.
  EXPECT_EQ(r.body["status"]["qosClass"], "Burstable");

  // Nothing to set: no annotation.
  json full =
      pod("full",
          {container("c", {{"cpu", "1"}, {"memory", "1Gi"}}, {{"cpu", "1"}, {"memory", "1Gi"}})});
  r = create("pods", full);
  ASSERT_EQ(r.status, 201);
  EXPECT_FALSE(r.body["metadata"].contains("annotations"));
  EXPECT_EQ(r.body["status"]["qosClass"], "Guaranteed");
}

TEST_F(AdmissionTest, LimitRangeViolationsAreForbidden) {
  // LimitRanges are checked one at a time, by name; the first one violated is reported.
  make_limit_range("bounds", {{{"type", "Container"},
                               {"max", {{"cpu", "1"}}},
                               {"min", {{"memory", "64Mi"}}},
                               {"maxLimitRequestRatio", {{"cpu", "2"}}}}});
  make_limit_range("per-pod", {{{"type", "Pod"}, {"max", {{"cpu", "1500m"}}}}});
  // Container max; the default limit is the max (1), the default request the limit.
  expect_forbidden(create("pods", pod("p", {container("c", {{"memory", "128Mi"}},
                                                      {{"cpu", "2"}, {"memory", "128Mi"}})})),
                   "pods \"p\" is forbidden: maximum cpu usage per Container is 1, but limit is 2",
                   "p");
  expect_forbidden(create("pods", pod("small", {container("c", {{"memory", "32Mi"}})})),
                   "pods \"small\" is forbidden: minimum memory usage per Container is 64Mi, but "
                   "request is 32Mi",
                   "small");
  expect_forbidden(create("pods", pod("ratio", {container("c", {{"cpu", "100m"}})})),
                   "pods \"ratio\" is forbidden: cpu max limit to request ratio per Container is "
                   "2, but provided ratio is 10.000000",
                   "ratio");
  // Several at once: de-duplicated and bracketed.
  expect_forbidden(
      create("pods", pod("both", {container("c", {{"cpu", "100m"}, {"memory", "1Mi"}})})),
      "pods \"both\" is forbidden: [minimum memory usage per Container is 64Mi, but request is "
      "1Mi, cpu max limit to request ratio per Container is 2, but provided ratio is 10.000000]",
      "both");
  // The Pod item bounds the containers' sum.
  json two = pod("two", {container("a", {{"cpu", "800m"}}), container("b", {{"cpu", "800m"}})});
  expect_forbidden(create("pods", two),
                   "pods \"two\" is forbidden: maximum cpu usage per Pod is 1500m, but limit is 2",
                   "two");
  Reply ok = create("pods", pod("fits", {container("c", {{"cpu", "600m"}})}));
  ASSERT_EQ(ok.status, 201) << ok.body.dump();
  EXPECT_EQ(ok.body["spec"]["containers"][0]["resources"]["limits"], json({{"cpu", "1"}}));
  EXPECT_FALSE(exists("pods", "p"));
}

TEST_F(AdmissionTest, LimitRangeBoundsClaims) {
  make_limit_range("storage", {{{"type", "PersistentVolumeClaim"},
                                {"min", {{"storage", "1Gi"}}},
                                {"max", {{"storage", "2Gi"}}}}});
  auto claim = [](const std::string& name, const std::string& size) {
    return json{
        {"apiVersion", "v1"},
        {"kind", "PersistentVolumeClaim"},
        {"metadata", {{"name", name}}},
        {"spec",
         {{"accessModes", {"ReadWriteOnce"}}, {"resources", {{"requests", {{"storage", size}}}}}}}};
  };
  expect_forbidden(create("persistentvolumeclaims", claim("big", "5Gi")),
                   "persistentvolumeclaims \"big\" is forbidden: maximum storage usage per "
                   "PersistentVolumeClaim is 2Gi, but request is 5Gi",
                   "big", "persistentvolumeclaims");
  expect_forbidden(create("persistentvolumeclaims", claim("tiny", "100Mi")),
                   "persistentvolumeclaims \"tiny\" is forbidden: minimum storage usage per "
                   "PersistentVolumeClaim is 1Gi, but request is 100Mi",
                   "tiny", "persistentvolumeclaims");
  ASSERT_EQ(create("persistentvolumeclaims", claim("ok", "1Gi")).status, 201);
  // Updates are held to the same bounds.
  Reply r = serve("PATCH", path("persistentvolumeclaims", "ok"),
                  {{"spec", {{"resources", {{"requests", {{"storage", "3Gi"}}}}}}}},
                  "application/merge-patch+json");
  EXPECT_EQ(r.status, 403) << r.body.dump();
}

TEST_F(AdmissionTest, LimitRangeDefaultsSatisfyAComputeQuota) {
  make_limit_range("defaults",
                   {{{"type", "Container"}, {"default", {{"cpu", "200m"}, {"memory", "128Mi"}}}}});
  make_quota("compute", {{"requests.cpu", "300m"}, {"limits.memory", "1Gi"}});
  Reply r = create("pods", pod("a"));
  ASSERT_EQ(r.status, 201) << r.body.dump();
  EXPECT_EQ(used("compute"), json({{"requests.cpu", "200m"}, {"limits.memory", "128Mi"}}));
  expect_forbidden(create("pods", pod("b")),
                   "pods \"b\" is forbidden: exceeded quota: compute, requested: "
                   "requests.cpu=200m, used: requests.cpu=200m, limited: requests.cpu=300m",
                   "b");
}

// ---------------------------------------------------------------------------------------------
// Priority

constexpr char kClasses[] = "/apis/scheduling.k8s.io/v1/priorityclasses";

json priority_class(const std::string& name, int64_t value, json extra = json::object()) {
  json pc = {{"apiVersion", "scheduling.k8s.io/v1"},
             {"kind", "PriorityClass"},
             {"metadata", {{"name", name}}},
             {"value", value}};
  pc.update(extra);
  return pc;
}

json with_spec(json obj, const json& fields) {
  obj["spec"].update(fields);
  return obj;
}

TEST_F(AdmissionTest, PodsTakeThePriorityOfTheirClass) {
  ASSERT_EQ(
      serve("POST", kClasses, priority_class("high", 1000, {{"preemptionPolicy", "Never"}})).status,
      201);
  Reply r = create("pods", with_spec(pod("p"), {{"priorityClassName", "high"}}));
  ASSERT_EQ(r.status, 201) << r.body.dump();
  EXPECT_EQ(r.body["spec"]["priority"], 1000);
  EXPECT_EQ(r.body["spec"]["preemptionPolicy"], "Never");

  // Without a class and without a default class: 0, and the default policy.
  r = create("pods", pod("plain"));
  ASSERT_EQ(r.status, 201) << r.body.dump();
  EXPECT_EQ(r.body["spec"]["priority"], 0);
  EXPECT_EQ(r.body["spec"]["preemptionPolicy"], "PreemptLowerPriority");
  EXPECT_FALSE(r.body["spec"].contains("priorityClassName"));

  // A replacement that leaves them out keeps what the pod was admitted with.
  Reply got = serve("GET", path("pods", "p"));
  json next = got.body;
  next["spec"].erase("priority");
  next["spec"].erase("preemptionPolicy");
  next["metadata"]["labels"]["tier"] = "web";
  r = serve("PUT", path("pods", "p"), next);
  ASSERT_EQ(r.status, 200) << r.body.dump();
  EXPECT_EQ(r.body["spec"]["priority"], 1000);
  EXPECT_EQ(r.body["spec"]["preemptionPolicy"], "Never");
}

TEST_F(AdmissionTest, UnknownClassOrAContradictingPriorityIsForbidden) {
  expect_forbidden(create("pods", with_spec(pod("p"), {{"priorityClassName", "nope"}})),
                   "pods \"p\" is forbidden: no PriorityClass with name nope was found", "p");
  EXPECT_FALSE(exists("pods", "p"));

  ASSERT_EQ(serve("POST", kClasses, priority_class("high", 1000)).status, 201);
  expect_forbidden(
      create("pods", with_spec(pod("p"), {{"priorityClassName", "high"}, {"priority", 5}})),
      "pods \"p\" is forbidden: the integer value of priority (5) must not be provided in pod "
      "spec; priority admission controller computed 1000 from the given PriorityClass name",
      "p");
  expect_forbidden(create("pods", with_spec(pod("p"), {{"priorityClassName", "high"},
                                                       {"preemptionPolicy", "Never"}})),
                   "pods \"p\" is forbidden: the string value of PreemptionPolicy (Never) must not "
                   "be provided in pod spec; priority admission controller computed "
                   "PreemptLowerPriority from the given PriorityClass name",
                   "p");
  EXPECT_FALSE(exists("pods", "p"));
  // Stating what the class says is fine.
  EXPECT_EQ(create("pods", with_spec(pod("p"), {{"priorityClassName", "high"}, {"priority", 1000}}))
                .status,
            201);
}

TEST_F(AdmissionTest, OneGlobalDefaultClassAppliesToPodsWithoutAClass) {
  Reply before = create("pods", pod("before"));
  ASSERT_EQ(before.status, 201) << before.body.dump();
  EXPECT_FALSE(before.body["spec"].contains("priorityClassName"));
  ASSERT_EQ(serve("POST", kClasses, priority_class("def", 50, {{"globalDefault", true}})).status,
            201);
  Reply r = create("pods", pod("p"));
  ASSERT_EQ(r.status, 201) << r.body.dump();
  EXPECT_EQ(r.body["spec"]["priorityClassName"], "def");
  EXPECT_EQ(r.body["spec"]["priority"], 50);

  expect_forbidden(
      serve("POST", kClasses, priority_class("other", 60, {{"globalDefault", true}})),
      "priorityclasses.scheduling.k8s.io \"other\" is forbidden: PriorityClass def is already "
      "marked as default. Only one default can exist",
      "other", "priorityclasses");
  EXPECT_EQ(serve("GET", std::string(kClasses) + "/other").status, 404);
  // The default itself may be updated, and another class may be made default once it is not.
  Reply def = serve("GET", std::string(kClasses) + "/def");
  def.body["description"] = "the default";
  EXPECT_EQ(serve("PUT", std::string(kClasses) + "/def", def.body).status, 200);
  def = serve("GET", std::string(kClasses) + "/def");
  def.body["globalDefault"] = false;
  EXPECT_EQ(serve("PUT", std::string(kClasses) + "/def", def.body).status, 200);
  EXPECT_EQ(serve("POST", kClasses, priority_class("other", 60, {{"globalDefault", true}})).status,
            201);
  // New pods follow the change of default.
  Reply after = create("pods", pod("after"));
  ASSERT_EQ(after.status, 201) << after.body.dump();
  EXPECT_EQ(after.body["spec"]["priorityClassName"], "other");
  EXPECT_EQ(after.body["spec"]["priority"], 60);
}

TEST_F(AdmissionTest, PriorityClassValidationAsUpstream) {
  auto invalid = [&](const json& pc, const std::string& field, const std::string& message) {
    Reply r = serve("POST", kClasses, pc);
    EXPECT_EQ(r.status, 422) << r.body.dump();
    ASSERT_TRUE(r.body["details"]["causes"].is_array()) << r.body.dump();
    EXPECT_EQ(r.body["details"]["causes"][0].value("field", ""), field);
    EXPECT_NE(r.body["details"]["causes"][0].value("message", "").find(message), std::string::npos)
        << r.body.dump();
  };
  invalid(priority_class("huge", 1000000001), "value",
          "maximum allowed value of a user defined priority is 1000000000");
  invalid(priority_class("system-mine", 10), "metadata.name",
          "system-mine is not a known system priority class");
  invalid(priority_class("system-node-critical", 5), "metadata.name",
          "value of system-node-critical PriorityClass must be 2000001000");
  invalid(priority_class("odd", 5, {{"preemptionPolicy", "Sometimes"}}), "preemptionPolicy",
          "Unsupported value");
  json no_value = priority_class("none", 0);
  no_value.erase("value");
  invalid(no_value, "value", "Required value");

  // The known system classes are accepted as they are, and cannot be deleted.
  ASSERT_EQ(serve("POST", kClasses, priority_class("system-node-critical", 2000001000)).status,
            201);
  Reply del = serve("DELETE", std::string(kClasses) + "/system-node-critical");
  EXPECT_EQ(del.status, 403) << del.body.dump();
  EXPECT_EQ(del.body.value("message", ""),
            "priorityclasses.scheduling.k8s.io \"system-node-critical\" is forbidden: this is a "
            "system priority class and cannot be deleted");
  EXPECT_EQ(serve("GET", std::string(kClasses) + "/system-node-critical").status, 200);

  // Value and policy are fixed once written; a user class can be deleted.
  ASSERT_EQ(serve("POST", kClasses, priority_class("mine", 10)).status, 201);
  Reply got = serve("GET", std::string(kClasses) + "/mine");
  EXPECT_EQ(got.body["preemptionPolicy"], "PreemptLowerPriority");
  json changed = got.body;
  changed["value"] = 11;
  Reply r = serve("PUT", std::string(kClasses) + "/mine", changed);
  EXPECT_EQ(r.status, 422) << r.body.dump();
  changed = got.body;
  changed["preemptionPolicy"] = "Never";
  EXPECT_EQ(serve("PUT", std::string(kClasses) + "/mine", changed).status, 422);
  EXPECT_EQ(serve("DELETE", std::string(kClasses) + "/mine").status, 200);
}

}  // namespace
}  // namespace skiff::apiserver
