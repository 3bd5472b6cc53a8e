#pragma once

// The kubelet's part for a pod on a hollow node, without containers: the state of each simulated
// container (running, exited, waiting out a restart back-off), its advance through time, and the
// pod status a kubelet would report for it.
//
// Semantics follow upstream's kubelet where they apply: restartPolicy decides whether an exited
// container restarts (Always: always; OnFailure: on a non-zero code; Never: never); restarts wait
// out a CrashLoopBackOff (none for the first, then `initial` doubling to `max`, reset once a run
// lasted 2 × max); a pod whose containers have all ended for good is Succeeded (all codes 0) or
// Failed; containers killed for a deletion exit with 143 (a process ended by SIGTERM). Init
// containers complete at once (exit 0); sidecars (init containers with restartPolicy Always) run
// alongside. A readinessProbe's initialDelaySeconds delays the container's readiness.
//
// Thread-safety: plain values and pure functions; a PodRun is used by one thread at a time.

#include <chrono>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "hollow/exit_plan.h"

namespace skiff::hollow {

using Json = nlohmann::json;
using MonoTime = std::chrono::steady_clock::time_point;
using WallTime = std::chrono::system_clock::time_point;

// One moment on both clocks: deadlines are kept on the monotonic clock, timestamps written to the
// API on the wall clock.
struct Instant {
  MonoTime mono;
  WallTime wall;
  Instant plus(std::chrono::milliseconds d) const { return {mono + d, wall + d}; }
};

struct RestartBackoff {
  std::chrono::milliseconds initial{10000};
  std::chrono::milliseconds max{300000};
};

// How one run of a container ended.
struct Termination {
  int exit_code = 0;
  int run = 0;  // the restartCount of the run, which names its container ID
  WallTime started;
  WallTime finished;
};

struct ContainerRun {
  enum class State : uint8_t { kRunning, kBackOff, kTerminated };

  std::string name;
  std::string image;
  ExitPlan plan;
  std::chrono::milliseconds ready_delay{0};
  State state = State::kRunning;
  int restart_count = 0;
  Instant started;  // the current run's start (kRunning)
  // kBackOff: the run that just ended; kRunning / kTerminated: the run before the current one.
  std::optional<Termination> last;
  std::optional<Termination> ended;  // kTerminated: how the final run ended
  Instant restart_at;                // kBackOff: when the next run starts
  std::chrono::milliseconds next_backoff{0};
  MonoTime backoff_updated{};
};

struct PodRun {
  std::string uid;
  std::string restart_policy = "Always";
  Instant start;
  std::vector<ContainerRun> containers;  // in spec order
  bool killed = false;                   // stopped for a deletion
};

// A run of `pod` (a core/v1 Pod as JSON) starting at `now`: every container running.
PodRun start_pod(const Json& pod, Instant now);
// A run of a pod that a previous hollow process already started, rebuilt from its status
// (restart counts, start times and ended containers carry over).
PodRun adopt_pod(const Json& pod, Instant now);

// Moves the containers forward to `now`: runs that reached their exit end (and restart, or wait
// out a back-off, as restartPolicy says), runs whose back-off is over start. Returns the next
// moment something is due (an exit, a restart, a container turning ready), or nullopt.
std::optional<MonoTime> advance(PodRun& run, Instant now, const RestartBackoff& backoff);

// Ends every container that still runs or waits, as a kubelet does before finishing a deletion.
void kill_pod(PodRun& run, Instant now);

// True when every container has ended for good: the pod is Succeeded or Failed.
bool is_terminal(const PodRun& run);
// "Running", "Succeeded" or "Failed".
std::string pod_phase(const PodRun& run);

// The pod's status as the kubelet would write it at `now`: a copy of `pod`'s status with phase,
// host and pod IPs, startTime, the kubelet's conditions (the scheduler's and others' are kept;
// lastTransitionTime changes only with a condition's status) and container statuses. Everything
// but transition times derives from `run`, so an unchanged run gives an unchanged status.
Json build_pod_status(const Json& pod, const PodRun& run, const std::string& host_ip,
                      const std::string& pod_ip, Instant now);

// The JSON merge patch (RFC 7386) that turns `from` into `to`: an empty object when equal.
Json merge_patch_diff(const Json& from, const Json& to);

// Lowercase hex SHA-256 of `data`.
std::string sha256_hex(std::string_view data);

}  // namespace skiff::hollow
