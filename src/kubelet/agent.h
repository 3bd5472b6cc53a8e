#pragma once

// The kubelet as a component: `skiff kubelet`, and the kubelet inside `skiff agent` and
// `skiff server`. run_kubelet() starts (unless given an existing CRI endpoint) and supervises the
// node's own containerd, imports the built-in images and any image tarballs in
// <data_dir>/agent/images, connects to the runtime over CRI, registers the Node, writes the CNI
// configuration once the node has a pod CIDR, runs the pod workers, and serves until stopped.
//
// Thread-safety: run_kubelet() blocks the calling thread until `stop` is requested.

#include <chrono>
#include <map>
#include <stop_token>
#include <string>
#include <vector>

#include "base/status.h"
#include "kubelet/eviction.h"

namespace skiff::kubelet {

struct KubeletOptions {
  // The API server: a kubeconfig, or a server URL with a bearer token (`skiff agent`).
  std::string kubeconfig;
  std::string server;
  std::string token;
  std::string ca_file;  // with --server: the cluster CA (empty: taken from the data dir if present)

  std::string data_dir = "/var/lib/skiff";
  std::string hostname_override;  // the node name (default: the host name)
  std::string node_ip;            // default: the host's first non-loopback IPv4 address
  std::map<std::string, std::string> node_labels;
  bool register_node = true;
  int max_pods = 110;
  int port = 10250;               // the kubelet's HTTPS port
  std::string pod_manifest_path;  // static pods; default <data_dir>/agent/manifests
  // Static pods from the body of this URL, fetched every 20 s (empty: none), with these
  // "Name:Value" headers.
  std::string manifest_url;
  std::vector<std::string> manifest_url_headers;
  std::string pod_cidr;  // default: the Node's spec.podCIDR from the node IPAM controller

  // An existing CRI socket; empty: run containerd under <data_dir>/agent/containerd.
  std::string container_runtime_endpoint;
  // The OCI runtime of that containerd: "crun" (through the skiff-crun helper), "runc", or
  // "auto" (crun when it is installed, else runc). crun starts containers in a fraction of
  // runc's time.
  std::string oci_runtime = "auto";
  std::string pod_log_dir = "/var/log/pods";
  std::string cgroup_root = "/skiff";
  std::vector<std::string> cluster_dns = {"10.43.0.10"};
  std::string cluster_domain = "cluster.local";
  std::string cni_bin_dir = "/usr/lib/cni";

  // Node-pressure eviction (eviction.h): hard and soft thresholds (with neither, no eviction),
  // the soft thresholds' grace periods, minimum reclaims, how long a pressure condition outlasts
  // its last met threshold, and the grace cap for soft evictions (seconds).
  std::string eviction_hard = kDefaultEvictionHard;
  std::string eviction_soft;
  std::string eviction_soft_grace_period;
  std::string eviction_minimum_reclaim;
  std::chrono::milliseconds eviction_pressure_transition_period{std::chrono::minutes(5)};
  int64_t eviction_max_pod_grace_period = 0;

  std::chrono::milliseconds node_status_update_frequency{10000};
  std::chrono::milliseconds sync_frequency{10000};
};

Status run_kubelet(const KubeletOptions& options, std::stop_token stop);

// `skiff image import`: imports an OCI or docker-archive tarball into the containerd of the node
// agent whose data dir is `data_dir` (or the CRI endpoint `runtime_endpoint`, when given), marked
// as the node's own image like the built-in ones. kFailedPrecondition when that containerd is
// not running.
Status import_image(const std::string& data_dir, const std::string& runtime_endpoint,
                    const std::string& tar_path);

}  // namespace skiff::kubelet
