#include "kubelet/stats/readers.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "kubelet/stats/fake_tree.h"
#include "support/temp_dir.h"

namespace skiff::kubelet::stats {
namespace {

using testing::FakeCgroupV1;
using testing::write_file;

TEST(NetDevTest, ParsesTheKernelsFormat) {
  std::string text = testing::net_dev(
      "    lo: 1000 5 0 0 0 0 0 0 1000 5 0 0 0 0 0 0\n"
      "  eth0:123456789 100 2 0 0 0 0 0 987654 200 3 0 0 0 0 0\n" +
      testing::net_dev_line("veth1234", 7, 0, 8, 0));
  auto parsed = parse_net_dev(text);
  ASSERT_TRUE(parsed.is_ok()) << parsed.status().to_string();
  ASSERT_EQ(parsed->size(), 3u);
  EXPECT_EQ((*parsed)[0].name, "lo");
  EXPECT_EQ((*parsed)[1].name, "eth0");
  EXPECT_EQ((*parsed)[1].rx_bytes, 123456789u);
  EXPECT_EQ((*parsed)[1].rx_errors, 2u);
  EXPECT_EQ((*parsed)[1].tx_bytes, 987654u);
  EXPECT_EQ((*parsed)[1].tx_errors, 3u);
  EXPECT_EQ((*parsed)[2].name, "veth1234");
  EXPECT_EQ((*parsed)[2].tx_bytes, 8u);

  EXPECT_FALSE(parse_net_dev("  eth0: 1 2 3\n").is_ok());
  EXPECT_FALSE(parse_net_dev("  eth0: x 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n").is_ok());
  EXPECT_FALSE(parse_net_dev("garbage\n").is_ok());
  auto empty = parse_net_dev(testing::net_dev(""));
  ASSERT_TRUE(empty.is_ok());
  EXPECT_TRUE(empty->empty());
}

TEST(NetDevTest, IgnoredInterfacesAreUpstreams) {
  EXPECT_TRUE(ignored_interface("lo"));
  EXPECT_TRUE(ignored_interface("veth0a1b2c"));
  EXPECT_TRUE(ignored_interface("docker0"));
  EXPECT_FALSE(ignored_interface("eth0"));
  EXPECT_FALSE(ignored_interface("cni0"));
  EXPECT_FALSE(ignored_interface("ens4"));
}

TEST(CgroupReaderTest, ReadsCgroupV1Hierarchies) {
  skiff::testing::TempDir dir;
  FakeCgroupV1 tree(dir.sub("cgroup"));
  tree.set_cpu("/", 5'000'000'000);
  tree.set_cpu("/skiff/podu1", 1'500'000'000);
  tree.set_memory("/skiff/podu1", 10'000, 3'000, 6'000, 70, 7, 50'000);
  tree.set_memory("/skiff/podu1/c1", 9'000, 10'000, 5'000, 60, 6, testing::kV1NoLimit);
  tree.set_pids("/skiff/podu1", 4);
  tree.set_procs("/skiff/podu1", "");
  tree.set_procs("/skiff/podu1/sandbox", "");
  tree.set_procs("/skiff/podu1/c1", "4242\n4243\n");

  CgroupReader reader(tree.root());
  EXPECT_EQ(reader.version(), CgroupVersion::kV1);
  EXPECT_TRUE(reader.exists("/skiff/podu1"));
  EXPECT_FALSE(reader.exists("/skiff/podu2"));

  auto root_cpu = reader.cpu_usage("/");
  ASSERT_TRUE(root_cpu.is_ok()) << root_cpu.status().to_string();
  EXPECT_EQ(*root_cpu, 5'000'000'000u);
  EXPECT_EQ(*reader.cpu_usage("/skiff/podu1"), 1'500'000'000u);
  EXPECT_EQ(reader.cpu_usage("/skiff/podu2").status().code(), StatusCode::kNotFound);

  auto pod = reader.memory("/skiff/podu1");
  ASSERT_TRUE(pod.is_ok()) << pod.status().to_string();
  EXPECT_EQ(pod->usage_bytes, 10'000u);
  EXPECT_EQ(pod->working_set_bytes, 7'000u);
  EXPECT_EQ(pod->rss_bytes, 6'000u);
  EXPECT_EQ(pod->page_faults, 70u);  // the hierarchical figure
  EXPECT_EQ(pod->major_page_faults, 7u);
  ASSERT_TRUE(pod->limit_bytes.has_value());
  EXPECT_EQ(*pod->limit_bytes, 50'000u);

  auto container = reader.memory("/skiff/podu1/c1");
  ASSERT_TRUE(container.is_ok());
  EXPECT_EQ(container->working_set_bytes, 0u);  // inactive file above usage
  EXPECT_FALSE(container->limit_bytes.has_value());
  EXPECT_EQ(reader.memory("/skiff/podu2").status().code(), StatusCode::kNotFound);

  EXPECT_EQ(*reader.pids_current("/skiff/podu1"), 4u);
  EXPECT_EQ(reader.any_pid("/skiff/podu1"), 4242);
  EXPECT_EQ(reader.any_pid("/skiff/podu2"), std::nullopt);

  write_file(tree.root() + "/cpuacct/skiff/podu3/cpuacct.usage", "garbage");
  EXPECT_EQ(reader.cpu_usage("/skiff/podu3").status().code(), StatusCode::kDataLoss);
}

TEST(CgroupReaderTest, ReadsTheUnifiedHierarchy) {
  skiff::testing::TempDir dir;
  std::string root = dir.sub("cgroup");
  write_file(root + "/cgroup.controllers", "cpuset cpu io memory pids\n");
  write_file(root + "/cpu.stat", "usage_usec 9000000\nuser_usec 1\nsystem_usec 2\n");
  std::string pod = root + "/skiff/podu1";
  write_file(pod + "/cpu.stat", "usage_usec 2500\nuser_usec 2000\nsystem_usec 500\n");
  write_file(pod + "/memory.current", "8192\n");
  write_file(pod + "/memory.stat",
             "anon 4096\nfile 4096\ninactive_file 1024\npgfault 11\npgmajfault 1\n");
  write_file(pod + "/memory.max", "max\n");
  write_file(pod + "/pids.current", "3\n");
  write_file(pod + "/c1/cgroup.procs", "77\n");
  write_file(pod + "/c1/memory.current", "4096\n");
  write_file(pod + "/c1/memory.stat", "anon 2048\ninactive_file 0\n");
  write_file(pod + "/c1/memory.max", "16384\n");

  CgroupReader reader(root);
  EXPECT_EQ(reader.version(), CgroupVersion::kV2);
  EXPECT_EQ(*reader.cpu_usage("/"), 9'000'000'000u);
  EXPECT_EQ(*reader.cpu_usage("/skiff/podu1"), 2'500'000u);
  auto m = reader.memory("/skiff/podu1");
  ASSERT_TRUE(m.is_ok()) << m.status().to_string();
  EXPECT_EQ(m->usage_bytes, 8192u);
  EXPECT_EQ(m->working_set_bytes, 7168u);
  EXPECT_EQ(m->rss_bytes, 4096u);
  EXPECT_EQ(m->page_faults, 11u);
  EXPECT_EQ(m->major_page_faults, 1u);
  EXPECT_FALSE(m->limit_bytes.has_value());
  auto c = reader.memory("/skiff/podu1/c1");
  ASSERT_TRUE(c.is_ok());
  EXPECT_EQ(c->limit_bytes, 16384u);
  EXPECT_EQ(*reader.pids_current("/skiff/podu1"), 3u);
  EXPECT_EQ(reader.any_pid("/skiff/podu1"), 77);
  // The root has no memory.current.
  EXPECT_EQ(reader.memory("/").status().code(), StatusCode::kNotFound);
}

TEST(HostReaderTest, ReadsProcFiles) {
  skiff::testing::TempDir dir;
  std::string proc = dir.sub("proc");
  write_file(proc + "/meminfo",
             "MemTotal:       16000 kB\nMemFree:         4000 kB\nMemAvailable:    9000 kB\n"
             "Inactive(file):  2000 kB\nAnonPages:       3000 kB\nHugePages_Total:       0\n");
  write_file(proc + "/stat",
             "cpu  100 5 50 1000 20 3 2 1 0 0\ncpu0 100 5 50 1000 20 3 2 1 0 0\n"
             "intr 12345\nctxt 999\nbtime 1700000000\nprocesses 4242\n");
  write_file(proc + "/vmstat", "nr_free_pages 1\npgfault 5555\npgmajfault 66\n");
  write_file(proc + "/sys/kernel/pid_max", "4194304\n");
  write_file(proc + "/loadavg", "0.52 0.58 0.59 3/812 12345\n");
  write_file(proc + "/net/route",
             "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
             "ens4\t0000FEA9\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n"
             "ens5\t00000000\t0100000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n");
  write_file(proc + "/net/dev", testing::net_dev(testing::net_dev_line("ens5", 1, 2, 3, 4)));
  write_file(proc + "/321/net/dev", testing::net_dev(testing::net_dev_line("eth0", 9, 0, 8, 0)));

  HostReader host(proc);
  auto mem = host.meminfo();
  ASSERT_TRUE(mem.is_ok()) << mem.status().to_string();
  EXPECT_EQ(mem->at("MemTotal"), 16000u * 1024);
  EXPECT_EQ(mem->at("Inactive(file)"), 2000u * 1024);
  EXPECT_EQ(mem->at("HugePages_Total"), 0u);
  EXPECT_EQ(*host.boot_time(), 1700000000);
  long hz = ::sysconf(_SC_CLK_TCK);
  // user + nice + system + irq + softirq + steal, in ticks.
  EXPECT_EQ(*host.cpu_busy_nanos(), 161u * (1'000'000'000u / static_cast<uint64_t>(hz)));
  EXPECT_EQ(host.page_faults()->first, 5555u);
  EXPECT_EQ(host.page_faults()->second, 66u);
  EXPECT_EQ(*host.pid_max(), 4194304);
  EXPECT_EQ(*host.task_count(), 812);
  EXPECT_EQ(host.default_route_interface(), "ens5");
  auto node = host.node_interfaces();
  ASSERT_TRUE(node.is_ok());
  ASSERT_EQ(node->size(), 1u);
  EXPECT_EQ((*node)[0].name, "ens5");
  auto pod = host.process_interfaces(321);
  ASSERT_TRUE(pod.is_ok());
  EXPECT_EQ((*pod)[0].rx_bytes, 9u);
  EXPECT_EQ(host.process_interfaces(322).status().code(), StatusCode::kNotFound);

  HostReader empty(dir.sub("none"));
  EXPECT_FALSE(empty.meminfo().is_ok());
  EXPECT_FALSE(empty.boot_time().is_ok());
  EXPECT_EQ(empty.default_route_interface(), "");
}

TEST(FilesystemTest, DiskUsageCountsEachInodeOnceAndFollowsNoLinks) {
  skiff::testing::TempDir dir;
  std::string root = dir.sub("tree");
  write_file(root + "/a", std::string(10000, 'a'));
  write_file(root + "/sub/b", std::string(5000, 'b'));
  std::filesystem::create_hard_link(root + "/a", root + "/sub/a-again");
  write_file(dir.sub("outside/big"), std::string(1 << 20, 'x'));
  std::filesystem::create_symlink(dir.sub("outside"), root + "/link");

  DiskUsage usage = disk_usage(root);
  // tree, a, sub, b, link (the hard link is the same inode as a).
  EXPECT_EQ(usage.inodes, 5u);
  EXPECT_GE(usage.bytes, 15000u);
  EXPECT_LT(usage.bytes, 1u << 20);  // the symlinked megabyte is not counted
  DiskUsage file = disk_usage(root + "/a");
  EXPECT_EQ(file.inodes, 1u);
  EXPECT_GE(file.bytes, 10000u);
  DiskUsage missing = disk_usage(dir.sub("missing"));
  EXPECT_EQ(missing.inodes, 0u);
  EXPECT_EQ(missing.bytes, 0u);
}

TEST(FilesystemTest, FilesystemInfoIsStatvfs) {
  skiff::testing::TempDir dir;
  auto info = filesystem_info(dir.path());
  ASSERT_TRUE(info.is_ok()) << info.status().to_string();
  EXPECT_GT(info->capacity_bytes, 0u);
  EXPECT_LE(info->available_bytes, info->capacity_bytes);
  EXPECT_LE(info->used_bytes, info->capacity_bytes);
  EXPECT_LE(info->inodes_free, info->inodes);
  EXPECT_EQ(filesystem_info(dir.sub("missing")).status().code(), StatusCode::kNotFound);
}

// The real host: readable without privileges.
TEST(RealHostTest, ReadsTheNodesFigures) {
  CgroupReader cgroups("/sys/fs/cgroup");
  HostReader host("/proc");
  auto mem = host.meminfo();
  ASSERT_TRUE(mem.is_ok()) << mem.status().to_string();
  EXPECT_GT(mem->at("MemTotal"), 64u << 20);
  auto boot = host.boot_time();
  ASSERT_TRUE(boot.is_ok());
  EXPECT_GT(*boot, 1'000'000'000);
  EXPECT_LT(*boot, ::time(nullptr));
  EXPECT_GT(*host.pid_max(), 0);
  EXPECT_GT(*host.task_count(), 0);
  auto interfaces = host.node_interfaces();
  ASSERT_TRUE(interfaces.is_ok()) << interfaces.status().to_string();
  bool have_lo = false;
  for (const InterfaceCounters& i : *interfaces) have_lo |= i.name == "lo";
  EXPECT_TRUE(have_lo);
  auto self = host.process_interfaces(static_cast<int>(::getpid()));
  ASSERT_TRUE(self.is_ok());
  EXPECT_EQ(self->size(), interfaces->size());

  // CPU: the root cgroup's counter, or /proc/stat where the root has none; it only grows.
  auto first = cgroups.cpu_usage("/");
  if (!first.is_ok()) first = host.cpu_busy_nanos();
  ASSERT_TRUE(first.is_ok()) << first.status().to_string();
  EXPECT_GT(*first, 0u);
  volatile uint64_t spin = 0;
  for (int i = 0; i < 10'000'000; ++i) spin = spin + i;
  auto second = cgroups.cpu_usage("/");
  if (!second.is_ok()) second = host.cpu_busy_nanos();
  ASSERT_TRUE(second.is_ok());
  EXPECT_GE(*second, *first);

  if (cgroups.version() == CgroupVersion::kV1) {
    auto root = cgroups.memory("/");
    ASSERT_TRUE(root.is_ok()) << root.status().to_string();
    EXPECT_GT(root->usage_bytes, 0u);
    EXPECT_LE(root->working_set_bytes, root->usage_bytes);
    EXPECT_GT(root->rss_bytes, 0u);
    EXPECT_GT(root->page_faults, 0u);
  }
  auto fs = filesystem_info("/");
  ASSERT_TRUE(fs.is_ok());
  EXPECT_GT(fs->capacity_bytes, 0u);
}

}  // namespace
}  // namespace skiff::kubelet::stats
