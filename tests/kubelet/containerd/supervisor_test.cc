#include "kubelet/containerd/supervisor.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <sstream>
#include <thread>

#include "base/pki.h"
#include "base/process.h"
#include "kubelet/cni/cni_config.h"
#include "kubelet/images/builtin.h"
#include "kubelet/images/import.h"
#include "support/mounts.h"
#include "support/temp_dir.h"

namespace skiff::kubelet::containerd {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using Clock = std::chrono::steady_clock;
using skiff::testing::unmount_under;

constexpr const char* kSystemPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

std::string random_suffix() {
  std::random_device rd;
  char buf[16];
  std::snprintf(buf, sizeof(buf), "%08x", rd());
  return buf;
}

bool socket_accepts(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.data(), std::min(path.size(), sizeof(addr.sun_path) - 1));
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  bool ok = connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  close(fd);
  return ok;
}

Result<CommandOutput> run(const std::vector<std::string>& argv,
                          milliseconds timeout = seconds(60)) {
  return run_command(argv, timeout);
}

// Runs a command that must succeed; returns its stdout.
std::string must(const std::vector<std::string>& argv) {
  auto out = run(argv);
  EXPECT_TRUE(out.is_ok()) << argv[0] << ": " << out.status().to_string();
  if (!out.is_ok()) return "";
  std::string joined;
  for (const auto& a : argv) joined += a + " ";
  EXPECT_TRUE(out->status.success())
      << joined << ": " << out->status.to_string() << ": " << out->err << out->out;
  return out->out;
}

// Tests with no real containerd: a stand-in program takes its place.
class SupervisorBehaviourTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = std::make_unique<testing::TempDir>("skiff-ctd"); }

  // A fake containerd: listens on the config's grpc address; `extra` is Python run first.
  std::string fake_containerd(const std::string& extra = "") {
    std::string path = dir_->sub("fake-containerd");
    std::string script =
        "#!/usr/bin/python3\n"
        "import re, signal, socket, sys, time\n" +
        extra +
        "\n"
        "config = open(sys.argv[sys.argv.index('--config') + 1]).read()\n"
        "address = re.search(r'address = \"([^\"]*)\"', config).group(1)\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "try:\n"
        "    import os; os.unlink(address)\n"
        "except OSError:\n"
        "    pass\n"
        "s.bind(address)\n"
        "s.listen(16)\n"
        "print('fake containerd listening', flush=True)\n"
        "while True:\n"
        "    c, _ = s.accept()\n"
        "    c.close()\n";
    EXPECT_TRUE(pki::write_file_atomic(path, script, 0755).is_ok());
    return path;
  }

  ContainerdOptions options() {
    ContainerdOptions o;
    o.data_dir = dir_->sub("agent");
    o.ctr_binary = "/nonexistent/ctr";  // readiness is then the socket accepting
    o.ready_timeout = seconds(20);
    o.restart_backoff_initial = milliseconds(100);
    o.restart_backoff_max = milliseconds(400);
    return o;
  }

  std::unique_ptr<testing::TempDir> dir_;
};

TEST_F(SupervisorBehaviourTest, MissingContainerdIsNotFound) {
  ContainerdOptions o = options();
  o.containerd_binary = "no-such-containerd-skiff";
  ContainerdSupervisor supervisor(o);
  EXPECT_EQ(supervisor.start().code(), StatusCode::kNotFound);
}

TEST_F(SupervisorBehaviourTest, ExitBeforeReadyFailsWithTheLog) {
  std::string script = dir_->sub("dies");
  ASSERT_TRUE(
      pki::write_file_atomic(script, "#!/bin/sh\necho \"bad config: $*\" >&2\nexit 3\n", 0755)
          .is_ok());
  ContainerdOptions o = options();
  o.containerd_binary = script;
  ContainerdSupervisor supervisor(o);
  Status s = supervisor.start();
  EXPECT_EQ(s.code(), StatusCode::kInternal);
  EXPECT_NE(s.message().find("exit code 3"), std::string::npos) << s.message();
  EXPECT_NE(
      s.message().find("bad config: --config " + dir_->sub("agent") + "/containerd/config.toml"),
      std::string::npos)
      << s.message();
  EXPECT_EQ(supervisor.pid(), -1);
  EXPECT_FALSE(supervisor.ready());
  // The config it was given is there.
  EXPECT_TRUE(std::filesystem::exists(dir_->sub("agent/containerd/config.toml")));
}

TEST_F(SupervisorBehaviourTest, NeverAnswersIsDeadlineExceededAndNothingIsLeftRunning) {
  std::string script = dir_->sub("silent");
  std::string pid_file = dir_->sub("silent.pid");
  ASSERT_TRUE(
      pki::write_file_atomic(script, "#!/bin/sh\necho $$ > " + pid_file + "\nexec sleep 60\n", 0755)
          .is_ok());
  ContainerdOptions o = options();
  o.containerd_binary = script;
  o.ready_timeout = milliseconds(500);
  o.stop_grace = milliseconds(2000);
  ContainerdSupervisor supervisor(o);
  Status s = supervisor.start();
  EXPECT_EQ(s.code(), StatusCode::kDeadlineExceeded) << s.to_string();
  EXPECT_EQ(supervisor.pid(), -1);
  // What it started is gone.
  auto pid = pki::read_file(pid_file);
  ASSERT_TRUE(pid.is_ok());
  EXPECT_NE(kill(std::stoi(*pid), 0), 0);
}

TEST_F(SupervisorBehaviourTest, StopDuringStartCancelsIt) {
  std::string script = dir_->sub("silent");
  ASSERT_TRUE(pki::write_file_atomic(script, "#!/bin/sh\nexec sleep 60\n", 0755).is_ok());
  ContainerdOptions o = options();
  o.containerd_binary = script;
  o.ready_timeout = seconds(60);
  ContainerdSupervisor supervisor(o);
  auto begin = Clock::now();
  std::thread stopper([&] {
    while (supervisor.pid() <= 0 && Clock::now() - begin < seconds(10)) {
      std::this_thread::sleep_for(milliseconds(5));
    }
    supervisor.stop();
  });
  Status s = supervisor.start();
  stopper.join();
  EXPECT_EQ(s.code(), StatusCode::kCancelled) << s.to_string();
  EXPECT_LT(Clock::now() - begin, seconds(30));
  EXPECT_EQ(supervisor.pid(), -1);
}

TEST_F(SupervisorBehaviourTest, RestartsWithBackoffAndStopsWithSigkillAfterGrace) {
  ContainerdOptions o = options();
  // Ignores SIGTERM, so stop() has to escalate.
  o.containerd_binary = fake_containerd("signal.signal(signal.SIGTERM, signal.SIG_IGN)");
  o.stop_grace = milliseconds(400);
  ContainerdSupervisor supervisor(o);
  ASSERT_TRUE(supervisor.start().is_ok());
  EXPECT_TRUE(supervisor.ready());
  EXPECT_EQ(supervisor.start().code(), StatusCode::kFailedPrecondition);
  pid_t first = supervisor.pid();
  ASSERT_GT(first, 0);
  EXPECT_EQ(supervisor.start_count(), 1);
  EXPECT_TRUE(socket_accepts(supervisor.address()));

  // It dies: the supervisor notices, restarts it after the back-off and it answers again.
  ASSERT_EQ(kill(first, SIGKILL), 0);
  auto deadline = Clock::now() + seconds(10);
  while (Clock::now() < deadline && (supervisor.start_count() < 2 || !supervisor.ready())) {
    std::this_thread::sleep_for(milliseconds(10));
  }
  ASSERT_EQ(supervisor.start_count(), 2);
  ASSERT_TRUE(supervisor.wait_ready(seconds(10)).is_ok());
  ASSERT_TRUE(supervisor.last_exit().has_value());
  EXPECT_EQ(supervisor.last_exit()->signal, SIGKILL);
  pid_t second = supervisor.pid();
  EXPECT_GT(second, 0);
  EXPECT_NE(second, first);

  // Dies again right away: the second delay is longer than the first.
  auto killed_at = Clock::now();
  ASSERT_EQ(kill(second, SIGKILL), 0);
  while (Clock::now() < deadline && supervisor.start_count() < 3) {
    std::this_thread::sleep_for(milliseconds(5));
  }
  EXPECT_EQ(supervisor.start_count(), 3);
  EXPECT_GE(Clock::now() - killed_at, milliseconds(200));

  ASSERT_TRUE(supervisor.wait_ready(seconds(10)).is_ok());
  pid_t third = supervisor.pid();
  auto stop_at = Clock::now();
  supervisor.stop();
  EXPECT_GE(Clock::now() - stop_at, milliseconds(400));  // SIGTERM was ignored
  EXPECT_EQ(supervisor.pid(), -1);
  EXPECT_NE(kill(third, 0), 0);  // reaped, gone
  EXPECT_EQ(supervisor.wait_ready(milliseconds(10)).code(), StatusCode::kUnavailable);
  supervisor.stop();  // idempotent
  std::string log = *pki::read_file(dir_->sub("agent/containerd/containerd.log"));
  EXPECT_NE(log.find("fake containerd listening"), std::string::npos) << log;
}

TEST_F(SupervisorBehaviourTest, RefusesASocketSomethingElseServes) {
  ContainerdOptions o = options();
  o.containerd_binary = fake_containerd();
  auto paths = containerd_paths(o);
  ASSERT_TRUE(paths.is_ok());
  std::filesystem::create_directories(paths->base);
  int listener = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, paths->socket.data(), paths->socket.size());
  ASSERT_EQ(bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(listen(listener, 4), 0);
  ContainerdSupervisor supervisor(o);
  Status s = supervisor.start();
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition) << s.to_string();
  EXPECT_EQ(supervisor.pid(), -1);
  EXPECT_TRUE(socket_accepts(paths->socket));  // untouched
  close(listener);
}

// The real containerd, in a network namespace of its own.
class RealContainerdTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root to run containerd";
    for (const char* tool : {"containerd", "ctr", "runc", "nsenter", "ip"}) {
      if (!find_executable(tool, kSystemPath).is_ok()) {
        GTEST_SKIP() << tool << " is not installed (scripts/install-deps.sh test)";
      }
    }
    dir_ = std::make_unique<testing::TempDir>("skiff-ctd");
    std::string name = "skiff-ctd-test-" + random_suffix();
    must({"ip", "netns", "add", name});
    netns_ = name;
    must({"ip", "-n", netns_, "link", "set", "lo", "up"});
  }

  void TearDown() override {
    if (supervisor_) supervisor_->stop();
    supervisor_.reset();
    if (!netns_.empty()) (void)run({"ip", "netns", "del", netns_});
    if (dir_) unmount_under(dir_->path());
    dir_.reset();
  }

  ContainerdOptions options() {
    ContainerdOptions o;
    o.data_dir = dir_->sub("agent");
    o.command_prefix = {"nsenter", "--net=/var/run/netns/" + netns_};
    o.sandbox_image = images::kPauseImage;
    o.restart_backoff_initial = milliseconds(200);
    return o;
  }

  std::vector<std::string> ctr(std::vector<std::string> args) {
    std::vector<std::string> argv = {"ctr", "-n", "k8s.io", "--address", supervisor_->address()};
    argv.insert(argv.end(), args.begin(), args.end());
    return argv;
  }

  std::unique_ptr<testing::TempDir> dir_;
  std::string netns_;
  std::unique_ptr<ContainerdSupervisor> supervisor_;
};

TEST_F(RealContainerdTest, StartImportRunRestartStop) {
  std::string images_dir = SKIFF_BUILTIN_IMAGES_DIR;
  std::string pause_tar = images_dir + "/" + images::kPauseArchive;
  std::string busybox_tar = images_dir + "/" + images::kBusyboxArchive;
  ASSERT_TRUE(std::filesystem::exists(pause_tar)) << pause_tar;
  bool have_busybox = std::filesystem::exists(busybox_tar);

  ContainerdOptions o = options();
  cni::CniConfigOptions cni_options;
  cni_options.pod_cidrs = {"10.244.7.0/24"};
  cni_options.bridge_name = "skiffctd0";
  auto paths = containerd_paths(o);
  ASSERT_TRUE(paths.is_ok());
  ASSERT_TRUE(cni::write_cni_conflist(paths->cni_conf_dir, cni_options).is_ok());

  supervisor_ = std::make_unique<ContainerdSupervisor>(o);
  auto t0 = Clock::now();
  Status started = supervisor_->start();
  auto start_ms = std::chrono::duration_cast<milliseconds>(Clock::now() - t0).count();
  ASSERT_TRUE(started.is_ok()) << started.to_string();
  std::printf("[ figures  ] containerd start() to ready: %lld ms (supervisor measured %lld ms)\n",
              static_cast<long long>(start_ms),
              static_cast<long long>(supervisor_->last_start_to_ready().count()));
  pid_t first = supervisor_->pid();
  ASSERT_GT(first, 0);

  // containerd runs inside the test's network namespace.
  struct stat ns_file, proc_ns;
  ASSERT_EQ(stat(("/var/run/netns/" + netns_).c_str(), &ns_file), 0);
  ASSERT_EQ(stat(("/proc/" + std::to_string(first) + "/ns/net").c_str(), &proc_ns), 0);
  EXPECT_EQ(ns_file.st_ino, proc_ns.st_ino);

  // The CRI plugin and the overlayfs snapshotter loaded; the disabled plugins did not.
  std::string plugins = must(ctr({"plugins", "ls"}));
  auto plugin_line = [&](const std::string& type, const std::string& id) {
    std::istringstream lines(plugins);
    std::string line;
    while (std::getline(lines, line)) {
      std::istringstream f(line);
      std::string t, i;
      f >> t >> i;
      if (t == type && i == id) return line;
    }
    return std::string();
  };
  EXPECT_NE(plugin_line("io.containerd.grpc.v1", "cri").find(" ok"), std::string::npos) << plugins;
  EXPECT_NE(plugin_line("io.containerd.snapshotter.v1", "overlayfs").find(" ok"),
            std::string::npos);
  EXPECT_EQ(plugin_line("io.containerd.internal.v1", "opt"), "") << plugins;
  EXPECT_EQ(plugin_line("io.containerd.snapshotter.v1", "devmapper"), "") << plugins;

  // Import the built-in images.
  auto import_timed = [&](const std::string& tar, const std::string& base) {
    auto t = Clock::now();
    Status s = images::import_image_tar(supervisor_->address(), tar, base);
    EXPECT_TRUE(s.is_ok()) << s.to_string();
    std::printf(
        "[ figures  ] import %s: %lld ms\n", tar.c_str(),
        static_cast<long long>(std::chrono::duration_cast<milliseconds>(Clock::now() - t).count()));
  };
  import_timed(pause_tar, "registry.k8s.io/pause");
  if (have_busybox) import_timed(busybox_tar, "");
  std::string listed = must(ctr({"images", "ls", "-q"}));
  EXPECT_NE(listed.find("registry.k8s.io/pause:3.9\n"), std::string::npos) << listed;
  if (have_busybox) {
    EXPECT_NE(listed.find("docker.io/library/busybox:latest\n"), std::string::npos) << listed;
  }

  // The images run. busybox: users, applets, the working directory.
  std::string cgroup = "/skiff-ctd-test-" + random_suffix();
  if (have_busybox) {
    std::string id = "skiff-bb-" + random_suffix();
    std::string out = must(ctr({"run", "--rm", "--cgroup", cgroup, images::kBusyboxImage, id, "sh",
                                "-c", "id; grep nobody /etc/passwd; pwd; ls -ld /tmp"}));
    EXPECT_NE(out.find("uid=0(root) gid=0(root)"), std::string::npos) << out;
    EXPECT_NE(out.find("nobody:x:65534:65534"), std::string::npos) << out;
    EXPECT_NE(out.find("\n/\n"), std::string::npos) << out;
    EXPECT_NE(out.find("drwxrwxrwt"), std::string::npos) << out;
  }
  // pause: runs until SIGTERM, then exits 0.
  {
    std::string id = "skiff-pause-" + random_suffix();
    ProcessOptions run_pause;
    run_pause.argv = ctr({"run", "--rm", "--cgroup", cgroup, images::kPauseImage, id});
    run_pause.log_path = dir_->sub("pause-run.log");
    auto runner = Process::spawn(run_pause);
    ASSERT_TRUE(runner.is_ok());
    bool running = false;
    for (int i = 0; i < 500 && !running; ++i) {
      auto tasks = run(ctr({"tasks", "ls"}));
      running = tasks.is_ok() && tasks->out.find(id) != std::string::npos &&
                tasks->out.find("RUNNING") != std::string::npos;
      if (!running) std::this_thread::sleep_for(milliseconds(20));
    }
    ASSERT_TRUE(running) << *pki::read_file(dir_->sub("pause-run.log"));
    must(ctr({"tasks", "kill", "-s", "SIGTERM", id}));
    auto exited = runner->wait_for(seconds(30));
    ASSERT_TRUE(exited.has_value());
    EXPECT_TRUE(exited->success())
        << exited->to_string() << " " << *pki::read_file(dir_->sub("pause-run.log"));
  }

  // Killed behind its back: restarted, same images.
  ASSERT_EQ(kill(first, SIGKILL), 0);
  auto deadline = Clock::now() + seconds(30);
  while (Clock::now() < deadline && supervisor_->start_count() < 2) {
    std::this_thread::sleep_for(milliseconds(10));
  }
  ASSERT_EQ(supervisor_->start_count(), 2);
  ASSERT_TRUE(supervisor_->wait_ready(seconds(30)).is_ok());
  EXPECT_NE(supervisor_->pid(), first);
  EXPECT_EQ(supervisor_->last_exit()->signal, SIGKILL);
  std::printf("[ figures  ] containerd restart to ready: %lld ms\n",
              static_cast<long long>(supervisor_->last_start_to_ready().count()));
  listed = must(ctr({"images", "ls", "-q"}));
  EXPECT_NE(listed.find("registry.k8s.io/pause:3.9\n"), std::string::npos) << listed;

  std::string socket = supervisor_->address();
  pid_t second = supervisor_->pid();
  supervisor_->stop();
  EXPECT_EQ(supervisor_->pid(), -1);
  EXPECT_NE(kill(second, 0), 0);
  EXPECT_FALSE(socket_accepts(socket));
  // A stopped supervisor starts again on the same data.
  ASSERT_TRUE(supervisor_->start().is_ok());
  listed = must(ctr({"images", "ls", "-q"}));
  EXPECT_NE(listed.find("registry.k8s.io/pause:3.9\n"), std::string::npos) << listed;
}

TEST_F(RealContainerdTest, ImportsDirectoryOfArchives) {
  std::string images_dir = SKIFF_BUILTIN_IMAGES_DIR;
  supervisor_ = std::make_unique<ContainerdSupervisor>(options());
  ASSERT_TRUE(supervisor_->start().is_ok());

  // An images directory with the built pause archive, a second OCI image, a non-image and a
  // file that is not a .tar (ignored).
  std::string drop = dir_->sub("images");
  std::filesystem::create_directories(drop);
  std::filesystem::copy_file(images_dir + "/pause.tar", drop + "/a-pause.tar");
  images::ImageSpec extra;
  extra.ref_name = "skiff.test/extra:v1";
  extra.config.cmd = {"/hello"};
  extra.layer = {images::LayerEntry::file("hello", "not really a program", 0755)};
  ASSERT_TRUE(images::write_oci_image(extra, drop + "/b-extra.tar").is_ok());
  ASSERT_TRUE(pki::write_file_atomic(drop + "/README", "not an image", 0644).is_ok());

  // A tag-only ref name: imported, under the name ctr makes up for it.
  images::ImageSpec tag_only = extra;
  tag_only.ref_name = "v9";
  ASSERT_TRUE(images::write_oci_image(tag_only, drop + "/b-tag-only.tar").is_ok());

  auto imported = images::import_images_dir(supervisor_->address(), drop);
  ASSERT_TRUE(imported.is_ok()) << imported.status().to_string();
  EXPECT_EQ(*imported, (std::vector<std::string>{drop + "/a-pause.tar", drop + "/b-extra.tar",
                                                 drop + "/b-tag-only.tar"}));
  std::string listed = must(ctr({"images", "ls", "-q"}));
  EXPECT_NE(listed.find("import-"), std::string::npos) << listed;
  EXPECT_NE(listed.find(":v9\n"), std::string::npos) << listed;
  EXPECT_NE(listed.find("registry.k8s.io/pause:3.9\n"), std::string::npos) << listed;
  EXPECT_NE(listed.find("skiff.test/extra:v1\n"), std::string::npos) << listed;

  // A broken archive fails by name; the good ones still import.
  ASSERT_TRUE(pki::write_file_atomic(drop + "/c-broken.tar", "garbage", 0644).is_ok());
  auto with_broken = images::import_images_dir(supervisor_->address(), drop);
  ASSERT_FALSE(with_broken.is_ok());
  EXPECT_NE(with_broken.status().message().find("c-broken.tar"), std::string::npos);
  EXPECT_EQ(with_broken.status().message().find("a-pause.tar"), std::string::npos);

  // The built-in images by their own names.
  ASSERT_TRUE(images::import_builtin_images(supervisor_->address(), images_dir).is_ok());
  listed = must(ctr({"images", "ls", "-q"}));
  if (std::filesystem::exists(images_dir + "/busybox.tar")) {
    EXPECT_NE(listed.find("docker.io/library/busybox:latest\n"), std::string::npos) << listed;
  }
  EXPECT_EQ(images::import_builtin_images(supervisor_->address(), dir_->sub("missing")).code(),
            StatusCode::kNotFound);

  // No directory, nothing to do.
  auto none = images::import_images_dir(supervisor_->address(), dir_->sub("missing"));
  ASSERT_TRUE(none.is_ok());
  EXPECT_TRUE(none->empty());
}

}  // namespace
}  // namespace skiff::kubelet::containerd
