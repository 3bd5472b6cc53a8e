#include "kubelet/stats/stats_provider.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <thread>

#include "kubelet/cri/fake_runtime.h"
#include "kubelet/stats/fake_tree.h"
#include "kubelet/stats/resource_metrics.h"
#include "support/temp_dir.h"

namespace skiff::kubelet::stats {
namespace {

using namespace std::chrono_literals;
namespace v1 = ::runtime::v1;
using testing::FakeCgroupV1;
using testing::net_dev;
using testing::net_dev_line;
using testing::write_file;

constexpr uint64_t kMemTotal = 16'000'000ull * 1024;

// A node with one pod ("default/web", uid u1) of two running containers: "app" has its cgroup
// under the pod's, "sidecar" has none (the runtime measures it).
class StatsProviderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string proc = dir_.sub("proc");
    write_file(proc + "/meminfo",
               "MemTotal:       16000000 kB\nMemFree:         2000000 kB\n"
               "Inactive(file):  1000000 kB\nAnonPages:       3000000 kB\n");
    write_file(proc + "/stat", "cpu  1 2 3 4 5 6 7 8 0 0\nbtime 1700000000\n");
    write_file(proc + "/vmstat", "pgfault 1\npgmajfault 2\n");
    write_file(proc + "/sys/kernel/pid_max", "32768\n");
    write_file(proc + "/loadavg", "0.00 0.00 0.00 1/345 999\n");
    write_file(proc + "/net/dev",
               net_dev(net_dev_line("lo", 1, 0, 1, 0) + net_dev_line("ens4", 1000, 1, 2000, 2) +
                       net_dev_line("cni0", 300, 0, 400, 0) + net_dev_line("veth99", 5, 0, 6, 0)));
    write_file(proc + "/net/route",
               "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\n"
               "ens4\t00000000\t0100000A\t0003\t0\t0\t0\t00000000\n");
    write_file(proc + "/500/net/dev",
               net_dev(net_dev_line("lo", 7, 0, 7, 0) + net_dev_line("eth0", 4321, 0, 1234, 1)));

    ASSERT_TRUE(runtime_.add_image("busybox").size() > 0);
    v1::PodSandboxConfig sandbox;
    sandbox.mutable_metadata()->set_name("web");
    sandbox.mutable_metadata()->set_namespace_("default");
    sandbox.mutable_metadata()->set_uid("u1");
    auto sandbox_id = runtime_.run_pod_sandbox(sandbox, "");
    ASSERT_TRUE(sandbox_id.is_ok());
    for (const char* name : {"app", "sidecar"}) {
      v1::ContainerConfig c;
      c.mutable_metadata()->set_name(name);
      c.mutable_image()->set_image("busybox");
      auto id = runtime_.create_container(*sandbox_id, c, sandbox);
      ASSERT_TRUE(id.is_ok()) << id.status().to_string();
      ASSERT_TRUE(runtime_.start_container(*id).is_ok());
      ids_[name] = *id;
    }
    ASSERT_TRUE(runtime_.set_container_stats(ids_["app"], 999, 999, 20'000).is_ok());
    ASSERT_TRUE(runtime_.set_container_stats(ids_["sidecar"], 700'000'000, 3'000, 10'000).is_ok());

    cgroup_.set_cpu("/", 10'000'000'000);
    cgroup_.set_memory("/", 6'000'000'000, 1'000'000'000, 2'000'000'000, 123, 4,
                       testing::kV1NoLimit);
    std::string pod = "/kubepods/podu1";
    cgroup_.set_cpu(pod, 2'000'000'000);
    cgroup_.set_memory(pod, 300'000, 100'000, 150'000, 1000, 10, 1'000'000);
    cgroup_.set_pids(pod, 3);
    cgroup_.set_procs(pod, "");
    cgroup_.set_procs(pod + "/sandbox", "500\n");
    cgroup_.set_cpu(pod + "/" + ids_["app"], 1'500'000'000);
    cgroup_.set_memory(pod + "/" + ids_["app"], 200'000, 50'000, 120'000, 900, 9,
                       testing::kV1NoLimit);

    write_file(dir_.sub("pods/u1/volumes/kubernetes.io~empty-dir/cache/data"),
               std::string(8192, 'c'));
    write_file(dir_.sub("pods/u1/volumes/kubernetes.io~configmap/config/key"), "value");
    write_file(dir_.sub("logs/default_web_u1/app/0.log"), std::string(5000, 'l'));
    write_file(dir_.sub("logs/default_web_u1/sidecar/0.log"), "x");
    std::filesystem::create_directories(dir_.sub("containerd"));

    options_.node_name = "node-1";
    options_.cgroup_root = "/kubepods";
    options_.cgroup_mount = cgroup_.root();
    options_.proc_root = proc;
    options_.pods_dir = dir_.sub("pods");
    options_.pod_log_root = dir_.sub("logs");
    options_.node_fs_path = dir_.path();
    options_.image_fs_path = dir_.sub("containerd");
    options_.clock = &clock_;
    options_.cpu_sample_min_interval = 1s;
    options_.pods = [this] {
      pod_calls_++;
      PodInfo pod;
      pod.uid = "u1";
      pod.namespace_name = "default";
      pod.name = "web";
      pod.start_time = TimePoint(std::chrono::seconds(1'700'000'100));
      pod.containers = {{ids_["app"], "app", TimePoint(std::chrono::seconds(1'700'000'200))},
                        {ids_["sidecar"], "sidecar", TimePoint(std::chrono::seconds(0))}};
      return std::vector<PodInfo>{pod};
    };
  }

  const ContainerStats* container(const Summary& s, const std::string& name) {
    for (const ContainerStats& c : s.pods.at(0).containers) {
      if (c.name == name) return &c;
    }
    return nullptr;
  }

  skiff::testing::TempDir dir_;
  FakeCgroupV1 cgroup_{dir_.sub("cgroup")};
  cri::FakeRuntime runtime_;
  std::map<std::string, std::string> ids_;
  FakeClock clock_{TimePoint(std::chrono::seconds(1'800'000'000))};
  StatsProviderOptions options_;
  std::atomic<int> pod_calls_{0};
};

TEST_F(StatsProviderTest, NodeStats) {
  CgroupStatsProvider provider(options_);
  auto summary = provider.summary(false);
  ASSERT_TRUE(summary.is_ok()) << summary.status().to_string();
  const NodeStats& node = summary->node;
  EXPECT_EQ(node.node_name, "node-1");
  EXPECT_EQ(node.start_time, TimePoint(std::chrono::seconds(1'700'000'000)));

  ASSERT_TRUE(node.cpu.has_value());
  EXPECT_EQ(node.cpu->time, clock_.now());
  EXPECT_EQ(node.cpu->usage_core_nano_seconds, 10'000'000'000u);
  EXPECT_FALSE(node.cpu->usage_nano_cores.has_value());  // one sample so far

  ASSERT_TRUE(node.memory.has_value());
  EXPECT_EQ(node.memory->usage_bytes, 6'000'000'000u);
  EXPECT_EQ(node.memory->working_set_bytes, 5'000'000'000u);
  EXPECT_EQ(node.memory->available_bytes, kMemTotal - 5'000'000'000u);
  EXPECT_EQ(node.memory->rss_bytes, 2'000'000'000u);
  EXPECT_EQ(node.memory->page_faults, 123u);
  EXPECT_EQ(node.memory->major_page_faults, 4u);

  ASSERT_TRUE(node.network.has_value());
  EXPECT_EQ(node.network->default_interface.name, "ens4");  // no eth0: the default route's
  EXPECT_EQ(node.network->default_interface.rx_bytes, 1000u);
  EXPECT_EQ(node.network->default_interface.tx_errors, 2u);
  ASSERT_EQ(node.network->interfaces.size(), 2u);  // lo and veth* left out
  EXPECT_EQ(node.network->interfaces[0].name, "ens4");
  EXPECT_EQ(node.network->interfaces[1].name, "cni0");

  auto fs = filesystem_info(dir_.path());
  ASSERT_TRUE(fs.is_ok());
  ASSERT_TRUE(node.fs.has_value());
  EXPECT_EQ(node.fs->capacity_bytes, fs->capacity_bytes);
  EXPECT_EQ(node.fs->inodes, fs->inodes);
  ASSERT_TRUE(node.fs->used_bytes.has_value());
  ASSERT_TRUE(node.runtime.has_value());
  ASSERT_TRUE(node.runtime->image_fs.has_value());
  EXPECT_EQ(node.runtime->image_fs->capacity_bytes, fs->capacity_bytes);
  EXPECT_EQ(node.runtime->image_fs->used_bytes, fs->used_bytes);  // no ImageService given

  ASSERT_TRUE(node.rlimit.has_value());
  EXPECT_EQ(node.rlimit->max_pid, 32768);
  EXPECT_EQ(node.rlimit->num_of_running_processes, 345);
}

TEST_F(StatsProviderTest, UsageNanoCoresIsTheRateBetweenSamples) {
  CgroupStatsProvider provider(options_);
  ASSERT_TRUE(provider.summary(true).is_ok());
  clock_.advance(2s);
  cgroup_.set_cpu("/", 13'000'000'000);                              // 1.5 cores
  cgroup_.set_cpu("/kubepods/podu1", 2'500'000'000);                 // 0.25 core
  cgroup_.set_cpu("/kubepods/podu1/" + ids_["app"], 1'600'000'000);  // 0.05 core
  auto s = provider.summary(true);
  ASSERT_TRUE(s.is_ok());
  EXPECT_EQ(s->node.cpu->usage_nano_cores, 1'500'000'000u);
  EXPECT_EQ(s->node.cpu->usage_core_nano_seconds, 13'000'000'000u);
  EXPECT_EQ(s->pods[0].cpu->usage_nano_cores, 250'000'000u);
  EXPECT_EQ(container(*s, "app")->cpu->usage_nano_cores, 50'000'000u);

  // A scrape soon after keeps the last rate rather than measuring over a sliver of time.
  clock_.advance(100ms);
  cgroup_.set_cpu("/", 13'100'000'000);
  s = provider.summary(true);
  EXPECT_EQ(s->node.cpu->usage_nano_cores, 1'500'000'000u);
  EXPECT_EQ(s->node.cpu->usage_core_nano_seconds, 13'100'000'000u);
  // A second after the sample kept (at +2 s): a new rate, 1 s of CPU over 1 s.
  clock_.advance(900ms);
  cgroup_.set_cpu("/", 14'000'000'000);
  s = provider.summary(true);
  EXPECT_EQ(s->node.cpu->usage_nano_cores, 1'000'000'000u);

  // A counter that goes back (a new cgroup under the same name) starts over.
  clock_.advance(2s);
  cgroup_.set_cpu("/kubepods/podu1", 1'000);
  s = provider.summary(true);
  EXPECT_FALSE(s->pods[0].cpu->usage_nano_cores.has_value());
}

TEST_F(StatsProviderTest, HousekeepingSamplesBeforeTheFirstScrape) {
  options_.housekeeping_interval = 20ms;
  CgroupStatsProvider provider(options_);
  provider.start();
  auto deadline = std::chrono::steady_clock::now() + 5s;
  while (pod_calls_.load() < 1 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(5ms);
  }
  ASSERT_GE(pod_calls_.load(), 1);
  provider.stop();
  clock_.advance(4s);
  cgroup_.set_cpu("/", 14'000'000'000);
  cgroup_.set_cpu("/kubepods/podu1", 3'000'000'000);
  auto s = provider.summary(true);
  ASSERT_TRUE(s.is_ok());
  EXPECT_EQ(s->node.cpu->usage_nano_cores, 1'000'000'000u);
  EXPECT_EQ(s->pods[0].cpu->usage_nano_cores, 250'000'000u);
  provider.stop();  // idempotent
}

TEST_F(StatsProviderTest, PodAndContainerStats) {
  options_.runtime = &runtime_;
  options_.images = &runtime_;
  CgroupStatsProvider provider(options_);
  auto summary = provider.summary(false);
  ASSERT_TRUE(summary.is_ok()) << summary.status().to_string();
  ASSERT_EQ(summary->pods.size(), 1u);
  const PodStats& pod = summary->pods[0];
  EXPECT_EQ(pod.pod_ref.name, "web");
  EXPECT_EQ(pod.pod_ref.namespace_name, "default");
  EXPECT_EQ(pod.pod_ref.uid, "u1");
  EXPECT_EQ(pod.start_time, TimePoint(std::chrono::seconds(1'700'000'100)));

  ASSERT_TRUE(pod.cpu.has_value());
  EXPECT_EQ(pod.cpu->usage_core_nano_seconds, 2'000'000'000u);
  ASSERT_TRUE(pod.memory.has_value());
  EXPECT_EQ(pod.memory->usage_bytes, 300'000u);
  EXPECT_EQ(pod.memory->working_set_bytes, 200'000u);
  EXPECT_EQ(pod.memory->available_bytes, 800'000u);  // the pod's limit - working set
  EXPECT_EQ(pod.memory->rss_bytes, 150'000u);
  EXPECT_EQ(pod.memory->page_faults, 1000u);
  EXPECT_EQ(pod.memory->major_page_faults, 10u);
  EXPECT_EQ(pod.process_count, 3u);

  ASSERT_TRUE(pod.network.has_value());  // through PID 500, the sandbox's
  EXPECT_EQ(pod.network->default_interface.name, "eth0");
  EXPECT_EQ(pod.network->default_interface.rx_bytes, 4321u);
  EXPECT_EQ(pod.network->default_interface.tx_bytes, 1234u);
  EXPECT_EQ(pod.network->default_interface.tx_errors, 1u);
  ASSERT_EQ(pod.network->interfaces.size(), 1u);

  ASSERT_EQ(pod.containers.size(), 2u);
  const ContainerStats* app = container(*summary, "app");
  ASSERT_NE(app, nullptr);
  EXPECT_EQ(app->start_time, TimePoint(std::chrono::seconds(1'700'000'200)));
  ASSERT_TRUE(app->cpu.has_value());
  EXPECT_EQ(app->cpu->usage_core_nano_seconds, 1'500'000'000u);  // the cgroup, not the runtime
  ASSERT_TRUE(app->memory.has_value());
  EXPECT_EQ(app->memory->working_set_bytes, 150'000u);
  EXPECT_FALSE(app->memory->available_bytes.has_value());  // no limit
  ASSERT_TRUE(app->rootfs.has_value());
  EXPECT_EQ(app->rootfs->used_bytes, 20'000u);  // the writable layer
  EXPECT_TRUE(app->rootfs->capacity_bytes.has_value());
  ASSERT_TRUE(app->logs.has_value());
  EXPECT_GE(*app->logs->used_bytes, 5000u);
  EXPECT_EQ(app->logs->inodes_used, 2u);  // the directory and 0.log

  const ContainerStats* sidecar = container(*summary, "sidecar");
  ASSERT_NE(sidecar, nullptr);
  ASSERT_TRUE(sidecar->cpu.has_value());  // no cgroup: the runtime's figures
  EXPECT_EQ(sidecar->cpu->usage_core_nano_seconds, 700'000'000u);
  ASSERT_TRUE(sidecar->memory.has_value());
  EXPECT_EQ(sidecar->memory->working_set_bytes, 3'000u);
  EXPECT_EQ(sidecar->rootfs->used_bytes, 10'000u);

  ASSERT_EQ(pod.volumes.size(), 2u);
  EXPECT_EQ(pod.volumes[0].name, "config");
  EXPECT_EQ(pod.volumes[1].name, "cache");
  EXPECT_GE(*pod.volumes[1].fs.used_bytes, 8192u);
  EXPECT_EQ(pod.volumes[1].fs.inodes_used, 2u);
  EXPECT_TRUE(pod.volumes[1].fs.capacity_bytes.has_value());

  ASSERT_TRUE(pod.ephemeral_storage.has_value());
  DiskUsage logs = disk_usage(dir_.sub("logs/default_web_u1"));
  uint64_t volumes = *pod.volumes[0].fs.used_bytes + *pod.volumes[1].fs.used_bytes;
  EXPECT_EQ(pod.ephemeral_storage->used_bytes, 30'000u + logs.bytes + volumes);
  EXPECT_EQ(pod.ephemeral_storage->inodes_used,
            logs.inodes + *pod.volumes[0].fs.inodes_used + *pod.volumes[1].fs.inodes_used);

  // The image fs' used bytes are the images' (ImageFsInfo), not the whole filesystem's.
  EXPECT_EQ(summary->node.runtime->image_fs->used_bytes, 1u << 20);
  EXPECT_EQ(summary->node.runtime->image_fs->inodes_used, 1u);
  EXPECT_EQ(summary->node.runtime->container_fs->used_bytes, 1u << 20);
}

TEST_F(StatsProviderTest, WithoutTheRuntimeAContainerWithoutCgroupHasNoUsage) {
  CgroupStatsProvider provider(options_);
  auto summary = provider.summary(false);
  ASSERT_TRUE(summary.is_ok());
  const ContainerStats* sidecar = container(*summary, "sidecar");
  ASSERT_NE(sidecar, nullptr);
  EXPECT_FALSE(sidecar->cpu.has_value());
  EXPECT_FALSE(sidecar->memory.has_value());
  ASSERT_TRUE(sidecar->rootfs.has_value());
  EXPECT_FALSE(sidecar->rootfs->used_bytes.has_value());
}

TEST_F(StatsProviderTest, OnlyCpuAndMemory) {
  options_.runtime = &runtime_;
  options_.images = &runtime_;
  CgroupStatsProvider provider(options_);
  runtime_.clear_calls();
  auto summary = provider.summary(true);
  ASSERT_TRUE(summary.is_ok());
  EXPECT_TRUE(summary->node.cpu.has_value());
  EXPECT_TRUE(summary->node.memory.has_value());
  EXPECT_FALSE(summary->node.network.has_value());
  EXPECT_FALSE(summary->node.fs.has_value());
  EXPECT_FALSE(summary->node.runtime.has_value());
  EXPECT_FALSE(summary->node.rlimit.has_value());
  const PodStats& pod = summary->pods.at(0);
  EXPECT_TRUE(pod.cpu.has_value());
  EXPECT_TRUE(pod.memory.has_value());
  EXPECT_FALSE(pod.network.has_value());
  EXPECT_TRUE(pod.volumes.empty());
  EXPECT_FALSE(pod.ephemeral_storage.has_value());
  EXPECT_FALSE(pod.process_count.has_value());
  for (const ContainerStats& c : pod.containers) {
    EXPECT_TRUE(c.cpu.has_value()) << c.name;
    EXPECT_FALSE(c.rootfs.has_value()) << c.name;
    EXPECT_FALSE(c.logs.has_value()) << c.name;
  }
  // The runtime was asked once, for the container without a cgroup; ImageFsInfo not at all.
  EXPECT_EQ(runtime_.call_count("ListContainerStats"), 1);
  EXPECT_EQ(runtime_.call_count("ImageFsInfo"), 0);
}

TEST_F(StatsProviderTest, APodThatWentAwayIsReportedWithoutFigures) {
  options_.pods = [] {
    PodInfo gone;
    gone.uid = "u9";
    gone.namespace_name = "default";
    gone.name = "gone";
    gone.containers = {{"c9", "main", TimePoint()}};
    return std::vector<PodInfo>{gone};
  };
  CgroupStatsProvider provider(options_);
  auto summary = provider.summary(false);
  ASSERT_TRUE(summary.is_ok());
  const PodStats& pod = summary->pods.at(0);
  EXPECT_FALSE(pod.cpu.has_value());
  EXPECT_FALSE(pod.memory.has_value());
  EXPECT_FALSE(pod.network.has_value());
  EXPECT_TRUE(pod.volumes.empty());
  ASSERT_EQ(pod.containers.size(), 1u);
  EXPECT_FALSE(pod.containers[0].cpu.has_value());
}

TEST_F(StatsProviderTest, NodeStatsFallBackToProcWhereTheRootCgroupHasNone) {
  // cgroup v2: the root has cpu.stat on recent kernels but never memory.current.
  std::string unified = dir_.sub("unified");
  write_file(unified + "/cgroup.controllers", "cpu memory pids\n");
  options_.cgroup_mount = unified;
  CgroupStatsProvider provider(options_);
  auto summary = provider.summary(true);
  ASSERT_TRUE(summary.is_ok()) << summary.status().to_string();
  long hz = ::sysconf(_SC_CLK_TCK);
  // /proc/stat: user 1 + nice 2 + system 3 + irq 6 + softirq 7 + steal 8 ticks.
  EXPECT_EQ(summary->node.cpu->usage_core_nano_seconds,
            27u * (1'000'000'000u / static_cast<uint64_t>(hz)));
  // /proc/meminfo: usage = total - free, working set = usage - inactive file.
  EXPECT_EQ(summary->node.memory->usage_bytes, 14'000'000ull * 1024);
  EXPECT_EQ(summary->node.memory->working_set_bytes, 13'000'000ull * 1024);
  EXPECT_EQ(summary->node.memory->available_bytes, 3'000'000ull * 1024);
  EXPECT_EQ(summary->node.memory->rss_bytes, 3'000'000ull * 1024);
  EXPECT_EQ(summary->node.memory->page_faults, 1u);
}

TEST_F(StatsProviderTest, NodeFiguresMissingIsAnError) {
  options_.cgroup_mount = dir_.sub("nothing");
  options_.proc_root = dir_.sub("nothing");
  CgroupStatsProvider provider(options_);
  auto summary = provider.summary(false);
  EXPECT_EQ(summary.status().code(), StatusCode::kUnavailable);
  std::string metrics = resource_metrics(provider);
  EXPECT_NE(metrics.find("\nresource_scrape_error 1\n"), std::string::npos) << metrics;
  EXPECT_EQ(metrics.find("node_cpu_usage_seconds_total"), std::string::npos) << metrics;
}

TEST(PodsFromPodListTest, TakesRunningContainers) {
  auto list = nlohmann::json::parse(R"({
    "kind": "PodList", "apiVersion": "v1", "items": [
      {"metadata": {"name": "web", "namespace": "default", "uid": "u1",
                    "creationTimestamp": "2024-05-01T09:00:00Z"},
       "status": {"startTime": "2024-05-01T10:00:00Z",
         "initContainerStatuses": [
           {"name": "init", "containerID": "containerd://i1",
            "state": {"terminated": {"exitCode": 0}}}],
         "containerStatuses": [
           {"name": "app", "containerID": "containerd://c1",
            "state": {"running": {"startedAt": "2024-05-01T10:00:05Z"}}},
           {"name": "waiting", "state": {"waiting": {"reason": "ContainerCreating"}}},
           {"name": "plain", "containerID": "c2", "state": {"running": {}}}]}},
      {"metadata": {"name": "pending", "namespace": "kube-system", "uid": "u2",
                    "creationTimestamp": "2024-05-01T09:30:00Z"},
       "status": {"phase": "Pending"}},
      {"metadata": {"name": "etcd-node-1", "namespace": "kube-system", "uid": "mirror-uid",
                    "annotations": {"kubernetes.io/config.mirror": "static-uid"}},
       "status": {"startTime": "2024-05-01T08:00:00Z"}},
      {"metadata": {"name": "done", "namespace": "default", "uid": "u3"},
       "status": {"phase": "Succeeded"}},
      {"metadata": {"name": "no-uid"}}
    ]})");
  std::vector<PodInfo> pods = pods_from_pod_list(list);
  ASSERT_EQ(pods.size(), 3u);
  EXPECT_EQ(pods[2].name, "etcd-node-1");
  EXPECT_EQ(pods[2].uid, "static-uid");
  EXPECT_EQ(pods[0].uid, "u1");
  EXPECT_EQ(pods[0].namespace_name, "default");
  EXPECT_EQ(pods[0].name, "web");
  EXPECT_EQ(pods[0].start_time,
            TimePoint(std::chrono::seconds(parse_rfc3339("2024-05-01T10:00:00Z"))));
  ASSERT_EQ(pods[0].containers.size(), 2u);
  EXPECT_EQ(pods[0].containers[0].id, "c1");
  EXPECT_EQ(pods[0].containers[0].name, "app");
  EXPECT_EQ(pods[0].containers[0].start_time,
            TimePoint(std::chrono::seconds(parse_rfc3339("2024-05-01T10:00:05Z"))));
  EXPECT_EQ(pods[0].containers[1].id, "c2");
  EXPECT_EQ(pods[0].containers[1].start_time, pods[0].start_time);
  EXPECT_EQ(pods[1].name, "pending");
  EXPECT_EQ(pods[1].start_time,
            TimePoint(std::chrono::seconds(parse_rfc3339("2024-05-01T09:30:00Z"))));
  EXPECT_TRUE(pods[1].containers.empty());
  EXPECT_TRUE(pods_from_pod_list(nlohmann::json::object()).empty());
}

// The real host's node stats (reads only): the provider over /sys/fs/cgroup and /proc.
TEST(RealHostStatsTest, NodeStatsOfThisMachine) {
  skiff::testing::TempDir dir;
  StatsProviderOptions options;
  options.node_name = "this-host";
  options.node_fs_path = dir.path();
  options.pods = [] { return std::vector<PodInfo>{}; };
  options.cpu_sample_min_interval = 200ms;
  CgroupStatsProvider provider(options);
  auto first = provider.summary(false);
  ASSERT_TRUE(first.is_ok()) << first.status().to_string();
  const NodeStats& node = first->node;
  ASSERT_TRUE(node.cpu && node.cpu->usage_core_nano_seconds);
  EXPECT_GT(*node.cpu->usage_core_nano_seconds, 0u);
  ASSERT_TRUE(node.memory && node.memory->working_set_bytes && node.memory->available_bytes);
  EXPECT_GT(*node.memory->working_set_bytes, 0u);
  auto meminfo = HostReader("/proc").meminfo();
  ASSERT_TRUE(meminfo.is_ok());
  EXPECT_LT(*node.memory->available_bytes, meminfo->at("MemTotal"));
  EXPECT_EQ(*node.memory->available_bytes + *node.memory->working_set_bytes,
            meminfo->at("MemTotal"));
  ASSERT_TRUE(node.fs && node.fs->capacity_bytes);
  EXPECT_GT(*node.fs->capacity_bytes, 0u);
  ASSERT_TRUE(node.rlimit && node.rlimit->max_pid);
  EXPECT_GT(*node.rlimit->max_pid, 0);
  EXPECT_GT(node.start_time.time_since_epoch().count(), 0);
  EXPECT_TRUE(node.network.has_value());
  EXPECT_TRUE(first->pods.empty());

  std::this_thread::sleep_for(300ms);
  auto second = provider.summary(true);
  ASSERT_TRUE(second.is_ok()) << second.status().to_string();
  ASSERT_TRUE(second->node.cpu->usage_nano_cores.has_value());
  unsigned cpus = std::max(1u, std::thread::hardware_concurrency());
  // At most every CPU busy (with slack for the sampling instants).
  EXPECT_LE(*second->node.cpu->usage_nano_cores, uint64_t{cpus} * 1'200'000'000u);
  EXPECT_GE(*second->node.cpu->usage_core_nano_seconds, *node.cpu->usage_core_nano_seconds);

  // JSON of the real thing parses back with upstream's names.
  auto json = nlohmann::json::parse(to_json(*first).dump());
  EXPECT_EQ(json["node"]["nodeName"], "this-host");
  EXPECT_TRUE(json["node"]["memory"].contains("workingSetBytes"));
  EXPECT_TRUE(json["pods"].is_array());
}

}  // namespace
}  // namespace skiff::kubelet::stats
