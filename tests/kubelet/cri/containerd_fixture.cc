#include "kubelet/cri/containerd_fixture.h"

#include <openssl/evp.h>
#include <signal.h>
#include <sys/mount.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <thread>

#include "base/process.h"
#include "kubelet/images/builtin.h"
#include "kubelet/images/import.h"
#include "kubelet/images/oci_image.h"

namespace skiff::testing {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

constexpr const char* kRunContainerd = "/run/containerd";
constexpr const char* kVarLibCni = "/var/lib/cni";
constexpr const char* kCniResults = "/var/lib/cni/results";
constexpr const char* kCriNamespace = "k8s.io";

std::string path_env() {
  const char* path = std::getenv("PATH");
  return path != nullptr && *path != '\0'
             ? path
             : "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
}

std::string which(const std::string& name) {
  Result<std::string> found = find_executable(name, path_env());
  return found.is_ok() ? *found : "";
}

std::string random_hex(size_t bytes) {
  std::ifstream urandom("/dev/urandom", std::ios::binary);
  std::string out;
  char buf[3];
  for (size_t i = 0; i < bytes; ++i) {
    unsigned char c = static_cast<unsigned char>(urandom.get());
    std::snprintf(buf, sizeof(buf), "%02x", c);
    out += buf;
  }
  return out;
}

std::string sha256_hex(const std::string& data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), md, &len, EVP_sha256(), nullptr);
  std::string out;
  char buf[3];
  for (unsigned int i = 0; i < len; ++i) {
    std::snprintf(buf, sizeof(buf), "%02x", md[i]);
    out += buf;
  }
  return out;
}

Status write_file(const std::string& path, const std::string& content) {
  std::ofstream out(path, std::ios::trunc);
  out << content;
  out.close();
  if (!out) return Status(StatusCode::kInternal, "cannot write " + path);
  return Status::ok();
}

Status run(const std::vector<std::string>& argv) {
  Result<CommandOutput> out = run_command(argv, 60s);
  std::string joined;
  for (const std::string& a : argv) joined += (joined.empty() ? "" : " ") + a;
  if (!out.is_ok()) return Status(out.status().code(), joined + ": " + out.status().message());
  if (!out->status.success()) {
    return Status(StatusCode::kInternal,
                  joined + ": " + out->status.to_string() + ": " + out->err + out->out);
  }
  return Status::ok();
}

struct MountEntry {
  std::string mount_point;
  std::string fs_type;
};

// /proc/self/mountinfo: "id parent maj:min root mount-point options [optional...] - type source
// super-options", with spaces and the like in paths escaped as \ooo.
std::vector<MountEntry> read_mounts() {
  std::vector<MountEntry> mounts;
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string id, parent, dev, root, mount_point;
    fields >> id >> parent >> dev >> root >> mount_point;
    std::string field;
    while (fields >> field && field != "-") {
    }
    std::string fs_type;
    fields >> fs_type;
    std::string unescaped;
    for (size_t i = 0; i < mount_point.size(); ++i) {
      if (mount_point[i] == '\\' && i + 3 < mount_point.size()) {
        unescaped.push_back(static_cast<char>(std::stoi(mount_point.substr(i + 1, 3), nullptr, 8)));
        i += 3;
      } else {
        unescaped.push_back(mount_point[i]);
      }
    }
    mounts.push_back({unescaped, fs_type});
  }
  return mounts;
}

std::vector<std::string> mounts_under(const std::string& dir) {
  std::vector<std::string> out;
  for (const MountEntry& m : read_mounts()) {
    if (m.mount_point == dir || m.mount_point.rfind(dir + "/", 0) == 0)
      out.push_back(m.mount_point);
  }
  return out;
}

void unmount_all_under(const std::string& dir) {
  for (int pass = 0; pass < 10; ++pass) {
    std::vector<std::string> mounts = mounts_under(dir);
    if (mounts.empty()) return;
    // Deepest first, so nothing is busy because of a mount inside it.
    std::sort(mounts.begin(), mounts.end(),
              [](const std::string& a, const std::string& b) { return a.size() > b.size(); });
    for (const std::string& m : mounts) umount2(m.c_str(), MNT_DETACH);
  }
}

std::vector<std::string> cgroup_mount_points() {
  std::vector<std::string> out;
  for (const MountEntry& m : read_mounts()) {
    if (m.fs_type == "cgroup" || m.fs_type == "cgroup2") out.push_back(m.mount_point);
  }
  return out;
}

// Directories of the cgroup tree at `root` in every hierarchy, deepest first.
std::vector<std::string> cgroup_dirs(const std::string& root) {
  std::vector<std::string> dirs;
  for (const std::string& mount_point : cgroup_mount_points()) {
    std::string top = mount_point + root;
    std::error_code ec;
    if (!fs::is_directory(top, ec)) continue;
    dirs.push_back(top);
    for (fs::recursive_directory_iterator it(top, ec), end; !ec && it != end; it.increment(ec)) {
      if (it->is_directory(ec) && !it->is_symlink(ec)) dirs.push_back(it->path().string());
    }
  }
  std::sort(dirs.begin(), dirs.end(),
            [](const std::string& a, const std::string& b) { return a.size() > b.size(); });
  return dirs;
}

std::vector<pid_t> cgroup_pids(const std::string& root) {
  std::vector<pid_t> pids;
  for (const std::string& dir : cgroup_dirs(root)) {
    std::ifstream procs(dir + "/cgroup.procs");
    pid_t pid;
    while (procs >> pid) pids.push_back(pid);
  }
  std::sort(pids.begin(), pids.end());
  pids.erase(std::unique(pids.begin(), pids.end()), pids.end());
  return pids;
}

bool process_alive(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string content;
  if (!std::getline(stat, content)) return false;
  size_t close = content.rfind(')');
  // A zombie waits for its (foreign) parent to reap it; it runs nothing any more.
  return close == std::string::npos || close + 2 >= content.size() || content[close + 2] != 'Z';
}

std::vector<std::string> cmdline_of(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/cmdline", std::ios::binary);
  std::vector<std::string> args;
  std::string arg;
  while (std::getline(in, arg, '\0')) args.push_back(arg);
  return args;
}

// Shims serving the containerd at `address` (they outlive containerd by design).
std::vector<pid_t> shims_of(const std::string& address) {
  std::vector<pid_t> pids;
  std::error_code ec;
  for (fs::directory_iterator it("/proc", ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.empty() || !std::all_of(name.begin(), name.end(), ::isdigit)) continue;
    pid_t pid = std::stoi(name);
    std::vector<std::string> args = cmdline_of(pid);
    if (args.empty() || fs::path(args[0]).filename().string().rfind("containerd-shim", 0) != 0) {
      continue;
    }
    for (size_t i = 0; i + 1 < args.size(); ++i) {
      if (args[i] == "-address" && args[i + 1] == address && process_alive(pid)) {
        pids.push_back(pid);
        break;
      }
    }
  }
  return pids;
}

void kill_and_wait(const std::vector<pid_t>& pids) {
  for (pid_t pid : pids) ::kill(pid, SIGKILL);
  auto deadline = std::chrono::steady_clock::now() + 10s;
  while (std::chrono::steady_clock::now() < deadline &&
         std::any_of(pids.begin(), pids.end(), process_alive)) {
    std::this_thread::sleep_for(20ms);
  }
}

void remove_if_empty(const std::string& dir) {
  std::error_code ec;
  if (fs::is_directory(dir, ec) && fs::is_empty(dir, ec)) fs::remove(dir, ec);
}

}  // namespace

std::string CriContainerd::unavailable_reason() {
  if (geteuid() != 0) return "needs root (network namespaces, mounts, cgroups)";
  for (const char* tool :
       {"containerd", "ctr", "runc", "containerd-shim-runc-v2", "nsenter", "ip"}) {
    if (which(tool).empty()) return std::string(tool) + " is not installed";
  }
  for (const char* plugin : {"bridge", "host-local", "loopback"}) {
    if (access((std::string("/usr/lib/cni/") + plugin).c_str(), X_OK) != 0) {
      return std::string("CNI plugin /usr/lib/cni/") + plugin + " is not installed";
    }
  }
  return "";
}

CriContainerd::CriContainerd(CriContainerdOptions options) : options_(std::move(options)) {}

CriContainerd::~CriContainerd() {
  cleanup();
}

std::string CriContainerd::log_tail(size_t bytes) const {
  std::ifstream in(log_path_, std::ios::binary);
  std::string content((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return content.size() > bytes ? content.substr(content.size() - bytes) : content;
}

std::string CriContainerd::shim_socket(const std::string& id) const {
  // containerd 1.6 names a shim's socket after sha256(<containerd address>/<namespace>/<id>).
  return std::string(kRunContainerd) + "/s/" + sha256_hex(socket_ + "/" + kCriNamespace + "/" + id);
}

void CriContainerd::track_sandbox(const std::string& id) {
  if (sandbox_ids_.insert(id).second) remember_sandbox_netns(id);
}

void CriContainerd::track_container(const std::string& id) {
  container_ids_.insert(id);
}

void CriContainerd::remember_sandbox_netns(const std::string& sandbox_id) {
  if (!runtime_) return;
  Result<kubelet::cri::v1::PodSandboxStatusResponse> status =
      runtime_->pod_sandbox_status_verbose(sandbox_id);
  if (!status.is_ok()) return;
  static const std::regex kNetnsPath(R"re("(/(?:var/)?run/netns/cni-[0-9a-fA-F-]+)")re");
  for (const auto& [key, value] : status->info()) {
    for (std::sregex_iterator it(value.begin(), value.end(), kNetnsPath), end; it != end; ++it) {
      sandbox_netns_paths_.insert((*it)[1].str());
    }
  }
}

Status CriContainerd::start() {
  suffix_ = random_hex(4);
  netns_ = "skiff-cri-test-" + suffix_;
  cgroup_root_ = "/skiff-cri-test-" + suffix_;
  network_name_ = "skiff-cri-" + suffix_;
  int octet = 20 + std::stoi(suffix_.substr(0, 2), nullptr, 16) % 200;
  pod_ip_prefix_ = "10.88." + std::to_string(octet) + ".";
  pod_subnet_ = pod_ip_prefix_ + "0/24";

  std::error_code ec;
  run_containerd_existed_ = fs::exists(kRunContainerd, ec);
  var_lib_cni_existed_ = fs::exists(kVarLibCni, ec);
  cni_results_existed_ = fs::exists(kCniResults, ec);

  dir_ = std::make_unique<TempDir>("skiff-cri");
  socket_ = dir_->sub("containerd.sock");
  config_path_ = dir_->sub("config.toml");
  log_path_ = dir_->sub("containerd.log");

  SKIFF_RETURN_IF_ERROR(run({which("ip"), "netns", "add", netns_}));
  netns_created_ = true;
  // The CRI streaming server listens on 127.0.0.1 inside the namespace.
  SKIFF_RETURN_IF_ERROR(run({which("ip"), "-n", netns_, "link", "set", "lo", "up"}));
  SKIFF_RETURN_IF_ERROR(write_config());

  // nsenter, not `ip netns exec`: the latter remounts /sys and hides the cgroup mounts from runc.
  SKIFF_RETURN_IF_ERROR(containerd_.start({which("nsenter"), "--net=/var/run/netns/" + netns_,
                                           which("containerd"), "--config", config_path_},
                                          log_path_));
  kubelet::cri::GrpcRuntimeOptions runtime_options;
  runtime_options.endpoint = "unix://" + socket_;
  runtime_options.timeout = 60s;
  runtime_options.pull_timeout = 60s;
  Result<std::unique_ptr<kubelet::cri::GrpcRuntime>> runtime =
      kubelet::cri::connect_runtime(runtime_options, 60s);
  if (!runtime.is_ok()) {
    return Status(runtime.status().code(),
                  runtime.status().message() + "\ncontainerd log:\n" + log_tail());
  }
  runtime_ = std::move(runtime).value();
  return import_images();
}

Status CriContainerd::write_config() {
  const std::string cni_conf_dir = dir_->sub("cni");
  fs::create_directories(cni_conf_dir);
  std::ostringstream cni;
  cni << R"({
  "cniVersion": "1.0.0",
  "name": ")"
      << network_name_ << R"(",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "skcri)"
      << suffix_.substr(0, 6) << R"(",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": ")"
      << dir_->sub("cni-ipam") << R"(",
        "ranges": [[{"subnet": ")"
      << pod_subnet_ << R"("}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    }
  ]
}
)";
  SKIFF_RETURN_IF_ERROR(write_file(cni_conf_dir + "/10-skiff-cri-test.conflist", cni.str()));

  std::ostringstream config;
  config << "version = 2\n"
         << "root = \"" << dir_->sub("root") << "\"\n"
         << "state = \"" << dir_->sub("state") << "\"\n"
         << "disabled_plugins = [\"io.containerd.internal.v1.opt\", "
            "\"io.containerd.snapshotter.v1.aufs\", \"io.containerd.snapshotter.v1.btrfs\", "
            "\"io.containerd.snapshotter.v1.zfs\", \"io.containerd.snapshotter.v1.devmapper\"]\n"
         << "\n[grpc]\n"
         << "  address = \"" << socket_ << "\"\n"
         << "\n[plugins]\n"
         << "  [plugins.\"io.containerd.grpc.v1.cri\"]\n"
         << "    sandbox_image = \"" << kubelet::images::kPauseImage << "\"\n"
         << "    restrict_oom_score_adj = true\n"
         << "    stream_server_address = \"127.0.0.1\"\n"
         << "    stream_server_port = \"0\"\n"
         << "    [plugins.\"io.containerd.grpc.v1.cri\".containerd]\n"
         << "      snapshotter = \"overlayfs\"\n"
         << "      default_runtime_name = \"runc\"\n"
         << "      [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]\n"
         << "        runtime_type = \"io.containerd.runc.v2\"\n"
         << "        [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.options]\n"
         << "          SystemdCgroup = false\n"
         << "    [plugins.\"io.containerd.grpc.v1.cri\".cni]\n"
         << "      bin_dir = \"/usr/lib/cni\"\n"
         << "      conf_dir = \"" << cni_conf_dir << "\"\n";
  return write_file(config_path_, config.str());
}

Status CriContainerd::import_images() {
  namespace images = kubelet::images;
  if (access(options_.pause_binary.c_str(), X_OK) != 0) {
    return Status(StatusCode::kNotFound, "pause binary " + options_.pause_binary + " is missing");
  }
  SKIFF_ASSIGN_OR_RETURN(images::ImageSpec busybox,
                         images::busybox_image_spec(options_.busybox_binary));
  const std::string pause_tar = dir_->sub("pause.tar");
  const std::string busybox_tar = dir_->sub("busybox.tar");
  SKIFF_RETURN_IF_ERROR(
      images::write_oci_image(images::pause_image_spec(options_.pause_binary), pause_tar).status());
  SKIFF_RETURN_IF_ERROR(images::write_oci_image(busybox, busybox_tar).status());
  images::ImportOptions import;
  import.ctr = which("ctr");
  import.timeout = 60s;
  SKIFF_RETURN_IF_ERROR(images::import_image_tar(socket_, pause_tar, "", import));
  SKIFF_RETURN_IF_ERROR(images::import_image_tar(socket_, busybox_tar, "", import));
  return Status::ok();
}

std::vector<std::string> CriContainerd::cleanup() {
  if (cleaned_ || !dir_) return {};
  cleaned_ = true;
  std::vector<std::string> leftovers;
  std::error_code ec;

  // 1. The orderly way, through the CRI: stop and remove every sandbox (which stops and removes
  //    their containers, tears down their networks and deletes their namespaces).
  if (runtime_ && containerd_.running()) {
    Result<std::vector<kubelet::cri::v1::PodSandbox>> sandboxes = runtime_->list_pod_sandbox({});
    if (sandboxes.is_ok()) {
      for (const auto& s : *sandboxes) track_sandbox(s.id());
    }
    Result<std::vector<kubelet::cri::v1::Container>> containers = runtime_->list_containers({});
    if (containers.is_ok()) {
      for (const auto& c : *containers) track_container(c.id());
    }
    for (const std::string& id : sandbox_ids_) {
      (void)runtime_->stop_pod_sandbox(id);
      (void)runtime_->remove_pod_sandbox(id);
    }
  }
  runtime_.reset();

  // 2. containerd itself, then whatever it left running: shims (by their -address) and
  //    container processes (by our cgroup root).
  containerd_.stop(10s);
  kill_and_wait(shims_of(socket_));
  for (int pass = 0; pass < 3; ++pass) {
    std::vector<pid_t> pids = cgroup_pids(cgroup_root_);
    if (pids.empty()) break;
    kill_and_wait(pids);
  }

  // 3. Mounts: snapshots, rootfs, shm under the temp dir; the sandboxes' namespaces.
  unmount_all_under(dir_->path());
  for (const std::string& path : sandbox_netns_paths_) {
    // The path may go through the /var/run symlink, so ask the kernel rather than mountinfo;
    // it says EINVAL once nothing is mounted there any more.
    for (int i = 0; i < 4 && umount2(path.c_str(), MNT_DETACH) == 0; ++i) {
    }
    fs::remove(path, ec);
  }

  // 4. containerd's fixed host paths for the ids this instance used.
  std::set<std::string> ids = sandbox_ids_;
  ids.insert(container_ids_.begin(), container_ids_.end());
  for (const std::string& id : ids) {
    fs::remove(shim_socket(id), ec);
    fs::remove_all(std::string(kRunContainerd) + "/runc/" + kCriNamespace + "/" + id, ec);
  }
  if (!run_containerd_existed_) {
    for (const char* sub : {"/s", "/runc/k8s.io", "/runc", "/fifo", ""}) {
      remove_if_empty(std::string(kRunContainerd) + sub);
    }
  }
  // libcni caches each network's result as <network>-<sandbox id>-<ifname>: ours, and
  // containerd's own "cni-loopback" network for our sandboxes.
  auto ours = [&](const std::string& name) {
    if (name.rfind(network_name_ + "-", 0) == 0) return true;
    return std::any_of(sandbox_ids_.begin(), sandbox_ids_.end(), [&](const std::string& id) {
      return name.find("-" + id + "-") != std::string::npos;
    });
  };
  for (fs::directory_iterator it(kCniResults, ec), end; !ec && it != end; it.increment(ec)) {
    if (ours(it->path().filename().string())) {
      std::error_code remove_ec;
      fs::remove(it->path(), remove_ec);
    }
  }
  if (!cni_results_existed_) remove_if_empty(kCniResults);
  if (!var_lib_cni_existed_) remove_if_empty(kVarLibCni);

  // 5. cgroups: runc removes only the containers' own leaves.
  for (int pass = 0; pass < 5; ++pass) {
    std::vector<std::string> dirs = cgroup_dirs(cgroup_root_);
    if (dirs.empty()) break;
    for (const std::string& dir : dirs) rmdir(dir.c_str());
    if (!cgroup_dirs(cgroup_root_).empty()) std::this_thread::sleep_for(100ms);
  }

  // 6. The network namespace (and the bridge inside it).
  if (netns_created_) (void)run({which("ip"), "netns", "del", netns_});

  // What is still there.
  for (const std::string& m : mounts_under(dir_->path())) leftovers.push_back("mount " + m);
  for (const std::string& path : sandbox_netns_paths_) {
    if (fs::exists(path, ec)) leftovers.push_back("netns " + path);
  }
  if (netns_created_ && fs::exists("/var/run/netns/" + netns_, ec)) {
    leftovers.push_back("netns /var/run/netns/" + netns_);
  }
  for (pid_t pid : shims_of(socket_)) leftovers.push_back("shim pid " + std::to_string(pid));
  for (pid_t pid : cgroup_pids(cgroup_root_)) {
    leftovers.push_back("container process pid " + std::to_string(pid));
  }
  for (const std::string& dir : cgroup_dirs(cgroup_root_)) leftovers.push_back("cgroup " + dir);
  for (fs::directory_iterator it(kCniResults, ec), end; !ec && it != end; it.increment(ec)) {
    if (ours(it->path().filename().string())) {
      leftovers.push_back("CNI result " + it->path().string());
    }
  }
  for (const std::string& id : ids) {
    if (fs::exists(shim_socket(id), ec)) leftovers.push_back("shim socket " + shim_socket(id));
    std::string runc_state = std::string(kRunContainerd) + "/runc/" + kCriNamespace + "/" + id;
    if (fs::exists(runc_state, ec)) leftovers.push_back("runc state " + runc_state);
  }
  if (leftovers.empty()) {
    dir_.reset();  // removes the temp dir
  } else {
    // Deleting files under a live mount would reach into it; keep the directory for inspection.
    leftovers.push_back("kept " + dir_->path());
    (void)dir_.release();
  }
  return leftovers;
}

}  // namespace skiff::testing
