#include "kubelet/stats/summary.h"

#include "base/time.h"

namespace skiff::kubelet::stats {
namespace {

using Json = nlohmann::ordered_json;

std::string time_text(TimePoint t) {
  return rfc3339(std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count());
}

template <typename T>
void put(Json& out, const char* key, const std::optional<T>& value) {
  if (value) out[key] = *value;
}

Json cpu_json(const CpuStats& s) {
  Json j = Json::object();
  j["time"] = time_text(s.time);
  put(j, "usageNanoCores", s.usage_nano_cores);
  put(j, "usageCoreNanoSeconds", s.usage_core_nano_seconds);
  return j;
}

Json memory_json(const MemoryStats& s) {
  Json j = Json::object();
  j["time"] = time_text(s.time);
  put(j, "availableBytes", s.available_bytes);
  put(j, "usageBytes", s.usage_bytes);
  put(j, "workingSetBytes", s.working_set_bytes);
  put(j, "rssBytes", s.rss_bytes);
  put(j, "pageFaults", s.page_faults);
  put(j, "majorPageFaults", s.major_page_faults);
  return j;
}

void put_interface(Json& j, const InterfaceStats& s) {
  j["name"] = s.name;
  put(j, "rxBytes", s.rx_bytes);
  put(j, "rxErrors", s.rx_errors);
  put(j, "txBytes", s.tx_bytes);
  put(j, "txErrors", s.tx_errors);
}

Json network_json(const NetworkStats& s) {
  Json j = Json::object();
  j["time"] = time_text(s.time);
  put_interface(j, s.default_interface);
  if (!s.interfaces.empty()) {
    Json list = Json::array();
    for (const InterfaceStats& i : s.interfaces) {
      Json one = Json::object();
      put_interface(one, i);
      list.push_back(std::move(one));
    }
    j["interfaces"] = std::move(list);
  }
  return j;
}

void put_fs(Json& j, const FsStats& s) {
  j["time"] = time_text(s.time);
  put(j, "availableBytes", s.available_bytes);
  put(j, "capacityBytes", s.capacity_bytes);
  put(j, "usedBytes", s.used_bytes);
  put(j, "inodesFree", s.inodes_free);
  put(j, "inodes", s.inodes);
  put(j, "inodesUsed", s.inodes_used);
}

Json fs_json(const FsStats& s) {
  Json j = Json::object();
  put_fs(j, s);
  return j;
}

Json container_json(const ContainerStats& s) {
  Json j = Json::object();
  j["name"] = s.name;
  j["startTime"] = time_text(s.start_time);
  if (s.cpu) j["cpu"] = cpu_json(*s.cpu);
  if (s.memory) j["memory"] = memory_json(*s.memory);
  if (s.rootfs) j["rootfs"] = fs_json(*s.rootfs);
  if (s.logs) j["logs"] = fs_json(*s.logs);
  return j;
}

Json pod_json(const PodStats& s) {
  Json j = Json::object();
  j["podRef"] = Json{
      {"name", s.pod_ref.name}, {"namespace", s.pod_ref.namespace_name}, {"uid", s.pod_ref.uid}};
  j["startTime"] = time_text(s.start_time);
  Json containers = Json::array();
  for (const ContainerStats& c : s.containers) containers.push_back(container_json(c));
  j["containers"] = std::move(containers);
  if (s.cpu) j["cpu"] = cpu_json(*s.cpu);
  if (s.memory) j["memory"] = memory_json(*s.memory);
  if (s.network) j["network"] = network_json(*s.network);
  if (!s.volumes.empty()) {
    Json volumes = Json::array();
    for (const VolumeStats& v : s.volumes) {
      Json one = Json::object();
      put_fs(one, v.fs);
      if (!v.name.empty()) one["name"] = v.name;
      volumes.push_back(std::move(one));
    }
    j["volume"] = std::move(volumes);
  }
  if (s.ephemeral_storage) j["ephemeral-storage"] = fs_json(*s.ephemeral_storage);
  if (s.process_count) j["process_stats"] = Json{{"process_count", *s.process_count}};
  return j;
}

}  // namespace

nlohmann::ordered_json to_json(const Summary& summary) {
  const NodeStats& n = summary.node;
  Json node = Json::object();
  node["nodeName"] = n.node_name;
  node["startTime"] = time_text(n.start_time);
  if (n.cpu) node["cpu"] = cpu_json(*n.cpu);
  if (n.memory) node["memory"] = memory_json(*n.memory);
  if (n.network) node["network"] = network_json(*n.network);
  if (n.fs) node["fs"] = fs_json(*n.fs);
  if (n.runtime) {
    Json runtime = Json::object();
    if (n.runtime->image_fs) runtime["imageFs"] = fs_json(*n.runtime->image_fs);
    if (n.runtime->container_fs) runtime["containerFs"] = fs_json(*n.runtime->container_fs);
    node["runtime"] = std::move(runtime);
  }
  if (n.rlimit) {
    Json rlimit = Json::object();
    rlimit["time"] = time_text(n.rlimit->time);
    put(rlimit, "maxpid", n.rlimit->max_pid);
    put(rlimit, "curproc", n.rlimit->num_of_running_processes);
    node["rlimit"] = std::move(rlimit);
  }
  Json pods = Json::array();
  for (const PodStats& p : summary.pods) pods.push_back(pod_json(p));
  Json out = Json::object();
  out["node"] = std::move(node);
  out["pods"] = std::move(pods);
  return out;
}

}  // namespace skiff::kubelet::stats
