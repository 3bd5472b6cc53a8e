#pragma once

// FakeRuntime: an in-memory RuntimeService and ImageService for the kubelet's unit tests.
//
// It keeps sandboxes and containers with the state machine a CRI runtime has (containers go
// CREATED -> RUNNING -> EXITED; sandboxes READY -> NOTREADY), gives sandboxes pod IPs from
// 10.42.0.0/24, answers the filters of the list calls, and holds a set of present images (pulls
// succeed only for images marked pullable). Its answers follow containerd's where the CRI leaves
// room: stopping or removing something missing is not an error for Remove*, is kNotFound for
// Stop*/status calls; stopping a sandbox kills its containers (exit code 137); removing a running
// container or a ready sandbox stops it first.
//
// Test controls change the runtime's world (exit_container, set_exec_result, ...), inject errors
// for the next calls of a method, and read back a log of the calls made.
//
// Thread-safety: every method, the controls included, may be called from any number of threads at
// once; one mutex guards all state.

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "base/status.h"
#include "kubelet/cri/runtime_service.h"

namespace skiff::kubelet::cri {

class FakeRuntime final : public RuntimeService, public ImageService {
 public:
  FakeRuntime();
  ~FakeRuntime() override;

  // RuntimeService.
  Result<v1::VersionResponse> version() override;
  Result<v1::StatusResponse> status() override;
  Status update_runtime_config(const v1::RuntimeConfig& config) override;
  Result<std::string> run_pod_sandbox(const v1::PodSandboxConfig& config,
                                      const std::string& runtime_handler) override;
  Status stop_pod_sandbox(const std::string& sandbox_id) override;
  Status remove_pod_sandbox(const std::string& sandbox_id) override;
  Result<v1::PodSandboxStatus> pod_sandbox_status(const std::string& sandbox_id) override;
  Result<std::vector<v1::PodSandbox>> list_pod_sandbox(const v1::PodSandboxFilter& filter) override;
  Result<std::string> create_container(const std::string& sandbox_id,
                                       const v1::ContainerConfig& config,
                                       const v1::PodSandboxConfig& sandbox_config) override;
  Status start_container(const std::string& container_id) override;
  Status stop_container(const std::string& container_id, int64_t timeout_seconds) override;
  Status remove_container(const std::string& container_id) override;
  Result<std::vector<v1::Container>> list_containers(const v1::ContainerFilter& filter) override;
  Result<v1::ContainerStatus> container_status(const std::string& container_id) override;
  Status update_container_resources(const std::string& container_id,
                                    const v1::LinuxContainerResources& resources) override;
  Status reopen_container_log(const std::string& container_id) override;
  Result<v1::ExecSyncResponse> exec_sync(const std::string& container_id,
                                         const std::vector<std::string>& cmd,
                                         int64_t timeout_seconds) override;
  Result<std::string> exec(const v1::ExecRequest& request) override;
  Result<std::string> attach(const v1::AttachRequest& request) override;
  Result<std::string> port_forward(const v1::PortForwardRequest& request) override;
  Result<v1::ContainerStats> container_stats(const std::string& container_id) override;
  Result<std::vector<v1::ContainerStats>> list_container_stats(
      const v1::ContainerStatsFilter& filter) override;

  // ImageService.
  Result<std::vector<v1::Image>> list_images(const v1::ImageFilter& filter) override;
  Result<std::optional<v1::Image>> image_status(const v1::ImageSpec& image) override;
  Result<std::string> pull_image(const v1::ImageSpec& image, const v1::AuthConfig& auth,
                                 const v1::PodSandboxConfig& sandbox_config) override;
  Status remove_image(const v1::ImageSpec& image) override;
  Result<std::vector<v1::FilesystemUsage>> image_fs_info() override;

  // ---- Test controls ----

  // Nanoseconds since the epoch for created/started/finished timestamps (default: the real clock).
  void set_clock(std::function<int64_t()> now_nanos);

  // Images are named as the runtime normalizes them ("busybox" is
  // "docker.io/library/busybox:latest"); any spelling works here and in the calls.
  // add_image makes an image present (its id is returned); pullable images can be pulled.
  std::string add_image(const std::string& name, uint64_t size_bytes = 1 << 20);
  void add_pullable_image(const std::string& name);
  // The error for pulls of images that are not pullable (default: kNotFound, as a registry's
  // "not found").
  void set_pull_error(Status error);
  // Names of the images pulled so far, in order.
  std::vector<std::string> pulled_images() const;
  // The credentials each pull was given, in order (empty AuthConfig when none).
  std::vector<v1::AuthConfig> pull_auths() const;

  // The next call of `method` (its CRI name: "RunPodSandbox", "StartContainer", "PullImage",
  // ...) fails with `error` instead of doing anything. Injected errors queue up per method.
  void inject_error(const std::string& method, Status error);

  // Makes a running container exit as if its process ended. Reason defaults to containerd's
  // ("Completed" for 0, "Error" otherwise). kNotFound if there is no such container,
  // kFailedPrecondition if it is not running.
  Status exit_container(const std::string& container_id, int32_t exit_code,
                        const std::string& reason = "", const std::string& message = "");
  // The exit code a container reports when stop_container gives it a grace period (it handles
  // the stop signal); default 0. A zero grace period always kills: 137.
  Status set_stop_exit_code(const std::string& container_id, int32_t exit_code);
  // Marks a sandbox NOTREADY as if its pause process died; its containers keep running.
  Status kill_sandbox(const std::string& sandbox_id);

  // exec_sync answers for a command (matched on the whole argv). container_id "" matches every
  // container; a container-specific answer wins. Unknown commands exit 0 with no output.
  void set_exec_result(const std::vector<std::string>& cmd, v1::ExecSyncResponse result,
                       const std::string& container_id = "");

  // Stats reported for a running container (default: zeros); kNotFound for an unknown id.
  Status set_container_stats(const std::string& container_id, uint64_t cpu_core_nanos,
                             uint64_t memory_working_set_bytes, uint64_t writable_layer_bytes);

  // A runtime condition ("RuntimeReady", "NetworkReady"); both start true.
  void set_condition(const std::string& type, bool status, const std::string& reason = "",
                     const std::string& message = "");

  // Every call made, by CRI method name, in order ("RunPodSandbox", "CreateContainer", ...).
  std::vector<std::string> calls() const;
  int call_count(const std::string& method) const;
  void clear_calls();

  // What the runtime was given, for assertions.
  std::optional<v1::PodSandboxConfig> sandbox_config(const std::string& sandbox_id) const;
  std::optional<v1::ContainerConfig> container_config(const std::string& container_id) const;
  std::string pod_cidr() const;
  int reopen_count(const std::string& container_id) const;

  // "docker.io/library/busybox:latest" for "busybox"; digests and explicit registries are kept.
  static std::string normalize_image(const std::string& name);

 private:
  struct Sandbox {
    v1::PodSandboxConfig config;
    std::string runtime_handler;
    v1::PodSandboxState state = v1::SANDBOX_READY;
    int64_t created_at = 0;
    std::string ip;  // "" for host-network sandboxes and once stopped
  };
  struct ContainerRecord {
    std::string sandbox_id;
    v1::ContainerConfig config;
    std::string log_path;  // absolute
    std::string image_id;
    v1::ContainerState state = v1::CONTAINER_CREATED;
    int64_t created_at = 0;
    int64_t started_at = 0;
    int64_t finished_at = 0;
    int32_t exit_code = 0;
    std::string reason;
    std::string message;
    int32_t stop_exit_code = 0;
    int reopen_count = 0;
    v1::LinuxContainerResources resources;
    uint64_t cpu_core_nanos = 0;
    uint64_t memory_working_set_bytes = 0;
    uint64_t writable_layer_bytes = 0;
  };
  struct ImageRecord {
    std::string id;
    std::string name;  // normalized
    uint64_t size = 0;
  };

  // All private helpers expect mu_ held.
  Status begin_call(const std::string& method);
  int64_t now() const;
  std::string next_id();
  std::string allocate_ip();
  const ImageRecord* find_image(const std::string& name_or_id) const;
  // The container, or kNotFound; running_container_locked also kFailedPrecondition unless it runs.
  Result<ContainerRecord*> container_locked(const std::string& container_id);
  Result<ContainerRecord*> running_container_locked(const std::string& container_id);
  void finish_container(ContainerRecord& c, int32_t exit_code, std::string reason,
                        std::string message);
  void stop_sandbox_locked(Sandbox& sandbox, const std::string& sandbox_id);
  v1::ContainerStats stats_of(const std::string& id, const ContainerRecord& c) const;

  mutable std::mutex mu_;
  std::function<int64_t()> clock_;
  uint64_t id_counter_ = 0;
  std::map<std::string, Sandbox> sandboxes_;
  std::map<std::string, ContainerRecord> containers_;
  std::map<std::string, ImageRecord> images_;  // by normalized name
  std::set<std::string> pullable_;             // normalized names
  Status pull_error_;
  std::vector<std::string> pulled_;
  std::vector<v1::AuthConfig> pull_auths_;
  std::map<std::string, std::deque<Status>> injected_;
  std::map<std::pair<std::string, std::string>, v1::ExecSyncResponse> exec_results_;
  std::map<std::string, v1::RuntimeCondition> conditions_;
  std::set<int> used_ip_hosts_;
  std::vector<std::string> calls_;
  std::string pod_cidr_;
};

}  // namespace skiff::kubelet::cri
