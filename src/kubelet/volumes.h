#pragma once

// A pod's volumes on the node: each volume gets a directory under
// <pods_dir>/<uid>/volumes/<plugin>/<name> (emptyDir, configMap, secret, downwardAPI, projected;
// emptyDir with medium Memory is a tmpfs), or is a host path (hostPath, checked or created as its
// type says). ConfigMap, Secret, downward API and projected contents are written the way
// upstream's atomic writer lays them out (a timestamped directory, a "..data" symlink to it and a
// symlink per file), so updates are swapped in whole and containers see them without restarting.
// The kubelet also keeps per-pod /etc/hosts and per-container termination-log files here.
//
// Thread-safety: a VolumeManager is safe to use from several threads as long as each pod is set
// up and torn down by one thread at a time (the pod workers guarantee this).

#include <string>
#include <vector>

#include "base/status.h"
#include "kubelet/pod_config.h"

namespace skiff::kubelet {

class VolumeManager {
 public:
  VolumeManager(std::string pods_dir, ObjectSource source);

  // Creates or refreshes every volume of the pod. Errors name the volume and the cause (a missing
  // ConfigMap or Secret that is not optional, a hostPath of the wrong type).
  Status set_up(const Json& pod);
  // The bind mounts for one container: its volumeMounts (with subPath), plus /etc/hosts (unless
  // hostNetwork) and the termination-message file.
  Result<std::vector<ContainerMount>> mounts_for(const Json& pod, const Json& container,
                                                 const std::string& pod_ip,
                                                 const std::string& hostname);
  // The termination message a container left in its file ("" when none).
  std::string termination_message(const std::string& uid, const std::string& container) const;
  // Unmounts what set_up mounted and removes the pod's directory.
  Status tear_down(const std::string& uid);
  // UIDs that have a directory here (to find pods to clean up after a restart).
  std::vector<std::string> pods_on_disk() const;

  std::string pod_dir(const std::string& uid) const { return pods_dir_ + "/" + uid; }

 private:
  std::string volume_dir(const std::string& uid, const std::string& plugin,
                         const std::string& name) const;

  const std::string pods_dir_;
  const ObjectSource source_;
};

// Writes files (relative path → content, mode) into dir atomically as a set, replacing what an
// earlier call wrote (upstream's atomic writer layout). Unchanged content is not rewritten.
struct FileToWrite {
  std::string path;
  std::string content;
  int mode = 0644;
};
Status write_atomic_dir(const std::string& dir, const std::vector<FileToWrite>& files);

}  // namespace skiff::kubelet
