#pragma once

// A child process started by a test or benchmark, stopped by PID (never by name).

#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

#include "base/status.h"

namespace skiff::testing {

class ChildProcess {
 public:
  ChildProcess() = default;
  ~ChildProcess();  // kills (SIGKILL) and reaps a child still running
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  // Starts argv[0] with stdout and stderr appended to `log_path` ("" for /dev/null).
  Status start(const std::vector<std::string>& argv, const std::string& log_path);
  // SIGTERM, then SIGKILL after `grace`; returns once reaped.
  void stop(std::chrono::milliseconds grace = std::chrono::milliseconds(5000));
  void kill_now();
  bool running();
  pid_t pid() const { return pid_; }

 private:
  pid_t pid_ = -1;
};

}  // namespace skiff::testing
