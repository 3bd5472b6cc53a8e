// DefaultPreemption through whole scheduling cycles: the default plugins, a preemption plugin
// whose evictions are recorded, and a binder.

#include "scheduler/plugins/default_preemption.h"

#include <gtest/gtest.h>

#include <map>

#include "scheduler/plugins/registry.h"
#include "scheduler/scheduler.h"
#include "test_util.h"

namespace skiff::scheduler {
namespace {

using nlohmann::json;
using testing::NodeBuilder;
using testing::PodBuilder;

class NoopBinder final : public BindPlugin {
 public:
  std::string_view name() const override { return "NoopBinder"; }
  PluginStatus bind(CycleState&, const PodInfo&, const std::string&) override { return {}; }
};

class DefaultPreemptionTest : public ::testing::Test {
 protected:
  DefaultPreemptionTest() {
    Registry r = plugins::default_registry();
    auto must = [](Status s) { ASSERT_TRUE(s.is_ok()) << s.to_string(); };
    must(r.add("NoopBinder", [](const json&, Handle&) -> Result<std::unique_ptr<Plugin>> {
      return std::unique_ptr<Plugin>(std::make_unique<NoopBinder>());
    }));
    must(r.add(std::string(plugins::DefaultPreemption::kName),
               [this](const json&, Handle&) -> Result<std::unique_ptr<Plugin>> {
                 return std::unique_ptr<Plugin>(std::make_unique<plugins::DefaultPreemption>(
                     [this](const PodInfo& preemptor, const std::string& node,
                            const std::vector<PodRef>& victims) {
                       for (const PodRef& v : victims) evicted[node].push_back(v->name);
                       preemptors.push_back(preemptor.name);
                       return evict_status;
                     }));
               }));
    Profile p = plugins::default_profile();
    p.plugins.push_back({std::string(plugins::DefaultPreemption::kName), 0, nullptr});
    p.plugins.push_back({"NoopBinder", 0, nullptr});
    auto fw = Framework::create(r, p);
    EXPECT_TRUE(fw.is_ok()) << fw.status().to_string();
    SchedulerOptions options;
    options.seed = 7;
    scheduler = std::make_unique<Scheduler>(cache, std::move(fw).value(), options);
  }

  void node(const NodeBuilder& n) { cache.add_node(n.build()); }
  PodRef pod_on(const std::string& node, const std::string& name, int priority,
                const std::string& cpu, const std::string& started = "") {
    PodBuilder b(name);
    b.req(cpu, "").priority(priority).node(node);
    if (!started.empty()) b.json_ref()["status"]["startTime"] = started;
    PodRef p = b.build();
    EXPECT_TRUE(cache.add_pod(p).is_ok());
    return p;
  }
  PodRef place(const PodBuilder& b) {
    PodRef p = b.build();
    EXPECT_TRUE(cache.add_pod(p).is_ok());
    return p;
  }
  // One cycle: the node the pod was bound to, or the failure (kept in `failure`).
  std::string schedule(const PodBuilder& b) {
    PodRef pod = b.build();
    CycleOutcome r = scheduler->schedule_one(pod);
    if (!r.outcome.ok()) {
      failure = r.outcome.failure();
      return "";
    }
    EXPECT_TRUE(scheduler->bind(pod, r.outcome.result().node, *r.state).is_success());
    return r.outcome.result().node;
  }

  Cache cache;
  std::unique_ptr<Scheduler> scheduler;
  std::map<std::string, std::vector<std::string>> evicted;
  std::vector<std::string> preemptors;
  Status evict_status = Status::ok();
  ScheduleFailure failure;
};

TEST_F(DefaultPreemptionTest, EvictsOnTheNodeWhoseVictimsMatterLeastThenThePodLandsThere) {
  node(NodeBuilder("n1").capacity("4", "8Gi"));
  node(NodeBuilder("n2").capacity("4", "8Gi"));
  PodRef low = pod_on("n1", "low", 1, "2");
  pod_on("n1", "mid", 5, "2");
  pod_on("n2", "mid-2", 5, "2");
  pod_on("n2", "mid-3", 5, "2");

  PodBuilder vip("vip");
  vip.req("2", "").priority(10);
  EXPECT_EQ(schedule(vip), "");
  // On n1 only "low" must go ("mid" is given back: the pod fits beside it); n2 would lose a
  // priority-5 pod.
  EXPECT_EQ(evicted, (std::map<std::string, std::vector<std::string>>{{"n1", {"low"}}}));
  EXPECT_EQ(failure.nominated_node, "n1");
  EXPECT_EQ(failure.message, "0/2 nodes are available: 2 Insufficient cpu.");

  // The victim goes; the pod, nominated to n1, is tried there first and fits.
  ASSERT_TRUE(cache.remove_pod(low->uid).is_ok());
  vip.json_ref()["status"]["nominatedNodeName"] = "n1";
  EXPECT_EQ(schedule(vip), "n1");
}

// Victims that stand in the way through inter-pod (anti-)affinity or topology spreading: the
// counts PreFilter took must see them removed (PreFilterExtensions), else no node is a candidate.
TEST_F(DefaultPreemptionTest, EvictsThePodsTheIncomingPodsAntiAffinityRejects) {
  node(NodeBuilder("n1").capacity("4", "8Gi"));
  place(PodBuilder("db").label("app", "db").priority(1).req("1", "").node("n1"));
  place(PodBuilder("other").label("app", "web").priority(1).req("1", "").node("n1"));
  PodBuilder vip("vip");
  vip.req("1", "").priority(10).required_anti_affinity("app", "db", "kubernetes.io/hostname");
  EXPECT_EQ(schedule(vip), "");
  EXPECT_EQ(failure.message,
            "0/1 nodes are available: 1 node(s) didn't match pod anti-affinity "
            "rules.");
  // Only the pod the term matches goes; "other" is given back.
  EXPECT_EQ(evicted, (std::map<std::string, std::vector<std::string>>{{"n1", {"db"}}}));
  EXPECT_EQ(failure.nominated_node, "n1");
}

TEST_F(DefaultPreemptionTest, EvictsALowerPriorityPodWhoseAntiAffinityRejectsTheIncomingPod) {
  node(NodeBuilder("n1").capacity("4", "8Gi"));
  node(NodeBuilder("n2").capacity("4", "8Gi"));
  place(PodBuilder("loner").priority(1).req("1", "").node("n1").required_anti_affinity(
      "app", "web", "kubernetes.io/hostname"));
  place(PodBuilder("big").priority(100).req("4", "").node("n2"));
  PodBuilder vip("vip");
  vip.label("app", "web").req("1", "").priority(10);
  EXPECT_EQ(schedule(vip), "");
  EXPECT_EQ(evicted, (std::map<std::string, std::vector<std::string>>{{"n1", {"loner"}}}));
}

TEST_F(DefaultPreemptionTest, EvictsOnlyWhatTopologySpreadNeeds) {
  node(NodeBuilder("n1").capacity("4", "8Gi"));
  node(NodeBuilder("n2").capacity("4", "8Gi"));
  // n1 holds two spread pods of low priority; n2 one of high priority and no room.
  place(PodBuilder("s1").label("app", "s").priority(1).req("100m", "").node("n1"));
  place(PodBuilder("s2").label("app", "s").priority(1).req("100m", "").node("n1"));
  place(PodBuilder("s3").label("app", "s").priority(1000).req("4", "").node("n2"));
  PodBuilder vip("vip");
  vip.label("app", "s")
      .req("100m", "")
      .priority(10)
      .spread(1, "kubernetes.io/hostname", "DoNotSchedule", "app", "s");
  EXPECT_EQ(schedule(vip), "");
  // Without one of n1's pods the domains are 1 and 1: the pod fits there with skew 1.
  ASSERT_EQ(evicted.size(), 1u);
  EXPECT_EQ(evicted["n1"].size(), 1u);
  EXPECT_EQ(failure.nominated_node, "n1");
}

TEST_F(DefaultPreemptionTest, ANominatedPodCountsForAffinityWhereItIsNominated) {
  node(NodeBuilder("n1").capacity("4", "8Gi"));
  node(NodeBuilder("n2").capacity("4", "8Gi"));
  PodBuilder db("db");
  db.label("app", "db").req("1", "").priority(10);
  db.json_ref()["status"]["nominatedNodeName"] = "n1";
  scheduler->nominator().set(db.build(), "n1");
  // A pod of no higher priority that must not share a node with "db" keeps off n1.
  PodBuilder web("web");
  web.req("1", "").priority(10).required_anti_affinity("app", "db", "kubernetes.io/hostname");
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(schedule(web.uid("web-" + std::to_string(i))), "n2") << failure.message;
  }
  EXPECT_TRUE(evicted.empty());
}

TEST_F(DefaultPreemptionTest, GivesBackTheMostImportantPodsFirst) {
  node(NodeBuilder("n1").capacity("4", "8Gi"));
  pod_on("n1", "a", 1, "1", "2026-01-01T00:00:01Z");
  pod_on("n1", "d", 1, "1", "2026-01-01T00:00:04Z");
  pod_on("n1", "b", 1, "1", "2026-01-01T00:00:02Z");
  pod_on("n1", "c", 1, "1", "2026-01-01T00:00:03Z");
  PodBuilder vip("vip");
  vip.req("2", "").priority(10);
  EXPECT_EQ(schedule(vip), "");
  // Equal priorities: the pods that started first stay, the two latest go.
  auto victims = evicted["n1"];
  std::sort(victims.begin(), victims.end());
  EXPECT_EQ(victims, (std::vector<std::string>{"c", "d"}));
}

TEST_F(DefaultPreemptionTest, PrefersTheLowestSumOfVictimPriorities) {
  node(NodeBuilder("n1").capacity("4", "8Gi"));
  node(NodeBuilder("n2").capacity("4", "8Gi"));
  node(NodeBuilder("n3").capacity("4", "8Gi"));
  // n1: victims 3 and 3; n2: one victim of 3 (lowest sum); n3: victims 3 and 1 (sum between).
  pod_on("n1", "n1-a", 3, "1500m");
  pod_on("n1", "n1-b", 3, "1500m");
  pod_on("n2", "n2-a", 3, "3");
  pod_on("n2", "n2-keep", 20, "1");
  pod_on("n3", "n3-a", 3, "2");
  pod_on("n3", "n3-b", 1, "2");
  PodBuilder vip("vip");
  vip.req("3", "").priority(10);
  EXPECT_EQ(schedule(vip), "");
  EXPECT_EQ(evicted, (std::map<std::string, std::vector<std::string>>{{"n2", {"n2-a"}}}));
  EXPECT_EQ(failure.nominated_node, "n2");
}

TEST_F(DefaultPreemptionTest, NotEligibleOrNothingToEvictSaysWhy) {
  node(NodeBuilder("n1").capacity("2", "8Gi"));
  node(NodeBuilder("n2").capacity("2", "8Gi").taint("dedicated", "db", "NoSchedule"));
  pod_on("n1", "peer", 10, "2");
  pod_on("n2", "low-on-tainted", 1, "2");

  PodBuilder never("never");
  never.req("1", "").priority(100).spec("preemptionPolicy", "Never");
  EXPECT_EQ(schedule(never), "");
  EXPECT_TRUE(evicted.empty());
  EXPECT_EQ(failure.message,
            "0/2 nodes are available: 1 Insufficient cpu, 1 node(s) had untolerated taint "
            "{dedicated: db}. preemption: not eligible due to preemptionPolicy=Never.");

  // n1 holds only a pod of the same priority; evicting on n2 would not cure its taint.
  PodBuilder same("same");
  same.req("1", "").priority(10);
  EXPECT_EQ(schedule(same), "");
  EXPECT_TRUE(evicted.empty());
  EXPECT_EQ(failure.message,
            "0/2 nodes are available: 1 Insufficient cpu, 1 node(s) had untolerated taint "
            "{dedicated: db}. preemption: 0/2 nodes are available: 1 No preemption victims found "
            "for incoming pod, 1 Preemption is not helpful for scheduling.");
  EXPECT_TRUE(failure.nominated_node.empty());
}

TEST_F(DefaultPreemptionTest, NodesWhereEvictingAllLowerPodsIsNotEnoughAreSkipped) {
  node(NodeBuilder("n1").capacity("2", "8Gi"));
  pod_on("n1", "peer", 10, "1");
  pod_on("n1", "low", 1, "1");
  PodBuilder mid("mid");
  mid.req("2", "").priority(5);
  EXPECT_EQ(schedule(mid), "");
  EXPECT_TRUE(evicted.empty());
  EXPECT_EQ(failure.message,
            "0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are available: 1 "
            "Insufficient cpu.");
}

TEST_F(DefaultPreemptionTest, WaitsWhileEarlierVictimsTerminateOnItsNominatedNode) {
  node(NodeBuilder("n1").capacity("2", "8Gi"));
  ASSERT_TRUE(
      cache.add_pod(PodBuilder("going").req("1", "").priority(1).node("n1").terminating().build())
          .is_ok());
  pod_on("n1", "other-low", 1, "1");
  PodBuilder vip("vip");
  vip.req("2", "").priority(10);
  vip.json_ref()["status"]["nominatedNodeName"] = "n1";
  EXPECT_EQ(schedule(vip), "");
  EXPECT_TRUE(evicted.empty());
  EXPECT_NE(failure.message.find(
                "preemption: not eligible due to a terminating pod on the nominated node."),
            std::string::npos)
      << failure.message;
  EXPECT_EQ(failure.nominated_node, "n1");  // it keeps waiting there
}

TEST_F(DefaultPreemptionTest, NominatedPodsKeepTheirRoomFromPodsOfLowerPriority) {
  node(NodeBuilder("n1").capacity("2", "8Gi"));
  // The victims are gone; "vip" waits for the room, nominated to n1.
  PodBuilder vip("vip");
  vip.req("2", "").priority(10);
  vip.json_ref()["status"]["nominatedNodeName"] = "n1";
  scheduler->nominator().set(vip.build(), "n1");

  PodBuilder lower("lower");
  lower.req("1", "").priority(5);
  EXPECT_EQ(schedule(lower), "");
  EXPECT_EQ(failure.message,
            "0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are available: 1 "
            "No preemption victims found for incoming pod.");
  PodBuilder peer("peer");  // equal priority: the nominated pod counts too
  peer.req("1", "").priority(10);
  EXPECT_EQ(schedule(peer), "");
  PodBuilder higher("higher");  // a pod more important than the nominated one ignores it
  higher.req("1", "").priority(20);
  EXPECT_EQ(schedule(higher), "n1");

  // The nominated pod itself is not in its own way; once it is gone, the room is free again.
  scheduler->nominator().remove(vip.build()->uid);
  EXPECT_EQ(schedule(lower), "n1");
  EXPECT_TRUE(evicted.empty());
}

TEST_F(DefaultPreemptionTest, APreemptorDoesNotWaitForItsOwnNomination) {
  node(NodeBuilder("n1").capacity("2", "8Gi"));
  PodBuilder vip("vip");
  vip.req("2", "").priority(10);
  vip.json_ref()["status"]["nominatedNodeName"] = "n1";
  scheduler->nominator().set(vip.build(), "n1");
  EXPECT_EQ(schedule(vip), "n1");
}

TEST_F(DefaultPreemptionTest, AFailedEvictionFailsTheCycle) {
  node(NodeBuilder("n1").capacity("2", "8Gi"));
  pod_on("n1", "low", 1, "2");
  evict_status = Status(StatusCode::kUnavailable, "API server gone");
  PodBuilder vip("vip");
  vip.req("1", "").priority(10);
  EXPECT_EQ(schedule(vip), "");
  EXPECT_TRUE(failure.nominated_node.empty());
  EXPECT_NE(failure.message.find("preemption: API server gone"), std::string::npos)
      << failure.message;
}

}  // namespace
}  // namespace skiff::scheduler
