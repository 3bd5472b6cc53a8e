#include "base/process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>

extern char** environ;

namespace skiff {
namespace {

// Flag value of close_range(2) (linux/close_range.h), spelled out to avoid depending on headers.
constexpr unsigned kCloseRangeCloexec = 1U << 2;
// Each captured stream of run_command keeps at most this much; the rest is dropped.
constexpr size_t kMaxCapturedBytes = 16U << 20;

ExitStatus decode_wait_status(int status) {
  ExitStatus result;
  if (WIFEXITED(status)) {
    result.exit_code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    result.signal = WTERMSIG(status);
  }
  return result;
}

std::string errno_text(int err) {
  return std::strerror(err);
}

// Everything the child needs, built before fork() so the child never allocates.
struct ExecPlan {
  std::string program;
  std::vector<std::string> argv_storage;
  std::vector<std::string> env_storage;
  std::vector<char*> argv;
  std::vector<char*> envp;
};

Result<ExecPlan> make_plan(const ProcessOptions& options) {
  if (options.argv.empty()) return error(StatusCode::kInvalidArgument, "empty argv");
  ExecPlan plan;
  plan.argv_storage = options.argv;
  std::string path_env;
  if (!options.clear_env) {
    for (char** e = environ; e != nullptr && *e != nullptr; ++e) plan.env_storage.emplace_back(*e);
  }
  for (const auto& [name, value] : options.env_overrides) {
    std::string prefix = name + "=";
    std::erase_if(plan.env_storage,
                  [&](const std::string& entry) { return entry.rfind(prefix, 0) == 0; });
    plan.env_storage.push_back(prefix + value);
  }
  for (const std::string& entry : plan.env_storage) {
    if (entry.rfind("PATH=", 0) == 0) path_env = entry.substr(5);
  }
  if (path_env.empty() && options.clear_env) path_env = "/usr/local/bin:/usr/bin:/bin";
  SKIFF_ASSIGN_OR_RETURN(plan.program, find_executable(options.argv[0], path_env));
  for (std::string& a : plan.argv_storage) plan.argv.push_back(a.data());
  plan.argv.push_back(nullptr);
  for (std::string& e : plan.env_storage) plan.envp.push_back(e.data());
  plan.envp.push_back(nullptr);
  return plan;
}

// Marks every descriptor from 3 up close-on-exec, so only stdio reaches the new program while
// the exec-error pipe stays usable until exec succeeds. Async-signal-safe.
void cloexec_all_from_3() {
  if (syscall(SYS_close_range, 3U, ~0U, kCloseRangeCloexec) == 0) return;
  struct rlimit lim;
  long max_fd = 65536;
  if (getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur != RLIM_INFINITY &&
      lim.rlim_cur < 65536) {
    max_fd = static_cast<long>(lim.rlim_cur);
  }
  for (int fd = 3; fd < max_fd; ++fd) fcntl(fd, F_SETFD, FD_CLOEXEC);
}

// Forks and execs `plan`. out_fd/err_fd become the child's stdout/stderr. Returns the PID, or
// an error when fork or exec failed.
Result<pid_t> fork_exec(const ExecPlan& plan, const ProcessOptions& options, int out_fd,
                        int err_fd) {
  int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (null_fd < 0) return error(StatusCode::kInternal, "open /dev/null: " + errno_text(errno));
  int report[2];
  if (pipe2(report, O_CLOEXEC) != 0) {
    int err = errno;
    close(null_fd);
    return error(StatusCode::kInternal, "pipe: " + errno_text(err));
  }
  const char* cwd = options.cwd.empty() ? nullptr : options.cwd.c_str();
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) {
    int err = errno;
    close(null_fd);
    close(report[0]);
    close(report[1]);
    return error(StatusCode::kInternal, "fork: " + errno_text(err));
  }
  if (pid == 0) {
    // Child: async-signal-safe calls only.
    auto fail = [&](int stage) {
      int payload[2] = {stage, errno};
      ssize_t ignored = write(report[1], payload, sizeof(payload));
      (void)ignored;
      _exit(127);
    };
    if (options.die_with_parent) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != parent) _exit(127);
    }
    if (options.new_session) setsid();
    // Signal state survives exec: undo whatever the parent blocked or ignored.
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    struct sigaction dfl;
    std::memset(&dfl, 0, sizeof(dfl));
    dfl.sa_handler = SIG_DFL;
    for (int sig = 1; sig < NSIG; ++sig) {
      if (sig != SIGKILL && sig != SIGSTOP) sigaction(sig, &dfl, nullptr);
    }
    if (dup2(null_fd, 0) < 0 || dup2(out_fd, 1) < 0 || dup2(err_fd, 2) < 0) fail(1);
    if (cwd != nullptr && chdir(cwd) != 0) fail(2);
    cloexec_all_from_3();
    execve(plan.program.c_str(), plan.argv.data(), plan.envp.data());
    fail(3);
  }
  close(null_fd);
  close(report[1]);
  int payload[2] = {0, 0};
  ssize_t n;
  do {
    n = read(report[0], payload, sizeof(payload));
  } while (n < 0 && errno == EINTR);
  close(report[0]);
  if (n <= 0) return pid;  // exec succeeded (the pipe closed on exec)
  int status;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  static constexpr const char* kStages[] = {"starting", "redirecting stdio of", "changing into ",
                                            "executing"};
  std::string stage = payload[0] >= 1 && payload[0] <= 3 ? kStages[payload[0]] : kStages[0];
  if (payload[0] == 2) stage += options.cwd + " for";
  return error(StatusCode::kInternal, stage + " " + plan.program + ": " + errno_text(payload[1]));
}

}  // namespace

std::string ExitStatus::to_string() const {
  if (signal != 0) {
    const char* name = strsignal(signal);
    return "signal " + std::to_string(signal) + " (" + (name ? name : "?") + ")";
  }
  return "exit code " + std::to_string(exit_code);
}

Result<std::string> executable_dir() {
  char buf[4096];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) {
    return error(StatusCode::kInternal,
                 std::string("readlink /proc/self/exe: ") + std::strerror(errno));
  }
  std::string exe(buf, static_cast<size_t>(n));
  size_t slash = exe.rfind('/');
  return slash == std::string::npos ? std::string(".") : exe.substr(0, slash);
}

Result<std::string> find_executable(const std::string& name, const std::string& path_env) {
  if (name.empty()) return error(StatusCode::kInvalidArgument, "empty program name");
  if (name.find('/') != std::string::npos) {
    if (access(name.c_str(), X_OK) == 0) return name;
    return error(StatusCode::kNotFound, name + ": " + errno_text(errno));
  }
  size_t start = 0;
  while (start <= path_env.size()) {
    size_t end = path_env.find(':', start);
    if (end == std::string::npos) end = path_env.size();
    std::string dir = path_env.substr(start, end - start);
    if (dir.empty()) dir = ".";
    std::string candidate = dir + "/" + name;
    struct stat st;
    if (stat(candidate.c_str(), &st) == 0 && S_ISREG(st.st_mode) &&
        access(candidate.c_str(), X_OK) == 0) {
      return candidate;
    }
    start = end + 1;
  }
  return error(StatusCode::kNotFound, name + ": not found in PATH " + path_env);
}

Process::~Process() {
  reset();
}

Process::Process(Process&& other) noexcept
    : pid_(std::exchange(other.pid_, -1)), exit_status_(std::move(other.exit_status_)) {}

Process& Process::operator=(Process&& other) noexcept {
  if (this != &other) {
    reset();
    pid_ = std::exchange(other.pid_, -1);
    exit_status_ = std::move(other.exit_status_);
  }
  return *this;
}

void Process::reset() {
  if (pid_ > 0) {
    ::kill(pid_, SIGKILL);
    wait();
  }
}

Result<Process> Process::spawn(const ProcessOptions& options) {
  SKIFF_ASSIGN_OR_RETURN(ExecPlan plan, make_plan(options));
  const std::string& log = options.log_path.empty() ? std::string("/dev/null") : options.log_path;
  int log_fd = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0) return error(StatusCode::kInternal, "opening " + log + ": " + errno_text(errno));
  Result<pid_t> pid = fork_exec(plan, options, log_fd, log_fd);
  close(log_fd);
  if (!pid.is_ok()) return pid.status();
  return Process(*pid);
}

std::optional<ExitStatus> Process::try_wait() {
  if (pid_ <= 0) return exit_status_;
  int status;
  pid_t r;
  do {
    r = waitpid(pid_, &status, WNOHANG);
  } while (r < 0 && errno == EINTR);
  if (r == 0) return std::nullopt;
  // r < 0 (ECHILD) means someone else reaped it; report it as gone with an unknown status.
  exit_status_ = r == pid_ ? decode_wait_status(status) : ExitStatus{};
  pid_ = -1;
  return exit_status_;
}

ExitStatus Process::wait() {
  if (pid_ <= 0) return exit_status_.value_or(ExitStatus{});
  int status;
  pid_t r;
  do {
    r = waitpid(pid_, &status, 0);
  } while (r < 0 && errno == EINTR);
  exit_status_ = r == pid_ ? decode_wait_status(status) : ExitStatus{};
  pid_ = -1;
  return *exit_status_;
}

std::optional<ExitStatus> Process::wait_for(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  auto pause = std::chrono::milliseconds(1);
  while (true) {
    if (auto done = try_wait()) return done;
    auto now = std::chrono::steady_clock::now();
    if (now >= deadline) return std::nullopt;
    std::this_thread::sleep_for(
        std::min<std::chrono::steady_clock::duration>(pause, deadline - now));
    pause = std::min(pause * 2, std::chrono::milliseconds(50));
  }
}

bool Process::signal(int sig) {
  if (pid_ <= 0) return false;
  return ::kill(pid_, sig) == 0;
}

ExitStatus Process::terminate(std::chrono::milliseconds grace) {
  if (pid_ <= 0) return exit_status_.value_or(ExitStatus{});
  signal(SIGTERM);
  if (auto done = wait_for(grace)) return *done;
  signal(SIGKILL);
  return wait();
}

Result<CommandOutput> run_command(const std::vector<std::string>& argv,
                                  std::chrono::milliseconds timeout, const ProcessOptions& base) {
  ProcessOptions options = base;
  options.argv = argv;
  SKIFF_ASSIGN_OR_RETURN(ExecPlan plan, make_plan(options));
  int out_pipe[2];
  int err_pipe[2];
  if (pipe2(out_pipe, O_CLOEXEC) != 0) {
    return error(StatusCode::kInternal, "pipe: " + errno_text(errno));
  }
  if (pipe2(err_pipe, O_CLOEXEC) != 0) {
    int err = errno;
    close(out_pipe[0]);
    close(out_pipe[1]);
    return error(StatusCode::kInternal, "pipe: " + errno_text(err));
  }
  Result<pid_t> pid = fork_exec(plan, options, out_pipe[1], err_pipe[1]);
  close(out_pipe[1]);
  close(err_pipe[1]);
  if (!pid.is_ok()) {
    close(out_pipe[0]);
    close(err_pipe[0]);
    return pid.status();
  }
  CommandOutput output;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  struct pollfd fds[2] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}};
  std::string* sinks[2] = {&output.out, &output.err};
  int open_count = 2;
  bool timed_out = false;
  char buf[65536];
  while (open_count > 0) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      timed_out = true;
      break;
    }
    int r = poll(fds, 2, static_cast<int>(std::min<int64_t>(left.count(), 1000)));
    if (r < 0) {
      if (errno == EINTR) continue;
      break;
    }
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || fds[i].revents == 0) continue;
      ssize_t n = read(fds[i].fd, buf, sizeof(buf));
      if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
      if (n <= 0) {
        close(fds[i].fd);
        fds[i].fd = -1;
        --open_count;
        continue;
      }
      if (sinks[i]->size() < kMaxCapturedBytes) sinks[i]->append(buf, static_cast<size_t>(n));
    }
  }
  for (auto& fd : fds) {
    if (fd.fd >= 0) close(fd.fd);
  }
  int status = 0;
  pid_t reaped = 0;
  while (!timed_out) {
    do {
      reaped = waitpid(*pid, &status, WNOHANG);
    } while (reaped < 0 && errno == EINTR);
    if (reaped != 0) break;
    if (std::chrono::steady_clock::now() >= deadline) {
      timed_out = true;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  if (timed_out) {
    ::kill(*pid, SIGKILL);
    while (waitpid(*pid, &status, 0) < 0 && errno == EINTR) {
    }
    return error(StatusCode::kDeadlineExceeded, argv[0] + " did not finish within " +
                                                    std::to_string(timeout.count()) +
                                                    " ms; stdout: " + output.out.substr(0, 2000) +
                                                    " stderr: " + output.err.substr(0, 2000));
  }
  output.status = reaped == *pid ? decode_wait_status(status) : ExitStatus{};
  return output;
}

std::string host_name() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof(buf) - 1) != 0) return "localhost";
  std::string name = buf;
  for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return name;
}

}  // namespace skiff
