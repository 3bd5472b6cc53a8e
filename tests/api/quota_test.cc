#include "api/quota.h"

#include <gtest/gtest.h>

#include "base/time.h"

namespace skiff::api::quota {
namespace {

using nlohmann::json;

constexpr int64_t kNow = 1714564800;

json named(const std::string& name, json requests, json limits = json()) {
  json c = {{"name", name}, {"image", "busybox"}, {"resources", json::object()}};
  if (!requests.is_null()) c["resources"]["requests"] = requests;
  if (!limits.is_null()) c["resources"]["limits"] = limits;
  return c;
}

json container(json requests, json limits = json()) {
  return named("c", std::move(requests), std::move(limits));
}

json pod(json containers, json init = json(), const std::string& phase = "Running") {
  json p = {{"metadata", {{"namespace", "shop"}, {"name", "p"}}},
            {"spec", {{"containers", containers}}},
            {"status", {{"phase", phase}}}};
  if (!init.is_null()) p["spec"]["initContainers"] = init;
  return p;
}

std::string canonical(const json& list, const std::string& name) {
  return list.contains(name) ? list[name].get<std::string>() : "<absent>";
}

const Evaluator& evaluator(const std::string& group, const std::string& resource) {
  const Evaluator* e = evaluator_for(group, resource);
  EXPECT_NE(e, nullptr) << group << "/" << resource;
  static const Evaluator kNone;
  return e ? *e : kNone;
}

TEST(QuotaUsage, PodRequestsAndLimitsAsUpstream) {
  // Containers add up; a regular init container runs alone; restartable (sidecar) init
  // containers run alongside everything after them; overhead adds to requests and set limits.
  json p = pod({container({{"cpu", "200m"}, {"memory", "100Mi"}}, {{"cpu", "400m"}}),
                container({{"cpu", "300m"}, {"memory", "100Mi"}})},
               {container({{"cpu", "100m"}, {"memory", "50Mi"}}),
                container({{"cpu", "1"}, {"memory", "1Gi"}})});
  p["spec"]["initContainers"][0]["restartPolicy"] = "Always";
  p["spec"]["overhead"] = {{"cpu", "50m"}, {"memory", "10Mi"}};
  json requests = to_json(pod_requests(p));
  // cpu: containers 500m + sidecar 100m = 600m, but the regular init container needs 1 + the
  // sidecar 100m = 1100m; plus 50m overhead. Memory likewise: 1Gi + 50Mi + 10Mi.
  EXPECT_EQ(canonical(requests, "cpu"), "1150m");
  EXPECT_EQ(canonical(requests, "memory"), "1084Mi");
  json limits = to_json(pod_limits(p));
  EXPECT_EQ(canonical(limits, "cpu"), "450m");
  EXPECT_EQ(canonical(limits, "memory"), "<absent>");
  // Without overhead (what LimitRange's Pod limits compare).
  EXPECT_EQ(canonical(to_json(pod_requests(p, false)), "cpu"), "1100m");
  EXPECT_EQ(canonical(to_json(pod_limits(p, false)), "cpu"), "400m");
}

TEST(QuotaUsage, EvaluatorsMatchTheirResourceNames) {
  const Evaluator& pods = evaluator("", "pods");
  EXPECT_EQ(pods.evaluates, EvaluatorKind::kPods);
  EXPECT_EQ(pods.kind, "Pod");
  EXPECT_EQ(pods.version, "v1");
  for (const char* n : {"pods", "count/pods", "cpu", "requests.cpu", "limits.memory",
                        "requests.example.com/gpu", "hugepages-2Mi", "requests.hugepages-2Mi"}) {
    EXPECT_TRUE(pods.matches(n)) << n;
  }
  for (const char* n :
       {"limits.example.com/gpu", "requests.storage", "services", "count/secrets"}) {
    EXPECT_FALSE(pods.matches(n)) << n;
  }
  const Evaluator& deployments = evaluator("apps", "deployments");
  EXPECT_EQ(deployments.qualified_resource(), "deployments.apps");
  EXPECT_TRUE(deployments.matches("count/deployments.apps"));
  EXPECT_FALSE(deployments.matches("deployments"));
  const Evaluator& secrets = evaluator("", "secrets");
  EXPECT_TRUE(secrets.matches("secrets"));
  EXPECT_TRUE(secrets.matches("count/secrets"));
  const Evaluator& pvcs = evaluator("", "persistentvolumeclaims");
  EXPECT_TRUE(pvcs.matches("fast.storageclass.storage.k8s.io/requests.storage"));
  EXPECT_TRUE(pvcs.matches("fast.storageclass.storage.k8s.io/persistentvolumeclaims"));
  EXPECT_FALSE(pvcs.matches(".storageclass.storage.k8s.io/requests.storage"));
  EXPECT_EQ(evaluator_for("", "events"), nullptr);
  EXPECT_EQ(evaluator_for("", "nodes"), nullptr);  // not namespaced

  // Updates are charged only where they can change usage.
  EXPECT_FALSE(pods.charges_updates());
  EXPECT_TRUE(evaluator("", "services").charges_updates());
  EXPECT_TRUE(pvcs.charges_updates());
  EXPECT_FALSE(secrets.charges_updates());
}

TEST(QuotaUsage, PodUsage) {
  const Evaluator& pods = evaluator("", "pods");
  // Limits stand in for requests a container does not state.
  json p = pod({container({{"cpu", "250m"}}, {{"cpu", "1"}, {"memory", "1Gi"}}),
                container({{"example.com/gpu", "2"}, {"hugepages-2Mi", "4Mi"}})});
  json used = to_json(usage_of(pods, p, kNow));
  EXPECT_EQ(used, json({{"pods", "1"},
                        {"count/pods", "1"},
                        {"cpu", "250m"},
                        {"requests.cpu", "250m"},
                        {"limits.cpu", "1"},
                        {"memory", "1Gi"},
                        {"requests.memory", "1Gi"},
                        {"limits.memory", "1Gi"},
                        {"requests.example.com/gpu", "2"},
                        {"hugepages-2Mi", "4Mi"},
                        {"requests.hugepages-2Mi", "4Mi"}}));
  // Terminal pods and pods past their grace period count only as objects.
  EXPECT_EQ(to_json(usage_of(pods, pod({container({{"cpu", "1"}})}, json(), "Failed"), kNow)),
            json({{"count/pods", "1"}}));
  json stuck = pod({container({{"cpu", "1"}})});
  stuck["metadata"]["deletionTimestamp"] = rfc3339(kNow - 100);
  stuck["metadata"]["deletionGracePeriodSeconds"] = 30;
  EXPECT_EQ(to_json(usage_of(pods, stuck, kNow)), json({{"count/pods", "1"}}));
  stuck["metadata"]["deletionTimestamp"] = rfc3339(kNow - 10);
  EXPECT_EQ(canonical(to_json(usage_of(pods, stuck, kNow)), "pods"), "1");
}

TEST(QuotaUsage, ServiceClaimAndCountUsage) {
  const Evaluator& services = evaluator("", "services");
  json node_port = {{"spec", {{"type", "NodePort"}, {"ports", {{{"port", 80}}, {{"port", 443}}}}}}};
  EXPECT_EQ(to_json(usage_of(services, node_port, kNow)), json({{"services", "1"},
                                                                {"count/services", "1"},
                                                                {"services.nodeports", "2"},
                                                                {"services.loadbalancers", "0"}}));
  json lb = {{"spec",
              {{"type", "LoadBalancer"},
               {"allocateLoadBalancerNodePorts", false},
               {"ports", {{{"port", 80}, {"nodePort", 30080}}, {{"port", 443}}}}}}};
  json lb_used = to_json(usage_of(services, lb, kNow));
  EXPECT_EQ(lb_used["services.loadbalancers"], "1");
  EXPECT_EQ(lb_used["services.nodeports"], "1");

  const Evaluator& pvcs = evaluator("", "persistentvolumeclaims");
  json claim = {
      {"metadata", {{"name", "data"}}},
      {"spec", {{"storageClassName", "fast"}, {"resources", {{"requests", {{"storage", "1Gi"}}}}}}},
      {"status", {{"allocatedResources", {{"storage", "2Gi"}}}}}};
  EXPECT_EQ(to_json(usage_of(pvcs, claim, kNow)),
            json({{"persistentvolumeclaims", "1"},
                  {"count/persistentvolumeclaims", "1"},
                  {"fast.storageclass.storage.k8s.io/persistentvolumeclaims", "1"},
                  {"requests.storage", "2Gi"},
                  {"fast.storageclass.storage.k8s.io/requests.storage", "2Gi"}}));

  EXPECT_EQ(to_json(usage_of(evaluator("", "configmaps"), json::object(), kNow)),
            json({{"configmaps", "1"}, {"count/configmaps", "1"}}));
  EXPECT_EQ(to_json(usage_of(evaluator("batch", "jobs"), json::object(), kNow)),
            json({{"count/jobs.batch", "1"}}));
}

TEST(QuotaUsage, ScopesSelectPodsOnly) {
  const Evaluator& pods = evaluator("", "pods");
  json quota = {{"spec",
                 {{"scopes", {"NotBestEffort"}},
                  {"scopeSelector",
                   {{"matchExpressions",
                     {{{"scopeName", "PriorityClass"},
                       {"operator", "In"},
                       {"values", {"high", "medium"}}}}}}}}}};
  std::vector<ScopeRequirement> scopes = scopes_of(quota);
  ASSERT_EQ(scopes.size(), 2u);
  EXPECT_EQ(scopes[0].scope, "NotBestEffort");
  EXPECT_EQ(scopes[1].op, "In");

  json best_effort = pod({container(json())});
  best_effort["spec"]["priorityClassName"] = "high";
  EXPECT_FALSE(matches_scopes(pods, best_effort, scopes));
  json burstable = pod({container({{"cpu", "1"}})});
  burstable["spec"]["priorityClassName"] = "high";
  EXPECT_TRUE(matches_scopes(pods, burstable, scopes));
  burstable["spec"]["priorityClassName"] = "low";
  EXPECT_FALSE(matches_scopes(pods, burstable, scopes));

  json terminating = pod({container(json())});
  terminating["spec"]["activeDeadlineSeconds"] = 30;
  std::vector<ScopeRequirement> term = {{"Terminating", "Exists", {}}};
  EXPECT_TRUE(matches_scopes(pods, terminating, term));
  EXPECT_FALSE(matches_scopes(pods, pod({container(json())}), term));

  // Other resources match no scope; with no scopes everything matches.
  EXPECT_FALSE(matches_scopes(evaluator("", "services"), json::object(), term));
  EXPECT_TRUE(matches_scopes(evaluator("", "services"), json::object(), {}));
}

TEST(QuotaUsage, PodConstraintsNameContainersMissingCpuOrMemory) {
  const Evaluator& pods = evaluator("", "pods");
  json p = pod({named("a", {{"cpu", "1"}}), named("b", json(), {{"memory", "1Gi"}})},
               {named("init", json())});
  EXPECT_EQ(unmet_constraints(pods, {"pods", "requests.cpu", "limits.memory"}, p),
            "must specify limits.memory for: a,init; requests.cpu for: b,init");
  // Limits stand in for requests; resources other than cpu and memory need not be stated.
  EXPECT_EQ(unmet_constraints(pods, {"memory", "requests.storage", "count/pods"}, p),
            "must specify memory for: a,init");
  EXPECT_EQ(unmet_constraints(pods, {"pods", "requests.example.com/gpu"}, p), "");
  EXPECT_EQ(unmet_constraints(evaluator("", "services"), {"requests.cpu"}, json::object()), "");
}

TEST(QuotaUsage, ListsParseAddPrintAndCompare) {
  ResourceList a = parse_list({{"cpu", "500m"}, {"pods", 2}, {"bad", "x1"}, {"nope", true}});
  EXPECT_EQ(a.size(), 2u);
  ResourceList b = parse_list({{"cpu", "0.5"}, {"pods", "2"}});
  EXPECT_TRUE(equal(a, b));
  add(a, parse_list({{"cpu", "1500m"}, {"memory", "1Gi"}}));
  EXPECT_EQ(to_json(a), json({{"cpu", "2"}, {"memory", "1Gi"}, {"pods", "2"}}));
  EXPECT_FALSE(equal(a, b));
  EXPECT_EQ(to_string(a), "cpu=2,memory=1Gi,pods=2");
  EXPECT_EQ(to_string({}), "");
}

}  // namespace
}  // namespace skiff::api::quota
