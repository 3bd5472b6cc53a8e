#pragma once

// The kubelet's view of a container runtime: the CRI v1 RuntimeService and ImageService, one
// method per RPC the kubelet uses, taking and returning the CRI messages themselves (generated
// from cri/api.proto, package runtime.v1). GrpcRuntime talks to a real runtime over its socket;
// FakeRuntime (fake_runtime.h) keeps everything in memory for unit tests.
//
// Errors: kNotFound when the runtime says the sandbox, container or image does not exist;
// kDeadlineExceeded when a call outlives its timeout; kUnavailable when the runtime cannot be
// reached; otherwise the runtime's message with the closest code.
//
// Thread-safety: implementations are safe to call from any number of threads at once.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "base/status.h"
#include "kubelet/cri/api.pb.h"

namespace skiff::kubelet::cri {

namespace v1 = ::runtime::v1;

class RuntimeService {
 public:
  virtual ~RuntimeService() = default;

  virtual Result<v1::VersionResponse> version() = 0;
  // Runtime conditions (RuntimeReady, NetworkReady).
  virtual Result<v1::StatusResponse> status() = 0;
  virtual Status update_runtime_config(const v1::RuntimeConfig& config) = 0;

  // Sandboxes. run_pod_sandbox returns the new sandbox's id.
  virtual Result<std::string> run_pod_sandbox(const v1::PodSandboxConfig& config,
                                              const std::string& runtime_handler) = 0;
  virtual Status stop_pod_sandbox(const std::string& sandbox_id) = 0;
  virtual Status remove_pod_sandbox(const std::string& sandbox_id) = 0;
  virtual Result<v1::PodSandboxStatus> pod_sandbox_status(const std::string& sandbox_id) = 0;
  virtual Result<std::vector<v1::PodSandbox>> list_pod_sandbox(
      const v1::PodSandboxFilter& filter) = 0;

  // Containers. create_container returns the new container's id.
  virtual Result<std::string> create_container(const std::string& sandbox_id,
                                               const v1::ContainerConfig& config,
                                               const v1::PodSandboxConfig& sandbox_config) = 0;
  virtual Status start_container(const std::string& container_id) = 0;
  // Sends the stop signal, waits up to timeout_seconds, then kills.
  virtual Status stop_container(const std::string& container_id, int64_t timeout_seconds) = 0;
  virtual Status remove_container(const std::string& container_id) = 0;
  virtual Result<std::vector<v1::Container>> list_containers(const v1::ContainerFilter& filter) = 0;
  virtual Result<v1::ContainerStatus> container_status(const std::string& container_id) = 0;
  // Changes a running container's cgroup limits in place.
  virtual Status update_container_resources(const std::string& container_id,
                                            const v1::LinuxContainerResources& resources) = 0;
  virtual Status reopen_container_log(const std::string& container_id) = 0;

  // Runs cmd in the container and collects its output; timeout_seconds 0 means none.
  virtual Result<v1::ExecSyncResponse> exec_sync(const std::string& container_id,
                                                 const std::vector<std::string>& cmd,
                                                 int64_t timeout_seconds) = 0;
  // Streaming sessions: each returns the URL of the runtime's streaming server for it.
  virtual Result<std::string> exec(const v1::ExecRequest& request) = 0;
  virtual Result<std::string> attach(const v1::AttachRequest& request) = 0;
  virtual Result<std::string> port_forward(const v1::PortForwardRequest& request) = 0;

  // Stats.
  virtual Result<v1::ContainerStats> container_stats(const std::string& container_id) = 0;
  virtual Result<std::vector<v1::ContainerStats>> list_container_stats(
      const v1::ContainerStatsFilter& filter) = 0;
};

class ImageService {
 public:
  virtual ~ImageService() = default;

  virtual Result<std::vector<v1::Image>> list_images(const v1::ImageFilter& filter) = 0;
  // nullopt when the runtime does not have the image.
  virtual Result<std::optional<v1::Image>> image_status(const v1::ImageSpec& image) = 0;
  // Returns the pulled image's reference (its id).
  virtual Result<std::string> pull_image(const v1::ImageSpec& image, const v1::AuthConfig& auth,
                                         const v1::PodSandboxConfig& sandbox_config) = 0;
  virtual Status remove_image(const v1::ImageSpec& image) = 0;
  virtual Result<std::vector<v1::FilesystemUsage>> image_fs_info() = 0;
};

}  // namespace skiff::kubelet::cri
