#include <gtest/gtest.h>

#include <atomic>
#include <set>
#include <thread>

#include "client/fake_api_client.h"
#include "controller_test_util.h"
#include "controllers/replicaset/replicaset_controller.h"

namespace skiff::controllers {
namespace {

using client::FakeApiClient;
using testing::ControllerTest;
using testing::eventually;
using namespace client::resources;
using namespace std::chrono_literals;

// A fake whose Nth pod creation fails (counting from 1), to watch slow start stop, and whose
// generated pod names never collide.
class FailingPodCreates : public FakeApiClient {
 public:
  Result<Json> create(const client::Resource& r, std::string_view ns, const Json& object,
                      const client::WriteOptions& options, std::string_view name,
                      std::string_view subresource) override {
    if (r.resource == "pods" && subresource.empty()) {
      int n = ++pod_creates;
      if (n == fail_at.load()) return error(StatusCode::kInternal, "injected create failure");
      // Unique generated names: the fake's random suffixes can collide across 500 pods.
      Json named = object;
      if (named["metadata"].value("name", "").empty()) {
        named["metadata"]["name"] =
            named["metadata"].value("generateName", "") + "p" + std::to_string(n);
      }
      return FakeApiClient::create(r, ns, named, options, name, subresource);
    }
    return FakeApiClient::create(r, ns, object, options, name, subresource);
  }
  std::atomic<int> pod_creates{0};
  std::atomic<int> fail_at{0};
};

Json web_labels() {
  return {{"app", "web"}};
}

Json replica_set(const std::string& name, int replicas, Json labels = web_labels()) {
  return {{"apiVersion", "apps/v1"},
          {"kind", "ReplicaSet"},
          {"metadata", {{"name", name}, {"namespace", "default"}, {"generation", 1}}},
          {"spec",
           {{"replicas", replicas},
            {"selector", {{"matchLabels", labels}}},
            {"template",
             {{"metadata", {{"labels", labels}}},
              {"spec", {{"containers", {{{"name", "c"}, {"image", "busybox"}}}}}}}}}}};
}

Json owner_ref(const Json& owner, const std::string& kind = "ReplicaSet",
               const std::string& api_version = "apps/v1") {
  return Json::array({{{"apiVersion", api_version},
                       {"kind", kind},
                       {"name", owner["metadata"]["name"]},
                       {"uid", owner["metadata"]["uid"]},
                       {"controller", true}}});
}

Json pod(const std::string& name, Json labels, Json owner_refs = Json()) {
  Json p = {{"metadata", {{"name", name}, {"namespace", "default"}, {"labels", labels}}},
            {"spec", {{"containers", {{{"name", "c"}, {"image", "busybox"}}}}}},
            {"status", {{"phase", "Pending"}}}};
  if (!owner_refs.is_null()) p["metadata"]["ownerReferences"] = owner_refs;
  return p;
}

Json ready_status(int64_t since, const std::string& phase = "Running") {
  return {{"phase", phase},
          {"conditions",
           {{{"type", "Ready"}, {"status", "True"}, {"lastTransitionTime", rfc3339(since)}}}}};
}

class ReplicaSetControllerTest : public ControllerTest<FailingPodCreates> {
 protected:
  ReplicaSetControllerTest() : ControllerTest(options()) {}

  ~ReplicaSetControllerTest() override {
    if (controller_) controller_->stop();
    informers_.stop();
  }

  static ControllerOptions options() {
    ControllerOptions o;
    o.workers = 2;
    return o;
  }

  // Builds the controller; `run` starts informers and workers.
  void make(const ReplicaSetKind& kind = replica_set_kind(), bool run = true) {
    controller_ = std::make_unique<ReplicaSetController>(ctx_, kind);
    if (run) {
      informers_.start();
      controller_->start();
    }
  }

  std::vector<Json> pods(bool active_only = true) {
    std::vector<Json> out;
    Json listed = api_.list(kPods, "default").value();
    for (auto& p : listed["items"]) {
      if (!active_only || is_pod_active(p)) out.push_back(p);
    }
    return out;
  }

  std::set<std::string> pod_names() {
    std::set<std::string> names;
    for (const auto& p : pods()) names.insert(client::name_of(p));
    return names;
  }

  Json get(const client::Resource& r, const std::string& name) {
    return api_.get(r, "default", name).value();
  }

  // The status, or {} before the controller wrote one.
  Json status_of(const client::Resource& r, const std::string& name) {
    Json obj = get(r, name);
    return obj.contains("status") && obj["status"].is_object() ? obj["status"] : Json::object();
  }

  std::vector<Json> events(const std::string& reason) {
    std::vector<Json> out;
    Json listed = api_.list(kEvents, "").value();
    for (auto& e : listed["items"]) {
      if (e.value("reason", "") == reason) out.push_back(e);
    }
    return out;
  }

  void set_pod_status(const std::string& name, Json status) {
    for (int attempt = 0; attempt < 10; ++attempt) {
      Json p = get(kPods, name);
      p["status"] = status;
      if (api_.update(kPods, "default", p, {}, "status").is_ok()) return;
    }
    FAIL() << "could not update the status of pod " << name;
  }

  std::unique_ptr<ReplicaSetController> controller_;
};

TEST(SlowStartBatch, DoublesBatchesAndStopsAfterAFailedBatch) {
  std::atomic<int> calls{0};
  auto ok = slow_start_batch(10, 1, [&] {
    ++calls;
    return Status::ok();
  });
  EXPECT_EQ(ok.successes, 10);
  EXPECT_TRUE(ok.error.is_ok());
  EXPECT_EQ(calls.load(), 10);

  // Batches of 1, 2, 4: the 4th call fails, the rest of its batch still runs, the batch of
  // 3 after it never starts.
  calls = 0;
  auto failed = slow_start_batch(10, 1, [&]() -> Status {
    if (++calls == 4) return error(StatusCode::kInternal, "boom");
    return Status::ok();
  });
  EXPECT_EQ(calls.load(), 7);
  EXPECT_EQ(failed.successes, 6);
  EXPECT_EQ(failed.error.message(), "boom");

  calls = 0;
  auto first = slow_start_batch(5, 1, [&]() -> Status {
    ++calls;
    return error(StatusCode::kInternal, "no");
  });
  EXPECT_EQ(calls.load(), 1);
  EXPECT_EQ(first.successes, 0);
}

TEST(PodsToDelete, UpstreamRanking) {
  const int64_t t = 1'700'000'000;
  auto make = [&](const std::string& name, const std::string& node, Json status, int64_t created) {
    Json p = pod(name, web_labels());
    p["metadata"]["creationTimestamp"] = rfc3339(created);
    if (!node.empty()) p["spec"]["nodeName"] = node;
    p["status"] = status;
    return std::make_shared<const Json>(p);
  };
  Json not_ready = {{"phase", "Running"},
                    {"conditions", {{{"type", "Ready"}, {"status", "False"}}}}};
  std::vector<ObjectPtr> pods = {
      make("ready-old", "n2", ready_status(t - 1000), t - 2000),
      make("running-not-ready", "n1", not_ready, t - 2000),
      make("unscheduled", "", {{"phase", "Pending"}}, t - 2000),
      make("ready-new", "n3", ready_status(t - 10), t - 2000),
      make("unknown", "n1", {{"phase", "Unknown"}}, t - 2000),
      make("pending", "n1", {{"phase", "Pending"}}, t - 2000),
  };
  Json restarted = ready_status(t - 1000);
  restarted["containerStatuses"] = {{{"name", "c"}, {"restartCount", 5}}};
  pods.push_back(make("ready-old-restarted", "n4", restarted, t - 2000));
  pods.push_back(make("ready-old-younger", "n5", ready_status(t - 1000), t - 1500));

  auto order = pods_to_delete(pods, {}, static_cast<int>(pods.size()) - 1);
  std::vector<std::string> names;
  for (const auto& p : order) names.push_back(client::name_of(*p));
  EXPECT_EQ(names,
            (std::vector<std::string>{"unscheduled", "pending", "unknown", "running-not-ready",
                                      "ready-new", "ready-old-restarted", "ready-old-younger"}));

  // A lower deletion cost goes first among otherwise equal pods; then pods doubled up on a node
  // with more related pods.
  auto a = make("a", "n1", ready_status(t - 100), t - 100);
  auto b = make("b", "n2", ready_status(t - 100), t - 100);
  Json cheap = *b;
  cheap["metadata"]["annotations"] = {{"controller.kubernetes.io/pod-deletion-cost", "-5"}};
  auto b_cheap = std::make_shared<const Json>(cheap);
  EXPECT_EQ(client::name_of(*pods_to_delete({a, b_cheap}, {}, 1)[0]), "b");
  auto other_on_n2 = make("other", "n2", ready_status(t - 100), t - 100);
  EXPECT_EQ(client::name_of(*pods_to_delete({a, b}, {a, b, other_on_n2}, 1)[0]), "b");
  EXPECT_EQ(pods_to_delete({a, b}, {}, 5).size(), 2u);
}

TEST_F(ReplicaSetControllerTest, CreatesPodsAndReportsStatus) {
  make();
  Json rs = api_.seed(kReplicaSets, replica_set("web", 3));
  ASSERT_TRUE(eventually([&] { return pods().size() == 3; }));
  for (const auto& p : pods()) {
    EXPECT_EQ(p["metadata"]["generateName"], "web-");
    EXPECT_EQ(p["metadata"]["labels"], web_labels());
    EXPECT_TRUE(is_controlled_by(p, client::uid_of(rs)));
    const Json& ref = p["metadata"]["ownerReferences"][0];
    EXPECT_EQ(ref["kind"], "ReplicaSet");
    EXPECT_EQ(ref["apiVersion"], "apps/v1");
  }
  ASSERT_TRUE(eventually([&] {
    Json s = status_of(kReplicaSets, "web");
    return s.value("replicas", 0) == 3 && s.value("fullyLabeledReplicas", 0) == 3 &&
           s.value("observedGeneration", 0) == 1;
  }));
  EXPECT_EQ(status_of(kReplicaSets, "web").value("readyReplicas", 0), 0);
  ASSERT_TRUE(eventually([&] { return events("SuccessfulCreate").size() == 3; }));
  std::set<std::string> messages;
  for (const auto& e : events("SuccessfulCreate")) {
    messages.insert(e.value("message", ""));
    EXPECT_EQ(e["involvedObject"]["kind"], "ReplicaSet");
    EXPECT_EQ(e["source"]["component"], "replicaset-controller");
  }
  std::set<std::string> expected;
  for (const auto& n : pod_names()) expected.insert("Created pod: " + n);
  EXPECT_EQ(messages, expected);

  for (const auto& n : pod_names()) set_pod_status(n, ready_status(clock_.now_seconds()));
  ASSERT_TRUE(eventually([&] {
    Json s = status_of(kReplicaSets, "web");
    return s.value("readyReplicas", 0) == 3 && s.value("availableReplicas", 0) == 3;
  }));
  // Nothing more is created once the count is right.
  EXPECT_EQ(api_.actions("create", "pods").size(), 3u);
}

TEST_F(ReplicaSetControllerTest, ScalesDownInRankOrder) {
  make();
  Json rs = api_.seed(kReplicaSets, replica_set("web", 6));
  ASSERT_TRUE(eventually([&] { return pods().size() == 6; }));
  ASSERT_TRUE(eventually([&] { return status_of(kReplicaSets, "web")["replicas"] == 6; }));
  const std::set<std::string> created = pod_names();
  std::vector<std::string> names(created.begin(), created.end());
  const int64_t t = clock_.now_seconds();
  // names[0]: unscheduled Pending; [1]: scheduled Pending; [2]: running, not ready;
  // [3]: ready recently; [4], [5]: ready for long.
  auto schedule = [&](const std::string& n, const std::string& node) {
    Json p = get(kPods, n);
    p["spec"]["nodeName"] = node;
    ASSERT_TRUE(api_.update(kPods, "default", p).is_ok());
  };
  for (int i = 1; i < 6; ++i) schedule(names[i], "node-" + std::to_string(i));
  set_pod_status(names[2], {{"phase", "Running"}});
  set_pod_status(names[3], ready_status(t - 5));
  set_pod_status(names[4], ready_status(t - 500));
  set_pod_status(names[5], ready_status(t - 500));
  ASSERT_TRUE(
      eventually([&] { return status_of(kReplicaSets, "web").value("readyReplicas", 0) == 3; }));

  Json scaled = get(kReplicaSets, "web");
  scaled["spec"]["replicas"] = 2;
  ASSERT_TRUE(api_.update(kReplicaSets, "default", scaled).is_ok());
  ASSERT_TRUE(eventually([&] { return pods().size() == 2; }));
  EXPECT_EQ(pod_names(), (std::set<std::string>{names[4], names[5]}));
  ASSERT_TRUE(eventually([&] { return events("SuccessfulDelete").size() == 4; }));
  std::set<std::string> messages;
  for (const auto& e : events("SuccessfulDelete")) messages.insert(e.value("message", ""));
  EXPECT_TRUE(messages.count("Deleted pod: " + names[0]));
  EXPECT_TRUE(messages.count("Deleted pod: " + names[3]));
  ASSERT_TRUE(eventually([&] {
    Json s = status_of(kReplicaSets, "web");
    return s.value("replicas", 0) == 2 && s.value("observedGeneration", 0) == 2;
  }));
}

TEST_F(ReplicaSetControllerTest, AdoptsOrphansReleasesMismatchesIgnoresOthers) {
  Json rs = api_.seed(kReplicaSets, replica_set("web", 2));
  // Another ReplicaSet whose pod matches both selectors.
  Json foreign_labels = {{"app", "web"}, {"tier", "x"}};
  Json other = api_.seed(kReplicaSets, replica_set("other", 1, foreign_labels));
  api_.seed(kPods, pod("orphan", web_labels()));
  api_.seed(kPods, pod("relabelled", {{"app", "db"}}, owner_ref(rs)));
  api_.seed(kPods, pod("foreign", foreign_labels, owner_ref(other)));
  make();
  ASSERT_TRUE(eventually([&] {
    int mine = 0;
    for (const auto& p : pods()) mine += is_controlled_by(p, client::uid_of(rs));
    return mine == 2;
  }));
  EXPECT_TRUE(is_controlled_by(get(kPods, "orphan"), client::uid_of(rs)));
  EXPECT_EQ(client::controller_of(get(kPods, "relabelled")), nullptr);
  EXPECT_TRUE(is_controlled_by(get(kPods, "foreign"), client::uid_of(other)));
  // One adopted, one created; the foreign pod does not count.
  EXPECT_EQ(api_.actions("create", "pods").size(), 1u);
  ASSERT_TRUE(eventually([&] { return status_of(kReplicaSets, "web")["replicas"] == 2; }));
}

TEST_F(ReplicaSetControllerTest, RelabelledPodIsReleasedAndReplaced) {
  make();
  Json rs = api_.seed(kReplicaSets, replica_set("web", 2));
  ASSERT_TRUE(eventually([&] { return pods().size() == 2; }));
  std::string moved = *pod_names().begin();
  Json p = get(kPods, moved);
  p["metadata"]["labels"] = {{"app", "debug"}};
  ASSERT_TRUE(api_.update(kPods, "default", p).is_ok());
  // One snapshot for both checks: reading the moved pod separately could see the release
  // while the list was taken before it, with the replacement not yet created.
  ASSERT_TRUE(eventually([&] {
    int mine = 0;
    bool released = false;
    for (const auto& q : pods()) {
      mine += is_controlled_by(q, client::uid_of(rs));
      if (client::name_of(q) == moved) released = client::controller_of(q) == nullptr;
    }
    return mine == 2 && released;
  }));
  EXPECT_EQ(pods().size(), 3u);
}

TEST_F(ReplicaSetControllerTest, DeletedPodIsReplaced) {
  make();
  api_.seed(kReplicaSets, replica_set("web", 2));
  ASSERT_TRUE(eventually([&] { return pods().size() == 2; }));
  std::string victim = *pod_names().begin();
  ASSERT_TRUE(api_.remove(kPods, "default", victim).is_ok());
  ASSERT_TRUE(eventually([&] { return pods().size() == 2 && !pod_names().count(victim); }));
  EXPECT_EQ(api_.actions("create", "pods").size(), 3u);
}

TEST_F(ReplicaSetControllerTest, ExpectationsHoldBackAStaleCache) {
  // Only the ReplicaSet informer runs: the pod cache never sees the pods created.
  make(replica_set_kind(), /*run=*/false);
  informers_.informer(kReplicaSets).start();
  api_.seed(kReplicaSets, replica_set("web", 3));
  ASSERT_TRUE(eventually([&] { return informers_.informer(kReplicaSets).size() == 1; }));
  ASSERT_TRUE(controller_->reconcile("default/web").is_ok());
  EXPECT_EQ(pods().size(), 3u);
  // The cache still shows no pods, but three creations are expected: nothing more is done.
  ASSERT_TRUE(controller_->reconcile("default/web").is_ok());
  ASSERT_TRUE(controller_->reconcile("default/web").is_ok());
  EXPECT_EQ(pods().size(), 3u);
  // Expectations expire (a watch event that never comes must not wedge the controller).
  clock_.advance(6min);
  ASSERT_TRUE(controller_->reconcile("default/web").is_ok());
  EXPECT_EQ(pods().size(), 6u);
}

TEST_F(ReplicaSetControllerTest, SlowStartStopsAtErrorsAndReportsReplicaFailure) {
  make(replica_set_kind(), /*run=*/false);
  informers_.start();
  api_.fail_at = 4;
  api_.seed(kReplicaSets, replica_set("web", 10));
  ASSERT_TRUE(eventually([&] { return informers_.informer(kReplicaSets).size() == 1; }));
  Status s = controller_->reconcile("default/web");
  EXPECT_FALSE(s.is_ok());
  EXPECT_EQ(api_.pod_creates.load(), 7);  // batches of 1, 2 and 4; the batch of 3 never ran
  EXPECT_EQ(pods().size(), 6u);
  const Json after_first = get(kReplicaSets, "web");
  const Json* failure = find_condition(after_first["status"], "ReplicaFailure");
  ASSERT_NE(failure, nullptr);
  EXPECT_EQ(failure->value("reason", ""), "FailedCreate");
  EXPECT_EQ(failure->value("status", ""), "True");
  EXPECT_NE(failure->value("message", "").find("injected create failure"), std::string::npos);
  ASSERT_TRUE(eventually([&] { return events("FailedCreate").size() == 1; }));
  EXPECT_EQ(events("FailedCreate")[0].value("type", ""), "Warning");
  EXPECT_EQ(events("FailedCreate")[0].value("message", ""),
            "Error creating: injected create failure");

  // The failed and skipped creations are not expected: once the six are seen, the next sync
  // makes the rest and clears the condition.
  ASSERT_TRUE(eventually([&] {
    (void)controller_->reconcile("default/web");
    return pods().size() == 10;
  }));
  ASSERT_TRUE(eventually([&] {
    (void)controller_->reconcile("default/web");
    Json status = status_of(kReplicaSets, "web");
    return status.value("replicas", 0) == 10 && !find_condition(status, "ReplicaFailure");
  }));
  EXPECT_EQ(api_.pod_creates.load(), 11);
}

TEST_F(ReplicaSetControllerTest, BurstLimitsCreatesPerSync) {
  make(replica_set_kind(), /*run=*/false);
  informers_.informer(kReplicaSets).start();
  api_.seed(kReplicaSets, replica_set("web", kBurstReplicas + 20));
  ASSERT_TRUE(eventually([&] { return informers_.informer(kReplicaSets).size() == 1; }));
  ASSERT_TRUE(controller_->reconcile("default/web").is_ok());
  EXPECT_EQ(api_.pod_creates.load(), kBurstReplicas);
}

TEST_F(ReplicaSetControllerTest, FailedDeleteIsRetried) {
  make();
  api_.seed(kReplicaSets, replica_set("web", 2));
  ASSERT_TRUE(eventually([&] { return pods().size() == 2; }));
  api_.fail("delete", "pods", error(StatusCode::kUnavailable, "try later"));
  Json scaled = get(kReplicaSets, "web");
  scaled["spec"]["replicas"] = 1;
  ASSERT_TRUE(api_.update(kReplicaSets, "default", scaled).is_ok());
  // The failed delete lowers the expectations, so the retry deletes without waiting for them.
  ASSERT_TRUE(eventually([&] { return pods().size() == 1; }));
  ASSERT_TRUE(eventually([&] { return events("FailedDelete").size() == 1; }));
  EXPECT_EQ(events("FailedDelete")[0].value("message", ""), "Error deleting: try later");
}

TEST_F(ReplicaSetControllerTest, AvailabilityWaitsForMinReadySeconds) {
  make();
  Json spec = replica_set("web", 2);
  spec["spec"]["minReadySeconds"] = 1;
  api_.seed(kReplicaSets, spec);
  ASSERT_TRUE(eventually([&] { return pods().size() == 2; }));
  for (const auto& n : pod_names()) set_pod_status(n, ready_status(clock_.now_seconds()));
  ASSERT_TRUE(
      eventually([&] { return status_of(kReplicaSets, "web").value("readyReplicas", 0) == 2; }));
  EXPECT_EQ(status_of(kReplicaSets, "web").value("availableReplicas", 0), 0);
  // No event announces availability: the controller looks again minReadySeconds later on its
  // own (here: once the clock has moved on).
  clock_.advance(2s);
  ASSERT_TRUE(eventually(
      [&] { return status_of(kReplicaSets, "web").value("availableReplicas", 0) == 2; }));
}

TEST_F(ReplicaSetControllerTest, FullyLabeledCountsOnlyPodsWithEveryTemplateLabel) {
  Json spec = replica_set("web", 2);
  spec["spec"]["template"]["metadata"]["labels"]["tier"] = "front";
  Json rs = api_.seed(kReplicaSets, spec);
  // Matches the selector (app=web) but lacks tier=front.
  api_.seed(kPods, pod("partial", web_labels(), owner_ref(rs)));
  make();
  ASSERT_TRUE(eventually([&] {
    Json s = status_of(kReplicaSets, "web");
    return s.value("replicas", 0) == 2 && s.value("fullyLabeledReplicas", 0) == 1;
  }));
}

TEST_F(ReplicaSetControllerTest, ReplicationControllersUseAPlainSelectorMap) {
  make(replication_controller_kind());
  Json rc = {{"apiVersion", "v1"},
             {"kind", "ReplicationController"},
             {"metadata", {{"name", "legacy"}, {"namespace", "default"}, {"generation", 1}}},
             {"spec",
              {{"replicas", 2},
               {"selector", {{"app", "legacy"}}},
               {"template",
                {{"metadata", {{"labels", {{"app", "legacy"}}}}},
                 {"spec", {{"containers", {{{"name", "c"}, {"image", "busybox"}}}}}}}}}}};
  Json seeded = api_.seed(kReplicationControllers, rc);
  // A ReplicaSet-owned pod with matching labels is someone else's.
  Json rs = api_.seed(kReplicaSets, replica_set("web", 0, {{"app", "legacy"}}));
  api_.seed(kPods, pod("rs-pod", {{"app", "legacy"}}, owner_ref(rs)));
  ASSERT_TRUE(eventually([&] {
    int mine = 0;
    for (const auto& p : pods()) mine += is_controlled_by(p, client::uid_of(seeded));
    return mine == 2;
  }));
  for (const auto& p : pods()) {
    if (!is_controlled_by(p, client::uid_of(seeded))) continue;
    EXPECT_EQ(p["metadata"]["ownerReferences"][0]["kind"], "ReplicationController");
    EXPECT_EQ(p["metadata"]["ownerReferences"][0]["apiVersion"], "v1");
    EXPECT_EQ(p["metadata"]["generateName"], "legacy-");
  }
  ASSERT_TRUE(eventually([&] {
    Json s = status_of(kReplicationControllers, "legacy");
    return s.value("replicas", 0) == 2 && s.value("observedGeneration", 0) == 1;
  }));
  EXPECT_TRUE(is_controlled_by(get(kPods, "rs-pod"), client::uid_of(rs)));
  ASSERT_TRUE(eventually([&] {
    auto e = events("SuccessfulCreate");
    return e.size() == 2 && e[0]["source"]["component"] == "replication-controller" &&
           e[0]["involvedObject"]["kind"] == "ReplicationController";
  }));
}

}  // namespace
}  // namespace skiff::controllers
