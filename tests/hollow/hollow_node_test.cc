#include "hollow/hollow_node.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <mutex>
#include <thread>

#include "client/fake_api_client.h"

namespace skiff::hollow {
namespace {

using namespace std::chrono_literals;
using client::FakeApiClient;
using client::resources::kEvents;
using client::resources::kLeases;
using client::resources::kNodes;
using client::resources::kPods;

// Forwards to a FakeApiClient and records what the fake does not: delete options and when
// leases were written.
class SpyClient : public client::ApiClient {
 public:
  explicit SpyClient(FakeApiClient& fake) : fake_(fake) {}

  struct Delete {
    std::string ns, name;
    client::DeleteOptions options;
  };

  Result<Json> get(const client::Resource& r, std::string_view ns, std::string_view name,
                   std::string_view sub) override {
    return fake_.get(r, ns, name, sub);
  }
  Result<Json> list(const client::Resource& r, std::string_view ns,
                    const client::ListOptions& o) override {
    return fake_.list(r, ns, o);
  }
  Result<Json> create(const client::Resource& r, std::string_view ns, const Json& obj,
                      const client::WriteOptions& o, std::string_view name,
                      std::string_view sub) override {
    return fake_.create(r, ns, obj, o, name, sub);
  }
  Result<Json> update(const client::Resource& r, std::string_view ns, const Json& obj,
                      const client::WriteOptions& o, std::string_view sub) override {
    if (r.resource == "leases") {
      std::lock_guard lock(mu_);
      lease_writes_.emplace_back(client::name_of(obj), std::chrono::steady_clock::now());
    }
    return fake_.update(r, ns, obj, o, sub);
  }
  Result<Json> patch(const client::Resource& r, std::string_view ns, std::string_view name,
                     client::PatchType t, std::string_view body, const client::WriteOptions& o,
                     std::string_view sub) override {
    return fake_.patch(r, ns, name, t, body, o, sub);
  }
  Result<Json> remove(const client::Resource& r, std::string_view ns, std::string_view name,
                      const client::DeleteOptions& o) override {
    if (r.resource == "pods") {
      std::lock_guard lock(mu_);
      deletes_.push_back({std::string(ns), std::string(name), o});
    }
    return fake_.remove(r, ns, name, o);
  }
  Result<std::unique_ptr<client::WatchStream>> watch(const client::Resource& r, std::string_view ns,
                                                     const client::ListOptions& o) override {
    return fake_.watch(r, ns, o);
  }

  std::vector<Delete> deletes() {
    std::lock_guard lock(mu_);
    return deletes_;
  }
  std::vector<std::pair<std::string, std::chrono::steady_clock::time_point>> lease_writes() {
    std::lock_guard lock(mu_);
    return lease_writes_;
  }

 private:
  FakeApiClient& fake_;
  std::mutex mu_;
  std::vector<Delete> deletes_;
  std::vector<std::pair<std::string, std::chrono::steady_clock::time_point>> lease_writes_;
};

template <typename Pred>
bool eventually(Pred pred, std::chrono::milliseconds timeout = 10s) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(5ms);
  }
  return pred();
}

HollowNodeOptions fast_options(int count) {
  HollowNodeOptions o;
  o.count = count;
  o.lease_renew_interval = 50ms;
  o.status_report_interval = 100ms;
  o.restart_backoff = {20ms, 100ms};
  return o;
}

Json make_pod(const std::string& name, const std::string& node, Json command = nullptr,
              const std::string& restart_policy = "Always") {
  Json c = {{"name", "main"}, {"image", "busybox:1.36"}};
  if (!command.is_null()) c["command"] = command;
  Json p = {{"metadata", {{"name", name}, {"namespace", "default"}}},
            {"spec", {{"containers", Json::array({c})}, {"restartPolicy", restart_policy}}},
            {"status", {{"phase", "Pending"}}}};
  if (!node.empty()) {
    p["spec"]["nodeName"] = node;
    p["status"]["conditions"] = {{{"type", "PodScheduled"}, {"status", "True"}}};
  }
  return p;
}

Json get_pod(FakeApiClient& api, const std::string& name) {
  auto r = api.get(kPods, "default", name);
  return r.is_ok() ? r.value() : Json();
}

std::string phase_of(FakeApiClient& api, const std::string& name) {
  Json p = get_pod(api, name);
  if (!p.is_object() || !p.contains("status")) return "";
  return p["status"].value("phase", "");
}

const Json* condition(const Json& obj, const std::string& type) {
  for (const Json& c : obj["status"]["conditions"]) {
    if (c["type"] == type) return &c;
  }
  return nullptr;
}

struct Fixture {
  explicit Fixture(HollowNodeOptions o) : spy(api) {
    auto created = HollowNodes::create(spy, std::move(o));
    EXPECT_TRUE(created.is_ok()) << created.status().to_string();
    nodes = std::move(created).value();
  }
  void start() {
    nodes->start();
    ASSERT_TRUE(nodes->wait_registered(20s));
  }
  FakeApiClient api;
  SpyClient spy;
  std::unique_ptr<HollowNodes> nodes;
};

TEST(HollowNode, RegistersReadyNodesWithCapacityLabelsAndPodCidrs) {
  Fixture f(fast_options(3));
  f.start();
  EXPECT_EQ(f.nodes->node_names(),
            (std::vector<std::string>{"hollow-node-0", "hollow-node-1", "hollow-node-2"}));
  for (int i = 0; i < 3; ++i) {
    std::string name = "hollow-node-" + std::to_string(i);
    Json node = f.api.get(kNodes, "", name).value();
    const Json& labels = node["metadata"]["labels"];
    EXPECT_EQ(labels["kubernetes.io/hostname"], name);
    EXPECT_EQ(labels["kubernetes.io/os"], "linux");
    EXPECT_EQ(labels["kubernetes.io/arch"], "amd64");
    EXPECT_EQ(labels["node.kubernetes.io/instance-type"], "hollow");
    std::string cidr = "10.128." + std::to_string(i) + ".0/24";
    EXPECT_EQ(node["spec"]["podCIDR"], cidr);
    EXPECT_EQ(node["spec"]["podCIDRs"], Json::array({cidr}));
    for (const char* list : {"capacity", "allocatable"}) {
      const Json& res = node["status"][list];
      EXPECT_EQ(res["cpu"], "4") << list;
      EXPECT_EQ(res["memory"], "16Gi") << list;
      EXPECT_EQ(res["pods"], "110") << list;
      EXPECT_EQ(res["ephemeral-storage"], "100Gi") << list;
    }
    EXPECT_EQ(
        node["status"]["addresses"],
        (Json::array({{{"type", "InternalIP"}, {"address", "10.200.0." + std::to_string(i + 1)}},
                      {{"type", "Hostname"}, {"address", name}}})));
    const Json* ready = condition(node, "Ready");
    ASSERT_NE(ready, nullptr);
    EXPECT_EQ((*ready)["status"], "True");
    EXPECT_EQ((*ready)["reason"], "KubeletReady");
    EXPECT_EQ((*ready)["message"], "kubelet is posting ready status");
    EXPECT_FALSE((*ready)["lastHeartbeatTime"].get<std::string>().empty());
    for (auto [type, reason] : {std::pair{"MemoryPressure", "KubeletHasSufficientMemory"},
                                std::pair{"DiskPressure", "KubeletHasNoDiskPressure"},
                                std::pair{"PIDPressure", "KubeletHasSufficientPID"}}) {
      const Json* c = condition(node, type);
      ASSERT_NE(c, nullptr) << type;
      EXPECT_EQ((*c)["status"], "False");
      EXPECT_EQ((*c)["reason"], reason);
    }
    const Json& info = node["status"]["nodeInfo"];
    EXPECT_EQ(info["kubeletVersion"].get<std::string>().rfind("v1.32.", 0), 0u);
    EXPECT_EQ(info["containerRuntimeVersion"], "hollow://1.0");
    EXPECT_EQ(info["operatingSystem"], "linux");
    EXPECT_EQ(info["architecture"], "amd64");
    EXPECT_FALSE(info["osImage"].get<std::string>().empty());
    EXPECT_FALSE(info["kernelVersion"].get<std::string>().empty());

    Json lease = f.api.get(kLeases, "kube-node-lease", name).value();
    EXPECT_EQ(lease["spec"]["holderIdentity"], name);
    EXPECT_EQ(lease["spec"]["leaseDurationSeconds"], 40);
    EXPECT_FALSE(lease["spec"]["renewTime"].get<std::string>().empty());
    ASSERT_EQ(lease["metadata"]["ownerReferences"].size(), 1u);
    const Json& owner = lease["metadata"]["ownerReferences"][0];
    EXPECT_EQ(owner["kind"], "Node");
    EXPECT_EQ(owner["apiVersion"], "v1");
    EXPECT_EQ(owner["name"], name);
    EXPECT_EQ(owner["uid"], node["metadata"]["uid"]);
  }
}

TEST(HollowNode, FlagsShapeTheNodes) {
  HollowNodeOptions o = fast_options(2);
  o.name_prefix = "sim-";
  o.first_index = 10;
  o.cpu = "8";
  o.memory = "32Gi";
  o.pods = "250";
  o.labels = {{"pool", "a"}};
  o.pod_cidr = "172.16.0.0/12";
  o.node_cidr_mask_size = 26;
  o.node_ip_range = "192.168.100.0/24";
  Fixture f(o);
  f.start();
  Json node = f.api.get(kNodes, "", "sim-11").value();
  EXPECT_EQ(node["status"]["capacity"]["cpu"], "8");
  EXPECT_EQ(node["status"]["capacity"]["memory"], "32Gi");
  EXPECT_EQ(node["status"]["allocatable"]["pods"], "250");
  EXPECT_EQ(node["metadata"]["labels"]["pool"], "a");
  EXPECT_EQ(node["spec"]["podCIDR"], "172.16.2.192/26");
  EXPECT_EQ(node["status"]["addresses"][0]["address"], "192.168.100.12");
  EXPECT_FALSE(f.api.get(kNodes, "", "sim-0").is_ok());
}

TEST(HollowNode, RenewsLeasesAndReportsStatus) {
  Fixture f(fast_options(2));
  f.start();
  Json first = f.api.get(kLeases, "kube-node-lease", "hollow-node-1").value();
  f.api.clear_actions();
  std::this_thread::sleep_for(600ms);
  for (const char* name : {"hollow-node-0", "hollow-node-1"}) {
    int lease_writes = 0, status_patches = 0;
    for (const auto& a : f.api.actions()) {
      if (a.name != name) continue;
      if (a.resource == "leases.coordination.k8s.io" && a.verb == "update") ++lease_writes;
      if (a.resource == "nodes" && a.verb == "patch" && a.subresource == "status") {
        ++status_patches;
        EXPECT_TRUE(a.object["status"].contains("conditions"));
      }
    }
    // Every 50 ms and every 100 ms over 600 ms, allowing for a slow machine.
    EXPECT_GE(lease_writes, 4) << name;
    EXPECT_LE(lease_writes, 14) << name;
    EXPECT_GE(status_patches, 2) << name;
  }
  Json later = f.api.get(kLeases, "kube-node-lease", "hollow-node-1").value();
  EXPECT_GT(later["spec"]["renewTime"].get<std::string>(),
            first["spec"]["renewTime"].get<std::string>());
  EXPECT_EQ(later["metadata"]["uid"], first["metadata"]["uid"]);
}

TEST(HollowNode, SpreadsRenewalsOverThePeriod) {
  HollowNodeOptions o = fast_options(4);
  o.lease_renew_interval = 400ms;
  o.status_report_interval = 10s;
  Fixture f(o);
  f.start();
  auto registered_at = std::chrono::steady_clock::now();
  std::this_thread::sleep_for(1200ms);
  // Each node's first renewal after registration: nodes 0-3 have slots 100 ms apart, so they
  // spread over most of a period instead of coming together.
  std::map<std::string, std::chrono::steady_clock::time_point> first;
  for (const auto& [name, at] : f.spy.lease_writes()) {
    if (at > registered_at && !first.count(name)) first[name] = at;
  }
  ASSERT_EQ(first.size(), 4u);
  auto [lo, hi] = std::minmax_element(first.begin(), first.end(),
                                      [](auto& a, auto& b) { return a.second < b.second; });
  EXPECT_GE(hi->second - lo->second, 150ms);
}

TEST(HollowNode, UpdatesAnExistingNodeAndKeepsItsPodCidr) {
  Fixture f(fast_options(1));
  f.api.seed(kNodes, {{"metadata", {{"name", "hollow-node-0"}, {"labels", {{"keep", "me"}}}}},
                      {"spec", {{"podCIDR", "10.99.5.0/24"}}},
                      {"status",
                       {{"conditions",
                         {{{"type", "Ready"},
                           {"status", "True"},
                           {"lastTransitionTime", "2020-01-01T00:00:00Z"}}}}}}});
  f.start();
  Json node = f.api.get(kNodes, "", "hollow-node-0").value();
  EXPECT_EQ(node["spec"]["podCIDR"], "10.99.5.0/24");
  EXPECT_EQ(node["metadata"]["labels"]["keep"], "me");
  EXPECT_EQ(node["metadata"]["labels"]["kubernetes.io/hostname"], "hollow-node-0");
  EXPECT_EQ((*condition(node, "Ready"))["lastTransitionTime"], "2020-01-01T00:00:00Z");
  EXPECT_EQ(node["status"]["capacity"]["cpu"], "4");
  f.api.seed(kPods, make_pod("p", "hollow-node-0"));
  ASSERT_TRUE(eventually([&] { return phase_of(f.api, "p") == "Running"; }));
  EXPECT_EQ(get_pod(f.api, "p")["status"]["podIP"], "10.99.5.2");
}

TEST(HollowNode, BoundPodRunsWithAnAddressFromItsNodeAndIsReady) {
  Fixture f(fast_options(2));
  f.start();
  Json p = make_pod("web", "hollow-node-1", {"sleep", "3600"});
  p["spec"]["initContainers"] = {{{"name", "init"}, {"image", "busybox:1.36"}}};
  f.api.seed(kPods, p);
  ASSERT_TRUE(eventually([&] { return phase_of(f.api, "web") == "Running"; }));
  Json pod = get_pod(f.api, "web");
  const Json& s = pod["status"];
  std::string ip = s["podIP"];
  auto cidr = Ipv4Cidr::parse("10.128.1.0/24").value();
  ASSERT_TRUE(parse_ipv4(ip).has_value()) << ip;
  EXPECT_TRUE(cidr.contains(*parse_ipv4(ip))) << ip;
  EXPECT_GE(*parse_ipv4(ip) - cidr.base, 2u) << ip;
  EXPECT_EQ(s["podIPs"], Json::array({{{"ip", ip}}}));
  EXPECT_EQ(s["hostIP"], "10.200.0.2");
  EXPECT_FALSE(s["startTime"].get<std::string>().empty());
  for (const char* type :
       {"PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled"}) {
    const Json* c = condition(pod, type);
    ASSERT_NE(c, nullptr) << type;
    EXPECT_EQ((*c)["status"], "True") << type;
  }
  const Json& cs = s["containerStatuses"][0];
  EXPECT_EQ(cs["name"], "main");
  EXPECT_EQ(cs["image"], "busybox:1.36");
  EXPECT_EQ(cs["imageID"].get<std::string>().rfind("hollow://sha256:", 0), 0u);
  EXPECT_EQ(cs["imageID"].get<std::string>().size(), std::string("hollow://sha256:").size() + 64);
  EXPECT_EQ(cs["containerID"].get<std::string>().rfind("hollow://", 0), 0u);
  EXPECT_EQ(cs["ready"], true);
  EXPECT_EQ(cs["started"], true);
  EXPECT_EQ(cs["restartCount"], 0);
  EXPECT_TRUE(cs["state"]["running"].contains("startedAt"));
  EXPECT_EQ(s["initContainerStatuses"][0]["state"]["terminated"]["reason"], "Completed");
  EXPECT_EQ(s["initContainerStatuses"][0]["state"]["terminated"]["exitCode"], 0);

  // A second pod on the node gets the next address.
  f.api.seed(kPods, make_pod("web2", "hollow-node-1"));
  ASSERT_TRUE(eventually([&] { return phase_of(f.api, "web2") == "Running"; }));
  EXPECT_NE(get_pod(f.api, "web2")["status"]["podIP"], ip);
}

TEST(HollowNode, HostNetworkPodsUseTheNodeAddress) {
  Fixture f(fast_options(1));
  f.start();
  Json p = make_pod("hn", "hollow-node-0");
  p["spec"]["hostNetwork"] = true;
  f.api.seed(kPods, p);
  ASSERT_TRUE(eventually([&] { return phase_of(f.api, "hn") == "Running"; }));
  EXPECT_EQ(get_pod(f.api, "hn")["status"]["podIP"], "10.200.0.1");
}

TEST(HollowNode, ExitCodeWithRestartNeverFails) {
  Fixture f(fast_options(1));
  f.start();
  f.api.seed(kPods, make_pod("job", "hollow-node-0", {"sh", "-c", "exit 3"}, "Never"));
  ASSERT_TRUE(eventually([&] { return phase_of(f.api, "job") == "Failed"; }));
  Json pod = get_pod(f.api, "job");
  const Json& term = pod["status"]["containerStatuses"][0]["state"]["terminated"];
  EXPECT_EQ(term["exitCode"], 3);
  EXPECT_EQ(term["reason"], "Error");
  EXPECT_EQ((*condition(pod, "Ready"))["status"], "False");
  EXPECT_EQ((*condition(pod, "Ready"))["reason"], "PodCompleted");
  EXPECT_FALSE(pod["status"]["podIP"].get<std::string>().empty());
}

TEST(HollowNode, ExitAfterAnnotationSucceeds) {
  Fixture f(fast_options(1));
  f.start();
  Json p = make_pod("ann", "hollow-node-0", nullptr, "Never");
  p["metadata"]["annotations"] = {{"skiff.dev/hollow-exit-after", "300ms"},
                                  {"skiff.dev/hollow-exit-code", "0"}};
  f.api.seed(kPods, p);
  ASSERT_TRUE(eventually([&] { return phase_of(f.api, "ann") == "Running"; }));
  auto running_at = std::chrono::steady_clock::now();
  ASSERT_TRUE(eventually([&] { return phase_of(f.api, "ann") == "Succeeded"; }));
  EXPECT_GE(std::chrono::steady_clock::now() - running_at, 100ms);
  Json pod = get_pod(f.api, "ann");
  const Json& term = pod["status"]["containerStatuses"][0]["state"]["terminated"];
  EXPECT_EQ(term["exitCode"], 0);
  EXPECT_EQ(term["reason"], "Completed");
}

TEST(HollowNode, OnFailureRestartsBumpRestartCount) {
  Fixture f(fast_options(1));
  f.start();
  f.api.seed(kPods,
             make_pod("crash", "hollow-node-0", {"sh", "-c", "sleep 0.05; exit 1"}, "OnFailure"));
  ASSERT_TRUE(eventually([&] {
    Json p = get_pod(f.api, "crash");
    return p["status"].contains("containerStatuses") &&
           p["status"]["containerStatuses"][0]["restartCount"].get<int>() >= 2;
  }));
  Json pod = get_pod(f.api, "crash");
  EXPECT_EQ(pod["status"]["phase"], "Running");
  EXPECT_EQ(pod["status"]["containerStatuses"][0]["lastState"]["terminated"]["exitCode"], 1);
}

TEST(HollowNode, AlwaysRestartsEvenOnExitZero) {
  Fixture f(fast_options(1));
  f.start();
  f.api.seed(kPods, make_pod("loop", "hollow-node-0", {"sleep", "0.05"}, "Always"));
  ASSERT_TRUE(eventually([&] {
    Json p = get_pod(f.api, "loop");
    return p["status"].contains("containerStatuses") &&
           p["status"]["containerStatuses"][0]["restartCount"].get<int>() >= 2;
  }));
  EXPECT_EQ(phase_of(f.api, "loop"), "Running");
}

TEST(HollowNode, ReadinessProbeDelaysReady) {
  Fixture f(fast_options(1));
  f.start();
  Json p = make_pod("slow", "hollow-node-0");
  p["spec"]["containers"][0]["readinessProbe"] = {{"initialDelaySeconds", 1}};
  f.api.seed(kPods, p);
  ASSERT_TRUE(eventually([&] { return phase_of(f.api, "slow") == "Running"; }));
  Json pod = get_pod(f.api, "slow");
  EXPECT_EQ((*condition(pod, "Ready"))["status"], "False");
  EXPECT_EQ((*condition(pod, "Ready"))["reason"], "ContainersNotReady");
  ASSERT_TRUE(eventually([&] {
    Json p = get_pod(f.api, "slow");
    return (*condition(p, "Ready"))["status"] == "True";
  }));
}

TEST(HollowNode, DeletingPodIsStoppedDeletedWithGraceZeroAndItsAddressReused) {
  Fixture f(fast_options(1));
  f.start();
  f.api.seed(kPods, make_pod("a", "hollow-node-0"));
  ASSERT_TRUE(eventually([&] { return phase_of(f.api, "a") == "Running"; }));
  Json pod = get_pod(f.api, "a");
  std::string ip = pod["status"]["podIP"];
  std::string uid = pod["metadata"]["uid"];
  // What the API server does for a graceful delete: mark the pod.
  pod["metadata"]["deletionTimestamp"] = "2030-01-01T00:00:00Z";
  pod["metadata"]["deletionGracePeriodSeconds"] = 30;
  f.api.seed(kPods, pod);
  ASSERT_TRUE(eventually([&] { return !f.api.get(kPods, "default", "a").is_ok(); }));
  auto deletes = f.spy.deletes();
  ASSERT_EQ(deletes.size(), 1u);
  EXPECT_EQ(deletes[0].name, "a");
  EXPECT_EQ(deletes[0].options.grace_period_seconds, 0);
  EXPECT_EQ(deletes[0].options.precondition_uid, uid);
  // The containers were reported stopped before the delete.
  bool stopped = false;
  for (const auto& a : f.api.actions("patch", "pods")) {
    if (a.name == "a" && a.subresource == "status" &&
        a.object["status"]["containerStatuses"][0]["state"].contains("terminated")) {
      stopped = true;
    }
  }
  EXPECT_TRUE(stopped);
  // And told as the kubelet tells it: Killing, from the node.
  ASSERT_TRUE(eventually([&] {
    auto events = f.api.list(kEvents, "default");
    if (!events.is_ok()) return false;
    const Json items = (*events)["items"];
    for (const Json& e : items) {
      if (e.value("reason", "") == "Killing" && e["involvedObject"].value("name", "") == "a" &&
          e.value("message", "") == "Stopping container main" &&
          e["source"].value("component", "") == "kubelet" &&
          e["source"].value("host", "") == "hollow-node-0") {
        return true;
      }
    }
    return false;
  }));
  f.api.seed(kPods, make_pod("b", "hollow-node-0"));
  ASSERT_TRUE(eventually([&] { return phase_of(f.api, "b") == "Running"; }));
  EXPECT_EQ(get_pod(f.api, "b")["status"]["podIP"], ip);
  EXPECT_TRUE(eventually([&] { return f.nodes->pods_tracked() == 1; }));
}

TEST(HollowNode, EndedPodsFreeTheirAddress) {
  Fixture f(fast_options(1));
  f.start();
  f.api.seed(kPods, make_pod("done", "hollow-node-0", {"true"}, "Never"));
  ASSERT_TRUE(eventually([&] { return phase_of(f.api, "done") == "Succeeded"; }));
  std::string ip = get_pod(f.api, "done")["status"]["podIP"];
  f.api.seed(kPods, make_pod("next", "hollow-node-0"));
  ASSERT_TRUE(eventually([&] { return phase_of(f.api, "next") == "Running"; }));
  EXPECT_EQ(get_pod(f.api, "next")["status"]["podIP"], ip);
  EXPECT_EQ(get_pod(f.api, "done")["status"]["podIP"], ip);  // still reported
}

TEST(HollowNode, IgnoresPodsOfOtherNodes) {
  Fixture f(fast_options(1));
  f.start();
  f.api.seed(kPods, make_pod("elsewhere", "real-node-1"));
  f.api.seed(kPods, make_pod("unbound", ""));
  f.api.seed(kPods, make_pod("mine", "hollow-node-0"));
  ASSERT_TRUE(eventually([&] { return phase_of(f.api, "mine") == "Running"; }));
  std::this_thread::sleep_for(100ms);
  for (const auto& a : f.api.actions()) {
    EXPECT_NE(a.name, "elsewhere") << a.verb;
    EXPECT_NE(a.name, "unbound") << a.verb;
  }
  EXPECT_EQ(phase_of(f.api, "elsewhere"), "Pending");
  EXPECT_EQ(f.nodes->pods_tracked(), 1u);
}

TEST(HollowNode, RetriesStatusWritesThatConflict) {
  Fixture f(fast_options(1));
  f.api.fail("patch", "pods", error(StatusCode::kAborted, "the object has been modified"), 3);
  f.start();
  f.api.seed(kPods, make_pod("c", "hollow-node-0"));
  EXPECT_TRUE(eventually([&] { return phase_of(f.api, "c") == "Running"; }));
}

TEST(HollowNode, ARestartedProcessKeepsRunningPodsAndTheirAddresses) {
  FakeApiClient api;
  std::string ip, started_at;
  {
    auto nodes = HollowNodes::create(api, fast_options(1)).value();
    nodes->start();
    ASSERT_TRUE(nodes->wait_registered(10s));
    api.seed(kPods, make_pod("old", "hollow-node-0"));
    ASSERT_TRUE(eventually([&] { return phase_of(api, "old") == "Running"; }));
    Json pod = get_pod(api, "old");
    ip = pod["status"]["podIP"];
    started_at = pod["status"]["containerStatuses"][0]["state"]["running"]["startedAt"];
    nodes->stop();
  }
  // The nodes stay behind a stopped process.
  EXPECT_TRUE(api.get(kNodes, "", "hollow-node-0").is_ok());
  auto nodes = HollowNodes::create(api, fast_options(1)).value();
  nodes->start();
  ASSERT_TRUE(nodes->wait_registered(10s));
  api.seed(kPods, make_pod("new", "hollow-node-0"));
  ASSERT_TRUE(eventually([&] { return phase_of(api, "new") == "Running"; }));
  EXPECT_NE(get_pod(api, "new")["status"]["podIP"], ip);
  Json old = get_pod(api, "old");
  EXPECT_EQ(old["status"]["podIP"], ip);
  EXPECT_EQ(old["status"]["containerStatuses"][0]["state"]["running"]["startedAt"], started_at);
  EXPECT_EQ(old["status"]["containerStatuses"][0]["restartCount"], 0);
}

TEST(HollowNode, DeletesNodesOnExitOnlyWhenAsked) {
  HollowNodeOptions o = fast_options(2);
  o.delete_nodes_on_exit = true;
  Fixture f(o);
  f.start();
  EXPECT_EQ(f.api.count(kNodes), 2u);
  f.nodes->stop();
  EXPECT_EQ(f.api.count(kNodes), 0u);
  EXPECT_EQ(f.api.count(kLeases), 0u);
}

TEST(HollowNode, StopEndsRenewals) {
  Fixture f(fast_options(2));
  f.start();
  f.nodes->stop();
  f.api.clear_actions();
  std::this_thread::sleep_for(200ms);
  EXPECT_TRUE(f.api.actions().empty());
  EXPECT_EQ(f.api.count(kNodes), 2u);
}

TEST(HollowNode, ManyNodesRegisterQuickly) {
  HollowNodeOptions o;
  o.count = 2000;
  Fixture f(o);
  auto start = std::chrono::steady_clock::now();
  f.nodes->start();
  ASSERT_TRUE(f.nodes->wait_registered(120s));
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("2000 hollow nodes registered with the fake API in %.2f s\n", secs);
  EXPECT_EQ(f.api.count(kNodes), 2000u);
  EXPECT_EQ(f.api.count(kLeases), 2000u);
  Json last = f.api.get(kNodes, "", "hollow-node-1999").value();
  EXPECT_EQ(last["spec"]["podCIDR"], "10.135.207.0/24");
  EXPECT_EQ(last["status"]["addresses"][0]["address"], "10.200.7.208");
}

TEST(HollowNodeOptions, Validation) {
  auto bad = [](auto edit) {
    HollowNodeOptions o;
    edit(o);
    return validate(o).code();
  };
  EXPECT_TRUE(validate(HollowNodeOptions{}).is_ok());
  EXPECT_EQ(bad([](auto& o) { o.count = 0; }), StatusCode::kInvalidArgument);
  EXPECT_EQ(bad([](auto& o) { o.cpu = "four"; }), StatusCode::kInvalidArgument);
  EXPECT_EQ(bad([](auto& o) { o.memory = "0"; }), StatusCode::kInvalidArgument);
  EXPECT_EQ(bad([](auto& o) { o.pod_cidr = "10.0.0.0"; }), StatusCode::kInvalidArgument);
  EXPECT_EQ(bad([](auto& o) {
              o.pod_cidr = "10.0.0.0/23";
              o.count = 3;
            }),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(bad([](auto& o) { o.node_cidr_mask_size = 31; }), StatusCode::kInvalidArgument);
  EXPECT_EQ(bad([](auto& o) { o.lease_duration = 500ms; }), StatusCode::kInvalidArgument);
  EXPECT_EQ(bad([](auto& o) { o.name_prefix = ""; }), StatusCode::kInvalidArgument);
  EXPECT_EQ(bad([](auto& o) {
              o.node_ip_range = "10.200.0.0/30";  // .1 and .2 only
              o.count = 3;
            }),
            StatusCode::kInvalidArgument);
  HollowNodeOptions fits;
  fits.pod_cidr = "10.0.0.0/23";
  fits.node_ip_range = "10.200.0.0/30";
  fits.count = 2;
  EXPECT_TRUE(validate(fits).is_ok());
  fits.count = 5000;
  fits.pod_cidr = "10.128.0.0/9";
  fits.node_ip_range = "10.200.0.0/16";
  EXPECT_TRUE(validate(fits).is_ok());
}

}  // namespace
}  // namespace skiff::hollow
