#include "kubelet/agent.h"

#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <mutex>

#include "base/log.h"
#include "base/process.h"
#include "client/http_client.h"
#include "kubelet/cni/cni_config.h"
#include "kubelet/cni/masquerade.h"
#include "kubelet/containerd/supervisor.h"
#include "kubelet/cri/grpc_runtime.h"
#include "kubelet/eviction.h"
#include "kubelet/images/builtin.h"
#include "kubelet/images/import.h"
#include "kubelet/images/registry_mirror.h"
#include "kubelet/kubelet.h"
#include "kubelet/node_status.h"
#include "kubelet/server/kubelet_server.h"
#include "kubelet/stats/resource_metrics.h"
#include "kubelet/stats/stats_provider.h"

namespace skiff::kubelet {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;

}  // namespace

Status import_image(const std::string& data_dir, const std::string& runtime_endpoint,
                    const std::string& tar_path) {
  std::error_code ec;
  if (!fs::is_regular_file(tar_path, ec)) {
    return error(StatusCode::kInvalidArgument, tar_path + ": no such file");
  }
  std::string endpoint = runtime_endpoint;
  if (endpoint.empty()) {
    containerd::ContainerdOptions co;
    co.data_dir = fs::absolute(data_dir).string() + "/agent";
    SKIFF_ASSIGN_OR_RETURN(containerd::ContainerdPaths paths, containerd::containerd_paths(co));
    if (!fs::exists(paths.socket, ec)) {
      return error(StatusCode::kFailedPrecondition,
                   "no containerd at " + paths.socket +
                       ": is a node agent running with --data-dir " + data_dir + "?");
    }
    endpoint = paths.socket;
  }
  return images::import_image_tar(endpoint, tar_path, "");
}

Status run_kubelet(const KubeletOptions& o, std::stop_token stop) {
  std::string agent_dir = fs::absolute(o.data_dir).string() + "/agent";
  std::error_code ec;
  fs::create_directories(agent_dir + "/images", ec);
  if (ec) return error(StatusCode::kInternal, "creating " + agent_dir + ": " + ec.message());
  std::string node_name = o.hostname_override.empty() ? host_name() : o.hostname_override;
  std::string node_ip = o.node_ip.empty() ? first_host_ipv4() : o.node_ip;
  if (node_ip.empty()) {
    return error(StatusCode::kInvalidArgument,
                 "the host has no non-loopback IPv4 address; pass --node-ip");
  }
  std::vector<UrlHeader> url_headers;
  for (const std::string& flag : o.manifest_url_headers) {
    SKIFF_ASSIGN_OR_RETURN(UrlHeader header, parse_url_header(flag));
    url_headers.push_back(std::move(header));
  }
  if (!o.manifest_url.empty() && !o.manifest_url.starts_with("http://") &&
      !o.manifest_url.starts_with("https://")) {
    return error(StatusCode::kInvalidArgument,
                 "--manifest-url " + o.manifest_url + ": only http:// and https:// are supported");
  }
  SKIFF_ASSIGN_OR_RETURN(
      std::vector<Threshold> thresholds,
      parse_eviction_flags({o.eviction_hard, o.eviction_soft, o.eviction_soft_grace_period,
                            o.eviction_minimum_reclaim}));
  SKIFF_ASSIGN_OR_RETURN(auto api,
                         client::HttpApiClient::connect(
                             {o.kubeconfig, o.server, o.token, o.ca_file, o.data_dir}, "kubelet"));

  // The container runtime: our own containerd unless an endpoint was given. The registry mirror
  // is declared first so that it outlives containerd on every path out of here.
  std::unique_ptr<images::RegistryMirror> mirror;
  std::unique_ptr<containerd::ContainerdSupervisor> supervisor;
  std::string image_fs_path;  // containerd's root, when it is ours
  std::string endpoint = o.container_runtime_endpoint;
  std::string cni_conf_dir = agent_dir + "/cni/net.d";
  if (endpoint.empty()) {
    containerd::ContainerdOptions co;
    co.data_dir = agent_dir;
    co.cni_conf_dir = cni_conf_dir;
    co.cni_bin_dir = o.cni_bin_dir;
    SKIFF_ASSIGN_OR_RETURN(std::string exe_dir, executable_dir());
    SKIFF_ASSIGN_OR_RETURN(
        co.runtime_binary,
        containerd::oci_runtime_binary(o.oci_runtime, exe_dir, containerd::containerd_path_env()));
    SKIFF_LOG_INFO("kubelet: OCI runtime {}",
                   co.runtime_binary.empty() ? "runc" : "crun (through " + co.runtime_binary + ")");
    // The node's own images, served as the registry mirror containerd asks first: a pull of an
    // image the node has (imagePullPolicy Always) succeeds offline.
    SKIFF_ASSIGN_OR_RETURN(containerd::ContainerdPaths paths, containerd::containerd_paths(co));
    image_fs_path = paths.root;
    images::RegistryMirrorOptions mirror_options;
    mirror_options.content_dir = images::containerd_content_dir(paths.root);
    mirror_options.hosts_dir = paths.base + "/certs.d";
    mirror_options.resolve_tag = images::containerd_tag_resolver(paths.socket);
    mirror = std::make_unique<images::RegistryMirror>(std::move(mirror_options));
    SKIFF_RETURN_IF_ERROR(mirror->start());
    co.registry_config_path = mirror->hosts_dir();
    supervisor = std::make_unique<containerd::ContainerdSupervisor>(co);
    SKIFF_RETURN_IF_ERROR(supervisor->start());
    endpoint = supervisor->address();
    SKIFF_LOG_INFO("kubelet: containerd ready at {} in {} ms", endpoint,
                   supervisor->last_start_to_ready().count());
    SKIFF_ASSIGN_OR_RETURN(std::string builtin, images::builtin_images_dir());
    SKIFF_RETURN_IF_ERROR(images::import_builtin_images(endpoint, builtin));
  }
  if (auto imported = images::import_images_dir(endpoint, agent_dir + "/images");
      imported.is_ok()) {
    for (const std::string& ref : *imported) SKIFF_LOG_INFO("kubelet: imported image {}", ref);
  } else {
    SKIFF_LOG_WARN("kubelet: importing {}: {}", agent_dir + "/images",
                   imported.status().to_string());
  }
  SKIFF_ASSIGN_OR_RETURN(auto runtime, cri::connect_runtime(endpoint, milliseconds(30000)));

  NodeStatusOptions node;
  node.node_name = node_name;
  node.node_ip = node_ip;
  node.hostname = node_name;
  node.max_pods = o.max_pods;
  node.data_dir = o.data_dir;
  node.labels = o.node_labels;
  node.register_node = o.register_node;
  node.pod_cidr = o.pod_cidr;
  node.status_update_interval = o.node_status_update_frequency;
  std::atomic<EvictionManager*> eviction_ptr{nullptr};
  node.memory_pressure = [&eviction_ptr] {
    EvictionManager* e = eviction_ptr.load();
    return e != nullptr && e->memory_pressure();
  };
  node.disk_pressure = [&eviction_ptr] {
    EvictionManager* e = eviction_ptr.load();
    return e != nullptr && e->disk_pressure();
  };
  node.pid_pressure = [&eviction_ptr] {
    EvictionManager* e = eviction_ptr.load();
    return e != nullptr && e->pid_pressure();
  };
  NodeStatusManager* status_ptr = nullptr;
  NodeStatusManager status(*api, *runtime, node, [&](const std::string& cidr) {
    cni::CniConfigOptions cni;
    cni.pod_cidrs = {cidr};
    cni.ipam_data_dir = agent_dir + "/cni/networks";
    auto written = cni::write_cni_conflist(cni_conf_dir, cni);
    if (!written.is_ok()) {
      SKIFF_LOG_ERROR("kubelet: writing the CNI configuration: {}", written.status().to_string());
      return;
    }
    if (Status masq = cni::apply_masquerade_rules(cni.pod_cidrs); !masq.is_ok()) {
      SKIFF_LOG_ERROR("kubelet: masquerading pod traffic: {}", masq.to_string());
      return;
    }
    if (*written) SKIFF_LOG_INFO("kubelet: pod network {} configured", cidr);
    if (status_ptr != nullptr) status_ptr->poke();
  });
  status_ptr = &status;

  PodManagerOptions pods;
  pods.node.node_name = node_name;
  pods.node.node_ip = node_ip;
  pods.node.log_root = o.pod_log_dir;
  pods.node.cgroup_root = o.cgroup_root;
  pods.node.cluster_dns = o.cluster_dns;
  pods.node.cluster_domain = o.cluster_domain;
  pods.pods_dir = agent_dir + "/pods";
  pods.resync_period = o.sync_frequency;
  pods.manifest_dir = o.pod_manifest_path.empty() ? agent_dir + "/manifests" : o.pod_manifest_path;
  fs::create_directories(pods.manifest_dir, ec);
  pods.manifest_url = o.manifest_url;
  pods.manifest_url_headers = url_headers;
  pods.node_pressure = [&eviction_ptr] {
    std::vector<std::string> conditions;
    EvictionManager* e = eviction_ptr.load();
    if (e == nullptr) return conditions;
    if (e->memory_pressure()) conditions.push_back("MemoryPressure");
    if (e->disk_pressure()) conditions.push_back("DiskPressure");
    if (e->pid_pressure()) conditions.push_back("PIDPressure");
    return conditions;
  };
  MachineInfo machine = read_machine_info(o.data_dir);
  pods.allocatable = [machine, max_pods = o.max_pods] {
    // As the Node reports it: allocatable is the capacity, nothing is reserved.
    return Allocatable{machine.cpus * 1000, machine.memory_bytes / 1024 * 1024,
                       machine.ephemeral_storage_bytes / 1024 * 1024, max_pods};
  };
  PodManager manager(*api, *runtime, *runtime, pods);

  // Resource usage from the node's and pods' cgroups (cAdvisor's part), for /stats/summary.
  stats::StatsProviderOptions st;
  st.node_name = node_name;
  st.cgroup_root = o.cgroup_root;
  st.pods_dir = pods.pods_dir;
  st.pod_log_root = o.pod_log_dir;
  st.node_fs_path = fs::absolute(o.data_dir).string();
  st.image_fs_path = image_fs_path;
  st.runtime = runtime.get();
  st.images = runtime.get();
  st.pods = [&manager] { return stats::pods_from_pod_list(manager.pod_list()); };
  stats::CgroupStatsProvider stats_provider(st);

  EvictionOptions eviction_options;
  eviction_options.thresholds = thresholds;
  eviction_options.pressure_transition_period = o.eviction_pressure_transition_period;
  eviction_options.max_pod_grace_period_seconds = o.eviction_max_pod_grace_period;
  EvictionManager::Hooks eviction_hooks;
  eviction_hooks.summary = [&stats_provider] { return stats_provider.summary(false); };
  eviction_hooks.active_pods = [&manager] { return manager.active_pods(); };
  eviction_hooks.evict = [&manager](const std::string& uid, const std::string& message,
                                    int64_t grace_period_seconds) {
    manager.evict(uid, message, grace_period_seconds);
  };
  eviction_hooks.pressure_changed = [&status] { status.poke(); };
  EvictionManager eviction(eviction_options, std::move(eviction_hooks));
  eviction_ptr = &eviction;

  status.start();
  manager.start();

  // The kubelet's own endpoints (10250 for the API server's pods/log, 10248 healthz).
  server::KubeletServerOptions so;
  so.node_name = node_name;
  so.port = o.port;
  so.cert_dir = agent_dir + "/tls";
  so.serving_sans = {node_ip, node_name};
  std::string ca =
      o.ca_file.empty() ? fs::absolute(o.data_dir).string() + "/tls/ca.crt" : o.ca_file;
  if (fs::exists(ca, ec)) so.client_ca_file = ca;
  std::string ca_key = fs::absolute(o.data_dir).string() + "/tls/ca.key";
  if (o.ca_file.empty() && fs::exists(ca_key, ec)) so.ca_key_file = ca_key;
  server::PodLookup lookup;
  lookup.pod_list = [&manager] { return manager.pod_list().dump(); };
  lookup.container_log = [&manager](
                             const std::string& ns, const std::string& pod,
                             const std::string& container) -> Result<server::ContainerLogTarget> {
    SKIFF_ASSIGN_OR_RETURN(auto loc, manager.container_log(ns, pod, container));
    server::ContainerLogTarget target;
    target.container_log_dir = loc.dir;
    target.restart_count = loc.restart_count;
    std::string id = loc.container_id;
    target.running = [&manager, id] { return manager.container_running(id); };
    return target;
  };
  lookup.stats_summary = [&stats_provider](bool only_cpu_and_memory) {
    return stats::summary_json(stats_provider, only_cpu_and_memory);
  };
  lookup.resource_metrics = [&stats_provider] { return stats::resource_metrics(stats_provider); };
  cri::RuntimeService& cri = *runtime;
  lookup.stream_url = [&manager, &cri](const server::StreamRequest& r) -> Result<std::string> {
    if (r.kind == "portforward") {
      v1::PortForwardRequest request;
      SKIFF_ASSIGN_OR_RETURN(*request.mutable_pod_sandbox_id(), manager.ready_sandbox(r.ns, r.pod));
      for (int32_t port : r.ports) request.add_port(port);
      return cri.port_forward(request);
    }
    SKIFF_ASSIGN_OR_RETURN(std::string id, manager.running_container(r.ns, r.pod, r.container));
    if (r.kind == "exec") {
      v1::ExecRequest request;
      request.set_container_id(id);
      for (const std::string& arg : r.command) request.add_cmd(arg);
      request.set_stdin(r.in);
      request.set_stdout(r.out);
      request.set_stderr(r.err);
      request.set_tty(r.tty);
      return cri.exec(request);
    }
    v1::AttachRequest request;
    request.set_container_id(id);
    request.set_stdin(r.in);
    request.set_stdout(r.out);
    request.set_stderr(r.err);
    request.set_tty(r.tty);
    return cri.attach(request);
  };
  lookup.run = [&manager](const server::RunRequest& r) {
    return manager.run_in_container(r.ns, r.pod, r.uid, r.container, r.command);
  };
  lookup.create_pod = [&manager](const std::string& manifest) -> Result<std::string> {
    SKIFF_ASSIGN_OR_RETURN(Json pod, manager.add_api_pod(manifest));
    return pod.dump();
  };
  lookup.delete_pod = [&manager](const std::string& name) { return manager.remove_api_pod(name); };
  stats_provider.start();
  if (!thresholds.empty()) eviction.start();
  SKIFF_ASSIGN_OR_RETURN(auto kubelet_server, server::KubeletServer::create(so, lookup));
  SKIFF_LOG_INFO("kubelet: node {} ({}) running", node_name, node_ip);

  std::mutex mu;
  std::condition_variable_any cv;
  std::unique_lock lock(mu);
  cv.wait(lock, stop, [] { return false; });

  kubelet_server->stop();
  eviction.stop();
  eviction_ptr = nullptr;
  stats_provider.stop();
  manager.stop();
  status.stop();
  runtime.reset();
  if (supervisor) supervisor->stop();
  if (mirror) mirror->stop();
  return Status::ok();
}

}  // namespace skiff::kubelet
