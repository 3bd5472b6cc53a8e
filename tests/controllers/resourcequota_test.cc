#include <gtest/gtest.h>

#include <thread>

#include "client/fake_api_client.h"
#include "controller_test_util.h"
#include "controllers/resourcequota/resourcequota_controller.h"

namespace skiff::controllers {
namespace {

using client::FakeApiClient;
using testing::ControllerTest;
using testing::eventually;
using namespace client::resources;
using namespace std::chrono_literals;

const client::Resource kRoles{"rbac.authorization.k8s.io", "v1", "roles", "Role", true};

Json container(Json requests, Json limits = Json()) {
  Json c = {{"name", "c"}, {"image", "busybox"}, {"resources", Json::object()}};
  if (!requests.is_null()) c["resources"]["requests"] = requests;
  if (!limits.is_null()) c["resources"]["limits"] = limits;
  return c;
}

Json pod(const std::string& name, Json containers, Json init = Json(),
         const std::string& phase = "Running") {
  Json p = {{"metadata", {{"namespace", "shop"}, {"name", name}}},
            {"spec", {{"containers", containers}}},
            {"status", {{"phase", phase}}}};
  if (!init.is_null()) p["spec"]["initContainers"] = init;
  return p;
}

std::string canonical(const client::Json& list, const std::string& name) {
  return list.contains(name) ? list[name].get<std::string>() : "<absent>";
}

class ResourceQuotaTest : public ControllerTest<> {
 protected:
  ResourceQuotaTest() : ControllerTest(options()) {}

  ~ResourceQuotaTest() override {
    if (controller_) controller_->stop();
    informers_.stop();
  }

  static ControllerOptions options() {
    ControllerOptions o;
    o.resource_quota_sync_period = 100ms;
    o.workers = 2;
    return o;
  }

  void start() {
    controller_ = new_resourcequota_controller(ctx_);
    informers_.start();
    controller_->start();
    ASSERT_TRUE(informers_.wait_for_sync(5s));
  }

  void seed_quota(const std::string& name, Json hard, Json extra_spec = Json::object()) {
    Json spec = {{"hard", hard}};
    spec.update(extra_spec);
    api_.seed(kResourceQuotas,
              {{"metadata", {{"namespace", "shop"}, {"name", name}}}, {"spec", spec}});
  }

  void seed(const client::Resource& r, const std::string& name, Json spec = Json::object(),
            const std::string& ns = "shop") {
    api_.seed(r, {{"metadata", {{"namespace", ns}, {"name", name}}}, {"spec", spec}});
  }

  Json status(const std::string& name) {
    return api_.get(kResourceQuotas, "shop", name).value().value("status", Json::object());
  }

  std::string used(const std::string& quota, const std::string& resource) {
    Json s = status(quota);
    return s.contains("used") ? canonical(s["used"], resource) : "<no status>";
  }

  // Waits until status.used has exactly `want`.
  bool used_becomes(const std::string& quota, const Json& want) {
    return eventually([&] { return status(quota).value("used", Json()) == want; });
  }

  std::unique_ptr<Controller> controller_;
};

TEST_F(ResourceQuotaTest, SumsComputeResourcesOfLivePods) {
  seed_quota("compute", {{"pods", "10"},
                         {"count/pods", "20"},
                         {"requests.cpu", "4"},
                         {"requests.memory", "8Gi"},
                         {"limits.cpu", "8000m"},
                         {"limits.memory", "16Gi"},
                         {"cpu", "4"},
                         {"memory", "8Gi"}});
  api_.seed(kPods, pod("a", {container({{"cpu", "250m"}, {"memory", "256Mi"}},
                                       {{"cpu", "500m"}, {"memory", "512Mi"}}),
                             container({{"cpu", "250m"}, {"memory", "256Mi"}},
                                       {{"cpu", "500m"}, {"memory", "512Mi"}})}));
  // Limits only: requests default to them.
  api_.seed(kPods, pod("b", {container(Json(), {{"cpu", "1"}, {"memory", "1Gi"}})}));
  // Finished: counted as an object only.
  api_.seed(kPods, pod("c", {container({{"cpu", "1"}})}, Json(), "Succeeded"));
  // An init container asks for more than the containers.
  api_.seed(kPods, pod("d", {container({{"cpu", "100m"}, {"memory", "128Mi"}})},
                       {container({{"cpu", "2"}, {"memory", "64Mi"}})}, "Pending"));
  // Another namespace does not count.
  Json elsewhere = pod("e", {container({{"cpu", "3"}})});
  elsewhere["metadata"]["namespace"] = "other";
  api_.seed(kPods, elsewhere);
  start();

  ASSERT_TRUE(used_becomes("compute", {{"pods", "3"},
                                       {"count/pods", "4"},
                                       {"requests.cpu", "3500m"},
                                       {"requests.memory", "1664Mi"},
                                       {"limits.cpu", "2"},
                                       {"limits.memory", "2Gi"},
                                       {"cpu", "3500m"},
                                       {"memory", "1664Mi"}}))
      << status("compute").dump();
  // status.hard mirrors spec.hard, in canonical form.
  Json hard = status("compute")["hard"];
  EXPECT_EQ(hard["limits.cpu"], "8");
  EXPECT_EQ(hard["requests.memory"], "8Gi");
  EXPECT_EQ(hard.size(), 8u);
}

TEST_F(ResourceQuotaTest, CountsObjectsServicesAndClaims) {
  seed_quota("objects", {{"configmaps", "10"},
                         {"count/configmaps", "10"},
                         {"secrets", "5"},
                         {"count/deployments.apps", "3"},
                         {"count/jobs.batch", "3"},
                         {"count/roles.rbac.authorization.k8s.io", "3"},
                         {"resourcequotas", "1"},
                         {"services", "5"},
                         {"services.nodeports", "4"},
                         {"services.loadbalancers", "2"},
                         {"persistentvolumeclaims", "2"},
                         {"requests.storage", "10Gi"},
                         {"fast.storageclass.storage.k8s.io/requests.storage", "5Gi"},
                         {"example.com/unknown", "1"}});
  seed(kConfigMaps, "a");
  seed(kConfigMaps, "b");
  seed(kConfigMaps, "c", Json::object(), "other");
  seed(kSecrets, "token");
  seed(kDeployments, "web");
  seed(kRoles, "reader");
  seed(kServices, "cluster", {{"type", "ClusterIP"}, {"ports", {{{"port", 80}}}}});
  seed(kServices, "node", {{"type", "NodePort"}, {"ports", {{{"port", 80}}, {{"port", 443}}}}});
  seed(kServices, "lb",
       {{"type", "LoadBalancer"}, {"ports", {{{"port", 80}}, {{"port", 443}}, {{"port", 8080}}}}});
  seed(kServices, "lb-no-node-ports",
       {{"type", "LoadBalancer"},
        {"allocateLoadBalancerNodePorts", false},
        {"ports", {{{"port", 80}, {"nodePort", 30080}}, {{"port", 443}}}}});
  seed(kPersistentVolumeClaims, "data",
       {{"storageClassName", "fast"}, {"resources", {{"requests", {{"storage", "1Gi"}}}}}});
  seed(kPersistentVolumeClaims, "logs", {{"resources", {{"requests", {{"storage", "500Mi"}}}}}});
  start();

  ASSERT_TRUE(
      used_becomes("objects", {{"configmaps", "2"},
                               {"count/configmaps", "2"},
                               {"secrets", "1"},
                               {"count/deployments.apps", "1"},
                               {"count/jobs.batch", "0"},
                               {"count/roles.rbac.authorization.k8s.io", "1"},
                               {"resourcequotas", "1"},
                               {"services", "4"},
                               {"services.nodeports", "6"},
                               {"services.loadbalancers", "2"},
                               {"persistentvolumeclaims", "2"},
                               {"requests.storage", "1524Mi"},
                               {"fast.storageclass.storage.k8s.io/requests.storage", "1Gi"}}))
      << status("objects").dump();
}

TEST_F(ResourceQuotaTest, RecalculatesWhenObjectsAndLimitsChange) {
  seed_quota("q", {{"pods", "10"}, {"requests.cpu", "10"}, {"count/configmaps", "5"}});
  api_.seed(kPods, pod("a", {container({{"cpu", "1"}})}));
  seed(kConfigMaps, "a");
  start();
  ASSERT_TRUE(used_becomes("q", {{"pods", "1"}, {"requests.cpu", "1"}, {"count/configmaps", "1"}}));

  ASSERT_TRUE(api_.create(kPods, "shop", pod("b", {container({{"cpu", "500m"}})})).is_ok());
  ASSERT_TRUE(
      used_becomes("q", {{"pods", "2"}, {"requests.cpu", "1500m"}, {"count/configmaps", "1"}}));

  // A pod that finishes stops using compute quota.
  ASSERT_TRUE(api_.patch(kPods, "shop", "a", client::PatchType::kMerge,
                         R"({"status":{"phase":"Succeeded"}})", {}, "status")
                  .is_ok());
  ASSERT_TRUE(
      used_becomes("q", {{"pods", "1"}, {"requests.cpu", "500m"}, {"count/configmaps", "1"}}));

  ASSERT_TRUE(api_.remove(kConfigMaps, "shop", "a").is_ok());
  ASSERT_TRUE(
      used_becomes("q", {{"pods", "1"}, {"requests.cpu", "500m"}, {"count/configmaps", "0"}}));

  // New limits: status.hard follows and the new resource is measured.
  ASSERT_TRUE(api_.patch(kResourceQuotas, "shop", "q", client::PatchType::kMerge,
                         R"({"spec":{"hard":{"count/configmaps":null,"memory":"1Gi"}}})")
                  .is_ok());
  ASSERT_TRUE(used_becomes("q", {{"pods", "1"}, {"requests.cpu", "500m"}, {"memory", "0"}}));
  EXPECT_EQ(status("q")["hard"], Json({{"pods", "10"}, {"requests.cpu", "10"}, {"memory", "1Gi"}}));
}

TEST_F(ResourceQuotaTest, WritesStatusOnlyWhenItChanges) {
  seed_quota("q", {{"pods", "10"}});
  api_.seed(kPods, pod("a", {container(Json())}));
  start();
  ASSERT_TRUE(used_becomes("q", {{"pods", "1"}}));
  size_t writes = api_.actions("update", "resourcequotas").size();
  EXPECT_EQ(writes, 1u);
  // Several full resyncs (every 100ms here) and unrelated pod status changes later: no writes.
  ASSERT_TRUE(api_.patch(kPods, "shop", "a", client::PatchType::kMerge,
                         R"({"status":{"podIP":"10.0.0.5"}})", {}, "status")
                  .is_ok());
  std::this_thread::sleep_for(400ms);
  EXPECT_EQ(api_.actions("update", "resourcequotas").size(), writes);
}

TEST_F(ResourceQuotaTest, ScopesSelectPods) {
  seed_quota("best-effort", {{"pods", "10"}}, {{"scopes", {"BestEffort"}}});
  seed_quota("not-best-effort", {{"pods", "10"}, {"count/configmaps", "5"}},
             {{"scopes", {"NotBestEffort"}}});
  seed_quota("high", {{"pods", "10"}},
             {{"scopeSelector",
               {{"matchExpressions",
                 {{{"scopeName", "PriorityClass"}, {"operator", "In"}, {"values", {"high"}}}}}}}});
  seed_quota("terminating", {{"pods", "10"}}, {{"scopes", {"Terminating"}}});
  api_.seed(kPods, pod("plain", {container(Json())}));
  Json important = pod("important", {container({{"cpu", "1"}})});
  important["spec"]["priorityClassName"] = "high";
  api_.seed(kPods, important);
  Json batch = pod("batch", {container(Json())});
  batch["spec"]["activeDeadlineSeconds"] = 60;
  api_.seed(kPods, batch);
  seed(kConfigMaps, "a");
  start();
  ASSERT_TRUE(used_becomes("best-effort", {{"pods", "2"}}));
  // Object counts match no scope.
  ASSERT_TRUE(used_becomes("not-best-effort", {{"pods", "1"}, {"count/configmaps", "0"}}));
  ASSERT_TRUE(used_becomes("high", {{"pods", "1"}}));
  ASSERT_TRUE(used_becomes("terminating", {{"pods", "1"}}));
}

TEST_F(ResourceQuotaTest, PodsStuckTerminatingPastGraceStopCounting) {
  seed_quota("q", {{"pods", "10"}, {"count/pods", "10"}});
  Json stuck = pod("stuck", {container(Json())});
  stuck["metadata"]["deletionTimestamp"] = rfc3339(clock_.now_seconds() - 100);
  stuck["metadata"]["deletionGracePeriodSeconds"] = 30;
  stuck["metadata"]["finalizers"] = {"example.com/hold"};
  api_.seed(kPods, stuck);
  Json stopping = pod("stopping", {container(Json())});
  stopping["metadata"]["deletionTimestamp"] = rfc3339(clock_.now_seconds() - 10);
  stopping["metadata"]["deletionGracePeriodSeconds"] = 30;
  stopping["metadata"]["finalizers"] = {"example.com/hold"};
  api_.seed(kPods, stopping);
  start();
  ASSERT_TRUE(used_becomes("q", {{"pods", "1"}, {"count/pods", "2"}}));
  // Time passes: the periodic recalculation notices the second one outlived its grace period.
  clock_.advance(60s);
  ASSERT_TRUE(used_becomes("q", {{"pods", "0"}, {"count/pods", "2"}}));
}

TEST_F(ResourceQuotaTest, RetriesConflictsAndListFailures) {
  seed_quota("q", {{"pods", "10"}, {"count/roles.rbac.authorization.k8s.io", "3"}});
  api_.seed(kPods, pod("a", {container(Json())}));
  seed(kRoles, "reader");
  api_.fail("update", "resourcequotas", error(StatusCode::kAborted, "the object has been modified"),
            2);
  start();
  // The live list of roles fails after the informers synced; the pods count is still written
  // and the roles count follows on a retry.
  api_.fail("list", "roles.rbac.authorization.k8s.io", error(StatusCode::kUnavailable, "busy"), 1);
  ASSERT_TRUE(used_becomes("q", {{"pods", "1"}, {"count/roles.rbac.authorization.k8s.io", "1"}}));
}

}  // namespace
}  // namespace skiff::controllers
