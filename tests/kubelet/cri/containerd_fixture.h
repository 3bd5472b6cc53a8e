#pragma once

// A real containerd for CRI tests, started by the test and cleaned up after it.
//
// start() creates a network namespace (skiff-cri-test-<random>), a temp dir with containerd's
// config (version 2, root/state/socket inside the temp dir, CRI plugin with overlayfs, runc v2
// on cgroupfs, restrict_oom_score_adj, a bridge + host-local CNI conflist for a random
// 10.88.x.0/24), runs `nsenter --net=/var/run/netns/NAME containerd --config F` as a child, waits
// for CRI v1 and imports the pause and busybox images.
//
// cleanup() (also run by the destructor) removes everything the instance put on the host, even
// after a failed test: it stops and removes every sandbox through the CRI, stops containerd, kills
// shims and container processes it left (found by their containerd address and by cgroup, never
// by name), unmounts whatever is mounted under the temp dir, deletes the sandboxes' network
// namespaces, the shim sockets and runc state of the ids it has seen, its CNI cache files, the
// cgroup directories under its cgroup root, and its network namespace. It returns what it could
// not remove, so a test can fail on leftovers.
//
// Thread-safety: none; one test thread drives an instance.

#include <memory>
#include <set>
#include <string>
#include <vector>

#include "base/status.h"
#include "kubelet/cri/grpc_runtime.h"
#include "support/child_process.h"
#include "support/temp_dir.h"

namespace skiff::testing {

struct CriContainerdOptions {
  std::string pause_binary;  // the static skiff-pause program
  std::string busybox_binary = "/bin/busybox";
};

class CriContainerd {
 public:
  // Why a real containerd cannot run here (not root, containerd/ctr/runc/nsenter/ip/CNI plugins
  // or busybox missing); "" when it can.
  static std::string unavailable_reason();

  explicit CriContainerd(CriContainerdOptions options);
  ~CriContainerd();
  CriContainerd(const CriContainerd&) = delete;
  CriContainerd& operator=(const CriContainerd&) = delete;

  Status start();
  // Idempotent. Returns a description of each thing it could not remove.
  std::vector<std::string> cleanup();
  // SIGKILLs containerd, as a crash would (its shims and containers keep running).
  void kill_containerd() { containerd_.kill_now(); }

  kubelet::cri::GrpcRuntime& runtime() { return *runtime_; }
  const std::string& dir() const { return dir_->path(); }
  const std::string& socket() const { return socket_; }
  const std::string& netns() const { return netns_; }
  // A cgroup parent for pods: "/skiff-cri-test-<random>" (pods go in "<root>/pod<uid>").
  const std::string& cgroup_root() const { return cgroup_root_; }
  // The pods' subnet, "10.88.x.0/24", and its first three octets "10.88.x.".
  const std::string& pod_subnet() const { return pod_subnet_; }
  const std::string& pod_ip_prefix() const { return pod_ip_prefix_; }
  // The last `bytes` of containerd's log, for failure messages.
  std::string log_tail(size_t bytes = 4000) const;

  // Where containerd 1.6 puts the shim socket for a sandbox or container id.
  std::string shim_socket(const std::string& id) const;

  // Ids the cleanup must account for even if the runtime no longer lists them.
  void track_sandbox(const std::string& id);
  void track_container(const std::string& id);

 private:
  Status write_config();
  Status import_images();
  void remember_sandbox_netns(const std::string& sandbox_id);

  const CriContainerdOptions options_;
  std::unique_ptr<TempDir> dir_;
  std::string suffix_;
  std::string netns_;
  std::string socket_;
  std::string config_path_;
  std::string log_path_;
  std::string cgroup_root_;
  std::string network_name_;
  std::string pod_subnet_;
  std::string pod_ip_prefix_;
  bool netns_created_ = false;
  bool run_containerd_existed_ = false;
  bool var_lib_cni_existed_ = false;
  bool cni_results_existed_ = false;
  ChildProcess containerd_;
  std::unique_ptr<kubelet::cri::GrpcRuntime> runtime_;
  std::set<std::string> sandbox_ids_;
  std::set<std::string> container_ids_;
  std::set<std::string> sandbox_netns_paths_;
  bool cleaned_ = false;
};

}  // namespace skiff::testing
