#pragma once

// What the kubelet's stats are read from: cgroup files (cgroup v1 hierarchies — cpuacct, memory,
// pids — or the unified cgroup v2 tree), the proc filesystem (net/dev, net/route, meminfo, stat,
// loadavg, sys/kernel/pid_max), statvfs of a filesystem, and the disk usage of a directory tree.
// The roots (/sys/fs/cgroup, /proc) are parameters so that tests can build a fake tree in a
// temporary directory.
//
// Thread-safety: CgroupReader and HostReader keep only their roots (const after construction)
// and may be used from any number of threads; the free functions are pure or only read files.

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"

namespace skiff::kubelet::stats {

// ---- cgroups ----------------------------------------------------------------------------------

enum class CgroupVersion { kV1, kV2 };

struct CgroupMemory {
  uint64_t usage_bytes = 0;
  uint64_t working_set_bytes = 0;  // usage - inactive file pages (0 when those exceed usage)
  uint64_t rss_bytes = 0;          // anonymous memory (v1 total_rss, v2 anon)
  uint64_t page_faults = 0;        // hierarchical (v1 total_pgfault, v2 pgfault)
  uint64_t major_page_faults = 0;
  std::optional<uint64_t> limit_bytes;  // nullopt: unlimited
};

// Memory limits above 2^62 are "unlimited" (the kernel rounds its maximum to the page size).
inline constexpr uint64_t kUnlimitedMemory = uint64_t{1} << 62;

class CgroupReader {
 public:
  // `mount` is where cgroups are mounted (/sys/fs/cgroup). It is cgroup v2 when `mount` itself
  // is a cgroup2 root (it has cgroup.controllers); otherwise v1 hierarchies live in
  // <mount>/cpuacct, <mount>/memory and <mount>/pids (a hybrid host's <mount>/unified is not
  // used: on such hosts the controllers are in the v1 hierarchies).
  explicit CgroupReader(std::string mount);

  CgroupVersion version() const { return version_; }
  const std::string& mount() const { return mount_; }

  // `path` is the cgroup's path below the hierarchy root: "/" or "/skiff/pod<uid>/<id>".
  bool exists(const std::string& path) const;
  // Cumulative CPU time of the cgroup and its descendants, in nanoseconds (v1 cpuacct.usage,
  // v2 cpu.stat usage_usec). kNotFound when the cgroup (or the file) is not there.
  Result<uint64_t> cpu_usage(const std::string& path) const;
  // kNotFound when the cgroup is not there; on v2 also for "/" (the root has no memory.current).
  Result<CgroupMemory> memory(const std::string& path) const;
  // Tasks in the cgroup and its descendants (pids.current).
  Result<uint64_t> pids_current(const std::string& path) const;
  // The cgroup's task limit (pids.max); nullopt when it is "max" or there is no such file (the
  // host's root cgroup has none; the root of a cgroup namespace, as in a container, may).
  std::optional<uint64_t> pids_max(const std::string& path) const;
  // Some process in the cgroup or a cgroup below it, to reach its network namespace.
  std::optional<int> any_pid(const std::string& path) const;

 private:
  std::string dir(const char* v1_hierarchy, const std::string& path) const;

  const std::string mount_;
  const CgroupVersion version_;
};

// ---- the proc filesystem ---------------------------------------------------------------------

struct InterfaceCounters {
  std::string name;
  uint64_t rx_bytes = 0;
  uint64_t rx_errors = 0;
  uint64_t tx_bytes = 0;
  uint64_t tx_errors = 0;
};

// The interfaces in /proc/<pid>/net/dev text, in file order. kInvalidArgument when a line does
// not parse.
Result<std::vector<InterfaceCounters>> parse_net_dev(std::string_view text);

// Upstream's (cAdvisor's) rule for interfaces left out of network stats: lo*, veth*, docker*,
// nerdctl*.
bool ignored_interface(std::string_view name);

class HostReader {
 public:
  explicit HostReader(std::string proc_root);

  const std::string& proc_root() const { return proc_root_; }

  // <proc>/net/dev: the interfaces of the calling process' network namespace.
  Result<std::vector<InterfaceCounters>> node_interfaces() const;
  // <proc>/<pid>/net/dev: the interfaces of the network namespace `pid` is in.
  Result<std::vector<InterfaceCounters>> process_interfaces(int pid) const;
  // The interface of the IPv4 default route (<proc>/net/route), "" when there is none.
  std::string default_route_interface() const;

  // <proc>/meminfo, in bytes (the kB figures times 1024), by field name ("MemTotal", ...).
  Result<std::map<std::string, uint64_t>> meminfo() const;
  // Boot time (btime in <proc>/stat), seconds since the epoch.
  Result<int64_t> boot_time() const;
  // CPU time spent not idle since boot, summed over every CPU, in nanoseconds (<proc>/stat).
  Result<uint64_t> cpu_busy_nanos() const;
  // Minor and major page faults since boot (<proc>/vmstat pgfault, pgmajfault).
  Result<std::pair<uint64_t, uint64_t>> page_faults() const;
  // <proc>/sys/kernel/pid_max.
  Result<int64_t> pid_max() const;
  // <proc>/sys/kernel/threads-max: the tasks the kernel allows at once, system-wide.
  Result<int64_t> threads_max() const;
  // Tasks (threads) in the system: the total in <proc>/loadavg.
  Result<int64_t> task_count() const;

 private:
  const std::string proc_root_;
};

// ---- filesystems -----------------------------------------------------------------------------

struct FilesystemInfo {
  uint64_t capacity_bytes = 0;
  uint64_t available_bytes = 0;  // to unprivileged users (f_bavail)
  uint64_t used_bytes = 0;       // capacity - free
  uint64_t inodes = 0;
  uint64_t inodes_free = 0;
};

// statvfs of the filesystem that holds `path`. kNotFound when `path` does not exist.
Result<FilesystemInfo> filesystem_info(const std::string& path);

struct DiskUsage {
  uint64_t bytes = 0;   // allocated blocks, as du counts them
  uint64_t inodes = 0;  // entries, `path` itself included
};

// The tree at `path`, without following symbolic links and counting each inode once; zero when
// `path` does not exist.
DiskUsage disk_usage(const std::string& path);

// ---- small helpers shared by the readers and their tests --------------------------------------

Result<std::string> read_text_file(const std::string& path);
// "key value" lines (memory.stat, cpu.stat, vmstat); lines that do not parse are skipped.
std::map<std::string, uint64_t> parse_key_values(std::string_view text);

}  // namespace skiff::kubelet::stats
