#pragma once

// GrpcRuntime: RuntimeService and ImageService over CRI v1 gRPC, the way the kubelet talks to
// containerd (or any CRI runtime) on its unix socket. One channel is shared by every call; each
// call carries its own deadline. gRPC stays behind this header: users see only the CRI messages.
//
// Deadlines follow upstream's kubelet: `timeout` for every call, plus the container's own grace
// period for StopContainer and the command's timeout for ExecSync (no deadline at all when that
// timeout is 0), and `pull_timeout` for PullImage.
//
// Thread-safety: every method may be called from any number of threads at once.

#include <chrono>
#include <memory>
#include <string>
#include <string_view>

#include "base/status.h"
#include "kubelet/cri/runtime_service.h"

namespace skiff::kubelet::cri {

struct GrpcRuntimeOptions {
  // "unix:///run/containerd/containerd.sock" or a plain socket path.
  std::string endpoint;
  std::chrono::milliseconds timeout = std::chrono::minutes(2);
  std::chrono::milliseconds pull_timeout = std::chrono::minutes(30);
  // Both directions: image lists and verbose statuses of a busy node can be large.
  int max_message_bytes = 16 * 1024 * 1024;
};

class GrpcRuntime final : public RuntimeService, public ImageService {
 public:
  // Connects lazily: the first call (or connect_runtime) establishes the channel.
  explicit GrpcRuntime(GrpcRuntimeOptions options);
  ~GrpcRuntime() override;
  GrpcRuntime(const GrpcRuntime&) = delete;
  GrpcRuntime& operator=(const GrpcRuntime&) = delete;

  const GrpcRuntimeOptions& options() const { return options_; }

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

  // PodSandboxStatus with verbose set: the runtime's own details (for containerd, a JSON document
  // under info["info"] with the sandbox's pid, network namespace path and OCI spec).
  Result<v1::PodSandboxStatusResponse> pod_sandbox_status_verbose(const std::string& sandbox_id);
  // Version with a deadline of its own (connect_runtime probes with what is left of its wait).
  Result<v1::VersionResponse> version_within(std::chrono::milliseconds timeout);
  // Waits up to `timeout` for the channel to be connected.
  Status wait_connected(std::chrono::milliseconds timeout);

 private:
  struct Impl;

  const GrpcRuntimeOptions options_;
  std::unique_ptr<Impl> impl_;
};

// The socket path of a CRI endpoint: "unix:///path" and "/path" both give "/path". Other schemes
// are refused (skiff's runtimes serve the CRI on unix sockets only).
Result<std::string> socket_path_for_endpoint(const std::string& endpoint);

// The skiff code for a gRPC status code (grpc::StatusCode as an int) and its message. Besides the
// one-to-one codes, containerd reports some missing objects as UNKNOWN with a "not found" message:
// those are kNotFound too.
StatusCode status_code_for_grpc(int grpc_code, std::string_view message);

// Waits (up to `connect_timeout`) for the endpoint's socket to appear and answer Version, and
// checks that it speaks CRI v1.
Result<std::unique_ptr<GrpcRuntime>> connect_runtime(const GrpcRuntimeOptions& options,
                                                     std::chrono::milliseconds connect_timeout);
Result<std::unique_ptr<GrpcRuntime>> connect_runtime(const std::string& endpoint,
                                                     std::chrono::milliseconds connect_timeout);

}  // namespace skiff::kubelet::cri
