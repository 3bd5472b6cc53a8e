#include "kubelet/cri/fake_runtime.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <utility>

namespace skiff::kubelet::cri {

namespace {

constexpr int32_t kKilledExitCode = 137;  // 128 + SIGKILL
constexpr char kStreamingBase[] = "http://127.0.0.1:10010";
constexpr char kImageFsMountpoint[] = "/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs";

uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// 64 hex digits derived from `seed`, shaped like the ids containerd hands out.
std::string hex_id(uint64_t seed) {
  std::string out;
  char buf[17];
  for (int i = 0; i < 4; ++i) {
    std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(splitmix64(seed)));
    out += buf;
  }
  return out;
}

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : s) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  return h;
}

bool labels_match(const google::protobuf::Map<std::string, std::string>& selector,
                  const google::protobuf::Map<std::string, std::string>& labels) {
  for (const auto& [key, value] : selector) {
    auto it = labels.find(key);
    if (it == labels.end() || it->second != value) return false;
  }
  return true;
}

std::string exit_reason(int32_t exit_code) {
  return exit_code == 0 ? "Completed" : "Error";
}

std::string exec_key(const std::vector<std::string>& cmd) {
  std::string key;
  for (const std::string& arg : cmd) {
    key += arg;
    key.push_back('\0');
  }
  return key;
}

bool is_host_network(const v1::PodSandboxConfig& config) {
  return config.linux().security_context().namespace_options().network() == v1::NODE;
}

}  // namespace

FakeRuntime::FakeRuntime()
    : pull_error_(StatusCode::kNotFound, "failed to resolve reference: not found") {
  for (const char* type : {"RuntimeReady", "NetworkReady"}) {
    v1::RuntimeCondition condition;
    condition.set_type(type);
    condition.set_status(true);
    conditions_[type] = condition;
  }
}

FakeRuntime::~FakeRuntime() = default;

// ---- Helpers (mu_ held) ----

Status FakeRuntime::begin_call(const std::string& method) {
  calls_.push_back(method);
  auto it = injected_.find(method);
  if (it == injected_.end() || it->second.empty()) return Status::ok();
  Status error = std::move(it->second.front());
  it->second.pop_front();
  return error;
}

int64_t FakeRuntime::now() const {
  if (clock_) return clock_();
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string FakeRuntime::next_id() {
  return hex_id(++id_counter_);
}

std::string FakeRuntime::allocate_ip() {
  for (int host = 2; host < 255; ++host) {
    if (used_ip_hosts_.insert(host).second) return "10.42.0." + std::to_string(host);
  }
  return "";
}

const FakeRuntime::ImageRecord* FakeRuntime::find_image(const std::string& name_or_id) const {
  if (name_or_id.empty()) return nullptr;
  auto it = images_.find(normalize_image(name_or_id));
  if (it != images_.end()) return &it->second;
  for (const auto& [name, image] : images_) {
    if (image.id == name_or_id || image.id == "sha256:" + name_or_id) return &image;
  }
  return nullptr;
}

void FakeRuntime::finish_container(ContainerRecord& c, int32_t exit_code, std::string reason,
                                   std::string message) {
  c.state = v1::CONTAINER_EXITED;
  c.finished_at = now();
  c.exit_code = exit_code;
  c.reason = reason.empty() ? exit_reason(exit_code) : std::move(reason);
  c.message = std::move(message);
}

void FakeRuntime::stop_sandbox_locked(Sandbox& sandbox, const std::string& sandbox_id) {
  for (auto& [id, c] : containers_) {
    if (c.sandbox_id == sandbox_id &&
        (c.state == v1::CONTAINER_RUNNING || c.state == v1::CONTAINER_UNKNOWN)) {
      finish_container(c, kKilledExitCode, "", "");
    }
  }
  if (!sandbox.ip.empty()) {
    used_ip_hosts_.erase(std::stoi(sandbox.ip.substr(sandbox.ip.rfind('.') + 1)));
    sandbox.ip.clear();
  }
  sandbox.state = v1::SANDBOX_NOTREADY;
}

v1::ContainerStats FakeRuntime::stats_of(const std::string& id, const ContainerRecord& c) const {
  v1::ContainerStats stats;
  v1::ContainerAttributes* attributes = stats.mutable_attributes();
  attributes->set_id(id);
  *attributes->mutable_metadata() = c.config.metadata();
  *attributes->mutable_labels() = c.config.labels();
  *attributes->mutable_annotations() = c.config.annotations();
  int64_t timestamp = now();
  stats.mutable_cpu()->set_timestamp(timestamp);
  stats.mutable_cpu()->mutable_usage_core_nano_seconds()->set_value(c.cpu_core_nanos);
  stats.mutable_memory()->set_timestamp(timestamp);
  stats.mutable_memory()->mutable_working_set_bytes()->set_value(c.memory_working_set_bytes);
  stats.mutable_writable_layer()->set_timestamp(timestamp);
  stats.mutable_writable_layer()->mutable_fs_id()->set_mountpoint(kImageFsMountpoint);
  stats.mutable_writable_layer()->mutable_used_bytes()->set_value(c.writable_layer_bytes);
  return stats;
}

std::string FakeRuntime::normalize_image(const std::string& name) {
  if (name.empty() || name.rfind("sha256:", 0) == 0) return name;
  std::string repo = name;
  std::string digest;
  if (size_t at = repo.find('@'); at != std::string::npos) {
    digest = repo.substr(at);
    repo.resize(at);
  }
  size_t slash = repo.find('/');
  std::string first = slash == std::string::npos ? "" : repo.substr(0, slash);
  bool has_domain =
      !first.empty() && (first.find('.') != std::string::npos ||
                         first.find(':') != std::string::npos || first == "localhost");
  if (!has_domain) {
    repo = (slash == std::string::npos ? "docker.io/library/" : "docker.io/") + repo;
  }
  if (digest.empty()) {
    size_t last_slash = repo.rfind('/');
    if (repo.find(':', last_slash) == std::string::npos) repo += ":latest";
  }
  return repo + digest;
}

// ---- RuntimeService ----

Result<v1::VersionResponse> FakeRuntime::version() {
  std::lock_guard lock(mu_);
  SKIFF_RETURN_IF_ERROR(begin_call("Version"));
  v1::VersionResponse response;
  response.set_version("0.1.0");
  response.set_runtime_name("fake");
  response.set_runtime_version("0.1.0");
  response.set_runtime_api_version("v1");
  return response;
}

Result<v1::StatusResponse> FakeRuntime::status() {
  std::lock_guard lock(mu_);
  SKIFF_RETURN_IF_ERROR(begin_call("Status"));
  v1::StatusResponse response;
  for (const auto& [type, condition] : conditions_) {
    *response.mutable_status()->add_conditions() = condition;
  }
  return response;
}

Status FakeRuntime::update_runtime_config(const v1::RuntimeConfig& config) {
  std::lock_guard lock(mu_);
  SKIFF_RETURN_IF_ERROR(begin_call("UpdateRuntimeConfig"));
  pod_cidr_ = config.network_config().pod_cidr();
  return Status::ok();
}

Result<std::string> FakeRuntime::run_pod_sandbox(const v1::PodSandboxConfig& config,
                                                 const std::string& runtime_handler) {
  std::lock_guard lock(mu_);
  SKIFF_RETURN_IF_ERROR(begin_call("RunPodSandbox"));
  const v1::PodSandboxMetadata& metadata = config.metadata();
  if (metadata.name().empty() || metadata.namespace_().empty() || metadata.uid().empty()) {
    return Status(StatusCode::kInvalidArgument,
                  "sandbox config must include metadata name, namespace and uid");
  }
  for (const auto& [id, sandbox] : sandboxes_) {
    const v1::PodSandboxMetadata& other = sandbox.config.metadata();
    if (other.name() == metadata.name() && other.namespace_() == metadata.namespace_() &&
        other.uid() == metadata.uid() && other.attempt() == metadata.attempt()) {
      return Status(StatusCode::kAlreadyExists,
                    "sandbox name " + metadata.name() + "_" + metadata.namespace_() + " attempt " +
                        std::to_string(metadata.attempt()) + " is reserved for " + id);
    }
  }
  Sandbox sandbox;
  sandbox.config = config;
  sandbox.runtime_handler = runtime_handler;
  sandbox.created_at = now();
  if (!is_host_network(config)) {
    sandbox.ip = allocate_ip();
    if (sandbox.ip.empty()) {
      return Status(StatusCode::kResourceExhausted, "no free pod IP left in 10.42.0.0/24");
    }
  }
  std::string id = next_id();
  sandboxes_.emplace(id, std::move(sandbox));
  return id;
}

Status FakeRuntime::stop_pod_sandbox(const std::string& sandbox_id) {
  std::lock_guard lock(mu_);
  SKIFF_RETURN_IF_ERROR(begin_call("StopPodSandbox"));
  auto it = sandboxes_.find(sandbox_id);
  if (it == sandboxes_.end()) {
    return Status(StatusCode::kNotFound, "sandbox " + sandbox_id + " not found");
  }
  stop_sandbox_locked(it->second, sandbox_id);
  return Status::ok();
}

Status FakeRuntime::remove_pod_sandbox(const std::string& sandbox_id) {
  std::lock_guard lock(mu_);
  SKIFF_RETURN_IF_ERROR(begin_call("RemovePodSandbox"));
  auto it = sandboxes_.find(sandbox_id);
  if (it == sandboxes_.end()) return Status::ok();
  stop_sandbox_locked(it->second, sandbox_id);
  std::erase_if(containers_,
                [&](const auto& entry) { return entry.second.sandbox_id == sandbox_id; });
  sandboxes_.erase(it);
  return Status::ok();
}

Result<v1::PodSandboxStatus> FakeRuntime::pod_sandbox_status(const std::string& sandbox_id) {
  std::lock_guard lock(mu_);
  SKIFF_RETURN_IF_ERROR(begin_call("PodSandboxStatus"));
  auto it = sandboxes_.find(sandbox_id);
  if (it == sandboxes_.end()) {
    return Status(StatusCode::kNotFound, "sandbox " + sandbox_id + " not found");
  }
  const Sandbox& sandbox = it->second;
  v1::PodSandboxStatus status;
  status.set_id(sandbox_id);
  *status.mutable_metadata() = sandbox.config.metadata();
  status.set_state(sandbox.state);
  status.set_created_at(sandbox.created_at);
  status.mutable_network()->set_ip(sandbox.ip);
  *status.mutable_linux()->mutable_namespaces()->mutable_options() =
      sandbox.config.linux().security_context().namespace_options();
  *status.mutable_labels() = sandbox.config.labels();
  *status.mutable_annotations() = sandbox.config.annotations();
  status.set_runtime_handler(sandbox.runtime_handler);
  return status;
}

Result<std::vector<v1::PodSandbox>> FakeRuntime::list_pod_sandbox(
    const v1::PodSandboxFilter& filter) {
  std::lock_guard lock(mu_);
  SKIFF_RETURN_IF_ERROR(begin_call("ListPodSandbox"));
  std::vector<v1::PodSandbox> out;
  for (const auto& [id, sandbox] : sandboxes_) {
    if (!filter.id().empty() && filter.id() != id) continue;
    if (filter.has_state() && filter.state().state() != sandbox.state) continue;
    if (!labels_match(filter.label_selector(), sandbox.config.labels())) continue;
    v1::PodSandbox item;
    item.set_id(id);
    *item.mutable_metadata() = sandbox.config.metadata();
    item.set_state(sandbox.state);
    item.set_created_at(sandbox.created_at);
    *item.mutable_labels() = sandbox.config.labels();
    *item.mutable_annotations() = sandbox.config.annotations();
    item.set_runtime_handler(sandbox.runtime_handler);
    out.push_back(std::move(item));
  }
  return out;
}

Result<std::string> FakeRuntime::create_container(const std::string& sandbox_id,
                                                  const v1::ContainerConfig& config,
                                                  const v1::PodSandboxConfig& sandbox_config) {
  std::lock_guard lock(mu_);
  SKIFF_RETURN_IF_ERROR(begin_call("CreateContainer"));
  auto sandbox = sandboxes_.find(sandbox_id);
  if (sandbox == sandboxes_.end()) {
    return Status(StatusCode::kNotFound, "sandbox " + sandbox_id + " not found");
  }
  if (sandbox->second.state != v1::SANDBOX_READY) {
    return Status(StatusCode::kFailedPrecondition, "sandbox " + sandbox_id + " is not ready");
  }
  if (config.metadata().name().empty()) {
    return Status(StatusCode::kInvalidArgument, "container config must include metadata name");
  }
  const ImageRecord* image = find_image(config.image().image());
  if (image == nullptr) {
    return Status(StatusCode::kNotFound, "image \"" + config.image().image() + "\" not found");
  }
  for (const auto& [id, c] : containers_) {
    if (c.sandbox_id == sandbox_id && c.config.metadata().name() == config.metadata().name() &&
        c.config.metadata().attempt() == config.metadata().attempt()) {
      return Status(StatusCode::kAlreadyExists,
                    "container name " + config.metadata().name() + " attempt " +
                        std::to_string(config.metadata().attempt()) + " is reserved for " + id);
    }
  }
  ContainerRecord c;
  c.sandbox_id = sandbox_id;
  c.config = config;
  c.image_id = image->id;
  c.created_at = now();
  c.resources = config.linux().resources();
  const std::string& log_dir = sandbox->second.config.log_directory();
  if (!config.log_path().empty()) {
    c.log_path = log_dir.empty() ? config.log_path() : log_dir + "/" + config.log_path();
  }
  std::string id = next_id();
  containers_.emplace(id, std::move(c));
  return id;
}

Status FakeRuntime::start_container(const std::string& container_id) {
  std::lock_guard lock(mu_);
  SKIFF_RETURN_IF_ERROR(begin_call("StartContainer"));
  auto it = containers_.find(container_id);
  if (it == containers_.end()) {
    return Status(StatusCode::kNotFound, "container " + container_id + " not found");
  }
  ContainerRecord& c = it->second;
  if (c.state != v1::CONTAINER_CREATED) {
    return Status(StatusCode::kFailedPrecondition, "container " + container_id + " is in " +
                                                       v1::ContainerState_Name(c.state) + " state");
  }
  if (sandboxes_.at(c.sandbox_id).state != v1::SANDBOX_READY) {
    return Status(StatusCode::kFailedPrecondition, "sandbox " + c.sandbox_id + " is not ready");
  }
  c.state = v1::CONTAINER_RUNNING;
  c.started_at = now();
  return Status::ok();
}

Status FakeRuntime::stop_container(const std::string& container_id, int64_t timeout_seconds) {
  std::lock_guard lock(mu_);
  SKIFF_RETURN_IF_ERROR(begin_call("StopContainer"));
  auto it = containers_.find(container_id);
  if (it == containers_.end()) {
    return Status(StatusCode::kNotFound, "container " + container_id + " not found");
  }
  ContainerRecord& c = it->second;
  // Like containerd, stopping a container that never ran or already exited changes nothing.
  if (c.state != v1::CONTAINER_RUNNING && c.state != v1::CONTAINER_UNKNOWN) return Status::ok();
  finish_container(c, timeout_seconds > 0 ? c.stop_exit_code : kKilledExitCode, "", "");
  return Status::ok();
}

Status FakeRuntime::remove_container(const std::string& container_id) {
  std::lock_guard lock(mu_);
  SKIFF_RETURN_IF_ERROR(begin_call("RemoveContainer"));
  auto it = containers_.find(container_id);
  if (it == containers_.end()) return Status::ok();
  containers_.erase(it);
  return Status::ok();
}

Result<std::vector<v1::Container>> FakeRuntime::list_containers(const v1::ContainerFilter& filter) {
  std::lock_guard lock(mu_);
  SKIFF_RETURN_IF_ERROR(begin_call("ListContainers"));
  std::vector<v1::Container> out;
  for (const auto& [id, c] : containers_) {
    if (!filter.id().empty() && filter.id() != id) continue;
    if (filter.has_state() && filter.state().state() != c.state) continue;
    if (!filter.pod_sandbox_id().empty() && filter.pod_sandbox_id() != c.sandbox_id) continue;
    if (!labels_match(filter.label_selector(), c.config.labels())) continue;
    v1::Container item;
    item.set_id(id);
    item.set_pod_sandbox_id(c.sandbox_id);
    *item.mutable_metadata() = c.config.metadata();
    *item.mutable_image() = c.config.image();
    item.set_image_ref(c.image_id);
    item.set_image_id(c.image_id);
    item.set_state(c.state);
    item.set_created_at(c.created_at);
    *item.mutable_labels() = c.config.labels();
    *item.mutable_annotations() = c.config.annotations();
    out.push_back(std::move(item));
  }
  return out;
}

Result<v1::ContainerStatus> FakeRuntime::container_status(const std::string& container_id) {
  std::lock_guard lock(mu_);
  SKIFF_RETURN_IF_ERROR(begin_call("ContainerStatus"));
  auto it = containers_.find(container_id);
  if (it == containers_.end()) {
    return Status(StatusCode::kNotFound, "container " + container_id + " not found");
  }
  const ContainerRecord& c = it->second;
  v1::ContainerStatus status;
  status.set_id(container_id);
  *status.mutable_metadata() = c.config.metadata();
  status.set_state(c.state);
  status.set_created_at(c.created_at);
  status.set_started_at(c.started_at);
  status.set_finished_at(c.finished_at);
  status.set_exit_code(c.exit_code);
  *status.mutable_image() = c.config.image();
  status.set_image_ref(c.image_id);
  status.set_image_id(c.image_id);
  status.set_reason(c.reason);
  status.set_message(c.message);
  *status.mutable_labels() = c.config.labels();
  *status.mutable_annotations() = c.config.annotations();
  *status.mutable_mounts() = c.config.mounts();
  status.set_log_path(c.log_path);
  *status.mutable_resources()->mutable_linux() = c.resources;
  return status;
}

Status FakeRuntime::update_container_resources(const std::string& container_id,
                                               const v1::LinuxContainerResources& resources) {
  std::lock_guard lock(mu_);
  SKIFF_RETURN_IF_ERROR(begin_call("UpdateContainerResources"));
  auto it = containers_.find(container_id);
  if (it == containers_.end()) {
    return Status(StatusCode::kNotFound, "container " + container_id + " not found");
  }
  if (it->second.state == v1::CONTAINER_EXITED) {
    return Status(StatusCode::kFailedPrecondition, "container " + container_id + " has exited");
  }
  it->second.resources = resources;
  return Status::ok();
}

Status FakeRuntime::reopen_container_log(const std::string& container_id) {
  std::lock_guard lock(mu_);
  SKIFF_RETURN_IF_ERROR(begin_call("ReopenContainerLog"));
  SKIFF_ASSIGN_OR_RETURN(ContainerRecord * c, running_container_locked(container_id));
  ++c->reopen_count;
  return Status::ok();
}

Result<v1::ExecSyncResponse> FakeRuntime::exec_sync(const std::string& container_id,
                                                    const std::vector<std::string>& cmd,
                                                    int64_t timeout_seconds) {
  std::lock_guard lock(mu_);
  SKIFF_RETURN_IF_ERROR(begin_call("ExecSync"));
  auto it = containers_.find(container_id);
  if (it == containers_.end()) {
    return Status(StatusCode::kNotFound, "container " + container_id + " not found");
  }
  if (it->second.state != v1::CONTAINER_RUNNING) {
    return Status(StatusCode::kFailedPrecondition, "container " + container_id + " is in " +
                                                       v1::ContainerState_Name(it->second.state) +
                                                       " state");
  }
  std::string key = exec_key(cmd);
  if (auto specific = exec_results_.find({container_id, key}); specific != exec_results_.end()) {
    return specific->second;
  }
  if (auto any = exec_results_.find({"", key}); any != exec_results_.end()) return any->second;
  return v1::ExecSyncResponse();
}

Result<std::string> FakeRuntime::exec(const v1::ExecRequest& request) {
  std::lock_guard lock(mu_);
  SKIFF_RETURN_IF_ERROR(begin_call("Exec"));
  SKIFF_RETURN_IF_ERROR(running_container_locked(request.container_id()).status());
  if (request.cmd().empty()) return Status(StatusCode::kInvalidArgument, "cmd is empty");
  return std::string(kStreamingBase) + "/exec/" + hex_id(++id_counter_).substr(0, 8);
}

Result<std::string> FakeRuntime::attach(const v1::AttachRequest& request) {
  std::lock_guard lock(mu_);
  SKIFF_RETURN_IF_ERROR(begin_call("Attach"));
  SKIFF_RETURN_IF_ERROR(running_container_locked(request.container_id()).status());
  return std::string(kStreamingBase) + "/attach/" + hex_id(++id_counter_).substr(0, 8);
}

Result<std::string> FakeRuntime::port_forward(const v1::PortForwardRequest& request) {
  std::lock_guard lock(mu_);
  SKIFF_RETURN_IF_ERROR(begin_call("PortForward"));
  auto it = sandboxes_.find(request.pod_sandbox_id());
  if (it == sandboxes_.end()) {
    return Status(StatusCode::kNotFound, "sandbox " + request.pod_sandbox_id() + " not found");
  }
  if (it->second.state != v1::SANDBOX_READY) {
    return Status(StatusCode::kFailedPrecondition,
                  "sandbox " + request.pod_sandbox_id() + " is not ready");
  }
  return std::string(kStreamingBase) + "/portforward/" + hex_id(++id_counter_).substr(0, 8);
}

Result<v1::ContainerStats> FakeRuntime::container_stats(const std::string& container_id) {
  std::lock_guard lock(mu_);
  SKIFF_RETURN_IF_ERROR(begin_call("ContainerStats"));
  auto it = containers_.find(container_id);
  if (it == containers_.end()) {
    return Status(StatusCode::kNotFound, "container " + container_id + " not found");
  }
  return stats_of(container_id, it->second);
}

Result<std::vector<v1::ContainerStats>> FakeRuntime::list_container_stats(
    const v1::ContainerStatsFilter& filter) {
  std::lock_guard lock(mu_);
  SKIFF_RETURN_IF_ERROR(begin_call("ListContainerStats"));
  std::vector<v1::ContainerStats> out;
  for (const auto& [id, c] : containers_) {
    if (c.state != v1::CONTAINER_RUNNING) continue;
    if (!filter.id().empty() && filter.id() != id) continue;
    if (!filter.pod_sandbox_id().empty() && filter.pod_sandbox_id() != c.sandbox_id) continue;
    if (!labels_match(filter.label_selector(), c.config.labels())) continue;
    out.push_back(stats_of(id, c));
  }
  return out;
}

// ---- ImageService ----

namespace {

v1::Image to_image(const std::string& name, const std::string& id, uint64_t size) {
  v1::Image image;
  image.set_id(id);
  image.add_repo_tags(name);
  image.add_repo_digests(name.substr(0, name.rfind(':')) + "@" + id);
  image.set_size(size);
  image.mutable_spec()->set_image(name);
  return image;
}

}  // namespace

Result<std::vector<v1::Image>> FakeRuntime::list_images(const v1::ImageFilter& filter) {
  std::lock_guard lock(mu_);
  SKIFF_RETURN_IF_ERROR(begin_call("ListImages"));
  std::vector<v1::Image> out;
  if (!filter.image().image().empty()) {
    if (const ImageRecord* image = find_image(filter.image().image())) {
      out.push_back(to_image(image->name, image->id, image->size));
    }
    return out;
  }
  for (const auto& [name, image] : images_) out.push_back(to_image(name, image.id, image.size));
  return out;
}

Result<std::optional<v1::Image>> FakeRuntime::image_status(const v1::ImageSpec& spec) {
  std::lock_guard lock(mu_);
  SKIFF_RETURN_IF_ERROR(begin_call("ImageStatus"));
  const ImageRecord* image = find_image(spec.image());
  if (image == nullptr) return std::optional<v1::Image>();
  return std::optional<v1::Image>(to_image(image->name, image->id, image->size));
}

Result<std::string> FakeRuntime::pull_image(const v1::ImageSpec& spec, const v1::AuthConfig& auth,
                                            const v1::PodSandboxConfig& sandbox_config) {
  std::lock_guard lock(mu_);
  SKIFF_RETURN_IF_ERROR(begin_call("PullImage"));
  std::string name = normalize_image(spec.image());
  if (name.empty()) return Status(StatusCode::kInvalidArgument, "no image to pull");
  pull_auths_.push_back(auth);
  if (!pullable_.contains(name)) {
    return Status(pull_error_.code(),
                  "failed to pull and unpack image \"" + name + "\": " + pull_error_.message());
  }
  pulled_.push_back(name);
  auto it = images_.find(name);
  if (it == images_.end()) {
    ImageRecord record;
    record.name = name;
    record.id = "sha256:" + hex_id(fnv1a(name));
    record.size = 1 << 20;
    it = images_.emplace(name, record).first;
  }
  return it->second.id;
}

std::vector<v1::AuthConfig> FakeRuntime::pull_auths() const {
  std::lock_guard lock(mu_);
  return pull_auths_;
}

Status FakeRuntime::remove_image(const v1::ImageSpec& spec) {
  std::lock_guard lock(mu_);
  SKIFF_RETURN_IF_ERROR(begin_call("RemoveImage"));
  if (const ImageRecord* image = find_image(spec.image())) images_.erase(image->name);
  return Status::ok();
}

Result<std::vector<v1::FilesystemUsage>> FakeRuntime::image_fs_info() {
  std::lock_guard lock(mu_);
  SKIFF_RETURN_IF_ERROR(begin_call("ImageFsInfo"));
  uint64_t used = 0;
  for (const auto& [name, image] : images_) used += image.size;
  v1::FilesystemUsage usage;
  usage.set_timestamp(now());
  usage.mutable_fs_id()->set_mountpoint(kImageFsMountpoint);
  usage.mutable_used_bytes()->set_value(used);
  usage.mutable_inodes_used()->set_value(images_.size());
  return std::vector<v1::FilesystemUsage>{usage};
}

// ---- Test controls ----

void FakeRuntime::set_clock(std::function<int64_t()> now_nanos) {
  std::lock_guard lock(mu_);
  clock_ = std::move(now_nanos);
}

std::string FakeRuntime::add_image(const std::string& name, uint64_t size_bytes) {
  std::lock_guard lock(mu_);
  std::string normalized = normalize_image(name);
  ImageRecord& record = images_[normalized];
  record.name = normalized;
  record.id = "sha256:" + hex_id(fnv1a(normalized));
  record.size = size_bytes;
  return record.id;
}

void FakeRuntime::add_pullable_image(const std::string& name) {
  std::lock_guard lock(mu_);
  pullable_.insert(normalize_image(name));
}

void FakeRuntime::set_pull_error(Status error) {
  std::lock_guard lock(mu_);
  pull_error_ = std::move(error);
}

std::vector<std::string> FakeRuntime::pulled_images() const {
  std::lock_guard lock(mu_);
  return pulled_;
}

void FakeRuntime::inject_error(const std::string& method, Status error) {
  std::lock_guard lock(mu_);
  injected_[method].push_back(std::move(error));
}

Result<FakeRuntime::ContainerRecord*> FakeRuntime::container_locked(
    const std::string& container_id) {
  auto it = containers_.find(container_id);
  if (it == containers_.end()) {
    return Status(StatusCode::kNotFound, "container " + container_id + " not found");
  }
  return &it->second;
}

Result<FakeRuntime::ContainerRecord*> FakeRuntime::running_container_locked(
    const std::string& container_id) {
  SKIFF_ASSIGN_OR_RETURN(ContainerRecord * c, container_locked(container_id));
  if (c->state != v1::CONTAINER_RUNNING) {
    return Status(StatusCode::kFailedPrecondition, "container " + container_id + " is not running");
  }
  return c;
}

Status FakeRuntime::exit_container(const std::string& container_id, int32_t exit_code,
                                   const std::string& reason, const std::string& message) {
  std::lock_guard lock(mu_);
  SKIFF_ASSIGN_OR_RETURN(ContainerRecord * c, running_container_locked(container_id));
  finish_container(*c, exit_code, reason, message);
  return Status::ok();
}

Status FakeRuntime::set_stop_exit_code(const std::string& container_id, int32_t exit_code) {
  std::lock_guard lock(mu_);
  auto it = containers_.find(container_id);
  if (it == containers_.end()) {
    return Status(StatusCode::kNotFound, "container " + container_id + " not found");
  }
  it->second.stop_exit_code = exit_code;
  return Status::ok();
}

Status FakeRuntime::kill_sandbox(const std::string& sandbox_id) {
  std::lock_guard lock(mu_);
  auto it = sandboxes_.find(sandbox_id);
  if (it == sandboxes_.end()) {
    return Status(StatusCode::kNotFound, "sandbox " + sandbox_id + " not found");
  }
  it->second.state = v1::SANDBOX_NOTREADY;
  return Status::ok();
}

void FakeRuntime::set_exec_result(const std::vector<std::string>& cmd, v1::ExecSyncResponse result,
                                  const std::string& container_id) {
  std::lock_guard lock(mu_);
  exec_results_[{container_id, exec_key(cmd)}] = std::move(result);
}

Status FakeRuntime::set_container_stats(const std::string& container_id, uint64_t cpu_core_nanos,
                                        uint64_t memory_working_set_bytes,
                                        uint64_t writable_layer_bytes) {
  std::lock_guard lock(mu_);
  auto it = containers_.find(container_id);
  if (it == containers_.end()) {
    return Status(StatusCode::kNotFound, "container " + container_id + " not found");
  }
  it->second.cpu_core_nanos = cpu_core_nanos;
  it->second.memory_working_set_bytes = memory_working_set_bytes;
  it->second.writable_layer_bytes = writable_layer_bytes;
  return Status::ok();
}

void FakeRuntime::set_condition(const std::string& type, bool status, const std::string& reason,
                                const std::string& message) {
  std::lock_guard lock(mu_);
  v1::RuntimeCondition& condition = conditions_[type];
  condition.set_type(type);
  condition.set_status(status);
  condition.set_reason(reason);
  condition.set_message(message);
}

std::vector<std::string> FakeRuntime::calls() const {
  std::lock_guard lock(mu_);
  return calls_;
}

int FakeRuntime::call_count(const std::string& method) const {
  std::lock_guard lock(mu_);
  return static_cast<int>(std::count(calls_.begin(), calls_.end(), method));
}

void FakeRuntime::clear_calls() {
  std::lock_guard lock(mu_);
  calls_.clear();
}

std::optional<v1::PodSandboxConfig> FakeRuntime::sandbox_config(
    const std::string& sandbox_id) const {
  std::lock_guard lock(mu_);
  auto it = sandboxes_.find(sandbox_id);
  if (it == sandboxes_.end()) return std::nullopt;
  return it->second.config;
}

std::optional<v1::ContainerConfig> FakeRuntime::container_config(
    const std::string& container_id) const {
  std::lock_guard lock(mu_);
  auto it = containers_.find(container_id);
  if (it == containers_.end()) return std::nullopt;
  return it->second.config;
}

std::string FakeRuntime::pod_cidr() const {
  std::lock_guard lock(mu_);
  return pod_cidr_;
}

int FakeRuntime::reopen_count(const std::string& container_id) const {
  std::lock_guard lock(mu_);
  auto it = containers_.find(container_id);
  return it == containers_.end() ? 0 : it->second.reopen_count;
}

}  // namespace skiff::kubelet::cri
