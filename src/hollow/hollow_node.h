#pragma once

// Hollow nodes: many simulated nodes in one process, for testing and measuring the control plane
// without containers (the role of kubemark's hollow kubelet and of kwok).
//
// Each hollow node registers a Node (labels, capacity = allocatable, a fake InternalIP, a /24 pod
// CIDR, Ready), keeps it Ready with a Lease in kube-node-lease renewed every
// `lease_renew_interval` and a status heartbeat every `status_report_interval`, and plays the
// kubelet's part for the pods bound to it: they go Running and Ready with an address from the
// node's pod CIDR, end when their command or annotations say so (exit_plan.h), restart as their
// restartPolicy says (pod_sim.h), and are finished off (status, then delete with grace 0) when
// deleted, with the kubelet's Killing event for each container still running. Nothing runs.
//
// Scale: no thread per node or pod. One pod informer (bound pods only) for all nodes; node work
// (registration, lease renewals, heartbeats) and pod work go through two work queues whose
// delayed adds are the timers (one timer thread per queue keeps the deadlines ordered), drained
// by a few workers; every request goes through the one ApiClient given. Lease renewals and
// heartbeats are spread evenly over their period, each node keeping its own slot.
//
// Thread-safety: HollowNodes' methods may be called from any thread; start() and stop() from one
// thread at a time. Internally: the node and pod work queues never hand one key to two workers,
// so a node's registration state and a pod's run are touched by one worker at a time; each
// node's pod address pool is guarded by its own mutex; the pod run table by pods_mu_. Lock order:
// a node's mutex before pods_mu_.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <stop_token>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "base/status.h"
#include "base/time.h"
#include "client/api_client.h"
#include "client/event_recorder.h"
#include "client/informer.h"
#include "client/workqueue.h"
#include "hollow/ipv4.h"
#include "hollow/pod_sim.h"

namespace skiff::hollow {

struct HollowNodeOptions {
  int count = 1;
  // Node i (counting from first_index) is named name_prefix + i.
  std::string name_prefix = "hollow-node-";
  int first_index = 0;

  // Capacity, reported as allocatable too (quantities).
  std::string cpu = "4";
  std::string memory = "16Gi";
  std::string pods = "110";
  std::string ephemeral_storage = "100Gi";
  // Extra node labels (added to kubernetes.io/hostname, os, arch, instance-type and type).
  std::map<std::string, std::string> labels;

  // Node i gets the i-th block of length node_cidr_mask_size of pod_cidr as spec.podCIDR (a
  // Node that already has one keeps it), and the i-th address (from .1) of node_ip_range as its
  // InternalIP: a made-up address no traffic ever goes to.
  std::string pod_cidr = "10.128.0.0/9";
  int node_cidr_mask_size = 24;
  std::string node_ip_range = "10.200.0.0/16";

  std::chrono::milliseconds lease_duration{40000};
  std::chrono::milliseconds lease_renew_interval{10000};
  // Upstream's nodeStatusReportFrequency is 5 min with leases; hollow nodes report every minute.
  std::chrono::milliseconds status_report_interval{60000};
  RestartBackoff restart_backoff;

  int node_workers = 8;
  int pod_workers = 4;
  // On stop, delete the Nodes and their Leases (a stopped kubelet leaves them, so the default
  // is false).
  bool delete_nodes_on_exit = false;

  // Timestamps written to the API come from here; deadlines run on the monotonic clock.
  const Clock* clock = &SystemClock::instance();
};

// Checks the options (counts, quantities, ranges large enough for the nodes); kInvalidArgument
// naming the flag at fault.
Status validate(const HollowNodeOptions& options);

class HollowNodes {
 public:
  // kInvalidArgument for bad options (see validate()).
  static Result<std::unique_ptr<HollowNodes>> create(client::ApiClient& api,
                                                     HollowNodeOptions options);
  ~HollowNodes();  // stop()
  HollowNodes(const HollowNodes&) = delete;
  HollowNodes& operator=(const HollowNodes&) = delete;

  // Starts the pod informer and the workers; registration of the nodes begins at once.
  void start();
  // Stops renewing and reporting (the Nodes stay, as a dead kubelet leaves them, unless
  // delete_nodes_on_exit) and joins every thread.
  void stop();

  size_t registered() const;
  // Until every node is registered; false on timeout.
  bool wait_registered(std::chrono::milliseconds timeout) const;
  const std::vector<std::string>& node_names() const { return names_; }
  // Pods whose run this process keeps (running, restarting or finished and not yet deleted).
  size_t pods_tracked() const;

 private:
  struct Node;
  struct PodState;

  HollowNodes(client::ApiClient& api, HollowNodeOptions options, Json capacity,
              std::vector<std::unique_ptr<Node>> nodes);

  void worker_loop(client::WorkQueue& queue, Status (HollowNodes::*sync)(const std::string&));
  Status sync_node(const std::string& name);
  Status register_node(Node& node);
  Status renew_lease(Node& node);
  Status report_status(Node& node, bool full);
  Status sync_pod(const std::string& key);
  Status finish_deletion(const Json& pod, Node& node, PodState& state);
  Status write_pod_status(const Json& pod, const Json& status);
  PodState* find_pod(const std::string& key);
  PodState& add_pod(const std::string& key, std::unique_ptr<PodState> state);
  void forget_pod(const std::string& key);
  void release_address(PodState& state);
  Node* node_by_name(const std::string& name);
  Instant now() const;
  MonoTime next_slot(std::chrono::milliseconds period, const Node& node, MonoTime after) const;
  Json node_conditions(const Node& node, WallTime heartbeat) const;
  Json full_node_status(const Node& node, WallTime heartbeat) const;
  void delete_nodes();

  client::ApiClient& api_;
  const HollowNodeOptions options_;
  const Json capacity_;
  const MonoTime epoch_;  // renewal slots count from here

  std::vector<std::unique_ptr<Node>> nodes_;  // fixed after construction
  std::vector<std::string> names_;
  std::unordered_map<std::string, size_t> index_;  // name → position in nodes_; fixed

  client::Informer pods_;
  client::WorkQueue node_queue_;
  client::WorkQueue pod_queue_;
  // The kubelet's events about pods (Killing), each from its node.
  client::EventRecorder recorder_;
  std::vector<std::thread> workers_;
  bool started_ = false;

  mutable std::mutex pods_mu_;
  std::unordered_map<std::string, std::unique_ptr<PodState>> pod_states_;  // guarded by pods_mu_

  mutable std::mutex registered_mu_;
  mutable std::condition_variable registered_cv_;
  size_t registered_ = 0;  // guarded by registered_mu_
};

// Registers `options.count` hollow nodes through `api` and serves them until `stop` is requested;
// then stops (see HollowNodes::stop). Returns kInvalidArgument for bad options.
Status run(client::ApiClient& api, const HollowNodeOptions& options, std::stop_token stop);

}  // namespace skiff::hollow
