#pragma once

// Turns a pod (core/v1 Pod as JSON) into what the CRI runtime is asked for: the sandbox config,
// each container's config (command, args, env, mounts, resources, security context, log path),
// and the labels and annotations that let the kubelet find its pods and containers again in the
// runtime after a restart (upstream's io.kubernetes.* names, so tools like crictl show them).
//
// Thread-safety: pure functions.

#include <cstdint>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "base/status.h"
#include "kubelet/cri/runtime_service.h"

namespace skiff::kubelet {

using Json = nlohmann::json;
namespace v1 = ::runtime::v1;

// Labels and annotations on sandboxes and containers.
inline constexpr char kPodNameLabel[] = "io.kubernetes.pod.name";
inline constexpr char kPodNamespaceLabel[] = "io.kubernetes.pod.namespace";
inline constexpr char kPodUidLabel[] = "io.kubernetes.pod.uid";
inline constexpr char kContainerNameLabel[] = "io.kubernetes.container.name";
inline constexpr char kContainerHashAnnotation[] = "io.kubernetes.container.hash";
inline constexpr char kRestartCountAnnotation[] = "io.kubernetes.container.restartCount";
inline constexpr char kTerminationMessagePathAnnotation[] =
    "io.kubernetes.container.terminationMessagePath";
inline constexpr char kTerminationMessagePolicyAnnotation[] =
    "io.kubernetes.container.terminationMessagePolicy";
inline constexpr char kGracePeriodAnnotation[] = "io.kubernetes.pod.terminationGracePeriod";
inline constexpr char kInitContainerLabel[] = "io.skiff.container.init";

struct NodeSettings {
  std::string node_name;
  std::string node_ip;
  // Pod logs live in log_root/<namespace>_<name>_<uid>/<container>/<restartCount>.log.
  std::string log_root = "/var/log/pods";
  // Parent cgroup of every pod (cgroupfs): <cgroup_root>/pod<uid>. Empty: the runtime's default.
  std::string cgroup_root = "/skiff";
  std::vector<std::string> cluster_dns = {"10.43.0.10"};
  std::string cluster_domain = "cluster.local";
};

std::string pod_log_dir(const NodeSettings& node, const Json& pod);
std::string pod_cgroup_parent(const NodeSettings& node, const std::string& uid);

v1::PodSandboxConfig sandbox_config(const NodeSettings& node, const Json& pod, uint32_t attempt);

// What a container's env refers to outside the pod: ConfigMaps and Secrets in the pod's
// namespace, by name (kNotFound when missing). Secret data comes back decoded.
struct ObjectSource {
  std::function<Result<std::map<std::string, std::string>>(const std::string& ns,
                                                           const std::string& name)>
      config_map;
  // The Services of a namespace, for the service environment variables (optional).
  std::function<std::vector<Json>(const std::string& ns)> services;
  std::function<Result<std::map<std::string, std::string>>(const std::string& ns,
                                                           const std::string& name)>
      secret;
};

// The service links of a pod (upstream's FOO_SERVICE_HOST, FOO_PORT_80_TCP_ADDR, ...): the
// Services with a cluster IP in the pod's namespace when spec.enableServiceLinks is not false,
// and always the `kubernetes` Service of the default namespace.
std::vector<std::pair<std::string, std::string>> service_env(const Json& pod,
                                                             const ObjectSource& source);

// The container's environment, in upstream's order: service links, envFrom sources, then env
// entries (with
// $(VAR) references to earlier ones expanded), each later one replacing an earlier one of the
// same name. Errors name the missing ConfigMap, Secret or key (CreateContainerConfigError).
Result<std::vector<std::pair<std::string, std::string>>> container_env(const Json& pod,
                                                                       const Json& container,
                                                                       const std::string& pod_ip,
                                                                       const ObjectSource& source);

// Expands $(VAR) in s from env ($$ escapes; unknown references stay as written).
std::string expand_vars(const std::string& s,
                        const std::vector<std::pair<std::string, std::string>>& env);

// A hash of the container's spec; a change means the container must be recreated.
uint64_t container_hash(const Json& container);

struct ContainerMount {
  std::string host_path;
  std::string container_path;
  bool read_only = false;
};

v1::ContainerConfig container_config(const NodeSettings& node, const Json& pod,
                                     const Json& container, bool init, uint32_t restart_count,
                                     const std::vector<std::pair<std::string, std::string>>& env,
                                     const std::vector<ContainerMount>& mounts);

// The registry host of an image reference ("busybox" → "docker.io", "r.example:5000/a/b:1" →
// "r.example:5000").
std::string image_registry(const std::string& image);

// Credentials for pulling `image` from the pod's imagePullSecrets (kubernetes.io/dockerconfigjson
// and kubernetes.io/dockercfg secrets), the first entry whose registry matches the image's.
// Missing secrets are skipped, as upstream does. nullopt when none matches.
struct RegistryAuth {
  std::string server;
  std::string username;
  std::string password;
  std::string auth;  // base64 "user:password", when the secret gives it that way
};
std::optional<RegistryAuth> pull_credentials(const Json& pod, const std::string& image,
                                             const ObjectSource& source);

// The pod's grace period for a stop: the deletion's when it is being deleted, else the spec's.
int64_t grace_period_seconds(const Json& pod);

}  // namespace skiff::kubelet
