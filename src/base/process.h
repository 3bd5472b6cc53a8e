#pragma once

// Child processes: spawn an argv with environment overrides, a working directory and a log file;
// wait for it, poll it, or terminate it by its PID (SIGTERM, then SIGKILL after a grace period);
// and run a command to completion capturing its output under a timeout.
//
// A Process only ever signals the PID it spawned itself, and only until it has reaped it, so it
// never signals a recycled PID.
//
// Thread-safety: a Process is not synchronized; one thread at a time may use it (callers that
// share one guard it with their own mutex). run_command() is safe to call from any thread.
// Spawning is safe in multi-threaded programs: everything the child needs is prepared before
// fork(), and the child calls only async-signal-safe functions before exec.

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "base/status.h"

namespace skiff {

struct ProcessOptions {
  // argv[0] is the program: a path, or a name looked up in PATH (the parent's PATH, or the PATH
  // in env_overrides when it sets one).
  std::vector<std::string> argv;
  // NAME=value pairs set on top of the parent's environment (or on an empty one with clear_env).
  std::vector<std::pair<std::string, std::string>> env_overrides;
  bool clear_env = false;
  // Working directory; "" keeps the parent's.
  std::string cwd;
  // stdout and stderr are appended to this file (created 0644); "" sends them to /dev/null.
  std::string log_path;
  // The child gets SIGKILL when the thread that spawned it exits (PR_SET_PDEATHSIG: the kernel
  // ties it to the spawning thread, not to the process). Spawn from a thread that lives as long
  // as the child should.
  bool die_with_parent = false;
  // Runs the child in a new session (setsid), away from the parent's terminal signals.
  bool new_session = false;
};

// How a reaped process ended.
struct ExitStatus {
  int exit_code = -1;  // valid when signal == 0
  int signal = 0;      // the terminating signal, or 0 for a normal exit

  bool success() const { return signal == 0 && exit_code == 0; }
  // "exit code 3" or "signal 9 (Killed)".
  std::string to_string() const;
};

class Process {
 public:
  Process() = default;
  ~Process();  // SIGKILLs and reaps a child still running
  Process(Process&& other) noexcept;
  Process& operator=(Process&& other) noexcept;
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  // Starts the child. kNotFound when the program cannot be found, kInternal when fork, the log
  // file or exec fails (exec failures are reported here, not as an exit code).
  static Result<Process> spawn(const ProcessOptions& options);

  // The child's PID while it has not been reaped; -1 otherwise.
  pid_t pid() const { return pid_; }
  bool running() const { return pid_ > 0; }

  // Reaps the child when it has exited; nullopt while it still runs. Once reaped, the status
  // is kept and returned again by later calls.
  std::optional<ExitStatus> try_wait();
  // Blocks until the child exits and reaps it.
  ExitStatus wait();
  // Waits up to `timeout` for the child to exit; nullopt if it still runs.
  std::optional<ExitStatus> wait_for(std::chrono::milliseconds timeout);
  // Sends `sig` to the child if it has not been reaped; false when there is nothing to signal.
  bool signal(int sig);
  // SIGTERM, up to `grace` to exit, then SIGKILL; returns the reaped status.
  ExitStatus terminate(std::chrono::milliseconds grace);

 private:
  explicit Process(pid_t pid) : pid_(pid) {}
  void reset();

  pid_t pid_ = -1;
  std::optional<ExitStatus> exit_status_;
};

struct CommandOutput {
  ExitStatus status;
  std::string out;  // stdout
  std::string err;  // stderr
};

// Runs argv to completion with stdin from /dev/null, capturing stdout and stderr. When it
// outlives `timeout` it is killed and kDeadlineExceeded is returned (with the output so far in
// the message). A non-zero exit is not an error here: inspect status.
Result<CommandOutput> run_command(const std::vector<std::string>& argv,
                                  std::chrono::milliseconds timeout,
                                  const ProcessOptions& base = {});

// The machine's host name in lower case (the default node name); "localhost" when it cannot be
// read.
std::string host_name();

// The directory of the running executable (from /proc/self/exe), where the build puts the
// programs and files that ship with it.
Result<std::string> executable_dir();

// Looks `name` up in `path_env` (a PATH value) the way execvp would; names containing '/' are
// returned as they are when they exist. kNotFound otherwise.
Result<std::string> find_executable(const std::string& name, const std::string& path_env);

}  // namespace skiff
