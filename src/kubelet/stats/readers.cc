#include "kubelet/stats/readers.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>
#include <utility>

#include "base/strings.h"

namespace skiff::kubelet::stats {
namespace {

std::optional<uint64_t> to_u64(std::string_view s) {
  s = trim_space(s);
  uint64_t v = 0;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || ptr != s.data() + s.size()) return std::nullopt;
  return v;
}

std::optional<int64_t> to_i64(std::string_view s) {
  s = trim_space(s);
  int64_t v = 0;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || ptr != s.data() + s.size()) return std::nullopt;
  return v;
}

std::vector<std::string_view> lines(std::string_view text) {
  std::vector<std::string_view> out;
  while (!text.empty()) {
    size_t nl = text.find('\n');
    out.push_back(text.substr(0, nl));
    if (nl == std::string_view::npos) break;
    text.remove_prefix(nl + 1);
  }
  return out;
}

Result<uint64_t> read_u64(const std::string& path) {
  SKIFF_ASSIGN_OR_RETURN(std::string text, read_text_file(path));
  std::optional<uint64_t> v = to_u64(text);
  if (!v) return error(StatusCode::kDataLoss, path + ": not a number: \"" + text + "\"");
  return *v;
}

bool is_dir(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

CgroupVersion detect_version(const std::string& mount) {
  struct stat st {};
  return ::stat((mount + "/cgroup.controllers").c_str(), &st) == 0 ? CgroupVersion::kV2
                                                                   : CgroupVersion::kV1;
}

// The first PID in dir/cgroup.procs or in a cgroup below dir.
std::optional<int> first_pid_below(const std::string& dir, int depth) {
  if (auto procs = read_text_file(dir + "/cgroup.procs"); procs.is_ok()) {
    for (std::string_view line : lines(*procs)) {
      if (std::optional<int64_t> pid = to_i64(line); pid && *pid > 0) {
        return static_cast<int>(*pid);
      }
    }
  }
  if (depth > 8) return std::nullopt;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return std::nullopt;
  std::vector<std::string> children;
  while (dirent* e = ::readdir(d)) {
    if (e->d_type != DT_DIR && e->d_type != DT_UNKNOWN) continue;
    std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    children.push_back(dir + "/" + name);
  }
  ::closedir(d);
  for (const std::string& child : children) {
    if (!is_dir(child)) continue;
    if (std::optional<int> pid = first_pid_below(child, depth + 1)) return pid;
  }
  return std::nullopt;
}

void walk(int dir_fd, dev_t dev, DiskUsage* usage, std::set<std::pair<dev_t, ino_t>>* seen) {
  DIR* d = ::fdopendir(dir_fd);
  if (d == nullptr) {
    ::close(dir_fd);
    return;
  }
  while (dirent* e = ::readdir(d)) {
    if (std::strcmp(e->d_name, ".") == 0 || std::strcmp(e->d_name, "..") == 0) continue;
    struct stat st {};
    if (::fstatat(dir_fd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
    if (!S_ISDIR(st.st_mode) && st.st_nlink > 1 && !seen->insert({st.st_dev, st.st_ino}).second) {
      continue;  // a hard link to an inode already counted
    }
    usage->bytes += static_cast<uint64_t>(st.st_blocks) * 512;
    usage->inodes += 1;
    // Stay on the filesystem the walk started on (mounts below belong to something else).
    if (S_ISDIR(st.st_mode) && st.st_dev == dev) {
      int fd = ::openat(dir_fd, e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (fd >= 0) walk(fd, dev, usage, seen);
    }
  }
  ::closedir(d);
}

}  // namespace

// ---- helpers ---------------------------------------------------------------------------------

Result<std::string> read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    int err = errno;
    return error(err == ENOENT || err == ENOTDIR ? StatusCode::kNotFound : StatusCode::kInternal,
                 "cannot read " + path + ": " + std::strerror(err));
  }
  std::stringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return error(StatusCode::kInternal, "cannot read " + path);
  return ss.str();
}

std::map<std::string, uint64_t> parse_key_values(std::string_view text) {
  std::map<std::string, uint64_t> out;
  for (std::string_view line : lines(text)) {
    std::vector<std::string_view> f = split_space(line);
    if (f.size() != 2) continue;
    if (std::optional<uint64_t> v = to_u64(f[1])) out[std::string(f[0])] = *v;
  }
  return out;
}

// ---- cgroups ---------------------------------------------------------------------------------

CgroupReader::CgroupReader(std::string mount)
    : mount_(std::move(mount)), version_(detect_version(mount_)) {}

std::string CgroupReader::dir(const char* v1_hierarchy, const std::string& path) const {
  std::string below = path == "/" ? "" : path;
  if (!below.empty() && below.front() != '/') below.insert(below.begin(), '/');
  if (version_ == CgroupVersion::kV2) return mount_ + below;
  return mount_ + "/" + v1_hierarchy + below;
}

bool CgroupReader::exists(const std::string& path) const {
  return is_dir(dir(version_ == CgroupVersion::kV1 ? "memory" : "", path));
}

Result<uint64_t> CgroupReader::cpu_usage(const std::string& path) const {
  if (version_ == CgroupVersion::kV1) return read_u64(dir("cpuacct", path) + "/cpuacct.usage");
  std::string file = dir("", path) + "/cpu.stat";
  SKIFF_ASSIGN_OR_RETURN(std::string text, read_text_file(file));
  std::map<std::string, uint64_t> stat = parse_key_values(text);
  auto it = stat.find("usage_usec");
  if (it == stat.end()) return error(StatusCode::kDataLoss, file + ": no usage_usec");
  return it->second * 1000;
}

Result<CgroupMemory> CgroupReader::memory(const std::string& path) const {
  CgroupMemory m;
  std::string d = dir("memory", path);
  std::map<std::string, uint64_t> stat;
  uint64_t inactive_file = 0;
  if (version_ == CgroupVersion::kV1) {
    SKIFF_ASSIGN_OR_RETURN(m.usage_bytes, read_u64(d + "/memory.usage_in_bytes"));
    SKIFF_ASSIGN_OR_RETURN(std::string text, read_text_file(d + "/memory.stat"));
    stat = parse_key_values(text);
    // The hierarchical figures (total_*) include the cgroups below; a pod's processes are all
    // in its containers' cgroups.
    auto get = [&stat](const char* total, const char* local) -> uint64_t {
      if (auto it = stat.find(total); it != stat.end()) return it->second;
      if (auto it = stat.find(local); it != stat.end()) return it->second;
      return 0;
    };
    inactive_file = get("total_inactive_file", "inactive_file");
    m.rss_bytes = get("total_rss", "rss");
    m.page_faults = get("total_pgfault", "pgfault");
    m.major_page_faults = get("total_pgmajfault", "pgmajfault");
    if (auto limit = read_u64(d + "/memory.limit_in_bytes");
        limit.is_ok() && *limit <= kUnlimitedMemory) {
      m.limit_bytes = *limit;
    }
  } else {
    SKIFF_ASSIGN_OR_RETURN(m.usage_bytes, read_u64(d + "/memory.current"));
    SKIFF_ASSIGN_OR_RETURN(std::string text, read_text_file(d + "/memory.stat"));
    stat = parse_key_values(text);
    inactive_file = stat.count("inactive_file") ? stat["inactive_file"] : 0;
    m.rss_bytes = stat.count("anon") ? stat["anon"] : 0;
    m.page_faults = stat.count("pgfault") ? stat["pgfault"] : 0;
    m.major_page_faults = stat.count("pgmajfault") ? stat["pgmajfault"] : 0;
    if (auto max = read_text_file(d + "/memory.max"); max.is_ok()) {
      if (std::optional<uint64_t> v = to_u64(*max); v && *v <= kUnlimitedMemory) m.limit_bytes = *v;
    }
  }
  m.working_set_bytes = m.usage_bytes > inactive_file ? m.usage_bytes - inactive_file : 0;
  return m;
}

Result<uint64_t> CgroupReader::pids_current(const std::string& path) const {
  return read_u64(dir("pids", path) + "/pids.current");
}

std::optional<uint64_t> CgroupReader::pids_max(const std::string& path) const {
  auto text = read_text_file(dir("pids", path) + "/pids.max");
  if (!text.is_ok()) return std::nullopt;
  return to_u64(*text);  // "max": no limit
}

std::optional<int> CgroupReader::any_pid(const std::string& path) const {
  std::string d = dir("memory", path);
  if (!is_dir(d)) return std::nullopt;
  return first_pid_below(d, 0);
}

// ---- proc ------------------------------------------------------------------------------------

Result<std::vector<InterfaceCounters>> parse_net_dev(std::string_view text) {
  std::vector<InterfaceCounters> out;
  for (std::string_view line : lines(text)) {
    size_t colon = line.find(':');
    // The two header lines have '|' separators and no "name:" prefix.
    if (colon == std::string_view::npos || line.find('|') != std::string_view::npos) {
      if (!trim_space(line).empty() && line.find('|') == std::string_view::npos) {
        return error(StatusCode::kInvalidArgument,
                     "net/dev: unexpected line \"" + std::string(line) + "\"");
      }
      continue;
    }
    std::vector<std::string_view> f = split_space(line.substr(colon + 1));
    if (f.size() < 16) {
      return error(StatusCode::kInvalidArgument,
                   "net/dev: short line \"" + std::string(line) + "\"");
    }
    // Receive: bytes packets errs drop fifo frame compressed multicast; transmit: bytes packets
    // errs drop fifo colls carrier compressed.
    std::optional<uint64_t> rx_bytes = to_u64(f[0]), rx_errs = to_u64(f[2]),
                            tx_bytes = to_u64(f[8]), tx_errs = to_u64(f[10]);
    if (!rx_bytes || !rx_errs || !tx_bytes || !tx_errs) {
      return error(StatusCode::kInvalidArgument,
                   "net/dev: bad counters in \"" + std::string(line) + "\"");
    }
    InterfaceCounters c;
    c.name = std::string(trim_space(line.substr(0, colon)));
    c.rx_bytes = *rx_bytes;
    c.rx_errors = *rx_errs;
    c.tx_bytes = *tx_bytes;
    c.tx_errors = *tx_errs;
    out.push_back(std::move(c));
  }
  return out;
}

bool ignored_interface(std::string_view name) {
  for (std::string_view prefix : {"lo", "veth", "docker", "nerdctl"}) {
    if (name.starts_with(prefix)) return true;
  }
  return false;
}

HostReader::HostReader(std::string proc_root) : proc_root_(std::move(proc_root)) {}

Result<std::vector<InterfaceCounters>> HostReader::node_interfaces() const {
  SKIFF_ASSIGN_OR_RETURN(std::string text, read_text_file(proc_root_ + "/net/dev"));
  return parse_net_dev(text);
}

Result<std::vector<InterfaceCounters>> HostReader::process_interfaces(int pid) const {
  SKIFF_ASSIGN_OR_RETURN(std::string text,
                         read_text_file(proc_root_ + "/" + std::to_string(pid) + "/net/dev"));
  return parse_net_dev(text);
}

std::string HostReader::default_route_interface() const {
  auto text = read_text_file(proc_root_ + "/net/route");
  if (!text.is_ok()) return "";
  // Iface Destination Gateway Flags RefCnt Use Metric Mask ...
  for (std::string_view line : lines(*text)) {
    std::vector<std::string_view> f = split_space(line);
    if (f.size() >= 8 && f[1] == "00000000" && f[7] == "00000000") return std::string(f[0]);
  }
  return "";
}

Result<std::map<std::string, uint64_t>> HostReader::meminfo() const {
  SKIFF_ASSIGN_OR_RETURN(std::string text, read_text_file(proc_root_ + "/meminfo"));
  std::map<std::string, uint64_t> out;
  for (std::string_view line : lines(text)) {
    size_t colon = line.find(':');
    if (colon == std::string_view::npos) continue;
    std::vector<std::string_view> f = split_space(line.substr(colon + 1));
    if (f.empty()) continue;
    std::optional<uint64_t> v = to_u64(f[0]);
    if (!v) continue;
    uint64_t scale = f.size() > 1 && f[1] == "kB" ? 1024 : 1;
    out[std::string(line.substr(0, colon))] = *v * scale;
  }
  if (!out.count("MemTotal")) return error(StatusCode::kDataLoss, "meminfo: no MemTotal");
  return out;
}

Result<int64_t> HostReader::boot_time() const {
  SKIFF_ASSIGN_OR_RETURN(std::string text, read_text_file(proc_root_ + "/stat"));
  for (std::string_view line : lines(text)) {
    std::vector<std::string_view> f = split_space(line);
    if (f.size() == 2 && f[0] == "btime") {
      if (std::optional<int64_t> v = to_i64(f[1])) return *v;
    }
  }
  return error(StatusCode::kDataLoss, proc_root_ + "/stat: no btime");
}

Result<uint64_t> HostReader::cpu_busy_nanos() const {
  SKIFF_ASSIGN_OR_RETURN(std::string text, read_text_file(proc_root_ + "/stat"));
  for (std::string_view line : lines(text)) {
    std::vector<std::string_view> f = split_space(line);
    if (f.empty() || f[0] != "cpu") continue;
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    if (f.size() < 9) break;
    uint64_t busy = 0;
    for (size_t i : {1, 2, 3, 6, 7, 8}) {
      std::optional<uint64_t> v = to_u64(f[i]);
      if (!v) return error(StatusCode::kDataLoss, proc_root_ + "/stat: bad cpu line");
      busy += *v;
    }
    long hz = ::sysconf(_SC_CLK_TCK);
    if (hz <= 0) hz = 100;
    return busy * (1'000'000'000 / static_cast<uint64_t>(hz));
  }
  return error(StatusCode::kDataLoss, proc_root_ + "/stat: no cpu line");
}

Result<std::pair<uint64_t, uint64_t>> HostReader::page_faults() const {
  SKIFF_ASSIGN_OR_RETURN(std::string text, read_text_file(proc_root_ + "/vmstat"));
  std::map<std::string, uint64_t> v = parse_key_values(text);
  return std::make_pair(v.count("pgfault") ? v["pgfault"] : 0,
                        v.count("pgmajfault") ? v["pgmajfault"] : 0);
}

Result<int64_t> HostReader::pid_max() const {
  std::string path = proc_root_ + "/sys/kernel/pid_max";
  SKIFF_ASSIGN_OR_RETURN(std::string text, read_text_file(path));
  std::optional<int64_t> v = to_i64(text);
  if (!v) return error(StatusCode::kDataLoss, path + ": not a number");
  return *v;
}

Result<int64_t> HostReader::threads_max() const {
  std::string path = proc_root_ + "/sys/kernel/threads-max";
  SKIFF_ASSIGN_OR_RETURN(std::string text, read_text_file(path));
  std::optional<int64_t> v = to_i64(text);
  if (!v) return error(StatusCode::kDataLoss, path + ": not a number");
  return *v;
}

Result<int64_t> HostReader::task_count() const {
  std::string path = proc_root_ + "/loadavg";
  SKIFF_ASSIGN_OR_RETURN(std::string text, read_text_file(path));
  // "0.10 0.20 0.30 2/345 6789": running/total scheduling entities.
  std::vector<std::string_view> f = split_space(text);
  if (f.size() >= 4) {
    size_t slash = f[3].find('/');
    if (slash != std::string_view::npos) {
      if (std::optional<int64_t> v = to_i64(f[3].substr(slash + 1))) return *v;
    }
  }
  return error(StatusCode::kDataLoss, path + ": unexpected \"" + text + "\"");
}

// ---- filesystems -----------------------------------------------------------------------------

Result<FilesystemInfo> filesystem_info(const std::string& path) {
  struct statvfs st {};
  if (::statvfs(path.c_str(), &st) != 0) {
    int err = errno;
    return error(err == ENOENT ? StatusCode::kNotFound : StatusCode::kInternal,
                 "statvfs " + path + ": " + std::strerror(err));
  }
  FilesystemInfo info;
  uint64_t unit = st.f_frsize != 0 ? st.f_frsize : st.f_bsize;
  info.capacity_bytes = static_cast<uint64_t>(st.f_blocks) * unit;
  info.available_bytes = static_cast<uint64_t>(st.f_bavail) * unit;
  info.used_bytes = static_cast<uint64_t>(st.f_blocks - st.f_bfree) * unit;
  info.inodes = st.f_files;
  info.inodes_free = st.f_ffree;
  return info;
}

DiskUsage disk_usage(const std::string& path) {
  DiskUsage usage;
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return usage;
  usage.bytes = static_cast<uint64_t>(st.st_blocks) * 512;
  usage.inodes = 1;
  if (!S_ISDIR(st.st_mode)) return usage;
  int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return usage;
  std::set<std::pair<dev_t, ino_t>> seen;
  walk(fd, st.st_dev, &usage, &seen);
  return usage;
}

}  // namespace skiff::kubelet::stats
