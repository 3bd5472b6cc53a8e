#include "controllers/owned_pod_events.h"

#include <gtest/gtest.h>

#include <chrono>
#include <set>
#include <thread>
#include <utility>
#include <vector>

#include "client/fake_api_client.h"
#include "controller_test_util.h"
#include "controllers/controller_utils.h"

namespace skiff::controllers {
namespace {

using client::resources::kReplicaSets;
using namespace std::chrono_literals;

Json owner_json(const std::string& name, Json match_labels, int64_t min_ready = 0) {
  return {
      {"apiVersion", "apps/v1"},
      {"kind", "ReplicaSet"},
      {"metadata", {{"namespace", "default"}, {"name", name}, {"uid", "uid-" + name}}},
      {"spec", {{"selector", {{"matchLabels", match_labels}}}, {"minReadySeconds", min_ready}}}};
}

Json ref_to(const std::string& name, const std::string& kind = "ReplicaSet",
            const std::string& api_version = "apps/v1", const std::string& uid = "") {
  return {{"apiVersion", api_version},
          {"kind", kind},
          {"name", name},
          {"uid", uid.empty() ? "uid-" + name : uid},
          {"controller", true}};
}

ObjectPtr pod(const std::string& name, Json labels, Json owner_ref = Json(),
              const std::string& rv = "1") {
  Json p = {{"metadata",
             {{"namespace", "default"},
              {"name", name},
              {"labels", std::move(labels)},
              {"resourceVersion", rv}}}};
  if (!owner_ref.is_null()) p["metadata"]["ownerReferences"] = Json::array({owner_ref});
  return std::make_shared<const Json>(std::move(p));
}

ObjectPtr with(const ObjectPtr& p, const std::function<void(Json&)>& change) {
  Json copy = *p;
  change(copy);
  return std::make_shared<const Json>(std::move(copy));
}

// Owners "web" (app=web, minReadySeconds 1) and "other-web" (app=web too), "db" (app=db) in an
// informer over a fake API, and an OwnedPodEvents that records what its hooks saw.
class OwnedPodEventsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    api_.seed(kReplicaSets, owner_json("web", {{"app", "web"}}, 1));
    api_.seed(kReplicaSets, owner_json("other-web", {{"app", "web"}}));
    api_.seed(kReplicaSets, owner_json("db", {{"app", "db"}}));
    owners_.start();
    ASSERT_TRUE(owners_.wait_for_sync(5s));
  }
  void TearDown() override {
    owners_.stop();
    queue_.shut_down();
  }

  OwnedPodEvents events(bool terminating_update_is_delete) {
    return OwnedPodEvents(
        owners_, queue_,
        {.kind = "ReplicaSet",
         .group = "apps",
         .creation_observed = [this](const std::string& key) { created_.push_back(key); },
         .deletion_observed =
             [this](const std::string& key, const std::string& pod_key) {
               deleted_.emplace_back(key, pod_key);
             },
         .forget = [this](const std::string& key) { forgotten_.push_back(key); },
         .terminating_update_is_delete = terminating_update_is_delete});
  }

  std::set<std::string> drain() { return controllers::testing::drain(queue_); }

  client::FakeApiClient api_;
  client::Informer owners_{api_, kReplicaSets};
  client::WorkQueue queue_;
  std::vector<std::string> created_;
  std::vector<std::pair<std::string, std::string>> deleted_;
  std::vector<std::string> forgotten_;
};

TEST(OwnerHelpers, LabelsGroupsDeletionAndReferenceChanges) {
  EXPECT_EQ(labels_of(*pod("a", {{"app", "web"}})), Json({{"app", "web"}}));
  EXPECT_EQ(labels_of(Json{{"metadata", {{"labels", "x"}}}}), Json::object());
  EXPECT_EQ(labels_of(Json("x")), Json::object());
  EXPECT_EQ(api_group_of("apps/v1"), "apps");
  EXPECT_EQ(api_group_of("v1"), "");
  EXPECT_FALSE(is_being_deleted(*pod("a", Json::object())));
  EXPECT_TRUE(
      is_being_deleted(Json{{"metadata", {{"deletionTimestamp", "2026-01-01T00:00:00Z"}}}}));
  EXPECT_FALSE(is_being_deleted(Json{{"metadata", nullptr}}));

  ObjectPtr orphan = pod("a", Json::object());
  ObjectPtr owned = pod("a", Json::object(), ref_to("web"));
  EXPECT_FALSE(controller_ref_changed(*orphan, *orphan));
  EXPECT_FALSE(controller_ref_changed(*owned, *pod("a", Json::object(), ref_to("web"))));
  EXPECT_TRUE(controller_ref_changed(*orphan, *owned));
  EXPECT_TRUE(controller_ref_changed(*owned, *orphan));
  EXPECT_TRUE(controller_ref_changed(*owned, *pod("a", Json::object(), ref_to("db"))));
}

TEST_F(OwnedPodEventsTest, ResolvesControllerRefsByKindGroupNameAndUid) {
  auto resolve = [&](const Json& ref) {
    ObjectPtr owner =
        resolve_controller_ref(owners_, *pod("p", Json::object(), ref), "ReplicaSet", "apps");
    return owner ? client::name_of(*owner) : std::string("-");
  };
  EXPECT_EQ(resolve(ref_to("web")), "web");
  EXPECT_EQ(resolve(ref_to("web", "ReplicaSet", "apps/v1beta2")), "web");  // any version
  EXPECT_EQ(resolve(ref_to("web", "Deployment")), "-");
  EXPECT_EQ(resolve(ref_to("web", "ReplicaSet", "v1")), "-");
  EXPECT_EQ(resolve(ref_to("web", "ReplicaSet", "apps/v1", "stale-uid")), "-");
  EXPECT_EQ(resolve(ref_to("gone")), "-");
  EXPECT_EQ(resolve_controller_ref(owners_, *pod("p", Json::object()), "ReplicaSet", "apps"),
            nullptr);
}

TEST_F(OwnedPodEventsTest, OwnersSelectingByLabels) {
  auto names = [&](const ObjectPtr& p) {
    std::set<std::string> out;
    for (const auto& o : owners_selecting(owners_, *p)) out.insert(client::name_of(*o));
    return out;
  };
  EXPECT_EQ(names(pod("p", {{"app", "web"}})), (std::set<std::string>{"web", "other-web"}));
  EXPECT_EQ(names(pod("p", {{"app", "db"}, {"tier", "x"}})), (std::set<std::string>{"db"}));
  EXPECT_EQ(names(pod("p", Json::object())), std::set<std::string>{});
  Json elsewhere = *pod("p", {{"app", "web"}});
  elsewhere["metadata"]["namespace"] = "other";
  EXPECT_TRUE(owners_selecting(owners_, elsewhere).empty());
}

TEST_F(OwnedPodEventsTest, AddsWakeTheOwnerAndCountCreations) {
  OwnedPodEvents e = events(false);
  e.on_add(pod("p1", {{"app", "web"}}, ref_to("web")));
  EXPECT_EQ(created_, std::vector<std::string>{"default/web"});
  EXPECT_EQ(drain(), std::set<std::string>{"default/web"});
  // An orphan wakes every owner that could adopt it, with no creation observed.
  e.on_add(pod("p2", {{"app", "web"}}));
  EXPECT_EQ(created_.size(), 1u);
  EXPECT_EQ(drain(), (std::set<std::string>{"default/web", "default/other-web"}));
  // A reference to an owner not in the cache: nothing.
  e.on_add(pod("p3", {{"app", "web"}}, ref_to("gone")));
  EXPECT_EQ(drain(), std::set<std::string>{});
  // Already being deleted: a deletion.
  e.on_add(with(pod("p4", {{"app", "web"}}, ref_to("web")),
                [](Json& p) { p["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"; }));
  EXPECT_EQ(created_.size(), 1u);
  ASSERT_EQ(deleted_.size(), 1u);
  EXPECT_EQ(deleted_[0], std::make_pair(std::string("default/web"), std::string("default/p4")));
  EXPECT_EQ(drain(), std::set<std::string>{"default/web"});
}

TEST_F(OwnedPodEventsTest, DeletesCountForTheControllerOnly) {
  OwnedPodEvents e = events(false);
  e.on_delete(pod("p1", {{"app", "web"}}));
  e.on_delete(pod("p2", {{"app", "web"}}, ref_to("gone")));
  EXPECT_TRUE(deleted_.empty());
  EXPECT_EQ(drain(), std::set<std::string>{});
  e.on_delete(pod("p3", {{"app", "web"}}, ref_to("db")));
  ASSERT_EQ(deleted_.size(), 1u);
  EXPECT_EQ(deleted_[0], std::make_pair(std::string("default/db"), std::string("default/p3")));
  EXPECT_EQ(drain(), std::set<std::string>{"default/db"});
}

TEST_F(OwnedPodEventsTest, UpdatesWakeOldAndNewOwnersAndAdopters) {
  OwnedPodEvents e = events(false);
  ObjectPtr v1 = pod("p", {{"app", "web"}}, ref_to("web"), "1");
  // Same resourceVersion (a resync): nothing.
  e.on_update(v1, v1);
  EXPECT_EQ(drain(), std::set<std::string>{});
  // Controller changed: old and new owner.
  e.on_update(v1, pod("p", {{"app", "web"}}, ref_to("db"), "2"));
  EXPECT_EQ(drain(), (std::set<std::string>{"default/web", "default/db"}));
  // Released and relabelled: the old owner and every owner that would adopt it now.
  e.on_update(v1, pod("p", {{"app", "db"}}, Json(), "3"));
  EXPECT_EQ(drain(), (std::set<std::string>{"default/web", "default/db"}));
  // An orphan whose labels did not change: nothing.
  e.on_update(pod("o", {{"app", "web"}}, Json(), "1"), pod("o", {{"app", "web"}}, Json(), "2"));
  EXPECT_EQ(drain(), std::set<std::string>{});
  EXPECT_TRUE(created_.empty());
  EXPECT_TRUE(deleted_.empty());
}

TEST_F(OwnedPodEventsTest, TerminatingUpdateIsObservedAndHandledOtherwiseAsUsual) {
  OwnedPodEvents e = events(false);
  ObjectPtr v1 = pod("p", {{"app", "web"}}, ref_to("web"), "1");
  ObjectPtr v2 = with(pod("p", {{"app", "db"}}, ref_to("db"), "2"),
                      [](Json& p) { p["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"; });
  e.on_update(v1, v2);
  // The deletion is observed for the current owner only; the old owner is woken as the
  // reference changed.
  ASSERT_EQ(deleted_.size(), 1u);
  EXPECT_EQ(deleted_[0], std::make_pair(std::string("default/db"), std::string("default/p")));
  EXPECT_EQ(drain(), (std::set<std::string>{"default/web", "default/db"}));
}

TEST_F(OwnedPodEventsTest, TerminatingUpdateAsDeleteTellsTheOldOwnerWhenLabelsChanged) {
  OwnedPodEvents e = events(true);
  ObjectPtr v1 = pod("p", {{"app", "web"}}, ref_to("web"), "1");
  ObjectPtr v2 = with(pod("p", {{"app", "db"}}, ref_to("db"), "2"),
                      [](Json& p) { p["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"; });
  e.on_update(v1, v2);
  ASSERT_EQ(deleted_.size(), 2u);
  EXPECT_EQ(deleted_[0], std::make_pair(std::string("default/db"), std::string("default/p")));
  EXPECT_EQ(deleted_[1], std::make_pair(std::string("default/web"), std::string("default/p")));
  EXPECT_EQ(drain(), (std::set<std::string>{"default/web", "default/db"}));
  // Same labels: only the current owner hears of it.
  deleted_.clear();
  ObjectPtr v3 = with(pod("p", {{"app", "web"}}, ref_to("web"), "3"),
                      [](Json& p) { p["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"; });
  e.on_update(v1, v3);
  ASSERT_EQ(deleted_.size(), 1u);
  EXPECT_EQ(deleted_[0].first, "default/web");
  EXPECT_EQ(drain(), std::set<std::string>{"default/web"});
}

TEST_F(OwnedPodEventsTest, TurningReadyWakesTheOwnerAgainAfterMinReadySeconds) {
  OwnedPodEvents e = events(false);
  ObjectPtr v1 = pod("p", {{"app", "web"}}, ref_to("web"), "1");
  ObjectPtr v2 = with(pod("p", {{"app", "web"}}, ref_to("web"), "2"), [](Json& p) {
    p["status"] = {{"conditions", {{{"type", "Ready"}, {"status", "True"}}}}};
  });
  e.on_update(v1, v2);
  const auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(drain(), std::set<std::string>{"default/web"});
  // "web" has minReadySeconds 1: the key comes back 2 s later.
  while (queue_.size() == 0 && std::chrono::steady_clock::now() - start < 5s) {
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_GE(std::chrono::steady_clock::now() - start, 1900ms);
  EXPECT_EQ(drain(), std::set<std::string>{"default/web"});
}

TEST_F(OwnedPodEventsTest, EnqueueOwnersForOtherOwnedObjects) {
  OwnedPodEvents e = events(false);
  e.enqueue_owners(*pod("rev", {{"app", "web"}}, ref_to("db")));
  EXPECT_EQ(drain(), std::set<std::string>{"default/db"});
  e.enqueue_owners(*pod("rev", {{"app", "web"}}, ref_to("gone")));
  EXPECT_EQ(drain(), std::set<std::string>{});
  e.enqueue_owners(*pod("rev", {{"app", "web"}}));
  EXPECT_EQ(drain(), (std::set<std::string>{"default/web", "default/other-web"}));
  EXPECT_TRUE(created_.empty());
  EXPECT_TRUE(deleted_.empty());
}

TEST_F(OwnedPodEventsTest, OwnerAndRevisionHandlers) {
  OwnedPodEvents e = events(false);
  client::EventHandlers owners = e.owner_handlers();
  ObjectPtr web = owners_.get("default", "web");
  ASSERT_NE(web, nullptr);
  owners.on_add(web);
  owners.on_update(web, web);
  EXPECT_EQ(drain(), std::set<std::string>{"default/web"});
  EXPECT_TRUE(forgotten_.empty());
  owners.on_delete(web);
  EXPECT_EQ(forgotten_, std::vector<std::string>{"default/web"});
  EXPECT_EQ(drain(), std::set<std::string>{"default/web"});

  client::EventHandlers revisions = e.revision_handlers();
  ObjectPtr rev1 = pod("rev", {{"app", "web"}}, ref_to("db"), "1");
  revisions.on_add(rev1);
  EXPECT_EQ(drain(), std::set<std::string>{"default/db"});
  revisions.on_update(rev1, rev1);  // a resync
  EXPECT_EQ(drain(), std::set<std::string>{});
  revisions.on_update(rev1, pod("rev", {{"app", "web"}}, Json(), "2"));
  EXPECT_EQ(drain(), (std::set<std::string>{"default/web", "default/other-web"}));
  revisions.on_delete(rev1);
  EXPECT_EQ(drain(), std::set<std::string>{"default/db"});

  client::EventHandlers pods = e.pod_handlers();
  pods.on_add(pod("p", {{"app", "web"}}, ref_to("web")));
  EXPECT_EQ(created_, std::vector<std::string>{"default/web"});
  EXPECT_EQ(drain(), std::set<std::string>{"default/web"});
}

TEST(SpecMinReadySeconds, IntegersOnly) {
  EXPECT_EQ(spec_min_ready_seconds(Json{{"spec", {{"minReadySeconds", 7}}}}), 7);
  EXPECT_EQ(spec_min_ready_seconds(Json{{"spec", {{"minReadySeconds", 7.0}}}}), 0);
  EXPECT_EQ(spec_min_ready_seconds(Json{{"spec", nullptr}}), 0);
}

}  // namespace
}  // namespace skiff::controllers
