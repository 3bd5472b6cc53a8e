#include "kubelet/cri/grpc_runtime.h"

#include <grpcpp/grpcpp.h>
#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <iterator>
#include <optional>
#include <thread>
#include <utility>

#include "kubelet/cri/api.grpc.pb.h"

namespace skiff::kubelet::cri {

namespace {

using Millis = std::chrono::milliseconds;
using RuntimeStub = v1::RuntimeService::Stub;
using ImageStub = v1::ImageService::Stub;

bool contains_not_found(std::string_view message) {
  std::string lower(message);
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return lower.find("not found") != std::string::npos ||
         lower.find("does not exist") != std::string::npos;
}

Status from_grpc(std::string_view rpc, const grpc::Status& status) {
  if (status.ok()) return Status::ok();
  return Status(status_code_for_grpc(status.error_code(), status.error_message()),
                "CRI " + std::string(rpc) + ": " + status.error_message());
}

template <typename T>
std::vector<T> take_all(google::protobuf::RepeatedPtrField<T>* items) {
  return std::vector<T>(std::make_move_iterator(items->begin()),
                        std::make_move_iterator(items->end()));
}

}  // namespace

Result<std::string> socket_path_for_endpoint(const std::string& endpoint) {
  std::string path = endpoint;
  if (path.rfind("unix://", 0) == 0) {
    path = path.substr(7);
  } else if (path.rfind("unix:", 0) == 0) {
    path = path.substr(5);
  } else if (path.find("://") != std::string::npos) {
    return Status(StatusCode::kInvalidArgument,
                  "CRI endpoint " + endpoint + ": only unix sockets are supported");
  }
  if (path.empty()) {
    return Status(StatusCode::kInvalidArgument, "CRI endpoint '" + endpoint + "' has no path");
  }
  return path;
}

StatusCode status_code_for_grpc(int grpc_code, std::string_view message) {
  switch (static_cast<grpc::StatusCode>(grpc_code)) {
    case grpc::StatusCode::OK:
      return StatusCode::kOk;
    case grpc::StatusCode::CANCELLED:
      return StatusCode::kCancelled;
    case grpc::StatusCode::INVALID_ARGUMENT:
      return StatusCode::kInvalidArgument;
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return StatusCode::kDeadlineExceeded;
    case grpc::StatusCode::NOT_FOUND:
      return StatusCode::kNotFound;
    case grpc::StatusCode::ALREADY_EXISTS:
      return StatusCode::kAlreadyExists;
    case grpc::StatusCode::PERMISSION_DENIED:
      return StatusCode::kPermissionDenied;
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return StatusCode::kResourceExhausted;
    case grpc::StatusCode::FAILED_PRECONDITION:
      return StatusCode::kFailedPrecondition;
    case grpc::StatusCode::ABORTED:
      return StatusCode::kAborted;
    case grpc::StatusCode::OUT_OF_RANGE:
      return StatusCode::kOutOfRange;
    case grpc::StatusCode::UNIMPLEMENTED:
      return StatusCode::kUnimplemented;
    case grpc::StatusCode::UNAVAILABLE:
      return StatusCode::kUnavailable;
    case grpc::StatusCode::DATA_LOSS:
      return StatusCode::kDataLoss;
    case grpc::StatusCode::UNAUTHENTICATED:
      return StatusCode::kUnauthenticated;
    case grpc::StatusCode::UNKNOWN:
    case grpc::StatusCode::INTERNAL:
    default:
      // containerd wraps its "not found" errors without a code when they come from deeper
      // layers (the task service, the image store).
      return contains_not_found(message) ? StatusCode::kNotFound : StatusCode::kInternal;
  }
}

struct GrpcRuntime::Impl {
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<RuntimeStub> runtime;
  std::unique_ptr<ImageStub> images;

  // One unary call. `timeout` nullopt means no deadline.
  template <typename Stub, typename Request, typename Response>
  Status call(std::string_view rpc, Stub* stub,
              grpc::Status (Stub::*method)(grpc::ClientContext*, const Request&, Response*),
              const Request& request, Response* response, std::optional<Millis> timeout) {
    grpc::ClientContext context;
    if (timeout) context.set_deadline(std::chrono::system_clock::now() + *timeout);
    return from_grpc(rpc, (stub->*method)(&context, request, response));
  }
};

GrpcRuntime::GrpcRuntime(GrpcRuntimeOptions options)
    : options_(std::move(options)), impl_(std::make_unique<Impl>()) {
  Result<std::string> path = socket_path_for_endpoint(options_.endpoint);
  // An invalid endpoint still yields a runtime whose calls fail with UNAVAILABLE; connect_runtime
  // refuses it up front with the real reason.
  std::string target = "unix:" + (path.is_ok() ? *path : std::string("/nonexistent"));
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(options_.max_message_bytes);
  args.SetMaxSendMessageSize(options_.max_message_bytes);
  // Reconnect quickly when the runtime restarts (the kubelet's default backoff tops out at 3s).
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 3000);
  impl_->channel = grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
  impl_->runtime = v1::RuntimeService::NewStub(impl_->channel);
  impl_->images = v1::ImageService::NewStub(impl_->channel);
}

GrpcRuntime::~GrpcRuntime() = default;

Status GrpcRuntime::wait_connected(std::chrono::milliseconds timeout) {
  if (impl_->channel->WaitForConnected(std::chrono::system_clock::now() + timeout)) {
    return Status::ok();
  }
  return Status(StatusCode::kUnavailable, "CRI endpoint " + options_.endpoint +
                                              " not connected within " +
                                              std::to_string(timeout.count()) + "ms");
}

// ---- RuntimeService ----

Result<v1::VersionResponse> GrpcRuntime::version() {
  return version_within(options_.timeout);
}

Result<v1::VersionResponse> GrpcRuntime::version_within(std::chrono::milliseconds timeout) {
  v1::VersionRequest request;
  request.set_version("v1");
  v1::VersionResponse response;
  SKIFF_RETURN_IF_ERROR(impl_->call("Version", impl_->runtime.get(), &RuntimeStub::Version, request,
                                    &response, timeout));
  return response;
}

Result<v1::StatusResponse> GrpcRuntime::status() {
  v1::StatusRequest request;
  v1::StatusResponse response;
  SKIFF_RETURN_IF_ERROR(impl_->call("Status", impl_->runtime.get(), &RuntimeStub::Status, request,
                                    &response, options_.timeout));
  return response;
}

Status GrpcRuntime::update_runtime_config(const v1::RuntimeConfig& config) {
  v1::UpdateRuntimeConfigRequest request;
  *request.mutable_runtime_config() = config;
  v1::UpdateRuntimeConfigResponse response;
  return impl_->call("UpdateRuntimeConfig", impl_->runtime.get(), &RuntimeStub::UpdateRuntimeConfig,
                     request, &response, options_.timeout);
}

Result<std::string> GrpcRuntime::run_pod_sandbox(const v1::PodSandboxConfig& config,
                                                 const std::string& runtime_handler) {
  v1::RunPodSandboxRequest request;
  *request.mutable_config() = config;
  request.set_runtime_handler(runtime_handler);
  v1::RunPodSandboxResponse response;
  SKIFF_RETURN_IF_ERROR(impl_->call("RunPodSandbox", impl_->runtime.get(),
                                    &RuntimeStub::RunPodSandbox, request, &response,
                                    options_.timeout));
  if (response.pod_sandbox_id().empty()) {
    return Status(StatusCode::kInternal, "CRI RunPodSandbox: the runtime returned no sandbox id");
  }
  return std::move(*response.mutable_pod_sandbox_id());
}

Status GrpcRuntime::stop_pod_sandbox(const std::string& sandbox_id) {
  v1::StopPodSandboxRequest request;
  request.set_pod_sandbox_id(sandbox_id);
  v1::StopPodSandboxResponse response;
  return impl_->call("StopPodSandbox", impl_->runtime.get(), &RuntimeStub::StopPodSandbox, request,
                     &response, options_.timeout);
}

Status GrpcRuntime::remove_pod_sandbox(const std::string& sandbox_id) {
  v1::RemovePodSandboxRequest request;
  request.set_pod_sandbox_id(sandbox_id);
  v1::RemovePodSandboxResponse response;
  return impl_->call("RemovePodSandbox", impl_->runtime.get(), &RuntimeStub::RemovePodSandbox,
                     request, &response, options_.timeout);
}

Result<v1::PodSandboxStatus> GrpcRuntime::pod_sandbox_status(const std::string& sandbox_id) {
  v1::PodSandboxStatusRequest request;
  request.set_pod_sandbox_id(sandbox_id);
  v1::PodSandboxStatusResponse response;
  SKIFF_RETURN_IF_ERROR(impl_->call("PodSandboxStatus", impl_->runtime.get(),
                                    &RuntimeStub::PodSandboxStatus, request, &response,
                                    options_.timeout));
  if (!response.has_status()) {
    return Status(StatusCode::kInternal, "CRI PodSandboxStatus: no status for " + sandbox_id);
  }
  return std::move(*response.mutable_status());
}

Result<v1::PodSandboxStatusResponse> GrpcRuntime::pod_sandbox_status_verbose(
    const std::string& sandbox_id) {
  v1::PodSandboxStatusRequest request;
  request.set_pod_sandbox_id(sandbox_id);
  request.set_verbose(true);
  v1::PodSandboxStatusResponse response;
  SKIFF_RETURN_IF_ERROR(impl_->call("PodSandboxStatus", impl_->runtime.get(),
                                    &RuntimeStub::PodSandboxStatus, request, &response,
                                    options_.timeout));
  return response;
}

Result<std::vector<v1::PodSandbox>> GrpcRuntime::list_pod_sandbox(
    const v1::PodSandboxFilter& filter) {
  v1::ListPodSandboxRequest request;
  *request.mutable_filter() = filter;
  v1::ListPodSandboxResponse response;
  SKIFF_RETURN_IF_ERROR(impl_->call("ListPodSandbox", impl_->runtime.get(),
                                    &RuntimeStub::ListPodSandbox, request, &response,
                                    options_.timeout));
  return take_all(response.mutable_items());
}

Result<std::string> GrpcRuntime::create_container(const std::string& sandbox_id,
                                                  const v1::ContainerConfig& config,
                                                  const v1::PodSandboxConfig& sandbox_config) {
  v1::CreateContainerRequest request;
  request.set_pod_sandbox_id(sandbox_id);
  *request.mutable_config() = config;
  *request.mutable_sandbox_config() = sandbox_config;
  v1::CreateContainerResponse response;
  SKIFF_RETURN_IF_ERROR(impl_->call("CreateContainer", impl_->runtime.get(),
                                    &RuntimeStub::CreateContainer, request, &response,
                                    options_.timeout));
  if (response.container_id().empty()) {
    return Status(StatusCode::kInternal,
                  "CRI CreateContainer: the runtime returned no container id");
  }
  return std::move(*response.mutable_container_id());
}

Status GrpcRuntime::start_container(const std::string& container_id) {
  v1::StartContainerRequest request;
  request.set_container_id(container_id);
  v1::StartContainerResponse response;
  return impl_->call("StartContainer", impl_->runtime.get(), &RuntimeStub::StartContainer, request,
                     &response, options_.timeout);
}

Status GrpcRuntime::stop_container(const std::string& container_id, int64_t timeout_seconds) {
  v1::StopContainerRequest request;
  request.set_container_id(container_id);
  request.set_timeout(timeout_seconds);
  v1::StopContainerResponse response;
  // The runtime itself waits up to the grace period before it kills.
  Millis deadline = options_.timeout + std::chrono::seconds(std::max<int64_t>(timeout_seconds, 0));
  return impl_->call("StopContainer", impl_->runtime.get(), &RuntimeStub::StopContainer, request,
                     &response, deadline);
}

Status GrpcRuntime::remove_container(const std::string& container_id) {
  v1::RemoveContainerRequest request;
  request.set_container_id(container_id);
  v1::RemoveContainerResponse response;
  return impl_->call("RemoveContainer", impl_->runtime.get(), &RuntimeStub::RemoveContainer,
                     request, &response, options_.timeout);
}

Result<std::vector<v1::Container>> GrpcRuntime::list_containers(const v1::ContainerFilter& filter) {
  v1::ListContainersRequest request;
  *request.mutable_filter() = filter;
  v1::ListContainersResponse response;
  SKIFF_RETURN_IF_ERROR(impl_->call("ListContainers", impl_->runtime.get(),
                                    &RuntimeStub::ListContainers, request, &response,
                                    options_.timeout));
  return take_all(response.mutable_containers());
}

Result<v1::ContainerStatus> GrpcRuntime::container_status(const std::string& container_id) {
  v1::ContainerStatusRequest request;
  request.set_container_id(container_id);
  v1::ContainerStatusResponse response;
  SKIFF_RETURN_IF_ERROR(impl_->call("ContainerStatus", impl_->runtime.get(),
                                    &RuntimeStub::ContainerStatus, request, &response,
                                    options_.timeout));
  if (!response.has_status()) {
    return Status(StatusCode::kInternal, "CRI ContainerStatus: no status for " + container_id);
  }
  return std::move(*response.mutable_status());
}

Status GrpcRuntime::update_container_resources(const std::string& container_id,
                                               const v1::LinuxContainerResources& resources) {
  v1::UpdateContainerResourcesRequest request;
  request.set_container_id(container_id);
  *request.mutable_linux() = resources;
  v1::UpdateContainerResourcesResponse response;
  return impl_->call("UpdateContainerResources", impl_->runtime.get(),
                     &RuntimeStub::UpdateContainerResources, request, &response, options_.timeout);
}

Status GrpcRuntime::reopen_container_log(const std::string& container_id) {
  v1::ReopenContainerLogRequest request;
  request.set_container_id(container_id);
  v1::ReopenContainerLogResponse response;
  return impl_->call("ReopenContainerLog", impl_->runtime.get(), &RuntimeStub::ReopenContainerLog,
                     request, &response, options_.timeout);
}

Result<v1::ExecSyncResponse> GrpcRuntime::exec_sync(const std::string& container_id,
                                                    const std::vector<std::string>& cmd,
                                                    int64_t timeout_seconds) {
  v1::ExecSyncRequest request;
  request.set_container_id(container_id);
  for (const std::string& arg : cmd) request.add_cmd(arg);
  request.set_timeout(timeout_seconds);
  v1::ExecSyncResponse response;
  // The runtime enforces the command's own timeout; ours only guards against a hung runtime.
  std::optional<Millis> deadline;
  if (timeout_seconds > 0) deadline = options_.timeout + std::chrono::seconds(timeout_seconds);
  SKIFF_RETURN_IF_ERROR(impl_->call("ExecSync", impl_->runtime.get(), &RuntimeStub::ExecSync,
                                    request, &response, deadline));
  return response;
}

Result<std::string> GrpcRuntime::exec(const v1::ExecRequest& request) {
  v1::ExecResponse response;
  SKIFF_RETURN_IF_ERROR(impl_->call("Exec", impl_->runtime.get(), &RuntimeStub::Exec, request,
                                    &response, options_.timeout));
  return std::move(*response.mutable_url());
}

Result<std::string> GrpcRuntime::attach(const v1::AttachRequest& request) {
  v1::AttachResponse response;
  SKIFF_RETURN_IF_ERROR(impl_->call("Attach", impl_->runtime.get(), &RuntimeStub::Attach, request,
                                    &response, options_.timeout));
  return std::move(*response.mutable_url());
}

Result<std::string> GrpcRuntime::port_forward(const v1::PortForwardRequest& request) {
  v1::PortForwardResponse response;
  SKIFF_RETURN_IF_ERROR(impl_->call("PortForward", impl_->runtime.get(), &RuntimeStub::PortForward,
                                    request, &response, options_.timeout));
  return std::move(*response.mutable_url());
}

Result<v1::ContainerStats> GrpcRuntime::container_stats(const std::string& container_id) {
  v1::ContainerStatsRequest request;
  request.set_container_id(container_id);
  v1::ContainerStatsResponse response;
  SKIFF_RETURN_IF_ERROR(impl_->call("ContainerStats", impl_->runtime.get(),
                                    &RuntimeStub::ContainerStats, request, &response,
                                    options_.timeout));
  return std::move(*response.mutable_stats());
}

Result<std::vector<v1::ContainerStats>> GrpcRuntime::list_container_stats(
    const v1::ContainerStatsFilter& filter) {
  v1::ListContainerStatsRequest request;
  *request.mutable_filter() = filter;
  v1::ListContainerStatsResponse response;
  SKIFF_RETURN_IF_ERROR(impl_->call("ListContainerStats", impl_->runtime.get(),
                                    &RuntimeStub::ListContainerStats, request, &response,
                                    options_.timeout));
  return take_all(response.mutable_stats());
}

// ---- ImageService ----

Result<std::vector<v1::Image>> GrpcRuntime::list_images(const v1::ImageFilter& filter) {
  v1::ListImagesRequest request;
  *request.mutable_filter() = filter;
  v1::ListImagesResponse response;
  SKIFF_RETURN_IF_ERROR(impl_->call("ListImages", impl_->images.get(), &ImageStub::ListImages,
                                    request, &response, options_.timeout));
  return take_all(response.mutable_images());
}

Result<std::optional<v1::Image>> GrpcRuntime::image_status(const v1::ImageSpec& image) {
  v1::ImageStatusRequest request;
  *request.mutable_image() = image;
  v1::ImageStatusResponse response;
  Status status = impl_->call("ImageStatus", impl_->images.get(), &ImageStub::ImageStatus, request,
                              &response, options_.timeout);
  // A missing image is an empty answer, not an error; some runtimes say NOT_FOUND instead.
  if (status.code() == StatusCode::kNotFound) return std::optional<v1::Image>();
  SKIFF_RETURN_IF_ERROR(status);
  if (!response.has_image() || response.image().id().empty()) return std::optional<v1::Image>();
  return std::optional<v1::Image>(std::move(*response.mutable_image()));
}

Result<std::string> GrpcRuntime::pull_image(const v1::ImageSpec& image, const v1::AuthConfig& auth,
                                            const v1::PodSandboxConfig& sandbox_config) {
  v1::PullImageRequest request;
  *request.mutable_image() = image;
  *request.mutable_auth() = auth;
  *request.mutable_sandbox_config() = sandbox_config;
  v1::PullImageResponse response;
  SKIFF_RETURN_IF_ERROR(impl_->call("PullImage", impl_->images.get(), &ImageStub::PullImage,
                                    request, &response, options_.pull_timeout));
  if (response.image_ref().empty()) {
    return Status(StatusCode::kInternal,
                  "CRI PullImage: the runtime returned no reference for " + image.image());
  }
  return std::move(*response.mutable_image_ref());
}

Status GrpcRuntime::remove_image(const v1::ImageSpec& image) {
  v1::RemoveImageRequest request;
  *request.mutable_image() = image;
  v1::RemoveImageResponse response;
  return impl_->call("RemoveImage", impl_->images.get(), &ImageStub::RemoveImage, request,
                     &response, options_.timeout);
}

Result<std::vector<v1::FilesystemUsage>> GrpcRuntime::image_fs_info() {
  v1::ImageFsInfoRequest request;
  v1::ImageFsInfoResponse response;
  SKIFF_RETURN_IF_ERROR(impl_->call("ImageFsInfo", impl_->images.get(), &ImageStub::ImageFsInfo,
                                    request, &response, options_.timeout));
  return take_all(response.mutable_image_filesystems());
}

// ---- Connecting ----

Result<std::unique_ptr<GrpcRuntime>> connect_runtime(const GrpcRuntimeOptions& options,
                                                     std::chrono::milliseconds connect_timeout) {
  SKIFF_ASSIGN_OR_RETURN(std::string path, socket_path_for_endpoint(options.endpoint));
  const auto deadline = std::chrono::steady_clock::now() + connect_timeout;
  auto remaining = [&] {
    return std::max(
        Millis(1), std::chrono::duration_cast<Millis>(deadline - std::chrono::steady_clock::now()));
  };
  auto expired = [&] { return std::chrono::steady_clock::now() >= deadline; };

  // The runtime creates its socket only once it serves; until then there is nothing to dial.
  struct stat st {};
  while (stat(path.c_str(), &st) != 0 || !S_ISSOCK(st.st_mode)) {
    if (expired()) {
      return Status(StatusCode::kUnavailable, "CRI socket " + path + " did not appear within " +
                                                  std::to_string(connect_timeout.count()) + "ms");
    }
    std::this_thread::sleep_for(Millis(20));
  }

  auto runtime = std::make_unique<GrpcRuntime>(options);
  while (true) {
    Result<v1::VersionResponse> version =
        runtime->version_within(std::min(options.timeout, remaining()));
    if (version.is_ok()) {
      if (version->runtime_api_version() != "v1") {
        return Status(StatusCode::kFailedPrecondition,
                      "runtime " + version->runtime_name() + " at " + options.endpoint +
                          " speaks CRI '" + version->runtime_api_version() + "', not v1");
      }
      break;
    }
    const Status& last = version.status();
    if (last.code() != StatusCode::kUnavailable && last.code() != StatusCode::kDeadlineExceeded) {
      return Status(last.code(),
                    "runtime at " + options.endpoint + " does not serve CRI v1: " + last.message());
    }
    if (expired()) {
      return Status(last.code(), "runtime at " + options.endpoint + " did not answer within " +
                                     std::to_string(connect_timeout.count()) +
                                     "ms: " + last.message());
    }
    // Fail-fast calls return at once while the channel backs off; pace the retries.
    std::this_thread::sleep_for(std::min(Millis(50), remaining()));
  }
  return runtime;
}

Result<std::unique_ptr<GrpcRuntime>> connect_runtime(const std::string& endpoint,
                                                     std::chrono::milliseconds connect_timeout) {
  GrpcRuntimeOptions options;
  options.endpoint = endpoint;
  return connect_runtime(options, connect_timeout);
}

}  // namespace skiff::kubelet::cri
