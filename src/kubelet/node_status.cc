#include "kubelet/node_status.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <sys/statvfs.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include "base/log.h"
#include "base/time.h"
#include "base/version.h"

namespace skiff::kubelet {
namespace {

using Json = nlohmann::json;
using client::resources::kLeases;
using client::resources::kNodes;

std::string read_first_line(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

std::string os_image() {
  std::ifstream in("/etc/os-release");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("PRETTY_NAME=", 0) != 0) continue;
    std::string v = line.substr(12);
    if (v.size() >= 2 && v.front() == '"') v = v.substr(1, v.size() - 2);
    return v;
  }
  return "Linux";
}

std::string kubelet_version() {
  return std::string("v") + kKubernetesMajor + "." + kKubernetesMinor + ".0-skiff." + kSkiffVersion;
}

}  // namespace

MachineInfo read_machine_info(const std::string& data_dir) {
  MachineInfo m;
  long cpus = ::sysconf(_SC_NPROCESSORS_ONLN);
  m.cpus = cpus > 0 ? cpus : 1;
  std::ifstream meminfo("/proc/meminfo");
  std::string key;
  int64_t kib = 0;
  std::string unit;
  while (meminfo >> key >> kib >> unit) {
    if (key == "MemTotal:") {
      m.memory_bytes = kib * 1024;
      break;
    }
  }
  struct statvfs fs {};
  if (::statvfs(data_dir.c_str(), &fs) == 0) {
    m.ephemeral_storage_bytes = int64_t(fs.f_blocks) * int64_t(fs.f_frsize);
  }
  struct utsname u {};
  if (::uname(&u) == 0) {
    m.kernel_version = u.release;
    std::string machine = u.machine;
    m.architecture = machine == "x86_64" ? "amd64" : machine == "aarch64" ? "arm64" : machine;
  }
  m.os_image = os_image();
  m.machine_id = read_first_line("/etc/machine-id");
  m.boot_id = read_first_line("/proc/sys/kernel/random/boot_id");
  return m;
}

std::string first_host_ipv4() {
  struct ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0) return "";
  std::string found;
  for (struct ifaddrs* a = list; a != nullptr && found.empty(); a = a->ifa_next) {
    if (a->ifa_addr == nullptr || a->ifa_addr->sa_family != AF_INET) continue;
    if ((a->ifa_flags & IFF_LOOPBACK) != 0 || (a->ifa_flags & IFF_UP) == 0) continue;
    char buf[INET_ADDRSTRLEN] = {};
    auto* in = reinterpret_cast<struct sockaddr_in*>(a->ifa_addr);
    if (::inet_ntop(AF_INET, &in->sin_addr, buf, sizeof(buf)) != nullptr) found = buf;
  }
  ::freeifaddrs(list);
  return found;
}

NodeStatusManager::NodeStatusManager(client::ApiClient& api, cri::RuntimeService& runtime,
                                     NodeStatusOptions options,
                                     std::function<void(const std::string&)> on_pod_cidr)
    : api_(api),
      runtime_(runtime),
      options_(std::move(options)),
      machine_(read_machine_info(options_.data_dir)),
      on_pod_cidr_(std::move(on_pod_cidr)) {}

NodeStatusManager::~NodeStatusManager() {
  stop();
}

void NodeStatusManager::start() {
  thread_ = std::thread([this] { loop(); });
}

void NodeStatusManager::stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

std::string NodeStatusManager::pod_cidr() const {
  std::lock_guard lock(mu_);
  return pod_cidr_;
}

void NodeStatusManager::poke() {
  {
    std::lock_guard lock(mu_);
    poked_ = true;
  }
  cv_.notify_all();
}

void NodeStatusManager::loop() {
  using Clock = std::chrono::steady_clock;
  auto next_lease = Clock::now();
  auto next_status = Clock::now();
  while (true) {
    {
      std::lock_guard lock(mu_);
      if (stopping_) return;
    }
    if (!registered_) {
      if (!options_.register_node) {
        registered_ = true;
      } else {
        Status s = register_node();
        if (s.is_ok()) {
          registered_ = true;
          SKIFF_LOG_INFO("kubelet: registered node {}", options_.node_name);
        } else {
          SKIFF_LOG_WARN("kubelet: registering node {}: {}", options_.node_name, s.to_string());
        }
      }
    }
    auto now = Clock::now();
    if (registered_ && now >= next_lease) {
      Status s = renew_lease();
      if (!s.is_ok()) SKIFF_LOG_WARN("kubelet: renewing lease: {}", s.to_string());
      next_lease = now + (s.is_ok() ? options_.lease_renew_interval : std::chrono::seconds(1));
    }
    bool poked = false;
    {
      std::lock_guard lock(mu_);
      poked = poked_;
      poked_ = false;
    }
    if (registered_ && (now >= next_status || poked)) {
      Status s = report_status();
      if (!s.is_ok()) SKIFF_LOG_WARN("kubelet: reporting node status: {}", s.to_string());
      next_status = now + (s.is_ok() ? options_.status_update_interval : std::chrono::seconds(1));
    }
    std::unique_lock lock(mu_);
    auto wake =
        registered_ ? std::min(next_lease, next_status) : Clock::now() + std::chrono::seconds(1);
    cv_.wait_until(lock, wake, [&] { return stopping_ || poked_; });
  }
}

Status NodeStatusManager::register_node() {
  Json labels = {{"kubernetes.io/hostname", options_.hostname},
                 {"kubernetes.io/os", "linux"},
                 {"kubernetes.io/arch", machine_.architecture},
                 {"beta.kubernetes.io/os", "linux"},
                 {"beta.kubernetes.io/arch", machine_.architecture}};
  for (const auto& [k, v] : options_.labels) labels[k] = v;
  Json node = {{"apiVersion", "v1"},
               {"kind", "Node"},
               {"metadata", {{"name", options_.node_name}, {"labels", labels}}},
               {"spec", Json::object()}};
  if (!options_.pod_cidr.empty()) {
    node["spec"]["podCIDR"] = options_.pod_cidr;
    node["spec"]["podCIDRs"] = Json::array({options_.pod_cidr});
  }
  auto created = api_.create(kNodes, "", node);
  if (created.is_ok()) return report_status();
  if (created.status().code() != StatusCode::kAlreadyExists) return created.status();
  // An existing Node (a restart): bring its labels up to date.
  Json patch = {{"metadata", {{"labels", labels}}}};
  auto patched =
      api_.patch(kNodes, "", options_.node_name, client::PatchType::kMerge, patch.dump());
  if (!patched.is_ok()) return patched.status();
  return report_status();
}

Status NodeStatusManager::renew_lease() {
  std::string now = rfc3339_micro(std::chrono::system_clock::now());
  auto lease = api_.get(kLeases, "kube-node-lease", options_.node_name);
  if (lease.is_ok()) {
    Json updated = *lease;
    updated["spec"]["holderIdentity"] = options_.node_name;
    updated["spec"]["leaseDurationSeconds"] = options_.lease_duration.count() / 1000;
    updated["spec"]["renewTime"] = now;
    return api_.update(kLeases, "kube-node-lease", updated).status();
  }
  if (lease.status().code() != StatusCode::kNotFound) return lease.status();
  Json fresh = {{"apiVersion", "coordination.k8s.io/v1"},
                {"kind", "Lease"},
                {"metadata", {{"name", options_.node_name}, {"namespace", "kube-node-lease"}}},
                {"spec",
                 {{"holderIdentity", options_.node_name},
                  {"leaseDurationSeconds", options_.lease_duration.count() / 1000},
                  {"renewTime", now}}}};
  auto node = api_.get(kNodes, "", options_.node_name);
  if (node.is_ok()) {
    fresh["metadata"]["ownerReferences"] = Json::array({{{"apiVersion", "v1"},
                                                         {"kind", "Node"},
                                                         {"name", options_.node_name},
                                                         {"uid", client::uid_of(*node)}}});
  }
  return api_.create(kLeases, "kube-node-lease", fresh).status();
}

Json NodeStatusManager::node_status(const cri::v1::StatusResponse* runtime_status,
                                    const std::string& runtime_version) const {
  std::string now = rfc3339_now();
  std::string ready = "True", reason = "KubeletReady", message = "kubelet is posting ready status";
  if (runtime_status == nullptr) {
    ready = "False";
    reason = "KubeletNotReady";
    message = "container runtime is down";
  } else {
    for (const auto& c : runtime_status->status().conditions()) {
      if (c.status()) continue;
      ready = "False";
      reason = "KubeletNotReady";
      message =
          c.type() == "NetworkReady"
              ? "container runtime network not ready: NetworkReady=false reason:" + c.reason() +
                    " message:" + c.message()
              : "container runtime not ready: " + c.type() + "=false reason:" + c.reason();
      break;
    }
  }
  auto condition = [&](const std::string& type, const std::string& status, const std::string& r,
                       const std::string& m) {
    return Json{{"type", type}, {"status", status},         {"reason", r},
                {"message", m}, {"lastHeartbeatTime", now}, {"lastTransitionTime", now}};
  };
  bool memory = options_.memory_pressure && options_.memory_pressure();
  bool disk = options_.disk_pressure && options_.disk_pressure();
  bool pid = options_.pid_pressure && options_.pid_pressure();
  Json conditions =
      Json::array({memory ? condition("MemoryPressure", "True", "KubeletHasInsufficientMemory",
                                      "kubelet has insufficient memory available")
                          : condition("MemoryPressure", "False", "KubeletHasSufficientMemory",
                                      "kubelet has sufficient memory available"),
                   disk ? condition("DiskPressure", "True", "KubeletHasDiskPressure",
                                    "kubelet has disk pressure")
                        : condition("DiskPressure", "False", "KubeletHasNoDiskPressure",
                                    "kubelet has no disk pressure"),
                   pid ? condition("PIDPressure", "True", "KubeletHasInsufficientPID",
                                   "kubelet has insufficient PID available")
                       : condition("PIDPressure", "False", "KubeletHasSufficientPID",
                                   "kubelet has sufficient PID available"),
                   condition("Ready", ready, reason, message)});
  Json capacity = {
      {"cpu", std::to_string(machine_.cpus)},
      {"memory", std::to_string(machine_.memory_bytes / 1024) + "Ki"},
      {"ephemeral-storage", std::to_string(machine_.ephemeral_storage_bytes / 1024) + "Ki"},
      {"pods", std::to_string(options_.max_pods)}};
  Json addresses = Json::array();
  if (!options_.node_ip.empty())
    addresses.push_back({{"type", "InternalIP"}, {"address", options_.node_ip}});
  addresses.push_back({{"type", "Hostname"}, {"address", options_.hostname}});
  Json info = {{"machineID", machine_.machine_id},    {"systemUUID", machine_.machine_id},
               {"bootID", machine_.boot_id},          {"kernelVersion", machine_.kernel_version},
               {"osImage", machine_.os_image},        {"containerRuntimeVersion", runtime_version},
               {"kubeletVersion", kubelet_version()}, {"kubeProxyVersion", kubelet_version()},
               {"operatingSystem", "linux"},          {"architecture", machine_.architecture}};
  return {
      {"capacity", capacity},     {"allocatable", capacity},
      {"conditions", conditions}, {"addresses", addresses},
      {"nodeInfo", info},         {"daemonEndpoints", {{"kubeletEndpoint", {{"Port", 10250}}}}}};
}

Status NodeStatusManager::report_status() {
  auto node = api_.get(kNodes, "", options_.node_name);
  if (!node.is_ok()) {
    if (node.status().code() == StatusCode::kNotFound)
      registered_ = false;  // deleted: register again
    return node.status();
  }
  std::string cidr = options_.pod_cidr;
  if (cidr.empty()) cidr = (*node)["spec"].value("podCIDR", "");
  bool changed = false;
  {
    std::lock_guard lock(mu_);
    if (cidr != pod_cidr_) {
      pod_cidr_ = cidr;
      changed = true;
    }
  }
  if (changed && !cidr.empty() && on_pod_cidr_) on_pod_cidr_(cidr);

  auto runtime_status = runtime_.status();
  std::string version = "containerd://unknown";
  if (auto v = runtime_.version(); v.is_ok())
    version = v->runtime_name() + "://" + v->runtime_version();
  Json status = node_status(runtime_status.is_ok() ? &*runtime_status : nullptr, version);
  // Keep each condition's transition time while its status holds.
  const Json& old = (*node)["status"];
  if (old.contains("conditions")) {
    for (Json& c : status["conditions"]) {
      for (const Json& o : old["conditions"]) {
        if (o.value("type", "") == c["type"] && o.value("status", "") == c["status"]) {
          c["lastTransitionTime"] =
              o.value("lastTransitionTime", c["lastTransitionTime"].get<std::string>());
        }
      }
    }
  }
  Json patch = {{"status", status}};
  return api_
      .patch(kNodes, "", options_.node_name, client::PatchType::kMerge, patch.dump(), {}, "status")
      .status();
}

}  // namespace skiff::kubelet
