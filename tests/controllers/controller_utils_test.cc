#include "controllers/controller_utils.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "client/fake_api_client.h"

namespace skiff::controllers {
namespace {

using client::resources::kPods;
using namespace std::chrono_literals;

Json pod(const std::string& name, Json labels, Json owner_refs = Json()) {
  Json p = {{"metadata", {{"namespace", "default"}, {"name", name}, {"labels", labels}}},
            {"spec", Json::object()}};
  if (!owner_refs.is_null()) p["metadata"]["ownerReferences"] = owner_refs;
  return p;
}

TEST(Expectations, SatisfiedOnceObservedOrExpired) {
  FakeClock clock;
  Expectations e(clock);
  EXPECT_TRUE(e.satisfied("ns/rs"));
  e.expect("ns/rs", 2, 0);
  EXPECT_FALSE(e.satisfied("ns/rs"));
  e.creation_observed("ns/rs");
  EXPECT_FALSE(e.satisfied("ns/rs"));
  e.lower("ns/rs", 1, 0);
  EXPECT_TRUE(e.satisfied("ns/rs"));
  e.expect("ns/rs", 0, 1);
  EXPECT_FALSE(e.satisfied("ns/rs"));
  clock.advance(6min);
  EXPECT_TRUE(e.satisfied("ns/rs"));
}

TEST(PodFromTemplate, CarriesTemplateAndControllerRef) {
  Json owner = {{"metadata", {{"name", "web"}, {"namespace", "shop"}, {"uid", "u-1"}}}};
  Json tmpl = {{"metadata", {{"labels", {{"app", "web"}}}, {"annotations", {{"a", "b"}}}}},
               {"spec", {{"containers", {{{"name", "c"}, {"image", "busybox"}}}}}}};
  Json p = pod_from_template(tmpl, owner, "ReplicaSet", "apps/v1", "web");
  EXPECT_EQ(p["metadata"]["generateName"], "web-");
  EXPECT_EQ(p["metadata"]["namespace"], "shop");
  EXPECT_EQ(p["metadata"]["labels"]["app"], "web");
  EXPECT_EQ(p["metadata"]["annotations"]["a"], "b");
  const Json& ref = p["metadata"]["ownerReferences"][0];
  EXPECT_EQ(ref["kind"], "ReplicaSet");
  EXPECT_EQ(ref["uid"], "u-1");
  EXPECT_TRUE(ref["controller"].get<bool>());
  EXPECT_TRUE(ref["blockOwnerDeletion"].get<bool>());
  EXPECT_EQ(p["spec"]["containers"][0]["image"], "busybox");
  EXPECT_TRUE(is_controlled_by(p, "u-1"));
  EXPECT_FALSE(is_controlled_by(p, "u-2"));
}

TEST(PodState, ActiveReadyAvailable) {
  Json p = pod("a", Json::object());
  EXPECT_TRUE(is_pod_active(p));
  p["status"] = {
      {"phase", "Running"},
      {"conditions",
       {{{"type", "Ready"}, {"status", "True"}, {"lastTransitionTime", "2026-01-01T00:00:00Z"}}}}};
  EXPECT_TRUE(is_pod_ready(p));
  int64_t t = parse_rfc3339("2026-01-01T00:00:00Z");
  EXPECT_TRUE(is_pod_available(p, 0, t));
  EXPECT_FALSE(is_pod_available(p, 10, t + 5));
  EXPECT_TRUE(is_pod_available(p, 10, t + 10));
  p["status"]["phase"] = "Succeeded";
  EXPECT_FALSE(is_pod_active(p));
  p["status"]["phase"] = "Running";
  p["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z";
  EXPECT_FALSE(is_pod_active(p));
}

TEST(SelectorOf, LabelSelectorsAndReplicationControllerMaps) {
  Json rs = {{"spec", {{"selector", {{"matchLabels", {{"app", "web"}}}}}}}};
  Json rc = {{"spec", {{"selector", {{"app", "web"}}}}}};
  Json none = {{"spec", Json::object()}};
  Json web = pod("a", {{"app", "web"}});
  Json db = pod("b", {{"app", "db"}});
  EXPECT_TRUE(labels_match(selector_of(rs), web));
  EXPECT_FALSE(labels_match(selector_of(rs), db));
  EXPECT_TRUE(labels_match(selector_of(rc), web));
  EXPECT_FALSE(labels_match(selector_of(none), web));
}

TEST(ClaimPods, AdoptsOrphansReleasesMismatchesIgnoresOthers) {
  client::FakeApiClient api;
  Json owner = {{"metadata", {{"name", "web"}, {"namespace", "default"}, {"uid", "owner"}}}};
  Json mine = {{{"apiVersion", "apps/v1"},
                {"kind", "ReplicaSet"},
                {"name", "web"},
                {"uid", "owner"},
                {"controller", true}}};
  Json theirs = {{{"apiVersion", "apps/v1"},
                  {"kind", "ReplicaSet"},
                  {"name", "x"},
                  {"uid", "other"},
                  {"controller", true}}};
  api.seed(kPods, pod("kept", {{"app", "web"}}, mine));
  api.seed(kPods, pod("orphan", {{"app", "web"}}));
  api.seed(kPods, pod("relabelled", {{"app", "db"}}, mine));
  api.seed(kPods, pod("foreign", {{"app", "web"}}, theirs));
  api.seed(kPods, pod("unrelated", {{"app", "db"}}));
  std::vector<ObjectPtr> pods;
  Json listed = api.list(kPods, "default").value();
  for (auto& p : listed["items"]) {
    pods.push_back(std::make_shared<const Json>(p));
  }
  ASSERT_EQ(pods.size(), 5u);
  auto sel = api::LabelSelector::parse("app=web").value();
  auto claimed = claim_pods(api, owner, "ReplicaSet", "apps/v1", sel, pods);
  ASSERT_TRUE(claimed.is_ok());
  std::set<std::string> names;
  for (auto& p : claimed.value()) names.insert(client::name_of(*p));
  EXPECT_EQ(names, (std::set<std::string>{"kept", "orphan"}));
  EXPECT_TRUE(is_controlled_by(api.get(kPods, "default", "orphan").value(), "owner"));
  EXPECT_EQ(client::controller_of(api.get(kPods, "default", "relabelled").value()), nullptr);
  EXPECT_TRUE(is_controlled_by(api.get(kPods, "default", "foreign").value(), "other"));
  EXPECT_EQ(client::controller_of(api.get(kPods, "default", "unrelated").value()), nullptr);
}

TEST(ClaimObjects, CanAdoptIsAskedOnceAndRefusalIsTheError) {
  client::FakeApiClient api;
  Json owner = {{"metadata", {{"name", "web"}, {"namespace", "default"}, {"uid", "owner"}}}};
  Json mine = {{{"apiVersion", "apps/v1"},
                {"kind", "Deployment"},
                {"name", "web"},
                {"uid", "owner"},
                {"controller", true}}};
  api.seed(client::resources::kReplicaSets, pod("kept", {{"app", "web"}}, mine));
  api.seed(client::resources::kReplicaSets, pod("orphan-1", {{"app", "web"}}));
  api.seed(client::resources::kReplicaSets, pod("orphan-2", {{"app", "web"}}));
  api.seed(client::resources::kReplicaSets, pod("relabelled", {{"app", "db"}}, mine));
  std::vector<ObjectPtr> objects;
  Json listed = api.list(client::resources::kReplicaSets, "default").value();
  for (auto& o : listed["items"]) objects.push_back(std::make_shared<const Json>(o));
  ASSERT_EQ(objects.size(), 4u);
  auto web = [](const Json& o) { return o["metadata"]["labels"].value("app", "") == "web"; };
  int asked = 0;
  auto refuse = [&asked] {
    ++asked;
    return error(StatusCode::kAborted, "owner changed");
  };
  auto claimed = claim_objects(api, client::resources::kReplicaSets, owner, "Deployment", "apps/v1",
                               web, objects, refuse);
  EXPECT_EQ(asked, 1);
  ASSERT_FALSE(claimed.is_ok());
  EXPECT_EQ(claimed.status().code(), StatusCode::kAborted);
  EXPECT_EQ(client::controller_of(
                api.get(client::resources::kReplicaSets, "default", "orphan-1").value()),
            nullptr);
  // The release does not wait for can_adopt.
  EXPECT_EQ(client::controller_of(
                api.get(client::resources::kReplicaSets, "default", "relabelled").value()),
            nullptr);

  // An owner being deleted neither adopts nor releases.
  owner["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z";
  objects.clear();
  listed = api.list(client::resources::kReplicaSets, "default").value();
  for (auto& o : listed["items"]) objects.push_back(std::make_shared<const Json>(o));
  auto db = [](const Json& o) { return o["metadata"]["labels"].value("app", "") == "db"; };
  claimed = claim_objects(api, client::resources::kReplicaSets, owner, "Deployment", "apps/v1", db,
                          objects);
  ASSERT_TRUE(claimed.is_ok());
  EXPECT_TRUE(claimed.value().empty());  // "kept" no longer matches but stays owned
  EXPECT_TRUE(is_controlled_by(api.get(client::resources::kReplicaSets, "default", "kept").value(),
                               "owner"));
  EXPECT_EQ(client::controller_of(
                api.get(client::resources::kReplicaSets, "default", "relabelled").value()),
            nullptr);
}

TEST(SetCondition, KeepsTransitionTimeWhenStatusIsUnchanged) {
  Json status = Json::object();
  set_condition(status, {{"type", "Available"}, {"status", "True"}}, "t1");
  set_condition(status, {{"type", "Available"}, {"status", "True"}, {"reason", "R"}}, "t2");
  ASSERT_EQ(status["conditions"].size(), 1u);
  EXPECT_EQ(status["conditions"][0]["lastTransitionTime"], "t1");
  EXPECT_EQ(status["conditions"][0]["reason"], "R");
  set_condition(status, {{"type", "Available"}, {"status", "False"}}, "t3");
  EXPECT_EQ(status["conditions"][0]["lastTransitionTime"], "t3");
  EXPECT_EQ(find_condition(status, "Available")->value("status", ""), "False");
  EXPECT_EQ(find_condition(status, "Progressing"), nullptr);
}

TEST(Ticker, TicksEveryPeriodUntilStoppedAndRestarts) {
  std::atomic<int> ticks{0};
  Ticker ticker(20ms, [&] { ++ticks; });
  const auto started = std::chrono::steady_clock::now();
  ticker.start();
  while (ticks.load() < 3 && std::chrono::steady_clock::now() - started < 5s) {
    std::this_thread::sleep_for(5ms);
  }
  EXPECT_GE(ticks.load(), 3);
  EXPECT_GE(std::chrono::steady_clock::now() - started, 60ms);  // three periods at least
  ticker.stop();
  const int stopped_at = ticks.load();
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(ticks.load(), stopped_at);
  ticker.start();
  while (ticks.load() == stopped_at && std::chrono::steady_clock::now() - started < 10s) {
    std::this_thread::sleep_for(5ms);
  }
  EXPECT_GT(ticks.load(), stopped_at);
}

TEST(Ticker, StopWakesAWaitingTickerAtOnce) {
  Ticker ticker(std::chrono::hours(1), [] { FAIL() << "no tick within the period"; });
  ticker.start();
  const auto before = std::chrono::steady_clock::now();
  ticker.stop();
  EXPECT_LT(std::chrono::steady_clock::now() - before, 5s);
}

TEST(CreatedAt, SecondsOfTheCreationTimestamp) {
  EXPECT_EQ(created_at(Json{{"metadata", {{"creationTimestamp", "1970-01-01T00:01:40Z"}}}}), 100);
  EXPECT_EQ(created_at(Json{{"metadata", {{"creationTimestamp", "yesterday"}}}}), -1);
  EXPECT_EQ(created_at(Json{{"metadata", nullptr}}), -1);
  EXPECT_EQ(created_at(Json::object()), -1);
}

}  // namespace
}  // namespace skiff::controllers
