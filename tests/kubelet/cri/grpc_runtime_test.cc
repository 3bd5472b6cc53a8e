// GrpcRuntime against a real containerd (started by the test, see containerd_fixture.h), plus the
// parts that need no runtime: endpoint parsing, error mapping, timeouts.

#include "kubelet/cri/grpc_runtime.h"

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <thread>

#include "kubelet/cri/api.grpc.pb.h"
#include "kubelet/cri/containerd_fixture.h"
#include "support/eventually.h"
#include "support/temp_dir.h"

namespace skiff::kubelet::cri {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using skiff::testing::CriContainerd;
using skiff::testing::eventually;
using skiff::testing::TempDir;

// ---- Without a runtime ----

TEST(GrpcRuntimeEndpointTest, SocketPaths) {
  EXPECT_EQ(*socket_path_for_endpoint("unix:///run/containerd/containerd.sock"),
            "/run/containerd/containerd.sock");
  EXPECT_EQ(*socket_path_for_endpoint("/run/containerd/containerd.sock"),
            "/run/containerd/containerd.sock");
  EXPECT_EQ(*socket_path_for_endpoint("unix:/run/x.sock"), "/run/x.sock");
  EXPECT_EQ(socket_path_for_endpoint("tcp://127.0.0.1:1234").status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(socket_path_for_endpoint("unix://").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(socket_path_for_endpoint("").status().code(), StatusCode::kInvalidArgument);
}

TEST(GrpcRuntimeErrorTest, GrpcCodesMapToSkiffCodes) {
  // grpc::StatusCode values are the gRPC wire codes.
  EXPECT_EQ(status_code_for_grpc(5, "x"), StatusCode::kNotFound);            // NOT_FOUND
  EXPECT_EQ(status_code_for_grpc(4, "x"), StatusCode::kDeadlineExceeded);    // DEADLINE_EXCEEDED
  EXPECT_EQ(status_code_for_grpc(14, "x"), StatusCode::kUnavailable);        // UNAVAILABLE
  EXPECT_EQ(status_code_for_grpc(3, "x"), StatusCode::kInvalidArgument);     // INVALID_ARGUMENT
  EXPECT_EQ(status_code_for_grpc(6, "x"), StatusCode::kAlreadyExists);       // ALREADY_EXISTS
  EXPECT_EQ(status_code_for_grpc(9, "x"), StatusCode::kFailedPrecondition);  // FAILED_PRECONDITION
  EXPECT_EQ(status_code_for_grpc(12, "x"), StatusCode::kUnimplemented);      // UNIMPLEMENTED
  EXPECT_EQ(status_code_for_grpc(1, "x"), StatusCode::kCancelled);           // CANCELLED
  EXPECT_EQ(status_code_for_grpc(13, "boom"), StatusCode::kInternal);        // INTERNAL
  EXPECT_EQ(status_code_for_grpc(2, "failed to create shim task"), StatusCode::kInternal);
  // containerd's wrapped "not found" errors arrive as UNKNOWN.
  EXPECT_EQ(status_code_for_grpc(2, "failed to get sandbox \"abc\": not found"),
            StatusCode::kNotFound);
  EXPECT_EQ(status_code_for_grpc(2, "an error occurred when try to find container: NOT FOUND"),
            StatusCode::kNotFound);
}

TEST(GrpcRuntimeConnectTest, MissingSocketIsUnavailableAfterTheTimeout) {
  TempDir dir("skiff-cri-connect");
  auto start = std::chrono::steady_clock::now();
  Result<std::unique_ptr<GrpcRuntime>> runtime =
      connect_runtime("unix://" + dir.sub("nothing.sock"), 300ms);
  auto took = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(runtime.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(runtime.status().message().find("nothing.sock"), std::string::npos);
  EXPECT_GE(took, 300ms);
  EXPECT_LT(took, 5s);

  EXPECT_EQ(connect_runtime("tcp://127.0.0.1:1", 100ms).status().code(),
            StatusCode::kInvalidArgument);

  // A runtime object for a socket nobody serves: calls fail fast as UNAVAILABLE.
  GrpcRuntimeOptions options;
  options.endpoint = dir.sub("nothing.sock");
  options.timeout = 5s;
  GrpcRuntime orphan(options);
  Result<v1::VersionResponse> version = orphan.version();
  EXPECT_EQ(version.status().code(), StatusCode::kUnavailable) << version.status().to_string();
}

// A CRI server of the test's own on a unix socket, answering as told.
class StubRuntimeService final : public v1::RuntimeService::Service {
 public:
  std::string api_version = "v1";
  // Set by the test thread, read by the server's threads.
  std::atomic<int> version_delay_ms{0};
  std::atomic<size_t> list_label_bytes{0};

  grpc::Status Version(grpc::ServerContext*, const v1::VersionRequest*,
                       v1::VersionResponse* response) override {
    std::this_thread::sleep_for(std::chrono::milliseconds(version_delay_ms.load()));
    response->set_runtime_name("stub");
    response->set_runtime_api_version(api_version);
    return grpc::Status::OK;
  }
  grpc::Status ContainerStatus(grpc::ServerContext*, const v1::ContainerStatusRequest* request,
                               v1::ContainerStatusResponse*) override {
    // containerd's wording for an id it does not know, without a code.
    return grpc::Status(grpc::StatusCode::UNKNOWN,
                        "an error occurred when try to find container \"" +
                            request->container_id() + "\": not found");
  }
  grpc::Status StartContainer(grpc::ServerContext*, const v1::StartContainerRequest*,
                              v1::StartContainerResponse*) override {
    return grpc::Status(grpc::StatusCode::UNKNOWN, "failed to create shim task: exec failed");
  }
  grpc::Status ListContainers(grpc::ServerContext*, const v1::ListContainersRequest*,
                              v1::ListContainersResponse* response) override {
    v1::Container* c = response->add_containers();
    c->set_id("big");
    (*c->mutable_labels())["filler"] = std::string(list_label_bytes, 'x');
    return grpc::Status::OK;
  }
};

class StubImageService final : public v1::ImageService::Service {
 public:
  grpc::Status ImageStatus(grpc::ServerContext*, const v1::ImageStatusRequest*,
                           v1::ImageStatusResponse*) override {
    return grpc::Status::OK;  // no image: the field stays unset
  }
};

class StubServer {
 public:
  explicit StubServer(const std::string& socket_path) : socket_path_(socket_path) {}
  ~StubServer() {
    if (server_) server_->Shutdown(std::chrono::system_clock::now() + 1s);
  }
  void start() {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("unix:" + socket_path_, grpc::InsecureServerCredentials());
    builder.RegisterService(&runtime);
    builder.RegisterService(&images);
    builder.SetMaxSendMessageSize(64 << 20);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
  }

  StubRuntimeService runtime;
  StubImageService images;

 private:
  std::string socket_path_;
  std::unique_ptr<grpc::Server> server_;
};

TEST(GrpcRuntimeStubTest, ErrorsDeadlinesAndMessageSizes) {
  TempDir dir("skiff-cri-stub");
  StubServer server(dir.sub("cri.sock"));
  server.start();
  GrpcRuntimeOptions options;
  options.endpoint = "unix://" + dir.sub("cri.sock");
  options.timeout = 10s;
  Result<std::unique_ptr<GrpcRuntime>> connected = connect_runtime(options, 5s);
  ASSERT_TRUE(connected.is_ok()) << connected.status().to_string();
  GrpcRuntime& runtime = **connected;

  Result<v1::ContainerStatus> status = runtime.container_status("abc");
  EXPECT_EQ(status.status().code(), StatusCode::kNotFound);
  EXPECT_NE(status.status().message().find("ContainerStatus"), std::string::npos);
  EXPECT_NE(status.status().message().find("\"abc\""), std::string::npos);
  EXPECT_EQ(runtime.start_container("abc").code(), StatusCode::kInternal);

  Result<std::optional<v1::Image>> image = runtime.image_status(v1::ImageSpec());
  ASSERT_TRUE(image.is_ok()) << image.status().to_string();
  EXPECT_FALSE(image->has_value());

  // Not served by the stub.
  EXPECT_EQ(runtime.status().status().code(), StatusCode::kUnimplemented);

  // Above gRPC's default 4 MiB receive limit, within skiff's 16 MiB.
  server.runtime.list_label_bytes = 6 << 20;
  Result<std::vector<v1::Container>> big = runtime.list_containers({});
  ASSERT_TRUE(big.is_ok()) << big.status().to_string();
  EXPECT_EQ((*big)[0].labels().at("filler").size(), size_t{6 << 20});
  server.runtime.list_label_bytes = 20 << 20;
  EXPECT_EQ(runtime.list_containers({}).status().code(), StatusCode::kResourceExhausted);

  // A runtime that does not answer in time.
  server.runtime.version_delay_ms = 1500;
  options.timeout = 300ms;
  GrpcRuntime impatient(options);
  auto start = std::chrono::steady_clock::now();
  Result<v1::VersionResponse> version = impatient.version();
  auto took = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(version.status().code(), StatusCode::kDeadlineExceeded) << version.status().to_string();
  EXPECT_GE(took, 300ms);
  EXPECT_LT(took, 1400ms);
}

TEST(GrpcRuntimeStubTest, ConnectChecksTheApiVersionAndWaitsForTheSocket) {
  TempDir dir("skiff-cri-stub");
  {
    StubServer old_api(dir.sub("old.sock"));
    old_api.runtime.api_version = "v1alpha2";
    old_api.start();
    Result<std::unique_ptr<GrpcRuntime>> connected =
        connect_runtime("unix://" + dir.sub("old.sock"), 5s);
    EXPECT_EQ(connected.status().code(), StatusCode::kFailedPrecondition);
    EXPECT_NE(connected.status().message().find("v1alpha2"), std::string::npos);
  }

  // The socket appears only after a while, as when the kubelet starts its own containerd.
  StubServer late(dir.sub("late.sock"));
  std::thread starter([&] {
    std::this_thread::sleep_for(300ms);
    late.start();
  });
  auto start = std::chrono::steady_clock::now();
  Result<std::unique_ptr<GrpcRuntime>> connected = connect_runtime(dir.sub("late.sock"), 10s);
  auto took = std::chrono::steady_clock::now() - start;
  starter.join();
  ASSERT_TRUE(connected.is_ok()) << connected.status().to_string();
  EXPECT_GE(took, 250ms);
  EXPECT_EQ((*connected)->version()->runtime_name(), "stub");
}

// ---- Against containerd ----

// Per-call latencies, printed once the suite is done.
class Latencies {
 public:
  template <typename F>
  auto time(const std::string& rpc, F&& call) {
    auto start = std::chrono::steady_clock::now();
    auto result = call();
    double ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    samples_[rpc].push_back(ms);
    return result;
  }

  void print() const {
    if (samples_.empty()) return;
    std::printf("\nCRI call latencies against containerd (ms):\n");
    std::printf("  %-26s %5s %8s %8s %8s\n", "call", "n", "min", "median", "max");
    for (const auto& [rpc, values] : samples_) {
      std::vector<double> sorted = values;
      std::sort(sorted.begin(), sorted.end());
      std::printf("  %-26s %5zu %8.1f %8.1f %8.1f\n", rpc.c_str(), sorted.size(), sorted.front(),
                  sorted[sorted.size() / 2], sorted.back());
    }
  }

 private:
  std::map<std::string, std::vector<double>> samples_;
};

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

class ContainerdCriTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    skip_reason_ = CriContainerd::unavailable_reason();
    if (!skip_reason_.empty()) return;
    skiff::testing::CriContainerdOptions options;
    options.pause_binary = SKIFF_PAUSE_BINARY;
    containerd_ = new CriContainerd(options);
    auto start = std::chrono::steady_clock::now();
    Status started = containerd_->start();
    if (!started.is_ok()) {
      start_error_ = started.to_string();
      return;
    }
    std::printf(
        "containerd started and images imported in %.0f ms (dir %s, netns %s)\n",
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count(),
        containerd_->dir().c_str(), containerd_->netns().c_str());
  }

  static void TearDownTestSuite() {
    latencies_.print();
    if (containerd_ == nullptr) return;
    std::string dir = containerd_->dir();
    std::vector<std::string> leftovers = containerd_->cleanup();
    for (const std::string& leftover : leftovers) ADD_FAILURE() << "left behind: " << leftover;
    EXPECT_FALSE(fs::exists(dir));
    delete containerd_;
    containerd_ = nullptr;
  }

  void SetUp() override {
    if (!skip_reason_.empty()) GTEST_SKIP() << skip_reason_;
    ASSERT_TRUE(start_error_.empty()) << start_error_;
  }

  void TearDown() override {
    if (HasFailure() && containerd_ != nullptr) {
      std::printf("containerd log tail:\n%s\n", containerd_->log_tail().c_str());
    }
    // Each test's pods go away with it, pass or fail.
    for (const std::string& id : sandboxes_) {
      (void)runtime().stop_pod_sandbox(id);
      (void)runtime().remove_pod_sandbox(id);
    }
  }

  GrpcRuntime& runtime() { return containerd_->runtime(); }

  v1::PodSandboxConfig sandbox_config(const std::string& name) {
    v1::PodSandboxConfig config;
    std::string uid = name + "-" + std::to_string(++counter_);
    config.mutable_metadata()->set_name(name);
    config.mutable_metadata()->set_namespace_("default");
    config.mutable_metadata()->set_uid(uid);
    config.mutable_metadata()->set_attempt(0);
    config.set_hostname(name);
    // The kubelet creates the pod's log directory before it asks for the sandbox.
    config.set_log_directory(containerd_->dir() + "/pods/default_" + name + "_" + uid);
    fs::create_directories(config.log_directory());
    config.mutable_dns_config()->add_servers("10.96.0.10");
    config.mutable_dns_config()->add_searches("default.svc.cluster.local");
    config.mutable_dns_config()->add_options("ndots:5");
    (*config.mutable_labels())["io.kubernetes.pod.name"] = name;
    (*config.mutable_labels())["app"] = name;
    (*config.mutable_annotations())["skiff.test/origin"] = "grpc_runtime_test";
    v1::LinuxPodSandboxConfig* linux = config.mutable_linux();
    linux->set_cgroup_parent(containerd_->cgroup_root() + "/pod" + uid);
    v1::NamespaceOption* ns = linux->mutable_security_context()->mutable_namespace_options();
    ns->set_network(v1::POD);
    ns->set_pid(v1::CONTAINER);
    ns->set_ipc(v1::POD);
    (*linux->mutable_sysctls())["net.ipv4.ip_unprivileged_port_start"] = "0";
    return config;
  }

  v1::ContainerConfig container_config(const std::string& name,
                                       const std::vector<std::string>& command) {
    v1::ContainerConfig config;
    config.mutable_metadata()->set_name(name);
    config.mutable_image()->set_image("docker.io/library/busybox:latest");
    for (const std::string& arg : command) config.add_command(arg);
    config.set_log_path(name + "_0.log");
    (*config.mutable_labels())["io.kubernetes.container.name"] = name;
    v1::KeyValue* env = config.add_envs();
    env->set_key("GREETING");
    env->set_value("hello from skiff");
    v1::LinuxContainerResources* resources = config.mutable_linux()->mutable_resources();
    resources->set_cpu_period(100000);
    resources->set_cpu_quota(50000);
    resources->set_cpu_shares(512);
    resources->set_memory_limit_in_bytes(64 << 20);
    resources->set_oom_score_adj(1000);
    v1::LinuxContainerSecurityContext* security =
        config.mutable_linux()->mutable_security_context();
    security->mutable_namespace_options()->set_pid(v1::CONTAINER);
    security->mutable_run_as_user()->set_value(0);
    return config;
  }

  // RunPodSandbox, recorded for cleanup.
  std::string run_sandbox(const v1::PodSandboxConfig& config) {
    Result<std::string> id =
        latencies_.time("RunPodSandbox", [&] { return runtime().run_pod_sandbox(config, ""); });
    EXPECT_TRUE(id.is_ok()) << id.status().to_string();
    if (!id.is_ok()) return "";
    sandboxes_.push_back(*id);
    containerd_->track_sandbox(*id);
    return *id;
  }

  std::string create_and_start(const std::string& sandbox_id, const v1::ContainerConfig& config,
                               const v1::PodSandboxConfig& sandbox_config) {
    Result<std::string> id = latencies_.time("CreateContainer", [&] {
      return runtime().create_container(sandbox_id, config, sandbox_config);
    });
    EXPECT_TRUE(id.is_ok()) << id.status().to_string();
    if (!id.is_ok()) return "";
    containerd_->track_container(*id);
    Status started =
        latencies_.time("StartContainer", [&] { return runtime().start_container(*id); });
    EXPECT_TRUE(started.is_ok()) << started.to_string();
    return *id;
  }

  v1::ContainerStatus status_of(const std::string& container_id) {
    Result<v1::ContainerStatus> status = latencies_.time(
        "ContainerStatus", [&] { return runtime().container_status(container_id); });
    EXPECT_TRUE(status.is_ok()) << status.status().to_string();
    return status.is_ok() ? *status : v1::ContainerStatus();
  }

  bool wait_for_state(const std::string& container_id, v1::ContainerState state,
                      std::chrono::milliseconds timeout = 20s) {
    return eventually(
        [&] {
          Result<v1::ContainerStatus> status = runtime().container_status(container_id);
          return status.is_ok() && status->state() == state;
        },
        timeout);
  }

  std::set<std::string> list_ids(const v1::ContainerFilter& filter) {
    Result<std::vector<v1::Container>> list =
        latencies_.time("ListContainers", [&] { return runtime().list_containers(filter); });
    EXPECT_TRUE(list.is_ok()) << list.status().to_string();
    std::set<std::string> ids;
    if (list.is_ok()) {
      for (const v1::Container& c : *list) ids.insert(c.id());
    }
    return ids;
  }

  static inline std::string skip_reason_;
  static inline std::string start_error_;
  static inline CriContainerd* containerd_ = nullptr;
  static inline Latencies latencies_;
  static inline int counter_ = 0;
  std::vector<std::string> sandboxes_;
};

TEST_F(ContainerdCriTest, VersionStatusAndImageFs) {
  Result<v1::VersionResponse> version =
      latencies_.time("Version", [&] { return runtime().version(); });
  ASSERT_TRUE(version.is_ok()) << version.status().to_string();
  EXPECT_EQ(version->runtime_name(), "containerd");
  EXPECT_EQ(version->runtime_api_version(), "v1");
  EXPECT_FALSE(version->runtime_version().empty());

  Result<v1::StatusResponse> status = latencies_.time("Status", [&] { return runtime().status(); });
  ASSERT_TRUE(status.is_ok()) << status.status().to_string();
  std::map<std::string, bool> conditions;
  for (const v1::RuntimeCondition& c : status->status().conditions()) {
    conditions[c.type()] = c.status();
  }
  EXPECT_TRUE(conditions["RuntimeReady"]);
  EXPECT_TRUE(conditions["NetworkReady"]) << "the CNI conflist is in place";

  v1::RuntimeConfig config;
  config.mutable_network_config()->set_pod_cidr(containerd_->pod_subnet());
  Status updated = latencies_.time("UpdateRuntimeConfig",
                                   [&] { return runtime().update_runtime_config(config); });
  EXPECT_TRUE(updated.is_ok()) << updated.to_string();

  Result<std::vector<v1::FilesystemUsage>> fs_info =
      latencies_.time("ImageFsInfo", [&] { return runtime().image_fs_info(); });
  ASSERT_TRUE(fs_info.is_ok()) << fs_info.status().to_string();
  ASSERT_FALSE(fs_info->empty());
  EXPECT_EQ((*fs_info)[0].fs_id().mountpoint().rfind(containerd_->dir(), 0), 0u)
      << (*fs_info)[0].fs_id().mountpoint();
  // used_bytes is sampled every 10 s by containerd, so it may still be 0 here.
}

TEST_F(ContainerdCriTest, PodLifecycle) {
  const std::string data_dir = containerd_->dir() + "/data";
  fs::create_directories(data_dir);
  std::ofstream(data_dir + "/greeting.txt") << "mounted from the host\n";

  v1::PodSandboxConfig pod = sandbox_config("lifecycle");
  std::string sandbox_id = run_sandbox(pod);
  ASSERT_FALSE(sandbox_id.empty());
  EXPECT_TRUE(fs::exists(containerd_->shim_socket(sandbox_id)))
      << "the cleanup relies on containerd 1.6's shim socket naming";

  Result<v1::PodSandboxStatus> sandbox =
      latencies_.time("PodSandboxStatus", [&] { return runtime().pod_sandbox_status(sandbox_id); });
  ASSERT_TRUE(sandbox.is_ok()) << sandbox.status().to_string();
  EXPECT_EQ(sandbox->state(), v1::SANDBOX_READY);
  EXPECT_EQ(sandbox->network().ip().rfind(containerd_->pod_ip_prefix(), 0), 0u)
      << "pod IP " << sandbox->network().ip() << " not in " << containerd_->pod_subnet();
  EXPECT_EQ(sandbox->metadata().name(), "lifecycle");
  EXPECT_EQ(sandbox->labels().at("app"), "lifecycle");
  EXPECT_GT(sandbox->created_at(), 0);

  // A long-running container.
  v1::ContainerConfig main = container_config("main", {"sh", "-c", "echo hi; sleep 30"});
  v1::Mount* mount = main.add_mounts();
  mount->set_container_path("/data");
  mount->set_host_path(data_dir);
  mount->set_readonly(true);
  std::string main_id = create_and_start(sandbox_id, main, pod);
  ASSERT_FALSE(main_id.empty());
  v1::ContainerStatus status = status_of(main_id);
  EXPECT_EQ(status.state(), v1::CONTAINER_RUNNING);
  EXPECT_EQ(status.metadata().name(), "main");
  EXPECT_GT(status.started_at(), 0);
  EXPECT_EQ(status.log_path(), pod.log_directory() + "/main_0.log");
  EXPECT_FALSE(status.image_ref().empty());

  // Its output lands in the CRI log format: "<RFC 3339 time> stdout F hi".
  const std::regex log_line(
      R"(^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d) stdout F hi$)");
  std::string log;
  EXPECT_TRUE(eventually(
      [&] {
        log = read_file(status.log_path());
        return log.find(" stdout F hi\n") != std::string::npos;
      },
      10s))
      << "log: " << log;
  std::string first_line = log.substr(0, log.find('\n'));
  EXPECT_TRUE(std::regex_match(first_line, log_line)) << first_line;

  // ExecSync: exit code, stdout and stderr, the environment, the mount.
  Result<v1::ExecSyncResponse> exec = latencies_.time("ExecSync", [&] {
    return runtime().exec_sync(main_id, {"sh", "-c", "echo out; echo err >&2; exit 3"}, 10);
  });
  ASSERT_TRUE(exec.is_ok()) << exec.status().to_string();
  EXPECT_EQ(exec->exit_code(), 3);
  EXPECT_EQ(exec->stdout(), "out\n");
  EXPECT_EQ(exec->stderr(), "err\n");
  exec = latencies_.time("ExecSync", [&] {
    return runtime().exec_sync(main_id, {"sh", "-c", "echo $GREETING; cat /data/greeting.txt"}, 10);
  });
  ASSERT_TRUE(exec.is_ok()) << exec.status().to_string();
  EXPECT_EQ(exec->exit_code(), 0);
  EXPECT_EQ(exec->stdout(), "hello from skiff\nmounted from the host\n");
  exec = latencies_.time("ExecSync", [&] {
    return runtime().exec_sync(main_id, {"sh", "-c", "touch /data/x"}, 10);
  });
  ASSERT_TRUE(exec.is_ok());
  EXPECT_NE(exec->exit_code(), 0) << "the mount is read-only";
  exec = runtime().exec_sync(main_id, {"hostname"}, 10);
  ASSERT_TRUE(exec.is_ok());
  EXPECT_EQ(exec->stdout(), "lifecycle\n");

  // A container that handles SIGTERM, and one that exits by itself.
  std::string graceful_id = create_and_start(
      sandbox_id,
      container_config("graceful",
                       {"sh", "-c", "trap 'exit 42' TERM; while true; do sleep 0.1; done"}),
      pod);
  std::string short_id = create_and_start(
      sandbox_id, container_config("short", {"sh", "-c", "echo bye; exit 7"}), pod);
  ASSERT_FALSE(graceful_id.empty());
  ASSERT_FALSE(short_id.empty());
  ASSERT_TRUE(wait_for_state(short_id, v1::CONTAINER_EXITED));
  status = status_of(short_id);
  EXPECT_EQ(status.exit_code(), 7);
  EXPECT_EQ(status.reason(), "Error");
  // containerd records started_at after the start returns; a process this short may have
  // finished by then, so only the order against creation is certain.
  EXPECT_GE(status.finished_at(), status.created_at());

  // ListContainers filters.
  EXPECT_EQ(list_ids({}), (std::set<std::string>{main_id, graceful_id, short_id}));
  v1::ContainerFilter by_sandbox;
  by_sandbox.set_pod_sandbox_id(sandbox_id);
  EXPECT_EQ(list_ids(by_sandbox), (std::set<std::string>{main_id, graceful_id, short_id}));
  v1::ContainerFilter running;
  running.mutable_state()->set_state(v1::CONTAINER_RUNNING);
  EXPECT_EQ(list_ids(running), (std::set<std::string>{main_id, graceful_id}));
  v1::ContainerFilter exited;
  exited.mutable_state()->set_state(v1::CONTAINER_EXITED);
  EXPECT_EQ(list_ids(exited), (std::set<std::string>{short_id}));
  v1::ContainerFilter by_label;
  (*by_label.mutable_label_selector())["io.kubernetes.container.name"] = "graceful";
  EXPECT_EQ(list_ids(by_label), (std::set<std::string>{graceful_id}));
  v1::ContainerFilter by_id;
  by_id.set_id(main_id);
  EXPECT_EQ(list_ids(by_id), (std::set<std::string>{main_id}));
  v1::ContainerFilter elsewhere;
  elsewhere.set_pod_sandbox_id("0000000000000000000000000000000000000000000000000000000000000000");
  EXPECT_TRUE(list_ids(elsewhere).empty());

  v1::PodSandboxFilter sandbox_filter;
  (*sandbox_filter.mutable_label_selector())["app"] = "lifecycle";
  Result<std::vector<v1::PodSandbox>> sandboxes =
      latencies_.time("ListPodSandbox", [&] { return runtime().list_pod_sandbox(sandbox_filter); });
  ASSERT_TRUE(sandboxes.is_ok()) << sandboxes.status().to_string();
  ASSERT_EQ(sandboxes->size(), 1u);
  EXPECT_EQ((*sandboxes)[0].id(), sandbox_id);

  // Stats, log reopening, resource updates, streaming URLs.
  Result<v1::ContainerStats> stats =
      latencies_.time("ContainerStats", [&] { return runtime().container_stats(main_id); });
  ASSERT_TRUE(stats.is_ok()) << stats.status().to_string();
  EXPECT_EQ(stats->attributes().id(), main_id);
  EXPECT_GT(stats->memory().working_set_bytes().value(), 0u);
  v1::ContainerStatsFilter stats_filter;
  stats_filter.set_pod_sandbox_id(sandbox_id);
  Result<std::vector<v1::ContainerStats>> all_stats = latencies_.time(
      "ListContainerStats", [&] { return runtime().list_container_stats(stats_filter); });
  ASSERT_TRUE(all_stats.is_ok()) << all_stats.status().to_string();
  std::set<std::string> with_stats;
  for (const v1::ContainerStats& s : *all_stats) with_stats.insert(s.attributes().id());
  EXPECT_TRUE(with_stats.contains(main_id));
  EXPECT_TRUE(with_stats.contains(graceful_id));

  Status reopened = latencies_.time("ReopenContainerLog",
                                    [&] { return runtime().reopen_container_log(main_id); });
  EXPECT_TRUE(reopened.is_ok()) << reopened.to_string();
  v1::LinuxContainerResources resources = main.linux().resources();
  resources.set_cpu_quota(20000);
  Status resized = latencies_.time("UpdateContainerResources", [&] {
    return runtime().update_container_resources(main_id, resources);
  });
  EXPECT_TRUE(resized.is_ok()) << resized.to_string();

  v1::ExecRequest exec_request;
  exec_request.set_container_id(main_id);
  exec_request.add_cmd("sh");
  exec_request.set_stdout(true);
  Result<std::string> url = latencies_.time("Exec", [&] { return runtime().exec(exec_request); });
  ASSERT_TRUE(url.is_ok()) << url.status().to_string();
  EXPECT_EQ(url->rfind("http://127.0.0.1:", 0), 0u) << *url;
  v1::AttachRequest attach_request;
  attach_request.set_container_id(main_id);
  attach_request.set_stdout(true);
  url = latencies_.time("Attach", [&] { return runtime().attach(attach_request); });
  EXPECT_TRUE(url.is_ok()) << url.status().to_string();
  v1::PortForwardRequest forward_request;
  forward_request.set_pod_sandbox_id(sandbox_id);
  forward_request.add_port(80);
  url = latencies_.time("PortForward", [&] { return runtime().port_forward(forward_request); });
  EXPECT_TRUE(url.is_ok()) << url.status().to_string();

  // StopContainer: the trap answers SIGTERM; sh as PID 1 without a trap ignores it and is
  // killed when the grace period ends.
  Status stopped =
      latencies_.time("StopContainer", [&] { return runtime().stop_container(graceful_id, 10); });
  ASSERT_TRUE(stopped.is_ok()) << stopped.to_string();
  status = status_of(graceful_id);
  EXPECT_EQ(status.state(), v1::CONTAINER_EXITED);
  EXPECT_EQ(status.exit_code(), 42);

  auto stop_start = std::chrono::steady_clock::now();
  stopped = latencies_.time("StopContainer", [&] { return runtime().stop_container(main_id, 1); });
  auto stop_took = std::chrono::steady_clock::now() - stop_start;
  ASSERT_TRUE(stopped.is_ok()) << stopped.to_string();
  EXPECT_GE(stop_took, 900ms) << "the grace period is honoured";
  status = status_of(main_id);
  EXPECT_EQ(status.state(), v1::CONTAINER_EXITED);
  EXPECT_EQ(status.exit_code(), 137);
  EXPECT_GE(status.finished_at(), status.started_at());

  Status removed =
      latencies_.time("RemoveContainer", [&] { return runtime().remove_container(short_id); });
  ASSERT_TRUE(removed.is_ok()) << removed.to_string();
  EXPECT_EQ(runtime().container_status(short_id).status().code(), StatusCode::kNotFound);

  // Stopping the sandbox, then removing it.
  Status sandbox_stopped =
      latencies_.time("StopPodSandbox", [&] { return runtime().stop_pod_sandbox(sandbox_id); });
  ASSERT_TRUE(sandbox_stopped.is_ok()) << sandbox_stopped.to_string();
  sandbox = runtime().pod_sandbox_status(sandbox_id);
  ASSERT_TRUE(sandbox.is_ok()) << sandbox.status().to_string();
  EXPECT_EQ(sandbox->state(), v1::SANDBOX_NOTREADY);
  Status sandbox_removed =
      latencies_.time("RemovePodSandbox", [&] { return runtime().remove_pod_sandbox(sandbox_id); });
  ASSERT_TRUE(sandbox_removed.is_ok()) << sandbox_removed.to_string();
  EXPECT_EQ(runtime().pod_sandbox_status(sandbox_id).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(runtime().container_status(main_id).status().code(), StatusCode::kNotFound)
      << "removing a sandbox removes its containers";
  v1::PodSandboxFilter by_sandbox_id;
  by_sandbox_id.set_id(sandbox_id);
  EXPECT_TRUE(runtime().list_pod_sandbox(by_sandbox_id)->empty());
  EXPECT_FALSE(fs::exists(containerd_->shim_socket(sandbox_id)));
}

TEST_F(ContainerdCriTest, SeveralPodsGetDistinctAddresses) {
  std::set<std::string> ips;
  for (int i = 0; i < 3; ++i) {
    std::string id = run_sandbox(sandbox_config("multi" + std::to_string(i)));
    ASSERT_FALSE(id.empty());
    Result<v1::PodSandboxStatus> status = runtime().pod_sandbox_status(id);
    ASSERT_TRUE(status.is_ok());
    ips.insert(status->network().ip());
  }
  EXPECT_EQ(ips.size(), 3u);
  v1::PodSandboxFilter ready;
  ready.mutable_state()->set_state(v1::SANDBOX_READY);
  Result<std::vector<v1::PodSandbox>> list = runtime().list_pod_sandbox(ready);
  ASSERT_TRUE(list.is_ok());
  EXPECT_EQ(list->size(), 3u);
  for (const std::string& id : sandboxes_) {
    Status stopped =
        latencies_.time("StopPodSandbox", [&] { return runtime().stop_pod_sandbox(id); });
    EXPECT_TRUE(stopped.is_ok()) << stopped.to_string();
  }
  EXPECT_TRUE(runtime().list_pod_sandbox(ready)->empty());
}

TEST_F(ContainerdCriTest, Images) {
  v1::ImageSpec busybox;
  busybox.set_image("docker.io/library/busybox:latest");
  Result<std::optional<v1::Image>> present =
      latencies_.time("ImageStatus", [&] { return runtime().image_status(busybox); });
  ASSERT_TRUE(present.is_ok()) << present.status().to_string();
  ASSERT_TRUE(present->has_value());
  EXPECT_EQ((*present)->id().rfind("sha256:", 0), 0u);
  EXPECT_GT((*present)->size(), 0u);
  EXPECT_NE(std::find((*present)->repo_tags().begin(), (*present)->repo_tags().end(),
                      "docker.io/library/busybox:latest"),
            (*present)->repo_tags().end());

  // The short name resolves the same way the kubelet's users write it.
  v1::ImageSpec short_name;
  short_name.set_image("busybox");
  Result<std::optional<v1::Image>> by_short_name = runtime().image_status(short_name);
  ASSERT_TRUE(by_short_name.is_ok());
  ASSERT_TRUE(by_short_name->has_value());
  EXPECT_EQ((*by_short_name)->id(), (*present)->id());

  v1::ImageSpec missing;
  missing.set_image("docker.io/library/skiff-missing:1.0");
  Result<std::optional<v1::Image>> absent =
      latencies_.time("ImageStatus", [&] { return runtime().image_status(missing); });
  ASSERT_TRUE(absent.is_ok()) << absent.status().to_string();
  EXPECT_FALSE(absent->has_value());

  Result<std::vector<v1::Image>> images =
      latencies_.time("ListImages", [&] { return runtime().list_images({}); });
  ASSERT_TRUE(images.is_ok()) << images.status().to_string();
  std::set<std::string> tags;
  for (const v1::Image& image : *images)
    tags.insert(image.repo_tags().begin(), image.repo_tags().end());
  EXPECT_TRUE(tags.contains("docker.io/library/busybox:latest"));
  EXPECT_TRUE(tags.contains("registry.k8s.io/pause:3.9"));

  // No registry is reachable: the pull fails, with an error rather than a hang.
  Result<std::string> pulled = latencies_.time("PullImage (fails)", [&] {
    return runtime().pull_image(missing, {}, sandbox_config("pull"));
  });
  EXPECT_FALSE(pulled.is_ok());
  EXPECT_NE(pulled.status().message().find("skiff-missing"), std::string::npos)
      << pulled.status().to_string();
  std::printf("PullImage without a registry: %s\n", pulled.status().to_string().c_str());
}

TEST_F(ContainerdCriTest, UnknownIdsAndMissingImages) {
  const std::string unknown = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
  EXPECT_EQ(runtime().container_status(unknown).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(runtime().pod_sandbox_status(unknown).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(runtime().start_container(unknown).code(), StatusCode::kNotFound);
  EXPECT_EQ(runtime().stop_container(unknown, 1).code(), StatusCode::kNotFound);
  EXPECT_EQ(runtime().exec_sync(unknown, {"true"}, 1).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(runtime().container_stats(unknown).status().code(), StatusCode::kNotFound);
  // Removing what is not there is not an error (the kubelet retries removals).
  EXPECT_TRUE(runtime().remove_container(unknown).is_ok());
  EXPECT_TRUE(runtime().remove_pod_sandbox(unknown).is_ok());

  v1::PodSandboxConfig pod = sandbox_config("errors");
  std::string sandbox_id = run_sandbox(pod);
  ASSERT_FALSE(sandbox_id.empty());
  v1::ContainerConfig no_image = container_config("noimage", {"true"});
  no_image.mutable_image()->set_image("docker.io/library/skiff-missing:1.0");
  Result<std::string> created = runtime().create_container(sandbox_id, no_image, pod);
  EXPECT_EQ(created.status().code(), StatusCode::kNotFound) << created.status().to_string();
  EXPECT_EQ(
      runtime().create_container(unknown, container_config("x", {"true"}), pod).status().code(),
      StatusCode::kNotFound);

  // A command that does not exist fails at start, not at create.
  Result<std::string> bad =
      runtime().create_container(sandbox_id, container_config("bad", {"/no/such/binary"}), pod);
  ASSERT_TRUE(bad.is_ok()) << bad.status().to_string();
  containerd_->track_container(*bad);
  Status started = runtime().start_container(*bad);
  EXPECT_FALSE(started.is_ok());
  std::printf("StartContainer of a missing binary: %s\n", started.to_string().c_str());
}

// The cleanup a failed or crashed test relies on: containerd dies with a pod running, and the
// fixture still removes everything (shims, container processes, mounts, namespaces, cgroups).
TEST_F(ContainerdCriTest, CleanupAfterContainerdDies) {
  skiff::testing::CriContainerdOptions options;
  options.pause_binary = SKIFF_PAUSE_BINARY;
  CriContainerd doomed(options);
  Status started = doomed.start();
  ASSERT_TRUE(started.is_ok()) << started.to_string();
  const std::string dir = doomed.dir();
  const std::string netns = doomed.netns();

  v1::PodSandboxConfig pod = sandbox_config("doomed");
  pod.set_log_directory(dir + "/pods/doomed");
  pod.mutable_linux()->set_cgroup_parent(doomed.cgroup_root() + "/pod-doomed");
  fs::create_directories(pod.log_directory());
  Result<std::string> sandbox_id = doomed.runtime().run_pod_sandbox(pod, "");
  ASSERT_TRUE(sandbox_id.is_ok()) << sandbox_id.status().to_string();
  doomed.track_sandbox(*sandbox_id);
  Result<std::string> container_id = doomed.runtime().create_container(
      *sandbox_id, container_config("sleeper", {"sleep", "3600"}), pod);
  ASSERT_TRUE(container_id.is_ok()) << container_id.status().to_string();
  doomed.track_container(*container_id);
  ASSERT_TRUE(doomed.runtime().start_container(*container_id).is_ok());
  const std::string shim_socket = doomed.shim_socket(*sandbox_id);
  EXPECT_TRUE(fs::exists(shim_socket));

  doomed.kill_containerd();
  std::vector<std::string> leftovers = doomed.cleanup();
  EXPECT_TRUE(leftovers.empty()) << "left behind: " << ::testing::PrintToString(leftovers);
  EXPECT_FALSE(fs::exists(dir));
  EXPECT_FALSE(fs::exists("/var/run/netns/" + netns));
  EXPECT_FALSE(fs::exists(shim_socket));
  std::string mountinfo = read_file("/proc/self/mountinfo");
  EXPECT_EQ(mountinfo.find(dir), std::string::npos);
}

}  // namespace
}  // namespace skiff::kubelet::cri
