#include <gtest/gtest.h>

#include <thread>

#include "client/fake_api_client.h"
#include "controller_test_util.h"
#include "controllers/namespace/namespace_controller.h"

namespace skiff::controllers {
namespace {

using client::FakeApiClient;
using testing::ControllerTest;
using testing::eventually;
using namespace client::resources;
using namespace std::chrono_literals;

class NamespaceControllerTest : public ControllerTest<> {
 protected:
  NamespaceControllerTest() : ControllerTest(options()) {}

  ~NamespaceControllerTest() override {
    if (controller_) controller_->stop();
    informers_.stop();
  }

  static ControllerOptions options() {
    ControllerOptions o;
    o.namespace_sync_period = 100ms;
    o.workers = 2;
    return o;
  }

  void start() {
    controller_ = new_namespace_controller(ctx_);
    informers_.start();
    controller_->start();
  }

  void seed_namespace(const std::string& name, Json finalizers = Json::array({"kubernetes"})) {
    api_.seed(kNamespaces, {{"metadata", {{"name", name}}},
                            {"spec", {{"finalizers", finalizers}}},
                            {"status", {{"phase", "Active"}}}});
  }

  void seed(const client::Resource& r, const std::string& ns, const std::string& name,
            Json extra_metadata = Json::object()) {
    Json obj = {{"metadata", {{"namespace", ns}, {"name", name}}}};
    obj["metadata"].update(extra_metadata);
    api_.seed(r, obj);
  }

  bool exists(const client::Resource& r, const std::string& ns, const std::string& name) {
    return api_.get(r, ns, name).is_ok();
  }

  // The stored namespace; null once it is gone.
  Json namespace_object(const std::string& name) {
    auto got = api_.get(kNamespaces, "", name);
    return got.is_ok() ? got.value() : Json();
  }

  static const Json* condition(const Json& ns, const std::string& type) {
    if (!ns.contains("status") || !ns["status"].contains("conditions")) return nullptr;
    for (const auto& c : ns["status"]["conditions"]) {
      if (c.value("type", "") == type) return &c;
    }
    return nullptr;
  }

  // The condition's status in the stored namespace, "" when absent.
  std::string condition_status(const std::string& ns, const std::string& type) {
    Json obj = namespace_object(ns);
    const Json* c = condition(obj, type);
    return c ? (*c)["status"].get<std::string>() : "";
  }

  std::unique_ptr<Controller> controller_;
};

TEST(NamespacedResources, EveryServedNamespacedResourceThatCanBeDeleted) {
  std::set<std::string> names;
  for (const auto& r : namespaced_resources_to_delete()) names.insert(r.display_name());
  for (const char* want :
       {"pods", "services", "configmaps", "secrets", "serviceaccounts", "events", "resourcequotas",
        "limitranges", "persistentvolumeclaims", "deployments.apps", "replicasets.apps",
        "jobs.batch", "roles.rbac.authorization.k8s.io", "leases.coordination.k8s.io",
        "endpointslices.discovery.k8s.io"}) {
    EXPECT_TRUE(names.count(want)) << want;
  }
  EXPECT_FALSE(names.count("nodes"));
  EXPECT_FALSE(names.count("namespaces"));
  EXPECT_FALSE(names.count("clusterroles.rbac.authorization.k8s.io"));
}

TEST_F(NamespaceControllerTest, DeletesEverythingThenFinalizes) {
  seed_namespace("shop");
  seed_namespace("other");
  seed(kConfigMaps, "shop", "settings");
  seed(kSecrets, "shop", "token");
  seed(kDeployments, "shop", "web");
  seed(kPods, "shop", "web-1");
  seed(kServiceAccounts, "shop", "default");
  seed(kConfigMaps, "other", "settings");
  start();

  // An active namespace is left alone.
  ASSERT_TRUE(informers_.wait_for_sync(5s));
  std::this_thread::sleep_for(50ms);
  EXPECT_TRUE(api_.actions("delete", "configmaps").empty());

  auto removed = api_.remove(kNamespaces, "", "shop");
  ASSERT_TRUE(removed.is_ok());
  EXPECT_EQ(removed.value()["status"]["phase"], "Terminating");
  ASSERT_TRUE(eventually([&] { return !exists(kNamespaces, "", "shop"); }));

  EXPECT_FALSE(exists(kConfigMaps, "shop", "settings"));
  EXPECT_FALSE(exists(kSecrets, "shop", "token"));
  EXPECT_FALSE(exists(kDeployments, "shop", "web"));
  EXPECT_FALSE(exists(kPods, "shop", "web-1"));
  EXPECT_FALSE(exists(kServiceAccounts, "shop", "default"));
  EXPECT_TRUE(exists(kConfigMaps, "other", "settings"));
  EXPECT_TRUE(exists(kNamespaces, "", "other"));

  // The last status written says all is well, and the finalize call removed "kubernetes".
  auto status_updates = api_.actions("update", "namespaces");
  const Json* last_status = nullptr;
  bool finalized = false;
  for (const auto& a : status_updates) {
    if (a.subresource == "status") last_status = &a.object;
    if (a.subresource == "finalize") {
      finalized = true;
      EXPECT_EQ(a.object["spec"]["finalizers"], Json::array());
    }
  }
  EXPECT_TRUE(finalized);
  ASSERT_NE(last_status, nullptr);
  for (const char* type :
       {"NamespaceDeletionDiscoveryFailure", "NamespaceDeletionGroupVersionParsingFailure",
        "NamespaceDeletionContentFailure", "NamespaceContentRemaining",
        "NamespaceFinalizersRemaining"}) {
    const Json* c = condition(*last_status, type);
    ASSERT_NE(c, nullptr) << type;
    EXPECT_EQ((*c)["status"], "False") << type;
  }
  EXPECT_EQ((*condition(*last_status, "NamespaceContentRemaining"))["reason"], "ContentRemoved");
  EXPECT_EQ((*condition(*last_status, "NamespaceDeletionContentFailure"))["message"],
            "All content successfully deleted, may be waiting on finalization");
}

TEST_F(NamespaceControllerTest, WaitsForFinalizersOnContent) {
  seed_namespace("shop");
  seed(kPods, "shop", "held", {{"finalizers", {"example.com/hold"}}});
  seed(kConfigMaps, "shop", "held", {{"finalizers", {"example.com/hold"}}});
  start();
  ASSERT_TRUE(api_.remove(kNamespaces, "", "shop").is_ok());

  ASSERT_TRUE(eventually(
      [&] { return condition_status("shop", "NamespaceFinalizersRemaining") == "True"; }));
  Json ns = namespace_object("shop");
  const Json* remaining = condition(ns, "NamespaceContentRemaining");
  ASSERT_NE(remaining, nullptr);
  EXPECT_EQ((*remaining)["status"], "True");
  EXPECT_EQ((*remaining)["reason"], "SomeResourcesRemain");
  EXPECT_EQ((*remaining)["message"],
            "Some resources are remaining: configmaps. has 1 resource instances, pods. has 1 "
            "resource instances");
  const Json* finalizers = condition(ns, "NamespaceFinalizersRemaining");
  EXPECT_EQ((*finalizers)["reason"], "SomeFinalizerRemain");
  EXPECT_EQ((*finalizers)["message"],
            "Some finalizers are remaining: example.com/hold in 2 resource instances");
  EXPECT_EQ((*condition(ns, "NamespaceDeletionContentFailure"))["status"], "False");
  EXPECT_EQ(ns["spec"]["finalizers"], Json::array({"kubernetes"}));
  EXPECT_TRUE(api_.get(kPods, "shop", "held").value()["metadata"].contains("deletionTimestamp"));

  // Whoever owns the finalizers lets go: the namespace finishes on a later check.
  ASSERT_TRUE(api_.patch(kPods, "shop", "held", client::PatchType::kMerge,
                         R"({"metadata":{"finalizers":null}})")
                  .is_ok());
  ASSERT_TRUE(api_.patch(kConfigMaps, "shop", "held", client::PatchType::kMerge,
                         R"({"metadata":{"finalizers":null}})")
                  .is_ok());
  ASSERT_TRUE(eventually([&] { return !exists(kNamespaces, "", "shop"); }));
}

TEST_F(NamespaceControllerTest, WaitsOutPodGracePeriodsThenReportsStuckContent) {
  seed_namespace("shop");
  start();
  ASSERT_TRUE(api_.remove(kNamespaces, "", "shop").is_ok());
  ASSERT_TRUE(eventually([&] { return !exists(kNamespaces, "", "shop"); }));

  // A pod already terminating (a kubelet is stopping it) stays for its grace period.
  seed_namespace("web");
  api_.seed(kPods, {{"metadata",
                     {{"namespace", "web"},
                      {"name", "slow"},
                      {"deletionTimestamp", rfc3339_now()},
                      {"deletionGracePeriodSeconds", 30}}},
                    {"spec", {{"terminationGracePeriodSeconds", 30}}},
                    {"status", {{"phase", "Running"}}}});
  ASSERT_TRUE(api_.remove(kNamespaces, "", "web").is_ok());
  ASSERT_TRUE(
      eventually([&] { return condition_status("web", "NamespaceContentRemaining") == "True"; }));
  // Within the grace period that is expected: no failure reported.
  std::this_thread::sleep_for(300ms);
  Json ns = namespace_object("web");
  EXPECT_EQ((*condition(ns, "NamespaceDeletionContentFailure"))["status"], "False");
  EXPECT_EQ((*condition(ns, "NamespaceFinalizersRemaining"))["status"], "False");

  // Past it, a pod that is still there is unexpected.
  clock_.advance(31s);
  ASSERT_TRUE(eventually(
      [&] { return condition_status("web", "NamespaceDeletionContentFailure") == "True"; }));
  Json web = namespace_object("web");
  const Json* failure = condition(web, "NamespaceDeletionContentFailure");
  EXPECT_EQ((*failure)["reason"], "ContentDeletionFailed");
  EXPECT_NE((*failure)["message"].get<std::string>().find(
                "Failed to delete all resource types, 1 remaining: unexpected items still remain "
                "in namespace: web"),
            std::string::npos);
  EXPECT_TRUE(exists(kNamespaces, "", "web"));

  // The pod goes: the namespace follows.
  ASSERT_TRUE(api_.remove(kPods, "web", "slow").is_ok());
  ASSERT_TRUE(eventually([&] { return !exists(kNamespaces, "", "web"); }));
}

TEST_F(NamespaceControllerTest, ReportsAndRetriesFailedDeletes) {
  seed_namespace("shop");
  seed(kConfigMaps, "shop", "a");
  seed(kConfigMaps, "shop", "b");
  api_.fail("delete", "configmaps", error(StatusCode::kUnavailable, "etcd is down"), 2);
  start();
  ASSERT_TRUE(api_.remove(kNamespaces, "", "shop").is_ok());
  ASSERT_TRUE(eventually([&] { return !exists(kNamespaces, "", "shop"); }));
  EXPECT_FALSE(exists(kConfigMaps, "shop", "a"));
  EXPECT_FALSE(exists(kConfigMaps, "shop", "b"));
  // The failed delete was reported in the conditions before it succeeded.
  bool reported = false;
  for (const auto& a : api_.actions("update", "namespaces")) {
    if (a.subresource != "status") continue;
    const Json* c = condition(a.object, "NamespaceDeletionContentFailure");
    if (c && (*c)["status"] == "True") {
      reported = true;
      EXPECT_EQ((*c)["reason"], "ContentDeletionFailed");
      EXPECT_EQ((*c)["message"], "Failed to delete all resource types, 1 remaining: etcd is down");
    }
  }
  EXPECT_TRUE(reported);
}

TEST_F(NamespaceControllerTest, RetriesConflictingNamespaceWrites) {
  seed_namespace("shop");
  seed(kConfigMaps, "shop", "a");
  api_.fail("update", "namespaces",
            error(StatusCode::kAborted,
                  "the object has been modified; please apply your changes "
                  "to the latest version and try again"),
            8);
  start();
  ASSERT_TRUE(api_.remove(kNamespaces, "", "shop").is_ok());
  ASSERT_TRUE(eventually([&] { return !exists(kNamespaces, "", "shop"); }));
  EXPECT_FALSE(exists(kConfigMaps, "shop", "a"));
}

TEST_F(NamespaceControllerTest, KeepsOtherFinalizers) {
  seed_namespace("shop", Json::array({"example.com/audit", "kubernetes"}));
  seed(kConfigMaps, "shop", "a");
  start();
  ASSERT_TRUE(api_.remove(kNamespaces, "", "shop").is_ok());
  ASSERT_TRUE(eventually([&] {
    return namespace_object("shop")["spec"]["finalizers"] == Json::array({"example.com/audit"});
  }));
  EXPECT_FALSE(exists(kConfigMaps, "shop", "a"));
  EXPECT_EQ(namespace_object("shop")["status"]["phase"], "Terminating");
}

TEST_F(NamespaceControllerTest, MarksTerminatingWhenPhaseLags) {
  // A namespace with a deletionTimestamp whose phase was never set (another writer raced).
  api_.seed(kNamespaces, {{"metadata", {{"name", "shop"}, {"deletionTimestamp", rfc3339_now()}}},
                          {"spec", {{"finalizers", {"kubernetes", "example.com/x"}}}},
                          {"status", {{"phase", "Active"}}}});
  start();
  ASSERT_TRUE(eventually([&] {
    Json ns = namespace_object("shop");
    return ns["status"]["phase"] == "Terminating" &&
           ns["spec"]["finalizers"] == Json::array({"example.com/x"});
  }));
}

}  // namespace
}  // namespace skiff::controllers
