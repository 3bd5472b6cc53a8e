#pragma once

// Container probes (upstream's prober): liveness, readiness and startup probes of running
// containers, by exec (through the runtime), tcpSocket, httpGet (2xx-3xx healthy; HTTPS
// without certificate checks, as upstream) and grpc (grpc.health.v1 Check on the pod IP over
// plaintext HTTP/2; healthy when SERVING). Each probe runs every periodSeconds after
// initialDelaySeconds, with timeoutSeconds; its result flips after successThreshold consecutive
// successes or failureThreshold consecutive failures. Readiness starts false, liveness true,
// startup unknown; liveness and readiness wait until the startup probe has succeeded. A failed
// liveness or startup probe stops the container (the pod worker then restarts it as
// restartPolicy says); every flip wakes the pod's worker so its status follows.
//
// Scale: no thread per probe. Probes are keys of one work queue whose delayed adds are the
// timers, run by a few workers.
//
// Thread-safety: all public methods are safe from any thread.

#include <chrono>
#include <functional>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "base/status.h"
#include "client/workqueue.h"
#include "kubelet/cri/runtime_service.h"

namespace skiff::kubelet {

using Json = nlohmann::json;

enum class ProbeType : uint8_t { kLiveness, kReadiness, kStartup };
const char* probe_type_name(ProbeType type);  // "Liveness", "Readiness", "Startup"

// One probe attempt: success, or failure with the reason for events and logs.
struct ProbeOutcome {
  bool success = false;
  std::string message;
};

// Runs one probe action (exec/tcpSocket/httpGet/grpc) against a container with IP pod_ip.
ProbeOutcome run_probe(cri::RuntimeService& runtime, const Json& probe, const Json& container,
                       const std::string& container_id, const std::string& pod_ip);

class Prober {
 public:
  struct Callbacks {
    // The pod's status may have changed (a result flipped).
    std::function<void(const std::string& uid)> on_change;
    // A probe attempt failed; `restarting` when a liveness or startup probe reached its
    // failureThreshold and the container is being stopped for a restart.
    std::function<void(const Json& pod, const std::string& container, ProbeType type,
                       const std::string& message, bool restarting)>
        on_failure;
  };

  Prober(cri::RuntimeService& runtime, Callbacks callbacks, int workers = 4);
  ~Prober();
  Prober(const Prober&) = delete;
  Prober& operator=(const Prober&) = delete;

  // Makes sure the probes of a running container run (a new container_id starts them over).
  void ensure(const Json& pod, const Json& container, const std::string& container_id,
              const std::string& pod_ip);
  // Stops every probe of the pod whose container is not in `keep` (names of running ones).
  void retain(const std::string& uid, const std::vector<std::string>& keep);
  void forget_pod(const std::string& uid);

  // Ready by the readiness probe (true when it has none); false when unknown.
  bool ready(const std::string& uid, const std::string& container) const;
  // Started by the startup probe (true when it has none).
  bool started(const std::string& uid, const std::string& container) const;
  // Containers of the pod with a readiness probe, and whether they are ready.
  std::map<std::string, bool> readiness(const std::string& uid) const;

 private:
  struct Worker {
    Json pod;
    Json container;
    Json probe;
    std::string container_id;
    std::string pod_ip;
    ProbeType type;
    std::chrono::steady_clock::time_point first_run;
    int successes = 0;
    int failures = 0;
    int result = -1;  // -1 unknown, 0 failure, 1 success
  };

  void run_loop();
  void probe_once(const std::string& key);

  cri::RuntimeService& runtime_;
  const Callbacks callbacks_;
  client::WorkQueue queue_;

  mutable std::mutex mu_;
  std::map<std::string, Worker> workers_;  // "uid/container/type"; guarded by mu_

  std::vector<std::thread> threads_;
};

}  // namespace skiff::kubelet
