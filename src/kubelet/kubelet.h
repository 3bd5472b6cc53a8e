#pragma once

// The kubelet's pod lifecycle: pods bound to this node (from the API server, by watch) are the
// desired state; one serialized worker per pod (a work queue keyed by pod UID that never hands a
// key to two workers and coalesces updates) walks each pod through syncing (PodRuntime::sync),
// terminating (containers stopped with the pod's grace period) and terminated (final status
// written; a deleted pod is then removed from the API with grace 0, and its containers, sandbox,
// volumes and cgroup are cleaned up). A PLEG thread relists the runtime every pleg_period and
// wakes the worker of every pod whose containers changed; each pod is also resynced every
// resync_period (status, ConfigMap/Secret volume contents, back-off expiry). An update from the
// API that changes only the pod's status (the kubelet's own status write coming back) does not
// wake the worker unless the phase changed. A sync that could not start a container asks for the
// next one when that container's back-off ends (a failed pull: the image's back-off, 10 s
// doubling to 5 min by default); the status written after a failed pull (ErrImagePull) stands
// until the next sync, which shows ImagePullBackOff while the back-off runs.
//
// Static pods (static_pods.h) come from the manifest directory, the manifest URL and the
// kubelet's own API (add_api_pod); they merge into one desired state, where a pod whose
// namespace/name an earlier source (file, then http, then api) already has is refused and
// logged. The URL is fetched at start and every manifest_url_period; a failed fetch or a bad
// body keeps the pods of the last good fetch. Pods added through add_api_pod live in memory
// only: a restarted kubelet no longer has them (their containers are then cleaned up).
//
// Thread-safety: start()/stop() from one thread; the rest from any thread. Lock order: mu_ and
// sources_mu_ are leaf locks (never held together, nor while calling the runtime or the API).

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "client/api_client.h"
#include "client/event_recorder.h"
#include "client/informer.h"
#include "client/workqueue.h"
#include "kubelet/admission.h"
#include "kubelet/cri/runtime_service.h"
#include "kubelet/pod_runtime.h"
#include "kubelet/prober.h"
#include "kubelet/static_pods.h"
#include "kubelet/volumes.h"

namespace skiff::kubelet {

struct PodManagerOptions {
  NodeSettings node;
  std::string pods_dir = "/var/lib/skiff/agent/pods";
  // Pods synced at once (upstream runs one goroutine per pod; the runtime does the waiting).
  int workers = 16;
  // Static pods: manifests in this directory run here, shown in the API as mirror pods. Empty:
  // no static pods.
  std::string manifest_dir;
  // The directory is checked for changes this often, and read whole every manifest_period.
  std::chrono::milliseconds manifest_check_period{1000};
  std::chrono::milliseconds manifest_period{20000};
  // Static pods from the body of this URL (http:// or https://), sent with these headers,
  // fetched at start and every manifest_url_period. Empty: none.
  std::string manifest_url;
  std::vector<UrlHeader> manifest_url_headers;
  std::chrono::milliseconds manifest_url_period{20000};
  std::chrono::milliseconds pleg_period{1000};
  std::chrono::milliseconds resync_period{10000};
  BackoffPolicy backoff;
  // The node's pressure conditions in effect ("MemoryPressure", "DiskPressure", "PIDPressure"):
  // a new pod the eviction manager would not admit under them (pressure_admission) ends Failed,
  // reason Evicted, without starting. Unset: no pressure.
  std::function<std::vector<std::string>()> node_pressure;
  // What the node offers: a new pod whose requests do not fit beside those of the pods admitted
  // before it ends Failed, reason OutOf<resource> (resource_admission). Unset: no check.
  std::function<Allocatable()> allocatable;
};

class PodManager {
 public:
  PodManager(client::ApiClient& api, cri::RuntimeService& runtime, cri::ImageService& images,
             PodManagerOptions options);
  ~PodManager();
  PodManager(const PodManager&) = delete;
  PodManager& operator=(const PodManager&) = delete;

  void start();
  void stop();
  bool wait_for_sync(std::chrono::milliseconds timeout) const;
  // Pods this kubelet is responsible for right now (from the API, not yet cleaned up).
  size_t pods_tracked() const;

  // The pods bound to this node, as a v1 PodList (the kubelet's /pods).
  Json pod_list() const;
  // Where a container's logs are: its log directory, the restart count of its newest instance
  // and whether that instance runs. kNotFound for an unknown pod or container (messages as
  // upstream's kubelet words them); kFailedPrecondition while the container has not started.
  struct LogLocation {
    std::string dir;
    int restart_count = 0;
    bool running = false;
    std::string container_id;
  };
  Result<LogLocation> container_log(const std::string& ns, const std::string& pod,
                                    const std::string& container);
  // Whether the container instance still runs.
  bool container_running(const std::string& container_id);
  // For exec and attach: the runtime ID of the container's running instance. kNotFound for an
  // unknown pod or container, kFailedPrecondition when it does not run.
  Result<std::string> running_container(const std::string& ns, const std::string& pod,
                                        const std::string& container);
  // For the kubelet's /run: runs cmd in the container's running instance to its end and
  // returns its stdout followed by its stderr. kNotFound for an unknown pod (or one whose UID is
  // not `uid`, when given) or container, kFailedPrecondition when it does not run, kInternal when
  // the command exits non-zero (upstream's "command 'CMD' exited with N: STDERR").
  Result<std::string> run_in_container(const std::string& ns, const std::string& pod,
                                       const std::string& uid, const std::string& container,
                                       const std::vector<std::string>& cmd);
  // For port-forward: the runtime ID of the pod's ready sandbox (kNotFound without one).
  Result<std::string> ready_sandbox(const std::string& ns, const std::string& pod);

  // Pods that run here and are neither finished nor being deleted (eviction candidates).
  std::vector<Json> active_pods() const;
  // Evicts a pod: its containers are stopped with `grace_period_seconds` (0 kills at once, as
  // hard evictions do) and it ends Failed, reason Evicted, with `message`.
  void evict(const std::string& uid, const std::string& message, int64_t grace_period_seconds = 0);

  // Runs the pod in `manifest` (one Pod, YAML or JSON) as a static pod with config.source=api,
  // kept in memory only. Returns the pod as it will run (named <name>-<node>).
  // kInvalidArgument: not exactly one valid Pod; kAlreadyExists: a static pod of that name runs
  // already (from this API or another source).
  Result<Json> add_api_pod(const std::string& manifest);
  // Stops the pod add_api_pod added under that (final) name. kNotFound if there is none.
  Status remove_api_pod(const std::string& name);

 private:
  struct Entry {
    client::ObjectPtr pod;  // nullptr once the API (or the manifest directory) no longer has it
    bool is_static = false;
    std::string evicted;         // the eviction message, once evicted
    int64_t eviction_grace = 0;  // seconds the evicted pod's containers get to stop
    std::string written_status;  // the status last written, as JSON text
    bool admitted = false;       // allowed to start (pressure_admission), once and for good
  };

  void worker_loop();
  Status sync(const std::string& uid);
  // Upstream's admission of a pod that has not started: true when admitted (and marked so);
  // false when it was rejected and written Failed with the reason.
  Result<bool> admit(const std::string& uid, const Json& pod, Entry* entry);
  Status clean_up(const std::string& uid, const RuntimePod& runtime);
  Status write_status(const Json& pod, const Json& status, Entry* snapshot);
  void pleg_loop();
  void static_loop();
  void url_loop();
  // Reads the manifest directory, merges it with the URL's and the API's pods, updates the
  // static entries and keeps their mirror pods.
  void sync_static_pods(bool reread);
  // Wakes the static loop to merge the sources again.
  void poke_static_loop();
  // Takes the pod as the API has it now; `wake` queues its worker (not for an update that only
  // echoes a status the kubelet wrote).
  void set_pod(const client::ObjectPtr& pod, bool wake = true);
  // The pod the kubelet runs under that name (a mirror pod resolves to its static pod).
  Result<client::ObjectPtr> find_pod(const std::string& ns, const std::string& name);
  void remove_cgroups(const std::string& uid);

  client::ApiClient& api_;
  cri::RuntimeService& cri_;
  const PodManagerOptions options_;
  client::Informer services_;  // for the pods' service environment variables
  VolumeManager volumes_;
  PodRuntime runtime_;
  client::Informer pods_;
  client::WorkQueue queue_;
  client::EventRecorder recorder_;
  Prober prober_;

  mutable std::mutex mu_;
  std::mutex admit_mu_;                   // serializes admit(): one admission decision at a time
  std::map<std::string, Entry> entries_;  // by UID; guarded by mu_
  std::map<std::string, client::ObjectPtr> static_pods_;  // by UID; static_loop only
  std::string manifest_signature_;                        // static_loop only
  std::vector<Json> file_pods_;                           // static_loop only
  std::set<std::string> refused_;                         // UIDs; static_loop only

  mutable std::mutex sources_mu_;
  std::vector<Json> url_pods_;                       // the last good fetch; guarded by sources_mu_
  std::map<std::string, Json> api_pods_;             // by name; guarded by sources_mu_
  std::map<std::string, std::string> static_names_;  // "ns/name" → source; guarded by sources_mu_
  std::atomic<bool> sources_changed_{false};
  std::atomic<bool> url_fetched_{false};  // the URL was tried once

  std::atomic<bool> stopping_{false};
  std::atomic<bool> static_read_{false};  // the manifest directory was read once
  std::vector<std::thread> threads_;
  std::mutex pleg_mu_;
  std::condition_variable pleg_cv_;
};

// ConfigMaps and Secrets read through the API; Services from `services` when given.
ObjectSource api_object_source(client::ApiClient& api, client::Informer* services = nullptr);

}  // namespace skiff::kubelet
