#pragma once

// Options, file layout and config.toml for the containerd a skiff node runs for itself.
//
// Layout under the node's data dir D: D/containerd/{root,state,config.toml,containerd.log} and
// the gRPC socket D/containerd/containerd.sock. A unix socket path must fit sun_path (107 bytes
// plus NUL) together with the ".ttrpc" suffix containerd adds for its second socket; when it does
// not, the socket moves to /run/skiff-<hash of D>/containerd.sock.
//
// The config (version 2) sets what this kind of host needs: the CRI plugin with the overlayfs
// snapshotter, runc (or crun, as the runtime's BinaryName) through io.containerd.runc.v2 with
// cgroupfs (SystemdCgroup = false),
// restrict_oom_score_adj (root may lack CAP_SYS_RESOURCE, and runc then fails every sandbox),
// the node's CNI directories, the sandbox image, an optional registry hosts directory, and a few
// plugins disabled that only cost start time or write outside the data dir.
//
// Thread-safety: plain values and free functions; safe from any thread.

#include <chrono>
#include <string>
#include <vector>

#include "base/status.h"

namespace skiff::kubelet::containerd {

// Plugins skipped by default: /opt/containerd (the "opt" plugin writes there), and snapshotters
// that cannot work on a plain node filesystem but are probed at every start.
std::vector<std::string> default_disabled_plugins();

struct ContainerdOptions {
  // The node's data dir; containerd's files go under <data_dir>/containerd.
  std::string data_dir;
  std::string containerd_binary = "containerd";
  // Used for the readiness check (`ctr version`); when it cannot be found only the socket's
  // accepting connections is checked.
  std::string ctr_binary = "ctr";
  // Where the CRI plugin reads the CNI conflist; "" means <data_dir>/cni/net.d.
  std::string cni_conf_dir;
  std::string cni_bin_dir = "/usr/lib/cni";
  std::string sandbox_image = "registry.k8s.io/pause:3.9";
  // "" means <data_dir>/containerd/containerd.log. containerd's output is appended.
  std::string log_file;
  // A directory of per-registry hosts.toml files (containerd's registry config_path: mirrors,
  // TLS); "" leaves registries at their defaults.
  std::string registry_config_path;
  // Prepended to the containerd command line, e.g. {"nsenter", "--net=/var/run/netns/X"} to run
  // containerd (and so the pods' networking) inside a network namespace.
  std::vector<std::string> command_prefix;
  // The runc-compatible program containerd's runc shim runs (its BinaryName), e.g. the
  // skiff-crun helper; "" means runc from PATH.
  std::string runtime_binary;
  std::vector<std::string> disabled_plugins = default_disabled_plugins();
  std::string log_level = "info";

  // start() fails when containerd does not answer within this.
  std::chrono::milliseconds ready_timeout = std::chrono::seconds(60);
  // stop(): SIGTERM, then SIGKILL after this.
  std::chrono::milliseconds stop_grace = std::chrono::seconds(10);
  // A containerd that exits is restarted after a delay that doubles from `initial` up to `max`,
  // and drops back to `initial` once a run has lasted `stable_after`.
  std::chrono::milliseconds restart_backoff_initial = std::chrono::milliseconds(500);
  std::chrono::milliseconds restart_backoff_max = std::chrono::seconds(30);
  std::chrono::milliseconds stable_after = std::chrono::seconds(60);
};

struct ContainerdPaths {
  std::string base;    // <data_dir>/containerd
  std::string root;    // persistent: content, snapshots, metadata
  std::string state;   // runtime state
  std::string socket;  // gRPC address (a unix socket path)
  std::string config;  // config.toml
  std::string log;
  std::string cni_conf_dir;
  // The /run/skiff-<hash> directory when the socket had to move there; "" otherwise.
  std::string socket_fallback_dir;
};

// Longest unix socket path containerd can use: sun_path holds 107 bytes plus the NUL, and
// containerd also listens on "<socket>.ttrpc".
inline constexpr size_t kMaxSocketPathLength = 107 - 6;

// The layout for `options` (data_dir made absolute). kInvalidArgument when data_dir is empty.
Result<ContainerdPaths> containerd_paths(const ContainerdOptions& options);

// The PATH containerd runs with (and passes to its shims, runc and the CNI plugins): ours, plus
// the usual system directories, so a minimal environment still finds them.
std::string containerd_path_env();

// The name of the helper that runs crun for the runc shim (src/kubelet/containerd/crun); the build
// puts it next to the skiff binary.
inline constexpr char kCrunHelper[] = "skiff-crun";

// ContainerdOptions::runtime_binary for an --oci-runtime choice: "runc" gives "" (runc from
// PATH); "crun" gives `helper_dir`/skiff-crun, and kNotFound unless that helper exists and crun
// is on `path_env`; "auto" gives crun when it can, else runc. kInvalidArgument for anything else.
Result<std::string> oci_runtime_binary(const std::string& choice, const std::string& helper_dir,
                                       const std::string& path_env);

// config.toml for `options` laid out as `paths`.
std::string render_containerd_config(const ContainerdOptions& options,
                                     const ContainerdPaths& paths);

}  // namespace skiff::kubelet::containerd
