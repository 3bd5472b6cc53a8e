#pragma once

// Fake cgroup and proc trees for the kubelet stats tests: files written under a temp dir the way
// the kernel lays them out.
//
// Thread-safety: none; one test thread.

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

namespace skiff::kubelet::stats::testing {

inline void write_file(const std::string& path, const std::string& data) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << data;
}

// A cgroup v1 layout: <root>/{cpuacct,memory,pids}/<path>/...
class FakeCgroupV1 {
 public:
  explicit FakeCgroupV1(std::string root) : root_(std::move(root)) {
    std::filesystem::create_directories(root_ + "/cpuacct");
    std::filesystem::create_directories(root_ + "/memory");
    std::filesystem::create_directories(root_ + "/pids");
  }
  const std::string& root() const { return root_; }

  void set_cpu(const std::string& path, uint64_t usage_ns) {
    write_file(dir("cpuacct", path) + "/cpuacct.usage", std::to_string(usage_ns) + "\n");
  }
  // memory.stat gets the local and the total_* figures (as the kernel writes both).
  void set_memory(const std::string& path, uint64_t usage, uint64_t inactive_file, uint64_t rss,
                  uint64_t pgfault, uint64_t pgmajfault, uint64_t limit) {
    std::string d = dir("memory", path);
    write_file(d + "/memory.usage_in_bytes", std::to_string(usage) + "\n");
    write_file(d + "/memory.limit_in_bytes", std::to_string(limit) + "\n");
    write_file(d + "/memory.stat",
               "cache 0\nrss 1\ninactive_file 2\npgfault 3\npgmajfault 4\n"
               "hierarchical_memory_limit " +
                   std::to_string(limit) + "\ntotal_cache 100\ntotal_rss " + std::to_string(rss) +
                   "\ntotal_inactive_file " + std::to_string(inactive_file) + "\ntotal_pgfault " +
                   std::to_string(pgfault) + "\ntotal_pgmajfault " + std::to_string(pgmajfault) +
                   "\n");
  }
  void set_pids(const std::string& path, uint64_t current) {
    write_file(dir("pids", path) + "/pids.current", std::to_string(current) + "\n");
  }
  void set_procs(const std::string& path, const std::string& procs) {
    write_file(dir("memory", path) + "/cgroup.procs", procs);
  }

 private:
  std::string dir(const char* hierarchy, const std::string& path) const {
    return root_ + "/" + hierarchy + (path == "/" ? "" : path);
  }
  std::string root_;
};

// The kernel's limit value for "no limit" on cgroup v1 (x86-64, 4 KiB pages).
inline constexpr uint64_t kV1NoLimit = 9223372036854771712ULL;

inline std::string net_dev(const std::string& lines) {
  return "Inter-|   Receive                                                |  Transmit\n"
         " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets "
         "errs drop fifo colls carrier compressed\n" +
         lines;
}

// "name: rx_bytes ... " with the given counters and zeros elsewhere.
inline std::string net_dev_line(const std::string& name, uint64_t rx_bytes, uint64_t rx_errs,
                                uint64_t tx_bytes, uint64_t tx_errs) {
  return "  " + name + ": " + std::to_string(rx_bytes) + " 10 " + std::to_string(rx_errs) +
         " 0 0 0 0 0 " + std::to_string(tx_bytes) + " 20 " + std::to_string(tx_errs) +
         " 0 0 0 0 0\n";
}

}  // namespace skiff::kubelet::stats::testing
