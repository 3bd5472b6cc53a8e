#pragma once

// ContainerdSupervisor runs the node's own containerd: writes its config, starts it as a child
// process (its output appended to a log file), waits until it answers on its socket, restarts it
// with back-off whenever it exits, and on stop() ends it with SIGTERM, then SIGKILL after a grace
// period. It only ever signals the PID it started itself, and refuses to start a second
// containerd on a socket something else already serves.
//
// When the kubelet is given an existing runtime endpoint it does not use a supervisor at all.
//
// containerd is spawned by the supervisor's monitor thread and dies with it (PR_SET_PDEATHSIG),
// so a crashed skiff does not leave its containerd behind; running containers are unaffected,
// their shims are separate processes.
//
// Thread-safety: all methods are safe to call from any thread. start() and stop() serialize on
// their own; the monitor thread shares state with them under mu_.

#include <sys/types.h>

#include <condition_variable>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "base/process.h"
#include "base/status.h"
#include "kubelet/containerd/containerd_config.h"

namespace skiff::kubelet::containerd {

class ContainerdSupervisor {
 public:
  explicit ContainerdSupervisor(ContainerdOptions options);
  ~ContainerdSupervisor();  // stop()
  ContainerdSupervisor(const ContainerdSupervisor&) = delete;
  ContainerdSupervisor& operator=(const ContainerdSupervisor&) = delete;

  // Creates the directories, writes config.toml, starts containerd and waits until it answers
  // (options.ready_timeout). Errors: kInvalidArgument for bad options, kFailedPrecondition when
  // already started or when something already answers on the socket, kNotFound when containerd
  // is not installed, kInternal when it exits before answering and kDeadlineExceeded when it does
  // not answer in time (both with the tail of its log), kCancelled when stop() is called
  // meanwhile; nothing is left running on error.
  Status start();
  // Stops containerd (and the restarts) and waits for it to exit; makes a start() in progress
  // give up. Idempotent.
  void stop();

  // Waits until containerd answers, e.g. after a restart. kUnavailable when not started or
  // stopped, kDeadlineExceeded on timeout.
  Status wait_ready(std::chrono::milliseconds timeout);
  bool ready() const;

  // The gRPC address (unix socket path) the kubelet's CRI client dials; known after start().
  std::string address() const;
  // Valid after start().
  ContainerdPaths paths() const;
  // The running containerd's PID, or -1.
  pid_t pid() const;
  // How many times containerd was started, the first time included.
  int start_count() const;
  // How it ended last time, if it ever exited on its own.
  std::optional<ExitStatus> last_exit() const;
  // How long the last start took until containerd answered.
  std::chrono::milliseconds last_start_to_ready() const;

 private:
  // Runs on monitor_: spawns `containerd` (an absolute path) and restarts it until stopping_.
  void monitor_loop(const std::string& containerd, const std::string& path_env);
  // True when containerd answers on the socket.
  bool probe() const;
  // Waits up to `d` on cv_; returns true when stopping.
  bool sleep_unless_stopping(std::chrono::milliseconds d);
  std::string log_tail() const;

  const ContainerdOptions options_;
  ContainerdPaths paths_;  // set by start() before the monitor thread exists
  std::string ctr_path_;   // "" when ctr is not installed

  std::mutex lifecycle_mu_;  // serializes start() and stop(); taken before mu_
  std::thread monitor_;      // guarded by lifecycle_mu_

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool started_ = false;                              // guarded by mu_
  bool stopping_ = false;                             // guarded by mu_
  bool ready_ = false;                                // guarded by mu_
  pid_t pid_ = -1;                                    // guarded by mu_
  int start_count_ = 0;                               // guarded by mu_
  int exit_count_ = 0;                                // guarded by mu_
  std::optional<ExitStatus> last_exit_;               // guarded by mu_
  Status spawn_error_;                                // guarded by mu_
  std::chrono::milliseconds last_start_to_ready_{0};  // guarded by mu_
};

}  // namespace skiff::kubelet::containerd
