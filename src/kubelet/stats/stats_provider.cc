#include "kubelet/stats/stats_provider.h"

#include <dirent.h>

#include <algorithm>
#include <cstdint>
#include <utility>

#include "base/log.h"

namespace skiff::kubelet::stats {

namespace v1 = ::runtime::v1;

namespace {

using Json = nlohmann::json;
using std::chrono::nanoseconds;

// CPU samples of cgroups not seen for this long (gone pods and containers) are dropped.
constexpr auto kCpuSampleRetention = std::chrono::minutes(5);

const Json& member(const Json& j, const char* key) {
  static const Json kNull;
  if (!j.is_object()) return kNull;
  auto it = j.find(key);
  return it == j.end() ? kNull : *it;
}

std::string text(const Json& j, const char* key) {
  const Json& v = member(j, key);
  return v.is_string() ? v.get<std::string>() : "";
}

std::optional<TimePoint> time_of(const std::string& rfc3339_text) {
  if (rfc3339_text.empty()) return std::nullopt;
  int64_t seconds = parse_rfc3339(rfc3339_text);
  if (seconds < 0) return std::nullopt;
  return TimePoint(std::chrono::seconds(seconds));
}

std::vector<std::string> subdirectories(const std::string& dir) {
  std::vector<std::string> out;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return out;
  while (dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    if (e->d_type == DT_DIR || e->d_type == DT_UNKNOWN) out.push_back(name);
  }
  ::closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

FsStats fs_stats(const FilesystemInfo& info, TimePoint at) {
  FsStats s;
  s.time = at;
  s.available_bytes = info.available_bytes;
  s.capacity_bytes = info.capacity_bytes;
  s.inodes_free = info.inodes_free;
  s.inodes = info.inodes;
  return s;
}

MemoryStats memory_stats(const CgroupMemory& m, TimePoint at) {
  MemoryStats s;
  s.time = at;
  if (m.limit_bytes) {
    s.available_bytes =
        *m.limit_bytes > m.working_set_bytes ? *m.limit_bytes - m.working_set_bytes : 0;
  }
  s.usage_bytes = m.usage_bytes;
  s.working_set_bytes = m.working_set_bytes;
  s.rss_bytes = m.rss_bytes;
  s.page_faults = m.page_faults;
  s.major_page_faults = m.major_page_faults;
  return s;
}

// Interfaces other than the ignored ones; the default is `preferred` when present, else
// `fallback` when present.
NetworkStats network_stats(const std::vector<InterfaceCounters>& counters, TimePoint at,
                           const std::string& preferred, const std::string& fallback) {
  NetworkStats s;
  s.time = at;
  const InterfaceStats* chosen_fallback = nullptr;
  for (const InterfaceCounters& c : counters) {
    if (ignored_interface(c.name)) continue;
    InterfaceStats i;
    i.name = c.name;
    i.rx_bytes = c.rx_bytes;
    i.rx_errors = c.rx_errors;
    i.tx_bytes = c.tx_bytes;
    i.tx_errors = c.tx_errors;
    s.interfaces.push_back(std::move(i));
  }
  for (const InterfaceStats& i : s.interfaces) {
    if (i.name == preferred) {
      s.default_interface = i;
      return s;
    }
    if (!fallback.empty() && i.name == fallback) chosen_fallback = &i;
  }
  if (chosen_fallback != nullptr) s.default_interface = *chosen_fallback;
  return s;
}

std::optional<uint64_t> wrapped(const v1::UInt64Value& v, bool present) {
  if (!present) return std::nullopt;
  return v.value();
}

}  // namespace

// What the runtime reports, fetched at most once per summary and only when needed.
struct CgroupStatsProvider::RuntimeFigures {
  cri::RuntimeService* runtime = nullptr;
  bool fetched = false;
  std::map<std::string, v1::ContainerStats> by_id;

  const v1::ContainerStats* find(const std::string& id) {
    if (runtime == nullptr) return nullptr;
    if (!fetched) {
      fetched = true;
      auto listed = runtime->list_container_stats(v1::ContainerStatsFilter());
      if (listed.is_ok()) {
        for (v1::ContainerStats& s : *listed) {
          std::string key = s.attributes().id();
          by_id.emplace(std::move(key), std::move(s));
        }
      } else {
        SKIFF_LOG_WARN("kubelet stats: ListContainerStats: {}", listed.status().to_string());
      }
    }
    auto it = by_id.find(id);
    return it == by_id.end() ? nullptr : &it->second;
  }
};

std::vector<PodInfo> pods_from_pod_list(const nlohmann::json& pod_list) {
  std::vector<PodInfo> out;
  const Json& items = member(pod_list, "items");
  if (!items.is_array()) return out;
  for (const Json& pod : items) {
    const Json& meta = member(pod, "metadata");
    const Json& status = member(pod, "status");
    PodInfo info;
    info.uid = text(meta, "uid");
    // A static pod's mirror: what runs (cgroup, volumes, logs) is the static pod, by its own UID.
    if (std::string mirror = text(member(meta, "annotations"), "kubernetes.io/config.mirror");
        !mirror.empty()) {
      info.uid = mirror;
    }
    info.namespace_name = text(meta, "namespace");
    info.name = text(meta, "name");
    if (info.uid.empty()) continue;
    // Finished pods have nothing running left to measure.
    if (std::string phase = text(status, "phase"); phase == "Succeeded" || phase == "Failed") {
      continue;
    }
    std::optional<TimePoint> start = time_of(text(status, "startTime"));
    if (!start) start = time_of(text(meta, "creationTimestamp"));
    info.start_time = start.value_or(TimePoint());
    for (const char* list : {"initContainerStatuses", "containerStatuses"}) {
      const Json& statuses = member(status, list);
      if (!statuses.is_array()) continue;
      for (const Json& cs : statuses) {
        const Json& running = member(member(cs, "state"), "running");
        std::string id = text(cs, "containerID");
        if (!running.is_object() || id.empty()) continue;
        if (size_t scheme = id.find("://"); scheme != std::string::npos) id.erase(0, scheme + 3);
        ContainerInfo c;
        c.id = id;
        c.name = text(cs, "name");
        c.start_time = time_of(text(running, "startedAt")).value_or(info.start_time);
        info.containers.push_back(std::move(c));
      }
    }
    out.push_back(std::move(info));
  }
  return out;
}

CgroupStatsProvider::CgroupStatsProvider(StatsProviderOptions options)
    : options_(std::move(options)), cgroups_(options_.cgroup_mount), host_(options_.proc_root) {}

CgroupStatsProvider::~CgroupStatsProvider() {
  stop();
}

void CgroupStatsProvider::start() {
  std::lock_guard lock(mu_);
  if (housekeeping_.joinable()) return;
  stopping_ = false;
  housekeeping_ = std::thread([this] { housekeeping_loop(); });
}

void CgroupStatsProvider::stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (housekeeping_.joinable()) housekeeping_.join();
}

void CgroupStatsProvider::housekeeping_loop() {
  while (true) {
    sample_cpu();
    std::unique_lock lock(mu_);
    if (cv_.wait_for(lock, options_.housekeeping_interval, [this] { return stopping_; })) return;
  }
}

void CgroupStatsProvider::sample_cpu() {
  (void)node_cpu();
  std::vector<PodInfo> pods = options_.pods ? options_.pods() : std::vector<PodInfo>{};
  for (const PodInfo& pod : pods) {
    std::string pod_path = pod_cgroup(pod);
    if (pod_path.empty()) continue;
    (void)cgroup_cpu(pod_path);
    for (const ContainerInfo& c : pod.containers) (void)cgroup_cpu(pod_path + "/" + c.id);
  }
  prune_cpu(options_.clock->now());
}

std::optional<uint64_t> CgroupStatsProvider::observe_cpu(const std::string& key, uint64_t usage,
                                                         TimePoint at) {
  std::lock_guard lock(mu_);
  auto [it, inserted] = cpu_.try_emplace(key);
  CpuEntry& e = it->second;
  e.seen = at;
  if (inserted || usage < e.usage) {
    // First sample, or the counter went back (a new cgroup under the same name).
    e.usage = usage;
    e.sampled = at;
    e.nano_cores.reset();
    return std::nullopt;
  }
  auto elapsed = std::chrono::duration_cast<nanoseconds>(at - e.sampled);
  if (elapsed.count() > 0 && elapsed >= options_.cpu_sample_min_interval) {
    long double rate = static_cast<long double>(usage - e.usage) * 1e9L /
                       static_cast<long double>(elapsed.count());
    e.nano_cores = static_cast<uint64_t>(rate);
    e.usage = usage;
    e.sampled = at;
  }
  return e.nano_cores;
}

void CgroupStatsProvider::prune_cpu(TimePoint now) {
  std::lock_guard lock(mu_);
  for (auto it = cpu_.begin(); it != cpu_.end();) {
    if (now - it->second.seen > kCpuSampleRetention) {
      it = cpu_.erase(it);
    } else {
      ++it;
    }
  }
}

std::string CgroupStatsProvider::pod_cgroup(const PodInfo& pod) const {
  if (options_.cgroup_root.empty()) return "";
  std::string root = options_.cgroup_root;
  if (root.front() != '/') root.insert(root.begin(), '/');
  while (root.size() > 1 && root.back() == '/') root.pop_back();
  return (root == "/" ? "" : root) + "/pod" + pod.uid;
}

std::optional<CpuStats> CgroupStatsProvider::cgroup_cpu(const std::string& path) {
  Result<uint64_t> usage = cgroups_.cpu_usage(path);
  if (!usage.is_ok()) return std::nullopt;
  CpuStats s;
  s.time = options_.clock->now();
  s.usage_core_nano_seconds = *usage;
  s.usage_nano_cores = observe_cpu(path, *usage, s.time);
  return s;
}

std::optional<MemoryStats> CgroupStatsProvider::cgroup_memory(const std::string& path) {
  Result<CgroupMemory> m = cgroups_.memory(path);
  if (!m.is_ok()) return std::nullopt;
  return memory_stats(*m, options_.clock->now());
}

Result<CpuStats> CgroupStatsProvider::node_cpu() {
  if (std::optional<CpuStats> s = cgroup_cpu("/")) return *s;
  // No figure at the root (cgroup v2 without cpu.stat there): the busy time of /proc/stat.
  Result<uint64_t> busy = host_.cpu_busy_nanos();
  if (!busy.is_ok()) {
    return error(StatusCode::kUnavailable,
                 "failed to get the node's CPU usage: " + busy.status().message());
  }
  CpuStats s;
  s.time = options_.clock->now();
  s.usage_core_nano_seconds = *busy;
  s.usage_nano_cores = observe_cpu("proc:stat", *busy, s.time);
  return s;
}

Result<MemoryStats> CgroupStatsProvider::node_memory() {
  TimePoint now = options_.clock->now();
  Result<std::map<std::string, uint64_t>> meminfo = host_.meminfo();
  if (cgroups_.version() == CgroupVersion::kV1) {
    if (Result<CgroupMemory> root = cgroups_.memory("/"); root.is_ok()) {
      // The node's limit is its memory capacity.
      root->limit_bytes.reset();
      if (meminfo.is_ok()) root->limit_bytes = meminfo->at("MemTotal");
      return memory_stats(*root, now);
    }
  }
  if (!meminfo.is_ok()) {
    return error(StatusCode::kUnavailable,
                 "failed to get the node's memory usage: " + meminfo.status().message());
  }
  auto field = [&meminfo](const char* name) -> uint64_t {
    auto it = meminfo->find(name);
    return it == meminfo->end() ? 0 : it->second;
  };
  CgroupMemory m;
  uint64_t total = field("MemTotal");
  m.usage_bytes = total > field("MemFree") ? total - field("MemFree") : 0;
  uint64_t inactive_file = field("Inactive(file)");
  m.working_set_bytes = m.usage_bytes > inactive_file ? m.usage_bytes - inactive_file : 0;
  m.rss_bytes = field("AnonPages");
  if (auto faults = host_.page_faults(); faults.is_ok()) {
    m.page_faults = faults->first;
    m.major_page_faults = faults->second;
  }
  m.limit_bytes = total;
  return memory_stats(m, now);
}

std::optional<RlimitStats> CgroupStatsProvider::node_rlimit() {
  RlimitStats rlimit;
  rlimit.time = options_.clock->now();
  // Both sysctls bound the tasks of the whole system; the smaller one binds.
  for (Result<int64_t> limit : {host_.pid_max(), host_.threads_max()}) {
    if (limit.is_ok() && *limit > 0 && (!rlimit.max_pid || *limit < *rlimit.max_pid)) {
      rlimit.max_pid = *limit;
    }
  }
  if (auto v = host_.task_count(); v.is_ok()) rlimit.num_of_running_processes = *v;
  // The root cgroup of a cgroup namespace (the agent in a container) may have a lower pids.max:
  // then that limit binds, and what counts against it is that cgroup's pids.current.
  if (std::optional<uint64_t> cgroup_limit = cgroups_.pids_max("/");
      cgroup_limit && *cgroup_limit <= static_cast<uint64_t>(INT64_MAX) &&
      (!rlimit.max_pid || static_cast<int64_t>(*cgroup_limit) < *rlimit.max_pid)) {
    if (auto current = cgroups_.pids_current("/"); current.is_ok()) {
      rlimit.max_pid = static_cast<int64_t>(*cgroup_limit);
      rlimit.num_of_running_processes = static_cast<int64_t>(*current);
    }
  }
  if (!rlimit.max_pid && !rlimit.num_of_running_processes) return std::nullopt;
  return rlimit;
}

std::optional<NetworkStats> CgroupStatsProvider::node_network() {
  auto interfaces = host_.node_interfaces();
  if (!interfaces.is_ok()) return std::nullopt;
  return network_stats(*interfaces, options_.clock->now(), "eth0", host_.default_route_interface());
}

PodStats CgroupStatsProvider::pod_stats(const PodInfo& pod, bool only_cpu_and_memory,
                                        RuntimeFigures& runtime) {
  PodStats s;
  s.pod_ref = {pod.name, pod.namespace_name, pod.uid};
  s.start_time = pod.start_time;
  std::string pod_path = pod_cgroup(pod);
  if (!pod_path.empty()) {
    s.cpu = cgroup_cpu(pod_path);
    s.memory = cgroup_memory(pod_path);
  }

  std::optional<FilesystemInfo> image_fs, log_fs;
  if (!only_cpu_and_memory) {
    if (!options_.image_fs_path.empty()) {
      if (auto info = filesystem_info(options_.image_fs_path); info.is_ok()) image_fs = *info;
    }
    if (auto info = filesystem_info(options_.pod_log_root); info.is_ok()) log_fs = *info;
  }
  std::string pod_log_dir =
      options_.pod_log_root + "/" + pod.namespace_name + "_" + pod.name + "_" + pod.uid;
  uint64_t rootfs_bytes = 0, rootfs_inodes = 0;
  for (const ContainerInfo& c : pod.containers) {
    ContainerStats cs;
    cs.name = c.name;
    cs.start_time = c.start_time;
    if (!pod_path.empty()) {
      std::string path = pod_path + "/" + c.id;
      cs.cpu = cgroup_cpu(path);
      cs.memory = cgroup_memory(path);
    }
    if (!cs.cpu || !cs.memory) {
      // No cgroup where the kubelet put it: what the runtime measures.
      if (const v1::ContainerStats* r = runtime.find(c.id)) {
        TimePoint at = options_.clock->now();
        if (!cs.cpu && r->has_cpu() && r->cpu().has_usage_core_nano_seconds()) {
          CpuStats cpu;
          cpu.time = at;
          cpu.usage_core_nano_seconds = r->cpu().usage_core_nano_seconds().value();
          cpu.usage_nano_cores = observe_cpu("cri:" + c.id, *cpu.usage_core_nano_seconds, at);
          cs.cpu = cpu;
        }
        if (!cs.memory && r->has_memory() && r->memory().has_working_set_bytes()) {
          const v1::MemoryUsage& m = r->memory();
          MemoryStats mem;
          mem.time = at;
          mem.available_bytes = wrapped(m.available_bytes(), m.has_available_bytes());
          mem.usage_bytes = wrapped(m.usage_bytes(), m.has_usage_bytes());
          mem.working_set_bytes = m.working_set_bytes().value();
          mem.rss_bytes = wrapped(m.rss_bytes(), m.has_rss_bytes());
          mem.page_faults = wrapped(m.page_faults(), m.has_page_faults());
          mem.major_page_faults = wrapped(m.major_page_faults(), m.has_major_page_faults());
          cs.memory = mem;
        }
      }
    }
    if (!only_cpu_and_memory) {
      TimePoint at = options_.clock->now();
      if (image_fs) {
        cs.rootfs = fs_stats(*image_fs, at);
        if (const v1::ContainerStats* r = runtime.find(c.id); r && r->has_writable_layer()) {
          const v1::FilesystemUsage& layer = r->writable_layer();
          if (layer.has_used_bytes()) {
            cs.rootfs->used_bytes = layer.used_bytes().value();
            rootfs_bytes += layer.used_bytes().value();
          }
          if (layer.has_inodes_used()) {
            cs.rootfs->inodes_used = layer.inodes_used().value();
            rootfs_inodes += layer.inodes_used().value();
          }
        }
      }
      if (log_fs) {
        cs.logs = fs_stats(*log_fs, at);
        DiskUsage logs = disk_usage(pod_log_dir + "/" + c.name);
        cs.logs->used_bytes = logs.bytes;
        cs.logs->inodes_used = logs.inodes;
      }
    }
    s.containers.push_back(std::move(cs));
  }
  if (only_cpu_and_memory) return s;

  if (!pod_path.empty()) {
    if (std::optional<int> pid = cgroups_.any_pid(pod_path)) {
      if (auto interfaces = host_.process_interfaces(*pid); interfaces.is_ok()) {
        s.network = network_stats(*interfaces, options_.clock->now(), "eth0", "");
      }
    }
    if (auto tasks = cgroups_.pids_current(pod_path); tasks.is_ok()) s.process_count = *tasks;
  }

  uint64_t volume_bytes = 0, volume_inodes = 0;
  if (!options_.pods_dir.empty()) {
    std::string volumes_dir = options_.pods_dir + "/" + pod.uid + "/volumes";
    for (const std::string& plugin : subdirectories(volumes_dir)) {
      for (const std::string& name : subdirectories(volumes_dir + "/" + plugin)) {
        std::string dir = volumes_dir + "/" + plugin + "/" + name;
        auto info = filesystem_info(dir);
        if (!info.is_ok()) continue;
        VolumeStats v;
        v.name = name;
        v.fs = fs_stats(*info, options_.clock->now());
        DiskUsage used = disk_usage(dir);
        v.fs.used_bytes = used.bytes;
        v.fs.inodes_used = used.inodes;
        volume_bytes += used.bytes;
        volume_inodes += used.inodes;
        s.volumes.push_back(std::move(v));
      }
    }
  }

  // Ephemeral storage: the writable layers, the pod's logs and its volumes, on the node fs.
  std::string node_fs = options_.pods_dir.empty() ? options_.node_fs_path : options_.pods_dir;
  if (!node_fs.empty()) {
    if (auto info = filesystem_info(node_fs); info.is_ok()) {
      FsStats e = fs_stats(*info, options_.clock->now());
      DiskUsage logs = disk_usage(pod_log_dir);
      e.used_bytes = rootfs_bytes + logs.bytes + volume_bytes;
      e.inodes_used = rootfs_inodes + logs.inodes + volume_inodes;
      s.ephemeral_storage = e;
    }
  }
  return s;
}

Result<Summary> CgroupStatsProvider::summary(bool only_cpu_and_memory) {
  Summary out;
  NodeStats& node = out.node;
  node.node_name = options_.node_name;
  if (auto boot = host_.boot_time(); boot.is_ok()) {
    node.start_time = TimePoint(std::chrono::seconds(*boot));
  }
  SKIFF_ASSIGN_OR_RETURN(CpuStats cpu, node_cpu());
  node.cpu = cpu;
  SKIFF_ASSIGN_OR_RETURN(MemoryStats memory, node_memory());
  node.memory = memory;

  if (!only_cpu_and_memory) {
    node.network = node_network();
    if (!options_.node_fs_path.empty()) {
      if (auto info = filesystem_info(options_.node_fs_path); info.is_ok()) {
        FsStats fs = fs_stats(*info, options_.clock->now());
        fs.used_bytes = info->used_bytes;
        fs.inodes_used = info->inodes - std::min(info->inodes, info->inodes_free);
        node.fs = fs;
      }
    }
    if (!options_.image_fs_path.empty()) {
      if (auto info = filesystem_info(options_.image_fs_path); info.is_ok()) {
        FsStats fs = fs_stats(*info, options_.clock->now());
        fs.used_bytes = info->used_bytes;
        fs.inodes_used = info->inodes - std::min(info->inodes, info->inodes_free);
        // The images' own share, when the runtime says.
        if (options_.images != nullptr) {
          if (auto usage = options_.images->image_fs_info(); usage.is_ok() && !usage->empty()) {
            uint64_t bytes = 0, inodes = 0;
            bool have_bytes = false, have_inodes = false;
            for (const v1::FilesystemUsage& u : *usage) {
              if (u.has_used_bytes()) {
                bytes += u.used_bytes().value();
                have_bytes = true;
              }
              if (u.has_inodes_used()) {
                inodes += u.inodes_used().value();
                have_inodes = true;
              }
            }
            if (have_bytes) fs.used_bytes = bytes;
            if (have_inodes) fs.inodes_used = inodes;
          }
        }
        RuntimeStats runtime;
        runtime.image_fs = fs;
        // Writable layers live in the same snapshotter as the images.
        runtime.container_fs = fs;
        node.runtime = runtime;
      }
    }
    node.rlimit = node_rlimit();
  }

  RuntimeFigures runtime;
  runtime.runtime = options_.runtime;
  std::vector<PodInfo> pods = options_.pods ? options_.pods() : std::vector<PodInfo>{};
  out.pods.reserve(pods.size());
  for (const PodInfo& pod : pods) out.pods.push_back(pod_stats(pod, only_cpu_and_memory, runtime));
  prune_cpu(options_.clock->now());
  return out;
}

Result<std::string> summary_json(StatsProvider& provider, bool only_cpu_and_memory) {
  SKIFF_ASSIGN_OR_RETURN(Summary summary, provider.summary(only_cpu_and_memory));
  return to_json(summary).dump();
}

}  // namespace skiff::kubelet::stats
