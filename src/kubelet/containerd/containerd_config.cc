#include "kubelet/containerd/containerd_config.h"

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <sstream>

#include "base/process.h"

namespace skiff::kubelet::containerd {
namespace {

// A TOML basic string.
std::string quote(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\u%04x", c);
          out += buf;
        } else {
          out += c;
        }
    }
  }
  return out + "\"";
}

// FNV-1a: a stable short name for a data dir, the same in every build.
uint64_t fnv1a(const std::string& s) {
  uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  return h;
}

}  // namespace

std::vector<std::string> default_disabled_plugins() {
  return {
      "io.containerd.internal.v1.opt",      "io.containerd.snapshotter.v1.aufs",
      "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper",
      "io.containerd.snapshotter.v1.zfs",
  };
}

Result<ContainerdPaths> containerd_paths(const ContainerdOptions& options) {
  if (options.data_dir.empty()) {
    return error(StatusCode::kInvalidArgument, "containerd needs a data dir");
  }
  std::error_code ec;
  std::string data_dir = std::filesystem::absolute(options.data_dir, ec).lexically_normal();
  if (ec) return error(StatusCode::kInvalidArgument, "bad data dir " + options.data_dir);
  while (data_dir.size() > 1 && data_dir.back() == '/') data_dir.pop_back();
  ContainerdPaths paths;
  paths.base = data_dir + "/containerd";
  paths.root = paths.base + "/root";
  paths.state = paths.base + "/state";
  paths.config = paths.base + "/config.toml";
  paths.log = options.log_file.empty() ? paths.base + "/containerd.log" : options.log_file;
  paths.cni_conf_dir =
      options.cni_conf_dir.empty() ? data_dir + "/cni/net.d" : options.cni_conf_dir;
  paths.socket = paths.base + "/containerd.sock";
  if (paths.socket.size() > kMaxSocketPathLength) {
    char hash[17];
    std::snprintf(hash, sizeof(hash), "%016llx", static_cast<unsigned long long>(fnv1a(data_dir)));
    paths.socket_fallback_dir = "/run/skiff-" + std::string(hash, 12);
    paths.socket = paths.socket_fallback_dir + "/containerd.sock";
  }
  return paths;
}

std::string containerd_path_env() {
  const char* current = std::getenv("PATH");
  std::string path = current != nullptr ? current : "";
  for (const char* dir :
       {"/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"}) {
    std::string padded = ":" + path + ":";
    if (padded.find(std::string(":") + dir + ":") == std::string::npos) {
      path += (path.empty() ? "" : ":") + std::string(dir);
    }
  }
  return path;
}

Result<std::string> oci_runtime_binary(const std::string& choice, const std::string& helper_dir,
                                       const std::string& path_env) {
  if (choice == "runc") return std::string();
  if (choice != "crun" && choice != "auto") {
    return error(StatusCode::kInvalidArgument,
                 "--oci-runtime " + choice + ": expected auto, crun or runc");
  }
  std::string helper = helper_dir + "/" + kCrunHelper;
  Status missing = Status::ok();
  if (access(helper.c_str(), X_OK) != 0) {
    missing = error(StatusCode::kNotFound, "the crun helper " + helper + " is missing");
  } else if (Result<std::string> crun = find_executable("crun", path_env); !crun.is_ok()) {
    missing = error(StatusCode::kNotFound, "crun is not installed");
  }
  if (missing.is_ok()) return helper;
  if (choice == "crun") return missing;
  return std::string();
}

std::string render_containerd_config(const ContainerdOptions& options,
                                     const ContainerdPaths& paths) {
  const std::string cri = "[plugins.\"io.containerd.grpc.v1.cri\"";
  std::ostringstream out;
  out << "# Written by skiff for the node's own containerd; rewritten on every start.\n";
  out << "version = 2\n";
  out << "root = " << quote(paths.root) << "\n";
  out << "state = " << quote(paths.state) << "\n";
  out << "disabled_plugins = [";
  for (size_t i = 0; i < options.disabled_plugins.size(); ++i) {
    out << (i ? ", " : "") << quote(options.disabled_plugins[i]);
  }
  out << "]\n\n";
  out << "[grpc]\n";
  out << "  address = " << quote(paths.socket) << "\n\n";
  out << "[debug]\n";
  out << "  level = " << quote(options.log_level) << "\n\n";
  out << cri << "]\n";
  out << "  sandbox_image = " << quote(options.sandbox_image) << "\n";
  out << "  restrict_oom_score_adj = true\n";
  out << "  enable_selinux = false\n";
  // exec, attach and port-forward: the kubelet relays them to this server, on loopback only.
  out << "  stream_server_address = \"127.0.0.1\"\n";
  out << "  stream_server_port = \"0\"\n";
  out << "  enable_tls_streaming = false\n";
  out << "\n" << cri << ".containerd]\n";
  out << "  snapshotter = \"overlayfs\"\n";
  out << "  default_runtime_name = \"runc\"\n";
  out << "\n" << cri << ".containerd.runtimes.runc]\n";
  out << "  runtime_type = \"io.containerd.runc.v2\"\n";
  out << "\n" << cri << ".containerd.runtimes.runc.options]\n";
  out << "  SystemdCgroup = false\n";
  if (!options.runtime_binary.empty()) {
    out << "  BinaryName = " << quote(options.runtime_binary) << "\n";
  }
  out << "\n" << cri << ".cni]\n";
  out << "  bin_dir = " << quote(options.cni_bin_dir) << "\n";
  out << "  conf_dir = " << quote(paths.cni_conf_dir) << "\n";
  if (!options.registry_config_path.empty()) {
    out << "\n" << cri << ".registry]\n";
    out << "  config_path = " << quote(options.registry_config_path) << "\n";
  }
  return out.str();
}

}  // namespace skiff::kubelet::containerd
