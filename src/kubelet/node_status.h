#pragma once

// The kubelet's Node: registers it (capacity and allocatable from the machine, addresses, node
// info, labels), keeps its Lease in kube-node-lease renewed, and reports its status (conditions
// Ready, MemoryPressure, DiskPressure, PIDPressure; Ready follows the runtime's RuntimeReady and
// NetworkReady; the pressure conditions follow the eviction manager) every status period, or at
// once when something changed (poke()). It also notices the pod CIDR the node IPAM controller
// assigned, for the pod network configuration.
//
// Thread-safety: start()/stop() from one thread; pod_cidr() and registered() from any thread.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "base/status.h"
#include "client/api_client.h"
#include "kubelet/cri/runtime_service.h"

namespace skiff::kubelet {

struct NodeStatusOptions {
  std::string node_name;
  std::string node_ip;
  std::string hostname;
  int max_pods = 110;
  std::string data_dir = "/var/lib/skiff";  // its filesystem is the node's ephemeral storage
  std::map<std::string, std::string> labels;
  bool register_node = true;
  // Set by --pod-cidr; otherwise the Node's spec.podCIDR (assigned by the node IPAM controller).
  std::string pod_cidr;
  std::chrono::milliseconds lease_duration{40000};
  std::chrono::milliseconds lease_renew_interval{10000};
  std::chrono::milliseconds status_update_interval{10000};
  // Whether the node is under memory, disk and PID pressure (the eviction manager's view);
  // optional (unset: no pressure).
  std::function<bool()> memory_pressure;
  std::function<bool()> disk_pressure;
  std::function<bool()> pid_pressure;
};

// What the node reports about the machine (capacity, node info), read once at start.
struct MachineInfo {
  int64_t cpus = 1;
  int64_t memory_bytes = 0;
  int64_t ephemeral_storage_bytes = 0;
  std::string kernel_version;
  std::string os_image;
  std::string machine_id;
  std::string boot_id;
  std::string architecture = "amd64";
};
MachineInfo read_machine_info(const std::string& data_dir);

// The machine's first non-loopback IPv4 address, or "" if it has none.
std::string first_host_ipv4();

class NodeStatusManager {
 public:
  NodeStatusManager(client::ApiClient& api, cri::RuntimeService& runtime, NodeStatusOptions options,
                    std::function<void(const std::string& pod_cidr)> on_pod_cidr);
  ~NodeStatusManager();

  void start();
  void stop();
  bool registered() const { return registered_.load(); }
  std::string pod_cidr() const;
  // Ask for a status report now (e.g. the runtime's network became ready).
  void poke();

 private:
  void loop();
  Status register_node();
  Status renew_lease();
  Status report_status();
  nlohmann::json node_status(const cri::v1::StatusResponse* runtime_status,
                             const std::string& runtime_version) const;

  client::ApiClient& api_;
  cri::RuntimeService& runtime_;
  const NodeStatusOptions options_;
  const MachineInfo machine_;
  std::function<void(const std::string&)> on_pod_cidr_;

  std::atomic<bool> registered_{false};
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;        // guarded by mu_
  bool poked_ = false;           // guarded by mu_
  std::string pod_cidr_;         // guarded by mu_
  std::string last_conditions_;  // guarded by mu_: the Ready condition last written
  std::thread thread_;
};

}  // namespace skiff::kubelet
