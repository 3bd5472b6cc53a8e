#include <gtest/gtest.h>

#include <thread>

#include "client/fake_api_client.h"
#include "controller_test_util.h"
#include "controllers/serviceaccount/rootcacertpublisher.h"
#include "controllers/serviceaccount/serviceaccount_controller.h"

namespace skiff::controllers {
namespace {

using client::FakeApiClient;
using testing::ControllerTest;
using testing::eventually;
using namespace client::resources;
using namespace std::chrono_literals;

constexpr const char* kCa = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n";

class ServiceAccountTest : public ControllerTest<> {
 protected:
  ~ServiceAccountTest() override {
    for (auto& c : controllers_) c->stop();
    informers_.stop();
  }

  void start() {
    informers_.start();
    for (auto& c : controllers_) c->start();
    ASSERT_TRUE(informers_.wait_for_sync(5s));
  }

  void seed_namespace(const std::string& name, const std::string& phase = "Active") {
    api_.seed(kNamespaces, {{"metadata", {{"name", name}}},
                            {"spec", {{"finalizers", {"kubernetes"}}}},
                            {"status", {{"phase", phase}}}});
  }

  bool exists(const client::Resource& r, const std::string& ns, const std::string& name) {
    return api_.get(r, ns, name).is_ok();
  }

  std::vector<std::unique_ptr<Controller>> controllers_;
};

TEST_F(ServiceAccountTest, DefaultServiceAccountInEveryActiveNamespace) {
  seed_namespace("default");
  seed_namespace("shop");
  seed_namespace("leaving", "Terminating");
  // One namespace has its default service account already.
  api_.seed(kServiceAccounts, {{"metadata", {{"namespace", "default"}, {"name", "default"}}}});
  controllers_.push_back(new_serviceaccount_controller(ctx_));
  start();

  ASSERT_TRUE(eventually([&] { return exists(kServiceAccounts, "shop", "default"); }));
  // Namespaces created later get one too.
  ASSERT_TRUE(api_.create(kNamespaces, "",
                          {{"metadata", {{"name", "late"}}}, {"status", {{"phase", "Active"}}}})
                  .is_ok());
  ASSERT_TRUE(eventually([&] { return exists(kServiceAccounts, "late", "default"); }));
  std::this_thread::sleep_for(100ms);
  EXPECT_FALSE(exists(kServiceAccounts, "leaving", "default"));
  // Only the missing ones were created.
  auto creates = api_.actions("create", "serviceaccounts");
  ASSERT_EQ(creates.size(), 2u);
  for (const auto& a : creates) EXPECT_EQ(a.name, "default");
}

TEST_F(ServiceAccountTest, RecreatesDeletedDefaultServiceAccount) {
  seed_namespace("shop");
  api_.seed(kServiceAccounts, {{"metadata", {{"namespace", "shop"}, {"name", "default"}}}});
  api_.seed(kServiceAccounts, {{"metadata", {{"namespace", "shop"}, {"name", "builder"}}}});
  // The first attempt fails; the key is retried.
  api_.fail("create", "serviceaccounts", error(StatusCode::kUnavailable, "server is busy"), 1);
  controllers_.push_back(new_serviceaccount_controller(ctx_));
  start();
  std::string old_uid = api_.get(kServiceAccounts, "shop", "default").value()["metadata"]["uid"];

  ASSERT_TRUE(api_.remove(kServiceAccounts, "shop", "default").is_ok());
  ASSERT_TRUE(eventually([&] {
    auto sa = api_.get(kServiceAccounts, "shop", "default");
    return sa.is_ok() && sa.value()["metadata"]["uid"] != old_uid;
  }));

  // Other service accounts are not the controller's business.
  ASSERT_TRUE(api_.remove(kServiceAccounts, "shop", "builder").is_ok());
  std::this_thread::sleep_for(100ms);
  EXPECT_FALSE(exists(kServiceAccounts, "shop", "builder"));
}

TEST_F(ServiceAccountTest, LeavesTerminatingNamespacesAlone) {
  seed_namespace("shop");
  api_.seed(kServiceAccounts, {{"metadata", {{"namespace", "shop"}, {"name", "default"}}}});
  controllers_.push_back(new_serviceaccount_controller(ctx_));
  start();
  ASSERT_TRUE(api_.remove(kNamespaces, "", "shop").is_ok());
  // Once the controller's cache knows the namespace is terminating, the account goes.
  ASSERT_TRUE(eventually([&] {
    ObjectPtr ns = informers_.informer(kNamespaces).get("shop");
    return ns && (*ns)["metadata"].contains("deletionTimestamp");
  }));
  ASSERT_TRUE(api_.remove(kServiceAccounts, "shop", "default").is_ok());
  std::this_thread::sleep_for(150ms);
  EXPECT_FALSE(exists(kServiceAccounts, "shop", "default"));
  EXPECT_TRUE(api_.actions("create", "serviceaccounts").empty());
}

TEST_F(ServiceAccountTest, PublishesRootCaInEveryNamespace) {
  seed_namespace("default");
  seed_namespace("shop");
  seed_namespace("leaving", "Terminating");
  controllers_.push_back(new_rootcacertpublisher_controller(ctx_, kCa));
  start();

  for (const char* ns : {"default", "shop"}) {
    ASSERT_TRUE(eventually([&] { return exists(kConfigMaps, ns, "kube-root-ca.crt"); })) << ns;
    Json cm = api_.get(kConfigMaps, ns, "kube-root-ca.crt").value();
    EXPECT_EQ(cm["data"], Json({{"ca.crt", kCa}}));
    EXPECT_EQ(cm["metadata"]["annotations"]["kubernetes.io/description"],
              "Contains a CA bundle that can be used to verify the kube-apiserver when using "
              "internal endpoints such as the internal service IP or kubernetes.default.svc. No "
              "other usage is guaranteed across distributions of Kubernetes clusters.");
  }
  std::this_thread::sleep_for(100ms);
  EXPECT_FALSE(exists(kConfigMaps, "leaving", "kube-root-ca.crt"));
}

TEST_F(ServiceAccountTest, RestoresEditedAndDeletedRootCa) {
  seed_namespace("shop");
  controllers_.push_back(new_rootcacertpublisher_controller(ctx_, kCa));
  start();
  ASSERT_TRUE(eventually([&] { return exists(kConfigMaps, "shop", "kube-root-ca.crt"); }));

  // Someone edits the bundle: it is put back.
  ASSERT_TRUE(api_.patch(kConfigMaps, "shop", "kube-root-ca.crt", client::PatchType::kMerge,
                         R"({"data":{"ca.crt":"tampered","extra":"x"}})")
                  .is_ok());
  ASSERT_TRUE(eventually([&] {
    return api_.get(kConfigMaps, "shop", "kube-root-ca.crt").value()["data"] ==
           Json({{"ca.crt", kCa}});
  }));

  // Someone deletes it: it comes back (the first create fails and is retried).
  api_.fail("create", "configmaps", error(StatusCode::kUnavailable, "server is busy"), 1);
  ASSERT_TRUE(api_.remove(kConfigMaps, "shop", "kube-root-ca.crt").is_ok());
  ASSERT_TRUE(eventually([&] { return exists(kConfigMaps, "shop", "kube-root-ca.crt"); }));

  // Other config maps are left alone.
  ASSERT_TRUE(api_.create(kConfigMaps, "shop",
                          {{"metadata", {{"name", "settings"}}}, {"data", {{"a", "b"}}}})
                  .is_ok());
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(api_.actions("update", "configmaps").size(), 1u);
}

}  // namespace
}  // namespace skiff::controllers
