#include "apiserver/tables.h"

#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "api/schema.h"
#include "apiserver/registry.h"
#include "apiserver/request_info.h"
#include "apiserver/strategies.h"
#include "storage/memory/memory_store.h"

namespace skiff::apiserver {
namespace {

using nlohmann::json;
using std::chrono::hours;
using std::chrono::minutes;
using std::chrono::seconds;

// 2024-05-01T12:00:00Z
const std::chrono::system_clock::time_point kNow{seconds(1714564800)};

class TablesTest : public ::testing::Test {
 protected:
  TablesTest() : tables_(printer_columns([] { return kNow; })) {}

  const std::vector<TableColumn>& columns(const std::string& key) {
    auto it = tables_.find(key);
    EXPECT_NE(it, tables_.end()) << key;
    return it->second;
  }

  const TableColumn* column(const std::string& key, const std::string& name) {
    for (const TableColumn& c : columns(key)) {
      if (c.name == name) return &c;
    }
    ADD_FAILURE() << key << " has no column " << name;
    return nullptr;
  }

  json cell(const std::string& key, const std::string& name, const json& obj) {
    const TableColumn* c = column(key, name);
    return c ? c->cell(obj) : json();
  }

  std::vector<std::string> header(const std::string& key, int priority) {
    std::vector<std::string> out;
    for (const TableColumn& c : columns(key)) {
      if (c.priority == priority) out.push_back(c.name);
    }
    return out;
  }

  std::unordered_map<std::string, std::vector<TableColumn>> tables_;
};

json pod(json status, json spec = json{{"containers", {{{"name", "main"}}}}}) {
  return json{{"metadata", {{"name", "p"}, {"creationTimestamp", "2024-05-01T11:55:00Z"}}},
              {"spec", std::move(spec)},
              {"status", std::move(status)}};
}

json running(bool ready, int restarts = 0) {
  return json{{"name", "main"},
              {"ready", ready},
              {"restartCount", restarts},
              {"state", {{"running", {{"startedAt", "2024-05-01T11:56:00Z"}}}}}};
}

TEST(HumanDurationTest, FollowsUpstreamRules) {
  EXPECT_EQ(human_duration(seconds(-5)), "<invalid>");
  EXPECT_EQ(human_duration(seconds(-1)), "0s");
  EXPECT_EQ(human_duration(seconds(0)), "0s");
  EXPECT_EQ(human_duration(seconds(45)), "45s");
  EXPECT_EQ(human_duration(seconds(119)), "119s");
  EXPECT_EQ(human_duration(seconds(120)), "2m");
  EXPECT_EQ(human_duration(seconds(330)), "5m30s");
  EXPECT_EQ(human_duration(minutes(5)), "5m");
  EXPECT_EQ(human_duration(minutes(45)), "45m");
  EXPECT_EQ(human_duration(minutes(179)), "179m");
  EXPECT_EQ(human_duration(hours(3)), "3h");
  EXPECT_EQ(human_duration(hours(3) + minutes(20)), "3h20m");
  EXPECT_EQ(human_duration(hours(8) + minutes(20)), "8h");
  EXPECT_EQ(human_duration(hours(47)), "47h");
  EXPECT_EQ(human_duration(hours(48)), "2d");
  EXPECT_EQ(human_duration(hours(51)), "2d3h");
  EXPECT_EQ(human_duration(hours(24 * 10)), "10d");
  EXPECT_EQ(human_duration(hours(24 * 729)), "729d");
  EXPECT_EQ(human_duration(hours(24 * (365 * 3 + 12))), "3y12d");
  EXPECT_EQ(human_duration(hours(24 * 365 * 3)), "3y");
  EXPECT_EQ(human_duration(hours(24 * 365 * 9)), "9y");
}

TEST_F(TablesTest, PodColumnsMatchUpstream) {
  EXPECT_EQ(header("/pods", 0),
            (std::vector<std::string>{"Name", "Ready", "Status", "Restarts", "Age"}));
  EXPECT_EQ(header("/pods", 1),
            (std::vector<std::string>{"IP", "Node", "Nominated Node", "Readiness Gates"}));
  EXPECT_EQ(column("/pods", "Name")->format, "name");
  EXPECT_EQ(column("/pods", "Restarts")->type, "string");
}

TEST_F(TablesTest, PodPending) {
  json p = pod({{"phase", "Pending"}});
  EXPECT_EQ(cell("/pods", "Name", p), "p");
  EXPECT_EQ(cell("/pods", "Ready", p), "0/1");
  EXPECT_EQ(cell("/pods", "Status", p), "Pending");
  EXPECT_EQ(cell("/pods", "Restarts", p), "0");
  EXPECT_EQ(cell("/pods", "Age", p), "5m");
  EXPECT_EQ(cell("/pods", "IP", p), "<none>");
  EXPECT_EQ(cell("/pods", "Node", p), "<none>");
  EXPECT_EQ(cell("/pods", "Nominated Node", p), "<none>");
  EXPECT_EQ(cell("/pods", "Readiness Gates", p), "<none>");
}

TEST_F(TablesTest, PodRunningReady) {
  json p = pod({{"phase", "Running"},
                {"podIPs", {{{"ip", "10.42.0.7"}}}},
                {"conditions", {{{"type", "Ready"}, {"status", "True"}}}},
                {"containerStatuses", {running(true)}}});
  p["spec"]["nodeName"] = "node-1";
  EXPECT_EQ(cell("/pods", "Ready", p), "1/1");
  EXPECT_EQ(cell("/pods", "Status", p), "Running");
  EXPECT_EQ(cell("/pods", "Restarts", p), "0");
  EXPECT_EQ(cell("/pods", "IP", p), "10.42.0.7");
  EXPECT_EQ(cell("/pods", "Node", p), "node-1");
  p["status"].erase("podIPs");
  p["status"]["podIP"] = "10.42.0.8";
  EXPECT_EQ(cell("/pods", "IP", p), "10.42.0.8");
}

TEST_F(TablesTest, PodCrashLoopBackOffWithRestarts) {
  json cs = {{"name", "main"},
             {"ready", false},
             {"restartCount", 5},
             {"state", {{"waiting", {{"reason", "CrashLoopBackOff"}}}}},
             {"lastState",
              {{"terminated",
                {{"exitCode", 1}, {"reason", "Error"}, {"finishedAt", "2024-05-01T11:58:00Z"}}}}}};
  json p = pod({{"phase", "Running"}, {"containerStatuses", {cs}}});
  EXPECT_EQ(cell("/pods", "Ready", p), "0/1");
  EXPECT_EQ(cell("/pods", "Status", p), "CrashLoopBackOff");
  EXPECT_EQ(cell("/pods", "Restarts", p), "5 (2m ago)");
}

TEST_F(TablesTest, PodCompletedAndError) {
  json done = {{"name", "main"},
               {"ready", false},
               {"restartCount", 0},
               {"state", {{"terminated", {{"exitCode", 0}, {"reason", "Completed"}}}}}};
  EXPECT_EQ(cell("/pods", "Status", pod({{"phase", "Succeeded"}, {"containerStatuses", {done}}})),
            "Completed");

  json failed = {{"name", "main"},
                 {"state", {{"terminated", {{"exitCode", 2}, {"reason", "Error"}}}}}};
  EXPECT_EQ(cell("/pods", "Status", pod({{"phase", "Failed"}, {"containerStatuses", {failed}}})),
            "Error");

  json no_reason = {{"name", "main"}, {"state", {{"terminated", {{"exitCode", 137}}}}}};
  EXPECT_EQ(cell("/pods", "Status", pod({{"phase", "Failed"}, {"containerStatuses", {no_reason}}})),
            "ExitCode:137");
  json signal = {{"name", "main"}, {"state", {{"terminated", {{"exitCode", 0}, {"signal", 9}}}}}};
  EXPECT_EQ(cell("/pods", "Status", pod({{"phase", "Failed"}, {"containerStatuses", {signal}}})),
            "Signal:9");
}

TEST_F(TablesTest, PodCompletedContainerBesideRunningOne) {
  json spec = {{"containers", {{{"name", "a"}}, {{"name", "b"}}}}};
  json a = {{"name", "a"}, {"state", {{"terminated", {{"exitCode", 0}, {"reason", "Completed"}}}}}};
  json b = running(true);
  b["name"] = "b";
  // Statuses are read last to first, so "a" decides the reason unless a container still runs.
  json p = pod({{"phase", "Running"}, {"containerStatuses", {a, b}}}, spec);
  EXPECT_EQ(cell("/pods", "Status", p), "NotReady");
  p["status"]["conditions"] = {{{"type", "Ready"}, {"status", "True"}}};
  EXPECT_EQ(cell("/pods", "Status", p), "Running");
  EXPECT_EQ(cell("/pods", "Ready", p), "1/2");
}

TEST_F(TablesTest, PodInitContainers) {
  json spec = {{"initContainers", {{{"name", "i1"}}, {{"name", "i2"}}}},
               {"containers", {{{"name", "main"}}}}};
  json i1 = {{"name", "i1"}, {"state", {{"running", json::object()}}}};
  json i2 = {{"name", "i2"}, {"state", {{"waiting", {{"reason", "PodInitializing"}}}}}};
  json p = pod({{"phase", "Pending"}, {"initContainerStatuses", {i1, i2}}}, spec);
  EXPECT_EQ(cell("/pods", "Status", p), "Init:0/2");
  EXPECT_EQ(cell("/pods", "Ready", p), "0/1");

  json i1_done = {{"name", "i1"}, {"state", {{"terminated", {{"exitCode", 0}}}}}};
  p["status"]["initContainerStatuses"] = {i1_done, i2};
  EXPECT_EQ(cell("/pods", "Status", p), "Init:1/2");

  json i2_crash = {{"name", "i2"},
                   {"restartCount", 3},
                   {"state", {{"waiting", {{"reason", "CrashLoopBackOff"}}}}}};
  p["status"]["initContainerStatuses"] = {i1_done, i2_crash};
  EXPECT_EQ(cell("/pods", "Status", p), "Init:CrashLoopBackOff");
  EXPECT_EQ(cell("/pods", "Restarts", p), "3");

  json i2_failed = {{"name", "i2"}, {"state", {{"terminated", {{"exitCode", 1}}}}}};
  p["status"]["initContainerStatuses"] = {i1_done, i2_failed};
  EXPECT_EQ(cell("/pods", "Status", p), "Init:ExitCode:1");
  i2_failed["state"]["terminated"]["reason"] = "Error";
  p["status"]["initContainerStatuses"] = {i1_done, i2_failed};
  EXPECT_EQ(cell("/pods", "Status", p), "Init:Error");
}

TEST_F(TablesTest, PodSidecarCountsAsContainer) {
  json spec = {{"initContainers", {{{"name", "proxy"}, {"restartPolicy", "Always"}}}},
               {"containers", {{{"name", "main"}}}}};
  json proxy = {{"name", "proxy"},
                {"started", true},
                {"ready", true},
                {"state", {{"running", json::object()}}}};
  json p = pod({{"phase", "Running"},
                {"conditions", {{{"type", "Initialized"}, {"status", "True"}}}},
                {"initContainerStatuses", {proxy}},
                {"containerStatuses", {running(true)}}},
               spec);
  EXPECT_EQ(cell("/pods", "Ready", p), "2/2");
  EXPECT_EQ(cell("/pods", "Status", p), "Running");
}

TEST_F(TablesTest, PodTerminatingAndNodeLost) {
  json p = pod({{"phase", "Running"}, {"containerStatuses", {running(true)}}});
  p["metadata"]["deletionTimestamp"] = "2024-05-01T11:59:00Z";
  EXPECT_EQ(cell("/pods", "Status", p), "Terminating");

  p["status"]["phase"] = "Succeeded";  // a finished pod keeps its final status
  p["status"]["containerStatuses"] = json::array();
  EXPECT_EQ(cell("/pods", "Status", p), "Succeeded");

  json lost = pod({{"phase", "Running"}, {"reason", "NodeLost"}});
  EXPECT_EQ(cell("/pods", "Status", lost), "NodeLost");
  lost["metadata"]["deletionTimestamp"] = "2024-05-01T11:59:00Z";
  EXPECT_EQ(cell("/pods", "Status", lost), "Unknown");

  json gated = pod({{"phase", "Pending"},
                    {"conditions", {{{"type", "PodScheduled"}, {"reason", "SchedulingGated"}}}}});
  EXPECT_EQ(cell("/pods", "Status", gated), "SchedulingGated");
}

TEST_F(TablesTest, PodReadinessGates) {
  json p = pod(
      {{"phase", "Running"}, {"conditions", {{{"type", "example.com/ok"}, {"status", "True"}}}}});
  p["spec"]["readinessGates"] = {{{"conditionType", "example.com/ok"}},
                                 {{"conditionType", "example.com/other"}}};
  EXPECT_EQ(cell("/pods", "Readiness Gates", p), "1/2");
}

TEST_F(TablesTest, CellsNeverThrowOnOddShapes) {
  const json odd[] = {json(),
                      json(42),
                      json("x"),
                      json::array({1, 2}),
                      json::object(),
                      json{{"metadata", 5},
                           {"spec", "nope"},
                           {"status", {{"containerStatuses", "x"}, {"conditions", {1, "a"}}}}},
                      json{{"metadata", {{"name", 7}, {"creationTimestamp", "garbage"}}},
                           {"spec",
                            {{"containers", {1, json::object()}},
                             {"ports", {{{"port", "eighty"}}}},
                             {"selector", {{"matchExpressions", {{{"operator", "Bogus"}}}}}}}}}};
  for (const auto& [key, cols] : tables_) {
    for (const TableColumn& c : cols) {
      for (const json& o : odd) {
        EXPECT_NO_THROW(c.cell(o)) << key << " " << c.name << " " << o.dump();
      }
    }
  }
  json bad_age = {{"metadata", {{"name", "x"}, {"creationTimestamp", "garbage"}}}};
  EXPECT_EQ(cell("/pods", "Age", bad_age), "<unknown>");
}

TEST_F(TablesTest, ServicePortsAndIPs) {
  EXPECT_EQ(header("apps/deployments", 0).size(), 5u);
  EXPECT_EQ(header("/services", 0), (std::vector<std::string>{"Name", "Type", "Cluster-IP",
                                                              "External-IP", "Port(s)", "Age"}));
  EXPECT_EQ(header("/services", 1), (std::vector<std::string>{"Selector"}));
  json svc = {{"metadata", {{"name", "web"}}},
              {"spec",
               {{"type", "NodePort"},
                {"clusterIP", "10.43.0.10"},
                {"clusterIPs", {"10.43.0.10"}},
                {"selector", {{"app", "web"}, {"tier", "fe"}}},
                {"ports",
                 {{{"port", 80}, {"protocol", "TCP"}},
                  {{"port", 443}, {"nodePort", 30443}, {"protocol", "TCP"}}}}}}};
  EXPECT_EQ(cell("/services", "Port(s)", svc), "80/TCP,443:30443/TCP");
  EXPECT_EQ(cell("/services", "Type", svc), "NodePort");
  EXPECT_EQ(cell("/services", "Cluster-IP", svc), "10.43.0.10");
  EXPECT_EQ(cell("/services", "External-IP", svc), "<none>");
  EXPECT_EQ(cell("/services", "Selector", svc), "app=web,tier=fe");

  svc["spec"]["type"] = "LoadBalancer";
  EXPECT_EQ(cell("/services", "External-IP", svc), "<pending>");
  svc["status"]["loadBalancer"]["ingress"] = {{{"ip", "192.0.2.9"}}, {{"hostname", "lb.example"}}};
  EXPECT_EQ(cell("/services", "External-IP", svc), "192.0.2.9,lb.example");

  json headless = {{"spec", {{"type", "ClusterIP"}, {"clusterIPs", {"None"}}}}};
  EXPECT_EQ(cell("/services", "Cluster-IP", headless), "None");
  EXPECT_EQ(cell("/services", "Port(s)", headless), "<none>");
  EXPECT_EQ(cell("/services", "Selector", headless), "<none>");
  json external = {{"spec", {{"type", "ExternalName"}, {"externalName", "db.example.com"}}}};
  EXPECT_EQ(cell("/services", "External-IP", external), "db.example.com");
  EXPECT_EQ(cell("/services", "Cluster-IP", external), "<none>");
  json single_stack = {{"spec", {{"type", "ClusterIP"}, {"clusterIP", "10.43.0.1"}}}};
  EXPECT_EQ(cell("/services", "Cluster-IP", single_stack), "10.43.0.1");
}

TEST_F(TablesTest, DeploymentReplicaSetStatefulSet) {
  EXPECT_EQ(header("apps/deployments", 0),
            (std::vector<std::string>{"Name", "Ready", "Up-to-date", "Available", "Age"}));
  EXPECT_EQ(header("apps/deployments", 1),
            (std::vector<std::string>{"Containers", "Images", "Selector"}));
  json d = {{"metadata", {{"name", "web"}, {"creationTimestamp", "2024-04-29T09:00:00Z"}}},
            {"spec",
             {{"replicas", 3},
              {"selector",
               {{"matchLabels", {{"app", "web"}}},
                {"matchExpressions",
                 {{{"key", "env"}, {"operator", "In"}, {"values", {"prod", "dev"}}}}}}},
              {"template",
               {{"spec",
                 {{"containers",
                   {{{"name", "nginx"}, {"image", "nginx:1.27"}},
                    {{"name", "side"}, {"image", "busybox"}}}}}}}}}},
            {"status", {{"readyReplicas", 2}, {"updatedReplicas", 3}, {"availableReplicas", 2}}}};
  EXPECT_EQ(cell("apps/deployments", "Ready", d), "2/3");
  EXPECT_EQ(cell("apps/deployments", "Up-to-date", d), 3);
  EXPECT_EQ(cell("apps/deployments", "Available", d), 2);
  EXPECT_EQ(cell("apps/deployments", "Age", d), "2d3h");
  EXPECT_EQ(cell("apps/deployments", "Containers", d), "nginx,side");
  EXPECT_EQ(cell("apps/deployments", "Images", d), "nginx:1.27,busybox");
  EXPECT_EQ(cell("apps/deployments", "Selector", d), "app=web,env in (dev,prod)");

  json rs = d;
  rs["status"] = {{"replicas", 3}, {"readyReplicas", 1}};
  EXPECT_EQ(header("apps/replicasets", 0),
            (std::vector<std::string>{"Name", "Desired", "Current", "Ready", "Age"}));
  EXPECT_EQ(cell("apps/replicasets", "Desired", rs), 3);
  EXPECT_EQ(cell("apps/replicasets", "Current", rs), 3);
  EXPECT_EQ(cell("apps/replicasets", "Ready", rs), 1);
  EXPECT_EQ(column("apps/replicasets", "Desired")->type, "integer");

  EXPECT_EQ(cell("apps/statefulsets", "Ready", rs), "1/3");

  json rc = {{"spec", {{"replicas", 2}, {"selector", {{"app", "old"}}}}}};
  EXPECT_EQ(cell("/replicationcontrollers", "Selector", rc), "app=old");
  EXPECT_EQ(cell("/replicationcontrollers", "Desired", rc), 2);

  json ds = {{"spec",
              {{"selector", {{"matchLabels", {{"app", "agent"}}}}},
               {"template", {{"spec", {{"nodeSelector", {{"kubernetes.io/os", "linux"}}}}}}}}},
             {"status", {{"desiredNumberScheduled", 2}, {"numberReady", 1}}}};
  EXPECT_EQ(cell("apps/daemonsets", "Desired", ds), 2);
  EXPECT_EQ(cell("apps/daemonsets", "Ready", ds), 1);
  EXPECT_EQ(cell("apps/daemonsets", "Current", ds), 0);
  EXPECT_EQ(cell("apps/daemonsets", "Node Selector", ds), "kubernetes.io/os=linux");
  EXPECT_EQ(cell("apps/daemonsets", "Selector", ds), "app=agent");
}

TEST_F(TablesTest, JobsAndCronJobs) {
  EXPECT_EQ(header("batch/jobs", 0),
            (std::vector<std::string>{"Name", "Status", "Completions", "Duration", "Age"}));
  json job = {{"metadata", {{"name", "pi"}, {"creationTimestamp", "2024-05-01T11:50:00Z"}}},
              {"spec", {{"completions", 1}, {"parallelism", 1}}},
              {"status",
               {{"succeeded", 1},
                {"startTime", "2024-05-01T11:50:00Z"},
                {"completionTime", "2024-05-01T11:50:42Z"},
                {"conditions", {{{"type", "Complete"}, {"status", "True"}}}}}}};
  EXPECT_EQ(cell("batch/jobs", "Status", job), "Complete");
  EXPECT_EQ(cell("batch/jobs", "Completions", job), "1/1");
  EXPECT_EQ(cell("batch/jobs", "Duration", job), "42s");
  EXPECT_EQ(cell("batch/jobs", "Age", job), "10m");

  json running_job = {{"spec", {{"parallelism", 3}}},
                      {"status", {{"active", 3}, {"startTime", "2024-05-01T11:57:00Z"}}}};
  EXPECT_EQ(cell("batch/jobs", "Status", running_job), "Running");
  EXPECT_EQ(cell("batch/jobs", "Completions", running_job), "0/1 of 3");
  EXPECT_EQ(cell("batch/jobs", "Duration", running_job), "3m");

  json failed = {{"status", {{"conditions", {{{"type", "Failed"}, {"status", "True"}}}}}}};
  EXPECT_EQ(cell("batch/jobs", "Status", failed), "Failed");
  EXPECT_EQ(cell("batch/jobs", "Duration", failed), "");
  json suspended = {{"status", {{"conditions", {{{"type", "Suspended"}, {"status", "True"}}}}}}};
  EXPECT_EQ(cell("batch/jobs", "Status", suspended), "Suspended");
  suspended["metadata"]["deletionTimestamp"] = "2024-05-01T11:59:00Z";
  EXPECT_EQ(cell("batch/jobs", "Status", suspended), "Terminating");

  json cj = {
      {"spec", {{"schedule", "*/5 * * * *"}, {"suspend", false}}},
      {"status", {{"active", {{{"name", "a"}}}}, {"lastScheduleTime", "2024-05-01T11:55:00Z"}}}};
  EXPECT_EQ(cell("batch/cronjobs", "Schedule", cj), "*/5 * * * *");
  EXPECT_EQ(cell("batch/cronjobs", "Timezone", cj), "<none>");
  EXPECT_EQ(cell("batch/cronjobs", "Suspend", cj), "False");
  EXPECT_EQ(cell("batch/cronjobs", "Active", cj), 1);
  EXPECT_EQ(cell("batch/cronjobs", "Last Schedule", cj), "5m");
  EXPECT_EQ(cell("batch/cronjobs", "Last Schedule", json::object()), "<none>");
}

TEST_F(TablesTest, NodeStatusRolesAndWide) {
  EXPECT_EQ(header("/nodes", 0),
            (std::vector<std::string>{"Name", "Status", "Roles", "Age", "Version"}));
  EXPECT_EQ(header("/nodes", 1), (std::vector<std::string>{"Internal-IP", "External-IP", "OS-Image",
                                                           "Kernel-Version", "Container-Runtime"}));
  json node = {{"metadata",
                {{"name", "n1"},
                 {"labels",
                  {{"node-role.kubernetes.io/control-plane", ""},
                   {"node-role.kubernetes.io/etcd", "true"},
                   {"kubernetes.io/role", "master"},
                   {"node-role.kubernetes.io/", ""}}}}},
               {"spec", {{"unschedulable", true}}},
               {"status",
                {{"conditions",
                  {{{"type", "MemoryPressure"}, {"status", "False"}},
                   {{"type", "Ready"}, {"status", "True"}}}},
                 {"addresses", {{{"type", "InternalIP"}, {"address", "192.168.1.5"}}}},
                 {"nodeInfo", {{"kubeletVersion", "v1.32.0"}, {"osImage", "Debian 12"}}}}}};
  EXPECT_EQ(cell("/nodes", "Status", node), "Ready,SchedulingDisabled");
  EXPECT_EQ(cell("/nodes", "Roles", node), "control-plane,etcd,master");
  EXPECT_EQ(cell("/nodes", "Version", node), "v1.32.0");
  EXPECT_EQ(cell("/nodes", "Internal-IP", node), "192.168.1.5");
  EXPECT_EQ(cell("/nodes", "External-IP", node), "<none>");
  EXPECT_EQ(cell("/nodes", "OS-Image", node), "Debian 12");
  EXPECT_EQ(cell("/nodes", "Kernel-Version", node), "<unknown>");

  node["status"]["conditions"] = {{{"type", "Ready"}, {"status", "Unknown"}}};
  node["spec"]["unschedulable"] = false;
  EXPECT_EQ(cell("/nodes", "Status", node), "NotReady");
  node["status"]["conditions"] = json::array();
  EXPECT_EQ(cell("/nodes", "Status", node), "Unknown");
  EXPECT_EQ(cell("/nodes", "Roles", json::object()), "<none>");
}

TEST_F(TablesTest, SmallCoreResources) {
  json ns = {{"metadata", {{"name", "default"}}}, {"status", {{"phase", "Active"}}}};
  EXPECT_EQ(cell("/namespaces", "Status", ns), "Active");

  json cm = {{"data", {{"a", "1"}, {"b", "2"}}}, {"binaryData", {{"c", "AA=="}}}};
  EXPECT_EQ(cell("/configmaps", "Data", cm), 3);
  json secret = {{"type", "Opaque"}, {"data", {{"a", "MQ=="}}}};
  EXPECT_EQ(cell("/secrets", "Type", secret), "Opaque");
  EXPECT_EQ(cell("/secrets", "Data", secret), 1);
  EXPECT_EQ(cell("/serviceaccounts", "Secrets", json::object()), 0);

  json ep = {{"subsets",
              {{{"addresses", {{{"ip", "10.0.0.1"}}, {{"ip", "10.0.0.2"}}, {{"ip", "fd00::3"}}}},
                {"ports", {{{"port", 80}}, {{"port", 443}}}}}}}};
  EXPECT_EQ(cell("/endpoints", "Endpoints", ep),
            "10.0.0.1:80,10.0.0.2:80,[fd00::3]:80 + 3 more...");
  EXPECT_EQ(cell("/endpoints", "Endpoints", json::object()), "<none>");

  json slice = {{"addressType", "IPv4"},
                {"ports", {{{"port", 8080}}, {{"name", "metrics"}}, json::object()}},
                {"endpoints", {{{"addresses", {"10.0.0.1"}}}, {{"addresses", {"10.0.0.2"}}}}}};
  EXPECT_EQ(cell("discovery.k8s.io/endpointslices", "AddressType", slice), "IPv4");
  EXPECT_EQ(cell("discovery.k8s.io/endpointslices", "Ports", slice), "8080,metrics,*");
  EXPECT_EQ(cell("discovery.k8s.io/endpointslices", "Endpoints", slice), "10.0.0.1,10.0.0.2");
  EXPECT_EQ(cell("discovery.k8s.io/endpointslices", "Endpoints", json::object()), "<unset>");

  json lease = {{"spec", {{"holderIdentity", "node-1"}}}};
  EXPECT_EQ(cell("coordination.k8s.io/leases", "Holder", lease), "node-1");

  json pc = {{"value", 1000}, {"globalDefault", true}, {"preemptionPolicy", "Never"}};
  EXPECT_EQ(cell("scheduling.k8s.io/priorityclasses", "Value", pc), 1000);
  EXPECT_EQ(cell("scheduling.k8s.io/priorityclasses", "Global-Default", pc), true);
  EXPECT_EQ(cell("scheduling.k8s.io/priorityclasses", "PreemptionPolicy", pc), "Never");

  json quota = {{"status",
                 {{"hard", {{"pods", "10"}, {"limits.cpu", "2"}, {"requests.memory", "1Gi"}}},
                  {"used", {{"pods", "3"}, {"limits.cpu", "500m"}}}}}};
  EXPECT_EQ(cell("/resourcequotas", "Request", quota), "pods: 3/10, requests.memory: 0/1Gi");
  EXPECT_EQ(cell("/resourcequotas", "Limit", quota), "limits.cpu: 500m/2");

  json role = {{"metadata", {{"name", "r"}, {"creationTimestamp", "2024-05-01T11:00:00Z"}}}};
  EXPECT_EQ(header("rbac.authorization.k8s.io/roles", 0),
            (std::vector<std::string>{"Name", "Created At"}));
  EXPECT_EQ(cell("rbac.authorization.k8s.io/clusterroles", "Created At", role),
            "2024-05-01T11:00:00Z");
  EXPECT_EQ(header("/limitranges", 0), (std::vector<std::string>{"Name", "Created At"}));

  json rb = {{"roleRef", {{"kind", "ClusterRole"}, {"name", "view"}}},
             {"subjects",
              {{{"kind", "User"}, {"name", "alice"}},
               {{"kind", "Group"}, {"name", "devs"}},
               {{"kind", "ServiceAccount"}, {"namespace", "kube-system"}, {"name", "ctl"}},
               {{"kind", "User"}, {"name", "bob"}}}}};
  EXPECT_EQ(cell("rbac.authorization.k8s.io/rolebindings", "Role", rb), "ClusterRole/view");
  EXPECT_EQ(cell("rbac.authorization.k8s.io/clusterrolebindings", "Users", rb), "alice, bob");
  EXPECT_EQ(cell("rbac.authorization.k8s.io/rolebindings", "Groups", rb), "devs");
  EXPECT_EQ(cell("rbac.authorization.k8s.io/rolebindings", "ServiceAccounts", rb),
            "kube-system/ctl");

  json rev = {{"metadata",
               {{"ownerReferences",
                 {{{"apiVersion", "apps/v1"},
                   {"kind", "DaemonSet"},
                   {"name", "agent"},
                   {"controller", true}}}}}},
              {"revision", 2}};
  EXPECT_EQ(cell("apps/controllerrevisions", "Controller", rev), "daemonset.apps/agent");
  EXPECT_EQ(cell("apps/controllerrevisions", "Revision", rev), 2);
  EXPECT_EQ(cell("apps/controllerrevisions", "Controller", json::object()), "<none>");

  json tmpl = {{"template",
                {{"metadata", {{"labels", {{"app", "x"}}}}},
                 {"spec", {{"containers", {{{"name", "c"}, {"image", "busybox"}}}}}}}}};
  EXPECT_EQ(cell("/podtemplates", "Containers", tmpl), "c");
  EXPECT_EQ(cell("/podtemplates", "Pod Labels", tmpl), "app=x");
}

TEST_F(TablesTest, Events) {
  EXPECT_EQ(header("/events", 0),
            (std::vector<std::string>{"Last Seen", "Type", "Reason", "Object", "Message"}));
  json ev = {{"metadata", {{"name", "p.17"}}},
             {"involvedObject", {{"kind", "Pod"}, {"name", "web-1"}, {"fieldPath", "spec.x"}}},
             {"type", "Normal"},
             {"reason", "Pulled"},
             {"message", "  Pulled image\n"},
             {"count", 4},
             {"firstTimestamp", "2024-05-01T11:00:00Z"},
             {"lastTimestamp", "2024-05-01T11:58:30Z"},
             {"source", {{"component", "kubelet"}, {"host", "node-1"}}}};
  EXPECT_EQ(cell("/events", "Last Seen", ev), "90s");
  EXPECT_EQ(cell("/events", "First Seen", ev), "60m");
  EXPECT_EQ(cell("/events", "Object", ev), "pod/web-1");
  EXPECT_EQ(cell("/events", "Message", ev), "Pulled image");
  EXPECT_EQ(cell("/events", "Source", ev), "kubelet, node-1");
  EXPECT_EQ(cell("/events", "Count", ev), 4);
  EXPECT_EQ(cell("/events", "Name", ev), "p.17");

  json fresh = {{"eventTime", "2024-05-01T11:59:50.123456Z"},
                {"reportingComponent", "scheduler"},
                {"involvedObject", {{"kind", "Node"}}}};
  EXPECT_EQ(cell("/events", "Last Seen", fresh), "9s");
  EXPECT_EQ(cell("/events", "Count", fresh), 1);
  EXPECT_EQ(cell("/events", "Object", fresh), "node");
  EXPECT_EQ(cell("/events", "Source", fresh), "scheduler");

  json v1 = {{"regarding", {{"kind", "Pod"}, {"name", "a"}}},
             {"note", "hello"},
             {"eventTime", "2024-05-01T11:30:00.000000Z"},
             {"series", {{"count", 7}, {"lastObservedTime", "2024-05-01T11:59:00.000000Z"}}}};
  EXPECT_EQ(cell("events.k8s.io/events", "Last Seen", v1), "60s");
  EXPECT_EQ(cell("events.k8s.io/events", "First Seen", v1), "30m");
  EXPECT_EQ(cell("events.k8s.io/events", "Count", v1), 7);
  EXPECT_EQ(cell("events.k8s.io/events", "Object", v1), "pod/a");
  EXPECT_EQ(cell("events.k8s.io/events", "Message", v1), "hello");
}

TEST_F(TablesTest, Volumes) {
  json pv = {{"spec",
              {{"capacity", {{"storage", "5Gi"}}},
               {"accessModes", {"ReadWriteMany", "ReadWriteOnce"}},
               {"persistentVolumeReclaimPolicy", "Retain"},
               {"claimRef", {{"namespace", "default"}, {"name", "data"}}},
               {"storageClassName", "local"}}},
             {"status", {{"phase", "Bound"}}}};
  EXPECT_EQ(cell("/persistentvolumes", "Capacity", pv), "5Gi");
  EXPECT_EQ(cell("/persistentvolumes", "Access Modes", pv), "RWO,RWX");
  EXPECT_EQ(cell("/persistentvolumes", "Status", pv), "Bound");
  EXPECT_EQ(cell("/persistentvolumes", "Claim", pv), "default/data");
  EXPECT_EQ(cell("/persistentvolumes", "StorageClass", pv), "local");
  EXPECT_EQ(cell("/persistentvolumes", "VolumeAttributesClass", pv), "<unset>");
  EXPECT_EQ(cell("/persistentvolumes", "VolumeMode", pv), "<unset>");

  json pvc = {{"metadata", {{"deletionTimestamp", "2024-05-01T11:00:00Z"}}},
              {"spec", {{"volumeName", "pv-1"}, {"volumeMode", "Filesystem"}}},
              {"status",
               {{"phase", "Bound"},
                {"capacity", {{"storage", "1Gi"}}},
                {"accessModes", {"ReadWriteOnce"}}}}};
  EXPECT_EQ(cell("/persistentvolumeclaims", "Status", pvc), "Terminating");
  EXPECT_EQ(cell("/persistentvolumeclaims", "Volume", pvc), "pv-1");
  EXPECT_EQ(cell("/persistentvolumeclaims", "Capacity", pvc), "1Gi");
  EXPECT_EQ(cell("/persistentvolumeclaims", "Access Modes", pvc), "RWO");
  EXPECT_EQ(cell("/persistentvolumeclaims", "VolumeMode", pvc), "Filesystem");
}

// ---------------------------------------------------------------------------------------------
// Through the registry: the Table a `kubectl get pods` request receives.

class CapturingResponder : public Responder {
 public:
  void respond(Response response) override { response_ = std::move(response); }
  std::shared_ptr<ResponseStream> stream(int, std::string, std::vector<HttpHeader>) override {
    return nullptr;
  }
  Response response_;
};

Response serve(Registry& registry, const std::string& method, const std::string& path,
               const std::string& accept, const std::string& body = "") {
  Request req;
  req.method = method;
  req.path = path;
  req.headers.push_back({"Accept", accept});
  req.headers.push_back({"Content-Type", "application/json"});
  req.body = body;
  req.authenticated = true;
  RequestInfo info = parse_request_info(req);
  CapturingResponder responder;
  registry.handle(info, req, responder);
  return responder.response_;
}

TEST(TablesRegistryTest, ListAndGetServeTheColumns) {
  auto store = storage::new_memory_store({});
  const api::Schema& schema = api::Schema::builtin();
  Registry registry(*store, schema);
  ASSERT_TRUE(install_strategies(registry, StrategyConfig{}).is_ok());
  install_tables(registry);

  const api::ResourceInfo* namespaces = schema.resource("", "v1", "namespaces");
  ASSERT_NE(namespaces, nullptr);
  ASSERT_TRUE(registry.ensure(*namespaces, json{{"metadata", {{"name", "default"}}}}).is_ok());

  json p = {{"apiVersion", "v1"},
            {"kind", "Pod"},
            {"metadata", {{"name", "web"}}},
            {"spec", {{"containers", {{{"name", "main"}, {"image", "busybox"}}}}}}};
  Response created =
      serve(registry, "POST", "/api/v1/namespaces/default/pods", "application/json", p.dump());
  ASSERT_EQ(created.status, 201) << created.body;

  const std::string table_accept =
      "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta."
      "k8s.io,application/json";
  Response list = serve(registry, "GET", "/api/v1/namespaces/default/pods", table_accept);
  ASSERT_EQ(list.status, 200) << list.body;
  json table = json::parse(list.body);
  EXPECT_EQ(table["kind"], "Table");
  ASSERT_EQ(table["columnDefinitions"].size(), 9u);
  EXPECT_EQ(table["columnDefinitions"][0]["name"], "Name");
  EXPECT_EQ(table["columnDefinitions"][0]["format"], "name");
  EXPECT_EQ(table["columnDefinitions"][5]["name"], "IP");
  EXPECT_EQ(table["columnDefinitions"][5]["priority"], 1);
  ASSERT_EQ(table["rows"].size(), 1u);
  const json& cells = table["rows"][0]["cells"];
  ASSERT_EQ(cells.size(), 9u);
  EXPECT_EQ(cells[0], "web");
  EXPECT_EQ(cells[1], "0/1");
  EXPECT_EQ(cells[2], "Pending");
  EXPECT_EQ(cells[3], "0");
  EXPECT_TRUE(cells[4] == "0s" || cells[4] == "1s") << cells[4];
  EXPECT_EQ(cells[6], "<none>");

  Response one = serve(registry, "GET", "/api/v1/namespaces/default/pods/web", table_accept);
  ASSERT_EQ(one.status, 200) << one.body;
  json single = json::parse(one.body);
  ASSERT_EQ(single["rows"].size(), 1u);
  EXPECT_EQ(single["rows"][0]["cells"][0], "web");
  registry.shutdown();
}

}  // namespace
}  // namespace skiff::apiserver
