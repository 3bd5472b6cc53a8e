#include "scheduler/types.h"

#include <gtest/gtest.h>

#include "scheduler/labels.h"
#include "scheduler/node_info.h"
#include "test_util.h"

namespace skiff::scheduler {
namespace {

using nlohmann::json;
using testing::NodeBuilder;
using testing::PodBuilder;

constexpr int64_t kMi = 1024 * 1024;

TEST(PodInfoTest, SumsContainerRequests) {
  PodRef pod = PodBuilder("p")
                   .req("100m", "64Mi")
                   .container({{"name", "d"},
                               {"resources", {{"requests", {{"cpu", "0.5"}, {"memory", "1Gi"}}}}}})
                   .build();
  EXPECT_EQ(pod->requests.milli_cpu, 600);
  EXPECT_EQ(pod->requests.memory, 64 * kMi + 1024 * kMi);
  EXPECT_EQ(pod->non_zero_milli_cpu, 600);
  EXPECT_EQ(pod->non_zero_memory, 64 * kMi + 1024 * kMi);
}

TEST(PodInfoTest, NonZeroDefaultsOnlyForMissingRequests) {
  // One container asks for nothing, one asks for CPU only, one explicitly for zero memory.
  PodRef pod = PodBuilder("p")
                   .container({{"name", "a"}, {"resources", {{"requests", {{"cpu", "200m"}}}}}})
                   .container({{"name", "b"}, {"resources", {{"requests", {{"memory", "0"}}}}}})
                   .build();
  EXPECT_EQ(pod->requests.milli_cpu, 200);
  EXPECT_EQ(pod->requests.memory, 0);
  // c: 100m + 200Mi (defaults); a: 200m + 200Mi; b: 100m + 0 (explicit zero is kept).
  EXPECT_EQ(pod->non_zero_milli_cpu, 100 + 200 + 100);
  EXPECT_EQ(pod->non_zero_memory, 200 * kMi + 200 * kMi + 0);
}

TEST(PodInfoTest, InitContainersUseTheMaxRule) {
  PodRef pod =
      PodBuilder("p")
          .req("1", "1Gi")
          .init_container({{"name", "i1"}, {"resources", {{"requests", {{"cpu", "3"}}}}}})
          .init_container({{"name", "i2"}, {"resources", {{"requests", {{"memory", "2Gi"}}}}}})
          .build();
  EXPECT_EQ(pod->requests.milli_cpu, 3000);
  EXPECT_EQ(pod->requests.memory, 2048 * kMi);
}

TEST(PodInfoTest, RestartableInitContainersAccumulate) {
  // A sidecar (restartPolicy Always) runs alongside the app and the later init containers.
  PodRef pod =
      PodBuilder("p")
          .req("1", "")
          .init_container({{"name", "side"},
                           {"restartPolicy", "Always"},
                           {"resources", {{"requests", {{"cpu", "500m"}}}}}})
          .init_container({{"name", "init"}, {"resources", {{"requests", {{"cpu", "2"}}}}}})
          .build();
  // Regular: 1 + 0.5 (sidecar) = 1.5; init phase: 2 + 0.5 = 2.5 → max 2.5.
  EXPECT_EQ(pod->requests.milli_cpu, 2500);

  PodRef small =
      PodBuilder("q")
          .req("1", "")
          .init_container({{"name", "side"},
                           {"restartPolicy", "Always"},
                           {"resources", {{"requests", {{"cpu", "500m"}}}}}})
          .init_container({{"name", "init"}, {"resources", {{"requests", {{"cpu", "200m"}}}}}})
          .build();
  EXPECT_EQ(small->requests.milli_cpu, 1500);
}

TEST(PodInfoTest, OverheadIsAdded) {
  PodRef pod = PodBuilder("p")
                   .req("1", "1Gi")
                   .spec("overhead", {{"cpu", "250m"}, {"memory", "120Mi"}})
                   .build();
  EXPECT_EQ(pod->requests.milli_cpu, 1250);
  EXPECT_EQ(pod->requests.memory, 1024 * kMi + 120 * kMi);
  EXPECT_EQ(pod->non_zero_milli_cpu, 1250);
}

TEST(PodInfoTest, LimitsStandInForMissingRequests) {
  PodRef pod = PodBuilder("p").build();
  json j = PodBuilder("p").json_ref();
  j["spec"]["containers"][0]["resources"] = {{"limits", {{"cpu", "2"}, {"memory", "1Gi"}}},
                                             {"requests", {{"cpu", "1"}}}};
  PodRef parsed = PodInfo::from_json(j);
  EXPECT_EQ(parsed->requests.milli_cpu, 1000);
  EXPECT_EQ(parsed->requests.memory, 1024 * kMi);
}

TEST(PodInfoTest, ExtendedResourcesAreScalar) {
  PodRef pod = PodBuilder("p")
                   .request("example.com/gpu", "2")
                   .request("hugepages-2Mi", "4Mi")
                   .request("foo", "1")  // not a valid scalar resource name: ignored
                   .build();
  EXPECT_EQ(pod->requests.scalar_value("example.com/gpu"), 2);
  EXPECT_EQ(pod->requests.scalar_value("hugepages-2Mi"), 4 * kMi);
  EXPECT_EQ(pod->requests.scalar_value("foo"), 0);
  EXPECT_TRUE(is_extended_resource_name("example.com/gpu"));
  EXPECT_FALSE(is_extended_resource_name("kubernetes.io/something"));
  EXPECT_TRUE(is_scalar_resource_name("kubernetes.io/something"));
  EXPECT_FALSE(is_scalar_resource_name("cpu"));
}

TEST(PodInfoTest, ParsesSchedulingFields) {
  json j = PodBuilder("p", "ns1")
               .label("app", "web")
               .priority(1000)
               .node_selector("disk", "ssd")
               .toleration({{"key", "k"}, {"operator", "Exists"}, {"effect", "NoSchedule"}})
               .host_port(8080)
               .host_port(53, "UDP", "10.0.0.1")
               .owner("rs-uid")
               .required_anti_affinity("app", "web", "kubernetes.io/hostname")
               .spread(1, "topology.kubernetes.io/zone", "DoNotSchedule", "app", "web")
               .spec("schedulingGates", json::array({{{"name", "wait"}}}))
               .json_ref();
  j["status"]["nominatedNodeName"] = "n9";
  PodRef pod = PodInfo::from_json(j);
  EXPECT_EQ(pod->key(), "ns1/p");
  EXPECT_EQ(pod->priority, 1000);
  EXPECT_EQ(pod->scheduler_name, "default-scheduler");
  EXPECT_EQ(pod->nominated_node_name, "n9");
  EXPECT_EQ(pod->controller_uid, "rs-uid");
  EXPECT_EQ(pod->controller_kind, "ReplicaSet");
  ASSERT_EQ(pod->tolerations.size(), 1u);
  EXPECT_EQ(pod->tolerations[0].op, Toleration::Operator::kExists);
  ASSERT_EQ(pod->host_ports.size(), 2u);
  EXPECT_EQ(pod->host_ports[0], (HostPort{"0.0.0.0", "TCP", 8080}));
  EXPECT_EQ(pod->host_ports[1], (HostPort{"10.0.0.1", "UDP", 53}));
  ASSERT_EQ(pod->required_anti_affinity.size(), 1u);
  EXPECT_TRUE(pod->has_pod_affinity);
  EXPECT_TRUE(pod->has_required_anti_affinity());
  // Without namespaces or a namespaceSelector, a term applies to the pod's own namespace.
  ASSERT_EQ(pod->required_anti_affinity[0].namespaces.size(), 1u);
  EXPECT_EQ(pod->required_anti_affinity[0].namespaces[0].str(), "ns1");
  ASSERT_EQ(pod->spread_constraints.size(), 1u);
  EXPECT_EQ(pod->spread_constraints[0].min_domains, 1);
  EXPECT_TRUE(pod->spread_constraints[0].honor_node_affinity);
  EXPECT_FALSE(pod->spread_constraints[0].honor_node_taints);
  EXPECT_EQ(pod->scheduling_gates, std::vector<std::string>{"wait"});
  EXPECT_TRUE(pod->parse_errors.empty());
}

TEST(PodInfoTest, RecordsInvalidAffinitySelectors) {
  json j = PodBuilder("p").json_ref();
  j["spec"]["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"] =
      json::array({{{"labelSelector",
                     {{"matchExpressions", json::array({{{"key", "a"}, {"operator", "Bogus"}}})}}},
                    {"topologyKey", "zone"}}});
  PodRef pod = PodInfo::from_json(j);
  ASSERT_EQ(pod->parse_errors.size(), 1u);
  EXPECT_EQ(pod->parse_errors[0].rfind("podAffinity", 0), 0u);
  EXPECT_TRUE(pod->required_affinity.empty());
}

TEST(PodInfoTest, MatchLabelKeysMergeThePodsValues) {
  json j = PodBuilder("p").label("app", "web").label("pod-template-hash", "abc").json_ref();
  j["spec"]["topologySpreadConstraints"] =
      json::array({{{"maxSkew", 1},
                    {"topologyKey", "kubernetes.io/hostname"},
                    {"whenUnsatisfiable", "DoNotSchedule"},
                    {"labelSelector", {{"matchLabels", {{"app", "web"}}}}},
                    {"matchLabelKeys", json::array({"pod-template-hash"})}}});
  PodRef pod = PodInfo::from_json(j);
  ASSERT_EQ(pod->spread_constraints.size(), 1u);
  const Selector& s = pod->spread_constraints[0].selector;
  Labels same = Labels::from_json({{"app", "web"}, {"pod-template-hash", "abc"}});
  Labels other_revision = Labels::from_json({{"app", "web"}, {"pod-template-hash", "def"}});
  EXPECT_TRUE(s.matches(same));
  EXPECT_FALSE(s.matches(other_revision));
}

TEST(NodeTest, ParsesNode) {
  NodeRef node = NodeBuilder("n1")
                     .zone("z1")
                     .label("topology.kubernetes.io/region", "r1")
                     .taint("dedicated", "gpu", "NoSchedule")
                     .unschedulable()
                     .ready("False")
                     .allocatable("example.com/gpu", "4")
                     .build();
  EXPECT_EQ(node->name.str(), "n1");
  EXPECT_EQ(node->allocatable.milli_cpu, 4000);
  EXPECT_EQ(node->allocatable.memory, 8192 * kMi);
  EXPECT_EQ(node->allocatable.allowed_pods, 110);
  EXPECT_EQ(node->allocatable.scalar_value("example.com/gpu"), 4);
  ASSERT_EQ(node->taints.size(), 1u);
  EXPECT_EQ(node->taints[0].effect, TaintEffect::kNoSchedule);
  EXPECT_TRUE(node->unschedulable);
  EXPECT_EQ(node->ready, ConditionStatus::kFalse);
  EXPECT_EQ(node->zone_id, std::string("r1:\0:z1", 7));
}

TEST(NodeTest, CapacityStandsInForMissingAllocatable) {
  json j = {{"metadata", {{"name", "n"}}},
            {"status", {{"capacity", {{"cpu", "2"}, {"memory", "1Gi"}, {"pods", "10"}}}}}};
  NodeRef node = Node::from_json(j);
  EXPECT_EQ(node->allocatable.milli_cpu, 2000);
  EXPECT_EQ(node->allocatable.allowed_pods, 10);
  EXPECT_EQ(node->ready, ConditionStatus::kMissing);
  EXPECT_EQ(node->zone_id, "");
}

TEST(TolerationTest, ToleratesAsUpstream) {
  Taint t{"k", "v", TaintEffect::kNoSchedule};
  EXPECT_TRUE(
      (Toleration{"k", Toleration::Operator::kEqual, "v", TaintEffect::kNoSchedule}).tolerates(t));
  EXPECT_FALSE(
      (Toleration{"k", Toleration::Operator::kEqual, "x", TaintEffect::kNoSchedule}).tolerates(t));
  EXPECT_TRUE((Toleration{"k", Toleration::Operator::kExists, "", std::nullopt}).tolerates(t));
  EXPECT_FALSE(
      (Toleration{"k", Toleration::Operator::kExists, "", TaintEffect::kNoExecute}).tolerates(t));
  // Empty key with Exists tolerates everything.
  EXPECT_TRUE((Toleration{"", Toleration::Operator::kExists, "", std::nullopt}).tolerates(t));
  EXPECT_FALSE((Toleration{"other", Toleration::Operator::kExists, "", std::nullopt}).tolerates(t));
}

TEST(SelectorTest, MatchesLabelSelectors) {
  auto sel = Selector::from_json(
      {{"matchLabels", {{"app", "web"}}},
       {"matchExpressions",
        json::array({{{"key", "tier"}, {"operator", "In"}, {"values", {"a", "b"}}},
                     {{"key", "legacy"}, {"operator", "DoesNotExist"}}})}});
  ASSERT_TRUE(sel.is_ok());
  EXPECT_TRUE(sel->matches(Labels::from_json({{"app", "web"}, {"tier", "b"}})));
  EXPECT_FALSE(sel->matches(Labels::from_json({{"app", "web"}, {"tier", "c"}})));
  EXPECT_FALSE(sel->matches(Labels::from_json({{"app", "web"}, {"tier", "a"}, {"legacy", "1"}})));
  // A null selector matches nothing, an empty one everything.
  EXPECT_FALSE(Selector::from_json(nullptr)->matches(Labels()));
  EXPECT_TRUE(Selector::from_json(json::object())->matches(Labels()));
  EXPECT_FALSE(Selector::from_json({{"matchLabels", {{"a", "b c"}}}}).is_ok());
}

TEST(NodeSelectorTest, TermsAsUpstream) {
  Labels labels = Labels::from_json({{"zone", "a"}, {"cores", "8"}});
  HString name("node-1");
  auto term = [](json j) { return NodeSelectorTerm::from_json(j); };
  auto expr = [](const std::string& k, const std::string& op, json values) {
    json e = {{"key", k}, {"operator", op}};
    if (!values.is_null()) e["values"] = values;
    return e;
  };
  EXPECT_TRUE(term({{"matchExpressions", {expr("zone", "In", {"a", "b"})}}}).matches(labels, name));
  EXPECT_FALSE(term({{"matchExpressions", {expr("zone", "NotIn", {"a"})}}}).matches(labels, name));
  EXPECT_TRUE(term({{"matchExpressions", {expr("cores", "Gt", {"4"})}}}).matches(labels, name));
  EXPECT_FALSE(term({{"matchExpressions", {expr("cores", "Lt", {"4"})}}}).matches(labels, name));
  EXPECT_TRUE(
      term({{"matchExpressions", {expr("gpu", "DoesNotExist", nullptr)}}}).matches(labels, name));
  EXPECT_TRUE(
      term({{"matchFields", {expr("metadata.name", "In", {"node-1"})}}}).matches(labels, name));
  EXPECT_FALSE(
      term({{"matchFields", {expr("metadata.name", "NotIn", {"node-1"})}}}).matches(labels, name));
  // Empty or invalid terms match nothing.
  EXPECT_FALSE(term(json::object()).matches(labels, name));
  NodeSelectorTerm bad = term({{"matchExpressions", {expr("cores", "Gt", {"x"})}}});
  EXPECT_FALSE(bad.valid());
  EXPECT_FALSE(bad.matches(labels, name));
  EXPECT_FALSE(term({{"matchFields", {expr("metadata.name", "In", {"a", "b"})}}}).valid());
  // Node names from matchFields.
  auto names = term({{"matchFields", {expr("metadata.name", "In", {"n1"})}}}).node_names();
  ASSERT_TRUE(names.has_value());
  EXPECT_EQ(*names, std::vector<std::string>{"n1"});
  // Several name requirements in one term intersect.
  names = term({{"matchFields",
                 {expr("metadata.name", "In", {"n1"}), expr("metadata.name", "In", {"n2"})}}})
              .node_names();
  ASSERT_TRUE(names.has_value());
  EXPECT_TRUE(names->empty());
  EXPECT_FALSE(term({{"matchExpressions", {expr("zone", "In", {"a"})}}}).node_names().has_value());
}

TEST(NodeInfoTest, KeepsSumsIncrementally) {
  NodeInfo info("n1");
  info.set_node(NodeBuilder("n1").build());
  PodRef a = PodBuilder("a").req("500m", "1Gi").host_port(80).build();
  PodRef b = PodBuilder("b").required_anti_affinity("x", "y", "kubernetes.io/hostname").build();
  info.add_pod(a);
  info.add_pod(b);
  EXPECT_EQ(info.requested().milli_cpu, 500);
  EXPECT_EQ(info.non_zero_milli_cpu(), 600);  // b requests nothing: 100m stands in
  EXPECT_EQ(info.non_zero_memory(), 1024 * kMi + 200 * kMi);
  EXPECT_EQ(info.pods_with_affinity().size(), 1u);
  EXPECT_EQ(info.pods_with_required_anti_affinity().size(), 1u);
  EXPECT_TRUE(info.port_in_use({"0.0.0.0", "TCP", 80}));
  EXPECT_TRUE(info.port_in_use({"10.1.1.1", "TCP", 80}));
  EXPECT_FALSE(info.port_in_use({"0.0.0.0", "UDP", 80}));
  EXPECT_TRUE(info.remove_pod(a->uid));
  EXPECT_FALSE(info.remove_pod(a->uid));
  EXPECT_EQ(info.requested().milli_cpu, 0);
  EXPECT_EQ(info.non_zero_milli_cpu(), 100);
  EXPECT_FALSE(info.port_in_use({"0.0.0.0", "TCP", 80}));
  EXPECT_TRUE(info.remove_pod(b->uid));
  EXPECT_TRUE(info.pods_with_affinity().empty());
  EXPECT_TRUE(info.pods_with_required_anti_affinity().empty());
}

TEST(NodeInfoTest, SpecificHostIpsOnlyConflictWithTheSameIpOrWildcard) {
  NodeInfo info("n1");
  info.add_pod(PodBuilder("a").host_port(80, "TCP", "10.0.0.1").build());
  EXPECT_TRUE(info.port_in_use({"10.0.0.1", "TCP", 80}));
  EXPECT_FALSE(info.port_in_use({"10.0.0.2", "TCP", 80}));
  EXPECT_TRUE(info.port_in_use({"0.0.0.0", "TCP", 80}));
}

}  // namespace
}  // namespace skiff::scheduler
