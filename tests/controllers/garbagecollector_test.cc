#include <gtest/gtest.h>

#include <thread>

#include "client/fake_api_client.h"
#include "controller_test_util.h"
#include "controllers/garbagecollector/garbagecollector_controller.h"

namespace skiff::controllers {
namespace {

using client::FakeApiClient;
using testing::ControllerTest;
using testing::eventually;
using namespace client::resources;
using namespace std::chrono_literals;

Json owner_ref(const Json& owner, bool block = true, bool controller = true) {
  return {{"apiVersion", owner["apiVersion"]}, {"kind", owner["kind"]},
          {"name", owner["metadata"]["name"]}, {"uid", owner["metadata"]["uid"]},
          {"controller", controller},          {"blockOwnerDeletion", block}};
}

class GarbageCollectorTest : public ControllerTest<> {
 protected:
  GarbageCollectorTest() : ControllerTest(options()) {}

  ~GarbageCollectorTest() override {
    if (controller_) controller_->stop();
    informers_.stop();
  }

  static ControllerOptions options() {
    ControllerOptions o;
    o.workers = 3;
    return o;
  }

  void start(GarbageCollectorOptions gc_options = {}) {
    controller_ = new_garbagecollector_controller(ctx_, std::move(gc_options));
    informers_.start();
    controller_->start();
    ASSERT_TRUE(informers_.wait_for_sync(5s));
  }

  Json seed(const client::Resource& r, const std::string& ns, const std::string& name,
            Json owners = Json(), Json finalizers = Json()) {
    Json obj = {{"metadata", {{"name", name}}}};
    if (!ns.empty()) obj["metadata"]["namespace"] = ns;
    if (!owners.is_null()) obj["metadata"]["ownerReferences"] = owners;
    if (!finalizers.is_null()) obj["metadata"]["finalizers"] = finalizers;
    return api_.seed(r, obj);
  }

  // By listing, so failures injected into gets are left for the collector.
  bool exists(const client::Resource& r, const std::string& ns, const std::string& name) {
    client::ListOptions by_name;
    by_name.field_selector = "metadata.name=" + name;
    auto listed = api_.list(r, ns, by_name);
    return listed.is_ok() && !listed.value()["items"].empty();
  }

  // The stored object, or null.
  Json get(const client::Resource& r, const std::string& ns, const std::string& name) {
    auto got = api_.get(r, ns, name);
    return got.is_ok() ? got.value() : Json();
  }

  // Index of the first recorded action matching, or -1.
  int action_index(const std::string& verb, const std::string& resource, const std::string& name) {
    auto all = api_.actions();
    for (size_t i = 0; i < all.size(); ++i) {
      if (all[i].verb == verb && all[i].resource == resource && all[i].name == name) {
        return static_cast<int>(i);
      }
    }
    return -1;
  }

  bool has_event(const std::string& reason, const std::string& involved_name) {
    for (const auto& a : api_.actions("create", "events")) {
      if (a.object.value("reason", "") == reason &&
          a.object["involvedObject"].value("name", "") == involved_name) {
        return true;
      }
    }
    return false;
  }

  std::unique_ptr<Controller> controller_;
};

TEST(GarbageCollectedResources, WorkloadsAndWhatTheyOwn) {
  std::set<std::string> names;
  for (const auto& r : default_garbage_collected_resources()) names.insert(r.display_name());
  for (const char* want :
       {"pods", "replicasets.apps", "deployments.apps", "jobs.batch", "controllerrevisions.apps",
        "configmaps", "secrets", "services", "endpointslices.discovery.k8s.io", "nodes"}) {
    EXPECT_TRUE(names.count(want)) << want;
  }
  EXPECT_FALSE(names.count("events"));
}

TEST_F(GarbageCollectorTest, DeletesDependentsOfDeletedOwnerInBackground) {
  Json rs = seed(kReplicaSets, "shop", "web");
  seed(kPods, "shop", "web-1", Json::array({owner_ref(rs)}));
  seed(kPods, "shop", "web-2", Json::array({owner_ref(rs)}));
  seed(kPods, "shop", "loner");
  start();

  // A live owner keeps its dependents.
  std::this_thread::sleep_for(100ms);
  EXPECT_TRUE(api_.actions("delete", "pods").empty());

  ASSERT_TRUE(api_.remove(kReplicaSets, "shop", "web").is_ok());
  ASSERT_TRUE(eventually([&] { return !exists(kPods, "shop", "web-1"); }));
  ASSERT_TRUE(eventually([&] { return !exists(kPods, "shop", "web-2"); }));
  EXPECT_TRUE(exists(kPods, "shop", "loner"));
}

TEST_F(GarbageCollectorTest, DeletesDependentsWhoseOwnerNeverExisted) {
  Json ref = {{"apiVersion", "apps/v1"},
              {"kind", "ReplicaSet"},
              {"name", "gone"},
              {"uid", "11111111-2222-4333-8444-555555555555"}};
  seed(kPods, "shop", "stray", Json::array({ref}));
  // Its dependents go too, once it is gone.
  Json stray = get(kPods, "shop", "stray");
  seed(kConfigMaps, "shop", "stray-data", Json::array({owner_ref(stray)}));
  start();
  ASSERT_TRUE(eventually([&] { return !exists(kPods, "shop", "stray"); }));
  ASSERT_TRUE(eventually([&] { return !exists(kConfigMaps, "shop", "stray-data"); }));
}

TEST_F(GarbageCollectorTest, OwnerWithSameNameButNewUidCountsAsAbsent) {
  Json rs = seed(kReplicaSets, "shop", "web");
  seed(kPods, "shop", "current", Json::array({owner_ref(rs)}));
  Json stale = owner_ref(rs);
  stale["uid"] = "00000000-0000-4000-8000-000000000001";
  seed(kPods, "shop", "stale", Json::array({stale}));
  start();
  ASSERT_TRUE(eventually([&] { return !exists(kPods, "shop", "stale"); }));
  std::this_thread::sleep_for(100ms);
  EXPECT_TRUE(exists(kPods, "shop", "current"));
  EXPECT_TRUE(exists(kReplicaSets, "shop", "web"));

  // The owner is deleted and a new one with the same name created at once: the old
  // dependents still go. (The collector's first reads of the pod fail, so it looks at the owner
  // only once the new one exists.)
  api_.fail("get", "pods", error(StatusCode::kUnavailable, "server is busy"), 3);
  ASSERT_TRUE(api_.remove(kReplicaSets, "shop", "web").is_ok());
  ASSERT_TRUE(api_.create(kReplicaSets, "shop", {{"metadata", {{"name", "web"}}}}).is_ok());
  ASSERT_TRUE(eventually([&] { return !exists(kPods, "shop", "current"); }));
  EXPECT_TRUE(exists(kReplicaSets, "shop", "web"));
}

TEST_F(GarbageCollectorTest, VerifiesOwnersLiveWhenTheCacheHasNotSeenThem) {
  // Replica sets are not watched here: the graph knows the owner only by reference.
  GarbageCollectorOptions gc;
  gc.resources = {kPods};
  Json rs = seed(kReplicaSets, "shop", "web");
  seed(kPods, "shop", "web-1", Json::array({owner_ref(rs)}));
  start(gc);
  std::this_thread::sleep_for(200ms);
  EXPECT_TRUE(exists(kPods, "shop", "web-1"));
  EXPECT_TRUE(api_.actions("delete", "pods").empty());

  // No informer reports the deletion; the periodic re-check of the unobserved owner finds it.
  ASSERT_TRUE(api_.remove(kReplicaSets, "shop", "web").is_ok());
  ASSERT_TRUE(eventually([&] { return !exists(kPods, "shop", "web-1"); }, 20s));
}

TEST_F(GarbageCollectorTest, FailedOwnerLookupsNeverDelete) {
  Json rs = seed(kReplicaSets, "shop", "web");
  seed(kPods, "shop", "web-1", Json::array({owner_ref(rs)}));
  Json missing = owner_ref(rs);
  missing["uid"] = "00000000-0000-4000-8000-000000000002";
  missing["name"] = "other";
  seed(kPods, "shop", "orphaned", Json::array({missing}));
  api_.fail("get", "replicasets.apps", error(StatusCode::kUnavailable, "server is busy"), 4);
  api_.fail("delete", "pods", error(StatusCode::kUnavailable, "server is busy"), 1);
  start();
  ASSERT_TRUE(eventually([&] { return !exists(kPods, "shop", "orphaned"); }));
  std::this_thread::sleep_for(100ms);
  EXPECT_TRUE(exists(kPods, "shop", "web-1"));
}

TEST_F(GarbageCollectorTest, KeepsDependentWithALiveOwnerAndDropsDanglingReference) {
  Json rs = seed(kReplicaSets, "shop", "web");
  Json gone = owner_ref(rs, false, false);
  gone["name"] = "old";
  gone["uid"] = "00000000-0000-4000-8000-000000000003";
  seed(kPods, "shop", "shared", Json::array({owner_ref(rs), gone}));
  start();
  ASSERT_TRUE(eventually(
      [&] { return get(kPods, "shop", "shared")["metadata"]["ownerReferences"].size() == 1; }));
  Json refs = get(kPods, "shop", "shared")["metadata"]["ownerReferences"];
  EXPECT_EQ(refs[0]["uid"], rs["metadata"]["uid"]);
  EXPECT_TRUE(api_.actions("delete", "pods").empty());
}

TEST_F(GarbageCollectorTest, ForegroundDeletionWaitsForBlockingDependents) {
  Json deploy = seed(kDeployments, "shop", "web");
  Json rs = seed(kReplicaSets, "shop", "web-1a", Json::array({owner_ref(deploy)}));
  seed(kPods, "shop", "web-1a-x", Json::array({owner_ref(rs)}));
  // This one holds on: a finalizer keeps it after its deletion.
  seed(kPods, "shop", "web-1a-y", Json::array({owner_ref(rs)}), Json::array({"example.com/hold"}));
  // A dependent that does not block its owner is deleted but not waited for.
  seed(kConfigMaps, "shop", "web-notes", Json::array({owner_ref(deploy, false, false)}));
  start();

  client::DeleteOptions foreground;
  foreground.propagation_policy = "Foreground";
  ASSERT_TRUE(api_.remove(kDeployments, "shop", "web", foreground).is_ok());

  ASSERT_TRUE(eventually([&] { return !exists(kPods, "shop", "web-1a-x"); }));
  ASSERT_TRUE(eventually([&] { return !exists(kConfigMaps, "shop", "web-notes"); }));
  ASSERT_TRUE(eventually(
      [&] { return get(kPods, "shop", "web-1a-y")["metadata"].contains("deletionTimestamp"); }));
  // The replica set was deleted in the foreground too, and both owners wait for the pod.
  std::this_thread::sleep_for(200ms);
  Json rs_now = get(kReplicaSets, "shop", "web-1a");
  EXPECT_TRUE(rs_now["metadata"].contains("deletionTimestamp"));
  EXPECT_EQ(rs_now["metadata"]["finalizers"], Json::array({"foregroundDeletion"}));
  EXPECT_EQ(get(kDeployments, "shop", "web")["metadata"]["finalizers"],
            Json::array({"foregroundDeletion"}));

  ASSERT_TRUE(api_.patch(kPods, "shop", "web-1a-y", client::PatchType::kMerge,
                         R"({"metadata":{"finalizers":null}})")
                  .is_ok());
  ASSERT_TRUE(eventually([&] { return !exists(kDeployments, "shop", "web"); }));
  EXPECT_FALSE(exists(kReplicaSets, "shop", "web-1a"));
  // Owners let go only after their dependents: pods, then the replica set, then the deployment.
  int pod_delete = action_index("delete", "pods", "web-1a-x");
  int rs_finalized = action_index("patch", "replicasets.apps", "web-1a");
  int deploy_finalized = action_index("patch", "deployments.apps", "web");
  ASSERT_GE(pod_delete, 0);
  ASSERT_GE(rs_finalized, 0);
  ASSERT_GE(deploy_finalized, 0);
  EXPECT_LT(pod_delete, rs_finalized);
  EXPECT_LT(rs_finalized, deploy_finalized);
}

TEST_F(GarbageCollectorTest, ForegroundOwnerWithoutDependentsIsReleasedAtOnce) {
  seed(kReplicaSets, "shop", "lonely");
  start();
  client::DeleteOptions foreground;
  foreground.propagation_policy = "Foreground";
  ASSERT_TRUE(api_.remove(kReplicaSets, "shop", "lonely", foreground).is_ok());
  ASSERT_TRUE(eventually([&] { return !exists(kReplicaSets, "shop", "lonely"); }));
}

TEST_F(GarbageCollectorTest, OrphanRemovesReferencesThenFinalizer) {
  Json rs = seed(kReplicaSets, "shop", "web");
  Json cm = seed(kConfigMaps, "shop", "other-owner");
  seed(kPods, "shop", "web-1", Json::array({owner_ref(rs)}));
  seed(kPods, "shop", "web-2", Json::array({owner_ref(rs), owner_ref(cm, false, false)}));
  start();
  // A conflicting writer gets in the way once; the collector retries.
  api_.fail("patch", "pods", error(StatusCode::kAborted, "the object has been modified"), 1);

  client::DeleteOptions orphan;
  orphan.propagation_policy = "Orphan";
  ASSERT_TRUE(api_.remove(kReplicaSets, "shop", "web", orphan).is_ok());
  ASSERT_TRUE(eventually([&] { return !exists(kReplicaSets, "shop", "web"); }));

  Json p1 = get(kPods, "shop", "web-1");
  EXPECT_FALSE(p1["metadata"].contains("ownerReferences"));
  Json p2 = get(kPods, "shop", "web-2");
  ASSERT_EQ(p2["metadata"]["ownerReferences"].size(), 1u);
  EXPECT_EQ(p2["metadata"]["ownerReferences"][0]["uid"], cm["metadata"]["uid"]);
  // The finalizer went only after the references.
  EXPECT_LT(action_index("patch", "pods", "web-1"),
            action_index("patch", "replicasets.apps", "web"));
  EXPECT_LT(action_index("patch", "pods", "web-2"),
            action_index("patch", "replicasets.apps", "web"));
  std::this_thread::sleep_for(100ms);
  EXPECT_TRUE(api_.actions("delete", "pods").empty());
}

TEST_F(GarbageCollectorTest, OwnerInAnotherNamespaceCountsAsAbsent) {
  Json rs = seed(kReplicaSets, "a", "web");
  seed(kPods, "a", "same-namespace", Json::array({owner_ref(rs)}));
  seed(kPods, "b", "cross-namespace", Json::array({owner_ref(rs)}));
  start();
  ASSERT_TRUE(eventually([&] { return !exists(kPods, "b", "cross-namespace"); }));
  ASSERT_TRUE(eventually([&] { return has_event("OwnerRefInvalidNamespace", "cross-namespace"); }));
  for (const auto& a : api_.actions("create", "events")) {
    if (a.object.value("reason", "") != "OwnerRefInvalidNamespace") continue;
    EXPECT_EQ(a.object["type"], "Warning");
    EXPECT_EQ(a.object["message"], "ownerRef [apps/v1/ReplicaSet, namespace: b, name: web, uid: " +
                                       rs["metadata"]["uid"].get<std::string>() +
                                       "] does not exist in namespace \"b\"");
  }
  std::this_thread::sleep_for(100ms);
  EXPECT_TRUE(exists(kPods, "a", "same-namespace"));
}

TEST_F(GarbageCollectorTest, ClusterScopedDependentOfNamespacedOwnerIsReportedNotCollected) {
  Json rs = seed(kReplicaSets, "a", "web");
  seed(kNodes, "", "node-1", Json::array({owner_ref(rs)}));
  // A cluster-scoped owner is fine for a namespaced dependent.
  Json node2 = seed(kNodes, "", "node-2");
  seed(kLeases, "kube-node-lease", "node-2", Json::array({owner_ref(node2, false, false)}));
  start();
  ASSERT_TRUE(eventually([&] { return has_event("OwnerRefInvalidNamespace", "node-1"); }));
  std::this_thread::sleep_for(100ms);
  EXPECT_TRUE(exists(kNodes, "", "node-1"));
  EXPECT_TRUE(exists(kLeases, "kube-node-lease", "node-2"));

  ASSERT_TRUE(api_.remove(kNodes, "", "node-2").is_ok());
  ASSERT_TRUE(eventually([&] { return !exists(kLeases, "kube-node-lease", "node-2"); }));
}

TEST_F(GarbageCollectorTest, DependentAddedLaterToDeletedOwnerIsCollected) {
  start();
  Json rs = api_.create(kReplicaSets, "shop", {{"metadata", {{"name", "web"}}}}).value();
  ASSERT_TRUE(api_.remove(kReplicaSets, "shop", "web").is_ok());
  // A late writer creates a pod for the replica set that is already gone.
  ASSERT_TRUE(api_.create(kPods, "shop",
                          {{"metadata", {{"name", "late"}, {"ownerReferences", {owner_ref(rs)}}}}})
                  .is_ok());
  ASSERT_TRUE(eventually([&] { return !exists(kPods, "shop", "late"); }));
}

}  // namespace
}  // namespace skiff::controllers
