#include <gtest/gtest.h>

#include <map>
#include <set>
#include <thread>

#include "client/fake_api_client.h"
#include "controller_test_util.h"
#include "controllers/controller_utils.h"
#include "controllers/daemonset/daemonset_controller.h"
#include "controllers/daemonset/daemonset_util.h"
#include "controllers/statefulset/controller_history.h"

namespace skiff::controllers {
namespace {

using client::FakeApiClient;
using testing::ControllerTest;
using testing::eventually;
using namespace client::resources;
using namespace std::chrono_literals;
using namespace daemonset;

Json agent_labels() {
  return {{"app", "agent"}};
}

Json daemon_set(Json extra_spec = Json::object(), Json pod_spec_extra = Json::object()) {
  Json ds = {{"apiVersion", "apps/v1"},
             {"kind", "DaemonSet"},
             {"metadata", {{"name", "agent"}, {"namespace", "default"}, {"generation", 1}}},
             {"spec",
              {{"selector", {{"matchLabels", agent_labels()}}},
               {"template",
                {{"metadata", {{"labels", agent_labels()}}},
                 {"spec", {{"containers", {{{"name", "c"}, {"image", "agent:1"}}}}}}}}}}};
  for (auto it = extra_spec.begin(); it != extra_spec.end(); ++it) ds["spec"][it.key()] = *it;
  for (auto it = pod_spec_extra.begin(); it != pod_spec_extra.end(); ++it) {
    ds["spec"]["template"]["spec"][it.key()] = *it;
  }
  return ds;
}

Json node(const std::string& name, Json labels = Json::object(), Json taints = Json()) {
  Json n = {{"apiVersion", "v1"},
            {"kind", "Node"},
            {"metadata", {{"name", name}, {"labels", labels}}},
            {"spec", Json::object()}};
  if (!taints.is_null()) n["spec"]["taints"] = taints;
  return n;
}

Json taint(const std::string& key, const std::string& effect, const std::string& value = "") {
  Json t = {{"key", key}, {"effect", effect}};
  if (!value.empty()) t["value"] = value;
  return t;
}

class DaemonSetControllerTest : public ControllerTest<> {
 protected:
  ~DaemonSetControllerTest() override {
    if (controller_) controller_->stop();
    informers_.stop();
  }

  void start() {
    controller_ = std::make_unique<DaemonSetController>(ctx_);
    informers_.start();
    controller_->start();
  }

  Json get(const client::Resource& r, const std::string& name, const std::string& ns = "default") {
    auto got = api_.get(r, ns, name);
    return got.is_ok() ? got.value() : Json();
  }

  Json status() {
    Json ds = get(kDaemonSets, "agent");
    return ds.is_object() && ds.contains("status") ? ds["status"] : Json::object();
  }

  std::vector<Json> pods() {
    std::vector<Json> out;
    Json listed = api_.list(kPods, "default").value();
    for (auto& p : listed["items"]) out.push_back(p);
    return out;
  }

  // Node name → the daemon pods meant for it.
  std::map<std::string, std::vector<Json>> pods_by_node() {
    std::map<std::string, std::vector<Json>> out;
    for (auto& p : pods()) out[target_node_name(p)].push_back(p);
    return out;
  }

  std::set<std::string> nodes_with_pods() {
    std::set<std::string> out;
    for (const auto& [n, ps] : pods_by_node()) out.insert(n);
    return out;
  }

  std::vector<std::string> event_messages(const std::string& reason) {
    std::vector<std::string> out;
    Json listed = api_.list(kEvents, "").value();
    for (const auto& e : listed["items"]) {
      if (e.value("reason", "") == reason) out.push_back(e.value("message", ""));
    }
    return out;
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

  std::string current_hash() {
    auto revs = revisions();
    return revs.empty() ? "" : history::revision_hash_label(revs.back());
  }

  static std::string hash_of(const Json& pod) {
    return pod["metadata"]["labels"].value(kRevisionHashLabel, "");
  }

  void set_pod_status(const std::string& name, const std::string& phase, bool ready) {
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

  // What kubelets report once daemon pods run.
  void ready_all() {
    for (const auto& p : pods()) {
      if (!is_pod_ready(p) && !is_pod_terminating(p) && pod_phase(p) != "Failed") {
        set_pod_status(client::name_of(p), "Running", true);
      }
    }
  }

  void update_node(const std::string& name, const std::function<void(Json&)>& edit) {
    for (int attempt = 0; attempt < 10; ++attempt) {
      Json n = get(kNodes, name, "");
      edit(n);
      if (api_.update(kNodes, "", n).is_ok()) return;
    }
    FAIL() << "could not update node " << name;
  }

  void update_ds(const std::function<void(Json&)>& edit) {
    for (int attempt = 0; attempt < 10; ++attempt) {
      Json ds = get(kDaemonSets, "agent");
      edit(ds);
      if (api_.update(kDaemonSets, "default", ds).is_ok()) return;
    }
    FAIL() << "could not update the DaemonSet";
  }

  void set_image(const std::string& image) {
    update_ds([&](Json& ds) { ds["spec"]["template"]["spec"]["containers"][0]["image"] = image; });
  }

  size_t deletions() { return api_.actions("delete", "pods").size(); }

  std::unique_ptr<DaemonSetController> controller_;
};

TEST(DaemonSetUtil, TolerationsAddedToDaemonPods) {
  Json spec = {{"tolerations",
                {{{"key", "node.kubernetes.io/not-ready"},
                  {"operator", "Exists"},
                  {"effect", "NoExecute"},
                  {"tolerationSeconds", 300}},
                 {{"key", "custom"}, {"operator", "Equal"}, {"value", "x"}}}}};
  add_daemon_tolerations(spec);
  std::set<std::string> keys;
  for (const auto& t : spec["tolerations"]) {
    keys.insert(t.value("key", ""));
    if (t["key"] == "node.kubernetes.io/not-ready") {
      EXPECT_FALSE(t.contains("tolerationSeconds"));  // replaced: tolerated forever
    }
  }
  EXPECT_EQ(spec["tolerations"].size(), 7u);
  EXPECT_TRUE(keys.count("custom"));
  EXPECT_TRUE(keys.count("node.kubernetes.io/unreachable"));
  EXPECT_TRUE(keys.count("node.kubernetes.io/unschedulable"));
  EXPECT_TRUE(keys.count("node.kubernetes.io/pid-pressure"));
  EXPECT_FALSE(keys.count("node.kubernetes.io/network-unavailable"));

  Json host = {{"hostNetwork", true}};
  add_daemon_tolerations(host);
  add_daemon_tolerations(host);  // idempotent
  EXPECT_EQ(host["tolerations"].size(), 7u);
  EXPECT_EQ(host["tolerations"][6]["key"], "node.kubernetes.io/network-unavailable");
}

TEST(DaemonSetUtil, NodeAffinityAndTaints) {
  Json n = node("n1", {{"zone", "a"}, {"cores", "8"}});
  auto required = [](Json terms) {
    return Json{
        {"nodeSelector", Json::object()},
        {"affinity",
         {{"nodeAffinity",
           {{"requiredDuringSchedulingIgnoredDuringExecution", {{"nodeSelectorTerms", terms}}}}}}}};
  };
  auto expr = [](const std::string& key, const std::string& op, Json values = Json()) {
    Json e = {{"key", key}, {"operator", op}};
    if (!values.is_null()) e["values"] = values;
    return Json{{"matchExpressions", {e}}};
  };
  EXPECT_TRUE(pod_matches_node_affinity(required({expr("zone", "In", {"a", "b"})}), n));
  EXPECT_FALSE(pod_matches_node_affinity(required({expr("zone", "NotIn", {"a"})}), n));
  EXPECT_TRUE(pod_matches_node_affinity(required({expr("gpu", "NotIn", {"x"})}), n));
  EXPECT_TRUE(pod_matches_node_affinity(required({expr("gpu", "DoesNotExist")}), n));
  EXPECT_FALSE(pod_matches_node_affinity(required({expr("gpu", "Exists")}), n));
  EXPECT_TRUE(pod_matches_node_affinity(required({expr("cores", "Gt", {"4"})}), n));
  EXPECT_FALSE(pod_matches_node_affinity(required({expr("cores", "Lt", {"4"})}), n));
  // Terms are ORed; an empty term matches nothing.
  EXPECT_TRUE(
      pod_matches_node_affinity(required({expr("gpu", "Exists"), expr("zone", "In", {"a"})}), n));
  EXPECT_FALSE(pod_matches_node_affinity(required({Json::object()}), n));
  Json by_name = {
      {"matchFields", {{{"key", "metadata.name"}, {"operator", "In"}, {"values", {"n1"}}}}}};
  EXPECT_TRUE(pod_matches_node_affinity(required({by_name}), n));
  EXPECT_FALSE(pod_matches_node_affinity(required({by_name}), node("n2")));
  EXPECT_FALSE(pod_matches_node_affinity({{"nodeSelector", {{"zone", "b"}}}}, n));

  Json pinned = replace_node_name_affinity(required({expr("zone", "In", {"a"})})["affinity"], "n9");
  Json pod = {{"spec", {{"affinity", pinned}}}};
  EXPECT_EQ(target_node_name(pod), "n9");
  EXPECT_EQ(
      pinned["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
          .size(),
      1u);
  pod["spec"]["nodeName"] = "n3";
  EXPECT_EQ(target_node_name(pod), "n3");

  EXPECT_TRUE(tolerates({{"key", "k"}, {"operator", "Equal"}, {"value", "v"}},
                        taint("k", "NoSchedule", "v")));
  EXPECT_FALSE(tolerates({{"key", "k"}, {"value", "w"}}, taint("k", "NoSchedule", "v")));
  EXPECT_TRUE(tolerates({{"operator", "Exists"}}, taint("any", "NoExecute")));
  EXPECT_FALSE(tolerates({{"key", "k"}, {"operator", "Exists"}, {"effect", "NoSchedule"}},
                         taint("k", "NoExecute")));

  Json ds = daemon_set();
  EXPECT_TRUE(node_should_run_daemon_pod(node("a"), ds).should_run);
  NodeFit no_schedule = node_should_run_daemon_pod(
      node("a", Json::object(), {taint("dedicated", "NoSchedule", "x")}), ds);
  EXPECT_FALSE(no_schedule.should_run);
  EXPECT_TRUE(no_schedule.should_continue_running);
  NodeFit no_execute =
      node_should_run_daemon_pod(node("a", Json::object(), {taint("dedicated", "NoExecute")}), ds);
  EXPECT_FALSE(no_execute.should_run);
  EXPECT_FALSE(no_execute.should_continue_running);
  // The tolerations every daemon pod gets.
  EXPECT_TRUE(
      node_should_run_daemon_pod(node("a", Json::object(),
                                      {taint("node.kubernetes.io/unschedulable", "NoSchedule"),
                                       taint("node.kubernetes.io/not-ready", "NoExecute"),
                                       taint("node.kubernetes.io/disk-pressure", "NoSchedule"),
                                       taint("something", "PreferNoSchedule")}),
                                 ds)
          .should_run);
  Json unavailable_net =
      node("a", Json::object(), {taint("node.kubernetes.io/network-unavailable", "NoSchedule")});
  EXPECT_FALSE(node_should_run_daemon_pod(unavailable_net, ds).should_run);
  EXPECT_TRUE(node_should_run_daemon_pod(unavailable_net,
                                         daemon_set(Json::object(), {{"hostNetwork", true}}))
                  .should_run);
  EXPECT_FALSE(
      node_should_run_daemon_pod(node("a"), daemon_set(Json::object(), {{"nodeName", "b"}}))
          .should_run);

  EXPECT_EQ(scaled_value(3, 10).value(), 3);
  EXPECT_EQ(scaled_value("25%", 10).value(), 3);  // rounded up
  EXPECT_FALSE(scaled_value("3", 10).is_ok());
}

TEST_F(DaemonSetControllerTest, RunsOnEligibleNodesOnly) {
  Json zone_a = {{"disk", "ssd"}, {"zone", "a"}};
  api_.seed(kNodes, node("n1", zone_a));
  api_.seed(kNodes, node("n2", {{"disk", "hdd"}, {"zone", "a"}}));
  api_.seed(kNodes, node("n3", zone_a, {taint("dedicated", "NoSchedule", "x")}));
  api_.seed(kNodes, node("n4", zone_a,
                         {taint("node.kubernetes.io/unschedulable", "NoSchedule"),
                          taint("node.kubernetes.io/not-ready", "NoExecute")}));
  api_.seed(kNodes, node("n5", zone_a, {taint("soft", "PreferNoSchedule")}));
  api_.seed(kNodes, node("n6", {{"disk", "ssd"}, {"zone", "b"}}));
  Json affinity = {{"nodeAffinity",
                    {{"requiredDuringSchedulingIgnoredDuringExecution",
                      {{"nodeSelectorTerms",
                        {{{"matchExpressions",
                           {{{"key", "zone"}, {"operator", "In"}, {"values", {"a"}}}}}}}}}}}}};
  Json ds = api_.seed(kDaemonSets, daemon_set(Json::object(), {{"nodeSelector", {{"disk", "ssd"}}},
                                                               {"affinity", affinity}}));
  start();
  ASSERT_TRUE(eventually([&] {
    Json s = status();
    return s.value("desiredNumberScheduled", 0) == 3 && s.value("currentNumberScheduled", 0) == 3;
  }));
  EXPECT_EQ(nodes_with_pods(), (std::set<std::string>{"n1", "n4", "n5"}));
  const std::string hash = current_hash();
  ASSERT_FALSE(hash.empty());
  for (const auto& p : pods()) {
    EXPECT_EQ(p["metadata"]["generateName"], "agent-");
    EXPECT_EQ(p["metadata"]["labels"]["app"], "agent");
    EXPECT_EQ(hash_of(p), hash);
    EXPECT_TRUE(is_controlled_by(p, client::uid_of(ds)));
    EXPECT_EQ(p["metadata"]["ownerReferences"][0]["kind"], "DaemonSet");
    // Pinned to its node by the node-name affinity (the template's own terms replaced).
    const Json& terms = p["spec"]["affinity"]["nodeAffinity"]
                         ["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"];
    ASSERT_EQ(terms.size(), 1u);
    EXPECT_EQ(terms[0]["matchFields"][0]["key"], "metadata.name");
    EXPECT_EQ(terms[0]["matchFields"][0]["operator"], "In");
    bool not_ready = false;
    for (const auto& t : p["spec"]["tolerations"]) {
      if (t["key"] == "node.kubernetes.io/not-ready" && t["effect"] == "NoExecute" &&
          !t.contains("tolerationSeconds")) {
        not_ready = true;
      }
    }
    EXPECT_TRUE(not_ready);
  }
  Json s = status();
  EXPECT_EQ(s.value("numberMisscheduled", -1), 0);
  EXPECT_EQ(s.value("numberReady", -1), 0);
  EXPECT_EQ(s.value("numberUnavailable", 0), 3);
  EXPECT_EQ(s.value("updatedNumberScheduled", 0), 3);
  EXPECT_EQ(s.value("observedGeneration", 0), 1);

  ready_all();
  ASSERT_TRUE(eventually([&] {
    Json s = status();
    return s.value("numberReady", 0) == 3 && s.value("numberAvailable", 0) == 3 &&
           !s.contains("numberUnavailable");
  }));
  ASSERT_TRUE(eventually([&] { return event_messages("SuccessfulCreate").size() == 3; }));
  std::set<std::string> messages;
  for (const auto& m : event_messages("SuccessfulCreate")) messages.insert(m);
  for (const auto& p : pods()) EXPECT_TRUE(messages.count("Created pod: " + client::name_of(p)));
  EXPECT_EQ(api_.actions("create", "pods").size(), 3u);
}

TEST_F(DaemonSetControllerTest, NewNodesGetPodsAndRemovedNodesLoseThem) {
  api_.seed(kNodes, node("n1"));
  api_.seed(kDaemonSets, daemon_set());
  start();
  ASSERT_TRUE(eventually([&] { return nodes_with_pods() == std::set<std::string>{"n1"}; }));
  api_.seed(kNodes, node("n2"));
  api_.seed(kNodes, node("n3"));
  ASSERT_TRUE(eventually([&] {
    return nodes_with_pods() == std::set<std::string>{"n1", "n2", "n3"} &&
           status().value("desiredNumberScheduled", 0) == 3;
  }));
  // The scheduler binds n3's pod; n2's stays unscheduled.
  Json bound = pods_by_node()["n3"][0];
  bound["spec"]["nodeName"] = "n3";
  ASSERT_TRUE(api_.update(kPods, "default", bound).is_ok());
  // The controller must know the pod is bound before its node goes, or it deletes it as
  // unscheduled.
  ASSERT_TRUE(eventually([&] {
    ObjectPtr seen = informers_.informer(kPods).get("default", client::name_of(bound));
    return seen && (*seen)["spec"].value("nodeName", "") == "n3";
  }));

  ASSERT_TRUE(api_.remove(kNodes, "", "n2").is_ok());
  ASSERT_TRUE(api_.remove(kNodes, "", "n3").is_ok());
  // The unscheduled pod would never run: it goes. The bound one is pod GC's to remove.
  ASSERT_TRUE(eventually([&] { return nodes_with_pods() == std::set<std::string>{"n1", "n3"}; }));
  ASSERT_TRUE(eventually([&] {
    Json s = status();
    return s.value("desiredNumberScheduled", 0) == 1 && s.value("currentNumberScheduled", 0) == 1;
  }));
  EXPECT_EQ(deletions(), 1u);
}

TEST_F(DaemonSetControllerTest, NodeLabelAndTaintChanges) {
  api_.seed(kNodes, node("n1", {{"disk", "ssd"}}));
  api_.seed(kDaemonSets, daemon_set(Json::object(), {{"nodeSelector", {{"disk", "ssd"}}}}));
  start();
  ASSERT_TRUE(eventually([&] { return pods().size() == 1; }));
  update_node("n1", [](Json& n) { n["metadata"]["labels"]["disk"] = "hdd"; });
  ASSERT_TRUE(eventually([&] { return pods().empty(); }));
  update_node("n1", [](Json& n) { n["metadata"]["labels"]["disk"] = "ssd"; });
  ASSERT_TRUE(eventually([&] { return pods().size() == 1; }));

  // A NoSchedule taint keeps new pods away but lets the running one stay.
  update_node("n1", [](Json& n) { n["spec"]["taints"] = {taint("dedicated", "NoSchedule")}; });
  ASSERT_TRUE(eventually([&] {
    Json s = status();
    return s.value("desiredNumberScheduled", -1) == 0 && s.value("numberMisscheduled", 0) == 1;
  }));
  EXPECT_EQ(pods().size(), 1u);
  // A NoExecute taint it does not tolerate evicts it.
  update_node("n1", [](Json& n) { n["spec"]["taints"] = {taint("dedicated", "NoExecute")}; });
  ASSERT_TRUE(eventually([&] { return pods().empty(); }));
  ASSERT_TRUE(eventually([&] { return event_messages("SuccessfulDelete").size() == 2; }));
}

TEST_F(DaemonSetControllerTest, RollingUpdateStaysWithinMaxUnavailable) {
  for (int i = 1; i <= 4; ++i) api_.seed(kNodes, node("n" + std::to_string(i)));
  api_.seed(
      kDaemonSets,
      daemon_set({{"updateStrategy",
                   {{"type", "RollingUpdate"}, {"rollingUpdate", {{"maxUnavailable", 2}}}}}}));
  start();
  ASSERT_TRUE(eventually([&] { return pods().size() == 4; }));
  ready_all();
  ASSERT_TRUE(eventually([&] { return status().value("numberAvailable", 0) == 4; }));
  const std::string old_hash = current_hash();

  set_image("agent:2");
  ASSERT_TRUE(eventually([&] { return revisions().size() == 2 && current_hash() != old_hash; }));
  const std::string new_hash = current_hash();
  auto count_hash = [&](const std::string& h) {
    int n = 0;
    for (const auto& p : pods()) n += hash_of(p) == h;
    return n;
  };
  // Two old pods go, two new ones replace them; the rest waits for those to be available.
  ASSERT_TRUE(eventually([&] {
    Json s = status();
    return count_hash(new_hash) == 2 && s.value("updatedNumberScheduled", 0) == 2 &&
           s.value("observedGeneration", 0) == 2 && s.value("currentNumberScheduled", 0) == 4;
  }));
  EXPECT_EQ(deletions(), 2u);
  EXPECT_EQ(count_hash(old_hash), 2);

  ready_all();
  ASSERT_TRUE(eventually([&] {
    ready_all();
    Json s = status();
    return count_hash(new_hash) == 4 && s.value("updatedNumberScheduled", 0) == 4 &&
           s.value("numberAvailable", 0) == 4;
  }));
  EXPECT_EQ(deletions(), 4u);
  for (const auto& p : pods()) EXPECT_EQ(p["spec"]["containers"][0]["image"], "agent:2");
}

TEST_F(DaemonSetControllerTest, SurgeStartsTheNewPodBeforeRetiringTheOld) {
  api_.seed(kNodes, node("n1"));
  api_.seed(kNodes, node("n2"));
  api_.seed(kDaemonSets,
            daemon_set({{"updateStrategy",
                         {{"type", "RollingUpdate"},
                          {"rollingUpdate", {{"maxUnavailable", 0}, {"maxSurge", 1}}}}}}));
  start();
  ASSERT_TRUE(eventually([&] { return pods().size() == 2; }));
  ready_all();
  ASSERT_TRUE(eventually([&] { return status().value("numberAvailable", 0) == 2; }));
  set_image("agent:2");
  // One node gets a second (new) pod; nothing is deleted while it is not available.
  ASSERT_TRUE(eventually(
      [&] { return pods().size() == 3 && status().value("observedGeneration", 0) == 2; }));
  EXPECT_EQ(deletions(), 0u);
  ASSERT_TRUE(eventually([&] {
    ready_all();
    Json s = status();
    return pods().size() == 2 && s.value("updatedNumberScheduled", 0) == 2 &&
           s.value("numberAvailable", 0) == 2;
  }));
  EXPECT_EQ(deletions(), 2u);
  for (const auto& p : pods()) EXPECT_EQ(p["spec"]["containers"][0]["image"], "agent:2");
}

TEST_F(DaemonSetControllerTest, OnDeleteReplacesOnlyDeletedPods) {
  api_.seed(kNodes, node("n1"));
  api_.seed(kNodes, node("n2"));
  api_.seed(kDaemonSets, daemon_set({{"updateStrategy", {{"type", "OnDelete"}}}}));
  start();
  ASSERT_TRUE(eventually([&] { return pods().size() == 2; }));
  const std::string old_hash = current_hash();
  set_image("agent:2");
  ASSERT_TRUE(eventually([&] {
    Json s = status();
    return s.value("observedGeneration", 0) == 2 && current_hash() != old_hash &&
           !s.contains("updatedNumberScheduled");
  }));
  EXPECT_EQ(deletions(), 0u);
  Json victim = pods_by_node()["n1"][0];
  ASSERT_TRUE(api_.remove(kPods, "default", client::name_of(victim)).is_ok());
  ASSERT_TRUE(eventually([&] {
    auto by_node = pods_by_node();
    return by_node["n1"].size() == 1 && hash_of(by_node["n1"][0]) == current_hash();
  }));
  EXPECT_EQ(hash_of(pods_by_node()["n2"][0]), old_hash);
}

TEST_F(DaemonSetControllerTest, RevisionHistoryIsRecordedReusedAndTrimmed) {
  Json ds = api_.seed(kDaemonSets, daemon_set({{"revisionHistoryLimit", 1}}));
  start();
  ASSERT_TRUE(eventually([&] { return revisions().size() == 1; }));
  Json first = revisions()[0];
  const std::string hash = history::revision_hash_label(first);
  EXPECT_EQ(first["metadata"]["name"], "agent-" + hash);
  EXPECT_EQ(first["metadata"]["labels"]["app"], "agent");
  EXPECT_EQ(first["revision"], 1);
  EXPECT_TRUE(is_controlled_by(first, client::uid_of(ds)));
  EXPECT_EQ(first["data"]["spec"]["template"]["$patch"], "replace");
  EXPECT_EQ(history::template_of(first), ds["spec"]["template"]);

  set_image("agent:2");
  ASSERT_TRUE(eventually([&] {
    auto revs = revisions();
    return revs.size() == 2 && revs[1].value("revision", 0) == 2;
  }));
  set_image("agent:3");
  // Two old revisions, limit 1: the oldest goes.
  ASSERT_TRUE(eventually([&] {
    auto revs = revisions();
    return revs.size() == 2 && revs[0].value("revision", 0) == 2 &&
           revs[1].value("revision", 0) == 3;
  }));
  const std::string second = client::name_of(revisions()[0]);
  // Back to agent:2: its revision comes back as the newest, no new one is made.
  set_image("agent:2");
  ASSERT_TRUE(eventually([&] {
    auto revs = revisions();
    return revs.size() == 2 && client::name_of(revs[1]) == second &&
           revs[1].value("revision", 0) == 4;
  }));
}

TEST_F(DaemonSetControllerTest, RevisionsUsedByPodsAreKept) {
  api_.seed(kNodes, node("n1"));
  api_.seed(kDaemonSets,
            daemon_set({{"revisionHistoryLimit", 0}, {"updateStrategy", {{"type", "OnDelete"}}}}));
  start();
  ASSERT_TRUE(eventually([&] { return pods().size() == 1 && revisions().size() == 1; }));
  const std::string pod_hash = hash_of(pods()[0]);
  set_image("agent:2");
  ASSERT_TRUE(eventually([&] { return revisions().size() == 2; }));
  set_image("agent:3");
  ASSERT_TRUE(eventually([&] {
    auto revs = revisions();
    return revs.size() == 2 && revs[1].value("revision", 0) == 3;
  }));
  EXPECT_EQ(history::revision_hash_label(revisions()[0]), pod_hash);
}

TEST_F(DaemonSetControllerTest, FailedPodsAreReplacedWithBackOff) {
  api_.seed(kNodes, node("n1"));
  api_.seed(kDaemonSets, daemon_set());
  start();
  ASSERT_TRUE(eventually([&] { return pods().size() == 1; }));
  const std::string first = client::name_of(pods()[0]);
  set_pod_status(first, "Running", true);
  ASSERT_TRUE(eventually([&] { return status().value("numberReady", 0) == 1; }));
  set_pod_status(first, "Failed", false);
  ASSERT_TRUE(eventually([&] {
    auto ps = pods();
    return ps.size() == 1 && client::name_of(ps[0]) != first;
  }));
  ASSERT_TRUE(eventually([&] {
    auto m = event_messages("FailedDaemonPod");
    return m.size() == 1 &&
           m[0] == "Found failed daemon pod default/" + first + " on node n1, will try to kill it";
  }));

  // Failing again at once: the replacement waits out the back-off.
  const std::string second = client::name_of(pods()[0]);
  set_pod_status(second, "Running", true);
  ASSERT_TRUE(eventually([&] { return status().value("numberReady", 0) == 1; }));
  set_pod_status(second, "Failed", false);
  ASSERT_TRUE(eventually([&] { return status().value("numberReady", -1) == 0; }));
  EXPECT_EQ(client::name_of(pods()[0]), second);
  EXPECT_EQ(deletions(), 1u);
  clock_.advance(5s);
  ASSERT_TRUE(eventually([&] {
    auto ps = pods();
    return ps.size() == 1 && client::name_of(ps[0]) != second;
  }));
  EXPECT_EQ(deletions(), 2u);
}

TEST_F(DaemonSetControllerTest, SurplusPodsOnANodeAreDeletedKeepingTheOldest) {
  api_.seed(kNodes, node("n1"));
  // OnDelete: a rolling update would also replace the adopted pods (they lack the revision hash).
  Json ds = daemon_set({{"updateStrategy", {{"type", "OnDelete"}}}});
  auto orphan = [&](const std::string& name, int64_t created) {
    Json p = {
        {"metadata",
         {{"name", name},
          {"namespace", "default"},
          {"labels", agent_labels()},
          {"creationTimestamp", rfc3339(created)}}},
        {"spec", {{"nodeName", "n1"}, {"containers", {{{"name", "c"}, {"image", "agent:1"}}}}}}};
    api_.seed(kPods, p);
  };
  const int64_t now = clock_.now_seconds();
  orphan("agent-old", now - 100);
  orphan("agent-new", now - 10);
  Json seeded = api_.seed(kDaemonSets, ds);
  start();
  ASSERT_TRUE(eventually([&] { return pods().size() == 1; }));
  EXPECT_EQ(client::name_of(pods()[0]), "agent-old");
  EXPECT_TRUE(is_controlled_by(pods()[0], client::uid_of(seeded)));
  EXPECT_TRUE(api_.actions("create", "pods").empty());
  ASSERT_TRUE(eventually([&] {
    auto m = event_messages("SuccessfulDelete");
    return m.size() == 1 && m[0] == "Deleted pod: agent-new";
  }));
}

TEST_F(DaemonSetControllerTest, RefusesASelectorThatSelectsEverything) {
  api_.seed(kNodes, node("n1"));
  Json ds = daemon_set();
  ds["spec"]["selector"] = Json::object();
  api_.seed(kDaemonSets, ds);
  start();
  ASSERT_TRUE(eventually([&] {
    auto m = event_messages("SelectingAll");
    return !m.empty() &&
           m[0] == "This daemon set is selecting all pods. A non-empty selector is required.";
  }));
  EXPECT_TRUE(pods().empty());
}

TEST_F(DaemonSetControllerTest, RetriesAfterApiFailures) {
  api_.seed(kNodes, node("n1"));
  api_.seed(kNodes, node("n2"));
  api_.fail("create", "pods", error(StatusCode::kInternal, "etcd is sad"), 1);
  api_.fail("update", "daemonsets.apps", error(StatusCode::kAborted, "conflict"), 2);
  api_.seed(kDaemonSets, daemon_set());
  start();
  ASSERT_TRUE(eventually([&] {
    auto m = event_messages("FailedCreate");
    return !m.empty() && m[0] == "Error creating: etcd is sad";
  }));
  ASSERT_TRUE(eventually([&] {
    return nodes_with_pods() == std::set<std::string>{"n1", "n2"} &&
           status().value("currentNumberScheduled", 0) == 2;
  }));
  EXPECT_EQ(api_.actions("create", "pods").size(), 2u);
}

}  // namespace
}  // namespace skiff::controllers
