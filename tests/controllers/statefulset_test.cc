#include <gtest/gtest.h>

#include <set>
#include <thread>

#include "client/fake_api_client.h"
#include "controller_test_util.h"
#include "controllers/controller_utils.h"
#include "controllers/statefulset/controller_history.h"
#include "controllers/statefulset/statefulset_controller.h"
#include "controllers/statefulset/statefulset_utils.h"

namespace skiff::controllers {
namespace {

using client::FakeApiClient;
using testing::ControllerTest;
using testing::eventually;
using namespace client::resources;
using namespace std::chrono_literals;

Json web_labels() {
  return {{"app", "web"}};
}

Json stateful_set(const std::string& name, int replicas, Json extra_spec = Json::object()) {
  Json set = {{"apiVersion", "apps/v1"},
              {"kind", "StatefulSet"},
              {"metadata", {{"name", name}, {"namespace", "default"}, {"generation", 1}}},
              {"spec",
               {{"replicas", replicas},
                {"serviceName", "web-svc"},
                {"selector", {{"matchLabels", web_labels()}}},
                {"template",
                 {{"metadata", {{"labels", web_labels()}}},
                  {"spec", {{"containers", {{{"name", "c"}, {"image", "busybox:1"}}}}}}}}}}};
  for (auto it = extra_spec.begin(); it != extra_spec.end(); ++it) set["spec"][it.key()] = *it;
  return set;
}

class StatefulSetControllerTest : public ControllerTest<> {
 protected:
  ~StatefulSetControllerTest() override {
    if (controller_) controller_->stop();
    informers_.stop();
  }

  void start() {
    controller_ = std::make_unique<StatefulSetController>(ctx_);
    informers_.start();
    controller_->start();
  }

  Json get(const client::Resource& r, const std::string& name) {
    auto got = api_.get(r, "default", name);
    return got.is_ok() ? got.value() : Json();
  }

  bool exists(const std::string& pod) { return !get(kPods, pod).is_null(); }

  Json status() {
    Json set = get(kStatefulSets, "web");
    return set.is_object() && set.contains("status") ? set["status"] : Json::object();
  }

  std::set<std::string> pod_names() {
    std::set<std::string> names;
    Json listed = api_.list(kPods, "default").value();
    for (const auto& p : listed["items"]) {
      names.insert(client::name_of(p));
    }
    return names;
  }

  std::vector<std::string> event_messages(const std::string& reason) {
    std::vector<std::string> out;
    Json listed = api_.list(kEvents, "").value();
    for (const auto& e : listed["items"]) {
      if (e.value("reason", "") == reason) out.push_back(e.value("message", ""));
    }
    return out;
  }

  bool has_event(const std::string& reason, const std::string& message) {
    for (const auto& m : event_messages(reason)) {
      if (m == message) return true;
    }
    return false;
  }

  // What the kubelet reports once a pod runs and passes its readiness probe.
  void make_ready(const std::string& name) { set_phase(name, "Running", true); }

  void set_phase(const std::string& name, const std::string& phase, bool ready) {
    for (int attempt = 0; attempt < 10; ++attempt) {
      Json p = get(kPods, name);
      ASSERT_TRUE(p.is_object()) << name;
      p["status"] = {{"phase", phase},
                     {"conditions",
                      {{{"type", "Ready"},
                        {"status", ready ? "True" : "False"},
                        {"lastTransitionTime", rfc3339(clock_.now_seconds())}}}}};
      if (api_.update(kPods, "default", p, {}, "status").is_ok()) return;
    }
    FAIL() << "could not update the status of pod " << name;
  }

  // Makes every pod of the set that is not yet Running and Ready so.
  void ready_all() {
    Json listed = api_.list(kPods, "default").value();
    for (const auto& p : listed["items"]) {
      if (!statefulset::is_running_and_ready(p) && !is_pod_terminating(p)) {
        make_ready(client::name_of(p));
      }
    }
  }

  void update_set(const std::function<void(Json&)>& edit) {
    for (int attempt = 0; attempt < 10; ++attempt) {
      Json set = get(kStatefulSets, "web");
      edit(set);
      if (api_.update(kStatefulSets, "default", set).is_ok()) return;
    }
    FAIL() << "could not update the StatefulSet";
  }

  void set_image(const std::string& image) {
    update_set([&](Json& s) { s["spec"]["template"]["spec"]["containers"][0]["image"] = image; });
  }

  // Holds pods in Terminating after deletion, as a kubelet would while containers stop.
  void hold(const std::string& pod) {
    ASSERT_TRUE(api_.patch(kPods, "default", pod, client::PatchType::kMerge,
                           R"({"metadata":{"finalizers":["skiff.test/hold"]}})")
                    .is_ok());
  }
  void release(const std::string& pod) {
    ASSERT_TRUE(api_.patch(kPods, "default", pod, client::PatchType::kMerge,
                           R"({"metadata":{"finalizers":null}})")
                    .is_ok());
  }
  bool terminating(const std::string& pod) {
    Json p = get(kPods, pod);
    return p.is_object() && is_pod_terminating(p);
  }

  std::string revision_of(const std::string& pod) {
    return statefulset::pod_revision(get(kPods, pod));
  }

  std::vector<Json> revisions() {
    std::vector<Json> out;
    Json listed = api_.list(kControllerRevisions, "default").value();
    for (auto& r : listed["items"]) out.push_back(r);
    std::sort(out.begin(), out.end(), [](const Json& a, const Json& b) {
      return a.value("revision", 0) < b.value("revision", 0);
    });
    return out;
  }

  std::vector<std::string> pod_actions(const std::string& verb) {
    std::vector<std::string> out;
    for (const auto& a : api_.actions(verb, "pods")) {
      if (a.subresource.empty()) out.push_back(a.name);
    }
    return out;
  }

  // Brings a set of `n` pods up, one at a time, as OrderedReady requires.
  void bring_up(int n) {
    for (int i = 0; i < n; ++i) {
      std::string name = "web-" + std::to_string(i);
      ASSERT_TRUE(eventually([&] { return exists(name); })) << name;
      make_ready(name);
    }
    ASSERT_TRUE(eventually([&] { return status().value("readyReplicas", 0) == n; }));
  }

  std::unique_ptr<StatefulSetController> controller_;
};

TEST(StatefulSetUtils, OrdinalsAndIdentity) {
  EXPECT_EQ(statefulset::parent_and_ordinal("web-12").ordinal, 12);
  EXPECT_EQ(statefulset::parent_and_ordinal("web-12").parent, "web");
  EXPECT_EQ(statefulset::parent_and_ordinal("my-db-0").parent, "my-db");
  EXPECT_EQ(statefulset::parent_and_ordinal("web").ordinal, -1);
  EXPECT_EQ(statefulset::parent_and_ordinal("web-").ordinal, -1);
  EXPECT_EQ(statefulset::parent_and_ordinal("web-x1").ordinal, -1);
  EXPECT_EQ(statefulset::parent_and_ordinal("web-99999999999").ordinal, -1);

  Json set = stateful_set("web", 2);
  set["metadata"]["uid"] = "uid-web";
  set["spec"]["volumeClaimTemplates"] = {
      {{"metadata", {{"name", "data"}, {"labels", {{"tier", "db"}}}}},
       {"spec", {{"accessModes", {"ReadWriteOnce"}}}}}};
  Json pod = statefulset::new_stateful_pod(set, set["spec"]["template"], 1, "web-abc");
  EXPECT_EQ(pod["metadata"]["name"], "web-1");
  EXPECT_EQ(pod["metadata"]["labels"][statefulset::kPodNameLabel], "web-1");
  EXPECT_EQ(pod["metadata"]["labels"][statefulset::kPodIndexLabel], "1");
  EXPECT_EQ(pod["metadata"]["labels"]["controller-revision-hash"], "web-abc");
  EXPECT_EQ(pod["metadata"]["labels"]["app"], "web");
  EXPECT_EQ(pod["spec"]["hostname"], "web-1");
  EXPECT_EQ(pod["spec"]["subdomain"], "web-svc");
  EXPECT_EQ(pod["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"], "data-web-1");
  EXPECT_TRUE(statefulset::identity_matches(set, pod));
  EXPECT_TRUE(statefulset::storage_matches(set, pod));
  auto claims = statefulset::claims_for(set, 1);
  ASSERT_EQ(claims.size(), 1u);
  EXPECT_EQ(claims[0]["metadata"]["labels"], (Json{{"tier", "db"}, {"app", "web"}}));

  pod["metadata"]["labels"].erase(statefulset::kPodNameLabel);
  EXPECT_FALSE(statefulset::identity_matches(set, pod));
  pod["spec"]["volumes"] = Json::array({{{"name", "data"}, {"emptyDir", Json::object()}}});
  EXPECT_FALSE(statefulset::storage_matches(set, pod));
  statefulset::update_storage(set, pod);
  EXPECT_TRUE(statefulset::storage_matches(set, pod));
  EXPECT_EQ(pod["spec"]["volumes"].size(), 1u);
}

TEST_F(StatefulSetControllerTest, CreatesPodsInOrderWaitingForEachToBeReady) {
  Json set = api_.seed(kStatefulSets, stateful_set("web", 3));
  start();
  ASSERT_TRUE(eventually([&] { return exists("web-0"); }));
  // Once the controller has seen web-0 (status counts it), it still waits for it to be ready.
  ASSERT_TRUE(eventually([&] { return status().value("replicas", 0) == 1; }));
  EXPECT_EQ(pod_names(), (std::set<std::string>{"web-0"}));

  Json pod0 = get(kPods, "web-0");
  EXPECT_EQ(pod0["metadata"]["labels"]["statefulset.kubernetes.io/pod-name"], "web-0");
  EXPECT_EQ(pod0["metadata"]["labels"]["apps.kubernetes.io/pod-index"], "0");
  EXPECT_EQ(pod0["metadata"]["labels"]["app"], "web");
  EXPECT_EQ(pod0["spec"]["hostname"], "web-0");
  EXPECT_EQ(pod0["spec"]["subdomain"], "web-svc");
  EXPECT_TRUE(is_controlled_by(pod0, client::uid_of(set)));
  EXPECT_EQ(pod0["metadata"]["ownerReferences"][0]["kind"], "StatefulSet");
  EXPECT_EQ(revision_of("web-0"), status()["updateRevision"]);

  // Running but not Ready is not enough.
  set_phase("web-0", "Running", false);
  ASSERT_TRUE(eventually([&] {
    return get(kPods, "web-0")["status"].value("phase", "") == "Running" &&
           status().value("replicas", 0) == 1;
  }));
  EXPECT_FALSE(exists("web-1"));

  make_ready("web-0");
  ASSERT_TRUE(eventually([&] { return exists("web-1"); }));
  ASSERT_TRUE(eventually([&] {
    Json s = status();
    return s.value("replicas", 0) == 2 && s.value("readyReplicas", 0) == 1;
  }));
  EXPECT_FALSE(exists("web-2"));
  make_ready("web-1");
  ASSERT_TRUE(eventually([&] { return exists("web-2"); }));
  make_ready("web-2");
  ASSERT_TRUE(eventually([&] {
    Json s = status();
    return s.value("replicas", 0) == 3 && s.value("readyReplicas", 0) == 3 &&
           s.value("availableReplicas", 0) == 3 && s.value("currentReplicas", 0) == 3 &&
           s.value("updatedReplicas", 0) == 3 && s.value("observedGeneration", 0) == 1;
  }));
  Json s = status();
  EXPECT_EQ(s["currentRevision"], s["updateRevision"]);
  EXPECT_EQ(s["collisionCount"], 0);
  EXPECT_EQ(pod_actions("create"), (std::vector<std::string>{"web-0", "web-1", "web-2"}));
  ASSERT_TRUE(eventually([&] { return event_messages("SuccessfulCreate").size() == 3; }));
  EXPECT_TRUE(has_event("SuccessfulCreate", "create Pod web-1 in StatefulSet web successful"));
}

TEST_F(StatefulSetControllerTest, ScalesDownInReverseOrderWaitingForTermination) {
  api_.seed(kStatefulSets, stateful_set("web", 3));
  start();
  bring_up(3);
  for (const char* p : {"web-0", "web-1", "web-2"}) hold(p);

  update_set([](Json& s) { s["spec"]["replicas"] = 1; });
  ASSERT_TRUE(eventually([&] { return terminating("web-2"); }));
  // web-1 goes only after web-2 is gone: once the controller has seen web-2 terminating (it
  // no longer counts as current), it waits.
  ASSERT_TRUE(eventually([&] {
    Json s = status();
    return s.value("observedGeneration", 0) == 2 && s.value("currentReplicas", 0) == 2;
  }));
  EXPECT_FALSE(terminating("web-1"));
  EXPECT_EQ(pod_actions("delete"), (std::vector<std::string>{"web-2"}));

  release("web-2");
  ASSERT_TRUE(eventually([&] { return !exists("web-2"); }));
  ASSERT_TRUE(eventually([&] { return terminating("web-1"); }));
  EXPECT_FALSE(terminating("web-0"));
  release("web-1");
  ASSERT_TRUE(eventually([&] {
    Json s = status();
    return !exists("web-1") && s.value("replicas", 0) == 1 && s.value("readyReplicas", 0) == 1;
  }));
  EXPECT_EQ(pod_actions("delete"), (std::vector<std::string>{"web-2", "web-1"}));
  ASSERT_TRUE(eventually([&] {
    return has_event("SuccessfulDelete", "delete Pod web-2 in StatefulSet web successful") &&
           has_event("SuccessfulDelete", "delete Pod web-1 in StatefulSet web successful");
  }));
  release("web-0");
}

TEST_F(StatefulSetControllerTest, ScaleDownWaitsWhileAPodIsUnhealthy) {
  api_.seed(kStatefulSets, stateful_set("web", 3));
  start();
  bring_up(3);
  set_phase("web-0", "Running", false);
  ASSERT_TRUE(eventually([&] { return status().value("readyReplicas", 0) == 2; }));
  update_set([](Json& s) { s["spec"]["replicas"] = 2; });
  ASSERT_TRUE(eventually([&] { return status().value("observedGeneration", 0) == 2; }));
  EXPECT_TRUE(exists("web-2"));
  EXPECT_TRUE(pod_actions("delete").empty());
  make_ready("web-0");
  ASSERT_TRUE(eventually([&] { return !exists("web-2"); }));
}

TEST_F(StatefulSetControllerTest, ParallelCreatesAndDeletesAtOnce) {
  api_.seed(
      kStatefulSets,
      stateful_set("web", 3, {{"podManagementPolicy", "Parallel"}, {"ordinals", {{"start", 5}}}}));
  start();
  // No pod waits for another to be ready.
  ASSERT_TRUE(eventually([&] {
    return pod_names() == std::set<std::string>{"web-5", "web-6", "web-7"};
  }));
  for (const char* p : {"web-5", "web-6", "web-7"}) hold(p);
  update_set([](Json& s) { s["spec"]["replicas"] = 1; });
  // Both condemned pods are deleted without waiting for either to terminate.
  ASSERT_TRUE(eventually([&] { return terminating("web-6") && terminating("web-7"); }));
  EXPECT_FALSE(terminating("web-5"));
  for (const char* p : {"web-5", "web-6", "web-7"}) release(p);
  ASSERT_TRUE(eventually([&] { return pod_names() == std::set<std::string>{"web-5"}; }));
}

TEST_F(StatefulSetControllerTest, RollingUpdateInReverseOrderDownToThePartition) {
  api_.seed(kStatefulSets, stateful_set("web", 3));
  start();
  bring_up(3);
  const std::string old_revision = status().value("updateRevision", "");

  update_set([](Json& s) {
    s["spec"]["template"]["spec"]["containers"][0]["image"] = "busybox:2";
    s["spec"]["updateStrategy"] = {{"type", "RollingUpdate"},
                                   {"rollingUpdate", {{"partition", 1}}}};
  });
  ASSERT_TRUE(eventually([&] { return status()["updateRevision"] != old_revision; }));
  const std::string new_revision = status().value("updateRevision", "");
  // web-2 is replaced first; nothing else moves until it is ready.
  ASSERT_TRUE(eventually([&] { return exists("web-2") && revision_of("web-2") == new_revision; }));
  EXPECT_EQ(get(kPods, "web-2")["spec"]["containers"][0]["image"], "busybox:2");
  ASSERT_TRUE(eventually([&] {
    Json s = status();
    return s.value("updatedReplicas", 0) == 1 && s.value("currentReplicas", 0) == 2;
  }));
  EXPECT_EQ(revision_of("web-1"), old_revision);
  EXPECT_EQ(pod_actions("delete"), (std::vector<std::string>{"web-2"}));

  make_ready("web-2");
  ASSERT_TRUE(eventually([&] { return exists("web-1") && revision_of("web-1") == new_revision; }));
  make_ready("web-1");
  ASSERT_TRUE(eventually([&] {
    Json s = status();
    return s.value("updatedReplicas", 0) == 2 && s.value("readyReplicas", 0) == 3;
  }));
  // The partition keeps web-0 at the old revision.
  EXPECT_EQ(revision_of("web-0"), old_revision);
  EXPECT_EQ(pod_actions("delete"), (std::vector<std::string>{"web-2", "web-1"}));
  EXPECT_EQ(status()["currentRevision"], old_revision);

  // A failed pod below the partition comes back at the current (old) revision.
  set_phase("web-0", "Failed", false);
  ASSERT_TRUE(eventually([&] {
    return pod_actions("delete").size() == 3 && exists("web-0") &&
           get(kPods, "web-0")["status"].is_null();
  }));
  EXPECT_EQ(revision_of("web-0"), old_revision);
  make_ready("web-0");

  // Lowering the partition finishes the rollout; the update revision becomes current.
  update_set([](Json& s) { s["spec"]["updateStrategy"]["rollingUpdate"]["partition"] = 0; });
  ASSERT_TRUE(eventually([&] {
    ready_all();
    Json s = status();
    return s.value("currentRevision", "") == new_revision && s.value("currentReplicas", 0) == 3 &&
           s.value("updatedReplicas", 0) == 3 && s.value("readyReplicas", 0) == 3;
  }));
  EXPECT_EQ(revision_of("web-0"), new_revision);
}

TEST_F(StatefulSetControllerTest, OnDeleteReplacesOnlyDeletedPods) {
  api_.seed(kStatefulSets, stateful_set("web", 2, {{"updateStrategy", {{"type", "OnDelete"}}}}));
  start();
  bring_up(2);
  const std::string old_revision = status().value("updateRevision", "");
  set_image("busybox:2");
  ASSERT_TRUE(eventually([&] {
    Json s = status();
    return s.value("observedGeneration", 0) == 2 && s["updateRevision"] != old_revision;
  }));
  EXPECT_TRUE(pod_actions("delete").empty());
  EXPECT_EQ(revision_of("web-1"), old_revision);

  ASSERT_TRUE(api_.remove(kPods, "default", "web-1").is_ok());
  ASSERT_TRUE(eventually([&] { return exists("web-1"); }));
  EXPECT_EQ(revision_of("web-1"), status()["updateRevision"]);
  EXPECT_EQ(get(kPods, "web-1")["spec"]["containers"][0]["image"], "busybox:2");
  EXPECT_EQ(revision_of("web-0"), old_revision);
}

TEST_F(StatefulSetControllerTest, RecreatesFailedAndSucceededPods) {
  api_.seed(kStatefulSets, stateful_set("web", 2));
  start();
  bring_up(2);
  const std::string uid = client::uid_of(get(kPods, "web-1"));
  set_phase("web-1", "Failed", false);
  ASSERT_TRUE(eventually([&] {
    Json p = get(kPods, "web-1");
    return p.is_object() && client::uid_of(p) != uid;
  }));
  ASSERT_TRUE(eventually([&] {
    return has_event("RecreatingFailedPod",
                     "StatefulSet default/web is recreating failed Pod web-1");
  }));
  make_ready("web-1");

  const std::string uid0 = client::uid_of(get(kPods, "web-0"));
  set_phase("web-0", "Succeeded", false);
  ASSERT_TRUE(eventually([&] {
    Json p = get(kPods, "web-0");
    return p.is_object() && client::uid_of(p) != uid0;
  }));
  ASSERT_TRUE(eventually([&] {
    return has_event("RecreatingTerminatedPod",
                     "StatefulSet default/web is recreating terminated Pod web-0");
  }));
}

TEST_F(StatefulSetControllerTest, RevisionsAreRecordedReusedAndTrimmed) {
  api_.seed(kStatefulSets, stateful_set("web", 0, {{"revisionHistoryLimit", 1}}));
  Json set = get(kStatefulSets, "web");
  start();
  ASSERT_TRUE(eventually([&] { return revisions().size() == 1; }));
  Json first = revisions()[0];
  const std::string hash = first["metadata"]["labels"].value("controller-revision-hash", "");
  EXPECT_EQ(first["metadata"]["name"], "web-" + hash);
  EXPECT_EQ(first["metadata"]["labels"]["app"], "web");
  EXPECT_EQ(first["revision"], 1);
  EXPECT_TRUE(is_controlled_by(first, client::uid_of(set)));
  EXPECT_EQ(first["data"]["spec"]["template"]["$patch"], "replace");
  EXPECT_EQ(first["data"]["spec"]["template"]["spec"]["containers"][0]["image"], "busybox:1");
  EXPECT_EQ(history::template_of(first), set["spec"]["template"]);

  set_image("busybox:2");
  ASSERT_TRUE(eventually([&] {
    auto revs = revisions();
    return revs.size() == 2 && revs[1].value("revision", 0) == 2 &&
           status().value("updateRevision", "") == client::name_of(revs[1]);
  }));
  // Back to the first template: its revision is reused with the next number.
  set_image("busybox:1");
  ASSERT_TRUE(eventually([&] {
    auto revs = revisions();
    return revs.size() == 2 && client::name_of(revs[1]) == client::name_of(first) &&
           revs[1].value("revision", 0) == 3 &&
           status().value("updateRevision", "") == client::name_of(first);
  }));
  // More templates: history beyond the limit (1 besides the live revision) is trimmed, oldest
  // first.
  set_image("busybox:3");
  ASSERT_TRUE(
      eventually([&] { return revisions().size() == 2 && revisions()[1]["revision"] == 4; }));
  set_image("busybox:4");
  ASSERT_TRUE(eventually([&] {
    auto revs = revisions();
    return revs.size() == 2 && revs[0].value("revision", 0) == 4 &&
           revs[1].value("revision", 0) == 5;
  }));
  EXPECT_EQ(history::template_of(revisions()[1])["spec"]["containers"][0]["image"], "busybox:4");
}

TEST_F(StatefulSetControllerTest, RevisionsInUseByPodsAreKept) {
  api_.seed(kStatefulSets, stateful_set("web", 1,
                                        {{"revisionHistoryLimit", 0},
                                         {"updateStrategy", {{"type", "OnDelete"}}}}));
  start();
  bring_up(1);
  const std::string old_revision = status().value("updateRevision", "");
  set_image("busybox:2");
  ASSERT_TRUE(eventually([&] { return revisions().size() == 2; }));
  set_image("busybox:3");
  ASSERT_TRUE(eventually([&] {
    auto revs = revisions();
    return revs.size() == 2 && revs[1].value("revision", 0) == 3;
  }));
  // The pod's revision (current) and the update revision stay; the unused one went.
  std::set<std::string> names;
  for (const auto& r : revisions()) names.insert(client::name_of(r));
  EXPECT_TRUE(names.count(old_revision));
  EXPECT_EQ(revision_of("web-0"), old_revision);
}

TEST_F(StatefulSetControllerTest, CreatesClaimsFromTemplates) {
  Json spec_extra = {{"volumeClaimTemplates",
                      {{{"metadata", {{"name", "data"}}},
                        {"spec",
                         {{"accessModes", {"ReadWriteOnce"}},
                          {"resources", {{"requests", {{"storage", "1Gi"}}}}}}}}}}};
  api_.seed(kStatefulSets, stateful_set("web", 1, spec_extra));
  start();
  ASSERT_TRUE(eventually([&] { return exists("web-0"); }));
  Json claim = get(kPersistentVolumeClaims, "data-web-0");
  ASSERT_TRUE(claim.is_object());
  EXPECT_EQ(claim["metadata"]["labels"]["app"], "web");
  EXPECT_EQ(claim["spec"]["resources"]["requests"]["storage"], "1Gi");
  Json pod = get(kPods, "web-0");
  bool mounted = false;
  for (const auto& v : pod["spec"]["volumes"]) {
    if (v["name"] == "data" && v["persistentVolumeClaim"]["claimName"] == "data-web-0") {
      mounted = true;
    }
  }
  EXPECT_TRUE(mounted);
  // The claim is created before the pod.
  auto actions = api_.actions();
  auto claim_at = std::find_if(actions.begin(), actions.end(), [](const auto& a) {
    return a.verb == "create" && a.resource == "persistentvolumeclaims";
  });
  auto pod_at = std::find_if(actions.begin(), actions.end(), [](const auto& a) {
    return a.verb == "create" && a.resource == "pods";
  });
  EXPECT_LT(claim_at - actions.begin(), pod_at - actions.begin());
  ASSERT_TRUE(eventually([&] {
    return has_event("SuccessfulCreate",
                     "create Claim data-web-0 Pod web-0 in StatefulSet web success");
  }));
}

TEST_F(StatefulSetControllerTest, ClaimsThatCannotBeMadeKeepThePodBack) {
  // An API without persistentvolumeclaims answers NotFound to the create.
  api_.fail("create", "persistentvolumeclaims",
            error(StatusCode::kNotFound, "the server could not find the requested resource"), 1000);
  Json spec_extra = {{"volumeClaimTemplates", {{{"metadata", {{"name", "data"}}}}}}};
  api_.seed(kStatefulSets, stateful_set("web", 1, spec_extra));
  start();
  ASSERT_TRUE(eventually([&] {
    for (const auto& m : event_messages("FailedCreate")) {
      if (m.rfind("create Pod web-0 in StatefulSet web failed error: failed to create PVC "
                  "data-web-0: this cluster does not serve persistentvolumeclaims",
                  0) == 0) {
        return true;
      }
    }
    return false;
  }));
  EXPECT_FALSE(exists("web-0"));
  EXPECT_TRUE(pod_actions("create").empty());
}

TEST_F(StatefulSetControllerTest, RetriesAfterApiFailures) {
  api_.fail("create", "pods", error(StatusCode::kInternal, "etcd is sad"), 2);
  api_.fail("update", "statefulsets.apps", error(StatusCode::kAborted, "conflict"), 1);
  api_.seed(kStatefulSets, stateful_set("web", 2));
  start();
  ASSERT_TRUE(eventually([&] {
    return has_event("FailedCreate",
                     "create Pod web-0 in StatefulSet web failed error: etcd is sad");
  }));
  bring_up(2);
  EXPECT_EQ(pod_names(), (std::set<std::string>{"web-0", "web-1"}));
}

TEST_F(StatefulSetControllerTest, AdoptsOrphansAndIgnoresOtherPods) {
  Json set = api_.seed(kStatefulSets, stateful_set("web", 2));
  // An orphan with the right name and labels is adopted, not replaced; one named for another
  // set is left alone.
  Json orphan = {
      {"metadata", {{"name", "web-0"}, {"namespace", "default"}, {"labels", web_labels()}}},
      {"spec", {{"containers", {{{"name", "c"}, {"image", "busybox:1"}}}}}}};
  api_.seed(kPods, orphan);
  Json stranger = orphan;
  stranger["metadata"]["name"] = "db-0";
  api_.seed(kPods, stranger);
  start();
  ASSERT_TRUE(
      eventually([&] { return is_controlled_by(get(kPods, "web-0"), client::uid_of(set)); }));
  EXPECT_FALSE(client::controller_of(get(kPods, "db-0")));
  // The adopted pod gets its identity labels once it runs.
  make_ready("web-0");
  ASSERT_TRUE(eventually([&] {
    return get(kPods, "web-0")["metadata"]["labels"].value(statefulset::kPodNameLabel, "") ==
           "web-0";
  }));
  ASSERT_TRUE(eventually([&] { return exists("web-1"); }));
  EXPECT_EQ(pod_actions("create"), (std::vector<std::string>{"web-1"}));
}

}  // namespace
}  // namespace skiff::controllers
