#include "kubelet/eviction.h"

#include <gtest/gtest.h>

#include <map>

#include "kubelet/stats/fake_tree.h"
#include "kubelet/stats/stats_provider.h"
#include "support/temp_dir.h"

namespace skiff::kubelet {
namespace {

using namespace std::chrono_literals;

Json pod(const std::string& name, const std::string& requests_memory = "",
         const std::string& limits_memory = "", int priority = 0) {
  Json c = {{"name", "c"}, {"image", "busybox"}};
  if (!requests_memory.empty()) c["resources"]["requests"]["memory"] = requests_memory;
  if (!limits_memory.empty()) c["resources"]["limits"]["memory"] = limits_memory;
  Json p = {{"metadata", {{"name", name}, {"namespace", "default"}, {"uid", "uid-" + name}}},
            {"spec", {{"containers", Json::array({c})}}}};
  if (priority != 0) p["spec"]["priority"] = priority;
  return p;
}

stats::Summary node_with(uint64_t memory_available, uint64_t memory_working_set,
                         uint64_t fs_available, uint64_t fs_capacity) {
  stats::Summary s;
  s.node.memory = stats::MemoryStats{};
  s.node.memory->available_bytes = memory_available;
  s.node.memory->working_set_bytes = memory_working_set;
  s.node.fs = stats::FsStats{};
  s.node.fs->available_bytes = fs_available;
  s.node.fs->capacity_bytes = fs_capacity;
  return s;
}

// A node with plenty of memory and disk, and `max_pid` PIDs of which `procs` are in use.
stats::Summary node_with_pids(int64_t max_pid, int64_t procs) {
  stats::Summary s = node_with(1ull << 30, 1ull << 30, 50ull << 30, 100ull << 30);
  s.node.rlimit = stats::RlimitStats{};
  s.node.rlimit->max_pid = max_pid;
  s.node.rlimit->num_of_running_processes = procs;
  return s;
}

void add_pod_stats(stats::Summary& s, const std::string& uid, uint64_t working_set,
                   uint64_t processes = 0) {
  stats::PodStats ps;
  ps.pod_ref.uid = uid;
  ps.memory = stats::MemoryStats{};
  ps.memory->working_set_bytes = working_set;
  if (processes > 0) ps.process_count = processes;
  s.pods.push_back(ps);
}

std::vector<std::string> names(const std::vector<PodUsage>& pods) {
  std::vector<std::string> out;
  for (const auto& p : pods) out.push_back(p.pod["metadata"]["name"]);
  return out;
}

struct Eviction {
  std::string uid;
  std::string message;
  int64_t grace = -1;
};

// An EvictionManager over a summary and pods the test sets, on a fake clock.
class ManagerHarness {
 public:
  explicit ManagerHarness(std::vector<Threshold> thresholds,
                          std::chrono::milliseconds transition = 5min, int64_t max_grace = 0)
      : clock_(std::chrono::system_clock::time_point(std::chrono::seconds(1'700'000'000))) {
    EvictionOptions options;
    options.thresholds = std::move(thresholds);
    options.pressure_transition_period = transition;
    options.max_pod_grace_period_seconds = max_grace;
    options.clock = &clock_;
    manager_ = std::make_unique<EvictionManager>(
        options, EvictionManager::Hooks{
                     .summary = [this]() -> Result<stats::Summary> { return summary; },
                     .active_pods = [this] { return active; },
                     .evict =
                         [this](const std::string& uid, const std::string& message, int64_t grace) {
                           evicted.push_back({uid, message, grace});
                         },
                     .pressure_changed = [this] { ++changes; },
                 });
  }

  EvictionManager& manager() { return *manager_; }
  // Lets `d` pass, then runs one monitoring round.
  void round_after(std::chrono::milliseconds d) {
    clock_.advance(d);
    manager_->synchronize();
  }

  stats::Summary summary = node_with(1ull << 30, 1ull << 30, 50ull << 30, 100ull << 30);
  std::vector<Json> active;
  std::vector<Eviction> evicted;
  int changes = 0;

 private:
  FakeClock clock_;
  std::unique_ptr<EvictionManager> manager_;
};

// ---- parsing --------------------------------------------------------------------------------

TEST(EvictionTest, ParsesThresholdsAndRejectsBadOnes) {
  auto t = parse_thresholds(
      "memory.available<100Mi,nodefs.available<10%,nodefs.inodesFree<5%,"
      "imagefs.inodesFree<1k,pid.available<500");
  ASSERT_TRUE(t.is_ok()) << t.status().to_string();
  ASSERT_EQ(t->size(), 5u);
  EXPECT_EQ((*t)[0].quantity, 100 << 20);
  EXPECT_FALSE((*t)[0].soft);
  EXPECT_DOUBLE_EQ((*t)[1].percentage, 0.10);
  EXPECT_EQ((*t)[2].signal, "nodefs.inodesFree");
  EXPECT_DOUBLE_EQ((*t)[2].percentage, 0.05);
  EXPECT_EQ((*t)[3].quantity, 1000);
  EXPECT_EQ((*t)[4].signal, "pid.available");
  EXPECT_EQ((*t)[4].quantity, 500);
  EXPECT_TRUE(parse_thresholds("")->empty());
  // 0% and 100% disable a signal, as upstream.
  auto disabled = parse_thresholds("memory.available<0%,nodefs.available<100%,pid.available<10%");
  ASSERT_TRUE(disabled.is_ok());
  ASSERT_EQ(disabled->size(), 1u);
  EXPECT_EQ((*disabled)[0].signal, "pid.available");

  EXPECT_FALSE(parse_thresholds("memory.available>1Gi").is_ok());
  EXPECT_FALSE(parse_thresholds("cpu.available<1").is_ok());
  EXPECT_FALSE(parse_thresholds("nodefs.available<110%").is_ok());
  EXPECT_FALSE(parse_thresholds("nodefs.available<-1%").is_ok());
  EXPECT_FALSE(parse_thresholds("nodefs.available<5%%").is_ok());
  EXPECT_FALSE(parse_thresholds("memory.available<lots").is_ok());
  EXPECT_FALSE(parse_thresholds("memory.available<0").is_ok());
  EXPECT_FALSE(parse_thresholds("memory.available<").is_ok());
  auto twice = parse_thresholds("memory.available<1Gi,memory.available<2Gi");
  ASSERT_FALSE(twice.is_ok());
  EXPECT_NE(twice.status().message().find("given twice"), std::string::npos);
  auto bad = parse_thresholds("memory.available<100Mi,pid.available<many", true, "--eviction-soft");
  ASSERT_FALSE(bad.is_ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("--eviction-soft \"pid.available<many\""),
            std::string::npos)
      << bad.status().message();
}

TEST(EvictionTest, DefaultHardThresholdsAreUpstreams) {
  auto t = default_thresholds();
  std::map<std::string, Threshold> by_signal;
  for (const Threshold& x : t) by_signal[x.signal] = x;
  ASSERT_EQ(by_signal.size(), 4u);
  EXPECT_EQ(by_signal["memory.available"].quantity, 100 << 20);
  EXPECT_DOUBLE_EQ(by_signal["nodefs.available"].percentage, 0.10);
  EXPECT_DOUBLE_EQ(by_signal["nodefs.inodesFree"].percentage, 0.05);
  EXPECT_DOUBLE_EQ(by_signal["imagefs.available"].percentage, 0.15);
}

TEST(EvictionTest, ParsesSoftThresholdsWithGracePeriodsAndMinimumReclaims) {
  EvictionFlags flags;
  flags.hard = "memory.available<100Mi";
  flags.soft = "memory.available<1Gi,nodefs.available<20%";
  flags.soft_grace_period = "memory.available=1m30s, nodefs.available=2m,pid.available=10s";
  flags.minimum_reclaim = "memory.available=200Mi,nodefs.available=5%";
  auto t = parse_eviction_flags(flags);
  ASSERT_TRUE(t.is_ok()) << t.status().to_string();
  ASSERT_EQ(t->size(), 3u);
  EXPECT_FALSE((*t)[0].soft);
  EXPECT_EQ((*t)[0].grace_period, 0ms);
  EXPECT_EQ((*t)[0].minimum_reclaim.quantity, 200 << 20);
  EXPECT_TRUE((*t)[1].soft);
  EXPECT_EQ((*t)[1].signal, "memory.available");
  EXPECT_EQ((*t)[1].quantity, 1ll << 30);
  EXPECT_EQ((*t)[1].grace_period, 90s);
  EXPECT_EQ((*t)[1].minimum_reclaim.quantity, 200 << 20);
  EXPECT_TRUE((*t)[2].soft);
  EXPECT_EQ((*t)[2].grace_period, 2min);
  EXPECT_DOUBLE_EQ((*t)[2].minimum_reclaim.percentage, 0.05);
  // Nothing soft: the default hard thresholds alone.
  auto defaults = parse_eviction_flags(EvictionFlags{});
  ASSERT_TRUE(defaults.is_ok());
  EXPECT_EQ(defaults->size(), 4u);
}

TEST(EvictionTest, RejectsBadSoftFlagsNamingTheEntry) {
  auto fails_with = [](EvictionFlags flags, const std::string& want) {
    auto t = parse_eviction_flags(flags);
    if (t.is_ok()) return ::testing::AssertionFailure() << "accepted";
    if (t.status().code() != StatusCode::kInvalidArgument ||
        t.status().message().find(want) == std::string::npos) {
      return ::testing::AssertionFailure() << t.status().to_string();
    }
    return ::testing::AssertionSuccess();
  };
  EvictionFlags f;
  f.soft = "memory.available<1Gi";
  // A soft threshold without a grace period is refused, as upstream refuses it.
  EXPECT_TRUE(fails_with(f,
                         "--eviction-soft \"memory.available\": a soft eviction threshold "
                         "needs a grace period"));
  f.soft_grace_period = "nodefs.available=1m";
  EXPECT_TRUE(fails_with(f, "needs a grace period"));
  f.soft_grace_period = "memory.available=soon";
  EXPECT_TRUE(
      fails_with(f, "--eviction-soft-grace-period \"memory.available=soon\": bad duration"));
  f.soft_grace_period = "memory.available=-30s";
  EXPECT_TRUE(fails_with(f, "--eviction-soft-grace-period \"memory.available=-30s\""));
  f.soft_grace_period = "memory.available";
  EXPECT_TRUE(
      fails_with(f, "--eviction-soft-grace-period \"memory.available\": want signal=value"));
  f.soft_grace_period = "memory.avail=1m";
  EXPECT_TRUE(fails_with(f, "unsupported signal \"memory.avail\""));
  f.soft_grace_period = "memory.available=1m,memory.available=2m";
  EXPECT_TRUE(fails_with(f, "given twice"));
  f.soft_grace_period = "memory.available=1m";
  f.soft = "memory.available=1Gi";
  EXPECT_TRUE(fails_with(f, "--eviction-soft \"memory.available=1Gi\": want signal<quantity"));
  f.soft = "memory.available<1Gi";
  f.minimum_reclaim = "memory.available=-1Mi";
  EXPECT_TRUE(fails_with(f, "--eviction-minimum-reclaim \"memory.available=-1Mi\""));
  f.minimum_reclaim = "nodefs.available=150%";
  EXPECT_TRUE(fails_with(f, "not within 0% and 100%"));
  f.minimum_reclaim = "memory.available=0Mi";
  EXPECT_TRUE(parse_eviction_flags(f).is_ok());
  f.hard = "memory.available<1Gi,imagefs.available<";
  EXPECT_TRUE(fails_with(f, "--eviction-hard \"imagefs.available<\""));
}

// ---- signals and ranking -------------------------------------------------------------------

TEST(EvictionTest, QosClassesAsUpstream) {
  EXPECT_EQ(qos_class(pod("a")), "BestEffort");
  EXPECT_EQ(qos_class(pod("b", "64Mi")), "Burstable");
  Json g = pod("g", "", "64Mi");
  g["spec"]["containers"][0]["resources"]["limits"]["cpu"] = "500m";
  EXPECT_EQ(qos_class(g), "Guaranteed");  // requests default to limits
  g["spec"]["containers"][0]["resources"]["requests"]["cpu"] = "250m";
  EXPECT_EQ(qos_class(g), "Burstable");
}

TEST(EvictionTest, AdmitsNewPodsAsUpstreamUnderPressure) {
  const std::vector<std::string> memory = {"MemoryPressure"};
  EXPECT_EQ(pressure_admission(pod("a"), false, {}), "");
  EXPECT_EQ(pressure_admission(pod("a"), false, memory),
            "The node had condition: [MemoryPressure]. ");
  EXPECT_EQ(pressure_admission(pod("b", "64Mi"), false, memory), "");
  EXPECT_EQ(pressure_admission(pod("a"), true, memory), "");  // static pods are critical
  EXPECT_EQ(pressure_admission(pod("a", "", "", 2000000000), false, memory), "");
  EXPECT_NE(pressure_admission(pod("a", "", "", 1999999999), false, memory), "");
  // Tolerations of the memory-pressure taint: Exists (with or without the key), Equal with no
  // value; another effect or key does not do.
  auto tolerating = [](Json toleration) {
    Json p = pod("t");
    p["spec"]["tolerations"] = Json::array({toleration});
    return p;
  };
  const std::string key = "node.kubernetes.io/memory-pressure";
  EXPECT_EQ(pressure_admission(tolerating({{"operator", "Exists"}}), false, memory), "");
  EXPECT_EQ(pressure_admission(tolerating({{"key", key}, {"effect", "NoSchedule"}}), false, memory),
            "");
  EXPECT_NE(pressure_admission(tolerating({{"key", key}, {"effect", "NoExecute"}}), false, memory),
            "");
  EXPECT_NE(
      pressure_admission(tolerating({{"key", "other"}, {"operator", "Exists"}}), false, memory),
      "");
  EXPECT_NE(pressure_admission(tolerating({{"key", key}, {"value", "x"}}), false, memory), "");
  // Any other pressure: only critical pods.
  EXPECT_EQ(pressure_admission(pod("b", "64Mi"), false, {"DiskPressure"}),
            "The node had condition: [DiskPressure]. ");
  EXPECT_EQ(pressure_admission(tolerating({{"operator", "Exists"}}), false,
                               {"MemoryPressure", "PIDPressure"}),
            "The node had condition: [MemoryPressure PIDPressure]. ");
  EXPECT_EQ(pressure_admission(pod("a"), true, {"DiskPressure"}), "");
}

TEST(EvictionTest, ObservesSignalsUnderThresholds) {
  auto thresholds = default_thresholds();
  EXPECT_TRUE(
      observe(node_with(1ull << 30, 1ull << 30, 50ull << 30, 100ull << 30), thresholds).empty());
  auto low_memory =
      observe(node_with(50ull << 20, 4ull << 30, 50ull << 30, 100ull << 30), thresholds);
  ASSERT_EQ(low_memory.size(), 1u);
  EXPECT_EQ(low_memory[0].signal, "memory.available");
  EXPECT_EQ(low_memory[0].message,
            "The node was low on resource: memory. Threshold quantity: 100Mi, available: 50Mi. ");
  auto low_disk = observe(node_with(1ull << 30, 1ull << 30, 5ull << 30, 100ull << 30), thresholds);
  ASSERT_EQ(low_disk.size(), 1u);
  EXPECT_EQ(low_disk[0].signal, "nodefs.available");
}

TEST(EvictionTest, ObservesInodesAndPids) {
  auto thresholds =
      parse_thresholds("nodefs.inodesFree<5%,imagefs.inodesFree<1000,pid.available<10%");
  ASSERT_TRUE(thresholds.is_ok());
  stats::Summary s = node_with_pids(32768, 1000);
  s.node.fs->inodes = 100000;
  s.node.fs->inodes_free = 50000;
  s.node.runtime = stats::RuntimeStats{};
  s.node.runtime->image_fs = stats::FsStats{};
  s.node.runtime->image_fs->inodes = 100000;
  s.node.runtime->image_fs->inodes_free = 5000;
  EXPECT_TRUE(observe(s, *thresholds).empty());

  s.node.fs->inodes_free = 4000;  // under 5% of 100000
  s.node.runtime->image_fs->inodes_free = 999;
  s.node.rlimit->num_of_running_processes = 30000;  // 2768 left, under 3277
  auto met = observe(s, *thresholds);
  ASSERT_EQ(met.size(), 3u);
  EXPECT_EQ(met[0].signal, "nodefs.inodesFree");
  EXPECT_EQ(met[0].message,
            "The node was low on resource: inodes. Threshold quantity: 5000, available: 4000. ");
  EXPECT_EQ(met[1].signal, "imagefs.inodesFree");
  EXPECT_EQ(met[2].signal, "pid.available");
  EXPECT_EQ(met[2].index, 2u);
  EXPECT_EQ(met[2].message,
            "The node was low on resource: pids. Threshold quantity: 3277, available: 2768. ");
  EXPECT_EQ(pressure_condition("pid.available"), "PIDPressure");
  EXPECT_EQ(pressure_condition("nodefs.inodesFree"), "DiskPressure");
  EXPECT_EQ(pressure_condition("imagefs.available"), "DiskPressure");
  EXPECT_EQ(pressure_condition("memory.available"), "MemoryPressure");

  // No rlimit figures: pid.available is not observed at all.
  s.node.rlimit.reset();
  EXPECT_EQ(observe(s, *thresholds).size(), 2u);
}

TEST(EvictionTest, MinimumReclaimKeepsAMetThresholdUntilTheSignalRecoversFurther) {
  EvictionFlags flags;
  flags.hard = "memory.available<100Mi";
  flags.minimum_reclaim = "memory.available=50Mi";
  auto thresholds = parse_eviction_flags(flags);
  ASSERT_TRUE(thresholds.is_ok());
  auto at = [](uint64_t available_mi) {
    return node_with(available_mi << 20, 4ull << 30, 50ull << 30, 100ull << 30);
  };
  EXPECT_TRUE(observe(at(120), *thresholds).empty());
  EXPECT_EQ(observe(at(120), *thresholds, {0}).size(), 1u);  // met before: needs 150Mi
  EXPECT_TRUE(observe(at(160), *thresholds, {0}).empty());
}

TEST(EvictionTest, RanksPodsOverTheirRequestsThenPriorityThenUsage) {
  std::vector<PodUsage> pods = {
      {pod("within", "200Mi"), 100 << 20},               // under its request
      {pod("over-small", "100Mi"), 150 << 20},           // 50Mi over
      {pod("over-big", "100Mi"), 400 << 20},             // 300Mi over
      {pod("besteffort-high", "", "", 1000), 10 << 20},  // over (no request), high priority
  };
  EXPECT_EQ(names(rank_for_eviction(pods, "memory.available")),
            (std::vector<std::string>{"over-big", "over-small", "besteffort-high", "within"}));
}

TEST(EvictionTest, RanksPodsForPidsByPriorityThenProcessCount) {
  auto usage = [](Json p, int64_t processes) {
    PodUsage u;
    u.pod = std::move(p);
    u.process_count = processes;
    u.memory_working_set = 1ll << 30;  // memory plays no part
    return u;
  };
  std::vector<PodUsage> pods = {
      usage(pod("few", "", "", 0), 5),
      usage(pod("many", "", "", 0), 500),
      usage(pod("high-many", "", "", 100), 5000),
      usage(pod("low", "", "", -10), 1),
      usage(pod("some", "", "", 0), 50),
  };
  EXPECT_EQ(names(rank_for_eviction(pods, "pid.available")),
            (std::vector<std::string>{"low", "many", "some", "few", "high-many"}));
}

TEST(EvictionTest, RanksPodsForInodesByInodesUsed) {
  auto usage = [](Json p, int64_t inodes) {
    PodUsage u;
    u.pod = std::move(p);
    u.ephemeral_inodes = inodes;
    return u;
  };
  std::vector<PodUsage> pods = {usage(pod("none"), 0), usage(pod("small"), 10),
                                usage(pod("big"), 10000), usage(pod("high", "", "", 50), 90000)};
  EXPECT_EQ(names(rank_for_eviction(pods, "nodefs.inodesFree")),
            (std::vector<std::string>{"big", "small", "high", "none"}));
}

// ---- the manager ----------------------------------------------------------------------------

TEST(EvictionTest, ManagerReportsPressureAndEvictsOnePodPerRound) {
  ManagerHarness h(default_thresholds(), /*transition=*/0ms);
  h.active = {pod("a", "100Mi"), pod("b")};
  h.manager().synchronize();
  EXPECT_FALSE(h.manager().memory_pressure());
  EXPECT_TRUE(h.evicted.empty());
  h.summary = node_with(10ull << 20, 4ull << 30, 50ull << 30, 100ull << 30);
  add_pod_stats(h.summary, "uid-b", 500ull << 20);
  h.round_after(10s);
  EXPECT_TRUE(h.manager().memory_pressure());
  EXPECT_FALSE(h.manager().disk_pressure());
  EXPECT_FALSE(h.manager().pid_pressure());
  EXPECT_EQ(h.changes, 1);
  ASSERT_EQ(h.evicted.size(), 1u);
  EXPECT_EQ(h.evicted[0].uid, "uid-b");  // BestEffort, using 500Mi over its request of 0
  EXPECT_EQ(h.evicted[0].grace, 0);      // hard: at once
  EXPECT_NE(h.evicted[0].message.find("low on resource: memory"), std::string::npos);
  h.summary = node_with(1ull << 30, 1ull << 30, 50ull << 30, 100ull << 30);
  h.round_after(10s);
  EXPECT_FALSE(h.manager().memory_pressure());
  EXPECT_EQ(h.changes, 2);
  EXPECT_EQ(h.evicted.size(), 1u);
}

TEST(EvictionTest, SoftThresholdActsOnlyAfterItsGracePeriodWithoutABreak) {
  EvictionFlags flags;
  flags.hard = "memory.available<100Mi";
  flags.soft = "memory.available<1Gi";
  flags.soft_grace_period = "memory.available=1m30s";
  auto thresholds = parse_eviction_flags(flags);
  ASSERT_TRUE(thresholds.is_ok());
  ManagerHarness h(*thresholds, 5min, /*max_grace=*/60);
  Json victim = pod("victim");
  victim["spec"]["terminationGracePeriodSeconds"] = 120;
  h.active = {victim};
  auto soft_low = node_with(500ull << 20, 4ull << 30, 50ull << 30, 100ull << 30);
  auto fine = node_with(2ull << 30, 1ull << 30, 50ull << 30, 100ull << 30);

  h.summary = soft_low;
  h.round_after(0s);
  // Met: the node reports pressure at once, but nothing is evicted during the grace period.
  EXPECT_TRUE(h.manager().memory_pressure());
  EXPECT_TRUE(h.evicted.empty());
  h.round_after(60s);
  EXPECT_TRUE(h.evicted.empty());
  // A break starts the grace period over.
  h.summary = fine;
  h.round_after(10s);
  EXPECT_TRUE(h.evicted.empty());
  h.summary = soft_low;
  h.round_after(10s);
  h.round_after(80s);  // 80s into the new run
  EXPECT_TRUE(h.evicted.empty());
  h.round_after(10s);  // 90s: acts
  ASSERT_EQ(h.evicted.size(), 1u);
  EXPECT_EQ(h.evicted[0].uid, "uid-victim");
  // min(terminationGracePeriodSeconds 120, --eviction-max-pod-grace-period 60).
  EXPECT_EQ(h.evicted[0].grace, 60);
  EXPECT_EQ(h.evicted[0].message,
            "The node was low on resource: memory. Threshold quantity: 1024Mi, available: "
            "500Mi. ");

  // The hard threshold below acts at once, with no grace.
  h.evicted.clear();
  h.summary = node_with(50ull << 20, 4ull << 30, 50ull << 30, 100ull << 30);
  h.round_after(10s);
  ASSERT_EQ(h.evicted.size(), 1u);
  EXPECT_EQ(h.evicted[0].grace, 0);
}

TEST(EvictionTest, SoftEvictionGraceIsThePodsOwnUnderTheCap) {
  EvictionFlags flags;
  flags.hard = "";
  flags.soft = "pid.available<100";
  flags.soft_grace_period = "pid.available=0s";
  auto thresholds = parse_eviction_flags(flags);
  ASSERT_TRUE(thresholds.is_ok());
  auto grace_given = [&](int64_t max_grace, std::optional<int64_t> pod_grace) {
    ManagerHarness h(*thresholds, 5min, max_grace);
    Json p = pod("p");
    if (pod_grace) p["spec"]["terminationGracePeriodSeconds"] = *pod_grace;
    h.active = {p};
    h.summary = node_with_pids(1000, 950);
    h.manager().synchronize();
    return h.evicted.size() == 1 ? h.evicted[0].grace : -100;
  };
  EXPECT_EQ(grace_given(60, 10), 10);
  EXPECT_EQ(grace_given(60, std::nullopt), 30);  // the API's default
  EXPECT_EQ(grace_given(0, 10), 0);              // upstream's default cap
  EXPECT_EQ(grace_given(-1, 300), 300);          // no cap
}

TEST(EvictionTest, PressureConditionOutlastsItsThresholdForTheTransitionPeriod) {
  ManagerHarness h(default_thresholds(), /*transition=*/5min);
  auto low = node_with(1ull << 30, 1ull << 30, 5ull << 30, 100ull << 30);  // nodefs 5% < 10%
  auto fine = node_with(1ull << 30, 1ull << 30, 50ull << 30, 100ull << 30);
  h.summary = low;
  h.round_after(0s);
  EXPECT_TRUE(h.manager().disk_pressure());
  EXPECT_EQ(h.changes, 1);
  h.summary = fine;
  h.round_after(10s);
  EXPECT_TRUE(h.manager().disk_pressure());  // met 10s ago
  h.round_after(4min);
  EXPECT_TRUE(h.manager().disk_pressure());
  // Met again: the period runs from this last observation.
  h.summary = low;
  h.round_after(10s);
  h.summary = fine;
  h.round_after(4min + 50s);
  EXPECT_TRUE(h.manager().disk_pressure());
  EXPECT_EQ(h.changes, 1);
  h.round_after(10s);  // 5m since last met
  EXPECT_FALSE(h.manager().disk_pressure());
  EXPECT_EQ(h.changes, 2);
}

TEST(EvictionTest, PidPressureSetsClearsAndEvictsByProcessCount) {
  auto thresholds = parse_thresholds("pid.available<10%");
  ASSERT_TRUE(thresholds.is_ok());
  ManagerHarness h(*thresholds, /*transition=*/30s);
  Json critical = pod("critical", "", "", 2000001000);
  h.active = {pod("quiet"), pod("forker"), critical, pod("important", "", "", 1000)};
  h.summary = node_with_pids(10000, 5000);
  h.manager().synchronize();
  EXPECT_FALSE(h.manager().pid_pressure());
  EXPECT_TRUE(h.evicted.empty());

  h.summary = node_with_pids(10000, 9500);
  add_pod_stats(h.summary, "uid-quiet", 10ull << 30, 3);
  add_pod_stats(h.summary, "uid-forker", 1ull << 20, 4000);
  add_pod_stats(h.summary, "uid-critical", 1ull << 20, 5000);
  add_pod_stats(h.summary, "uid-important", 1ull << 20, 500);
  h.round_after(10s);
  EXPECT_TRUE(h.manager().pid_pressure());
  EXPECT_FALSE(h.manager().memory_pressure());
  EXPECT_FALSE(h.manager().disk_pressure());
  EXPECT_EQ(h.changes, 1);
  ASSERT_EQ(h.evicted.size(), 1u);
  EXPECT_EQ(h.evicted[0].uid, "uid-forker");  // the most processes at the lowest priority
  EXPECT_EQ(h.evicted[0].grace, 0);
  EXPECT_NE(h.evicted[0].message.find("low on resource: pids"), std::string::npos);

  // Only a system-critical pod left: it is never evicted; the pressure stays.
  h.active = {critical};
  h.round_after(10s);
  EXPECT_EQ(h.evicted.size(), 1u);
  EXPECT_TRUE(h.manager().pid_pressure());

  h.summary = node_with_pids(10000, 1000);
  h.round_after(10s);
  EXPECT_TRUE(h.manager().pid_pressure());  // within the transition period
  h.round_after(20s);
  EXPECT_FALSE(h.manager().pid_pressure());
  EXPECT_EQ(h.changes, 2);
}

TEST(EvictionTest, MemoryActsBeforeOtherSignals) {
  auto thresholds = parse_thresholds("pid.available<100,memory.available<100Mi");
  ASSERT_TRUE(thresholds.is_ok());
  ManagerHarness h(*thresholds);
  h.active = {pod("memory-hog"), pod("forker")};
  h.summary = node_with_pids(1000, 990);
  h.summary.node.memory->available_bytes = 10ull << 20;
  add_pod_stats(h.summary, "uid-memory-hog", 2ull << 30, 1);
  add_pod_stats(h.summary, "uid-forker", 1ull << 20, 900);
  h.manager().synchronize();
  EXPECT_TRUE(h.manager().memory_pressure());
  EXPECT_TRUE(h.manager().pid_pressure());
  ASSERT_EQ(h.evicted.size(), 1u);
  EXPECT_EQ(h.evicted[0].uid, "uid-memory-hog");
}

// ---- the pid.available figures --------------------------------------------------------------

TEST(EvictionTest, RlimitStatsTakeTheSmallestTaskLimit) {
  skiff::testing::TempDir dir;
  std::string proc = dir.sub("proc");
  stats::testing::write_file(proc + "/meminfo", "MemTotal: 16000 kB\nMemFree: 8000 kB\n");
  stats::testing::write_file(proc + "/stat", "cpu  1 2 3 4 5 6 7 8 0 0\nbtime 1700000000\n");
  stats::testing::write_file(proc + "/sys/kernel/pid_max", "4194304\n");
  stats::testing::write_file(proc + "/sys/kernel/threads-max", "63000\n");
  stats::testing::write_file(proc + "/loadavg", "0.00 0.00 0.00 2/812 999\n");
  stats::testing::FakeCgroupV1 cgroups(dir.sub("cgroup"));
  cgroups.set_cpu("/", 1000);
  cgroups.set_memory("/", 1000, 0, 0, 0, 0, stats::testing::kV1NoLimit);

  stats::StatsProviderOptions options;
  options.node_name = "n";
  options.cgroup_mount = cgroups.root();
  options.proc_root = proc;
  options.pods = [] { return std::vector<stats::PodInfo>{}; };
  {
    stats::CgroupStatsProvider provider(options);
    auto summary = provider.summary(false);
    ASSERT_TRUE(summary.is_ok()) << summary.status().to_string();
    ASSERT_TRUE(summary->node.rlimit.has_value());
    EXPECT_EQ(summary->node.rlimit->max_pid, 63000);  // threads-max < pid_max
    EXPECT_EQ(summary->node.rlimit->num_of_running_processes, 812);
    auto json = stats::to_json(*summary);
    EXPECT_EQ(json["node"]["rlimit"]["maxpid"], 63000);
    EXPECT_EQ(json["node"]["rlimit"]["curproc"], 812);
  }
  // A root pids cgroup with a lower limit (a cgroup namespace's root): its limit and count.
  stats::testing::write_file(cgroups.root() + "/pids/pids.max", "2048\n");
  cgroups.set_pids("/", 1900);
  {
    stats::CgroupStatsProvider provider(options);
    auto summary = provider.summary(false);
    ASSERT_TRUE(summary.is_ok());
    EXPECT_EQ(summary->node.rlimit->max_pid, 2048);
    EXPECT_EQ(summary->node.rlimit->num_of_running_processes, 1900);
    auto met = observe(*summary, *parse_thresholds("pid.available<10%"));
    ASSERT_EQ(met.size(), 1u);  // 148 left of 2048, under 205
    EXPECT_EQ(met[0].signal, "pid.available");
  }
  // "max": no cgroup limit.
  stats::testing::write_file(cgroups.root() + "/pids/pids.max", "max\n");
  {
    stats::CgroupStatsProvider provider(options);
    auto summary = provider.summary(false);
    ASSERT_TRUE(summary.is_ok());
    EXPECT_EQ(summary->node.rlimit->max_pid, 63000);
    EXPECT_EQ(summary->node.rlimit->num_of_running_processes, 812);
  }
}

}  // namespace
}  // namespace skiff::kubelet
