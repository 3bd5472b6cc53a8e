#pragma once

// The kubelet's runtime manager (upstream's kuberuntime): reads a pod's sandboxes and containers
// back from the CRI runtime by their labels, works out what must change for the pod's spec to hold
// (a new sandbox, init containers in order, containers started or restarted as restartPolicy
// says after the crash-loop back-off, containers whose spec changed recreated), does it, and
// builds the pod status the API shows from what the runtime reports.
//
// Everything the kubelet knows about a pod's containers lives in the runtime (labels and
// annotations) or on disk, so a restarted kubelet adopts running pods instead of recreating them.
// Only the back-off state is kept in memory: per container for restarts (CrashLoopBackOff), per
// pod and image for pulls, as upstream keys its image back-off. A failed pull shows ErrImagePull
// with the runtime's error as the message; syncs while that image's back-off runs do not pull and
// show ImagePullBackOff ("Back-off pulling image \"<image>\""); SyncResult::retry_after asks for
// the next sync when the back-off ends, which is when the pull is tried again.
//
// Thread-safety: methods may be called from several threads for different pods at once; one pod
// is synced by one thread at a time (the pod workers' guarantee). The back-off table has its own
// lock.

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "base/status.h"
#include "kubelet/cri/runtime_service.h"
#include "kubelet/pod_config.h"
#include "kubelet/volumes.h"

namespace skiff::kubelet {

struct RuntimeContainer {
  std::string id;
  std::string name;
  bool init = false;
  uint32_t restart_count = 0;
  uint64_t hash = 0;
  v1::ContainerState state = v1::CONTAINER_UNKNOWN;
  int64_t created_at = 0;  // nanoseconds since the epoch
  int64_t started_at = 0;
  int64_t finished_at = 0;
  int32_t exit_code = 0;
  std::string reason;
  std::string message;
  std::string image;
  std::string image_ref;
  int64_t grace_seconds = 30;
};

struct RuntimeSandbox {
  std::string id;
  uint32_t attempt = 0;
  v1::PodSandboxState state = v1::SANDBOX_NOTREADY;
  int64_t created_at = 0;
  std::string ip;
  std::vector<std::string> ips;
};

// One pod as the runtime has it: sandboxes newest first; containers newest first.
struct RuntimePod {
  std::string uid;
  std::vector<RuntimeSandbox> sandboxes;
  std::vector<RuntimeContainer> containers;

  const RuntimeSandbox* ready_sandbox() const;
  // The newest container of that name (nullptr if none).
  const RuntimeContainer* latest(const std::string& name) const;
  // The one before the newest (for lastState).
  const RuntimeContainer* previous(const std::string& name) const;
  bool any_running() const;
  bool empty() const { return sandboxes.empty() && containers.empty(); }
};

// Why a container is waiting, when the last sync could not start it.
struct Waiting {
  std::string reason;  // ContainerCreating, CrashLoopBackOff, ErrImagePull, ImagePullBackOff, ...
  std::string message;
  // When to try again, for reasons with a back-off of their own (a failed pull: when the image's
  // back-off ends); unset: soon (a couple of seconds).
  std::optional<std::chrono::milliseconds> retry_after = std::nullopt;
};

struct SyncResult {
  std::map<std::string, Waiting> waiting;  // by container name
  // Sync again after this long (a back-off ends), if set.
  std::optional<std::chrono::milliseconds> retry_after;
  // Set when the pod cannot get a sandbox (volumes, sandbox creation): the pod condition message.
  std::string sandbox_error;
  Status status;  // the first error, for logs
};

struct BackoffPolicy {
  std::chrono::milliseconds initial{10000};
  std::chrono::milliseconds max{300000};
};

class PodRuntime {
 public:
  PodRuntime(cri::RuntimeService& runtime, cri::ImageService& images, NodeSettings node,
             VolumeManager& volumes, ObjectSource objects, BackoffPolicy backoff = {});

  // The pod's sandboxes and containers; an empty RuntimePod when the runtime has none.
  Result<RuntimePod> inspect(const std::string& uid);
  // Every pod UID the runtime has a sandbox or container for.
  Result<std::vector<std::string>> runtime_pod_uids();

  // Brings the runtime in line with the pod's spec. `known` is what inspect() returned.
  SyncResult sync(const Json& pod, const RuntimePod& known);
  // Stops every container and then the sandboxes: each running container's preStop hook (from
  // `spec`, the pod, when given) runs first, within the grace period; the stop signal gets what
  // is left of it (at least 2 s, as upstream), then the kill.
  Status kill(const RuntimePod& pod, int64_t grace_seconds, const Json* spec = nullptr);
  // Removes containers and sandboxes (after kill).
  Status remove(const RuntimePod& pod);
  // Removes exited containers of the pod beyond the newest two per name.
  void prune_dead(const RuntimePod& pod);

  // The status the API should show for `pod`, given what the runtime has.
  Json pod_status(const Json& pod, const RuntimePod& runtime, const SyncResult& last_sync,
                  const std::map<std::string, bool>& readiness) const;

  // Forgets back-off state for a pod that is gone.
  void forget(const std::string& uid);

  // Where the kubelet's events about pods go (Pulled, Created, Started, Killing, BackOff,
  // Failed, as upstream names them). Set before use; optional.
  using EventSink = std::function<void(const Json& pod, const std::string& type,
                                       const std::string& reason, const std::string& message)>;
  void set_event_sink(EventSink sink) { events_ = std::move(sink); }

 private:
  struct Backoff {
    std::chrono::steady_clock::time_point until;
    std::chrono::milliseconds next{0};
  };

  Status ensure_image(const Json& pod, const Json& container, std::string* image_ref,
                      Waiting* waiting);
  Status start_container(const Json& pod, const Json& container, bool init,
                         const RuntimeSandbox& sandbox, const v1::PodSandboxConfig& sandbox_config,
                         uint32_t restart_count, Waiting* waiting);
  // True when the back-off under `name` (a container's name, or "#pull <image>" for pulls) has
  // not yet run out; sets `left`.
  bool in_backoff(const std::string& uid, const std::string& name, std::chrono::milliseconds* left);
  // Starts or doubles the back-off; returns how long it now runs.
  std::chrono::milliseconds bump_backoff(const std::string& uid, const std::string& name);

  cri::RuntimeService& runtime_;
  cri::ImageService& images_;
  const NodeSettings node_;
  VolumeManager& volumes_;
  const ObjectSource objects_;
  const BackoffPolicy backoff_;
  EventSink events_;

  std::mutex mu_;
  std::map<std::string, Backoff> backoff_state_;  // "uid/container"; guarded by mu_
};

// Upstream's phase rules (getPhase) over the container statuses built for the API.
std::string pod_phase(const Json& pod, const Json& init_statuses, const Json& statuses);

}  // namespace skiff::kubelet
