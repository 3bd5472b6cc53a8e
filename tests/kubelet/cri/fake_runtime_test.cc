#include "kubelet/cri/fake_runtime.h"

#include <gtest/gtest.h>

#include <set>
#include <thread>

namespace skiff::kubelet::cri {
namespace {

v1::PodSandboxConfig sandbox_config(const std::string& name, uint32_t attempt = 0) {
  v1::PodSandboxConfig config;
  config.mutable_metadata()->set_name(name);
  config.mutable_metadata()->set_namespace_("default");
  config.mutable_metadata()->set_uid("uid-" + name);
  config.mutable_metadata()->set_attempt(attempt);
  config.set_log_directory("/var/log/pods/default_" + name + "_uid-" + name);
  (*config.mutable_labels())["app"] = name;
  return config;
}

v1::ContainerConfig container_config(const std::string& name, const std::string& image) {
  v1::ContainerConfig config;
  config.mutable_metadata()->set_name(name);
  config.mutable_image()->set_image(image);
  config.set_log_path(name + "/0.log");
  (*config.mutable_labels())["container"] = name;
  return config;
}

class FakeRuntimeTest : public ::testing::Test {
 protected:
  void SetUp() override { runtime_.add_image("busybox"); }

  std::string run_sandbox(const std::string& name) {
    Result<std::string> id = runtime_.run_pod_sandbox(sandbox_config(name), "");
    EXPECT_TRUE(id.is_ok()) << id.status().to_string();
    return id.is_ok() ? *id : "";
  }

  std::string start_container(const std::string& sandbox_id, const std::string& name) {
    Result<std::string> id = runtime_.create_container(
        sandbox_id, container_config(name, "busybox"), *runtime_.sandbox_config(sandbox_id));
    EXPECT_TRUE(id.is_ok()) << id.status().to_string();
    if (!id.is_ok()) return "";
    Status started = runtime_.start_container(*id);
    EXPECT_TRUE(started.is_ok()) << started.to_string();
    return *id;
  }

  v1::ContainerState state_of(const std::string& container_id) {
    Result<v1::ContainerStatus> status = runtime_.container_status(container_id);
    EXPECT_TRUE(status.is_ok()) << status.status().to_string();
    return status.is_ok() ? status->state() : v1::CONTAINER_UNKNOWN;
  }

  FakeRuntime runtime_;
};

TEST_F(FakeRuntimeTest, VersionAndConditions) {
  Result<v1::VersionResponse> version = runtime_.version();
  ASSERT_TRUE(version.is_ok());
  EXPECT_EQ(version->runtime_api_version(), "v1");

  runtime_.set_condition("NetworkReady", false, "NetworkPluginNotReady", "cni not initialized");
  Result<v1::StatusResponse> status = runtime_.status();
  ASSERT_TRUE(status.is_ok());
  std::map<std::string, bool> conditions;
  for (const v1::RuntimeCondition& c : status->status().conditions())
    conditions[c.type()] = c.status();
  EXPECT_EQ(conditions,
            (std::map<std::string, bool>{{"RuntimeReady", true}, {"NetworkReady", false}}));

  v1::RuntimeConfig config;
  config.mutable_network_config()->set_pod_cidr("10.42.0.0/24");
  ASSERT_TRUE(runtime_.update_runtime_config(config).is_ok());
  EXPECT_EQ(runtime_.pod_cidr(), "10.42.0.0/24");
}

TEST_F(FakeRuntimeTest, SandboxLifecycleAllocatesAndReleasesIps) {
  runtime_.set_clock([] { return int64_t{1'000'000'000}; });
  std::string a = run_sandbox("a");
  std::string b = run_sandbox("b");
  ASSERT_NE(a, b);
  EXPECT_EQ(a.size(), 64u);

  Result<v1::PodSandboxStatus> status = runtime_.pod_sandbox_status(a);
  ASSERT_TRUE(status.is_ok());
  EXPECT_EQ(status->state(), v1::SANDBOX_READY);
  EXPECT_EQ(status->network().ip(), "10.42.0.2");
  EXPECT_EQ(status->created_at(), 1'000'000'000);
  EXPECT_EQ(status->metadata().name(), "a");
  EXPECT_EQ(runtime_.pod_sandbox_status(b)->network().ip(), "10.42.0.3");

  // Host-network pods get no pod IP.
  v1::PodSandboxConfig host = sandbox_config("host");
  host.mutable_linux()->mutable_security_context()->mutable_namespace_options()->set_network(
      v1::NODE);
  Result<std::string> host_id = runtime_.run_pod_sandbox(host, "");
  ASSERT_TRUE(host_id.is_ok());
  EXPECT_EQ(runtime_.pod_sandbox_status(*host_id)->network().ip(), "");
  EXPECT_EQ(runtime_.pod_sandbox_status(*host_id)->linux().namespaces().options().network(),
            v1::NODE);

  // Stopping releases the IP; the next sandbox reuses it.
  ASSERT_TRUE(runtime_.stop_pod_sandbox(a).is_ok());
  status = runtime_.pod_sandbox_status(a);
  EXPECT_EQ(status->state(), v1::SANDBOX_NOTREADY);
  EXPECT_EQ(status->network().ip(), "");
  ASSERT_TRUE(runtime_.stop_pod_sandbox(a).is_ok()) << "stop is idempotent";
  std::string c = run_sandbox("c");
  EXPECT_EQ(runtime_.pod_sandbox_status(c)->network().ip(), "10.42.0.2");

  ASSERT_TRUE(runtime_.remove_pod_sandbox(a).is_ok());
  EXPECT_EQ(runtime_.pod_sandbox_status(a).status().code(), StatusCode::kNotFound);
  EXPECT_TRUE(runtime_.remove_pod_sandbox(a).is_ok()) << "removing a missing sandbox is fine";
  EXPECT_EQ(runtime_.stop_pod_sandbox(a).code(), StatusCode::kNotFound);
}

TEST_F(FakeRuntimeTest, SandboxConfigIsValidatedAndNamesAreReserved) {
  v1::PodSandboxConfig no_uid = sandbox_config("x");
  no_uid.mutable_metadata()->clear_uid();
  EXPECT_EQ(runtime_.run_pod_sandbox(no_uid, "").status().code(), StatusCode::kInvalidArgument);

  run_sandbox("x");
  EXPECT_EQ(runtime_.run_pod_sandbox(sandbox_config("x"), "").status().code(),
            StatusCode::kAlreadyExists);
  EXPECT_TRUE(runtime_.run_pod_sandbox(sandbox_config("x", 1), "").is_ok())
      << "a new attempt is a new name";
}

TEST_F(FakeRuntimeTest, ContainerLifecycle) {
  int64_t clock = 100;
  runtime_.set_clock([&clock] { return clock; });
  std::string sandbox = run_sandbox("web");

  EXPECT_EQ(runtime_
                .create_container(sandbox, container_config("c", "nginx"),
                                  *runtime_.sandbox_config(sandbox))
                .status()
                .code(),
            StatusCode::kNotFound)
      << "the image is not present";
  EXPECT_EQ(runtime_
                .create_container("nope", container_config("c", "busybox"),
                                  *runtime_.sandbox_config(sandbox))
                .status()
                .code(),
            StatusCode::kNotFound);

  Result<std::string> id =
      runtime_.create_container(sandbox, container_config("c", "docker.io/library/busybox:latest"),
                                *runtime_.sandbox_config(sandbox));
  ASSERT_TRUE(id.is_ok()) << id.status().to_string();
  Result<v1::ContainerStatus> status = runtime_.container_status(*id);
  ASSERT_TRUE(status.is_ok());
  EXPECT_EQ(status->state(), v1::CONTAINER_CREATED);
  EXPECT_EQ(status->created_at(), 100);
  EXPECT_EQ(status->started_at(), 0);
  EXPECT_EQ(status->log_path(), "/var/log/pods/default_web_uid-web/c/0.log");
  EXPECT_EQ(status->image_ref().rfind("sha256:", 0), 0u);
  EXPECT_EQ(runtime_
                .create_container(sandbox, container_config("c", "busybox"),
                                  *runtime_.sandbox_config(sandbox))
                .status()
                .code(),
            StatusCode::kAlreadyExists);

  clock = 200;
  ASSERT_TRUE(runtime_.start_container(*id).is_ok());
  status = runtime_.container_status(*id);
  EXPECT_EQ(status->state(), v1::CONTAINER_RUNNING);
  EXPECT_EQ(status->started_at(), 200);
  EXPECT_EQ(runtime_.start_container(*id).code(), StatusCode::kFailedPrecondition);

  clock = 300;
  ASSERT_TRUE(runtime_.exit_container(*id, 2, "", "boom").is_ok());
  status = runtime_.container_status(*id);
  EXPECT_EQ(status->state(), v1::CONTAINER_EXITED);
  EXPECT_EQ(status->exit_code(), 2);
  EXPECT_EQ(status->reason(), "Error");
  EXPECT_EQ(status->message(), "boom");
  EXPECT_EQ(status->finished_at(), 300);
  EXPECT_EQ(runtime_.exit_container(*id, 0).code(), StatusCode::kFailedPrecondition);

  ASSERT_TRUE(runtime_.remove_container(*id).is_ok());
  EXPECT_EQ(runtime_.container_status(*id).status().code(), StatusCode::kNotFound);
  EXPECT_TRUE(runtime_.remove_container(*id).is_ok());
  EXPECT_EQ(runtime_.stop_container(*id, 10).code(), StatusCode::kNotFound);
}

TEST_F(FakeRuntimeTest, StopContainerExitCodes) {
  std::string sandbox = run_sandbox("web");
  std::string graceful = start_container(sandbox, "graceful");
  std::string killed = start_container(sandbox, "killed");
  std::string custom = start_container(sandbox, "custom");
  ASSERT_TRUE(runtime_.set_stop_exit_code(custom, 143).is_ok());

  ASSERT_TRUE(runtime_.stop_container(graceful, 30).is_ok());
  ASSERT_TRUE(runtime_.stop_container(killed, 0).is_ok());
  ASSERT_TRUE(runtime_.stop_container(custom, 30).is_ok());
  EXPECT_EQ(runtime_.container_status(graceful)->exit_code(), 0);
  EXPECT_EQ(runtime_.container_status(graceful)->reason(), "Completed");
  EXPECT_EQ(runtime_.container_status(killed)->exit_code(), 137);
  EXPECT_EQ(runtime_.container_status(custom)->exit_code(), 143);
  EXPECT_EQ(runtime_.container_status(custom)->reason(), "Error");

  // A container that never started stays created.
  Result<std::string> created = runtime_.create_container(
      sandbox, container_config("idle", "busybox"), *runtime_.sandbox_config(sandbox));
  ASSERT_TRUE(created.is_ok());
  ASSERT_TRUE(runtime_.stop_container(*created, 0).is_ok());
  EXPECT_EQ(state_of(*created), v1::CONTAINER_CREATED);
}

TEST_F(FakeRuntimeTest, StoppingASandboxKillsItsContainers) {
  std::string sandbox = run_sandbox("web");
  std::string other_sandbox = run_sandbox("other");
  std::string c = start_container(sandbox, "c");
  std::string elsewhere = start_container(other_sandbox, "c");

  ASSERT_TRUE(runtime_.stop_pod_sandbox(sandbox).is_ok());
  EXPECT_EQ(state_of(c), v1::CONTAINER_EXITED);
  EXPECT_EQ(runtime_.container_status(c)->exit_code(), 137);
  EXPECT_EQ(state_of(elsewhere), v1::CONTAINER_RUNNING);
  EXPECT_EQ(runtime_
                .create_container(sandbox, container_config("late", "busybox"),
                                  *runtime_.sandbox_config(sandbox))
                .status()
                .code(),
            StatusCode::kFailedPrecondition);

  ASSERT_TRUE(runtime_.remove_pod_sandbox(sandbox).is_ok());
  EXPECT_EQ(runtime_.container_status(c).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(state_of(elsewhere), v1::CONTAINER_RUNNING);

  // A sandbox whose pause process died is NOTREADY; its containers are untouched until stopped.
  ASSERT_TRUE(runtime_.kill_sandbox(other_sandbox).is_ok());
  EXPECT_EQ(runtime_.pod_sandbox_status(other_sandbox)->state(), v1::SANDBOX_NOTREADY);
  EXPECT_EQ(state_of(elsewhere), v1::CONTAINER_RUNNING);
}

TEST_F(FakeRuntimeTest, ListFilters) {
  std::string web = run_sandbox("web");
  std::string db = run_sandbox("db");
  std::string web_a = start_container(web, "a");
  std::string web_b = start_container(web, "b");
  std::string db_a = start_container(db, "a");
  ASSERT_TRUE(runtime_.exit_container(web_b, 0).is_ok());
  ASSERT_TRUE(runtime_.stop_pod_sandbox(db).is_ok());

  auto container_ids = [&](const v1::ContainerFilter& filter) {
    Result<std::vector<v1::Container>> list = runtime_.list_containers(filter);
    EXPECT_TRUE(list.is_ok());
    std::set<std::string> ids;
    for (const v1::Container& c : *list) ids.insert(c.id());
    return ids;
  };
  auto sandbox_ids = [&](const v1::PodSandboxFilter& filter) {
    Result<std::vector<v1::PodSandbox>> list = runtime_.list_pod_sandbox(filter);
    EXPECT_TRUE(list.is_ok());
    std::set<std::string> ids;
    for (const v1::PodSandbox& s : *list) ids.insert(s.id());
    return ids;
  };

  EXPECT_EQ(container_ids({}), (std::set<std::string>{web_a, web_b, db_a}));
  v1::ContainerFilter by_id;
  by_id.set_id(web_b);
  EXPECT_EQ(container_ids(by_id), (std::set<std::string>{web_b}));
  v1::ContainerFilter running;
  running.mutable_state()->set_state(v1::CONTAINER_RUNNING);
  EXPECT_EQ(container_ids(running), (std::set<std::string>{web_a}));
  v1::ContainerFilter in_web;
  in_web.set_pod_sandbox_id(web);
  EXPECT_EQ(container_ids(in_web), (std::set<std::string>{web_a, web_b}));
  v1::ContainerFilter labelled;
  (*labelled.mutable_label_selector())["container"] = "a";
  EXPECT_EQ(container_ids(labelled), (std::set<std::string>{web_a, db_a}));
  (*labelled.mutable_label_selector())["missing"] = "x";
  EXPECT_TRUE(container_ids(labelled).empty());
  v1::ContainerFilter exited_in_db;
  exited_in_db.set_pod_sandbox_id(db);
  exited_in_db.mutable_state()->set_state(v1::CONTAINER_EXITED);
  EXPECT_EQ(container_ids(exited_in_db), (std::set<std::string>{db_a}));

  EXPECT_EQ(sandbox_ids({}), (std::set<std::string>{web, db}));
  v1::PodSandboxFilter ready;
  ready.mutable_state()->set_state(v1::SANDBOX_READY);
  EXPECT_EQ(sandbox_ids(ready), (std::set<std::string>{web}));
  v1::PodSandboxFilter app_db;
  (*app_db.mutable_label_selector())["app"] = "db";
  EXPECT_EQ(sandbox_ids(app_db), (std::set<std::string>{db}));
  v1::PodSandboxFilter sandbox_by_id;
  sandbox_by_id.set_id(web);
  EXPECT_EQ(sandbox_ids(sandbox_by_id), (std::set<std::string>{web}));
  sandbox_by_id.set_id("unknown");
  EXPECT_TRUE(sandbox_ids(sandbox_by_id).empty());
}

TEST_F(FakeRuntimeTest, InjectedErrorsFailTheNextCallsOfThatMethodOnly) {
  std::string sandbox = run_sandbox("web");
  Result<std::string> id = runtime_.create_container(sandbox, container_config("c", "busybox"),
                                                     *runtime_.sandbox_config(sandbox));
  ASSERT_TRUE(id.is_ok());
  runtime_.clear_calls();

  runtime_.inject_error("StartContainer", Status(StatusCode::kInternal, "runc exploded"));
  runtime_.inject_error("StartContainer", Status(StatusCode::kDeadlineExceeded, "slow"));
  EXPECT_TRUE(runtime_.container_status(*id).is_ok()) << "other methods are not affected";
  Status first = runtime_.start_container(*id);
  EXPECT_EQ(first.code(), StatusCode::kInternal);
  EXPECT_EQ(first.message(), "runc exploded");
  EXPECT_EQ(state_of(*id), v1::CONTAINER_CREATED) << "a failed call changes nothing";
  EXPECT_EQ(runtime_.start_container(*id).code(), StatusCode::kDeadlineExceeded);
  EXPECT_TRUE(runtime_.start_container(*id).is_ok());
  EXPECT_EQ(state_of(*id), v1::CONTAINER_RUNNING);

  EXPECT_EQ(runtime_.calls(),
            (std::vector<std::string>{"ContainerStatus", "StartContainer", "ContainerStatus",
                                      "StartContainer", "StartContainer", "ContainerStatus"}));
  EXPECT_EQ(runtime_.call_count("StartContainer"), 3);

  runtime_.inject_error("PullImage", Status(StatusCode::kUnavailable, "registry down"));
  runtime_.add_pullable_image("nginx");
  v1::ImageSpec nginx;
  nginx.set_image("nginx");
  EXPECT_EQ(runtime_.pull_image(nginx, {}, {}).status().code(), StatusCode::kUnavailable);
  EXPECT_TRUE(runtime_.pull_image(nginx, {}, {}).is_ok());
}

TEST_F(FakeRuntimeTest, ExecSyncResults) {
  std::string sandbox = run_sandbox("web");
  std::string a = start_container(sandbox, "a");
  std::string b = start_container(sandbox, "b");

  Result<v1::ExecSyncResponse> plain = runtime_.exec_sync(a, {"true"}, 1);
  ASSERT_TRUE(plain.is_ok());
  EXPECT_EQ(plain->exit_code(), 0);

  v1::ExecSyncResponse failing;
  failing.set_exit_code(3);
  failing.set_stderr("bad\n");
  runtime_.set_exec_result({"sh", "-c", "check"}, failing);
  v1::ExecSyncResponse only_b;
  only_b.set_exit_code(0);
  only_b.set_stdout("fine\n");
  runtime_.set_exec_result({"sh", "-c", "check"}, only_b, b);

  Result<v1::ExecSyncResponse> on_a = runtime_.exec_sync(a, {"sh", "-c", "check"}, 1);
  ASSERT_TRUE(on_a.is_ok());
  EXPECT_EQ(on_a->exit_code(), 3);
  EXPECT_EQ(on_a->stderr(), "bad\n");
  Result<v1::ExecSyncResponse> on_b = runtime_.exec_sync(b, {"sh", "-c", "check"}, 1);
  ASSERT_TRUE(on_b.is_ok());
  EXPECT_EQ(on_b->exit_code(), 0);
  EXPECT_EQ(on_b->stdout(), "fine\n");
  EXPECT_EQ(runtime_.exec_sync(a, {"sh", "-c"}, 1)->exit_code(), 0) << "argv must match exactly";

  ASSERT_TRUE(runtime_.exit_container(a, 1).is_ok());
  EXPECT_EQ(runtime_.exec_sync(a, {"true"}, 1).status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(runtime_.exec_sync("nope", {"true"}, 1).status().code(), StatusCode::kNotFound);
}

TEST_F(FakeRuntimeTest, StreamingUrlsLogsAndResources) {
  std::string sandbox = run_sandbox("web");
  std::string c = start_container(sandbox, "c");

  v1::ExecRequest exec;
  exec.set_container_id(c);
  exec.add_cmd("sh");
  Result<std::string> url = runtime_.exec(exec);
  ASSERT_TRUE(url.is_ok());
  EXPECT_EQ(url->rfind("http://", 0), 0u);
  v1::AttachRequest attach;
  attach.set_container_id(c);
  EXPECT_TRUE(runtime_.attach(attach).is_ok());
  v1::PortForwardRequest forward;
  forward.set_pod_sandbox_id(sandbox);
  forward.add_port(80);
  EXPECT_TRUE(runtime_.port_forward(forward).is_ok());
  forward.set_pod_sandbox_id("nope");
  EXPECT_EQ(runtime_.port_forward(forward).status().code(), StatusCode::kNotFound);

  ASSERT_TRUE(runtime_.reopen_container_log(c).is_ok());
  ASSERT_TRUE(runtime_.reopen_container_log(c).is_ok());
  EXPECT_EQ(runtime_.reopen_count(c), 2);

  v1::LinuxContainerResources resources;
  resources.set_cpu_quota(50000);
  resources.set_memory_limit_in_bytes(64 << 20);
  ASSERT_TRUE(runtime_.update_container_resources(c, resources).is_ok());
  Result<v1::ContainerStatus> status = runtime_.container_status(c);
  EXPECT_EQ(status->resources().linux().cpu_quota(), 50000);
  EXPECT_EQ(status->resources().linux().memory_limit_in_bytes(), 64 << 20);

  ASSERT_TRUE(runtime_.stop_container(c, 0).is_ok());
  EXPECT_EQ(runtime_.reopen_container_log(c).code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(runtime_.exec(exec).status().code(), StatusCode::kFailedPrecondition);
}

TEST_F(FakeRuntimeTest, Images) {
  EXPECT_EQ(FakeRuntime::normalize_image("busybox"), "docker.io/library/busybox:latest");
  EXPECT_EQ(FakeRuntime::normalize_image("nginx:1.25"), "docker.io/library/nginx:1.25");
  EXPECT_EQ(FakeRuntime::normalize_image("me/app"), "docker.io/me/app:latest");
  EXPECT_EQ(FakeRuntime::normalize_image("registry.k8s.io/pause:3.9"), "registry.k8s.io/pause:3.9");
  EXPECT_EQ(FakeRuntime::normalize_image("localhost:5000/app"), "localhost:5000/app:latest");
  EXPECT_EQ(FakeRuntime::normalize_image("app@sha256:abc"), "docker.io/library/app@sha256:abc");

  v1::ImageSpec busybox;
  busybox.set_image("docker.io/library/busybox:latest");
  Result<std::optional<v1::Image>> present = runtime_.image_status(busybox);
  ASSERT_TRUE(present.is_ok());
  ASSERT_TRUE(present->has_value());
  const std::string id = (*present)->id();
  EXPECT_EQ((*present)->repo_tags(0), "docker.io/library/busybox:latest");
  v1::ImageSpec by_id;
  by_id.set_image(id);
  EXPECT_TRUE(runtime_.image_status(by_id)->has_value());

  // Present but not pullable: an offline node cannot re-pull what it has.
  Result<std::string> repull = runtime_.pull_image(busybox, {}, {});
  EXPECT_EQ(repull.status().code(), StatusCode::kNotFound);
  EXPECT_NE(repull.status().message().find("docker.io/library/busybox:latest"), std::string::npos);

  v1::ImageSpec nginx;
  nginx.set_image("nginx:1.25");
  EXPECT_FALSE(runtime_.image_status(nginx)->has_value());
  runtime_.set_pull_error(Status(StatusCode::kUnavailable, "dial tcp: connection refused"));
  EXPECT_EQ(runtime_.pull_image(nginx, {}, {}).status().code(), StatusCode::kUnavailable);
  runtime_.add_pullable_image("docker.io/library/nginx:1.25");
  Result<std::string> pulled = runtime_.pull_image(nginx, {}, {});
  ASSERT_TRUE(pulled.is_ok()) << pulled.status().to_string();
  EXPECT_EQ(runtime_.image_status(nginx)->value().id(), *pulled);
  EXPECT_EQ(runtime_.pulled_images(), (std::vector<std::string>{"docker.io/library/nginx:1.25"}));

  EXPECT_EQ(runtime_.list_images({})->size(), 2u);
  v1::ImageFilter filter;
  filter.mutable_image()->set_image("nginx:1.25");
  Result<std::vector<v1::Image>> filtered = runtime_.list_images(filter);
  ASSERT_EQ(filtered->size(), 1u);
  EXPECT_EQ((*filtered)[0].id(), *pulled);

  Result<std::vector<v1::FilesystemUsage>> fs = runtime_.image_fs_info();
  ASSERT_TRUE(fs.is_ok());
  ASSERT_EQ(fs->size(), 1u);
  EXPECT_EQ((*fs)[0].used_bytes().value(), 2u << 20);

  ASSERT_TRUE(runtime_.remove_image(nginx).is_ok());
  EXPECT_FALSE(runtime_.image_status(nginx)->has_value());
  EXPECT_TRUE(runtime_.remove_image(nginx).is_ok());
}

TEST_F(FakeRuntimeTest, Stats) {
  std::string sandbox = run_sandbox("web");
  std::string a = start_container(sandbox, "a");
  std::string b = start_container(sandbox, "b");
  ASSERT_TRUE(runtime_.set_container_stats(a, 5'000'000, 32 << 20, 4096).is_ok());
  ASSERT_TRUE(runtime_.exit_container(b, 0).is_ok());
  EXPECT_EQ(runtime_.set_container_stats("nope", 1, 1, 1).code(), StatusCode::kNotFound);

  Result<v1::ContainerStats> stats = runtime_.container_stats(a);
  ASSERT_TRUE(stats.is_ok());
  EXPECT_EQ(stats->attributes().id(), a);
  EXPECT_EQ(stats->attributes().metadata().name(), "a");
  EXPECT_EQ(stats->cpu().usage_core_nano_seconds().value(), 5'000'000u);
  EXPECT_EQ(stats->memory().working_set_bytes().value(), 32u << 20);
  EXPECT_EQ(stats->writable_layer().used_bytes().value(), 4096u);

  Result<std::vector<v1::ContainerStats>> list = runtime_.list_container_stats({});
  ASSERT_TRUE(list.is_ok());
  ASSERT_EQ(list->size(), 1u) << "only running containers have stats";
  EXPECT_EQ((*list)[0].attributes().id(), a);
  v1::ContainerStatsFilter other;
  other.set_pod_sandbox_id("elsewhere");
  EXPECT_TRUE(runtime_.list_container_stats(other)->empty());
}

TEST_F(FakeRuntimeTest, ConcurrentCallersGetDistinctSandboxes) {
  constexpr int kThreads = 8;
  constexpr int kPerThread = 20;
  std::vector<std::vector<std::string>> ids(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        Result<std::string> id = runtime_.run_pod_sandbox(
            sandbox_config("p" + std::to_string(t) + "-" + std::to_string(i)), "");
        if (id.is_ok()) ids[t].push_back(*id);
        (void)runtime_.list_pod_sandbox({});
      }
    });
  }
  for (std::thread& t : threads) t.join();
  std::set<std::string> all_ids;
  std::set<std::string> all_ips;
  for (const auto& per_thread : ids) {
    for (const std::string& id : per_thread) {
      all_ids.insert(id);
      all_ips.insert(runtime_.pod_sandbox_status(id)->network().ip());
    }
  }
  EXPECT_EQ(all_ids.size(), size_t{kThreads * kPerThread});
  EXPECT_EQ(all_ips.size(), size_t{kThreads * kPerThread});
  EXPECT_EQ(runtime_.call_count("RunPodSandbox"), kThreads * kPerThread);
}

TEST_F(FakeRuntimeTest, PodIpsRunOut) {
  for (int i = 0; i < 253; ++i) run_sandbox("p" + std::to_string(i));
  EXPECT_EQ(runtime_.run_pod_sandbox(sandbox_config("one-too-many"), "").status().code(),
            StatusCode::kResourceExhausted);
}

}  // namespace
}  // namespace skiff::kubelet::cri
