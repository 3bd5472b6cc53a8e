#include "kubelet/containerd/supervisor.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "base/log.h"
#include "base/pki.h"

namespace skiff::kubelet::containerd {
namespace {

using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

// True when something accepts connections on the unix socket at `path`.
bool socket_accepts(const std::string& path) {
  sockaddr_un addr{};
  if (path.size() >= sizeof(addr.sun_path)) return false;
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.data(), path.size());
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  bool ok = connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  close(fd);
  return ok;
}

Status make_dir(const std::string& dir, std::filesystem::perms perms) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return error(StatusCode::kInternal, "creating " + dir + ": " + ec.message());
  std::filesystem::permissions(dir, perms, ec);
  if (ec) return error(StatusCode::kInternal, "chmod " + dir + ": " + ec.message());
  return Status::ok();
}

}  // namespace

ContainerdSupervisor::ContainerdSupervisor(ContainerdOptions options)
    : options_(std::move(options)) {}

ContainerdSupervisor::~ContainerdSupervisor() {
  stop();
}

Status ContainerdSupervisor::start() {
  std::lock_guard lifecycle(lifecycle_mu_);
  {
    std::lock_guard lock(mu_);
    if (started_) return error(StatusCode::kFailedPrecondition, "containerd already started");
  }
  SKIFF_ASSIGN_OR_RETURN(ContainerdPaths paths, containerd_paths(options_));
  std::string path_env = containerd_path_env();
  Result<std::string> containerd = find_executable(options_.containerd_binary, path_env);
  if (!containerd.is_ok()) {
    return error(StatusCode::kNotFound,
                 "containerd is not installed: " + containerd.status().message());
  }
  Result<std::string> ctr = find_executable(options_.ctr_binary, path_env);
  using std::filesystem::perms;
  SKIFF_RETURN_IF_ERROR(
      make_dir(paths.base, perms::owner_all | perms::group_exec | perms::others_exec));
  SKIFF_RETURN_IF_ERROR(make_dir(paths.root, perms::owner_all));
  SKIFF_RETURN_IF_ERROR(
      make_dir(paths.state, perms::owner_all | perms::group_exec | perms::others_exec));
  if (!paths.socket_fallback_dir.empty()) {
    SKIFF_RETURN_IF_ERROR(make_dir(paths.socket_fallback_dir, perms::owner_all));
  }
  std::error_code ec;
  std::filesystem::create_directories(paths.cni_conf_dir, ec);
  std::filesystem::create_directories(std::filesystem::path(paths.log).parent_path(), ec);
  if (socket_accepts(paths.socket)) {
    return error(StatusCode::kFailedPrecondition, "something already serves " + paths.socket +
                                                      "; not starting a second containerd on it");
  }
  SKIFF_RETURN_IF_ERROR(
      pki::write_file_atomic(paths.config, render_containerd_config(options_, paths), 0644));

  {
    std::lock_guard lock(mu_);
    paths_ = paths;
    ctr_path_ = ctr.is_ok() ? *ctr : "";
    started_ = true;
    stopping_ = false;
    ready_ = false;
    pid_ = -1;
    start_count_ = 0;
    exit_count_ = 0;
    last_exit_.reset();
    spawn_error_ = Status::ok();
  }
  monitor_ = std::thread([this, exe = *containerd, path_env] { monitor_loop(exe, path_env); });

  std::unique_lock lock(mu_);
  cv_.wait_for(lock, options_.ready_timeout,
               [&] { return ready_ || exit_count_ > 0 || !spawn_error_.is_ok() || stopping_; });
  if (ready_ && !stopping_) return Status::ok();
  Status failure;
  if (stopping_) {
    failure = error(StatusCode::kCancelled, "containerd was stopped while starting");
  } else if (!spawn_error_.is_ok()) {
    failure = error(spawn_error_.code(), "starting containerd: " + spawn_error_.message());
  } else if (exit_count_ > 0) {
    failure = error(StatusCode::kInternal, "containerd exited before it answered (" +
                                               last_exit_->to_string() + "); log " + paths.log +
                                               ":\n" + log_tail());
  } else {
    failure = error(StatusCode::kDeadlineExceeded,
                    "containerd did not answer on " + paths.socket + " within " +
                        std::to_string(options_.ready_timeout.count()) + " ms; log " + paths.log +
                        ":\n" + log_tail());
  }
  stopping_ = true;
  cv_.notify_all();
  lock.unlock();
  monitor_.join();
  std::lock_guard relock(mu_);
  started_ = false;
  return failure;
}

void ContainerdSupervisor::stop() {
  {
    // Set before taking lifecycle_mu_, so a start() still waiting for readiness gives up now.
    std::lock_guard lock(mu_);
    if (!started_) return;
    stopping_ = true;
  }
  cv_.notify_all();
  std::lock_guard lifecycle(lifecycle_mu_);
  if (monitor_.joinable()) monitor_.join();
  std::lock_guard lock(mu_);
  started_ = false;
  if (!paths_.socket_fallback_dir.empty()) {
    // Only removes the directory when containerd left nothing in it.
    rmdir(paths_.socket_fallback_dir.c_str());
  }
}

bool ContainerdSupervisor::sleep_unless_stopping(milliseconds d) {
  std::unique_lock lock(mu_);
  return cv_.wait_for(lock, d, [&] { return stopping_; });
}

bool ContainerdSupervisor::probe() const {
  std::string socket, ctr;
  {
    std::lock_guard lock(mu_);
    socket = paths_.socket;
    ctr = ctr_path_;
  }
  if (!socket_accepts(socket)) return false;
  if (ctr.empty()) return true;
  // The socket accepts as soon as containerd listens; `ctr version` answers once its gRPC
  // services are registered.
  Result<CommandOutput> out =
      run_command({ctr, "--address", socket, "version"}, milliseconds(5000));
  return out.is_ok() && out->status.success();
}

void ContainerdSupervisor::monitor_loop(const std::string& containerd,
                                        const std::string& path_env) {
  ProcessOptions spawn;
  spawn.argv = options_.command_prefix;
  spawn.argv.push_back(containerd);
  std::string config_path, log_path;
  {
    std::lock_guard lock(mu_);
    config_path = paths_.config;
    log_path = paths_.log;
  }
  spawn.argv.push_back("--config");
  spawn.argv.push_back(config_path);
  spawn.env_overrides = {{"PATH", path_env}};
  spawn.log_path = log_path;
  spawn.die_with_parent = true;  // this thread lives until containerd is stopped
  spawn.new_session = true;

  milliseconds backoff = options_.restart_backoff_initial;
  while (true) {
    {
      std::lock_guard lock(mu_);
      if (stopping_) return;
    }
    Clock::time_point spawned_at = Clock::now();
    Result<Process> spawned = Process::spawn(spawn);
    if (!spawned.is_ok()) {
      SKIFF_LOG_ERROR("starting containerd: {}", spawned.status().message());
      {
        std::lock_guard lock(mu_);
        spawn_error_ = spawned.status();
      }
      cv_.notify_all();
      if (sleep_unless_stopping(backoff)) return;
      backoff = std::min(backoff * 2, options_.restart_backoff_max);
      continue;
    }
    Process process = std::move(spawned).value();
    int attempt;
    {
      std::lock_guard lock(mu_);
      pid_ = process.pid();
      attempt = ++start_count_;
    }
    SKIFF_LOG_INFO("started containerd (pid {}, start {}), log {}", process.pid(), attempt,
                   log_path);
    cv_.notify_all();

    bool ready = false;
    bool stopping = false;
    std::optional<ExitStatus> exited;
    while (true) {
      stopping = sleep_unless_stopping(ready ? milliseconds(100) : milliseconds(10));
      if (stopping) break;
      exited = process.try_wait();
      if (exited) break;
      if (!ready && probe()) {
        ready = true;
        auto took = std::chrono::duration_cast<milliseconds>(Clock::now() - spawned_at);
        SKIFF_LOG_INFO("containerd (pid {}) is ready in {} ms on {}", process.pid(), took.count(),
                       paths().socket);
        {
          std::lock_guard lock(mu_);
          ready_ = true;
          last_start_to_ready_ = took;
        }
        cv_.notify_all();
      }
    }
    if (stopping) {
      pid_t pid = process.pid();
      ExitStatus status = process.terminate(options_.stop_grace);
      SKIFF_LOG_INFO("containerd (pid {}) stopped: {}", pid, status.to_string());
      std::lock_guard lock(mu_);
      pid_ = -1;
      ready_ = false;
      return;
    }
    {
      std::lock_guard lock(mu_);
      pid_ = -1;
      ready_ = false;
      last_exit_ = exited;
      ++exit_count_;
    }
    cv_.notify_all();
    if (Clock::now() - spawned_at >= options_.stable_after)
      backoff = options_.restart_backoff_initial;
    SKIFF_LOG_WARN("containerd exited ({}); restarting in {} ms; log {}", exited->to_string(),
                   backoff.count(), log_path);
    if (sleep_unless_stopping(backoff)) return;
    backoff = std::min(backoff * 2, options_.restart_backoff_max);
  }
}

Status ContainerdSupervisor::wait_ready(milliseconds timeout) {
  std::unique_lock lock(mu_);
  bool done = cv_.wait_for(lock, timeout, [&] { return ready_ || !started_ || stopping_; });
  if (!started_ || stopping_) return error(StatusCode::kUnavailable, "containerd is not running");
  if (!done) {
    return error(StatusCode::kDeadlineExceeded,
                 "containerd not ready within " + std::to_string(timeout.count()) + " ms");
  }
  return Status::ok();
}

bool ContainerdSupervisor::ready() const {
  std::lock_guard lock(mu_);
  return ready_;
}

std::string ContainerdSupervisor::address() const {
  std::lock_guard lock(mu_);
  return paths_.socket;
}

ContainerdPaths ContainerdSupervisor::paths() const {
  std::lock_guard lock(mu_);
  return paths_;
}

pid_t ContainerdSupervisor::pid() const {
  std::lock_guard lock(mu_);
  return pid_;
}

int ContainerdSupervisor::start_count() const {
  std::lock_guard lock(mu_);
  return start_count_;
}

std::optional<ExitStatus> ContainerdSupervisor::last_exit() const {
  std::lock_guard lock(mu_);
  return last_exit_;
}

std::chrono::milliseconds ContainerdSupervisor::last_start_to_ready() const {
  std::lock_guard lock(mu_);
  return last_start_to_ready_;
}

std::string ContainerdSupervisor::log_tail() const {
  // Called with mu_ held by start(); reads only paths_, which no one writes concurrently then.
  std::ifstream in(paths_.log, std::ios::binary);
  if (!in) return "(no log)";
  in.seekg(0, std::ios::end);
  std::streamoff size = in.tellg();
  std::streamoff from = std::max<std::streamoff>(0, size - 3000);
  in.seekg(from);
  std::string tail((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (from > 0) {
    size_t nl = tail.find('\n');
    if (nl != std::string::npos) tail.erase(0, nl + 1);
  }
  return tail;
}

}  // namespace skiff::kubelet::containerd
