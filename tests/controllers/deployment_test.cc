#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <thread>

#include "client/fake_api_client.h"
#include "controller_test_util.h"
#include "controllers/controller_utils.h"
#include "controllers/deployment/deployment_controller.h"
#include "controllers/deployment/deployment_util.h"
#include "controllers/replicaset/replicaset_controller.h"

namespace skiff::controllers {
namespace {

using client::FakeApiClient;
using testing::ControllerTest;
using testing::eventually;
using namespace client::resources;
using namespace deployment;
using namespace std::chrono_literals;

Json make_deployment(const std::string& name, int replicas, const std::string& image,
                     Json extra_spec = Json::object()) {
  Json labels = {{"app", name}};
  Json d = {{"apiVersion", "apps/v1"},
            {"kind", "Deployment"},
            {"metadata",
             {{"name", name},
              {"namespace", "default"},
              {"annotations", {{"kubernetes.io/change-cause", "first release"}}}}},
            {"spec",
             {{"replicas", replicas},
              {"selector", {{"matchLabels", labels}}},
              {"template",
               {{"metadata", {{"labels", labels}}},
                {"spec", {{"containers", {{{"name", "app"}, {"image", image}}}}}}}}}}};
  d["spec"].update(extra_spec);
  return d;
}

class DeploymentControllerTest : public ControllerTest<> {
 protected:
  // With `resync`, every cached object is handed to the handlers again that often.
  explicit DeploymentControllerTest(std::chrono::milliseconds resync = 0ms)
      : ControllerTest(options(), resync) {}

  ~DeploymentControllerTest() override {
    if (deployments_) deployments_->stop();
    if (replica_sets_) replica_sets_->stop();
    informers_.stop();
  }

  static ControllerOptions options() {
    ControllerOptions o;
    o.workers = 2;
    return o;
  }

  // Runs the Deployment and ReplicaSet controllers.
  void start() {
    replica_sets_ = new_replicaset_controller(ctx_);
    deployments_ = std::make_unique<DeploymentController>(ctx_);
    informers_.start();
    replica_sets_->start();
    deployments_->start();
  }

  Json create(Json d) { return api_.create(kDeployments, "default", d).value(); }

  Json get(const client::Resource& r, const std::string& name) {
    return api_.get(r, "default", name).value();
  }
  // The Deployment, with an empty status before the controller wrote one.
  Json deployment(const std::string& name = "web") {
    Json d = get(kDeployments, name);
    if (!d["status"].is_object()) d["status"] = Json::object();
    return d;
  }

  // Applies `mutate` to the Deployment, retrying on conflicts (as kubectl edit would).
  void update(const std::string& name, const std::function<void(Json&)>& mutate) {
    for (int attempt = 0; attempt < 20; ++attempt) {
      Json d = deployment(name);
      mutate(d);
      auto r = api_.update(kDeployments, "default", d);
      if (r.is_ok()) return;
      ASSERT_EQ(r.status().code(), StatusCode::kAborted) << r.status().to_string();
    }
    FAIL() << "could not update deployment " << name;
  }
  void set_image(const std::string& name, const std::string& image) {
    update(name, [&](Json& d) { d["spec"]["template"]["spec"]["containers"][0]["image"] = image; });
  }

  std::vector<Json> replica_sets(const std::string& name = "web") {
    std::string uid = client::uid_of(deployment(name));
    std::vector<Json> out;
    Json listed = api_.list(kReplicaSets, "default").value();
    for (auto& rs : listed["items"]) {
      if (is_controlled_by(rs, uid)) out.push_back(rs);
    }
    return out;
  }
  std::optional<Json> rs_with_revision(int revision, const std::string& name = "web") {
    for (auto& rs : replica_sets(name)) {
      if (revision_of(rs) == revision) return rs;
    }
    return std::nullopt;
  }
  std::optional<Json> rs_with_image(const std::string& image, const std::string& name = "web") {
    for (auto& rs : replica_sets(name)) {
      if (rs["spec"]["template"]["spec"]["containers"][0]["image"] == image) return rs;
    }
    return std::nullopt;
  }
  int rs_replicas(const std::string& image) {
    auto rs = rs_with_image(image);
    return rs ? spec_replicas(*rs) : -1;
  }

  std::vector<Json> pods() {
    std::vector<Json> out;
    Json listed = api_.list(kPods, "default").value();
    for (auto& p : listed["items"]) {
      if (is_pod_active(p)) out.push_back(p);
    }
    return out;
  }

  // The kubelet's part: every pod not yet ready becomes ready now.
  void mark_all_ready() {
    for (const auto& p : pods()) {
      if (is_pod_ready(p)) continue;
      auto fresh = api_.get(kPods, "default", client::name_of(p));
      if (!fresh.is_ok()) continue;
      Json pod = fresh.value();
      pod["status"] = {{"phase", "Running"},
                       {"conditions",
                        {{{"type", "Ready"},
                          {"status", "True"},
                          {"lastTransitionTime", rfc3339(clock_.now_seconds())}}}}};
      (void)api_.update(kPods, "default", pod, {}, "status");
    }
  }

  // What `kubectl rollout status` waits for.
  bool rolled_out(const std::string& name = "web") {
    Json d = deployment(name);
    const Json& s = d["status"];
    int replicas = d["spec"].value("replicas", 1);
    return s.value("observedGeneration", 0) >= d["metadata"].value("generation", 0) &&
           s.value("updatedReplicas", 0) == replicas && s.value("replicas", 0) == replicas &&
           s.value("availableReplicas", 0) == replicas;
  }
  bool roll_out(const std::string& name = "web") {
    return eventually([&] {
      mark_all_ready();
      return rolled_out(name);
    });
  }

  std::vector<std::string> event_messages(const std::string& reason) {
    std::vector<std::string> out;
    Json listed = api_.list(kEvents, "").value();
    for (auto& e : listed["items"]) {
      if (e.value("reason", "") == reason) out.push_back(e.value("message", ""));
    }
    return out;
  }
  bool has_event(const std::string& reason, const std::string& message) {
    return eventually([&] {
      for (const auto& m : event_messages(reason)) {
        if (m == message) return true;
      }
      return false;
    });
  }

  static std::string condition_reason(const Json& d, const std::string& type) {
    const Json* c = find_condition(d["status"], type);
    return c ? c->value("reason", "") : "";
  }

  std::unique_ptr<Controller> replica_sets_;
  std::unique_ptr<DeploymentController> deployments_;
};

TEST(DeploymentUtil, SurgeRoundsUpUnavailableRoundsDown) {
  auto f = resolve_fenceposts("25%", "25%", 10).value();
  EXPECT_EQ(f.max_surge, 3);
  EXPECT_EQ(f.max_unavailable, 2);
  f = resolve_fenceposts(0, 0, 10).value();
  EXPECT_EQ(f.max_surge, 0);
  EXPECT_EQ(f.max_unavailable, 1);
  f = resolve_fenceposts("0%", "10%", 5).value();  // 0.5 rounds down to 0: both zero
  EXPECT_EQ(f.max_unavailable, 1);
  f = resolve_fenceposts(2, "50%", 3).value();
  EXPECT_EQ(f.max_surge, 2);
  EXPECT_EQ(f.max_unavailable, 1);
  EXPECT_FALSE(resolve_fenceposts("3", 0, 10).is_ok());
  EXPECT_FALSE(resolve_fenceposts("x%", 0, 10).is_ok());

  Json d = make_deployment("web", 4, "v1");
  apply_deployment_defaults(d);
  EXPECT_EQ(max_surge(d), 1);
  EXPECT_EQ(max_unavailable(d), 1);
  d["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] = 9;
  EXPECT_EQ(max_unavailable(d), 4);  // never more than replicas
  d["spec"]["strategy"] = {{"type", "Recreate"}};
  EXPECT_EQ(max_surge(d), 0);
  EXPECT_EQ(max_unavailable(d), 0);
}

TEST(DeploymentUtil, TemplateHashIsStableAndIgnoresTheHashLabel) {
  Json t = make_deployment("web", 1, "v1")["spec"]["template"];
  std::string h = pod_template_hash(t, std::nullopt);
  EXPECT_EQ(h, pod_template_hash(t, std::nullopt));
  EXPECT_FALSE(h.empty());
  EXPECT_EQ(h.find_first_not_of("bcdfghjklmnpqrstvwxz2456789"), std::string::npos);
  Json with_empties = t;
  with_empties["spec"]["volumes"] = Json::array();
  with_empties["metadata"]["creationTimestamp"] = nullptr;
  EXPECT_EQ(pod_template_hash(with_empties, std::nullopt), h);
  EXPECT_NE(pod_template_hash(t, 1), h);
  EXPECT_NE(pod_template_hash(t, 1), pod_template_hash(t, 2));
  Json other = t;
  other["spec"]["containers"][0]["image"] = "v2";
  EXPECT_NE(pod_template_hash(other, std::nullopt), h);

  Json labelled = t;
  labelled["metadata"]["labels"][kPodTemplateHashLabel] = h;
  EXPECT_TRUE(equal_ignore_hash(labelled, t));
  EXPECT_TRUE(equal_ignore_hash(with_empties, t));
  EXPECT_FALSE(equal_ignore_hash(other, t));
}

TEST(DeploymentUtil, NewReplicaSetAnnotationsAndRevisionHistory) {
  Json d = make_deployment("web", 4, "v1");
  apply_deployment_defaults(d);
  d["metadata"]["annotations"][kRevisionAnnotation] = "7";
  d["metadata"]["annotations"]["team"] = "blue";
  Json rs = {{"metadata", {{"name", "web-x"}}}};
  EXPECT_TRUE(set_new_replica_set_annotations(d, rs, "1", false));
  const Json& ann = rs["metadata"]["annotations"];
  EXPECT_EQ(ann[kRevisionAnnotation], "1");  // the Deployment's own revision is not copied
  EXPECT_EQ(ann["team"], "blue");
  EXPECT_EQ(ann[kChangeCauseAnnotation], "first release");
  EXPECT_EQ(ann[kDesiredReplicasAnnotation], "4");
  EXPECT_EQ(ann[kMaxReplicasAnnotation], "5");
  EXPECT_FALSE(ann.contains(kRevisionHistoryAnnotation));
  EXPECT_FALSE(set_new_replica_set_annotations(d, rs, "1", true));
  // Rolled back to: the new revision, and the old one remembered.
  EXPECT_TRUE(set_new_replica_set_annotations(d, rs, "3", true));
  EXPECT_EQ(rs["metadata"]["annotations"][kRevisionAnnotation], "3");
  EXPECT_EQ(rs["metadata"]["annotations"][kRevisionHistoryAnnotation], "1");
  EXPECT_TRUE(set_new_replica_set_annotations(d, rs, "5", true));
  EXPECT_EQ(rs["metadata"]["annotations"][kRevisionHistoryAnnotation], "1,3");
  // A higher revision is never lowered.
  EXPECT_FALSE(set_new_replica_set_annotations(d, rs, "4", true));
  EXPECT_EQ(rs["metadata"]["annotations"][kRevisionAnnotation], "5");
}

TEST(DeploymentUtil, NewReplicaSetSizeAndProportions) {
  Json d = make_deployment("web", 10, "v1");
  apply_deployment_defaults(d);  // surge 3
  auto rs = [](int replicas, int max_replicas) {
    Json r = {
        {"metadata", {{"annotations", {{kMaxReplicasAnnotation, std::to_string(max_replicas)}}}}},
        {"spec", {{"replicas", replicas}}}};
    return r;
  };
  auto ptr = [](Json j) { return std::make_shared<const Json>(std::move(j)); };
  Json new_rs = rs(0, 13);
  Json old_rs = rs(10, 13);
  EXPECT_EQ(new_rs_new_replicas(d, {ptr(old_rs), ptr(new_rs)}, new_rs).value(), 3);
  Json grown = rs(8, 13);
  EXPECT_EQ(new_rs_new_replicas(d, {ptr(grown), ptr(rs(5, 13))}, rs(5, 13)).value(), 5);
  // 10 → 15 replicas (surge 4): 19 allowed, 13 present, 6 to hand out.
  d["spec"]["replicas"] = 15;
  EXPECT_EQ(get_proportion(rs(8, 13), d, 6, 0), 4);  // round(8*19/13) - 8
  EXPECT_EQ(get_proportion(rs(5, 13), d, 6, 4), 2);  // round(5*19/13) - 5, capped at 2
  EXPECT_EQ(get_proportion(rs(0, 13), d, 6, 0), 0);  // never from zero
  d["spec"]["replicas"] = 0;
  EXPECT_EQ(get_proportion(rs(5, 13), d, -8, 0), -5);  // scaling to zero takes everything
  Json recreate = make_deployment("web", 3, "v1", {{"strategy", {{"type", "Recreate"}}}});
  EXPECT_EQ(new_rs_new_replicas(recreate, {ptr(rs(3, 3))}, rs(0, 3)).value(), 3);
}

TEST_F(DeploymentControllerTest, CreateMakesAHashNamedReplicaSetAtRevisionOne) {
  start();
  Json d = create(make_deployment("web", 3, "v1"));
  ASSERT_TRUE(eventually([&] { return replica_sets().size() == 1; }));
  Json rs = replica_sets()[0];
  const std::string hash = rs["metadata"]["labels"].value(kPodTemplateHashLabel, "");
  ASSERT_FALSE(hash.empty());
  EXPECT_EQ(client::name_of(rs), "web-" + hash);
  EXPECT_EQ(hash, pod_template_hash(d["spec"]["template"], std::nullopt));
  EXPECT_EQ(rs["spec"]["selector"]["matchLabels"],
            (Json{{"app", "web"}, {kPodTemplateHashLabel, hash}}));
  EXPECT_EQ(rs["spec"]["template"]["metadata"]["labels"][kPodTemplateHashLabel], hash);
  EXPECT_EQ(rs["spec"]["replicas"], 3);
  const Json& ann = rs["metadata"]["annotations"];
  EXPECT_EQ(ann[kRevisionAnnotation], "1");
  EXPECT_EQ(ann[kDesiredReplicasAnnotation], "3");
  EXPECT_EQ(ann[kMaxReplicasAnnotation], "4");
  EXPECT_EQ(ann[kChangeCauseAnnotation], "first release");
  const Json& ref = rs["metadata"]["ownerReferences"][0];
  EXPECT_EQ(ref["kind"], "Deployment");
  EXPECT_EQ(ref["apiVersion"], "apps/v1");
  EXPECT_TRUE(ref["controller"].get<bool>());
  ASSERT_TRUE(eventually([&] { return annotation(deployment(), kRevisionAnnotation) == "1"; }));
  ASSERT_TRUE(eventually([&] { return pods().size() == 3; }));
  for (const auto& p : pods()) EXPECT_EQ(p["metadata"]["labels"][kPodTemplateHashLabel], hash);

  ASSERT_TRUE(roll_out());
  ASSERT_TRUE(eventually(
      [&] { return condition_reason(deployment(), "Progressing") == "NewReplicaSetAvailable"; }));
  Json done = deployment();
  const Json& s = done["status"];
  EXPECT_EQ(s["observedGeneration"], done["metadata"]["generation"]);
  EXPECT_EQ(s["replicas"], 3);
  EXPECT_EQ(s["updatedReplicas"], 3);
  EXPECT_EQ(s["readyReplicas"], 3);
  EXPECT_EQ(s["availableReplicas"], 3);
  EXPECT_FALSE(s.contains("unavailableReplicas"));
  const Json* available = find_condition(s, "Available");
  ASSERT_NE(available, nullptr);
  EXPECT_EQ(available->value("status", ""), "True");
  EXPECT_EQ(available->value("reason", ""), "MinimumReplicasAvailable");
  EXPECT_EQ(available->value("message", ""), "Deployment has minimum availability.");
  const Json* progressing = find_condition(s, "Progressing");
  ASSERT_NE(progressing, nullptr);
  EXPECT_EQ(progressing->value("status", ""), "True");
  EXPECT_EQ(progressing->value("message", ""),
            "ReplicaSet \"web-" + hash + "\" has successfully progressed.");
  for (const char* f : {"lastUpdateTime", "lastTransitionTime"}) {
    EXPECT_TRUE(progressing->contains(f)) << f;
  }
  EXPECT_TRUE(has_event("ScalingReplicaSet", "Scaled up replica set web-" + hash + " from 0 to 3"));
}

TEST_F(DeploymentControllerTest, RollingUpdateStaysWithinSurgeAndUnavailability) {
  start();
  create(make_deployment("web", 4, "v1",
                         {{"strategy",
                           {{"type", "RollingUpdate"},
                            {"rollingUpdate", {{"maxSurge", 1}, {"maxUnavailable", 1}}}}}}));
  ASSERT_TRUE(roll_out());
  const std::string old_name = client::name_of(*rs_with_image("v1"));

  // Watch every pod change from here on: at least 3 (replicas - maxUnavailable) ready pods at
  // every step.
  Json listed = api_.list(kPods, "default").value();
  std::map<std::string, Json> seen;
  for (auto& p : listed["items"]) seen[client::name_of(p)] = p;
  client::ListOptions from;
  from.resource_version = listed["metadata"]["resourceVersion"];
  auto stream = std::move(api_.watch(kPods, "default", from).value());
  std::atomic<int> min_ready{100};
  std::thread watcher([&] {
    while (true) {
      auto ev = stream->next();
      if (!ev.is_ok()) return;
      const std::string name = client::name_of(ev->object);
      if (ev->type == client::WatchEventType::kDeleted) {
        seen.erase(name);
      } else {
        seen[name] = ev->object;
      }
      int ready = 0;
      for (const auto& [n, p] : seen) ready += is_pod_active(p) && is_pod_ready(p);
      if (ready < min_ready) min_ready = ready;
    }
  });
  std::map<std::string, int> sizes;
  for (const auto& rs : replica_sets()) sizes[client::name_of(rs)] = spec_replicas(rs);
  api_.clear_actions();

  set_image("web", "v2");
  bool done = roll_out();
  stream->cancel();
  watcher.join();
  ASSERT_TRUE(done);

  EXPECT_GE(min_ready.load(), 3);
  // Replay every ReplicaSet write: the total size never exceeds replicas + maxSurge = 5, and the
  // surge was used.
  int max_total = 0;
  for (const auto& a : api_.actions()) {
    if (a.resource != "replicasets.apps" || (a.verb != "create" && a.verb != "update")) continue;
    sizes[a.name] = spec_replicas(a.object);
    int total = 0;
    for (const auto& [n, size] : sizes) total += size;
    EXPECT_LE(total, 5) << "after " << a.verb << " of " << a.name;
    max_total = std::max(max_total, total);
  }
  EXPECT_EQ(max_total, 5);

  auto new_rs = rs_with_image("v2");
  ASSERT_TRUE(new_rs);
  EXPECT_EQ(annotation(*new_rs, kRevisionAnnotation), "2");
  EXPECT_EQ(spec_replicas(*new_rs), 4);
  EXPECT_EQ(rs_replicas("v1"), 0);
  EXPECT_EQ(annotation(*rs_with_image("v1"), kRevisionAnnotation), "1");
  ASSERT_TRUE(eventually([&] { return annotation(deployment(), kRevisionAnnotation) == "2"; }));
  EXPECT_TRUE(has_event("ScalingReplicaSet",
                        "Scaled up replica set " + client::name_of(*new_rs) + " from 0 to 1"));
  EXPECT_TRUE(
      has_event("ScalingReplicaSet", "Scaled down replica set " + old_name + " from 4 to 3"));
  // The end state is what `kubectl rollout status` reports as complete.
  Json s = deployment()["status"];
  EXPECT_EQ(s["updatedReplicas"], 4);
  EXPECT_EQ(s["replicas"], 4);
  EXPECT_EQ(s["availableReplicas"], 4);
  EXPECT_EQ(pods().size(), 4u);
}

TEST_F(DeploymentControllerTest, RecreateScalesOldToZeroBeforeCreatingNew) {
  start();
  create(make_deployment("web", 2, "v1", {{"strategy", {{"type", "Recreate"}}}}));
  ASSERT_TRUE(roll_out());
  const std::string old_name = client::name_of(*rs_with_image("v1"));
  std::set<std::string> old_pods;
  for (const auto& p : pods()) old_pods.insert(client::name_of(p));
  api_.clear_actions();

  set_image("web", "v2");
  ASSERT_TRUE(roll_out());
  const std::string new_name = client::name_of(*rs_with_image("v2"));
  int scaled_old = -1, last_old_pod_delete = -1, created_new = -1, i = 0;
  for (const auto& a : api_.actions()) {
    if (a.verb == "update" && a.name == old_name && a.subresource.empty() &&
        spec_replicas(a.object) == 0 && scaled_old < 0) {
      scaled_old = i;
    }
    if (a.verb == "delete" && a.resource == "pods" && old_pods.count(a.name)) {
      last_old_pod_delete = i;
    }
    if (a.verb == "create" && a.resource == "replicasets.apps") {
      created_new = i;
      EXPECT_EQ(spec_replicas(a.object), 2);  // straight to full size
    }
    ++i;
  }
  ASSERT_GE(scaled_old, 0);
  ASSERT_GE(last_old_pod_delete, 0);
  EXPECT_LT(scaled_old, last_old_pod_delete);
  EXPECT_LT(last_old_pod_delete, created_new);
  EXPECT_TRUE(
      has_event("ScalingReplicaSet", "Scaled down replica set " + old_name + " from 2 to 0"));
  EXPECT_TRUE(has_event("ScalingReplicaSet", "Scaled up replica set " + new_name + " from 0 to 2"));
  EXPECT_EQ(annotation(*rs_with_image("v2"), kRevisionAnnotation), "2");
}

TEST_F(DeploymentControllerTest, PausedDeploymentsScaleButDoNotRollOut) {
  start();
  create(make_deployment("web", 2, "v1"));
  ASSERT_TRUE(roll_out());
  update("web", [](Json& d) { d["spec"]["paused"] = true; });
  ASSERT_TRUE(eventually([&] {
    Json d = deployment();
    const Json* c = find_condition(d["status"], "Progressing");
    return c && c->value("reason", "") == "DeploymentPaused" &&
           c->value("status", "") == "Unknown" && c->value("message", "") == "Deployment is paused";
  }));

  set_image("web", "v2");
  ASSERT_TRUE(eventually([&] {
    Json d = deployment();
    return d["status"].value("observedGeneration", 0) == d["metadata"].value("generation", 0);
  }));
  EXPECT_EQ(replica_sets().size(), 1u);

  update("web", [](Json& d) { d["spec"]["replicas"] = 3; });
  ASSERT_TRUE(eventually([&] { return rs_replicas("v1") == 3; }));
  EXPECT_TRUE(
      has_event("ScalingReplicaSet",
                "Scaled up replica set " + client::name_of(*rs_with_image("v1")) + " from 2 to 3"));
  EXPECT_EQ(replica_sets().size(), 1u);
  EXPECT_EQ(annotation(*rs_with_image("v1"), kDesiredReplicasAnnotation), "3");

  update("web", [](Json& d) { d["spec"]["paused"] = false; });
  ASSERT_TRUE(eventually([&] { return rs_with_image("v2").has_value(); }));
  ASSERT_TRUE(roll_out());
  ASSERT_TRUE(eventually(
      [&] { return condition_reason(deployment(), "Progressing") == "NewReplicaSetAvailable"; }));
  EXPECT_EQ(rs_replicas("v1"), 0);
  EXPECT_EQ(rs_replicas("v2"), 3);
  EXPECT_EQ(annotation(*rs_with_image("v2"), kRevisionAnnotation), "2");
}

TEST_F(DeploymentControllerTest, RollbackReusesTheOldReplicaSetWithANewRevision) {
  start();
  create(make_deployment("web", 2, "v1"));
  ASSERT_TRUE(roll_out());
  set_image("web", "v2");
  ASSERT_TRUE(roll_out());
  ASSERT_EQ(replica_sets().size(), 2u);
  Json first = *rs_with_revision(1);
  const std::string first_name = client::name_of(first);

  // What `kubectl rollout undo` does: copy the old ReplicaSet's template (without its hash
  // label) back into the Deployment.
  Json tmpl = first["spec"]["template"];
  tmpl["metadata"]["labels"].erase(kPodTemplateHashLabel);
  update("web", [&](Json& d) { d["spec"]["template"] = tmpl; });

  ASSERT_TRUE(eventually([&] {
    Json rs = get(kReplicaSets, first_name);
    return annotation(rs, kRevisionAnnotation) == "3" &&
           annotation(rs, kRevisionHistoryAnnotation) == "1";
  }));
  ASSERT_TRUE(roll_out());
  ASSERT_TRUE(eventually([&] { return annotation(deployment(), kRevisionAnnotation) == "3"; }));
  EXPECT_EQ(replica_sets().size(), 2u);  // no third ReplicaSet
  EXPECT_EQ(rs_replicas("v1"), 2);
  EXPECT_EQ(rs_replicas("v2"), 0);
  EXPECT_EQ(annotation(*rs_with_image("v2"), kRevisionAnnotation), "2");
}

// Resyncs hand the Deployment to the controller again, so it notices the deadline pass.
class DeploymentResyncTest : public DeploymentControllerTest {
 protected:
  DeploymentResyncTest() : DeploymentControllerTest(50ms) {}
};

TEST_F(DeploymentResyncTest, ProgressDeadlineExceeded) {
  start();
  create(make_deployment("web", 2, "v1", {{"progressDeadlineSeconds", 30}}));
  // Pods never become ready; wait until the last progress (pods created) is recorded.
  ASSERT_TRUE(eventually([&] {
    Json d = deployment();
    return d["status"].value("updatedReplicas", 0) == 2 &&
           condition_reason(d, "Progressing") == "ReplicaSetUpdated";
  }));
  const std::string rs_name = client::name_of(replica_sets()[0]);
  auto timed_out = [&] {
    return condition_reason(deployment(), "Progressing") == "ProgressDeadlineExceeded";
  };
  // Progress 20s in (one pod ready) moves the deadline to 50s.
  clock_.advance(20s);
  Json one = pods()[0];
  one["status"] = {{"phase", "Running"},
                   {"conditions",
                    {{{"type", "Ready"},
                      {"status", "True"},
                      {"lastTransitionTime", rfc3339(clock_.now_seconds())}}}}};
  ASSERT_TRUE(api_.update(kPods, "default", one, {}, "status").is_ok());
  ASSERT_TRUE(eventually([&] {
    const Json d = deployment();
    const Json* c = find_condition(d["status"], "Progressing");
    return d["status"].value("readyReplicas", 0) == 1 && c &&
           c->value("lastUpdateTime", "") == rfc3339(clock_.now_seconds());
  }));
  clock_.advance(11s);  // 31s after the start, 11s after the last progress
  EXPECT_FALSE(eventually(timed_out, 500ms));
  clock_.advance(20s);  // 31s after the last progress
  ASSERT_TRUE(eventually(timed_out));
  const Json after = deployment();
  const Json* c = find_condition(after["status"], "Progressing");
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(c->value("status", ""), "False");
  EXPECT_EQ(c->value("message", ""), "ReplicaSet \"" + rs_name + "\" has timed out progressing.");
  const Json* available = find_condition(after["status"], "Available");
  ASSERT_NE(available, nullptr);
  EXPECT_EQ(available->value("status", ""), "False");

  // Completing afterwards still counts.
  ASSERT_TRUE(roll_out());
  ASSERT_TRUE(eventually(
      [&] { return condition_reason(deployment(), "Progressing") == "NewReplicaSetAvailable"; }));
}

TEST_F(DeploymentControllerTest, RevisionHistoryLimitDeletesOldestScaledDownReplicaSets) {
  start();
  create(make_deployment("web", 1, "v1", {{"revisionHistoryLimit", 1}}));
  ASSERT_TRUE(roll_out());
  set_image("web", "v2");
  ASSERT_TRUE(roll_out());
  set_image("web", "v3");
  ASSERT_TRUE(roll_out());
  ASSERT_TRUE(eventually([&] { return replica_sets().size() == 2; }));
  EXPECT_FALSE(rs_with_image("v1").has_value());
  ASSERT_TRUE(rs_with_image("v2").has_value());
  EXPECT_EQ(annotation(*rs_with_image("v2"), kRevisionAnnotation), "2");
  EXPECT_EQ(annotation(*rs_with_image("v3"), kRevisionAnnotation), "3");
}

TEST_F(DeploymentControllerTest, ScalingMidRolloutIsProportional) {
  start();
  create(make_deployment("web", 10, "v1"));  // maxSurge 25% → 3, maxUnavailable 25% → 2
  ASSERT_TRUE(roll_out());
  set_image("web", "v2");
  // New pods never become ready: the rollout stops at 8 old + 5 new (13 = 10 + 3 surge).
  ASSERT_TRUE(eventually([&] { return rs_replicas("v1") == 8 && rs_replicas("v2") == 5; }));
  const std::string old_name = client::name_of(*rs_with_image("v1"));
  const std::string new_name = client::name_of(*rs_with_image("v2"));

  update("web", [](Json& d) { d["spec"]["replicas"] = 15; });
  // 19 allowed (15 + 4 surge): 6 more, split 4 to the old and 2 to the new ReplicaSet.
  ASSERT_TRUE(eventually([&] { return rs_replicas("v1") == 12 && rs_replicas("v2") == 7; }));
  EXPECT_TRUE(
      has_event("ScalingReplicaSet", "Scaled up replica set " + old_name + " from 8 to 12"));
  EXPECT_TRUE(has_event("ScalingReplicaSet", "Scaled up replica set " + new_name + " from 5 to 7"));
  for (const auto& rs : replica_sets()) {
    EXPECT_EQ(annotation(rs, kDesiredReplicasAnnotation), "15");
    EXPECT_EQ(annotation(rs, kMaxReplicasAnnotation), "19");
  }
  ASSERT_TRUE(roll_out());
  EXPECT_EQ(rs_replicas("v2"), 15);
  EXPECT_EQ(rs_replicas("v1"), 0);
}

TEST_F(DeploymentControllerTest, AdoptsMatchingOrphansAndReleasesMismatches) {
  Json d = make_deployment("web", 2, "v1");
  // An orphan ReplicaSet with the Deployment's template (as left behind by an orphaning
  // delete): adopted and used as the new ReplicaSet.
  Json orphan = {{"apiVersion", "apps/v1"},
                 {"kind", "ReplicaSet"},
                 {"metadata",
                  {{"name", "web-manual"}, {"namespace", "default"}, {"labels", {{"app", "web"}}}}},
                 {"spec",
                  {{"replicas", 2},
                   {"selector", {{"matchLabels", {{"app", "web"}}}}},
                   {"template", d["spec"]["template"]}}}};
  api_.seed(kReplicaSets, orphan);
  start();
  Json created = create(d);
  ASSERT_TRUE(eventually([&] {
    auto rss = replica_sets();
    return rss.size() == 1 && annotation(rss[0], kRevisionAnnotation) == "1";
  }));
  EXPECT_EQ(client::name_of(replica_sets()[0]), "web-manual");
  ASSERT_TRUE(roll_out());
  EXPECT_EQ(api_.actions("create", "replicasets.apps").size(), 0u);

  // A ReplicaSet that claims to be the Deployment's but does not match its selector is let go.
  Json stray = orphan;
  stray["metadata"] = {
      {"name", "stray"},
      {"namespace", "default"},
      {"labels", {{"app", "other"}}},
      {"ownerReferences", Json::array({controller_ref(created, "Deployment", "apps/v1")})}};
  stray["spec"]["replicas"] = 0;
  stray["spec"]["selector"] = {{"matchLabels", {{"app", "other"}}}};
  api_.seed(kReplicaSets, stray);
  ASSERT_TRUE(
      eventually([&] { return client::controller_of(get(kReplicaSets, "stray")) == nullptr; }));
}

TEST_F(DeploymentControllerTest, ReplicaSetCreateErrorIsReportedAndRetried) {
  api_.fail("create", "replicasets.apps", error(StatusCode::kPermissionDenied, "quota says no"));
  start();
  create(make_deployment("web", 1, "v1"));
  ASSERT_TRUE(eventually([&] {
    for (const auto& m : event_messages("ReplicaSetCreateError")) {
      if (m.find("Failed to create new replica set \"web-") == 0 &&
          m.find("quota says no") != std::string::npos) {
        return true;
      }
    }
    return false;
  }));
  ASSERT_TRUE(roll_out());
  EXPECT_EQ(replica_sets().size(), 1u);
}

}  // namespace
}  // namespace skiff::controllers
