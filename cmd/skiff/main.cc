// skiff: one binary, one subcommand per component.

#include <CLI/CLI.hpp>
#include <atomic>
#include <csignal>
#include <cstdio>
#include <functional>
#include <semaphore>
#include <stop_token>
#include <thread>
#include <tuple>
#include <vector>

#include "apiserver/apiserver.h"
#include "base/log.h"
#include "base/time.h"
#include "base/version.h"
#include "client/http_client.h"
#include "controllers/manager/controller_manager.h"
#include "dns/dns.h"
#include "hollow/hollow_node.h"
#include "kubelet/agent.h"
#include "proxy/proxy.h"
#include "scheduler/scheduler_server.h"

namespace {

std::binary_semaphore g_stop{0};

void on_signal(int) {
  g_stop.release();
}

struct ServerFlags {
  skiff::apiserver::ApiServerOptions api;
  bool disable_agent = false;
  // skiff server only: the in-process controller manager.
  bool disable_controller_manager = false;
  skiff::controllers::ControllerManagerOptions cm;
  bool disable_scheduler = false;
  skiff::scheduler::SchedulerServerOptions scheduler;
  // skiff server only: the in-process node agent (kubelet and proxy).
  skiff::kubelet::KubeletOptions kubelet;
  skiff::proxy::ProxyOptions proxy;
  bool disable_proxy = false;
  // skiff server only: the cluster DNS.
  skiff::dns::DnsOptions dns;
  bool disable_dns = false;
};

void add_server_flags(CLI::App* cmd, ServerFlags& f) {
  auto& o = f.api;
  cmd->add_option("--data-dir", o.data_dir, "State directory")->capture_default_str();
  cmd->add_option("--advertise-address", o.advertise_address,
                  "Address the kubernetes Service points to (default: bind address or host IP)");
  cmd->add_option("--bind-address", o.bind_address, "Address to serve HTTPS on")
      ->capture_default_str();
  cmd->add_option("--https-port", o.https_port, "HTTPS port (0 picks a free one)")
      ->capture_default_str();
  cmd->add_option("--tls-san", o.tls_sans, "Extra DNS name or IP for the serving certificate")
      ->delimiter(',');
  cmd->add_option("--token-auth-file", o.token_auth_file,
                  "Bearer tokens: CSV lines token,user,uid,\"group1,group2\"");
  cmd->add_option("--service-cidr", o.service_cidr, "Service IP range")->capture_default_str();
  cmd->add_option("--event-ttl", o.event_ttl_seconds,
                  "Seconds an Event is kept after its last update")
      ->capture_default_str();
  cmd->add_option("--default-not-ready-toleration-seconds", o.default_not_ready_toleration_seconds,
                  "tolerationSeconds of the not-ready toleration every new pod gets")
      ->capture_default_str();
  cmd->add_option("--default-unreachable-toleration-seconds",
                  o.default_unreachable_toleration_seconds,
                  "tolerationSeconds of the unreachable toleration every new pod gets")
      ->capture_default_str();
  cmd->add_option("--store", o.store.backend, "Store backend: embedded or etcd")
      ->capture_default_str();
  cmd->add_option("--etcd-servers", o.store.etcd_endpoints, "etcd client URLs (--store etcd)")
      ->delimiter(',');
}

// Runs a component on its own thread until SIGINT/SIGTERM, or until it returns by itself (an
// error at start, such as an unreadable kubeconfig).
int run_component(const char* name, std::function<skiff::Status(std::stop_token)> component) {
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  std::stop_source stop;
  skiff::Status result;
  std::thread t([&] {
    result = component(stop.get_token());
    g_stop.release();
  });
  g_stop.acquire();
  stop.request_stop();
  t.join();
  if (!result.is_ok()) {
    std::fprintf(stderr, "skiff %s: %s\n", name, result.message().c_str());
    return 1;
  }
  return 0;
}

// A Go-style duration flag ("40s", "5m") stored as milliseconds.
void add_duration_option(CLI::App* cmd, const std::string& name, std::chrono::milliseconds& target,
                         const std::string& help) {
  cmd->add_option_function<std::string>(
         name,
         [&target, name](const std::string& text) {
           auto d = skiff::parse_duration(text);
           if (!d.is_ok()) throw CLI::ValidationError(name, d.status().message());
           target = d.value();
         },
         help)
      ->default_str(std::to_string(target.count()) + "ms");
}

struct ControllerManagerFlags {
  skiff::controllers::ControllerManagerOptions o;
};

void add_controller_manager_flags(CLI::App* cmd, ControllerManagerFlags& f) {
  auto& o = f.o;
  cmd->add_option("--kubeconfig", o.kubeconfig, "Kubeconfig of the API server")->required();
  cmd->add_option("--controllers", o.controllers,
                  "Controllers to run: * for the defaults, -name to disable one")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--leader-elect", o.leader_elect, "Elect a leader through a Lease")
      ->capture_default_str();
  add_duration_option(cmd, "--leader-elect-lease-duration", o.lease_duration,
                      "How long a lease holds without renewal");
  add_duration_option(cmd, "--leader-elect-renew-deadline", o.renew_deadline,
                      "How long the leader retries renewing before it stops leading");
  add_duration_option(cmd, "--leader-elect-retry-period", o.retry_period,
                      "Pause between lease acquisition and renewal attempts");
  add_duration_option(cmd, "--node-monitor-period", o.controller.node_monitor_period,
                      "How often node health is checked");
  cmd->add_option("--terminated-pod-gc-threshold", o.controller.terminated_pod_gc_threshold,
                  "Terminated pods kept before the oldest are deleted (0: no limit)")
      ->capture_default_str();
  add_duration_option(cmd, "--node-monitor-grace-period", o.controller.node_monitor_grace_period,
                      "How long a node may go without renewing before it is marked unhealthy");
  cmd->add_option("--concurrent-workers", o.controller.workers, "Workers per controller")
      ->capture_default_str();
  cmd->add_option("--allocate-node-cidrs", o.allocate_node_cidrs,
                  "Give every node a pod CIDR from --cluster-cidr")
      ->capture_default_str();
  cmd->add_option("--cluster-cidr", o.node_ipam.cluster_cidr, "Pod address range")
      ->capture_default_str();
  cmd->add_option("--node-cidr-mask-size", o.node_ipam.node_mask_size,
                  "Prefix length of each node's pod CIDR")
      ->capture_default_str();
  cmd->add_option("--root-ca-file", o.root_ca_file,
                  "CA certificate published as kube-root-ca.crt in every namespace");
}

// Node flags shared by `skiff kubelet`, `skiff agent` and `skiff server`.
void add_node_flags(CLI::App* cmd, skiff::kubelet::KubeletOptions& o) {
  cmd->add_option("--hostname-override", o.hostname_override, "Node name (default: host name)");
  cmd->add_option("--node-ip", o.node_ip, "Node address (default: first non-loopback IPv4)");
  cmd->add_option("--node-labels", o.node_labels, "Extra node labels key=value,...")
      ->delimiter(',');
  cmd->add_option("--register-node", o.register_node, "Register the Node with the API server")
      ->capture_default_str();
  cmd->add_option("--max-pods", o.max_pods, "Pods this node runs at most")->capture_default_str();
  cmd->add_option("--port", o.port, "The kubelet's HTTPS port")->capture_default_str();
  cmd->add_option("--pod-manifest-path", o.pod_manifest_path,
                  "Directory of static pod manifests (default: <data-dir>/agent/manifests)");
  cmd->add_option("--manifest-url", o.manifest_url,
                  "URL whose body holds static pod manifests, fetched every 20 seconds");
  cmd->add_option("--manifest-url-header", o.manifest_url_headers,
                  "Name:Value headers sent with --manifest-url requests, comma-separated "
                  "(repeatable)")
      ->delimiter(',')
      ->allow_extra_args(false);
  cmd->add_option("--pod-cidr", o.pod_cidr, "Pod CIDR (default: the one the node is assigned)");
  cmd->add_option("--container-runtime-endpoint", o.container_runtime_endpoint,
                  "An existing CRI socket (default: run containerd under the data dir)");
  cmd->add_option("--oci-runtime", o.oci_runtime,
                  "OCI runtime of the node's own containerd: auto (crun when installed), crun "
                  "or runc")
      ->check(CLI::IsMember({"auto", "crun", "runc"}))
      ->capture_default_str();
  cmd->add_option("--pod-logs-dir", o.pod_log_dir, "Where container logs are written")
      ->capture_default_str();
  cmd->add_option("--cgroup-root", o.cgroup_root, "Parent cgroup of the pods")
      ->capture_default_str();
  cmd->add_option("--cluster-dns", o.cluster_dns, "DNS server addresses for pods")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--cluster-domain", o.cluster_domain, "Cluster DNS domain")
      ->capture_default_str();
  cmd->add_option("--cni-bin-dir", o.cni_bin_dir, "CNI plugin directory")->capture_default_str();
  cmd->add_option("--eviction-hard", o.eviction_hard,
                  "Hard eviction thresholds, signal<quantity or signal<N% (\"\" for none)")
      ->capture_default_str();
  cmd->add_option("--eviction-soft", o.eviction_soft,
                  "Soft eviction thresholds, acting after their grace period (same syntax)");
  cmd->add_option("--eviction-soft-grace-period", o.eviction_soft_grace_period,
                  "Grace period of each soft threshold, signal=duration (memory.available=1m30s)");
  cmd->add_option("--eviction-minimum-reclaim", o.eviction_minimum_reclaim,
                  "How far above its threshold a signal must recover, signal=quantity or N%");
  add_duration_option(cmd, "--eviction-pressure-transition-period",
                      o.eviction_pressure_transition_period,
                      "How long a pressure condition stays on after its last met threshold");
  cmd->add_option("--eviction-max-pod-grace-period", o.eviction_max_pod_grace_period,
                  "Most seconds of grace for pods evicted by a soft threshold (negative: the "
                  "pod's own)")
      ->capture_default_str();
  add_duration_option(cmd, "--node-status-update-frequency", o.node_status_update_frequency,
                      "How often the node status is reported");
  add_duration_option(cmd, "--sync-frequency", o.sync_frequency, "How often each pod is resynced");
}

void add_proxy_flags(CLI::App* cmd, skiff::proxy::ProxyOptions& o) {
  cmd->add_option("--proxy-mode", o.mode, "Service rules: nftables or iptables")
      ->check(CLI::IsMember({"nftables", "iptables"}))
      ->capture_default_str();
  add_duration_option(cmd, "--proxy-min-sync-period", o.min_sync_period,
                      "Pause after a Service change before the rules are written");
  add_duration_option(cmd, "--proxy-sync-period", o.sync_period,
                      "How often every Service's rules are checked again");
}

// The kubelet and, unless disabled, the proxy, stopping together: when one fails, both stop.
skiff::Status run_node_agent(const skiff::kubelet::KubeletOptions& kubelet,
                             const skiff::proxy::ProxyOptions* proxy, std::stop_token stop) {
  std::stop_source both;
  std::stop_callback forward(stop, [&both] { both.request_stop(); });
  skiff::Status proxy_status;
  std::thread proxy_thread;
  if (proxy) {
    proxy_thread = std::thread([&] {
      proxy_status = skiff::proxy::run_proxy(*proxy, both.get_token());
      if (!proxy_status.is_ok()) both.request_stop();
    });
  }
  skiff::Status s = skiff::kubelet::run_kubelet(kubelet, both.get_token());
  both.request_stop();
  if (proxy_thread.joinable()) proxy_thread.join();
  if (!s.is_ok()) return s;
  if (!proxy_status.is_ok()) {
    return skiff::error(proxy_status.code(), "proxy: " + proxy_status.message());
  }
  return skiff::Status::ok();
}

// The API server alone (`skiff apiserver`), or with the control-plane components in the same
// process (`skiff server`). The components reach the API server over HTTPS like any client.
int run_apiserver(ServerFlags& flags, bool with_components) {
  auto server = skiff::apiserver::ApiServer::start(flags.api);
  if (!server.is_ok()) {
    std::fprintf(stderr, "skiff: %s\n", server.status().message().c_str());
    return 1;
  }
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  std::stop_source stop;
  std::vector<std::thread> components;
  auto start_component = [&](const char* name,
                             std::function<skiff::Status(std::stop_token)> component) {
    components.emplace_back([name, component, token = stop.get_token()] {
      skiff::Status s = component(token);
      if (!s.is_ok()) {
        std::fprintf(stderr, "skiff: %s: %s\n", name, s.message().c_str());
        g_stop.release();
      }
    });
  };
  if (with_components && !flags.disable_controller_manager) {
    flags.cm.kubeconfig = server.value()->admin_kubeconfig();
    if (flags.cm.root_ca_file.empty()) flags.cm.root_ca_file = flags.api.data_dir + "/tls/ca.crt";
    start_component("controller-manager", [&flags](std::stop_token token) {
      return skiff::controllers::run_controller_manager(flags.cm, token);
    });
  }
  if (with_components && !flags.disable_scheduler) {
    flags.scheduler.kubeconfig = server.value()->admin_kubeconfig();
    start_component("scheduler", [&flags](std::stop_token token) {
      return skiff::scheduler::run_scheduler(flags.scheduler, token);
    });
  }
  if (with_components && !flags.disable_agent) {
    flags.kubelet.kubeconfig = server.value()->admin_kubeconfig();
    // Pods are pointed at the DNS Service of this cluster's Service range unless told otherwise.
    auto dns_ip = skiff::dns::cluster_dns_ip(flags.api.service_cidr);
    if (flags.kubelet.cluster_dns == std::vector<std::string>{"10.43.0.10"} && dns_ip.is_ok()) {
      flags.kubelet.cluster_dns = {*dns_ip};
    }
    flags.kubelet.data_dir = flags.api.data_dir;
    start_component("kubelet", [&flags](std::stop_token token) {
      return skiff::kubelet::run_kubelet(flags.kubelet, token);
    });
    if (!flags.disable_proxy) {
      flags.proxy.kubeconfig = flags.kubelet.kubeconfig;
      flags.proxy.data_dir = flags.api.data_dir;
      flags.proxy.hostname_override = flags.kubelet.hostname_override;
      flags.proxy.cluster_cidr = flags.cm.node_ipam.cluster_cidr;
      start_component("proxy", [&flags](std::stop_token token) {
        return skiff::proxy::run_proxy(flags.proxy, token);
      });
    }
  }
  if (with_components && !flags.disable_dns) {
    // DNS listens where Services can send to it: the node's address when this process is a
    // node, else the address the API server advertises.
    auto& d = flags.dns;
    d.kubeconfig = server.value()->admin_kubeconfig();
    if (d.bind_address == "0.0.0.0") {
      d.bind_address = !flags.disable_agent && !flags.kubelet.node_ip.empty()
                           ? flags.kubelet.node_ip
                           : server.value()->advertise_address();
    }
    d.service_cidrs = {flags.api.service_cidr};
    if (auto ip = skiff::dns::cluster_dns_ip(flags.api.service_cidr); ip.is_ok()) {
      d.service_ip = *ip;
    }
    d.pod_cidrs = {flags.cm.node_ipam.cluster_cidr};
    d.cluster_domain = flags.kubelet.cluster_domain;
    components.emplace_back([&d, token = stop.get_token()] {
      // A node whose port 53 is taken still runs everything else.
      skiff::Status s = skiff::dns::run_dns(d, token);
      if (!s.is_ok()) SKIFF_LOG_ERROR("cluster DNS stopped: {}", s.message());
    });
  }
  std::printf("skiff is ready. To use kubectl:\n  export KUBECONFIG=%s\n",
              server.value()->admin_kubeconfig().c_str());
  std::fflush(stdout);
  g_stop.acquire();
  SKIFF_LOG_INFO("shutting down");
  stop.request_stop();
  for (auto& t : components) t.join();
  server.value()->stop();
  return 0;
}

// ---- hollow-node ------------------------------------------------------------------------------

struct HollowNodeFlags {
  std::string kubeconfig;
  skiff::hollow::HollowNodeOptions options;
  std::vector<std::string> node_labels;
  std::string lease_duration = "40s";
  std::string lease_renew_interval = "10s";
  std::string status_report_frequency = "1m";
  double qps = 0;
  int burst = 100;
};

CLI::App* add_hollow_node_command(CLI::App& app, HollowNodeFlags& f) {
  auto* cmd = app.add_subcommand(
      "hollow-node",
      "Run simulated nodes (no containers) for testing and measuring the control plane");
  auto& o = f.options;
  cmd->add_option("--kubeconfig", f.kubeconfig, "Kubeconfig of the API server")->required();
  cmd->add_option("--count", o.count, "Nodes to run in this process")->capture_default_str();
  cmd->add_option("--name-prefix", o.name_prefix, "Node i is named PREFIX<i>")
      ->capture_default_str();
  cmd->add_option("--first-index", o.first_index,
                  "Index of the first node (its name, pod CIDR block and address); lets "
                  "several processes share one cluster")
      ->capture_default_str();
  cmd->add_option("--cpu", o.cpu, "CPU capacity of each node")->capture_default_str();
  cmd->add_option("--memory", o.memory, "Memory capacity of each node")->capture_default_str();
  cmd->add_option("--pods", o.pods, "Pod capacity of each node")->capture_default_str();
  cmd->add_option("--ephemeral-storage", o.ephemeral_storage, "Ephemeral storage of each node")
      ->capture_default_str();
  cmd->add_option("--node-labels", f.node_labels, "Extra node labels, key=value")->delimiter(',');
  cmd->add_option("--pod-cidr", o.pod_cidr, "Range the nodes' pod CIDRs are cut from")
      ->capture_default_str();
  cmd->add_option("--node-cidr-mask-size", o.node_cidr_mask_size,
                  "Prefix length of each node's pod CIDR")
      ->capture_default_str();
  cmd->add_option("--node-ip-range", o.node_ip_range,
                  "Range of the nodes' made-up InternalIPs (never used for traffic)")
      ->capture_default_str();
  cmd->add_option("--node-lease-duration", f.lease_duration, "leaseDurationSeconds of the Leases")
      ->capture_default_str();
  cmd->add_option("--node-lease-renew-interval", f.lease_renew_interval,
                  "How often each node renews its Lease")
      ->capture_default_str();
  cmd->add_option("--node-status-report-frequency", f.status_report_frequency,
                  "How often each node posts its status")
      ->capture_default_str();
  cmd->add_option("--node-workers", o.node_workers, "Threads registering nodes and renewing leases")
      ->capture_default_str();
  cmd->add_option("--pod-workers", o.pod_workers, "Threads playing the kubelet for pods")
      ->capture_default_str();
  cmd->add_option("--kube-api-qps", f.qps, "Requests per second to the API server (0: no limit)")
      ->capture_default_str();
  cmd->add_option("--kube-api-burst", f.burst, "Request burst with --kube-api-qps")
      ->capture_default_str();
  cmd->add_flag("--delete-nodes-on-exit", o.delete_nodes_on_exit,
                "Delete the Nodes and their Leases on exit (by default they stay, as a stopped "
                "kubelet leaves them)");
  return cmd;
}

int run_hollow_node(HollowNodeFlags& f) {
  auto& o = f.options;
  for (auto [flag, text, target] :
       {std::tuple{"--node-lease-duration", &f.lease_duration, &o.lease_duration},
        std::tuple{"--node-lease-renew-interval", &f.lease_renew_interval, &o.lease_renew_interval},
        std::tuple{"--node-status-report-frequency", &f.status_report_frequency,
                   &o.status_report_interval}}) {
    auto d = skiff::parse_duration(*text);
    if (!d.is_ok() || d->count() <= 0) {
      std::fprintf(stderr, "skiff hollow-node: %s: invalid duration \"%s\"\n", flag, text->c_str());
      return 2;
    }
    *target = d.value();
  }
  for (const std::string& label : f.node_labels) {
    size_t eq = label.find('=');
    if (eq == std::string::npos || eq == 0) {
      std::fprintf(stderr, "skiff hollow-node: --node-labels: want key=value, got \"%s\"\n",
                   label.c_str());
      return 2;
    }
    o.labels[label.substr(0, eq)] = label.substr(eq + 1);
  }
  if (auto s = skiff::hollow::validate(o); !s.is_ok()) {
    std::fprintf(stderr, "skiff hollow-node: %s\n", s.message().c_str());
    return 2;
  }
  skiff::client::HttpClientOptions http;
  http.user_agent = "skiff-hollow-node";
  http.field_manager = "skiff-hollow-node";
  http.qps = f.qps;
  http.burst = f.burst;
  http.max_idle_connections = o.node_workers + o.pod_workers + 2;
  auto client = skiff::client::HttpApiClient::from_kubeconfig_file(f.kubeconfig, http);
  if (!client.is_ok()) {
    std::fprintf(stderr, "skiff hollow-node: %s\n", client.status().message().c_str());
    return 1;
  }
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  std::stop_source stop;
  std::atomic<bool> done{false};
  std::thread waiter([&] {
    while (!done.load()) {
      if (g_stop.try_acquire_for(std::chrono::milliseconds(100))) {
        stop.request_stop();
        return;
      }
    }
  });
  skiff::Status s = skiff::hollow::run(*client.value(), o, stop.get_token());
  done = true;
  waiter.join();
  if (!s.is_ok()) {
    std::fprintf(stderr, "skiff hollow-node: %s\n", s.message().c_str());
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"skiff: a Kubernetes-compatible container orchestrator"};
  app.require_subcommand(1);
  std::string log_level = "info";
  app.add_option("--log-level", log_level, "trace, debug, info, warn or error");

  auto* version = app.add_subcommand("version", "Print the version");

  ServerFlags server_flags;
  auto* server = app.add_subcommand(
      "server", "Run the control plane (API server with its store) and the components that exist");
  add_server_flags(server, server_flags);
  server->add_flag("--disable-agent", server_flags.disable_agent,
                   "Do not run a node agent in this process");
  server->add_flag("--disable-controller-manager", server_flags.disable_controller_manager,
                   "Do not run the controllers in this process");
  server->add_flag("--disable-scheduler", server_flags.disable_scheduler,
                   "Do not run the scheduler in this process");
  server->add_option("--cluster-cidr", server_flags.cm.node_ipam.cluster_cidr, "Pod address range")
      ->capture_default_str();
  server
      ->add_option("--terminated-pod-gc-threshold",
                   server_flags.cm.controller.terminated_pod_gc_threshold,
                   "Terminated pods kept before the oldest are deleted (0: no limit)")
      ->capture_default_str();
  add_duration_option(server, "--node-monitor-grace-period",
                      server_flags.cm.controller.node_monitor_grace_period,
                      "How long a node may go without renewing before it is marked unhealthy");
  add_duration_option(server, "--node-monitor-period",
                      server_flags.cm.controller.node_monitor_period,
                      "How often node health is checked");

  add_node_flags(server, server_flags.kubelet);
  add_proxy_flags(server, server_flags.proxy);
  server->add_flag("--disable-proxy", server_flags.disable_proxy,
                   "Do not run the Service proxy in this process");
  server->add_flag("--disable-dns", server_flags.disable_dns, "Do not run the cluster DNS");
  server->add_option("--cluster-dns-address", server_flags.dns.bind_address,
                     "Address the cluster DNS listens on (default: the node IP)");
  server->add_option("--cluster-dns-port", server_flags.dns.port, "Port of the cluster DNS")
      ->capture_default_str();
  server
      ->add_option("--dns-upstream", server_flags.dns.upstreams,
                   "Resolvers for names outside the cluster (default: from /etc/resolv.conf)")
      ->delimiter(',');

  ServerFlags apiserver_flags;
  auto* apiserver = app.add_subcommand("apiserver", "Run the API server alone");
  add_server_flags(apiserver, apiserver_flags);

  ControllerManagerFlags cm_flags;
  auto* controller_manager =
      app.add_subcommand("controller-manager", "Run the controllers against an API server");
  add_controller_manager_flags(controller_manager, cm_flags);

  HollowNodeFlags hollow_flags;
  auto* hollow_node = add_hollow_node_command(app, hollow_flags);

  skiff::scheduler::SchedulerServerOptions scheduler_options;
  auto* scheduler = app.add_subcommand("scheduler", "Run the scheduler against an API server");
  scheduler
      ->add_option("--kubeconfig", scheduler_options.kubeconfig, "Kubeconfig of the API server")
      ->required();
  scheduler
      ->add_option("--leader-elect", scheduler_options.leader_elect,
                   "Elect a leader through a Lease")
      ->capture_default_str();
  add_duration_option(scheduler, "--leader-elect-lease-duration", scheduler_options.lease_duration,
                      "How long a lease holds without renewal");
  add_duration_option(scheduler, "--leader-elect-renew-deadline", scheduler_options.renew_deadline,
                      "How long the leader retries renewing before it stops leading");
  add_duration_option(scheduler, "--leader-elect-retry-period", scheduler_options.retry_period,
                      "Pause between lease acquisition and renewal attempts");
  scheduler
      ->add_option("--bind-workers", scheduler_options.bind_workers, "Concurrent binding requests")
      ->capture_default_str();
  scheduler
      ->add_option("--percentage-of-nodes-to-score", scheduler_options.percentage_of_nodes_to_score,
                   "Share of nodes to find feasible before scoring (0: adaptive)")
      ->check(CLI::Range(0, 100))
      ->capture_default_str();

  skiff::kubelet::KubeletOptions kubelet_options;
  auto* kubelet =
      app.add_subcommand("kubelet", "Run the kubelet (node agent) against an API server");
  skiff::kubelet::KubeletOptions agent_options;
  auto* agent = app.add_subcommand("agent", "Run a node agent that joins a cluster");
  for (auto [cmd, o] : {std::pair{kubelet, &kubelet_options}, std::pair{agent, &agent_options}}) {
    cmd->add_option("--kubeconfig", o->kubeconfig, "Kubeconfig of the API server");
    cmd->add_option("--server", o->server, "API server URL (with --token)");
    cmd->add_option("--token", o->token, "Bearer token for --server");
    cmd->add_option("--certificate-authority", o->ca_file,
                    "CA of the API server (default: <data-dir>/tls/ca.crt if present)");
    cmd->add_option("--data-dir", o->data_dir, "State directory")->capture_default_str();
    add_node_flags(cmd, *o);
  }
  skiff::proxy::ProxyOptions agent_proxy;
  bool agent_disable_proxy = false;
  add_proxy_flags(agent, agent_proxy);
  agent->add_option("--cluster-cidr", agent_proxy.cluster_cidr, "Pod address range")
      ->capture_default_str();
  agent->add_flag("--disable-proxy", agent_disable_proxy, "Do not run the Service proxy");

  skiff::proxy::ProxyOptions proxy_options;
  bool proxy_cleanup = false;
  auto* proxy = app.add_subcommand("proxy", "Run the Service proxy against an API server");
  proxy->add_option("--kubeconfig", proxy_options.kubeconfig, "Kubeconfig of the API server");
  proxy->add_option("--server", proxy_options.server, "API server URL (with --token)");
  proxy->add_option("--token", proxy_options.token, "Bearer token for --server");
  proxy->add_option("--certificate-authority", proxy_options.ca_file,
                    "CA of the API server (default: <data-dir>/tls/ca.crt if present)");
  proxy->add_option("--data-dir", proxy_options.data_dir, "State directory")->capture_default_str();
  proxy->add_option("--hostname-override", proxy_options.hostname_override,
                    "Node name (default: host name)");
  proxy->add_option("--cluster-cidr", proxy_options.cluster_cidr, "Pod address range")
      ->capture_default_str();
  add_proxy_flags(proxy, proxy_options);
  proxy->add_flag("--cleanup", proxy_cleanup, "Remove the rules of every proxy mode and exit");

  auto* image = app.add_subcommand("image", "Manage the node's images");
  image->require_subcommand(1);
  auto* image_import = image->add_subcommand(
      "import", "Import an OCI or docker-archive tarball into a running node agent's containerd");
  std::string image_file;
  std::string image_data_dir = "/var/lib/skiff";
  std::string image_endpoint;
  image_import->add_option("FILE", image_file, "The image tarball")->required();
  image_import->add_option("--data-dir", image_data_dir, "The node agent's state directory")
      ->capture_default_str();
  image_import->add_option("--container-runtime-endpoint", image_endpoint,
                           "The CRI endpoint the agent uses instead of its own containerd");

  CLI11_PARSE(app, argc, argv);
  if (!skiff::set_log_level(log_level)) {
    std::fprintf(stderr, "skiff: unknown log level \"%s\"\n", log_level.c_str());
    return 2;
  }

  if (*version) {
    std::printf("skiff %s (commit %s), Kubernetes API v%s.%s\n", skiff::kSkiffVersion,
                skiff::kGitCommit, skiff::kKubernetesMajor, skiff::kKubernetesMinor);
    return 0;
  }
  if (*image_import) {
    skiff::Status imported =
        skiff::kubelet::import_image(image_data_dir, image_endpoint, image_file);
    if (!imported.is_ok()) {
      std::fprintf(stderr, "skiff image import: %s\n", imported.message().c_str());
      return 1;
    }
    std::printf("imported %s\n", image_file.c_str());
    return 0;
  }
  if (*server) return run_apiserver(server_flags, true);
  if (*apiserver) return run_apiserver(apiserver_flags, false);
  if (*scheduler) {
    return run_component("scheduler", [&](std::stop_token stop) {
      return skiff::scheduler::run_scheduler(scheduler_options, stop);
    });
  }
  if (*controller_manager) {
    return run_component("controller-manager", [&](std::stop_token stop) {
      return skiff::controllers::run_controller_manager(cm_flags.o, stop);
    });
  }
  if (*hollow_node) return run_hollow_node(hollow_flags);
  if (*kubelet) {
    return run_component("kubelet", [&](std::stop_token stop) {
      return skiff::kubelet::run_kubelet(kubelet_options, stop);
    });
  }
  if (*agent) {
    agent_proxy.kubeconfig = agent_options.kubeconfig;
    agent_proxy.server = agent_options.server;
    agent_proxy.token = agent_options.token;
    agent_proxy.ca_file = agent_options.ca_file;
    agent_proxy.data_dir = agent_options.data_dir;
    agent_proxy.hostname_override = agent_options.hostname_override;
    return run_component("agent", [&](std::stop_token stop) {
      return run_node_agent(agent_options, agent_disable_proxy ? nullptr : &agent_proxy, stop);
    });
  }
  if (*proxy) {
    if (proxy_cleanup) {
      skiff::Status s = skiff::proxy::cleanup_proxy_rules("all");
      if (!s.is_ok()) {
        std::fprintf(stderr, "skiff proxy: %s\n", s.message().c_str());
        return 1;
      }
      return 0;
    }
    return run_component("proxy", [&](std::stop_token stop) {
      return skiff::proxy::run_proxy(proxy_options, stop);
    });
  }
  return 0;
}
