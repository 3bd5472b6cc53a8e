#include <gtest/gtest.h>

#include "kubelet/stats/summary.h"

namespace skiff::kubelet::stats {
namespace {

TimePoint at(int64_t seconds) {
  return TimePoint(std::chrono::seconds(seconds));
}

FsStats fs(uint64_t used, TimePoint t) {
  FsStats s;
  s.time = t;
  s.available_bytes = 600;
  s.capacity_bytes = 1000;
  s.used_bytes = used;
  s.inodes_free = 60;
  s.inodes = 100;
  s.inodes_used = 4;
  return s;
}

// Field names, nesting, order and omissions as upstream's stats/v1alpha1 encodes them.
TEST(SummaryJsonTest, UpstreamsShape) {
  TimePoint t = at(1'714'557'600);  // 2024-05-01T10:00:00Z
  Summary s;
  NodeStats& n = s.node;
  n.node_name = "node-1";
  n.start_time = at(1'714'550'400);  // 08:00:00
  n.cpu = CpuStats{t, 250'000'000, 9'000'000'000};
  n.memory = MemoryStats{t, 100, 900, 800, 700, 5, 1};
  NetworkStats net;
  net.time = t;
  net.default_interface = {"eth0", 10, 0, 20, 1};
  net.interfaces = {{"eth0", 10, 0, 20, 1}, {"cni0", 30, 0, 40, 0}};
  n.network = net;
  n.fs = fs(400, t);
  n.runtime = RuntimeStats{fs(300, t), fs(300, t)};
  n.rlimit = RlimitStats{t, 4194304, 812};

  PodStats p;
  p.pod_ref = {"web", "default", "u1"};
  p.start_time = at(1'714'554'000);  // 09:00:00
  ContainerStats c;
  c.name = "app";
  c.start_time = at(1'714'554'005);
  c.cpu = CpuStats{t, std::nullopt, 42};  // no rate yet: left out
  c.memory = MemoryStats{t, std::nullopt, 9, 8, 7, 6, 5};
  c.rootfs = fs(11, t);
  c.logs = fs(12, t);
  p.containers.push_back(c);
  p.cpu = CpuStats{t, 1, 2};
  p.memory = MemoryStats{t, 1, 2, 3, 4, 5, 6};
  NetworkStats pod_net;
  pod_net.time = t;
  pod_net.default_interface = {"eth0", 1, 2, 3, 4};
  pod_net.interfaces = {{"eth0", 1, 2, 3, 4}};
  p.network = pod_net;
  p.volumes.push_back(VolumeStats{fs(13, t), "cache"});
  p.ephemeral_storage = fs(14, t);
  p.process_count = 3;
  s.pods.push_back(p);

  PodStats bare;
  bare.pod_ref = {"new", "default", "u2"};
  bare.start_time = t;
  s.pods.push_back(bare);

  std::string fs400 =
      R"("time":"2024-05-01T10:00:00Z","availableBytes":600,"capacityBytes":1000,"usedBytes":400,"inodesFree":60,"inodes":100,"inodesUsed":4)";
  auto fs_with = [](int used) {
    return std::string(
               R"("time":"2024-05-01T10:00:00Z","availableBytes":600,"capacityBytes":1000,"usedBytes":)") +
           std::to_string(used) + R"(,"inodesFree":60,"inodes":100,"inodesUsed":4)";
  };
  std::string expected =
      std::string(R"({"node":{"nodeName":"node-1","startTime":"2024-05-01T08:00:00Z",)") +
      R"("cpu":{"time":"2024-05-01T10:00:00Z","usageNanoCores":250000000,"usageCoreNanoSeconds":9000000000},)" +
      R"("memory":{"time":"2024-05-01T10:00:00Z","availableBytes":100,"usageBytes":900,"workingSetBytes":800,"rssBytes":700,"pageFaults":5,"majorPageFaults":1},)" +
      R"("network":{"time":"2024-05-01T10:00:00Z","name":"eth0","rxBytes":10,"rxErrors":0,"txBytes":20,"txErrors":1,)" +
      R"("interfaces":[{"name":"eth0","rxBytes":10,"rxErrors":0,"txBytes":20,"txErrors":1},{"name":"cni0","rxBytes":30,"rxErrors":0,"txBytes":40,"txErrors":0}]},)" +
      R"("fs":{)" + fs400 + "}," + R"("runtime":{"imageFs":{)" + fs_with(300) +
      R"(},"containerFs":{)" + fs_with(300) + "}}," +
      R"("rlimit":{"time":"2024-05-01T10:00:00Z","maxpid":4194304,"curproc":812}},)" +
      R"("pods":[{"podRef":{"name":"web","namespace":"default","uid":"u1"},"startTime":"2024-05-01T09:00:00Z",)" +
      R"("containers":[{"name":"app","startTime":"2024-05-01T09:00:05Z",)" +
      R"("cpu":{"time":"2024-05-01T10:00:00Z","usageCoreNanoSeconds":42},)" +
      R"("memory":{"time":"2024-05-01T10:00:00Z","usageBytes":9,"workingSetBytes":8,"rssBytes":7,"pageFaults":6,"majorPageFaults":5},)" +
      R"("rootfs":{)" + fs_with(11) + R"(},"logs":{)" + fs_with(12) + "}}]," +
      R"("cpu":{"time":"2024-05-01T10:00:00Z","usageNanoCores":1,"usageCoreNanoSeconds":2},)" +
      R"("memory":{"time":"2024-05-01T10:00:00Z","availableBytes":1,"usageBytes":2,"workingSetBytes":3,"rssBytes":4,"pageFaults":5,"majorPageFaults":6},)" +
      R"("network":{"time":"2024-05-01T10:00:00Z","name":"eth0","rxBytes":1,"rxErrors":2,"txBytes":3,"txErrors":4,"interfaces":[{"name":"eth0","rxBytes":1,"rxErrors":2,"txBytes":3,"txErrors":4}]},)" +
      R"("volume":[{)" + fs_with(13) + R"(,"name":"cache"}],)" + R"("ephemeral-storage":{)" +
      fs_with(14) + "}," + R"("process_stats":{"process_count":3}},)" +
      R"({"podRef":{"name":"new","namespace":"default","uid":"u2"},"startTime":"2024-05-01T10:00:00Z","containers":[]}]})";
  EXPECT_EQ(to_json(s).dump(), expected);
}

TEST(SummaryJsonTest, NetworkWithoutADefaultInterfaceHasAnEmptyName) {
  Summary s;
  NetworkStats net;
  net.interfaces = {{"ens4", 1, 0, 2, 0}};
  s.node.network = net;
  auto j = to_json(s);
  EXPECT_EQ(j["node"]["network"]["name"], "");
  EXPECT_FALSE(j["node"]["network"].contains("rxBytes"));
  EXPECT_EQ(j["node"]["network"]["interfaces"][0]["name"], "ens4");
  EXPECT_TRUE(j["pods"].is_array());
  EXPECT_FALSE(j["node"].contains("cpu"));
}

}  // namespace
}  // namespace skiff::kubelet::stats
