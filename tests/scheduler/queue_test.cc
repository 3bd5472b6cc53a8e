#include "scheduler/queue.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "scheduler/plugins/node_resources.h"
#include "scheduler/plugins/registry.h"
#include "scheduler/plugins/scheduling_gates.h"
#include "test_util.h"

namespace skiff::scheduler {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
using testing::NodeBuilder;
using testing::PodBuilder;

class FakeTime {
 public:
  std::chrono::steady_clock::time_point now = std::chrono::steady_clock::time_point{} + 1000h;
  std::function<std::chrono::steady_clock::time_point()> fn() {
    return [this] { return now; };
  }
};

std::map<std::string, std::vector<ClusterEventWithHint>> default_events() {
  auto fw = Framework::create(plugins::default_registry(), plugins::default_profile());
  SKIFF_CHECK(fw.is_ok(), fw.status().to_string());
  static std::vector<std::unique_ptr<Framework>> keep;  // hints refer to plugins
  auto events = fw.value()->events_to_register();
  keep.push_back(std::move(fw).value());
  return events;
}

class QueueTest : public ::testing::Test {
 protected:
  QueueOptions options() {
    QueueOptions o;
    o.now = time.fn();
    return o;
  }
  // Pops, then reports the pod unschedulable because of `plugin`.
  void fail(SchedulingQueue& q, const std::string& plugin) {
    auto p = q.try_pop();
    ASSERT_TRUE(p.has_value());
    if (!plugin.empty()) p->unschedulable_plugins = {plugin};
    ASSERT_TRUE(q.add_unschedulable_if_not_present(*p).is_ok());
  }
  std::string pop_name(SchedulingQueue& q) {
    auto p = q.try_pop();
    return p ? p->pod->name : "";
  }
  FakeTime time;
};

TEST_F(QueueTest, PriorityThenEnqueueOrder) {
  SchedulingQueue q(SchedulingQueue::PluginEvents{}, options());
  q.add(PodBuilder("low").priority(1).build());
  time.now += 1s;
  q.add(PodBuilder("high").priority(100).build());
  time.now += 1s;
  q.add(PodBuilder("low2").priority(1).build());
  q.add(PodBuilder("mid").priority(50).build());
  EXPECT_EQ(q.active_size(), 4u);
  EXPECT_EQ(pop_name(q), "high");
  EXPECT_EQ(pop_name(q), "mid");
  EXPECT_EQ(pop_name(q), "low");
  EXPECT_EQ(pop_name(q), "low2");
  EXPECT_EQ(pop_name(q), "");
  EXPECT_EQ(q.scheduling_cycle(), 4);
}

TEST_F(QueueTest, BackoffDoublesUpToTheMaximum) {
  SchedulingQueue q(SchedulingQueue::PluginEvents{}, options());
  EXPECT_EQ(q.backoff_duration(1), 1s);
  EXPECT_EQ(q.backoff_duration(2), 2s);
  EXPECT_EQ(q.backoff_duration(3), 4s);
  EXPECT_EQ(q.backoff_duration(4), 8s);
  EXPECT_EQ(q.backoff_duration(5), 10s);
  EXPECT_EQ(q.backoff_duration(50), 10s);
}

TEST_F(QueueTest, ErrorsGoToBackoffAndReturnWhenItExpires) {
  SchedulingQueue q(SchedulingQueue::PluginEvents{}, options());
  q.add(PodBuilder("p").build());
  fail(q, "");  // an error: no rejecting plugin
  EXPECT_EQ(q.backoff_size(), 1u);
  EXPECT_EQ(pop_name(q), "");
  time.now += 999ms;
  EXPECT_EQ(pop_name(q), "");
  time.now += 1ms;
  auto p = q.try_pop();
  ASSERT_TRUE(p.has_value());
  EXPECT_EQ(p->attempts, 2);
  ASSERT_TRUE(q.add_unschedulable_if_not_present(*p).is_ok());
  time.now += 1s;
  EXPECT_EQ(pop_name(q), "");  // second failure: 2 s
  time.now += 1s;
  EXPECT_EQ(pop_name(q), "p");
}

TEST_F(QueueTest, UnschedulablePodsWaitForARelevantEvent) {
  SchedulingQueue q(default_events(), options());
  q.add(PodBuilder("big").req("64", "").build());
  fail(q, "NodeResourcesFit");
  EXPECT_EQ(q.unschedulable_size(), 1u);
  time.now += 1h;  // long past any back-off, but parked pods wait for events (or 5 min flush)
  EXPECT_EQ(pop_name(q), "");

  // Irrelevant: a label change on a node.
  NodeRef before = NodeBuilder("n").build();
  NodeRef relabelled = NodeBuilder("n").label("x", "y").build();
  q.node_updated(*before, *relabelled);
  EXPECT_EQ(q.unschedulable_size(), 1u);
  // Relevant but not helpful (hint): a node too small to ever hold the pod.
  q.node_added(*NodeBuilder("small").capacity("4", "8Gi").build());
  EXPECT_EQ(q.unschedulable_size(), 1u);
  // Relevant: an assigned pod was deleted.
  PodRef gone = PodBuilder("gone").node("n").build();
  q.assigned_pod_deleted(*gone);
  EXPECT_EQ(q.unschedulable_size(), 0u);
  EXPECT_EQ(pop_name(q), "big");
}

TEST_F(QueueTest, NodeAddWithRoomMovesResourceRejectedPods) {
  SchedulingQueue q(default_events(), options());
  q.add(PodBuilder("big").req("64", "").build());
  fail(q, "NodeResourcesFit");
  q.node_added(*NodeBuilder("huge").capacity("128", "1Ti").build());
  // Still backing off (attempt 1: 1 s), so it lands in backoffQ first.
  EXPECT_EQ(q.backoff_size() + q.active_size(), 1u);
  time.now += 1s;
  EXPECT_EQ(pop_name(q), "big");
}

TEST_F(QueueTest, EventsDuringACycleSendTheFailureToBackoff) {
  SchedulingQueue q(default_events(), options());
  q.add(PodBuilder("p").build());
  auto p = q.try_pop();
  ASSERT_TRUE(p.has_value());
  // While p was being scheduled, a node was added.
  q.node_added(*NodeBuilder("new").build());
  p->unschedulable_plugins = {"NodeAffinity"};
  ASSERT_TRUE(q.add_unschedulable_if_not_present(*p).is_ok());
  EXPECT_EQ(q.unschedulable_size(), 0u);
  EXPECT_EQ(q.backoff_size(), 1u);
}

TEST_F(QueueTest, AffinityRejectionsWaitForAMatchingPod) {
  SchedulingQueue q(default_events(), options());
  q.add(PodBuilder("web").required_affinity("app", "db", "kubernetes.io/hostname").build());
  fail(q, "InterPodAffinity");
  time.now += 1min;
  q.assigned_pod_added(*PodBuilder("cache").label("app", "cache").node("n1").build());
  EXPECT_EQ(q.unschedulable_size(), 1u);
  q.assigned_pod_added(*PodBuilder("db").label("app", "db").node("n1").build());
  EXPECT_EQ(q.unschedulable_size(), 0u);
  EXPECT_EQ(pop_name(q), "web");
}

TEST_F(QueueTest, SpreadRejectionsWaitForARelevantPodChange) {
  SchedulingQueue q(default_events(), options());
  q.add(PodBuilder("p")
            .label("app", "web")
            .spread(1, "topology.kubernetes.io/zone", "DoNotSchedule", "app", "web")
            .build());
  fail(q, "PodTopologySpread");
  time.now += 1min;
  q.assigned_pod_deleted(*PodBuilder("other").label("app", "db").node("n1").build());
  EXPECT_EQ(q.unschedulable_size(), 1u);
  q.assigned_pod_deleted(*PodBuilder("peer").label("app", "web").node("n1").build());
  EXPECT_EQ(q.unschedulable_size(), 0u);

  // A node leaving can lower the global minimum too.
  auto p = q.try_pop();
  ASSERT_TRUE(p.has_value());
  p->unschedulable_plugins = {"PodTopologySpread"};
  ASSERT_TRUE(q.add_unschedulable_if_not_present(*p).is_ok());
  time.now += 1min;
  q.node_deleted(*NodeBuilder("gone").build());
  EXPECT_EQ(q.unschedulable_size(), 0u);
}

TEST_F(QueueTest, LeftoverFlushAfterFiveMinutes) {
  SchedulingQueue q(default_events(), options());
  q.add(PodBuilder("p").build());
  fail(q, "NodeAffinity");
  time.now += 4min;
  q.flush_unschedulable_left_over();
  EXPECT_EQ(q.unschedulable_size(), 1u);
  time.now += 61s;
  q.flush_unschedulable_left_over();
  EXPECT_EQ(q.unschedulable_size(), 0u);
  EXPECT_EQ(pop_name(q), "p");
}

TEST_F(QueueTest, UpdatesOfParkedPods) {
  SchedulingQueue q(default_events(), options());
  PodBuilder b("p");
  q.add(b.build());
  fail(q, "NodeAffinity");
  // Same object again (a status-only update): stays parked.
  json j = b.json_ref();
  j["status"]["conditions"] = json::array({{{"type", "PodScheduled"}, {"status", "False"}}});
  j["metadata"]["resourceVersion"] = "42";
  q.update(PodInfo::from_json(std::make_shared<const json>(j)));
  EXPECT_EQ(q.unschedulable_size(), 1u);
  // A spec change: tried again once its back-off is over.
  j["spec"]["nodeSelector"] = {{"disk", "ssd"}};
  q.update(PodInfo::from_json(std::make_shared<const json>(j)));
  EXPECT_EQ(q.unschedulable_size(), 0u);
  time.now += 1s;
  auto p = q.try_pop();
  ASSERT_TRUE(p.has_value());
  EXPECT_EQ(p->pod->node_selector.size(), 1u);
}

TEST_F(QueueTest, RemoveDropsThePodEverywhere) {
  SchedulingQueue q(default_events(), options());
  q.add(PodBuilder("a").build());
  q.add(PodBuilder("b").build());
  q.remove("uid-default-a");
  EXPECT_FALSE(q.contains("uid-default-a"));
  auto b = q.try_pop();
  ASSERT_TRUE(b.has_value());
  // Deleted while in flight: its failure is dropped.
  q.remove("uid-default-b");
  b->unschedulable_plugins = {"NodeAffinity"};
  ASSERT_TRUE(q.add_unschedulable_if_not_present(*b).is_ok());
  EXPECT_FALSE(q.contains("uid-default-b"));
  EXPECT_EQ(q.unschedulable_size() + q.backoff_size() + q.active_size(), 0u);
}

TEST_F(QueueTest, DuplicateFailuresAreRejected) {
  SchedulingQueue q(SchedulingQueue::PluginEvents{}, options());
  q.add(PodBuilder("a").build());
  auto a = q.try_pop();
  ASSERT_TRUE(q.add_unschedulable_if_not_present(*a).is_ok());
  EXPECT_EQ(q.add_unschedulable_if_not_present(*a).code(), StatusCode::kAlreadyExists);
}

TEST_F(QueueTest, GatedPodsWaitForTheirGatesToGo) {
  auto fw = Framework::create(plugins::default_registry(), plugins::default_profile());
  ASSERT_TRUE(fw.is_ok());
  SchedulingQueue q(*fw.value(), options());
  PodBuilder b("gated");
  b.spec("schedulingGates", json::array({{{"name", "example.com/wait"}, {"name", "b"}}}));
  q.add(b.build());
  EXPECT_EQ(q.unschedulable_size(), 1u);
  q.move_all_to_active_or_backoff(force_activate_event());
  q.node_added(*NodeBuilder("n").build());
  time.now += 10min;
  q.flush_unschedulable_left_over();
  EXPECT_EQ(pop_name(q), "");
  EXPECT_EQ(q.unschedulable_size(), 1u);
  // An update that keeps a gate keeps it parked; the one that removes the last lets it go,
  // without a back-off.
  b.spec("schedulingGates", json::array({{{"name", "b"}}}));
  q.update(b.build());
  EXPECT_EQ(pop_name(q), "");
  b.json_ref()["spec"].erase("schedulingGates");
  q.update(b.build());
  EXPECT_EQ(pop_name(q), "gated");
}

TEST(SchedulingGatesTest, NamesTheGatesItWaitsFor) {
  plugins::SchedulingGates gates;
  PodBuilder b("gated");
  EXPECT_TRUE(gates.pre_enqueue(*b.build()).is_success());
  b.spec("schedulingGates", json::array({{{"name", "example.com/a"}}, {{"name", "b"}}}));
  PluginStatus s = gates.pre_enqueue(*b.build());
  EXPECT_EQ(s.code(), Code::kUnschedulableAndUnresolvable);
  EXPECT_EQ(s.message(), "waiting for scheduling gates: [example.com/a b]");
}

// Orders pods by name; a profile's QueueSort plugin replaces PrioritySort.
class ByName final : public QueueSortPlugin {
 public:
  std::string_view name() const override { return "ByName"; }
  bool less(const QueuedPodInfo& a, const QueuedPodInfo& b) const override {
    return a.pod->name < b.pod->name;
  }
};

// Holds pods labelled "wait-for-node" until `*open`; only a node being added can change that.
class NodeGate final : public PreEnqueuePlugin, public EnqueueExtensions {
 public:
  explicit NodeGate(const bool* open) : open_(open) {}
  std::string_view name() const override { return "NodeGate"; }
  PluginStatus pre_enqueue(const PodInfo& pod) const override {
    ++calls;
    if (*open_ || pod.labels.find("wait-for-node") == nullptr) return {};
    return {Code::kUnschedulable, "no node yet"};
  }
  std::vector<ClusterEventWithHint> events_to_register() const override {
    return {on_event(EventResource::kNode, action::kAdd)};
  }
  mutable int calls = 0;

 private:
  const bool* open_;
};

TEST_F(QueueTest, AProfilesQueueSortAndPreEnqueuePluginsDecide) {
  bool open = false;
  NodeGate* gate = nullptr;
  Registry r;
  ASSERT_TRUE(r.add("ByName", [](const json&, Handle&) {
                 return Result<std::unique_ptr<Plugin>>(std::make_unique<ByName>());
               }).is_ok());
  ASSERT_TRUE(r.add("NodeGate", [&](const json&, Handle&) {
                 auto g = std::make_unique<NodeGate>(&open);
                 gate = g.get();
                 return Result<std::unique_ptr<Plugin>>(std::move(g));
               }).is_ok());
  Profile p;
  p.plugins = {{"ByName", 0, nullptr}, {"NodeGate", 0, nullptr}};
  auto fw = Framework::create(r, p);
  ASSERT_TRUE(fw.is_ok()) << fw.status().to_string();
  SchedulingQueue q(*fw.value(), options());

  q.add(PodBuilder("c").priority(1000).build());
  q.add(PodBuilder("a").build());
  q.add(PodBuilder("held").label("wait-for-node", "yes").priority(5000).build());
  q.add(PodBuilder("b").priority(10).build());
  EXPECT_EQ(q.active_size(), 3u);
  EXPECT_EQ(q.unschedulable_size(), 1u);
  EXPECT_EQ(pop_name(q), "a");
  EXPECT_EQ(pop_name(q), "b");
  EXPECT_EQ(pop_name(q), "c");
  EXPECT_EQ(pop_name(q), "");

  // Events the gate did not register for do not ask it again.
  open = true;
  int calls = gate->calls;
  q.assigned_pod_deleted(*PodBuilder("gone").node("n").build());
  EXPECT_EQ(gate->calls, calls);
  EXPECT_EQ(pop_name(q), "");
  // Its event does; a gate that still says no keeps the pod parked.
  open = false;
  q.node_added(*NodeBuilder("n1").build());
  EXPECT_EQ(gate->calls, calls + 1);
  EXPECT_EQ(q.unschedulable_size(), 1u);
  open = true;
  q.node_added(*NodeBuilder("n2").build());
  EXPECT_EQ(q.unschedulable_size(), 0u);
  EXPECT_EQ(pop_name(q), "held");  // at once: a gated pod has no back-off
}

TEST_F(QueueTest, PopBlocksUntilAPodArrives) {
  SchedulingQueue q(SchedulingQueue::PluginEvents{});
  std::atomic<bool> got{false};
  std::thread t([&] {
    auto p = q.pop();
    got = p.has_value() && p->pod->name == "late";
  });
  std::this_thread::sleep_for(50ms);
  EXPECT_FALSE(got.load());
  q.add(PodBuilder("late").build());
  t.join();
  EXPECT_TRUE(got.load());
}

TEST_F(QueueTest, PopWakesWhenBackoffExpires) {
  QueueOptions o;
  o.initial_backoff = 100ms;
  SchedulingQueue q(SchedulingQueue::PluginEvents{}, o);
  q.add(PodBuilder("p").build());
  auto p = q.pop();
  ASSERT_TRUE(q.add_unschedulable_if_not_present(*p).is_ok());
  auto start = std::chrono::steady_clock::now();
  auto again = q.pop();
  auto waited = std::chrono::steady_clock::now() - start;
  ASSERT_TRUE(again.has_value());
  EXPECT_GE(waited, 90ms);
  EXPECT_LT(waited, 2s);
}

TEST_F(QueueTest, CloseReleasesWaiters) {
  SchedulingQueue q(SchedulingQueue::PluginEvents{});
  std::thread t([&] { EXPECT_FALSE(q.pop().has_value()); });
  std::this_thread::sleep_for(20ms);
  q.close();
  t.join();
}

}  // namespace
}  // namespace skiff::scheduler
